//! Products with a frozen weight in bf16 on AVX512_BF16: `vdpbf16ps` multiplies pairs of
//! bf16 and accumulates them into f32 lanes. The weight is converted and packed once
//! ([`PackedBf16`]); the activations are converted per call. Everything around these
//! products (LoRA, norms, attention, softmax, loss, the optimizer) stays in f32.
//!
//! Layout and blocking follow the f32 kernel (`sgemm_avx512`): blocks of `KC` along the
//! reduction, `NR`-wide column strips, a 12×32 register tile. In a strip, reduction index
//! `p` sits at `[p/2][column][p%2]`, so one 32-bit load holds the pair a `vdpbf16ps` lane
//! wants; odd lengths are padded with zeros. Each output element is one chain of
//! `vdpbf16ps` over a block in order, added to the output block after block in order:
//! nothing depends on threads.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const MR: usize = 12;
const NR: usize = 32;
/// Reduction elements per block (even).
const KC: usize = 256;

/// f32 → bf16, rounding to nearest even (NaN stays NaN; no flushing of subnormals). Our
/// own conversion, so it is the same on every CPU.
#[inline]
pub(crate) fn to_bf16(x: f32) -> u16 {
	if x.is_nan() {
		return 0x7fc0;
	}
	let b = x.to_bits();
	((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

pub(crate) fn from_bf16(x: u16) -> f32 {
	f32::from_bits((x as u32) << 16)
}

/// One `vdpbf16ps` lane as the bf16 class defines it (Intel's definition): the odd pair's
/// product added to the accumulator and rounded, then the even pair's, each product of two
/// bf16 exact in f32 (subnormal inputs and results are flushed to zero by the instruction;
/// the check below uses none).
fn dot_lane(acc: f32, a: [u16; 2], b: [u16; 2]) -> f32 {
	let t = acc + from_bf16(a[1]) * from_bf16(b[1]);
	t + from_bf16(a[0]) * from_bf16(b[0])
}

/// Whether this CPU's `vdpbf16ps` computes [`dot_lane`] bit for bit, on inputs chosen so
/// that another order of the two additions, or one rounding for both, gives other bits.
/// A CPU that fails is not offered the bf16 class (its bits would differ).
pub(crate) fn semantics_ok() -> bool {
	#[cfg(target_arch = "x86_64")]
	if super::has_bf16() {
		let mut r = crate::rng::Rng::new(0xbf16);
		// Normal values whose magnitudes differ by up to 2^±12, so that each rounding matters.
		let value = |r: &mut crate::rng::Rng| {
			let m = 1.0 + r.uniform();
			let e = (r.below(25) as i32) - 12;
			let s = if r.below(2) == 0 { 1.0 } else { -1.0 };
			s * m * 2f32.powi(e)
		};
		for round in 0..256 {
			let mut acc: [f32; 16] = std::array::from_fn(|_| value(&mut r));
			let mut a: [u16; 32] = std::array::from_fn(|_| to_bf16(value(&mut r)));
			let mut b: [u16; 32] = std::array::from_fn(|_| to_bf16(value(&mut r)));
			if round == 0 {
				// 1 − 1 + 2⁻³⁰: odd pair first gives 2⁻³⁰, even first 0.
				(acc[0], a[0], a[1], b[0], b[1]) =
					(1.0, to_bf16(2f32.powi(-15)), to_bf16(-1.0), to_bf16(2f32.powi(-15)), to_bf16(1.0));
			}
			// SAFETY: the CPU has AVX-512F and AVX512_BF16 (checked above).
			let got = unsafe { dot16(acc, a, b) };
			for j in 0..16 {
				if got[j].to_bits() != dot_lane(acc[j], [a[2 * j], a[2 * j + 1]], [b[2 * j], b[2 * j + 1]]).to_bits() {
					return false;
				}
			}
		}
		return true;
	}
	false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dot16(acc: [f32; 16], a: [u16; 32], b: [u16; 32]) -> [f32; 16] {
	let acc = _mm512_loadu_ps(acc.as_ptr());
	let a: __m512bh = std::mem::transmute(_mm512_loadu_si512(a.as_ptr() as *const _));
	let b: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.as_ptr() as *const _));
	let mut out = [0f32; 16];
	_mm512_storeu_ps(out.as_mut_ptr(), _mm512_dpbf16_ps(acc, a, b));
	out
}

/// `B` (`[k × n]`) in bf16, packed for the kernel (see the module docs).
pub(crate) struct PackedBf16 {
	pub k: usize,
	pub n: usize,
	buf: Vec<u16>,
	start: usize,
}

impl PackedBf16 {
	/// Converts and packs `B(p,j) = b[p*b_rs + j*b_cs]`.
	pub fn new(b: &[f32], k: usize, n: usize, (b_rs, b_cs): (usize, usize)) -> Self {
		assert!(k > 0 && n > 0 && (k - 1) * b_rs + (n - 1) * b_cs < b.len(), "packed operand out of bounds");
		let strips = n.div_ceil(NR);
		let len = strips * NR * k.next_multiple_of(2);
		let mut buf = vec![0u16; len + 32];
		let start = buf.as_ptr().align_offset(64).min(32);
		let data = &mut buf[start..start + len];
		for p0 in (0..k).step_by(KC) {
			let kc = KC.min(k - p0);
			let block = &mut data[p0 * strips * NR..];
			let kc2 = kc.next_multiple_of(2);
			for s in 0..strips {
				let strip = &mut block[s * NR * kc2..(s + 1) * NR * kc2];
				for j in 0..NR.min(n - s * NR) {
					for p in 0..kc {
						strip[(p / 2) * 2 * NR + 2 * j + p % 2] = to_bf16(b[(p0 + p) * b_rs + (s * NR + j) * b_cs]);
					}
				}
			}
		}
		PackedBf16 { k, n, buf, start }
	}

	fn data(&self) -> &[u16] {
		&self.buf[self.start..]
	}
}

/// `m` rows of `k` f32 as bf16 ([`to_bf16`] on each), each row padded to an even length:
/// the left operand. Rows are converted in parallel, 16 lanes at a time where the CPU has
/// AVX-512 (the same integer operations as [`to_bf16`], so the same bits).
pub(crate) fn rows_to_bf16(a: &[f32], m: usize, k: usize) -> (Vec<u16>, usize) {
	use rayon::prelude::*;
	assert!(a.len() >= m * k, "bf16 conversion: {} values for {m} rows of {k}", a.len());
	let lda = k.next_multiple_of(2);
	let mut out = vec![0u16; m * lda];
	let rows_per_task = (4096 / lda).max(1);
	out.par_chunks_mut(lda * rows_per_task).zip(a.par_chunks(k * rows_per_task)).for_each(|(dst, src)| {
		for (dst, src) in dst.chunks_exact_mut(lda).zip(src.chunks_exact(k)) {
			#[cfg(target_arch = "x86_64")]
			if std::arch::is_x86_feature_detected!("avx512f") {
				// SAFETY: the CPU has AVX-512F (checked).
				unsafe { convert_avx512(&mut dst[..k], src) };
				continue;
			}
			dst.iter_mut().zip(src).for_each(|(d, &s)| *d = to_bf16(s));
		}
	});
	(out, lda)
}

/// [`to_bf16`] on 16 lanes: NaN → 0x7fc0, else `(bits + 0x7fff + bit16) >> 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn convert_avx512(dst: &mut [u16], src: &[f32]) {
	let n = src.len();
	let mut i = 0;
	while i < n {
		let len = 16.min(n - i);
		let m: __mmask16 = ((1u32 << len) - 1) as __mmask16;
		let x = _mm512_maskz_loadu_ps(m, src.as_ptr().add(i));
		let b = _mm512_castps_si512(x);
		let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
		let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb));
		let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
		let r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0));
		_mm512_mask_cvtepi32_storeu_epi16(dst.as_mut_ptr().add(i) as *mut _, m, r);
		i += 16;
	}
}

