//! The CPU backend: the reference every other backend is tested against, bit-reproducible
//! for any thread count on a given instruction-set path.
//!
//! Parallelism is over independent output pieces of fixed size (matmul tiles, rows,
//! attention heads); each piece's reductions run sequentially in a fixed order. The thread
//! pool (rayon's) only decides who computes a piece, never how.

mod attention;
mod dropout;
mod elementwise;
mod matmul;
mod reduce;
mod rmsnorm;
mod rope;
#[cfg(target_arch = "x86_64")]
mod sgemm_avx512;
#[cfg(target_arch = "x86_64")]
mod sgemm_bf16;
mod swiglu;
mod xent;

use super::{AdamWStep, AttnSaved, AttnShape, Backend, DropSaved, Frozen};

/// The CPU backend in f32: the reference. Stateless: the thread count is the enclosing
/// rayon pool's.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

/// The CPU backend with the frozen weights' products in bf16 (`vdpbf16ps`, f32
/// accumulation; weights converted once, activations per product). Everything else, LoRA
/// included, is [`Cpu`]'s f32. Its own reproducibility class; needs AVX512_BF16.
#[derive(Debug, Clone, Copy)]
pub struct CpuBf16(());

impl CpuBf16 {
	/// `None` where the CPU lacks AVX-512F or AVX512_BF16, or where its `vdpbf16ps` does
	/// not compute what the class defines (checked on known inputs; see `sgemm_bf16`).
	pub fn new() -> Option<Self> {
		#[cfg(target_arch = "x86_64")]
		if has_bf16() && sgemm_bf16::semantics_ok() {
			return Some(CpuBf16(()));
		}
		None
	}
}

/// Whether the CPU has the bf16 path's instructions.
pub fn has_bf16() -> bool {
	#[cfg(target_arch = "x86_64")]
	{
		std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
	}
	#[cfg(not(target_arch = "x86_64"))]
	false
}

/// The CPU's form of a frozen weight.
enum CpuFrozen {
	/// Packed once for our AVX-512 kernel, for `x Wᵀ` and for `dY W`.
	#[cfg(target_arch = "x86_64")]
	Packed { forward: sgemm_avx512::PackedB, backward: sgemm_avx512::PackedB },
	/// The plain matrix (the `gemm` crate packs as it goes).
	Plain(Vec<f32>),
}

#[cfg(target_arch = "x86_64")]
struct Bf16Frozen {
	forward: sgemm_bf16::PackedBf16,
	backward: sgemm_bf16::PackedBf16,
}

/// The CPU attention's saved state: the softmax, `[batch × heads × seq × seq]`, of which
/// only the blocks a document sees are written.
struct CpuAttnSaved {
	probs: Vec<f32>,
}

/// A raw pointer that may cross threads; every use writes disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub *mut f32);
// SAFETY: users only write disjoint regions from different threads (stated at each use).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

/// The instruction-set path the kernels dispatch to (gemm picks the widest available).
pub fn isa_path() -> &'static str {
	#[cfg(target_arch = "x86_64")]
	{
		if std::arch::is_x86_feature_detected!("avx512f") {
			return "x86_64-avx512f";
		}
		if std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2") {
			// The `gemm` crate's kernels: their blocking follows the CPU's cache sizes, so
			// the class names the CPU model too (`class`).
			return "x86_64-avx2-fma-gemm";
		}
		return "x86_64-sse2";
	}
	#[allow(unreachable_code)]
	std::env::consts::ARCH
}

/// The version of the CPU kernels' arithmetic: bumped whenever any kernel's results change
/// in any bit (blocking, reduction order, a polynomial), so that runs of old and new
/// kernels are never compared. 1: the first engine; 2: per-document attention in row
/// blocks, the crate's own `exp`, 16-lane sums.
pub const KERNELS_VERSION: u32 = 2;

/// The reproducibility class of this build on this CPU: backend, instruction-set path,
/// kernel version and crate version, e.g. `cpu/x86_64-avx512f/k2/v0.1.0`. On the paths
/// through the `gemm` crate, whose blocking follows the CPU's cache sizes, the CPU model
/// is part of it too (`cpu/x86_64-avx2-fma-gemm@AMD_EPYC_7B13/k2/v0.1.0`).
pub fn class() -> String {
	let isa = isa_path();
	let isa = if isa.ends_with("-gemm") || isa == "x86_64-sse2" || !isa.starts_with("x86_64") {
		format!("{isa}@{}", cpu_model())
	} else {
		isa.to_string()
	};
	format!("cpu/{isa}/k{KERNELS_VERSION}/v{}", env!("CARGO_PKG_VERSION"))
}

