//! How each kernel is launched: grid, block and shared memory, from the shapes. Pure
//! functions, so the geometry is tested on any machine; a shape a kernel cannot take is
//! an error that says which limit it passes, never a launch that reads out of bounds.
//!
//! The block size is part of the reproducibility class: the kernels' reductions run in a
//! tree over the block (`kernels/common.cuh`), so every plan here fixes it, a power of two.

/// Threads per block of the element-wise kernels.
pub const ELEMENTWISE_BLOCK: u32 = 256;
/// Threads per block of the per-row kernels (RMSNorm, cross-entropy).
pub const ROW_BLOCK: u32 = 256;
/// Threads per block of the attention kernels.
pub const ATTENTION_BLOCK: u32 = 128;
/// Elements per block of the first pass of the sum of squares (gradient clipping).
pub const SUMSQ_PER_BLOCK: u64 = 1 << 16;
/// Dynamic shared memory a kernel may use without opting in, on every GPU since sm_50.
pub const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;
/// The largest grid x dimension (2^31 - 1).
const MAX_GRID_X: u64 = (1 << 31) - 1;
/// The largest grid y and z dimensions.
const MAX_GRID_YZ: u64 = 65_535;

/// A launch: grid, threads per block, dynamic shared memory in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
	pub grid: (u32, u32, u32),
	pub block: u32,
	pub shared_bytes: u32,
}

impl Plan {
	/// cudarc's form.
	pub fn config(&self) -> cudarc::driver::LaunchConfig {
		cudarc::driver::LaunchConfig { grid_dim: self.grid, block_dim: (self.block, 1, 1), shared_mem_bytes: self.shared_bytes }
	}
}

/// A shape no launch plan can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
	#[error("{kernel}: {what} is {value}, more than the {limit} a launch allows")]
	TooLarge { kernel: &'static str, what: &'static str, value: u64, limit: u64 },
	#[error("{kernel}: {message}")]
	Shape { kernel: &'static str, message: String },
}

fn too_large(kernel: &'static str, what: &'static str, value: u64, limit: u64) -> Result<(), LaunchError> {
	if value > limit {
		return Err(LaunchError::TooLarge { kernel, what, value, limit });
	}
	Ok(())
}

/// One thread per element of `n`; `None` for nothing to do (a grid of 0 is no launch).
pub fn elementwise(kernel: &'static str, n: u64) -> Result<Option<Plan>, LaunchError> {
	if n == 0 {
		return Ok(None);
	}
	let blocks = n.div_ceil(u64::from(ELEMENTWISE_BLOCK));
	too_large(kernel, "the number of blocks", blocks, MAX_GRID_X)?;
	Ok(Some(Plan { grid: (blocks as u32, 1, 1), block: ELEMENTWISE_BLOCK, shared_bytes: 0 }))
}

/// One block per row of `dim` (RMSNorm, cross-entropy), with its reduction's shared memory.
pub fn per_row(kernel: &'static str, rows: u64, dim: u64) -> Result<Option<Plan>, LaunchError> {
	if rows == 0 {
		return Ok(None);
	}
	too_large(kernel, "the number of rows", rows, MAX_GRID_X)?;
	too_large(kernel, "the row width", dim, i32::MAX as u64)?;
	Ok(Some(Plan { grid: (rows as u32, 1, 1), block: ROW_BLOCK, shared_bytes: ROW_BLOCK * 4 }))
}

/// RoPE: one thread per rotated pair of `rows × width`.
pub fn rope(rows: u64, width: u64, head_dim: u64) -> Result<Option<Plan>, LaunchError> {
	if head_dim == 0 || head_dim % 2 != 0 || width % head_dim != 0 {
		return Err(LaunchError::Shape {
			kernel: "rope",
			message: format!("rows of width {width} do not split into heads of an even width {head_dim}"),
		});
	}
	too_large("rope", "the number of rows", rows, i32::MAX as u64)?;
	too_large("rope", "the row width", width, i32::MAX as u64)?;
	elementwise("rope", rows * (width / 2))
}

