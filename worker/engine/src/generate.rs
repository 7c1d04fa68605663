//! Text generation with a KV cache: prefill the prompt, then one token at a time; greedy or
//! temperature + top-p sampling from a seed; stops at the end of the assistant's turn.
//! An adapter is merged into the weights first (`W + (α/r) B A`), as for serving.

use crate::backend::Backend;
use crate::lora::Adapter;
use crate::model::Model;
use crate::rng::Rng;

/// How to pick each next token.
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
	/// 0 means greedy.
	pub temperature: f32,
	pub top_p: f32,
	pub seed: u64,
}

/// A model with merged adapter weights and a KV cache.
pub struct Generator<'a> {
	backend: &'a dyn Backend,
	model: Model,
	/// Per layer: keys and values of every cached position, `[pos × kv_dim]`.
	k_cache: Vec<Vec<f32>>,
	v_cache: Vec<Vec<f32>>,
	len: usize,
	rope_cos: Vec<f32>,
	rope_sin: Vec<f32>,
	max_seq: usize,
}

impl<'a> Generator<'a> {
	pub fn new(backend: &'a dyn Backend, base: &Model, adapter: Option<&Adapter>, max_seq: usize) -> Self {
		let mut model = base.clone();
		if let Some(a) = adapter {
			a.merge_into(&mut model, backend);
		}
		let (rope_cos, rope_sin) = crate::engine::rope_tables(&model.config.rope_inv_freq(), max_seq);
		let n = model.layers.len();
		Generator {
			backend,
			model,
			k_cache: vec![Vec::new(); n],
			v_cache: vec![Vec::new(); n],
			len: 0,
			rope_cos,
			rope_sin,
			max_seq,
		}
	}

	pub fn reset(&mut self) {
		self.len = 0;
		self.k_cache.iter_mut().chain(self.v_cache.iter_mut()).for_each(Vec::clear);
	}

	pub fn position(&self) -> usize {
		self.len
	}

	/// Feeds `tokens` after the cached ones; returns the logits after each of them.
	pub fn feed(&mut self, tokens: &[u32]) -> Vec<f32> {
		let be = self.backend;
		let c = self.model.config.clone();
		let n = tokens.len();
		assert!(self.len + n <= self.max_seq, "context of {} tokens is full", self.max_seq);
		assert!(n > 0, "nothing to feed");
		let (h, qd, kvd, f, d) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.head_dim);
		let mut x: Vec<f32> = tokens
			.iter()
			.flat_map(|&t| self.model.embed[t as usize * h..(t as usize + 1) * h].iter().copied())
			.collect();
		let mut rstd = vec![0f32; n];
		for (l, w) in self.model.layers.iter().enumerate() {
			let mut x1 = vec![0f32; n * h];
			be.rmsnorm_forward(&mut x1, &mut rstd, &x, &w.attn_norm, h, c.rms_norm_eps);
			let (mut q, mut k, mut v) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
			let linear = |y: &mut [f32], x: &[f32], wt: &[f32], b: &[f32], i: usize, o: usize| {
				be.matmul_nt(y, x, wt, n, i, o, false);
				if !b.is_empty() {
					y.chunks_exact_mut(o).for_each(|r| r.iter_mut().zip(b).for_each(|(y, b)| *y += b));
				}
			};
			linear(&mut q, &x1, &w.wq, &w.bq, h, qd);
			linear(&mut k, &x1, &w.wk, &w.bk, h, kvd);
			linear(&mut v, &x1, &w.wv, &w.bv, h, kvd);
			let positions: Vec<u32> = (self.len..self.len + n).map(|p| p as u32).collect();
			be.rope(&mut q, qd, &self.rope_cos, &self.rope_sin, &positions, d, false);
			be.rope(&mut k, kvd, &self.rope_cos, &self.rope_sin, &positions, d, false);
			self.k_cache[l].extend_from_slice(&k);
			self.v_cache[l].extend_from_slice(&v);
			let att = self.attend(l, &q, n);
			let mut o = vec![0f32; n * h];
			linear(&mut o, &att, &w.wo, &[], qd, h);
			x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
			let mut x3 = vec![0f32; n * h];
			be.rmsnorm_forward(&mut x3, &mut rstd, &x, &w.ffn_norm, h, c.rms_norm_eps);
			let (mut g, mut u, mut hid) = (vec![0f32; n * f], vec![0f32; n * f], vec![0f32; n * f]);
			linear(&mut g, &x3, &w.w_gate, &[], h, f);
			linear(&mut u, &x3, &w.w_up, &[], h, f);
			be.swiglu_forward(&mut hid, &g, &u);
			linear(&mut o, &hid, &w.w_down, &[], f, h);
			x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);
		}
		self.len += n;
		let mut xf = vec![0f32; n * h];
		be.rmsnorm_forward(&mut xf, &mut rstd, &x, &self.model.final_norm, h, c.rms_norm_eps);
		let mut logits = vec![0f32; n * c.vocab_size];
		be.matmul_nt(&mut logits, &xf, self.model.lm_head(), n, h, c.vocab_size, false);
		logits
	}

	/// Causal attention of `n` new queries over the cache of layer `l`.
	fn attend(&self, l: usize, q: &[f32], n: usize) -> Vec<f32> {
		let c = &self.model.config;
		let (d, kvd, group) = (c.head_dim, c.kv_dim(), c.num_heads / c.num_kv_heads);
		let scale = 1.0 / (d as f32).sqrt();
		let (kc, vc) = (&self.k_cache[l], &self.v_cache[l]);
		let mut out = vec![0f32; n * c.q_dim()];
		let mut scores = Vec::new();
		for i in 0..n {
			let upto = self.len + i + 1;
			for head in 0..c.num_heads {
				let kvh = head / group;
				let qh = &q[i * c.q_dim() + head * d..][..d];
				scores.clear();
				scores
					.extend((0..upto).map(|p| {
						qh.iter().zip(&kc[p * kvd + kvh * d..][..d]).map(|(a, b)| a * b).sum::<f32>() * scale
					}));
				let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
				let mut sum = 0f32;
				scores.iter_mut().for_each(|s| {
					*s = crate::math::exp_f32(*s - max);
					sum += *s;
				});
				let o = &mut out[i * c.q_dim() + head * d..][..d];
				for (p, s) in scores.iter().enumerate() {
					let w = s / sum;
					o.iter_mut().zip(&vc[p * kvd + kvh * d..][..d]).for_each(|(o, v)| *o += w * v);
				}
			}
		}
		out
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
		let vocab = self.model.config.vocab_size;
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
	use crate::lora::{LoraConfig, Target};
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
