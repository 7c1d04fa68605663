//! Rotary position embedding, Hugging Face layout: within a head, element `i` pairs with
//! `i + d/2` and the pair turns by `pos · inv_freq[i]`.

use rayon::prelude::*;

/// Rotates every head of every row of `x` (`[rows × width]`, position `row % seq`);
/// `inverse` turns the other way, which is the backward (a rotation's transpose).
pub(super) fn apply(x: &mut [f32], width: usize, cos: &[f32], sin: &[f32], seq: usize, head_dim: usize, inverse: bool) {
	let half = head_dim / 2;
	assert!(cos.len() >= seq * half && sin.len() >= seq * half, "RoPE tables shorter than the sequence");
	let sign = if inverse { -1.0f32 } else { 1.0 };
	x.par_chunks_mut(width).enumerate().for_each(|(row, x)| {
		let pos = row % seq;
		let (cos, sin) = (&cos[pos * half..(pos + 1) * half], &sin[pos * half..(pos + 1) * half]);
		for head in x.chunks_exact_mut(head_dim) {
			let (lo, hi) = head.split_at_mut(half);
			for i in 0..half {
				let (a, b) = (lo[i], hi[i]);
				let s = sign * sin[i];
				lo[i] = a * cos[i] - b * s;
				hi[i] = b * cos[i] + a * s;
			}
		}
	});
}
