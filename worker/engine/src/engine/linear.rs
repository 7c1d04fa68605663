//! A frozen linear layer with an optional LoRA branch, forward beside backward:
//! `y = x Wᵀ + b + (α/r) · drop(x) Aᵀ Bᵀ`.

use rayon::prelude::*;

use crate::backend::{Backend, Frozen};
use crate::rng::mix64;

/// Elements per dropout task (a multiple of 64; each element's mask depends only on its
/// index).
const DROPOUT_CHUNK: usize = 1 << 15;

/// The trainable branch of one layer, as the forward sees it.
pub struct LoraBranch<'a> {
	pub a: &'a [f32],
	pub b: &'a [f32],
	pub rank: usize,
	pub scale: f32,
	/// Dropout probability and the stream its mask is drawn from (`None`: no dropout).
	pub dropout: Option<(f32, u64)>,
}

/// Which inputs dropout keeps (bit `i`: element `i` kept), drawn once in the forward and
/// used again by the backward. Element `i` is dropped iff `uniform_at(key, i) < p`.
pub struct DropMask {
	bits: Vec<u64>,
	keep: f32,
}

impl DropMask {
	fn new(p: f32, key: u64, len: usize) -> Self {
		// uniform_at is u·2⁻²⁴ for a 24-bit integer u, so `< p` is `u < ⌈p·2²⁴⌉`.
		let threshold = (p as f64 * (1u64 << 24) as f64).ceil() as u64;
		let mut bits = vec![0u64; len.div_ceil(64)];
		bits.par_chunks_mut(DROPOUT_CHUNK / 64).enumerate().for_each(|(c, words)| {
			let first = (c * DROPOUT_CHUNK) as u64;
			#[cfg(target_arch = "x86_64")]
			if std::arch::is_x86_feature_detected!("avx512dq") {
				// SAFETY: the CPU has the features the function is compiled for.
				unsafe { keep_bits_avx512(words, key, first, threshold) };
				return;
			}
			keep_bits(words, key, first, threshold);
		});
		DropMask { bits, keep: 1.0 / (1.0 - p) }
	}

	#[cfg(test)]
	fn kept(&self, i: usize) -> bool {
		self.bits[i / 64] >> (i % 64) & 1 == 1
	}

	/// `drop(x)`: dropped elements 0, kept ones scaled by `1/(1−p)`.
	fn apply(&self, x: &[f32]) -> Vec<f32> {
		let mut out = vec![0f32; x.len()];
		out.par_chunks_mut(DROPOUT_CHUNK).zip(x.par_chunks(DROPOUT_CHUNK)).enumerate().for_each(|(c, (out, x))| {
			let words = &self.bits[c * DROPOUT_CHUNK / 64..];
			#[cfg(target_arch = "x86_64")]
			if std::arch::is_x86_feature_detected!("avx512f") {
				// SAFETY: the CPU has AVX-512F (checked); `words` covers the chunk.
				unsafe { masked_scale_avx512(out, x, words, self.keep, false) };
				return;
			}
			for ((out, x), &w) in out.chunks_mut(64).zip(x.chunks(64)).zip(words) {
				for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
					*o = if w >> j & 1 == 1 { v * self.keep } else { 0.0 };
				}
			}
		});
		out
	}

	/// `dx += drop'(t)`: `t · 1/(1−p)` where the input was kept.
	fn add_kept(&self, dx: &mut [f32], t: &[f32]) {
		dx.par_chunks_mut(DROPOUT_CHUNK).zip(t.par_chunks(DROPOUT_CHUNK)).enumerate().for_each(|(c, (dx, t))| {
			let words = &self.bits[c * DROPOUT_CHUNK / 64..];
			#[cfg(target_arch = "x86_64")]
			if std::arch::is_x86_feature_detected!("avx512f") {
				// SAFETY: the CPU has AVX-512F (checked); `words` covers the chunk.
				unsafe { masked_scale_avx512(dx, t, words, self.keep, true) };
				return;
			}
			for ((dx, t), &w) in dx.chunks_mut(64).zip(t.chunks(64)).zip(words) {
				for (j, (d, &v)) in dx.iter_mut().zip(t).enumerate() {
					*d += if w >> j & 1 == 1 { v * self.keep } else { 0.0 };
				}
			}
		});
	}
}

