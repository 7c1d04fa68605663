//! The training engine: forward and backward of a Llama-family decoder with LoRA adapters
//! on a [`Backend`], for a batch of equal-length token rows.
//!
//! The base model is frozen: the backward carries activation gradients down through every
//! block but produces gradients only for the adapter (in its flat canonical layout).

mod block;
mod linear;

use crate::backend::{Backend, Frozen};
use crate::lora::{Adapter, Layout, LoraConfig, Target};
use crate::model::Model;

/// Rows of the LM head computed at once: bounds the logits buffer (`rows × vocab` floats)
/// while leaving each matmul enough rows for two threads.
const LM_HEAD_ROWS: usize = 256;

/// A batch of `batch` rows of `seq` tokens; `targets[i]` is the token expected after
/// `tokens[i]`, or negative where no loss is taken. `positions[i]` is the token's position
/// in its own document (conversation): 0 where a document starts, else the previous plus
/// one; attention never crosses a document boundary and RoPE uses these positions.
#[derive(Debug, Clone)]
pub struct Batch {
	pub tokens: Vec<u32>,
	pub targets: Vec<i32>,
	pub positions: Vec<u32>,
	pub batch: usize,
	pub seq: usize,
}

impl Batch {
	/// One document per row: positions `0..seq` in every row.
	pub fn unpacked(tokens: Vec<u32>, targets: Vec<i32>, batch: usize, seq: usize) -> Self {
		let positions = (0..batch).flat_map(|_| 0..seq as u32).collect();
		Batch { tokens, targets, positions, batch, seq }
	}

	pub fn counted(&self) -> usize {
		self.targets.iter().filter(|&&t| t >= 0).count()
	}

	/// Panics unless the buffers match the shape and positions count up within documents.
	fn check(&self, max_seq: usize) {
		let n = self.batch * self.seq;
		assert!(self.seq <= max_seq, "sequence {} longer than the engine's {max_seq}", self.seq);
		assert!(
			self.tokens.len() == n && self.targets.len() == n && self.positions.len() == n,
			"batch buffers do not match {} rows of {}",
			self.batch,
			self.seq
		);
		for row in self.positions.chunks(self.seq) {
			assert!(
				row.first() == Some(&0) && row.windows(2).all(|w| w[1] == 0 || w[1] == w[0] + 1),
				"positions must start each row and document at 0 and count up by one"
			);
		}
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
pub(crate) struct Pass<'b> {
	batch: usize,
	seq: usize,
	positions: &'b [u32],
	/// The stream dropout masks come from; `None` disables dropout (evaluation).
	dropout_key: Option<u64>,
}

/// A model's frozen weights (every block's seven linear layers and the LM head) in a
/// backend's form: made once (packing, conversion to bf16) and used by every step.
pub struct FrozenModel {
	pub class: String,
	/// Per layer, by [`Target::ALL`] order.
	layers: Vec<[Frozen; 7]>,
	head: Frozen,
}

impl FrozenModel {
	pub fn new(backend: &dyn Backend, model: &Model) -> Self {
		let c = &model.config;
		let layers = (0..model.layers.len())
			.map(|l| {
				Target::ALL.map(|t| {
					let (in_dim, out_dim) = t.dims(c);
					backend.freeze(model.linear(l, t), out_dim, in_dim)
				})
			})
			.collect();
		let head = backend.freeze(model.lm_head(), c.vocab_size, c.hidden_size);
		FrozenModel { class: backend.class(), layers, head }
	}

	pub(crate) fn linear(&self, layer: usize, t: Target) -> &Frozen {
		&self.layers[layer][Target::ALL.iter().position(|&x| x == t).unwrap_or(0)]
	}
}

/// The frozen weights an engine uses: its own, or shared with other engines.
enum FrozenRef<'a> {
	Owned(Box<FrozenModel>),
	Shared(&'a FrozenModel),
}

/// A model (and optionally an adapter) bound to a backend.
pub struct Engine<'a> {
	backend: &'a dyn Backend,
	model: &'a Model,
	frozen: FrozenRef<'a>,
	adapter: Option<&'a Adapter>,
	layout: Layout,
	/// `[max_seq × head_dim/2]` tables.
	rope_cos: Vec<f32>,
	rope_sin: Vec<f32>,
	max_seq: usize,
}

