//! Fixed-order reductions shared by the kernels. A sum is taken in 16 interleaved partial
//! sums (element `i` goes to lane `i % 16`), which are then added pairwise (lane `j` with
//! `j + 8`, then `+ 4`, `+ 2`, `+ 1`). That is the same sequence of roundings on every
//! CPU, vectorised or not, and more accurate than one running sum.

const LANES: usize = 16;

/// `Σ x`, in the fixed order above.
#[inline]
pub(crate) fn sum(x: &[f32]) -> f32 {
	let mut acc = [0f32; LANES];
	let mut chunks = x.chunks_exact(LANES);
	for c in &mut chunks {
		for j in 0..LANES {
			acc[j] += c[j];
		}
	}
	for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
		*a += v;
	}
	fold(acc)
}

/// `Σ x·y`, in the fixed order above (a multiply, then an add: no fused multiply-add, so
/// the bits do not depend on whether the compiler fuses).
#[inline]
pub(crate) fn dot(x: &[f32], y: &[f32]) -> f32 {
	debug_assert_eq!(x.len(), y.len());
	let mut acc = [0f32; LANES];
	let mut cx = x.chunks_exact(LANES);
	let mut cy = y.chunks_exact(LANES);
	for (a, b) in (&mut cx).zip(&mut cy) {
		for j in 0..LANES {
			acc[j] += a[j] * b[j];
		}
	}
	for ((s, a), b) in acc.iter_mut().zip(cx.remainder()).zip(cy.remainder()) {
		*s += a * b;
	}
	fold(acc)
}

#[inline]
fn fold(mut acc: [f32; LANES]) -> f32 {
	let mut w = LANES / 2;
	while w > 0 {
		for j in 0..w {
			acc[j] += acc[j + w];
		}
		w /= 2;
	}
	acc[0]
}

/// `max x` (−∞ for an empty slice).
#[inline]
pub(crate) fn max(x: &[f32]) -> f32 {
	x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
	use crate::rng::Rng;

	#[test]
	fn sums_follow_the_documented_order() {
		let mut r = Rng::new(4);
		let x: Vec<f32> = (0..37).map(|_| (r.uniform() - 0.5) * 1e4).collect();
		let y: Vec<f32> = (0..37).map(|_| r.uniform() - 0.5).collect();
		// The documented order, spelled out.
		let by_hand = |prods: &[f32]| {
			let mut l = [0f32; 16];
			for (i, v) in prods.iter().enumerate() {
				l[i % 16] += v;
			}
			let l8: [f32; 8] = std::array::from_fn(|j| l[j] + l[j + 8]);
			let l4: [f32; 4] = std::array::from_fn(|j| l8[j] + l8[j + 4]);
			let l2: [f32; 2] = std::array::from_fn(|j| l4[j] + l4[j + 2]);
			l2[0] + l2[1]
		};
		assert_eq!(super::sum(&x).to_bits(), by_hand(&x).to_bits());
		let prods: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a * b).collect();
		assert_eq!(super::dot(&x, &y).to_bits(), by_hand(&prods).to_bits());
		let exact: f64 = x.iter().map(|&v| v as f64).sum();
		assert!((super::sum(&x) as f64 - exact).abs() < 1e-2, "{} vs {exact}", super::sum(&x));
		assert_eq!(super::sum(&[]), 0.0);
		assert_eq!(super::max(&[1.0, -3.0, 7.5]), 7.5);
	}
}
