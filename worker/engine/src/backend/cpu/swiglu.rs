//! SwiGLU's gate: `h = silu(g) · u`, `silu(g) = g · σ(g)`.

use rayon::prelude::*;

use crate::math::exp_f32_in_place;

const CHUNK: usize = 4096;

/// `σ(g)` of a chunk into `s` (through the crate's vectorised `exp`).
fn sigmoid_into(s: &mut [f32], g: &[f32]) {
	s.iter_mut().zip(g).for_each(|(s, &g)| *s = -g);
	exp_f32_in_place(s);
	s.iter_mut().for_each(|s| *s = 1.0 / (1.0 + *s));
}

pub(super) fn forward(out: &mut [f32], gate: &[f32], up: &[f32]) {
	out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK)).zip(up.par_chunks(CHUNK)).for_each(|((o, g), u)| {
		sigmoid_into(o, g);
		for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
			*o = g * *o * u;
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
			// σ(g) goes into dgate first, then each dgate is overwritten by its gradient.
			sigmoid_into(dg, g);
			for ((((dg, du), &dh), &g), &u) in dg.iter_mut().zip(du.iter_mut()).zip(dh).zip(g).zip(u) {
				let s = *dg;
				*du = dh * g * s;
				*dg = dh * u * s * (1.0 + g * (1.0 - s));
			}
		});
}