/// The CPU's model name (`/proc/cpuinfo`), spaces as underscores; `unknown` elsewhere.
fn cpu_model() -> String {
	std::fs::read_to_string("/proc/cpuinfo")
		.ok()
		.and_then(|s| {
			s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(str::to_string)
		})
		.map(|m| m.split_whitespace().collect::<Vec<_>>().join("_").replace('/', "_"))
		.unwrap_or_else(|| "unknown".into())
}

/// The bf16 backend's class, e.g. `cpu-bf16/x86_64-avx512bf16/k2/v0.1.0`.
pub fn bf16_class() -> String {
	format!("cpu-bf16/x86_64-avx512bf16/k{KERNELS_VERSION}/v{}", env!("CARGO_PKG_VERSION"))
}

impl Backend for Cpu {
	fn class(&self) -> String {
		class()
	}

	fn freeze(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Frozen {
		assert_eq!(w.len(), out_dim * in_dim, "weight is not out × in");
		#[cfg(target_arch = "x86_64")]
		let data = if std::arch::is_x86_feature_detected!("avx512f") {
			CpuFrozen::Packed {
				forward: sgemm_avx512::PackedB::new(w, in_dim, out_dim, (1, in_dim)),
				backward: sgemm_avx512::PackedB::new(w, out_dim, in_dim, (in_dim, 1)),
			}
		} else {
			CpuFrozen::Plain(w.to_vec())
		};
		#[cfg(not(target_arch = "x86_64"))]
		let data = CpuFrozen::Plain(w.to_vec());
		Frozen { out_dim, in_dim, class: class(), data: Box::new(data) }
	}

	fn frozen_forward(&self, y: &mut [f32], x: &[f32], w: &Frozen, n: usize, accumulate: bool) {
		match w.get::<CpuFrozen>() {
			#[cfg(target_arch = "x86_64")]
			CpuFrozen::Packed { forward, .. } => matmul::gemm_tiled_packed(y, n, x, forward, accumulate),
			CpuFrozen::Plain(m) => self.matmul_nt(y, x, m, n, w.in_dim, w.out_dim, accumulate),
		}
	}

	fn frozen_backward(&self, dx: &mut [f32], dy: &[f32], w: &Frozen, n: usize, accumulate: bool) {
		match w.get::<CpuFrozen>() {
			#[cfg(target_arch = "x86_64")]
			CpuFrozen::Packed { backward, .. } => matmul::gemm_tiled_packed(dx, n, dy, backward, accumulate),
			CpuFrozen::Plain(m) => self.matmul_nn(dx, dy, m, n, w.out_dim, w.in_dim, accumulate),
		}
	}

	fn matmul_nt(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		// a: (i,p) at i*k + p; bᵀ: (p,j) at j*k + p.
		matmul::gemm_tiled(c, m, n, k, a, (k, 1), b, (1, k), accumulate);
	}

	fn matmul_nn(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		matmul::gemm_tiled(c, m, n, k, a, (k, 1), b, (n, 1), accumulate);
	}

	fn matmul_tn(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		// aᵀ: (i,p) at p*m + i.
		matmul::gemm_tiled(c, m, n, k, a, (1, m), b, (n, 1), accumulate);
	}

	fn rmsnorm_forward(&self, out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
		rmsnorm::forward(out, rstd, x, w, dim, eps)
	}

	fn rmsnorm_backward(&self, dx: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], rstd: &[f32], dim: usize) {
		rmsnorm::backward(dx, dout, x, w, rstd, dim)
	}

	fn rope(
		&self,
		x: &mut [f32],
		width: usize,
		cos: &[f32],
		sin: &[f32],
		positions: &[u32],
		head_dim: usize,
		inverse: bool,
	) {
		rope::apply(x, width, cos, sin, positions, head_dim, inverse)
	}