impl<'a> Engine<'a> {
	/// An engine that freezes `model`'s weights for itself (tests, one-off use).
	pub fn new(backend: &'a dyn Backend, model: &'a Model, adapter: Option<&'a Adapter>, max_seq: usize) -> Self {
		let frozen = FrozenRef::Owned(Box::new(FrozenModel::new(backend, model)));
		Self::build(backend, model, frozen, adapter, max_seq)
	}

	/// An engine on weights frozen once for `backend` (what training steps use).
	pub fn with_frozen(
		backend: &'a dyn Backend,
		model: &'a Model,
		frozen: &'a FrozenModel,
		adapter: Option<&'a Adapter>,
		max_seq: usize,
	) -> Self {
		assert_eq!(frozen.class, backend.class(), "weights frozen for another backend class");
		Self::build(backend, model, FrozenRef::Shared(frozen), adapter, max_seq)
	}

	fn build(
		backend: &'a dyn Backend,
		model: &'a Model,
		frozen: FrozenRef<'a>,
		adapter: Option<&'a Adapter>,
		max_seq: usize,
	) -> Self {
		let c = &model.config;
		let layout = match adapter {
			Some(a) => a.layout.clone(),
			None => Layout::new(c, &LoraConfig { rank: 0, alpha: 0.0, dropout: 0.0, targets: vec![] }),
		};
		let (rope_cos, rope_sin) = rope_tables(&c.rope_inv_freq(), max_seq);
		Engine { backend, model, frozen, adapter, layout, rope_cos, rope_sin, max_seq }
	}

	fn frozen(&self) -> &FrozenModel {
		match &self.frozen {
			FrozenRef::Owned(f) => f,
			FrozenRef::Shared(f) => f,
		}
	}

