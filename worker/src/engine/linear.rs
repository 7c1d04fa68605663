//! A frozen linear layer with an optional LoRA branch, forward beside backward:
//! `y = x Wᵀ + b + (α/r) · drop(x) Aᵀ Bᵀ`.

use rayon::prelude::*;

use crate::backend::Backend;
use crate::rng::uniform_at;

/// Elements per dropout task (each element's mask depends only on its index).
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

impl LoraBranch<'_> {
	/// `drop(x)`: elements zeroed with probability `p`, the rest scaled by `1/(1−p)`. The
	/// mask is a function of (stream, element index), so the backward redraws it.
	fn dropped(&self, x: &[f32]) -> Option<Vec<f32>> {
		let (p, key) = self.dropout?;
		let keep = 1.0 / (1.0 - p);
		let mut out = x.to_vec();
		out.par_chunks_mut(DROPOUT_CHUNK).enumerate().for_each(|(c, chunk)| {
			for (j, v) in chunk.iter_mut().enumerate() {
				let i = (c * DROPOUT_CHUNK + j) as u64;
				*v = if uniform_at(key, i) < p { 0.0 } else { *v * keep };
			}
		});
		Some(out)
	}
}

/// Shapes of one call: `n` rows of `in_dim` in, `out_dim` out.
#[derive(Clone, Copy)]
pub struct Dims {
	pub n: usize,
	pub in_dim: usize,
	pub out_dim: usize,
}

/// Forward. Returns `(α/r) · drop(x) Aᵀ` (`[n × r]`), which the backward needs.
pub fn forward(
	be: &dyn Backend,
	y: &mut [f32],
	x: &[f32],
	w: &[f32],
	bias: &[f32],
	lora: Option<&LoraBranch>,
	d: Dims,
) -> Vec<f32> {
	be.matmul_nt(y, x, w, d.n, d.in_dim, d.out_dim, false);
	if !bias.is_empty() {
		for row in y.chunks_exact_mut(d.out_dim) {
			row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
		}
	}
	let Some(l) = lora else { return Vec::new() };
	let dropped = l.dropped(x);
	let mut xa = vec![0f32; d.n * l.rank];
	be.matmul_nt(&mut xa, dropped.as_deref().unwrap_or(x), l.a, d.n, d.in_dim, l.rank, false);
	xa.iter_mut().for_each(|v| *v *= l.scale);
	be.matmul_nt(y, &xa, l.b, d.n, l.rank, d.out_dim, true);
	xa
}

/// Backward. `dx` (if wanted) gets `+=` or `=` the input gradient; `grad_a`/`grad_b` get `+=`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
	be: &dyn Backend,
	dx: Option<(&mut [f32], bool)>,
	dy: &[f32],
	x: &[f32],
	w: &[f32],
	lora: Option<(&LoraBranch, &[f32], &mut [f32], &mut [f32])>,
	d: Dims,
) {
	let Dims { n, in_dim, out_dim } = d;
	let mut dx = dx;
	if let Some((dx, accumulate)) = dx.as_mut() {
		be.matmul_nn(dx, dy, w, n, out_dim, in_dim, *accumulate);
	}
	let Some((l, xa, grad_a, grad_b)) = lora else { return };
	let r = l.rank;
	// dB += dyᵀ · (α/r) drop(x) Aᵀ
	be.matmul_tn(grad_b, dy, xa, out_dim, n, r, true);
	// g = (α/r) · dy B;  dA += gᵀ drop(x);  dx += drop'(g A)
	let mut g = vec![0f32; n * r];
	be.matmul_nn(&mut g, dy, l.b, n, out_dim, r, false);
	g.iter_mut().for_each(|v| *v *= l.scale);
	let dropped = l.dropped(x);
	be.matmul_tn(grad_a, &g, dropped.as_deref().unwrap_or(x), r, n, in_dim, true);
	if let Some((dx, _)) = dx {
		match l.dropout {
			None => be.matmul_nn(dx, &g, l.a, n, r, in_dim, true),
			Some((p, key)) => {
				let mut t = vec![0f32; n * in_dim];
				be.matmul_nn(&mut t, &g, l.a, n, r, in_dim, false);
				let keep = 1.0 / (1.0 - p);
				dx.par_chunks_mut(DROPOUT_CHUNK).zip(t.par_chunks(DROPOUT_CHUNK)).enumerate().for_each(
					|(c, (dx, t))| {
						for (j, (dx, t)) in dx.iter_mut().zip(t).enumerate() {
							if uniform_at(key, (c * DROPOUT_CHUNK + j) as u64) >= p {
								*dx += t * keep;
							}
						}
					},
				);
			},
		}
	}
}
