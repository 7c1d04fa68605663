//! The training engine: forward and backward of a Llama-family decoder with LoRA adapters
//! on a [`Backend`], for a batch of equal-length token rows.
//!
//! The base model is frozen: the backward carries activation gradients down through every
//! block but produces gradients only for the adapter (in its flat canonical layout).

mod block;
mod linear;

use crate::backend::Backend;
use crate::lora::{Adapter, Layout, LoraConfig};
use crate::model::Model;

/// Rows of the LM head computed at once: bounds the logits buffer (`rows × vocab` floats)
/// while leaving each matmul enough rows for two threads.
const LM_HEAD_ROWS: usize = 256;

/// A batch of `batch` rows of `seq` tokens; `targets[i]` is the token expected after
/// `tokens[i]`, or negative where no loss is taken.
#[derive(Debug, Clone)]
pub struct Batch {
	pub tokens: Vec<u32>,
	pub targets: Vec<i32>,
	pub batch: usize,
	pub seq: usize,
}

impl Batch {
	pub fn counted(&self) -> usize {
		self.targets.iter().filter(|&&t| t >= 0).count()
	}
}

/// The summed loss of a batch and how many targets it counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossSum {
	pub sum: f64,
	pub count: usize,
}

impl LossSum {
	pub fn mean(&self) -> f64 {
		if self.count == 0 {
			0.0
		} else {
			self.sum / self.count as f64
		}
	}

	pub fn add(&mut self, o: LossSum) {
		self.sum += o.sum;
		self.count += o.count;
	}
}

/// Per-call settings shared by the blocks.
pub(crate) struct Pass {
	batch: usize,
	seq: usize,
	/// The stream dropout masks come from; `None` disables dropout (evaluation).
	dropout_key: Option<u64>,
}

/// A model (and optionally an adapter) bound to a backend.
pub struct Engine<'a> {
	backend: &'a dyn Backend,
	model: &'a Model,
	adapter: Option<&'a Adapter>,
	layout: Layout,
	/// `[max_seq × head_dim/2]` tables.
	rope_cos: Vec<f32>,
	rope_sin: Vec<f32>,
	max_seq: usize,
}

impl<'a> Engine<'a> {
	pub fn new(backend: &'a dyn Backend, model: &'a Model, adapter: Option<&'a Adapter>, max_seq: usize) -> Self {
		let c = &model.config;
		let layout = match adapter {
			Some(a) => a.layout.clone(),
			None => Layout::new(c, &LoraConfig { rank: 0, alpha: 0.0, dropout: 0.0, targets: vec![] }),
		};
		let (rope_cos, rope_sin) = rope_tables(&c.rope_inv_freq(), max_seq);
		Engine { backend, model, adapter, layout, rope_cos, rope_sin, max_seq }
	}

	fn embed(&self, tokens: &[u32]) -> Vec<f32> {
		let h = self.model.config.hidden_size;
		let mut x = vec![0f32; tokens.len() * h];
		for (row, &t) in x.chunks_exact_mut(h).zip(tokens) {
			let t = t as usize;
			assert!(t < self.model.config.vocab_size, "token {t} outside the model's vocabulary");
			row.copy_from_slice(&self.model.embed[t * h..(t + 1) * h]);
		}
		x
	}

	/// Loss of `batch` and, when `grads` is given, `+= grad_scale · ∂(mean loss)/∂adapter`.
	/// `dropout_key` selects the dropout masks (training); `None` runs without dropout.
	pub fn step(&self, batch: &Batch, dropout_key: Option<u64>, grads: Option<(&mut [f32], f32)>) -> LossSum {
		assert!(batch.seq <= self.max_seq, "sequence {} longer than the engine's {}", batch.seq, self.max_seq);
		let pass = Pass { batch: batch.batch, seq: batch.seq, dropout_key };
		let backward = grads.is_some();
		let mut x = self.embed(&batch.tokens);
		let mut acts = Vec::with_capacity(self.model.layers.len());
		for l in 0..self.model.layers.len() {
			let (out, a) = self.block_forward(l, x, &pass);
			x = out;
			if backward {
				acts.push(a);
			}
		}
		let count = batch.counted();
		let Some((grads, grad_scale)) = grads else {
			return LossSum { sum: self.lm_head_loss(&x, &batch.targets, None), count };
		};
		assert_eq!(grads.len(), self.layout.len, "gradient buffer does not match the adapter");
		let scale = if count == 0 { 0.0 } else { grad_scale / count as f32 };
		let mut dx = vec![0f32; x.len()];
		let sum = self.lm_head_loss(&x, &batch.targets, Some((&mut dx, scale)));
		for (l, a) in acts.iter().enumerate().rev() {
			match self.block_backward(l, a, &dx, grads, &pass) {
				Some(d) => dx = d,
				None => break,
			}
		}
		LossSum { sum, count }
	}