	fn embed(&self, tokens: &[u32]) -> Vec<f32> {
		let h = self.model.config.hidden_size;
		let vocab = self.model.config.vocab_size;
		if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
			panic!("token {t} outside the model's vocabulary");
		}
		let mut x = vec![0f32; tokens.len() * h];
		self.backend.gather_rows(&mut x, &self.model.embed, tokens, h);
		x
	}

	/// Summed loss of `batch` and, when `grads` is given, `+= grad_scale · ∂(summed
	/// loss)/∂adapter` (the caller divides by the token count of the whole accumulated
	/// batch). `dropout_key` selects the dropout masks (training); `None` runs without.
	pub fn step(&self, batch: &Batch, dropout_key: Option<u64>, grads: Option<(&mut [f32], f32)>) -> LossSum {
		let losses = self.run(batch, dropout_key, grads);
		LossSum { sum: losses.iter().sum(), count: batch.counted() }
	}

	/// Each target's loss (`−log p(target)`, 0 where none is taken), without dropout or
	/// gradients: what evaluation sums per conversation.
	pub fn token_losses(&self, batch: &Batch) -> Vec<f64> {
		self.run(batch, None, None)
	}

	fn run(&self, batch: &Batch, dropout_key: Option<u64>, grads: Option<(&mut [f32], f32)>) -> Vec<f64> {
		batch.check(self.max_seq);
		let pass = Pass { batch: batch.batch, seq: batch.seq, positions: &batch.positions, dropout_key };
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
		let Some((grads, scale)) = grads else {
			return self.lm_head_loss(&x, &batch.targets, None);
		};
		assert_eq!(grads.len(), self.layout.len, "gradient buffer does not match the adapter");
		let mut dx = vec![0f32; x.len()];
		let losses = self.lm_head_loss(&x, &batch.targets, Some((&mut dx, scale)));
		for (l, a) in acts.iter().enumerate().rev() {
			match self.block_backward(l, a, &dx, grads, &pass) {
				Some(d) => dx = d,
				None => break,
			}
		}
		losses
	}

	/// Final norm, LM head and cross-entropy over the rows of `x` (`[rows × hidden]`) that
	/// have a target, in blocks of `LM_HEAD_ROWS` (rows without one are not computed: in a
	/// chat most tokens are not the assistant's). With `dx`, writes `scale · ∂loss/∂x`
	/// there (rows without a target get 0). Returns each row's loss.
	fn lm_head_loss(&self, x: &[f32], targets: &[i32], dx: Option<(&mut [f32], f32)>) -> Vec<f64> {
		let be = self.backend;
		let c = &self.model.config;
		let (h, v) = (c.hidden_size, c.vocab_size);
		let counted: Vec<usize> = (0..targets.len()).filter(|&i| targets[i] >= 0).collect();
		let mut losses = vec![0f64; targets.len()];
		if counted.is_empty() {
			return losses;
		}
		let rows = counted.len();
		let counted_rows: Vec<u32> = counted.iter().map(|&i| i as u32).collect();
		let mut xs = vec![0f32; rows * h];
		be.gather_rows(&mut xs, x, &counted_rows, h);
		let ts: Vec<i32> = counted.iter().map(|&i| targets[i]).collect();
		let mut xf = vec![0f32; rows * h];
		let mut rstd = vec![0f32; rows];
		be.rmsnorm_forward(&mut xf, &mut rstd, &xs, &self.model.final_norm, h, c.rms_norm_eps);
		let head = &self.frozen().head;
		let (mut dxf, scale) = match &dx {
			Some((_, s)) => (Some(vec![0f32; rows * h]), *s),
			None => (None, 0.0),
		};
		let mut ls = vec![0f64; rows];
		let mut logits = vec![0f32; LM_HEAD_ROWS.min(rows) * v];
		for r0 in (0..rows).step_by(LM_HEAD_ROWS) {
			let n = LM_HEAD_ROWS.min(rows - r0);
			let logits = &mut logits[..n * v];
			be.frozen_forward(logits, &xf[r0 * h..(r0 + n) * h], head, n, false);
			be.cross_entropy(logits, &ts[r0..r0 + n], v, scale, &mut ls[r0..r0 + n]);
			if let Some(dxf) = dxf.as_mut() {
				be.frozen_backward(&mut dxf[r0 * h..(r0 + n) * h], logits, head, n, false);
			}
		}
		if let (Some((dx, _)), Some(dxf)) = (dx, dxf) {
			let mut dxs = vec![0f32; rows * h];
			be.rmsnorm_backward(&mut dxs, &dxf, &xs, &self.model.final_norm, &rstd, h);
			be.scatter_rows(dx, &dxs, &counted_rows, h);
		}
		for (j, &i) in counted.iter().enumerate() {
			losses[i] = ls[j];
		}
		losses
	}

	/// Logits of every position, `[batch·seq × vocab]`, one document per row (tests, golden
	/// values).
	pub fn logits(&self, tokens: &[u32], batch: usize, seq: usize) -> Vec<f32> {
		let b = Batch::unpacked(tokens.to_vec(), vec![-1; tokens.len()], batch, seq);
		self.logits_of(&b)
	}

	/// Logits of every position of `batch` (its documents as its positions say).
	pub fn logits_of(&self, batch: &Batch) -> Vec<f32> {
		batch.check(self.max_seq);
		let tokens = &batch.tokens;
		let pass = Pass { batch: batch.batch, seq: batch.seq, positions: &batch.positions, dropout_key: None };
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
		self.backend.frozen_forward(&mut logits, &xf, &self.frozen().head, rows, false);
		logits
	}
}

/// `cos`, `sin` of `pos · inv_freq[i]`: the angle in f32 as Hugging Face computes it, its
/// cosine and sine by the crate's own functions (`math`), rounded to f32.
pub fn rope_tables(inv_freq: &[f32], max_seq: usize) -> (Vec<f32>, Vec<f32>) {
	let mut cos = Vec::with_capacity(max_seq * inv_freq.len());
	let mut sin = Vec::with_capacity(max_seq * inv_freq.len());
	for pos in 0..max_seq {
		for &f in inv_freq {
			let (s, c) = crate::math::sin_cos_f64((pos as f32 * f) as f64);
			cos.push(c as f32);
			sin.push(s as f32);
		}
	}
	(cos, sin)
}

#[cfg(test)]
mod tests;