/// `out[i] (+)= kept(i) ? x[i]·keep : +0` sixteen lanes at a time: the same operations
/// as the scalar loops (a kept lane's one multiply; a dropped lane is +0, added or not).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn masked_scale_avx512(out: &mut [f32], x: &[f32], words: &[u64], keep: f32, add: bool) {
	use std::arch::x86_64::*;
	let k = _mm512_set1_ps(keep);
	for (i, (o, x)) in out.chunks_mut(16).zip(x.chunks(16)).enumerate() {
		let bits = (words[i / 4] >> (16 * (i % 4))) as u16;
		let lanes: __mmask16 = ((1u32 << x.len()) - 1) as __mmask16;
		let v = _mm512_maskz_mul_ps(bits & lanes, _mm512_maskz_loadu_ps(lanes, x.as_ptr()), k);
		let r = if add { _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, o.as_ptr()), v) } else { v };
		_mm512_mask_storeu_ps(o.as_mut_ptr(), lanes, r);
	}
}

/// Bit `j` of `words[w]`: whether element `first + 64w + j` is kept (integer arithmetic:
/// the same on every CPU, vectorised or not).
#[inline(always)]
fn keep_bits(words: &mut [u64], key: u64, first: u64, threshold: u64) {
	for (w, word) in words.iter_mut().enumerate() {
		let base = first + 64 * w as u64;
		let mut bits = 0u64;
		for j in 0..64 {
			let u = mix64(key ^ mix64(base + j)) >> 40;
			bits |= ((u >= threshold) as u64) << j;
		}
		*word = bits;
	}
}

/// [`keep_bits`] eight elements at a time: the same integer operations.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
unsafe fn keep_bits_avx512(words: &mut [u64], key: u64, first: u64, threshold: u64) {
	use std::arch::x86_64::*;
	let keyv = _mm512_set1_epi64(key as i64);
	let thr = _mm512_set1_epi64(threshold as i64);
	let lanes = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
	for (w, word) in words.iter_mut().enumerate() {
		let base = first + 64 * w as u64;
		let mut bits = 0u64;
		for g in 0..8u64 {
			let idx = _mm512_add_epi64(_mm512_set1_epi64((base + 8 * g) as i64), lanes);
			let u = _mm512_srli_epi64::<40>(mix64x8(_mm512_xor_si512(keyv, mix64x8(idx))));
			bits |= (_mm512_cmpge_epu64_mask(u, thr) as u64) << (8 * g);
		}
		*word = bits;
	}
}

/// `rng::mix64` on eight lanes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512dq")]
fn mix64x8(z: std::arch::x86_64::__m512i) -> std::arch::x86_64::__m512i {
	use std::arch::x86_64::*;
	let z = _mm512_mullo_epi64(
		_mm512_xor_si512(z, _mm512_srli_epi64::<30>(z)),
		_mm512_set1_epi64(0xbf58_476d_1ce4_e5b9u64 as i64),
	);
	let z = _mm512_mullo_epi64(
		_mm512_xor_si512(z, _mm512_srli_epi64::<27>(z)),
		_mm512_set1_epi64(0x94d0_49bb_1331_11ebu64 as i64),
	);
	_mm512_xor_si512(z, _mm512_srli_epi64::<31>(z))
}

/// Shapes of one call: `n` rows of `in_dim` in, `out_dim` out.
#[derive(Clone, Copy)]
pub struct Dims {
	pub n: usize,
	pub in_dim: usize,
	pub out_dim: usize,
}

