//! LoRA's input dropout on the CPU: which elements are kept, drawn once per forward from
//! the engine's counter-based stream (element `i` is dropped iff `uniform_at(key, i) <
//! p`), kept as bits for the backward.

use rayon::prelude::*;

use crate::rng::mix64;

/// Elements per dropout task (a multiple of 64; each element's mask depends only on its
/// index).
const DROPOUT_CHUNK: usize = 1 << 15;

/// Which inputs dropout keeps (bit `i`: element `i` kept), drawn once in the forward and
/// used again by the backward. Element `i` is dropped iff `uniform_at(key, i) < p`.
pub(super) struct DropMask {
	bits: Vec<u64>,
	keep: f32,
	/// The elements it covers: a mask is only ever applied to a buffer of its own length.
	len: usize,
}

impl DropMask {
	pub(super) fn new(p: f32, key: u64, len: usize) -> Self {
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
		DropMask { bits, keep: 1.0 / (1.0 - p), len }
	}

	#[cfg(test)]
	fn kept(&self, i: usize) -> bool {
		self.bits[i / 64] >> (i % 64) & 1 == 1
	}

	/// `out = drop(x)`: dropped elements 0, kept ones scaled by `1/(1−p)`.
	pub(super) fn apply(&self, out: &mut [f32], x: &[f32]) {
		assert!(out.len() == self.len && x.len() == self.len, "a dropout mask of {} elements applied to {}", self.len, x.len());
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
	}

	/// `dx += drop'(t)`: `t · 1/(1−p)` where the input was kept.
	pub(super) fn add_kept(&self, dx: &mut [f32], t: &[f32]) {
		assert!(dx.len() == self.len && t.len() == self.len, "a dropout mask of {} elements applied to {}", self.len, t.len());
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
