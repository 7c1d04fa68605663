//! The small operations between the layers, and the optimizer's: row gathers and scatters,
//! residual adds, biases, scaling, the transposed add of LoRA's dB, the clipping norm and
//! AdamW. Element-wise (any split gives the same bits), except the sum of squares, which
//! runs in one sequential f64 sum.

use rayon::prelude::*;

use crate::backend::AdamWStep;

const CHUNK: usize = 1 << 14;

pub(super) fn gather_rows(out: &mut [f32], x: &[f32], rows: &[u32], dim: usize) {
	assert_eq!(out.len(), rows.len() * dim, "gather buffers");
	for (row, &r) in out.chunks_exact_mut(dim).zip(rows) {
		let r = r as usize;
		row.copy_from_slice(&x[r * dim..(r + 1) * dim]);
	}
}

pub(super) fn scatter_rows(dst: &mut [f32], src: &[f32], rows: &[u32], dim: usize) {
	assert_eq!(src.len(), rows.len() * dim, "scatter buffers");
	for (row, &r) in src.chunks_exact(dim).zip(rows) {
		let r = r as usize;
		dst[r * dim..(r + 1) * dim].copy_from_slice(row);
	}
}

pub(super) fn add_assign(y: &mut [f32], x: &[f32]) {
	assert_eq!(y.len(), x.len(), "add buffers");
	y.iter_mut().zip(x).for_each(|(o, x)| *o += x);
}

pub(super) fn add_bias(y: &mut [f32], bias: &[f32]) {
	for row in y.chunks_exact_mut(bias.len()) {
		row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
	}
}

pub(super) fn scale(x: &mut [f32], a: f32) {
	x.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|v| *v *= a));
}

pub(super) fn add_transposed(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
	assert!(dst.len() == rows * cols && src.len() == rows * cols, "transposed add buffers");
	for (o, row) in dst.chunks_exact_mut(rows).enumerate() {
		for (j, g) in row.iter_mut().enumerate() {
			*g += src[j * cols + o];
		}
	}
}

pub(super) fn sum_squares(x: &[f32]) -> f64 {
	x.iter().map(|&g| g as f64 * g as f64).sum::<f64>()
}

pub(super) fn adamw(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWStep) {
	assert!(grads.len() == params.len() && m.len() == params.len() && v.len() == params.len(), "AdamW buffers");
	let (b1, b2) = (s.beta1, s.beta2);
	params
		.par_chunks_mut(CHUNK)
		.zip(grads.par_chunks(CHUNK))
		.zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
		.for_each(|((p, g), (m, v))| {
			for i in 0..p.len() {
				p[i] *= s.decay;
				m[i] += (g[i] - m[i]) * (1.0 - b1);
				v[i] = v[i] * b2 + (1.0 - b2) * g[i] * g[i];
				let denom = v[i].sqrt() / s.bc2_sqrt + s.eps;
				p[i] -= s.step_size * m[i] / denom;
			}
		});
}