/// Attention's geometry: `batch` rows of `seq` tokens, `heads` query heads over
/// `kv_heads` key/value heads of `head_dim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attention {
	pub batch: u64,
	pub seq: u64,
	pub heads: u64,
	pub kv_heads: u64,
	pub head_dim: u64,
}

/// The attention kernels' plans: the forward, the row term and dQ on one block per
/// (query row, head, batch row); dK and dV on one per (key row, key/value head, batch row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionPlans {
	pub forward: Plan,
	pub delta: Plan,
	pub backward_dq: Plan,
	pub backward_dkdv: Plan,
}

/// Plans for `a`, forward and backward, with `shared_limit` bytes of dynamic shared memory
/// per block. Above [`DEFAULT_SHARED_LIMIT`] the launcher must first raise each kernel's
/// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` to the limit it plans with (the CUDA
/// backend raises it to the device's opt-in maximum: 227 KiB on Hopper, rows of up to
/// 29,000 tokens). The block size does not depend on the limit, so neither do the bits.
pub fn attention(a: Attention, shared_limit: u32) -> Result<Option<AttentionPlans>, LaunchError> {
	attention_plans(a, shared_limit, true)
}

/// The longest row attention's backward takes within `shared_limit` bytes (dK/dV keep
/// two floats per key in shared memory; the forward needs less): 6,144 tokens in the
/// default 48 KiB, 29,056 in Hopper's 227 KiB.
pub fn longest_attention_row(shared_limit: u32) -> usize {
	(shared_limit / 8) as usize
}

/// The forward's plan alone (evaluation, no backward): only its own shared memory must
/// fit.
pub fn attention_forward(a: Attention, shared_limit: u32) -> Result<Option<Plan>, LaunchError> {
	Ok(attention_plans(a, shared_limit, false)?.map(|p| p.forward))
}

fn attention_plans(a: Attention, shared_limit: u32, backward: bool) -> Result<Option<AttentionPlans>, LaunchError> {
	let kernel = "attention";
	if a.kv_heads == 0 || a.heads % a.kv_heads != 0 {
		return Err(LaunchError::Shape { kernel, message: format!("{} heads cannot share {} key/value heads", a.heads, a.kv_heads) });
	}
	// dK/dV keep a thread's share of a head's columns in 4 registers.
	too_large(kernel, "head_dim", a.head_dim, 4 * u64::from(ATTENTION_BLOCK))?;
	if a.batch == 0 || a.seq == 0 || a.heads == 0 || a.head_dim == 0 {
		return Ok(None);
	}
	too_large(kernel, "the sequence length", a.seq, MAX_GRID_X.min(i32::MAX as u64))?;
	too_large(kernel, "the number of heads", a.heads, MAX_GRID_YZ)?;
	too_large(kernel, "the batch", a.batch, MAX_GRID_YZ)?;
	// The forward: seq scores and a reduction's worth; dQ: seq score gradients; dK/dV:
	// seq probabilities and seq score gradients.
	let block = u64::from(ATTENTION_BLOCK);
	let forward_bytes = 4 * (a.seq + block);
	let dkdv_bytes = 4 * 2 * a.seq;
	let limit = u64::from(shared_limit);
	too_large(kernel, "the forward's shared memory (bytes)", forward_bytes, limit)?;
	if backward {
		too_large(kernel, "the backward's shared memory (bytes)", dkdv_bytes, limit)?;
	}
	let (seq, heads, kv, batch) = (a.seq as u32, a.heads as u32, a.kv_heads as u32, a.batch as u32);
	let plan = |grid, shared: u64| Plan { grid, block: ATTENTION_BLOCK, shared_bytes: shared as u32 };
	Ok(Some(AttentionPlans {
		forward: plan((seq, heads, batch), forward_bytes),
		delta: plan((seq, heads, batch), 4 * block),
		backward_dq: plan((seq, heads, batch), 4 * a.seq),
		backward_dkdv: plan((seq, kv, batch), dkdv_bytes),
	}))
}