	fn attention_forward(&self, out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], positions: &[u32], s: AttnShape) -> AttnSaved {
		let mut probs = vec![0f32; s.batch * s.heads * s.seq * s.seq];
		attention::forward(out, &mut probs, q, k, v, positions, s);
		AttnSaved::new(CpuAttnSaved { probs })
	}

	fn attention_backward(
		&self,
		dq: &mut [f32],
		dk: &mut [f32],
		dv: &mut [f32],
		dout: &[f32],
		saved: &AttnSaved,
		q: &[f32],
		k: &[f32],
		v: &[f32],
		positions: &[u32],
		s: AttnShape,
	) {
		attention::backward(dq, dk, dv, dout, &saved.get::<CpuAttnSaved>().probs, q, k, v, positions, s)
	}

	fn swiglu_forward(&self, out: &mut [f32], gate: &[f32], up: &[f32]) {
		swiglu::forward(out, gate, up)
	}

	fn swiglu_backward(&self, dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
		swiglu::backward(dgate, dup, dout, gate, up)
	}

	fn gather_rows(&self, out: &mut [f32], x: &[f32], rows: &[u32], dim: usize) {
		elementwise::gather_rows(out, x, rows, dim)
	}

	fn scatter_rows(&self, dst: &mut [f32], src: &[f32], rows: &[u32], dim: usize) {
		elementwise::scatter_rows(dst, src, rows, dim)
	}

	fn add_assign(&self, y: &mut [f32], x: &[f32]) {
		elementwise::add_assign(y, x)
	}

	fn add_bias(&self, y: &mut [f32], bias: &[f32]) {
		elementwise::add_bias(y, bias)
	}

	fn scale(&self, x: &mut [f32], a: f32) {
		elementwise::scale(x, a)
	}

	fn add_transposed(&self, dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
		elementwise::add_transposed(dst, src, rows, cols)
	}

	fn dropout_mask(&self, p: f32, key: u64, len: usize) -> DropSaved {
		DropSaved::new(dropout::DropMask::new(p, key, len))
	}

	fn dropout_apply(&self, out: &mut [f32], x: &[f32], mask: &DropSaved) {
		mask.get::<dropout::DropMask>().apply(out, x)
	}

	fn dropout_add_kept(&self, dx: &mut [f32], t: &[f32], mask: &DropSaved) {
		mask.get::<dropout::DropMask>().add_kept(dx, t)
	}

	fn sum_squares(&self, x: &[f32]) -> f64 {
		elementwise::sum_squares(x)
	}

	fn adamw(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], step: AdamWStep) {
		elementwise::adamw(params, grads, m, v, step)
	}

	fn cross_entropy(&self, logits: &mut [f32], targets: &[i32], vocab: usize, scale: f32, losses: &mut [f64]) {
		xent::forward_backward(logits, targets, vocab, scale, losses)
	}
}

/// Everything but the frozen products is [`Cpu`]'s.
impl Backend for CpuBf16 {
	fn class(&self) -> String {
		bf16_class()
	}

	fn freeze(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Frozen {
		assert_eq!(w.len(), out_dim * in_dim, "weight is not out × in");
		#[cfg(target_arch = "x86_64")]
		{
			let data = Bf16Frozen {
				forward: sgemm_bf16::PackedBf16::new(w, in_dim, out_dim, (1, in_dim)),
				backward: sgemm_bf16::PackedBf16::new(w, out_dim, in_dim, (in_dim, 1)),
			};
			Frozen { out_dim, in_dim, class: bf16_class(), data: Box::new(data) }
		}
		#[cfg(not(target_arch = "x86_64"))]
		unreachable!("CpuBf16 is only made where the CPU has AVX512_BF16")
	}

	fn frozen_forward(&self, y: &mut [f32], x: &[f32], w: &Frozen, n: usize, accumulate: bool) {
		#[cfg(target_arch = "x86_64")]
		{
			let f = w.get::<Bf16Frozen>();
			let (a, lda) = sgemm_bf16::rows_to_bf16(x, n, w.in_dim);
			matmul::gemm_tiled_bf16(y, n, &a, lda, &f.forward, accumulate);
		}
		#[cfg(not(target_arch = "x86_64"))]
		unreachable!("{y:?}{x:?}{n}{accumulate}{}", w.in_dim)
	}

	fn frozen_backward(&self, dx: &mut [f32], dy: &[f32], w: &Frozen, n: usize, accumulate: bool) {
		#[cfg(target_arch = "x86_64")]
		{
			let f = w.get::<Bf16Frozen>();
			let (a, lda) = sgemm_bf16::rows_to_bf16(dy, n, w.out_dim);
			matmul::gemm_tiled_bf16(dx, n, &a, lda, &f.backward, accumulate);
		}
		#[cfg(not(target_arch = "x86_64"))]
		unreachable!("{dx:?}{dy:?}{n}{accumulate}{}", w.in_dim)
	}

	fn matmul_nt(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		Cpu.matmul_nt(c, a, b, m, k, n, accumulate)
	}

	fn matmul_nn(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		Cpu.matmul_nn(c, a, b, m, k, n, accumulate)
	}

	fn matmul_tn(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		Cpu.matmul_tn(c, a, b, m, k, n, accumulate)
	}

	fn rmsnorm_forward(&self, out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
		Cpu.rmsnorm_forward(out, rstd, x, w, dim, eps)
	}

	fn rmsnorm_backward(&self, dx: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], rstd: &[f32], dim: usize) {
		Cpu.rmsnorm_backward(dx, dout, x, w, rstd, dim)
	}

