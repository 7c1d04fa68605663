//! Elementary functions for every hashed path: fixed polynomials in the crate, so a state
//! hash does not depend on the platform's `libm` (glibc, musl and the various vector
//! libraries all round `exp`, `sin`, `pow` differently).
//!
//! Each function is a fixed sequence of IEEE-754 operations that are correctly rounded
//! everywhere (`+ − × ÷`, `sqrt`, fused multiply-add, round-to-nearest-even), so it gives
//! the same bits on every CPU. The vector form of [`exp_f32`] ([`exp_f32_in_place`]) runs
//! the very same operations 16 lanes at a time and so agrees with it bit for bit.
//!
//! Accuracy (tested against Rust's `f64` functions over dense samples): `exp_f64`,
//! `ln_f64`, `sin_f64`, `cos_f64` within 2 ulp; `exp_f32` within 2 ulp of the exact value
//! over its range. Rust's `f32::mul_add` is a correctly rounded fused multiply-add on every
//! target (an instruction where the CPU has one, a software fma otherwise).

/// `log2(e)`, and `ln 2` split into a high part with trailing zero bits (so `k · LN2_HI` is
/// exact for the `k` that occur) and the rest.
const LOG2E_F32: f32 = std::f32::consts::LOG2_E;
const LN2_HI_F32: f32 = 0.693_145_75; // 0x3f317200
const LN2_LO_F32: f32 = 1.428_606_8e-6; // 0x35bfbe8e
/// Below this `exp` is 0 (the result would be subnormal: the constant is the f32 just
/// above −126·ln 2, so every input at or above it has `k ≥ −126` and `r ≥ 0` where
/// `k = −126`), above the other `+∞`.
const EXP_F32_MIN: f32 = -87.336_54;
const EXP_F32_MAX: f32 = 88.722_83;
/// Taylor coefficients `1/k!` for `k = 0..=7`: on `|r| ≤ ln2/2` the truncation error is
/// under `0.347⁸/8! ≈ 5e-9`, a tenth of an f32 ulp.
const EXP_F32_POLY: [f32; 8] = [1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];

/// `eˣ` in f32 (see the module docs). Below −87.34 it returns 0, above 88.72 `+∞`.
#[inline]
pub fn exp_f32(x: f32) -> f32 {
	if x.is_nan() {
		return x;
	}
	if x < EXP_F32_MIN {
		return 0.0;
	}
	if x > EXP_F32_MAX {
		return f32::INFINITY;
	}
	let k = (x * LOG2E_F32).round_ties_even();
	let r = (-k).mul_add(LN2_LO_F32, (-k).mul_add(LN2_HI_F32, x));
	let mut p = EXP_F32_POLY[7];
	for &c in EXP_F32_POLY[..7].iter().rev() {
		p = p.mul_add(r, c);
	}
	// 2ᵏ·p by adding k to the exponent; k ∈ [−126, 128] and p ∈ [0.7, 1.42].
	f32::from_bits((p.to_bits() as i32).wrapping_add((k as i32) << 23) as u32)
}