/// Generation's attention: one block per (new query, head) over a cache of `past + new`
/// positions, `past + new` scores and a reduction's worth of shared memory.
pub fn attention_cached(past: u64, new: u64, heads: u64, kv_heads: u64, shared_limit: u32) -> Result<Option<Plan>, LaunchError> {
	let kernel = "attention_cached";
	if kv_heads == 0 || heads % kv_heads != 0 {
		return Err(LaunchError::Shape { kernel, message: format!("{heads} heads cannot share {kv_heads} key/value heads") });
	}
	if new == 0 || heads == 0 {
		return Ok(None);
	}
	too_large(kernel, "the cached positions", past + new, i32::MAX as u64)?;
	too_large(kernel, "the new positions", new, MAX_GRID_X)?;
	too_large(kernel, "the number of heads", heads, MAX_GRID_YZ)?;
	let bytes = 4 * (past + new + u64::from(ATTENTION_BLOCK));
	too_large(kernel, "its shared memory (bytes)", bytes, u64::from(shared_limit))?;
	Ok(Some(Plan { grid: (new as u32, heads as u32, 1), block: ATTENTION_BLOCK, shared_bytes: bytes as u32 }))
}

/// `add_transposed`: one thread per element of the `[rows × cols]` source.
pub fn add_transposed(rows: u64, cols: u64) -> Result<Option<Plan>, LaunchError> {
	elementwise("add_transposed", rows.saturating_mul(cols))
}