/// `C[m×n] (+)= A·B[:, j0..j0+n]`, `A` bf16 rows `lda` apart, `C(i,j) = c[i*c_rs + j]`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX512_BF16; `a` must hold `m` rows; `j0` a multiple
/// of `NR` with `j0 + n ≤ b.n`; `c` valid for the block.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn sgemm_bf16(
	m: usize,
	n: usize,
	c: *mut f32,
	c_rs: usize,
	a: *const u16,
	lda: usize,
	b: &PackedBf16,
	j0: usize,
	accumulate: bool,
) {
	assert!(j0.is_multiple_of(NR) && j0 + n <= b.n, "columns {j0}..{} of a packed {}-wide operand", j0 + n, b.n);
	let (n_strips, m_strips) = (n.div_ceil(NR), m.div_ceil(MR));
	let all_strips = b.n.div_ceil(NR);
	let mut tile = [0f32; MR * NR];
	for (block, p0) in (0..b.k).step_by(KC).enumerate() {
		let kc2 = KC.min(b.k - p0).next_multiple_of(2);
		let panel = b.data().as_ptr().add(p0 * all_strips * NR + (j0 / NR) * NR * kc2);
		let add = accumulate || block > 0;
		for sj in 0..n_strips {
			let cols = NR.min(n - sj * NR);
			let bs = panel.add(sj * NR * kc2);
			for si in 0..m_strips {
				let rows = MR.min(m - si * MR);
				let cp = c.add(si * MR * c_rs + sj * NR);
				let full = rows == MR && cols == NR;
				let (dst, dst_rs, dst_add) = if full { (cp, c_rs, add) } else { (tile.as_mut_ptr(), NR, false) };
				kernel(kc2 / 2, a.add(si * MR * lda + p0), lda, rows, bs, dst, dst_rs, dst_add);
				if !full {
					for i in 0..rows {
						for j in 0..cols {
							let d = cp.add(i * c_rs + j);
							*d = if add { *d + tile[i * NR + j] } else { tile[i * NR + j] };
						}
					}
				}
			}
		}
	}
}

