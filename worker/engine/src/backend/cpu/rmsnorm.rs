//! RMSNorm: `y = x · rstd · w`, `rstd = 1/sqrt(mean(x²) + eps)`, per row.

use rayon::prelude::*;

use super::reduce;

const ROWS_PER_TASK: usize = 16;

pub(super) fn forward(out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
	out.par_chunks_mut(dim * ROWS_PER_TASK)
		.zip(rstd.par_chunks_mut(ROWS_PER_TASK))
		.zip(x.par_chunks(dim * ROWS_PER_TASK))
		.for_each(|((out, rstd), x)| {
			for ((o, r), x) in out.chunks_exact_mut(dim).zip(rstd.iter_mut()).zip(x.chunks_exact(dim)) {
				let ss = reduce::dot(x, x);
				*r = 1.0 / (ss / dim as f32 + eps).sqrt();
				for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
					*o = x * *r * w;
				}
			}
		});
}

/// With `g = w ⊙ dy`: `dx = rstd · g − x · rstd³ · mean(g ⊙ x)`.
pub(super) fn backward(dx: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], rstd: &[f32], dim: usize) {
	dx.par_chunks_mut(dim * ROWS_PER_TASK)
		.zip(dout.par_chunks(dim * ROWS_PER_TASK))
		.zip(x.par_chunks(dim * ROWS_PER_TASK))
		.zip(rstd.par_chunks(ROWS_PER_TASK))
		.for_each(|(((dx, dout), x), rstd)| {
			for (((dx, dy), x), &r) in
				dx.chunks_exact_mut(dim).zip(dout.chunks_exact(dim)).zip(x.chunks_exact(dim)).zip(rstd)
			{
				// Σ dy·w·x, as (dy·w)·x in 16 lanes.
				let mut acc = [0f32; 16];
				for (i, ((dy, x), w)) in dy.iter().zip(x).zip(w).enumerate() {
					acc[i % 16] += dy * w * x;
				}
				let dot = reduce::sum(&acc);
				let c = dot * r * r * r / dim as f32;
				for (((dx, &dy), &x), &w) in dx.iter_mut().zip(dy).zip(x).zip(w) {
					*dx += r * w * dy - x * c;
				}
			}
		});
}
