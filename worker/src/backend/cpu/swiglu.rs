//! SwiGLU's gate: `h = silu(g) · u`, `silu(g) = g · σ(g)`.

use rayon::prelude::*;

const CHUNK: usize = 4096;

fn sigmoid(x: f32) -> f32 {
	1.0 / (1.0 + (-x).exp())
}

pub(super) fn forward(out: &mut [f32], gate: &[f32], up: &[f32]) {
	out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK)).zip(up.par_chunks(CHUNK)).for_each(|((o, g), u)| {
		for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
			*o = g * sigmoid(g) * u;
		}
	});
}

/// `du = dh · silu(g)`, `dg = dh · u · σ(g)(1 + g(1 − σ(g)))`.
pub(super) fn backward(dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
	dgate
		.par_chunks_mut(CHUNK)
		.zip(dup.par_chunks_mut(CHUNK))
		.zip(dout.par_chunks(CHUNK))
		.zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
		.for_each(|(((dg, du), dh), (g, u))| {
			for ((((dg, du), &dh), &g), &u) in dg.iter_mut().zip(du.iter_mut()).zip(dh).zip(g).zip(u) {
				let s = sigmoid(g);
				*du = dh * g * s;
				*dg = dh * u * s * (1.0 + g * (1.0 - s));
			}
		});
}