/// Forward. Returns `(α/r) · drop(x) Aᵀ` (`[n × r]`) and the dropout mask, which the
/// backward needs.
pub fn forward(
	be: &dyn Backend,
	y: &mut [f32],
	x: &[f32],
	w: &Frozen,
	bias: &[f32],
	lora: Option<&LoraBranch>,
	d: Dims,
) -> (Vec<f32>, Option<DropMask>) {
	be.frozen_forward(y, x, w, d.n, false);
	if !bias.is_empty() {
		for row in y.chunks_exact_mut(d.out_dim) {
			row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
		}
	}
	let Some(l) = lora else { return (Vec::new(), None) };
	let mask = l.dropout.map(|(p, key)| DropMask::new(p, key, x.len()));
	let dropped = mask.as_ref().map(|m| m.apply(x));
	let mut xa = vec![0f32; d.n * l.rank];
	be.matmul_nt(&mut xa, dropped.as_deref().unwrap_or(x), l.a, d.n, d.in_dim, l.rank, false);
	xa.iter_mut().for_each(|v| *v *= l.scale);
	be.matmul_nt(y, &xa, l.b, d.n, l.rank, d.out_dim, true);
	(xa, mask)
}

/// Backward. `dx` (if wanted) gets `+=` or `=` the input gradient; `grad_a`/`grad_b` get `+=`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
	be: &dyn Backend,
	dx: Option<(&mut [f32], bool)>,
	dy: &[f32],
	x: &[f32],
	w: &Frozen,
	lora: Option<(&LoraBranch, &[f32], Option<&DropMask>, &mut [f32], &mut [f32])>,
	d: Dims,
) {
	let Dims { n, in_dim, out_dim } = d;
	let mut dx = dx;
	if let Some((dx, accumulate)) = dx.as_mut() {
		be.frozen_backward(dx, dy, w, n, *accumulate);
	}
	let Some((l, xa, mask, grad_a, grad_b)) = lora else { return };
	let r = l.rank;
	// dB += dyᵀ · (α/r) drop(x) Aᵀ, computed as its transpose ((α/r) drop(x) Aᵀ)ᵀ dy so
	// that the long operand, dy, is read by rows.
	let mut dbt = vec![0f32; r * out_dim];
	be.matmul_tn(&mut dbt, xa, dy, r, n, out_dim, false);
	for (o, row) in grad_b.chunks_exact_mut(r).enumerate() {
		for (j, g) in row.iter_mut().enumerate() {
			*g += dbt[j * out_dim + o];
		}
	}
	// g = (α/r) · dy B;  dA += gᵀ drop(x);  dx += drop'(g A)
	let mut g = vec![0f32; n * r];
	be.matmul_nn(&mut g, dy, l.b, n, out_dim, r, false);
	g.iter_mut().for_each(|v| *v *= l.scale);
	let dropped = mask.map(|m| m.apply(x));
	be.matmul_tn(grad_a, &g, dropped.as_deref().unwrap_or(x), r, n, in_dim, true);
	if let Some((dx, _)) = dx {
		match mask {
			None => be.matmul_nn(dx, &g, l.a, n, r, in_dim, true),
			Some(m) => {
				let mut t = vec![0f32; n * in_dim];
				be.matmul_nn(&mut t, &g, l.a, n, r, in_dim, false);
				m.add_kept(dx, &t);
			},
		}
	}
}

#[cfg(test)]
mod tests {
	use super::*;
	use crate::rng::uniform_at;

	#[test]
	fn the_mask_is_the_documented_draw() {
		let (p, key) = (0.05f32, 1234u64);
		let m = DropMask::new(p, key, 70_000);
		let mut dropped = 0;
		for i in 0..70_000 {
			assert_eq!(m.kept(i), uniform_at(key, i as u64) >= p, "element {i}");
			dropped += !m.kept(i) as usize;
		}
		assert!((dropped as f64 / 70_000.0 - 0.05).abs() < 0.005, "{dropped} dropped");
	}
}
