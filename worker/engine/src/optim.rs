//! AdamW with PyTorch's update order, transformers' warm-up + cosine learning-rate
//! schedule, and global-norm gradient clipping. The scalars are computed here, on the
//! host; the per-element work is the backend's ([`Backend::adamw`], [`Backend::sum_squares`],
//! [`Backend::scale`]).

use crate::backend::{AdamWStep, Backend, View, ViewMut};
use crate::math::{cos_f64, powi_f64};

/// AdamW's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
	pub beta1: f32,
	pub beta2: f32,
	pub eps: f32,
	pub weight_decay: f32,
}

/// The learning-rate schedule: linear warm-up from 0, then a cosine from `lr` down to
/// `lr · min_lr_ratio` over the remaining steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
	pub lr: f32,
	pub warmup_steps: u64,
	pub total_steps: u64,
	pub min_lr_ratio: f32,
}

/// One AdamW update at 1-based step `t` of `params` with moments `m`, `v` (the adapter's
/// canonical layout, all in the backend's memory), as `torch.optim.AdamW` does it:
/// decoupled decay, then `p −= (lr / bc1) · m / (√v / √bc2 + eps)`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
	be: &dyn Backend,
	params: ViewMut<f32>,
	grads: View<f32>,
	m: ViewMut<f32>,
	v: ViewMut<f32>,
	lr: f32,
	t: u64,
	hp: &AdamWConfig,
) {
	be.adamw(params, grads, m, v, adamw_step(lr, t, hp));
}

/// The scalars of AdamW's update at 1-based step `t` (bias corrections in f64).
pub fn adamw_step(lr: f32, t: u64, hp: &AdamWConfig) -> AdamWStep {
	let bc1 = 1.0 - powi_f64(hp.beta1 as f64, t);
	AdamWStep {
		beta1: hp.beta1,
		beta2: hp.beta2,
		eps: hp.eps,
		step_size: (lr as f64 / bc1) as f32,
		bc2_sqrt: (1.0 - powi_f64(hp.beta2 as f64, t)).sqrt() as f32,
		decay: 1.0 - lr * hp.weight_decay,
	}
}

/// The learning rate of 0-based optimizer step `step`, as transformers'
/// `get_cosine_with_min_lr_schedule_with_warmup` (one half cosine): `lr · step/warmup`
/// during warm-up (so the first step's rate is 0), then `lr · (m + (1 − m)·½(1 + cos(π·p)))`
/// with `p = (step − warmup)/(total − warmup)` and `m = min_lr_ratio`.
pub fn learning_rate(step: u64, s: &Schedule) -> f32 {
	let lr = s.lr as f64;
	if step < s.warmup_steps {
		return (lr * step as f64 / s.warmup_steps.max(1) as f64) as f32;
	}
	let progress = (step - s.warmup_steps) as f64 / s.total_steps.saturating_sub(s.warmup_steps).max(1) as f64;
	let m = s.min_lr_ratio as f64;
	let factor = 0.5 * (1.0 + cos_f64(std::f64::consts::PI * progress));
	(lr * (factor * (1.0 - m) + m).max(0.0)) as f32
}

/// Scales `grads` so their global L2 norm is at most `max_norm` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(be: &dyn Backend, grads: ViewMut<f32>, max_norm: f32) -> f32 {
	let norm = be.sum_squares(grads.as_view()).sqrt() as f32;
	let coef = max_norm / (norm + 1e-6);
	if coef < 1.0 {
		be.scale(grads, coef);
	}
	norm
}

#[cfg(test)]
mod tests {
	use super::*;
	use crate::backend::cpu::Cpu;

	/// The moments of AdamW on the host, stepped on the CPU backend.
	struct HostAdamW {
		m: Vec<f32>,
		v: Vec<f32>,
	}

	impl HostAdamW {
		fn new(n: usize) -> Self {
			HostAdamW { m: vec![0.0; n], v: vec![0.0; n] }
		}

		fn update(&mut self, params: &mut Vec<f32>, grads: &[f32], lr: f32, t: u64, hp: &AdamWConfig) {
			let be = &Cpu;
			let (mut p, g) = (be.upload_f32(params), be.upload_f32(grads));
			let (mut m, mut v) = (be.upload_f32(&self.m), be.upload_f32(&self.v));
			adamw_update(be, p.view_mut(), g.view(), m.view_mut(), v.view_mut(), lr, t, hp);
			(*params, self.m, self.v) = (be.download_f32(p.view()), be.download_f32(m.view()), be.download_f32(v.view()));
		}
	}