/// The 12×32 register tile over `pairs` reduction pairs: `C = (C +) Σ A(i,p)·B(p,j)`.
/// Missing rows repeat the last (their results unused).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(
	pairs: usize,
	a: *const u16,
	lda: usize,
	rows: usize,
	b: *const u16,
	c: *mut f32,
	c_rs: usize,
	add: bool,
) {
	let mut row_ptr = [a; MR];
	for (i, r) in row_ptr.iter_mut().enumerate() {
		*r = a.add(i.min(rows - 1) * lda);
	}
	let mut acc = [[_mm512_setzero_ps(); 2]; MR];
	for pp in 0..pairs {
		let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(pp * 2 * NR) as *const _));
		let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(pp * 2 * NR + NR) as *const _));
		for i in 0..MR {
			let pair = (row_ptr[i].add(2 * pp) as *const i32).read_unaligned();
			let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
			acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
			acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
		}
	}
	for (i, row) in acc.iter().enumerate() {
		let cr = c.add(i * c_rs);
		if add {
			_mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), row[0]));
			_mm512_storeu_ps(cr.add(16), _mm512_add_ps(_mm512_loadu_ps(cr.add(16)), row[1]));
		} else {
			_mm512_storeu_ps(cr, row[0]);
			_mm512_storeu_ps(cr.add(16), row[1]);
		}
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn this_cpus_dot_product_instruction_is_the_documented_one() {
		if !super::super::has_bf16() {
			eprintln!("no AVX512_BF16 here");
			return;
		}
		assert!(semantics_ok(), "vdpbf16ps here differs from the bf16 class's definition");
		// And the definition is not vacuous: the even pair first gives other bits on the
		// fixed input the check includes (1 − 1 + 2⁻³⁰ against 1 + 2⁻³⁰ − 1).
		let (a, b) = ([to_bf16(2f32.powi(-15)), to_bf16(-1.0)], [to_bf16(2f32.powi(-15)), to_bf16(1.0)]);
		assert_eq!(dot_lane(1.0, a, b), 2f32.powi(-30));
		assert_eq!((1.0f32 + 2f32.powi(-30)) + -1.0, 0.0);
	}

	#[test]
	fn rows_convert_as_the_scalar_function_does() {
		let mut r = crate::rng::Rng::new(3);
		let mut a: Vec<f32> = (0..7 * 37).map(|_| (r.uniform() - 0.5) * 1e3).collect();
		a[5] = f32::NAN;
		a[6] = 1.0 + 1.0 / 256.0;
		a[7] = -0.0;
		let (out, lda) = rows_to_bf16(&a, 7, 37);
		assert_eq!(lda, 38);
		for i in 0..7 {
			for j in 0..37 {
				assert_eq!(out[i * lda + j], to_bf16(a[i * 37 + j]), "({i}, {j})");
			}
			assert_eq!(out[i * lda + 37], 0, "padding");
		}
	}

	#[test]
	fn bf16_conversion_rounds_to_nearest_even() {
		assert_eq!(to_bf16(1.0), 0x3f80);
		// 1 + 2⁻⁸ is halfway between two bf16 values: ties to the even one (1.0).
		assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
		// 1 + 3·2⁻⁸ is halfway too: up to the even 1 + 2⁻⁶.
		assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
		assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
		assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
		assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
	}
}
