//! Softmax cross-entropy over the vocabulary, forward and backward in one pass per row.

use rayon::prelude::*;

/// Overwrites each row of `logits` with `scale · (softmax − onehot(target))` (zero for
/// ignored rows) and returns the sum of `−log softmax[target]` over counted rows.
pub(super) fn forward_backward(logits: &mut [f32], targets: &[i32], vocab: usize, scale: f32) -> f64 {
	let losses: Vec<f64> = logits
		.par_chunks_mut(vocab)
		.zip(targets.par_iter())
		.map(|(row, &t)| {
			if t < 0 {
				row.fill(0.0);
				return 0.0;
			}
			let t = t as usize;
			assert!(t < vocab, "target {t} outside the vocabulary");
			let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
			let target_logit = row[t] - max;
			let mut sum = 0f32;
			for x in row.iter_mut() {
				*x = (*x - max).exp();
				sum += *x;
			}
			let loss = (sum as f64).ln() - target_logit as f64;
			let inv = 1.0 / sum;
			for x in row.iter_mut() {
				*x *= inv * scale;
			}
			row[t] -= scale;
			loss
		})
		.collect();
	// Summed in row order, so the total does not depend on how rows were scheduled.
	losses.iter().sum()
}
