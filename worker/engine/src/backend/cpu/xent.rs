//! Softmax cross-entropy over the vocabulary, forward and backward in one pass per row.

use rayon::prelude::*;

use super::reduce;
use crate::math::{exp_f32_in_place, ln_f64};

/// Overwrites each row of `logits` with `scale · (softmax − onehot(target))` (zero for
/// ignored rows) and writes `−log softmax[target]` of each row to `losses` (0 if ignored).
pub(super) fn forward_backward(logits: &mut [f32], targets: &[i32], vocab: usize, scale: f32, losses: &mut [f64]) {
	assert!(logits.len() == targets.len() * vocab && losses.len() == targets.len(), "cross-entropy shapes");
	logits.par_chunks_mut(vocab).zip(targets.par_iter()).zip(losses.par_iter_mut()).for_each(|((row, &t), loss)| {
		if t < 0 {
			row.fill(0.0);
			*loss = 0.0;
			return;
		}
		let t = t as usize;
		assert!(t < vocab, "target {t} outside the vocabulary");
		let max = reduce::max(row);
		let target_logit = row[t] - max;
		row.iter_mut().for_each(|x| *x -= max);
		exp_f32_in_place(row);
		let sum = reduce::sum(row);
		*loss = ln_f64(sum as f64) - target_logit as f64;
		let k = scale / sum;
		row.iter_mut().for_each(|x| *x *= k);
		row[t] -= scale;
	});
}