/// `x[i] = exp_f32(x[i])` for a whole slice, 16 lanes at a time where the CPU has AVX-512
/// (the same operations, so the same bits as the scalar function).
pub fn exp_f32_in_place(x: &mut [f32]) {
	#[cfg(target_arch = "x86_64")]
	if std::arch::is_x86_feature_detected!("avx512f") {
		// SAFETY: the CPU has AVX-512F (checked above).
		unsafe { avx512::exp_in_place(x) };
		return;
	}
	x.iter_mut().for_each(|v| *v = exp_f32(*v));
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
	use std::arch::x86_64::*;

	use super::*;

	/// One vector of [`exp_f32`]: the same clamps, reduction, Horner steps and exponent add.
	#[inline]
	#[target_feature(enable = "avx512f")]
	pub(super) fn exp16(x: __m512) -> __m512 {
		let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
			x,
			_mm512_set1_ps(LOG2E_F32),
		));
		let nk = _mm512_sub_ps(_mm512_setzero_ps(), k);
		let r = _mm512_fmadd_ps(nk, _mm512_set1_ps(LN2_LO_F32), _mm512_fmadd_ps(nk, _mm512_set1_ps(LN2_HI_F32), x));
		let mut p = _mm512_set1_ps(EXP_F32_POLY[7]);
		for &c in EXP_F32_POLY[..7].iter().rev() {
			p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
		}
		let ki = _mm512_slli_epi32::<23>(_mm512_cvtps_epi32(k));
		let y = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), ki));
		let low = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_F32_MIN));
		let high = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(EXP_F32_MAX));
		let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
		let y = _mm512_mask_mov_ps(y, low, _mm512_setzero_ps());
		let y = _mm512_mask_mov_ps(y, high, _mm512_set1_ps(f32::INFINITY));
		_mm512_mask_mov_ps(y, nan, x)
	}

	/// # Safety
	/// The CPU must support AVX-512F.
	#[target_feature(enable = "avx512f")]
	pub(super) unsafe fn exp_in_place(x: &mut [f32]) {
		let mut chunks = x.chunks_exact_mut(16);
		for c in &mut chunks {
			let v = _mm512_loadu_ps(c.as_ptr());
			_mm512_storeu_ps(c.as_mut_ptr(), exp16(v));
		}
		let rest = chunks.into_remainder();
		if !rest.is_empty() {
			let m: __mmask16 = ((1u32 << rest.len()) - 1) as __mmask16;
			let v = _mm512_maskz_loadu_ps(m, rest.as_ptr());
			_mm512_mask_storeu_ps(rest.as_mut_ptr(), m, exp16(v));
		}
	}
}

/// `1/k!`, `k = 0..=13`: on `|r| ≤ ln2/2` the f64 truncation error is below `0.347¹⁴/14!`
/// (≈ 4e-18, a fortieth of an ulp).
const INV_FACT: [f64; 14] = [
	1.0,
	1.0,
	0.5,
	1.666_666_666_666_666_6e-1,
	4.166_666_666_666_666_4e-2,
	8.333_333_333_333_333e-3,
	1.388_888_888_888_889e-3,
	1.984_126_984_126_984e-4,
	2.480_158_730_158_730_2e-5,
	2.755_731_922_398_589e-6,
	2.755_731_922_398_589_3e-7,
	2.505_210_838_544_172e-8,
	2.087_675_698_786_81e-9,
	1.605_904_383_682_161_3e-10,
];
const LN2_HI: f64 = 6.931_471_803_691_238_2e-1; // 0x3fe62e42fee00000: 32 significant bits
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10; // 0x3dea39ef35793c76

/// `eˣ` in f64. Below −745 it returns 0, above 709.78 `+∞`.
pub fn exp_f64(x: f64) -> f64 {
	if x.is_nan() {
		return x;
	}
	if x > 709.782_712_893_384 {
		return f64::INFINITY;
	}
	if x < -745.2 {
		return 0.0;
	}
	let k = (x * std::f64::consts::LOG2_E).round_ties_even();
	let r = (-k).mul_add(LN2_LO, (-k).mul_add(LN2_HI, x));
	let mut p = INV_FACT[13];
	for &c in INV_FACT[..13].iter().rev() {
		p = p.mul_add(r, c);
	}
	scale_by_pow2(p, k as i32)
}

/// `x · 2ⁿ` for `x` near 1, exact (two steps, so that subnormal results work too).
fn scale_by_pow2(x: f64, n: i32) -> f64 {
	let pow2 = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
	if n > 1023 {
		x * pow2(1023) * pow2(n - 1023)
	} else if n < -1022 {
		x * pow2(-1022) * pow2(n + 1022)
	} else {
		x * pow2(n)
	}
}

