//! Rotary position embedding, Hugging Face layout: within a head, element `i` pairs with
//! `i + d/2` and the pair turns by `pos · inv_freq[i]`.

use rayon::prelude::*;

/// Rotates every head of every row of `x` (`[rows × width]`, row `r` at `positions[r]`);
/// `inverse` turns the other way, which is the backward (a rotation's transpose).
pub(super) fn apply(
	x: &mut [f32],
	width: usize,
	cos: &[f32],
	sin: &[f32],
	positions: &[u32],
	head_dim: usize,
	inverse: bool,
) {
	let half = head_dim / 2;
	assert_eq!(x.len(), positions.len() * width, "one position per row");
	let max_pos = positions.iter().copied().max().unwrap_or(0) as usize;
	assert!(cos.len() > max_pos * half && sin.len() > max_pos * half, "RoPE tables shorter than position {max_pos}");
	let sign = if inverse { -1.0f32 } else { 1.0 };
	x.par_chunks_mut(width).zip(positions.par_iter()).for_each(|(x, &pos)| {
		let pos = pos as usize;
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
