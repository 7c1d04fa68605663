//! The CPU backend: the reference every other backend is tested against, bit-reproducible
//! for any thread count on a given instruction-set path.
//!
//! Parallelism is over independent output pieces of fixed size (matmul tiles, rows,
//! attention heads); each piece's reductions run sequentially in a fixed order. The thread
//! pool (rayon's) only decides who computes a piece, never how.

mod attention;
mod matmul;
mod reduce;
mod rmsnorm;
mod rope;
#[cfg(target_arch = "x86_64")]
mod sgemm_avx512;
mod swiglu;
mod xent;

use super::{AttnShape, Backend};

/// The CPU backend. Stateless: the thread count is the enclosing rayon pool's.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

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
			// this class is only reproducible on one CPU model.
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
/// kernel version and crate version, e.g. `cpu/x86_64-avx512f/k2/v0.1.0`.
pub fn class() -> String {
	format!("cpu/{}/k{KERNELS_VERSION}/v{}", isa_path(), env!("CARGO_PKG_VERSION"))
}

impl Backend for Cpu {
	fn class(&self) -> String {
		class()
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

	fn attention_forward(
		&self,
		out: &mut [f32],
		probs: &mut [f32],
		q: &[f32],
		k: &[f32],
		v: &[f32],
		positions: &[u32],
		s: AttnShape,
	) {
		attention::forward(out, probs, q, k, v, positions, s)
	}

	fn attention_backward(
		&self,
		dq: &mut [f32],
		dk: &mut [f32],
		dv: &mut [f32],
		dout: &[f32],
		probs: &[f32],
		q: &[f32],
		k: &[f32],
		v: &[f32],
		positions: &[u32],
		s: AttnShape,
	) {
		attention::backward(dq, dk, dv, dout, probs, q, k, v, positions, s)
	}

	fn swiglu_forward(&self, out: &mut [f32], gate: &[f32], up: &[f32]) {
		swiglu::forward(out, gate, up)
	}

	fn swiglu_backward(&self, dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
		swiglu::backward(dgate, dup, dout, gate, up)
	}

	fn cross_entropy(&self, logits: &mut [f32], targets: &[i32], vocab: usize, scale: f32, losses: &mut [f64]) {
		xent::forward_backward(logits, targets, vocab, scale, losses)
	}
}

#[cfg(test)]
mod tests;
