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

use super::{host, host_mut, AdamWStep, AttnSaved, AttnShape, Backend, Buf, DropSaved, Frozen, View, ViewMut};

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

/// A CPU buffer: a `Vec` the backend owns.
fn cpu_buf<T: Send + Sync + 'static>(v: Vec<T>) -> Buf<T> {
	Buf::new(v.len(), v)
}

/// `c[m×n] (+)= a[m×k] · b[n×k]ᵀ` on slices.
#[allow(clippy::too_many_arguments)]
fn matmul_nt(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
	// a: (i,p) at i*k + p; bᵀ: (p,j) at j*k + p.
	matmul::gemm_tiled(c, m, n, k, a, (k, 1), b, (1, k), accumulate);
}

/// `c[m×n] (+)= a[m×k] · b[k×n]` on slices.
#[allow(clippy::too_many_arguments)]
fn matmul_nn(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
	matmul::gemm_tiled(c, m, n, k, a, (k, 1), b, (n, 1), accumulate);
}

/// `c[m×n] (+)= a[k×m]ᵀ · b[k×n]` on slices.
#[allow(clippy::too_many_arguments)]
fn matmul_tn(c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
	// aᵀ: (i,p) at p*m + i.
	matmul::gemm_tiled(c, m, n, k, a, (1, m), b, (n, 1), accumulate);
}