/// The two passes of the sum of squares of `n` gradients: the partials (one per block
/// of [`SUMSQ_PER_BLOCK`] elements) and their sum (one block). The number of partials is
/// a function of `n` alone, so the order of the sum is too.
pub fn sum_of_squares(n: u64) -> Result<Option<(Plan, Plan, u32)>, LaunchError> {
	if n == 0 {
		return Ok(None);
	}
	let partials = n.div_ceil(SUMSQ_PER_BLOCK);
	too_large("sumsq_partials", "the number of blocks", partials, MAX_GRID_X.min(i32::MAX as u64))?;
	let first = Plan { grid: (partials as u32, 1, 1), block: ROW_BLOCK, shared_bytes: ROW_BLOCK * 8 };
	let second = Plan { grid: (1, 1, 1), block: ROW_BLOCK, shared_bytes: ROW_BLOCK * 8 };
	Ok(Some((first, second, partials as u32)))
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn elementwise_plans_cover_every_element_once_and_skip_empty_work() {
		assert_eq!(elementwise("k", 0), Ok(None));
		for n in [1u64, 255, 256, 257, 1 << 20, (1 << 20) + 1] {
			let p = elementwise("k", n).unwrap().unwrap();
			let threads = u64::from(p.grid.0) * u64::from(p.block);
			assert!(threads >= n && threads - n < u64::from(p.block), "n = {n}: {p:?}");
		}
		let too_many = (MAX_GRID_X + 1) * u64::from(ELEMENTWISE_BLOCK);
		assert_eq!(
			elementwise("adamw", too_many).unwrap_err().to_string(),
			format!("adamw: the number of blocks is {}, more than the {MAX_GRID_X} a launch allows", MAX_GRID_X + 1)
		);
	}

	#[test]
	fn rows_get_a_block_each_with_its_reduction_memory() {
		let p = per_row("rmsnorm_forward", 1024, 576).unwrap().unwrap();
		assert_eq!(p, Plan { grid: (1024, 1, 1), block: 256, shared_bytes: 1024 });
		assert!(ROW_BLOCK.is_power_of_two() && ATTENTION_BLOCK.is_power_of_two(), "the tree reductions need it");
		assert_eq!(per_row("cross_entropy", 0, 49_152), Ok(None));
	}

	#[test]
	fn rope_takes_one_thread_per_pair_and_refuses_odd_heads() {
		// SmolLM2-135M: 9 heads of 64, rows 576 wide: 288 pairs a row.
		let p = rope(10, 576, 64).unwrap().unwrap();
		assert_eq!(p.grid.0, (10u32 * 288).div_ceil(256));
		let e = rope(10, 576, 63).unwrap_err();
		assert_eq!(e.to_string(), "rope: rows of width 576 do not split into heads of an even width 63");
		assert!(rope(10, 500, 64).is_err());
	}

	#[test]
	fn attention_plans_follow_the_shape_and_its_shared_memory_limit() {
		// SmolLM2-135M: 9 query heads over 3 key/value heads of 64; 4 rows of 1024 tokens.
		let a = Attention { batch: 4, seq: 1024, heads: 9, kv_heads: 3, head_dim: 64 };
		let p = attention(a, DEFAULT_SHARED_LIMIT).unwrap().unwrap();
		assert_eq!(p.forward.grid, (1024, 9, 4));
		assert_eq!(p.backward_dkdv.grid, (1024, 3, 4));
		assert_eq!(p.forward.shared_bytes, 4 * (1024 + 128));
		assert_eq!(p.backward_dq.shared_bytes, 4 * 1024);
		assert_eq!(p.backward_dkdv.shared_bytes, 8 * 1024);
		assert_eq!(p.delta.shared_bytes, 4 * 128);
		// 8192 tokens need 64 KiB for dK/dV: over the default 48 KiB.
		let long = Attention { seq: 8192, ..a };
		assert_eq!(
			attention(long, DEFAULT_SHARED_LIMIT).unwrap_err().to_string(),
			"attention: the backward's shared memory (bytes) is 65536, more than the 49152 a launch allows"
		);
		assert!(attention(long, 96 * 1024).unwrap().is_some(), "within an opted-in limit");
		assert!(attention_forward(long, DEFAULT_SHARED_LIMIT).unwrap().is_some(), "the forward alone fits");
		for limit in [DEFAULT_SHARED_LIMIT, 227 * 1024] {
			let at = longest_attention_row(limit) as u64;
			assert!(attention(Attention { seq: at, ..a }, limit).unwrap().is_some(), "{at} tokens fit {limit} bytes");
			assert!(attention(Attention { seq: at + 1, ..a }, limit).is_err(), "{} tokens do not", at + 1);
		}
		assert_eq!(attention_forward(long, DEFAULT_SHARED_LIMIT).unwrap(), Some(attention(long, 96 * 1024).unwrap().unwrap().forward));
		let longer = Attention { seq: 16384, ..a };
		assert!(matches!(attention(longer, DEFAULT_SHARED_LIMIT), Err(LaunchError::TooLarge { what: "the forward's shared memory (bytes)", .. })));
		assert!(attention(Attention { heads: 8, kv_heads: 3, ..a }, DEFAULT_SHARED_LIMIT).is_err());
		assert!(attention(Attention { head_dim: 513, ..a }, DEFAULT_SHARED_LIMIT).is_err());
		assert_eq!(attention(Attention { batch: 0, ..a }, DEFAULT_SHARED_LIMIT), Ok(None));
	}

	#[test]
	fn cached_attention_covers_each_new_query_and_head_and_fits_its_scores() {
		// SmolLM2-135M decoding one token after 1000 cached.
		let p = attention_cached(1000, 1, 9, 3, DEFAULT_SHARED_LIMIT).unwrap().unwrap();
		assert_eq!((p.grid, p.shared_bytes), ((1, 9, 1), 4 * (1001 + 128)));
		assert_eq!(attention_cached(5, 0, 9, 3, DEFAULT_SHARED_LIMIT), Ok(None));
		assert!(attention_cached(0, 4, 9, 2, DEFAULT_SHARED_LIMIT).is_err());
		assert_eq!(
			attention_cached(12_200, 1, 9, 3, DEFAULT_SHARED_LIMIT).unwrap_err().to_string(),
			"attention_cached: its shared memory (bytes) is 49316, more than the 49152 a launch allows"
		);
	}

	#[test]
	fn the_sum_of_squares_splits_by_the_length_alone() {
		assert_eq!(sum_of_squares(0), Ok(None));
		let (first, second, partials) = sum_of_squares(SUMSQ_PER_BLOCK * 3 + 1).unwrap().unwrap();
		assert_eq!((first.grid.0, partials, second.grid.0), (4, 4, 1));
		assert_eq!(first.shared_bytes, ROW_BLOCK * 8, "one double per thread");
	}
}