	fn rope(
		&self,
		x: &mut [f32],
		width: usize,
		cos: &[f32],
		sin: &[f32],
		positions: &[u32],
		head_dim: usize,
		inverse: bool,
	) {
		Cpu.rope(x, width, cos, sin, positions, head_dim, inverse)
	}

	fn attention_forward(&self, out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], positions: &[u32], s: AttnShape) -> AttnSaved {
		Cpu.attention_forward(out, q, k, v, positions, s)
	}

	fn attention_backward(
		&self,
		dq: &mut [f32],
		dk: &mut [f32],
		dv: &mut [f32],
		dout: &[f32],
		saved: &AttnSaved,
		q: &[f32],
		k: &[f32],
		v: &[f32],
		positions: &[u32],
		s: AttnShape,
	) {
		Cpu.attention_backward(dq, dk, dv, dout, saved, q, k, v, positions, s)
	}

	fn swiglu_forward(&self, out: &mut [f32], gate: &[f32], up: &[f32]) {
		Cpu.swiglu_forward(out, gate, up)
	}

	fn swiglu_backward(&self, dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
		Cpu.swiglu_backward(dgate, dup, dout, gate, up)
	}

	fn gather_rows(&self, out: &mut [f32], x: &[f32], rows: &[u32], dim: usize) {
		Cpu.gather_rows(out, x, rows, dim)
	}

	fn scatter_rows(&self, dst: &mut [f32], src: &[f32], rows: &[u32], dim: usize) {
		Cpu.scatter_rows(dst, src, rows, dim)
	}

	fn add_assign(&self, y: &mut [f32], x: &[f32]) {
		Cpu.add_assign(y, x)
	}

	fn add_bias(&self, y: &mut [f32], bias: &[f32]) {
		Cpu.add_bias(y, bias)
	}

	fn scale(&self, x: &mut [f32], a: f32) {
		Cpu.scale(x, a)
	}

	fn add_transposed(&self, dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
		Cpu.add_transposed(dst, src, rows, cols)
	}

	fn dropout_mask(&self, p: f32, key: u64, len: usize) -> DropSaved {
		Cpu.dropout_mask(p, key, len)
	}

	fn dropout_apply(&self, out: &mut [f32], x: &[f32], mask: &DropSaved) {
		Cpu.dropout_apply(out, x, mask)
	}

	fn dropout_add_kept(&self, dx: &mut [f32], t: &[f32], mask: &DropSaved) {
		Cpu.dropout_add_kept(dx, t, mask)
	}

	fn sum_squares(&self, x: &[f32]) -> f64 {
		Cpu.sum_squares(x)
	}

	fn adamw(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], step: AdamWStep) {
		Cpu.adamw(params, grads, m, v, step)
	}

	fn cross_entropy(&self, logits: &mut [f32], targets: &[i32], vocab: usize, scale: f32, losses: &mut [f64]) {
		Cpu.cross_entropy(logits, targets, vocab, scale, losses)
	}
}

#[cfg(test)]
mod tests;