/// Every operation but the frozen products, shared by [`Cpu`] and [`CpuBf16`] (the same
/// code, so the same bits).
macro_rules! cpu_operations {
	() => {
		fn upload_f32(&self, host: &[f32]) -> Buf<f32> {
			cpu_buf(host.to_vec())
		}

		fn upload_u32(&self, host: &[u32]) -> Buf<u32> {
			cpu_buf(host.to_vec())
		}

		fn upload_i32(&self, host: &[i32]) -> Buf<i32> {
			cpu_buf(host.to_vec())
		}

		fn zeros_f32(&self, len: usize) -> Buf<f32> {
			cpu_buf(vec![0f32; len])
		}

		fn zeros_f64(&self, len: usize) -> Buf<f64> {
			cpu_buf(vec![0f64; len])
		}

		fn download_f32(&self, x: View<f32>) -> Vec<f32> {
			host(x).to_vec()
		}

		fn download_f64(&self, x: View<f64>) -> Vec<f64> {
			host(x).to_vec()
		}

		fn copy(&self, dst: ViewMut<f32>, src: View<f32>) {
			host_mut(dst).copy_from_slice(host(src))
		}

		fn matmul_nt(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool) {
			matmul_nt(host_mut(c), host(a), host(b), m, k, n, accumulate)
		}

		fn matmul_nn(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool) {
			matmul_nn(host_mut(c), host(a), host(b), m, k, n, accumulate)
		}

		fn matmul_tn(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool) {
			matmul_tn(host_mut(c), host(a), host(b), m, k, n, accumulate)
		}

		fn rmsnorm_forward(&self, out: ViewMut<f32>, rstd: ViewMut<f32>, x: View<f32>, w: View<f32>, dim: usize, eps: f32) {
			rmsnorm::forward(host_mut(out), host_mut(rstd), host(x), host(w), dim, eps)
		}

		fn rmsnorm_backward(
			&self,
			dx: ViewMut<f32>,
			dout: View<f32>,
			x: View<f32>,
			w: View<f32>,
			rstd: View<f32>,
			dim: usize,
		) {
			rmsnorm::backward(host_mut(dx), host(dout), host(x), host(w), host(rstd), dim)
		}

		fn rope(
			&self,
			x: ViewMut<f32>,
			width: usize,
			cos: View<f32>,
			sin: View<f32>,
			positions: View<u32>,
			head_dim: usize,
			inverse: bool,
		) {
			rope::apply(host_mut(x), width, host(cos), host(sin), host(positions), head_dim, inverse)
		}

		fn attention_forward(
			&self,
			out: ViewMut<f32>,
			q: View<f32>,
			k: View<f32>,
			v: View<f32>,
			positions: View<u32>,
			s: AttnShape,
		) -> AttnSaved {
			let mut probs = vec![0f32; s.batch * s.heads * s.seq * s.seq];
			attention::forward(host_mut(out), &mut probs, host(q), host(k), host(v), host(positions), s);
			AttnSaved::new(CpuAttnSaved { probs })
		}

		fn attention_backward(
			&self,
			dq: ViewMut<f32>,
			dk: ViewMut<f32>,
			dv: ViewMut<f32>,
			dout: View<f32>,
			// The CPU keeps the softmax: it needs no output.
			_out: View<f32>,
			saved: &AttnSaved,
			q: View<f32>,
			k: View<f32>,
			v: View<f32>,
			positions: View<u32>,
			s: AttnShape,
		) {
			let probs = &saved.get::<CpuAttnSaved>().probs;
			attention::backward(
				host_mut(dq),
				host_mut(dk),
				host_mut(dv),
				host(dout),
				probs,
				host(q),
				host(k),
				host(v),
				host(positions),
				s,
			)
		}

		fn attention_cached(
			&self,
			out: ViewMut<f32>,
			q: View<f32>,
			k_cache: View<f32>,
			v_cache: View<f32>,
			past: usize,
			n: usize,
			s: AttnShape,
		) {
			attention::cached(host_mut(out), host(q), host(k_cache), host(v_cache), past, n, s)
		}

		fn swiglu_forward(&self, out: ViewMut<f32>, gate: View<f32>, up: View<f32>) {
			swiglu::forward(host_mut(out), host(gate), host(up))
		}

		fn swiglu_backward(
			&self,
			dgate: ViewMut<f32>,
			dup: ViewMut<f32>,
			dout: View<f32>,
			gate: View<f32>,
			up: View<f32>,
		) {
			swiglu::backward(host_mut(dgate), host_mut(dup), host(dout), host(gate), host(up))
		}

		fn gather_rows(&self, out: ViewMut<f32>, x: View<f32>, rows: View<u32>, dim: usize) {
			elementwise::gather_rows(host_mut(out), host(x), host(rows), dim)
		}

		fn scatter_rows(&self, dst: ViewMut<f32>, src: View<f32>, rows: View<u32>, dim: usize) {
			elementwise::scatter_rows(host_mut(dst), host(src), host(rows), dim)
		}

		fn add_assign(&self, y: ViewMut<f32>, x: View<f32>) {
			elementwise::add_assign(host_mut(y), host(x))
		}

		fn add_bias(&self, y: ViewMut<f32>, bias: View<f32>) {
			elementwise::add_bias(host_mut(y), host(bias))
		}

		fn scale(&self, x: ViewMut<f32>, a: f32) {
			elementwise::scale(host_mut(x), a)
		}

		fn add_transposed(&self, dst: ViewMut<f32>, src: View<f32>, rows: usize, cols: usize) {
			elementwise::add_transposed(host_mut(dst), host(src), rows, cols)
		}

		fn dropout_mask(&self, p: f32, key: u64, len: usize) -> DropSaved {
			DropSaved::new(dropout::DropMask::new(p, key, len))
		}

		fn dropout_apply(&self, out: ViewMut<f32>, x: View<f32>, mask: &DropSaved) {
			mask.get::<dropout::DropMask>().apply(host_mut(out), host(x))
		}

		fn dropout_add_kept(&self, dx: ViewMut<f32>, t: View<f32>, mask: &DropSaved) {
			mask.get::<dropout::DropMask>().add_kept(host_mut(dx), host(t))
		}

		fn sum_squares(&self, x: View<f32>) -> f64 {
			elementwise::sum_squares(host(x))
		}

		fn adamw(&self, params: ViewMut<f32>, grads: View<f32>, m: ViewMut<f32>, v: ViewMut<f32>, step: AdamWStep) {
			elementwise::adamw(host_mut(params), host(grads), host_mut(m), host_mut(v), step)
		}

		fn cross_entropy(
			&self,
			logits: ViewMut<f32>,
			targets: View<i32>,
			vocab: usize,
			scale: f32,
			losses: ViewMut<f64>,
		) {
			xent::forward_backward(host_mut(logits), host(targets), vocab, scale, host_mut(losses))
		}
	};
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
		Frozen::new(out_dim, in_dim, class(), data)
	}

	fn frozen_forward(&self, y: ViewMut<f32>, x: View<f32>, w: &Frozen, n: usize, accumulate: bool) {
		let (y, x) = (host_mut(y), host(x));
		match w.get::<CpuFrozen>() {
			#[cfg(target_arch = "x86_64")]
			CpuFrozen::Packed { forward, .. } => matmul::gemm_tiled_packed(y, n, x, forward, accumulate),
			CpuFrozen::Plain(m) => matmul_nt(y, x, m, n, w.in_dim, w.out_dim, accumulate),
		}
	}

	fn frozen_backward(&self, dx: ViewMut<f32>, dy: View<f32>, w: &Frozen, n: usize, accumulate: bool) {
		let (dx, dy) = (host_mut(dx), host(dy));
		match w.get::<CpuFrozen>() {
			#[cfg(target_arch = "x86_64")]
			CpuFrozen::Packed { backward, .. } => matmul::gemm_tiled_packed(dx, n, dy, backward, accumulate),
			CpuFrozen::Plain(m) => matmul_nn(dx, dy, m, n, w.out_dim, w.in_dim, accumulate),
		}
	}

	cpu_operations!();
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
			Frozen::new(out_dim, in_dim, bf16_class(), data)
		}
		#[cfg(not(target_arch = "x86_64"))]
		unreachable!("CpuBf16 is only made where the CPU has AVX512_BF16")
	}

	fn frozen_forward(&self, y: ViewMut<f32>, x: View<f32>, w: &Frozen, n: usize, accumulate: bool) {
		#[cfg(target_arch = "x86_64")]
		{
			let f = w.get::<Bf16Frozen>();
			let (a, lda) = sgemm_bf16::rows_to_bf16(host(x), n, w.in_dim);
			matmul::gemm_tiled_bf16(host_mut(y), n, &a, lda, &f.forward, accumulate);
		}
		#[cfg(not(target_arch = "x86_64"))]
		unreachable!("{}{}{n}{accumulate}{}", y.len(), x.len(), w.in_dim)
	}

	fn frozen_backward(&self, dx: ViewMut<f32>, dy: View<f32>, w: &Frozen, n: usize, accumulate: bool) {
		#[cfg(target_arch = "x86_64")]
		{
			let f = w.get::<Bf16Frozen>();
			let (a, lda) = sgemm_bf16::rows_to_bf16(host(dy), n, w.out_dim);
			matmul::gemm_tiled_bf16(host_mut(dx), n, &a, lda, &f.backward, accumulate);
		}
		#[cfg(not(target_arch = "x86_64"))]
		unreachable!("{}{}{n}{accumulate}{}", dx.len(), dy.len(), w.in_dim)
	}

	cpu_operations!();
}

#[cfg(test)]
mod tests;