	fn clip_on_host(grads: &mut Vec<f32>, max_norm: f32) -> f32 {
		let mut g = Cpu.upload_f32(grads);
		let norm = clip_grad_norm(&Cpu, g.view_mut(), max_norm);
		*grads = Cpu.download_f32(g.view());
		norm
	}

	const ADAMW: AdamWConfig = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };

	#[test]
	fn schedule_is_transformers_cosine_with_warmup_from_zero() {
		let s = Schedule { lr: 1.0, warmup_steps: 4, total_steps: 20, min_lr_ratio: 0.1 };
		let lrs: Vec<f32> = (0..20).map(|t| learning_rate(t, &s)).collect();
		// transformers: step/warmup during warm-up, then 0.1 + 0.9·½(1 + cos(π (t−4)/16)).
		assert_eq!(&lrs[..5], &[0.0, 0.25, 0.5, 0.75, 1.0]);
		for (t, &lr) in lrs.iter().enumerate().skip(4) {
			let p = (t as f64 - 4.0) / 16.0;
			let want = 0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
			assert!((lr as f64 - want).abs() < 1e-7, "step {t}: {lr} vs {want}");
		}
		// The last step is one step short of the floor, as in transformers.
		assert!(lrs[19] > 0.1 && lrs[19] < 0.11, "{}", lrs[19]);
		let no_warmup = Schedule { warmup_steps: 0, ..s };
		assert_eq!(learning_rate(0, &no_warmup), 1.0);
	}

	#[test]
	fn adamw_first_step_moves_each_weight_by_lr() {
		// At t = 1, m̂ = g and v̂ = g², so each weight moves by lr·sign(g) (decay off).
		let mut p = vec![1.0f32, -2.0, 0.5];
		let g = [0.3f32, -4.0, 1e-3];
		let mut opt = HostAdamW::new(3);
		opt.update(&mut p, &g, 0.01, 1, &ADAMW);
		for (after, (before, g)) in p.iter().zip([1.0f32, -2.0, 0.5].iter().zip(g)) {
			let moved = before - after;
			assert!((moved - 0.01 * g.signum()).abs() < 1e-4, "{moved}");
		}
		let mut big = vec![3.0f32, 4.0];
		assert_eq!(clip_on_host(&mut big, 1.0), 5.0);
		assert!((big[0] - 0.6).abs() < 1e-5 && (big[1] - 0.8).abs() < 1e-5);
	}

	#[test]
	fn adamw_follows_torchs_documented_update_step_by_step() {
		// Three steps of torch.optim.AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8,
		// weight_decay=0.1) on p = [1.0, -0.5] with gradients [0.2, 0.4], [-0.1, 0.3],
		// [0.5, -0.2]: PyTorch's documented update (decay, moments, bias corrections)
		// written out independently, in f64.
		let hp = AdamWConfig { weight_decay: 0.1, ..ADAMW };
		let grads = [[0.2f32, 0.4], [-0.1, 0.3], [0.5, -0.2]];
		let mut p = vec![1.0f32, -0.5];
		let mut opt = HostAdamW::new(2);
		let (mut pw, mut m, mut v) = ([1.0f64, -0.5], [0f64; 2], [0f64; 2]);
		for (t, g) in grads.iter().enumerate() {
			opt.update(&mut p, g, 0.1, t as u64 + 1, &hp);
			let t = t as i32 + 1;
			for i in 0..2 {
				let g = g[i] as f64;
				pw[i] *= 1.0 - 0.1 * 0.1;
				m[i] = 0.9 * m[i] + 0.1 * g;
				v[i] = 0.999 * v[i] + 0.001 * g * g;
				let (bc1, bc2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.999f64.powi(t));
				pw[i] -= 0.1 / bc1 * m[i] / ((v[i] / bc2).sqrt() + 1e-8);
			}
		}
		for i in 0..2 {
			assert!((p[i] as f64 - pw[i]).abs() < 1e-6, "param {i}: {} vs {}", p[i], pw[i]);
		}
	}
}