	/// Final norm, LM head and cross-entropy over `x` (`[rows × hidden]`), in row blocks.
	/// With `dx`, writes `scale · ∂loss/∂x` there.
	fn lm_head_loss(&self, x: &[f32], targets: &[i32], dx: Option<(&mut [f32], f32)>) -> f64 {
		let be = self.backend;
		let c = &self.model.config;
		let (h, v) = (c.hidden_size, c.vocab_size);
		let rows = targets.len();
		let mut xf = vec![0f32; rows * h];
		let mut rstd = vec![0f32; rows];
		be.rmsnorm_forward(&mut xf, &mut rstd, x, &self.model.final_norm, h, c.rms_norm_eps);
		let head = self.model.lm_head();
		let (mut dxf, scale) = match &dx {
			Some((_, s)) => (Some(vec![0f32; rows * h]), *s),
			None => (None, 0.0),
		};
		let mut loss = 0f64;
		let mut logits = vec![0f32; LM_HEAD_ROWS.min(rows) * v];
		for r0 in (0..rows).step_by(LM_HEAD_ROWS) {
			let n = LM_HEAD_ROWS.min(rows - r0);
			let logits = &mut logits[..n * v];
			be.matmul_nt(logits, &xf[r0 * h..(r0 + n) * h], head, n, h, v, false);
			loss += be.cross_entropy(logits, &targets[r0..r0 + n], v, scale);
			if let Some(dxf) = dxf.as_mut() {
				be.matmul_nn(&mut dxf[r0 * h..(r0 + n) * h], logits, head, n, v, h, false);
			}
		}
		if let (Some((dx, _)), Some(dxf)) = (dx, dxf) {
			be.rmsnorm_backward(dx, &dxf, x, &self.model.final_norm, &rstd, h);
		}
		loss
	}

	/// Logits of every position, `[batch·seq × vocab]` (tests, golden values, evaluation).
	pub fn logits(&self, tokens: &[u32], batch: usize, seq: usize) -> Vec<f32> {
		let pass = Pass { batch, seq, dropout_key: None };
		let mut x = self.embed(tokens);
		for l in 0..self.model.layers.len() {
			x = self.block_forward(l, x, &pass).0;
		}
		let c = &self.model.config;
		let (h, v, rows) = (c.hidden_size, c.vocab_size, tokens.len());
		let mut xf = vec![0f32; rows * h];
		let mut rstd = vec![0f32; rows];
		self.backend.rmsnorm_forward(&mut xf, &mut rstd, &x, &self.model.final_norm, h, c.rms_norm_eps);
		let mut logits = vec![0f32; rows * v];
		self.backend.matmul_nt(&mut logits, &xf, self.model.lm_head(), rows, h, v, false);
		logits
	}
}

/// `cos`, `sin` of `pos · inv_freq[i]`, computed in f32 as Hugging Face does.
pub fn rope_tables(inv_freq: &[f32], max_seq: usize) -> (Vec<f32>, Vec<f32>) {
	let mut cos = Vec::with_capacity(max_seq * inv_freq.len());
	let mut sin = Vec::with_capacity(max_seq * inv_freq.len());
	for pos in 0..max_seq {
		for &f in inv_freq {
			let a = pos as f32 * f;
			cos.push(a.cos());
			sin.push(a.sin());
		}
	}
	(cos, sin)
}

#[cfg(test)]
mod tests;