/// `ln x` in f64 (NaN below 0, `−∞` at 0).
pub fn ln_f64(x: f64) -> f64 {
	if x.is_nan() || x < 0.0 {
		return f64::NAN;
	}
	if x == 0.0 {
		return f64::NEG_INFINITY;
	}
	if x.is_infinite() {
		return x;
	}
	// x = m · 2ᵉ with m ∈ [√½, √2).
	let (mut bits, mut e) = (x.to_bits(), 0i32);
	if bits >> 52 == 0 {
		// Subnormal: normalise first.
		bits = (x * f64::from_bits(0x4350_0000_0000_0000)).to_bits(); // · 2⁵⁴
		e = -54;
	}
	e += ((bits >> 52) & 0x7ff) as i32 - 1023;
	let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
	if m > std::f64::consts::SQRT_2 {
		m *= 0.5;
		e += 1;
	}
	// ln m = 2 artanh(f), f = (m − 1)/(m + 1), |f| ≤ 0.1716: 2(f + f³/3 + … + f²³/23).
	let f = (m - 1.0) / (m + 1.0);
	let f2 = f * f;
	let mut s: f64 = 1.0 / 23.0;
	for k in (0..11).rev() {
		s = s.mul_add(f2, 1.0 / (2 * k + 1) as f64);
	}
	let lnm = 2.0 * f * s;
	let e = e as f64;
	e.mul_add(LN2_HI, e.mul_add(LN2_LO, lnm))
}

/// `xʸ = e^(y ln x)` for `x > 0` (the RoPE frequencies `θ^(−2i/d)`).
pub fn pow_f64(x: f64, y: f64) -> f64 {
	if y == 0.0 {
		return 1.0;
	}
	exp_f64(y * ln_f64(x))
}

/// `xⁿ` for a non-negative integer by repeated squaring (AdamW's bias corrections).
pub fn powi_f64(x: f64, n: u64) -> f64 {
	let (mut base, mut n, mut acc) = (x, n, 1.0);
	while n > 0 {
		if n & 1 == 1 {
			acc *= base;
		}
		base *= base;
		n >>= 1;
	}
	acc
}

/// π/2 in three parts (fdlibm's `pio2_1`, `pio2_2`, `pio2_3`): the first two have 33
/// significant bits, so `k · part` is exact for `|k| < 2²⁰`.
const PIO2_1: f64 = 1.570_796_326_734_125_6; // 0x3ff921fb54400000
const PIO2_2: f64 = 6.077_100_506_303_966e-11; // 0x3dd0b4611a600000
const PIO2_3: f64 = 2.022_266_248_711_166_5e-21; // 0x3ba3198a2e037073

/// `x = k·π/2 + r` with `|r| ≤ π/4`; returns `(r, k mod 4)`. Exact enough for `|x| < 2²⁰·π/2`
/// (RoPE angles are at most the context length).
fn reduce_pio2(x: f64) -> (f64, u32) {
	let k = (x * std::f64::consts::FRAC_2_PI).round_ties_even();
	let r = (-k).mul_add(PIO2_3, (-k).mul_add(PIO2_2, (-k).mul_add(PIO2_1, x)));
	(r, (k as i64).rem_euclid(4) as u32)
}

/// `sin r`, `cos r` for `|r| ≤ π/4` by Taylor series to r¹⁹ / r¹⁸ (truncation < 1e-19).
fn sin_cos_kernel(r: f64) -> (f64, f64) {
	let r2 = r * r;
	// sin: r Σ (−r²)ᵏ/(2k+1)!, cos: Σ (−r²)ᵏ/(2k)!, Horner from the top.
	let (mut s, mut c) = (0.0f64, 0.0f64);
	for k in (0..10).rev() {
		let (fs, fc) = (factorial(2 * k + 1), factorial(2 * k));
		let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
		s = s.mul_add(r2, sign / fs);
		c = c.mul_add(r2, sign / fc);
	}
	(r * s, c)
}

fn factorial(n: u32) -> f64 {
	(1..=n).fold(1.0, |a, k| a * k as f64)
}

/// `(sin x, cos x)` in f64, for `|x| < 10⁶`.
pub fn sin_cos_f64(x: f64) -> (f64, f64) {
	if !x.is_finite() {
		return (f64::NAN, f64::NAN);
	}
	let (r, q) = reduce_pio2(x);
	let (s, c) = sin_cos_kernel(r);
	match q {
		0 => (s, c),
		1 => (c, -s),
		2 => (-s, -c),
		_ => (-c, s),
	}
}

pub fn sin_f64(x: f64) -> f64 {
	sin_cos_f64(x).0
}

pub fn cos_f64(x: f64) -> f64 {
	sin_cos_f64(x).1
}

#[cfg(test)]
mod tests {
	use super::*;
	use crate::rng::Rng;

