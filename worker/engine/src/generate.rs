//! Text generation with a KV cache: prefill the prompt, then one token at a time; greedy or
//! temperature + top-p sampling from a seed; stops at the end of the assistant's turn.
//! An adapter is merged into the weights first (`W + (α/r) B A`), as for serving.

use crate::backend::{AttnShape, Backend, Buf, View, ViewMut};
use crate::engine::FrozenModel;
use crate::lora::{Adapter, Target};
use crate::model::{Model, ModelConfig};
use crate::rng::Rng;

/// How to pick each next token.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
	/// 0 means greedy.
	pub temperature: f32,
	pub top_p: f32,
	pub seed: u64,
}

/// A model with merged adapter weights and a KV cache, all in the backend's memory.
pub struct Generator<'a> {
	backend: &'a dyn Backend,
	config: ModelConfig,
	/// The merged weights in the backend's form.
	frozen: FrozenModel,
	/// Per layer: keys and values of every position, `[max_seq × kv_dim]`; the first `len`
	/// are filled.
	k_cache: Vec<Buf<f32>>,
	v_cache: Vec<Buf<f32>>,
	len: usize,
	rope_cos: Buf<f32>,
	rope_sin: Buf<f32>,
	max_seq: usize,
}

impl<'a> Generator<'a> {
	pub fn new(backend: &'a dyn Backend, base: &Model, adapter: Option<&Adapter>, max_seq: usize) -> Self {
		let mut model = base.clone();
		if let Some(a) = adapter {
			a.merge_into(&mut model, backend);
		}
		let (cos, sin) = crate::engine::rope_tables(&model.config.rope_inv_freq(), max_seq);
		let n = model.layers.len();
		let kvd = model.config.kv_dim();
		let cache = || (0..n).map(|_| backend.zeros_f32(max_seq * kvd)).collect();
		Generator {
			backend,
			frozen: FrozenModel::new(backend, &model),
			config: model.config,
			k_cache: cache(),
			v_cache: cache(),
			len: 0,
			rope_cos: backend.upload_f32(&cos),
			rope_sin: backend.upload_f32(&sin),
			max_seq,
		}
	}

	/// Forgets the cached positions (their buffers stay, to be written again).
	pub fn reset(&mut self) {
		self.len = 0;
	}

	pub fn position(&self) -> usize {
		self.len
	}

	/// Feeds `tokens` after the cached ones; returns the logits after each of them.
	pub fn feed(&mut self, tokens: &[u32]) -> Vec<f32> {
		let be = self.backend;
		let c = &self.config;
		let n = tokens.len();
		assert!(self.len + n <= self.max_seq, "context of {} tokens is full", self.max_seq);
		assert!(n > 0, "nothing to feed");
		if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
			panic!("token {t} outside the model's vocabulary");
		}
		let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
		let shape = AttnShape { batch: 1, seq: n, heads: c.num_heads, kv_heads: c.num_kv_heads, head_dim: c.head_dim };
		let ids = be.upload_u32(tokens);
		let positions = be.upload_u32(&(self.len..self.len + n).map(|p| p as u32).collect::<Vec<_>>());
		let (cos, sin, pos) = (self.rope_cos.view(), self.rope_sin.view(), positions.view());
		let mut x = be.zeros_f32(n * h);
		be.gather_rows(x.view_mut(), self.frozen.embed().view(), ids.view(), h);
		let mut rstd = be.zeros_f32(n);
		let frozen = &self.frozen;
		let linear = |y: ViewMut<f32>, x: View<f32>, l: usize, t: Target, bias: Option<&Buf<f32>>| {
			let mut y = y;
			be.frozen_forward(y.reborrow(), x, frozen.linear(l, t), n, false);
			if let Some(b) = bias {
				be.add_bias(y, b.view());
			}
		};
		let cached = self.len * kvd..(self.len + n) * kvd;
		for l in 0..self.k_cache.len() {
			let w = frozen.vectors(l);
			let mut x1 = be.zeros_f32(n * h);
			be.rmsnorm_forward(x1.view_mut(), rstd.view_mut(), x.view(), w.attn_norm.view(), h, c.rms_norm_eps);
			let (mut q, mut k, mut v) = (be.zeros_f32(n * qd), be.zeros_f32(n * kvd), be.zeros_f32(n * kvd));
			linear(q.view_mut(), x1.view(), l, Target::Q, w.bq.as_ref());
			linear(k.view_mut(), x1.view(), l, Target::K, w.bk.as_ref());
			linear(v.view_mut(), x1.view(), l, Target::V, w.bv.as_ref());
			be.rope(q.view_mut(), qd, cos, sin, pos, c.head_dim, false);
			be.rope(k.view_mut(), kvd, cos, sin, pos, c.head_dim, false);
			be.copy(self.k_cache[l].slice_mut(cached.clone()), k.view());
			be.copy(self.v_cache[l].slice_mut(cached.clone()), v.view());
			let mut att = be.zeros_f32(n * qd);
			be.attention_cached(att.view_mut(), q.view(), self.k_cache[l].view(), self.v_cache[l].view(), self.len, n, shape);
			let mut o = be.zeros_f32(n * h);
			linear(o.view_mut(), att.view(), l, Target::O, None);
			be.add_assign(x.view_mut(), o.view());
			let mut x3 = be.zeros_f32(n * h);
			be.rmsnorm_forward(x3.view_mut(), rstd.view_mut(), x.view(), w.ffn_norm.view(), h, c.rms_norm_eps);
			let (mut g, mut u, mut hid) = (be.zeros_f32(n * f), be.zeros_f32(n * f), be.zeros_f32(n * f));
			linear(g.view_mut(), x3.view(), l, Target::Gate, None);
			linear(u.view_mut(), x3.view(), l, Target::Up, None);
			be.swiglu_forward(hid.view_mut(), g.view(), u.view());
			linear(o.view_mut(), hid.view(), l, Target::Down, None);
			be.add_assign(x.view_mut(), o.view());
		}
		self.len += n;
		let mut xf = be.zeros_f32(n * h);
		be.rmsnorm_forward(xf.view_mut(), rstd.view_mut(), x.view(), frozen.final_norm().view(), h, c.rms_norm_eps);
		let mut logits = be.zeros_f32(n * c.vocab_size);
		be.frozen_forward(logits.view_mut(), xf.view(), frozen.head(), n, false);
		be.download_f32(logits.view())
	}

	/// Generates after `prompt` until a stop token or `max_new` tokens; returns the new ids
	/// (the stop token excluded). `on_token` sees each as it comes.
	pub fn generate(
		&mut self,
		prompt: &[u32],
		max_new: usize,
		stop: &[u32],
		sampling: Sampling,
		mut on_token: impl FnMut(u32),
	) -> Vec<u32> {
		self.reset();
		let vocab = self.config.vocab_size;
		let mut rng = Rng::new(sampling.seed);
		let logits = self.feed(prompt);
		let mut last = logits[logits.len() - vocab..].to_vec();
		let mut out = Vec::new();
		while out.len() < max_new && self.len < self.max_seq {
			let next = sample(&last, sampling, &mut rng);
			if stop.contains(&next) {
				break;
			}
			on_token(next);
			out.push(next);
			last = self.feed(&[next]);
		}
		out
	}
}

