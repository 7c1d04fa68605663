//! AdamW with PyTorch's update order, the warm-up + cosine learning-rate schedule, and
//! global-norm gradient clipping. Element-wise work may run on any thread; the one
//! reduction (the gradient norm) runs sequentially in f64, in canonical order.

use rayon::prelude::*;

use crate::spec::TrainSection;

const CHUNK: usize = 1 << 14;

/// The optimizer's moments, in the adapter's canonical layout.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
	pub m: Vec<f32>,
	pub v: Vec<f32>,
}

impl AdamW {
	pub fn new(n: usize) -> Self {
		AdamW { m: vec![0.0; n], v: vec![0.0; n] }
	}

	/// One update at 1-based step `t`, as `torch.optim.AdamW` does it: decoupled decay,
	/// then `p −= (lr / bc1) · m / (√v / √bc2 + eps)`.
	pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32, t: u64, hp: &TrainSection) {
		let (b1, b2) = (hp.beta1, hp.beta2);
		let bc1 = 1.0 - (b1 as f64).powi(t as i32);
		let bc2_sqrt = (1.0 - (b2 as f64).powi(t as i32)).sqrt() as f32;
		let step_size = (lr as f64 / bc1) as f32;
		let decay = 1.0 - lr * hp.weight_decay;
		params
			.par_chunks_mut(CHUNK)
			.zip(grads.par_chunks(CHUNK))
			.zip(self.m.par_chunks_mut(CHUNK).zip(self.v.par_chunks_mut(CHUNK)))
			.for_each(|((p, g), (m, v))| {
				for i in 0..p.len() {
					p[i] *= decay;
					m[i] += (g[i] - m[i]) * (1.0 - b1);
					v[i] = v[i] * b2 + (1.0 - b2) * g[i] * g[i];
					let denom = v[i].sqrt() / bc2_sqrt + hp.eps;
					p[i] -= step_size * m[i] / denom;
				}
			});
	}
}

/// The learning rate for 0-based `step`: linear warm-up to `lr`, then a cosine down to
/// `lr · min_lr_ratio` at the last step.
pub fn learning_rate(step: u64, hp: &TrainSection) -> f32 {
	let lr = hp.lr as f64;
	if step < hp.warmup_steps {
		return (lr * (step + 1) as f64 / hp.warmup_steps as f64) as f32;
	}
	let span = hp.steps.saturating_sub(hp.warmup_steps).saturating_sub(1).max(1);
	let progress = ((step - hp.warmup_steps) as f64 / span as f64).min(1.0);
	let min = lr * hp.min_lr_ratio as f64;
	(min + (lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
	let norm = grads.iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt() as f32;
	let coef = max_norm / (norm + 1e-6);
	if coef < 1.0 {
		grads.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
	}
	norm
}

#[cfg(test)]
mod tests {
	use super::*;
	use crate::spec::Spec;

	fn hp() -> TrainSection {
		let text =
			std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-job.toml")).unwrap();
		Spec::parse(&text, std::path::Path::new("tiny-job.toml")).unwrap().train
	}

	#[test]
	fn schedule_warms_up_then_decays_to_the_floor() {
		let mut hp = hp();
		hp.steps = 20;
		hp.warmup_steps = 4;
		hp.lr = 1.0;
		hp.min_lr_ratio = 0.1;
		let lrs: Vec<f32> = (0..20).map(|s| learning_rate(s, &hp)).collect();
		assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
		assert!(lrs[4..].windows(2).all(|w| w[1] <= w[0]));
		assert!((lrs[19] - 0.1).abs() < 1e-6, "{}", lrs[19]);
	}

	#[test]
	fn adamw_first_step_moves_each_weight_by_lr() {
		// At t = 1, m̂ = g and v̂ = g², so each weight moves by lr·sign(g) (decay off).
		let mut hp = hp();
		hp.weight_decay = 0.0;
		let mut p = vec![1.0f32, -2.0, 0.5];
		let g = [0.3f32, -4.0, 1e-3];
		let mut opt = AdamW::new(3);
		opt.update(&mut p, &g, 0.01, 1, &hp);
		for (after, (before, g)) in p.iter().zip([1.0f32, -2.0, 0.5].iter().zip(g)) {
			let moved = before - after;
			assert!((moved - 0.01 * g.signum()).abs() < 1e-4, "{moved}");
		}
		let mut big = vec![3.0f32, 4.0];
		assert_eq!(clip_grad_norm(&mut big, 1.0), 5.0);
		assert!((big[0] - 0.6).abs() < 1e-5 && (big[1] - 0.8).abs() < 1e-5);
	}
}