	/// Distance in units of the last place of `want` (f64).
	fn ulps64(got: f64, want: f64) -> f64 {
		if got == want {
			return 0.0;
		}
		let ulp = f64::from_bits(want.abs().to_bits() + 1) - want.abs();
		(got - want).abs() / ulp
	}

	fn samples(lo: f64, hi: f64, n: usize, seed: u64) -> Vec<f64> {
		let mut r = Rng::new(seed);
		(0..n).map(|_| lo + (hi - lo) * ((r.next_u64() >> 11) as f64 / (1u64 << 53) as f64)).collect()
	}

	#[test]
	fn f64_functions_are_within_two_ulp_of_std() {
		let mut worst = [0f64; 4];
		for x in samples(-700.0, 700.0, 20_000, 1).into_iter().chain(samples(-1.0, 1.0, 20_000, 2)) {
			worst[0] = worst[0].max(ulps64(exp_f64(x), x.exp()));
		}
		for x in samples(1e-300, 1e3, 20_000, 3).into_iter().chain(samples(0.5, 2.0, 20_000, 4)) {
			let want = x.ln();
			// Near x = 1 ln x is tiny: measure the error against the ulp of ln x itself.
			worst[1] = worst[1].max(ulps64(ln_f64(x), want));
		}
		for x in samples(-40_000.0, 40_000.0, 20_000, 5).into_iter().chain(samples(-4.0, 4.0, 20_000, 6)) {
			let (s, c) = sin_cos_f64(x);
			// Away from the zeros (where an ulp of the result is not meaningful).
			if x.sin().abs() > 1e-3 {
				worst[2] = worst[2].max(ulps64(s, x.sin()));
			}
			if x.cos().abs() > 1e-3 {
				worst[3] = worst[3].max(ulps64(c, x.cos()));
			}
		}
		assert!(worst.iter().all(|&w| w <= 2.0), "worst ulps exp, ln, sin, cos: {worst:?}");
		assert_eq!(exp_f64(0.0), 1.0);
		assert_eq!(ln_f64(1.0), 0.0);
		assert_eq!(exp_f64(-800.0), 0.0);
		assert_eq!(exp_f64(800.0), f64::INFINITY);
		assert!((pow_f64(10000.0, -0.5) - 0.01).abs() < 1e-17);
		assert_eq!(powi_f64(0.9, 3), 0.9 * 0.9 * 0.9);
		assert_eq!(powi_f64(0.999, 0), 1.0);
		// Subnormal input to ln, and sin/cos at the quadrant points.
		assert!(ulps64(ln_f64(5e-320), (5e-320f64).ln()) <= 2.0);
		assert_eq!(sin_cos_f64(0.0), (0.0, 1.0));
	}

	#[test]
	fn exp_f32_is_within_two_ulp_and_the_vector_form_agrees_bit_for_bit() {
		let xs: Vec<f32> = samples(-87.0, 88.5, 50_000, 7)
			.into_iter()
			.chain(samples(-1.0, 1.0, 50_000, 8))
			.map(|x| x as f32)
			.chain([0.0, -0.0, -87.3, 88.7, -100.0, 100.0, f32::NEG_INFINITY, EXP_F32_MIN, -87.336_55, EXP_F32_MAX])
			.collect();
		let mut worst = 0f64;
		for &x in &xs {
			let (got, want) = (exp_f32(x), (x as f64).exp());
			if x < EXP_F32_MIN {
				assert_eq!(got, 0.0, "exp({x}) flushes to 0");
				continue;
			}
			if want > f32::MAX as f64 {
				assert_eq!(got, f32::INFINITY);
				continue;
			}
			let ulp = (f32::from_bits((want as f32).to_bits() + 1) - want as f32) as f64;
			worst = worst.max((got as f64 - want).abs() / ulp);
		}
		assert!(worst <= 2.0, "worst exp_f32 error {worst} ulp");
		// Vector and scalar: every length of tail, and NaN passes through.
		let mut v = xs.clone();
		v.truncate(16 * 7 + 5);
		v.push(f32::NAN);
		let mut vec_form = v.clone();
		exp_f32_in_place(&mut vec_form);
		for (a, x) in vec_form.iter().zip(&v) {
			assert_eq!(a.to_bits(), exp_f32(*x).to_bits(), "exp({x})");
		}
	}
}