/// Greedy (ties to the lowest id) or temperature + nucleus sampling.
pub fn sample(logits: &[f32], s: Sampling, rng: &mut Rng) -> u32 {
	let argmax = || {
		logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
	};
	if s.temperature <= 0.0 {
		return argmax();
	}
	let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
	let mut probs: Vec<(u32, f32)> =
		logits.iter().enumerate().map(|(i, &x)| (i as u32, ((x - max) / s.temperature).exp())).collect();
	let total: f32 = probs.iter().map(|p| p.1).sum();
	probs.iter_mut().for_each(|p| p.1 /= total);
	probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
	let mut kept = 0f32;
	let cut = probs.iter().position(|p| {
		kept += p.1;
		kept >= s.top_p
	});
	let nucleus = &probs[..=cut.unwrap_or(probs.len() - 1)];
	let mass: f32 = nucleus.iter().map(|p| p.1).sum();
	let mut r = rng.uniform() * mass;
	for p in nucleus {
		r -= p.1;
		if r <= 0.0 {
			return p.0;
		}
	}
	nucleus[nucleus.len() - 1].0
}

#[cfg(test)]
mod tests {
	use super::*;
	use crate::backend::cpu::Cpu;
	use crate::engine::Engine;
	use crate::lora::LoraConfig;
	use crate::testing::{random_model, tiny_config};

	#[test]
	fn cached_generation_gives_the_full_forward_logits() {
		let model = random_model(tiny_config(64), 21);
		let mut adapter = Adapter::init(
			&model.config,
			LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, targets: Target::ALL.to_vec() },
			3,
		);
		let mut r = Rng::new(1);
		adapter.params.iter_mut().for_each(|p| *p = r.uniform() - 0.5);
		let tokens: Vec<u32> = (0..10).map(|i| (i * 7 % 64) as u32).collect();
		let full = Engine::new(&Cpu, &model, Some(&adapter), 16).logits(&tokens, 1, 10);
		let mut g = Generator::new(&Cpu, &model, Some(&adapter), 16);
		let mut cached = g.feed(&tokens[..6]);
		for &t in &tokens[6..] {
			cached.extend(g.feed(&[t]));
		}
		let diff = full.iter().zip(&cached).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
		assert!(diff < 1e-4, "prefill + incremental decode vs full forward: max diff {diff}");

		// Greedy is deterministic; sampling is deterministic per seed and stops on a stop token.
		let s = Sampling { temperature: 0.0, top_p: 1.0, seed: 0 };
		let a = g.generate(&tokens[..3], 5, &[], s, |_| {});
		assert_eq!(a, g.generate(&tokens[..3], 5, &[], s, |_| {}));
		let hot = Sampling { temperature: 1.0, top_p: 0.9, seed: 7 };
		let b = g.generate(&tokens[..3], 8, &[], hot, |_| {});
		assert_eq!(b, g.generate(&tokens[..3], 8, &[], hot, |_| {}));
		let stopped = g.generate(&tokens[..3], 8, &[a[1]], s, |_| {});
		assert_eq!(stopped, a[..1].to_vec());
	}
}
