//! The training engine: forward and backward of a Llama-family decoder with LoRA adapters
//! on a [`Backend`], for a batch of equal-length token rows.
//!
//! The base model is frozen: the backward carries activation gradients down through every
//! block but produces gradients only for the adapter (in its flat canonical layout).

mod block;
mod linear;

use crate::backend::{Backend, Buf, Frozen};
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

/// A pass's per-row losses, still where the backend keeps them (device memory for CUDA):
/// read back once, when the step ends.
pub struct RowLosses {
	rows: usize,
	/// The rows that have a target, and their losses in that order.
	counted: Vec<usize>,
	losses: Option<Buf<f64>>,
}

impl RowLosses {
	/// Each row's loss (`−log p(target)`, 0 where none is taken).
	pub fn read(&self, be: &dyn Backend) -> Vec<f64> {
		let mut out = vec![0f64; self.rows];
		if let Some(l) = &self.losses {
			for (&i, l) in self.counted.iter().zip(be.download_f64(l.view())) {
				out[i] = l;
			}
		}
		out
	}

	/// The summed loss (in row order) and the count.
	pub fn sum(&self, be: &dyn Backend) -> LossSum {
		LossSum { sum: self.read(be).iter().sum(), count: self.counted.len() }
	}
}

/// Per-call settings shared by the blocks.
pub(crate) struct Pass<'b> {
	batch: usize,
	seq: usize,
	/// `[batch·seq]`, in the backend's memory.
	positions: &'b Buf<u32>,
	/// The stream dropout masks come from; `None` disables dropout (evaluation).
	dropout_key: Option<u64>,
}

/// A block's norms and biases, in the backend's memory.
pub(crate) struct LayerVectors {
	pub attn_norm: Buf<f32>,
	pub ffn_norm: Buf<f32>,
	/// Qwen2-style q, k, v biases (`None` where the architecture has none).
	pub bq: Option<Buf<f32>>,
	pub bk: Option<Buf<f32>>,
	pub bv: Option<Buf<f32>>,
}

/// A model's weights in a backend's form and memory: every block's seven linear layers and
/// the LM head frozen (packed, converted to bf16, on the device), the norms, biases and the
/// embedding table uploaded. Made once per model and class, used by every step.
pub struct FrozenModel {
	pub class: String,
	/// Per layer, by [`Target::ALL`] order.
	layers: Vec<[Frozen; 7]>,
	vectors: Vec<LayerVectors>,
	head: Frozen,
	embed: Buf<f32>,
	final_norm: Buf<f32>,
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
		let bias = |b: &[f32]| (!b.is_empty()).then(|| backend.upload_f32(b));
		let vectors = model
			.layers
			.iter()
			.map(|w| LayerVectors {
				attn_norm: backend.upload_f32(&w.attn_norm),
				ffn_norm: backend.upload_f32(&w.ffn_norm),
				bq: bias(&w.bq),
				bk: bias(&w.bk),
				bv: bias(&w.bv),
			})
			.collect();
		let head = backend.freeze(model.lm_head(), c.vocab_size, c.hidden_size);
		FrozenModel {
			class: backend.class(),
			layers,
			vectors,
			head,
			embed: backend.upload_f32(&model.embed),
			final_norm: backend.upload_f32(&model.final_norm),
		}
	}

	pub(crate) fn linear(&self, layer: usize, t: Target) -> &Frozen {
		&self.layers[layer][Target::ALL.iter().position(|&x| x == t).unwrap_or(0)]
	}

	pub(crate) fn vectors(&self, layer: usize) -> &LayerVectors {
		&self.vectors[layer]
	}

	pub(crate) fn head(&self) -> &Frozen {
		&self.head
	}

	pub(crate) fn embed(&self) -> &Buf<f32> {
		&self.embed
	}

	pub(crate) fn final_norm(&self) -> &Buf<f32> {
		&self.final_norm
	}
}

/// Shared or owned: the frozen weights and adapter parameters an engine runs on.
enum Held<'a, T> {
	Owned(Box<T>),
	Shared(&'a T),
}

impl<T> std::ops::Deref for Held<'_, T> {
	type Target = T;

	fn deref(&self) -> &T {
		match self {
			Held::Owned(t) => t,
			Held::Shared(t) => t,
		}
	}
}

/// The adapter as an engine runs it: its scalars and its parameters in the backend's memory.
struct LoraParams<'a> {
	scale: f32,
	dropout: f32,
	params: Held<'a, Buf<f32>>,
}

/// A model (and optionally an adapter) bound to a backend.
pub struct Engine<'a> {
	backend: &'a dyn Backend,
	model: &'a Model,
	frozen: Held<'a, FrozenModel>,
	lora: Option<LoraParams<'a>>,
	layout: Layout,
	/// `[max_seq × head_dim/2]` tables, in the backend's memory.
	rope_cos: Buf<f32>,
	rope_sin: Buf<f32>,
	max_seq: usize,
}

impl<'a> Engine<'a> {
	/// An engine that freezes `model`'s weights for itself (tests, one-off use).
	pub fn new(backend: &'a dyn Backend, model: &'a Model, adapter: Option<&Adapter>, max_seq: usize) -> Self {
		let frozen = Held::Owned(Box::new(FrozenModel::new(backend, model)));
		Self::build(backend, model, frozen, adapter, max_seq)
	}

	/// An engine on weights frozen once for `backend` (evaluation), with `adapter` uploaded.
	pub fn with_frozen(
		backend: &'a dyn Backend,
		model: &'a Model,
		frozen: &'a FrozenModel,
		adapter: Option<&Adapter>,
		max_seq: usize,
	) -> Self {
		assert_eq!(frozen.class, backend.class(), "weights frozen for another backend class");
		Self::build(backend, model, Held::Shared(frozen), adapter, max_seq)
	}

	/// An engine on frozen weights and on adapter parameters already in the backend's
	/// memory (`params`, in `config`'s layout): what a training step uses, so that the
	/// optimizer then updates them where they are.
	pub fn with_params(
		backend: &'a dyn Backend,
		model: &'a Model,
		frozen: &'a FrozenModel,
		config: &LoraConfig,
		params: &'a Buf<f32>,
		max_seq: usize,
	) -> Self {
		assert_eq!(frozen.class, backend.class(), "weights frozen for another backend class");
		let layout = Layout::new(&model.config, config);
		assert_eq!(params.len(), layout.len, "parameters do not fit the adapter's layout");
		let lora = LoraParams { scale: config.scale(), dropout: config.dropout, params: Held::Shared(params) };
		Self::assemble(backend, model, Held::Shared(frozen), Some(lora), layout, max_seq)
	}

	fn build(
		backend: &'a dyn Backend,
		model: &'a Model,
		frozen: Held<'a, FrozenModel>,
		adapter: Option<&Adapter>,
		max_seq: usize,
	) -> Self {
		let c = &model.config;
		let (layout, lora) = match adapter {
			Some(a) => (
				a.layout.clone(),
				Some(LoraParams {
					scale: a.config.scale(),
					dropout: a.config.dropout,
					params: Held::Owned(Box::new(backend.upload_f32(&a.params))),
				}),
			),
			None => (Layout::new(c, &LoraConfig { rank: 0, alpha: 0.0, dropout: 0.0, targets: vec![] }), None),
		};
		Self::assemble(backend, model, frozen, lora, layout, max_seq)
	}

	fn assemble(
		backend: &'a dyn Backend,
		model: &'a Model,
		frozen: Held<'a, FrozenModel>,
		lora: Option<LoraParams<'a>>,
		layout: Layout,
		max_seq: usize,
	) -> Self {
		let (cos, sin) = rope_tables(&model.config.rope_inv_freq(), max_seq);
		let (rope_cos, rope_sin) = (backend.upload_f32(&cos), backend.upload_f32(&sin));
		Engine { backend, model, frozen, lora, layout, rope_cos, rope_sin, max_seq }
	}

	fn embed(&self, tokens: &[u32]) -> Buf<f32> {
		let h = self.model.config.hidden_size;
		let vocab = self.model.config.vocab_size;
		if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
			panic!("token {t} outside the model's vocabulary");
		}
		let be = self.backend;
		let ids = be.upload_u32(tokens);
		let mut x = be.zeros_f32(tokens.len() * h);
		be.gather_rows(x.view_mut(), self.frozen.embed.view(), ids.view(), h);
		x
	}

	/// Summed loss of `batch` and, when `grads` is given, `+= grad_scale · ∂(summed
	/// loss)/∂adapter` (the caller divides by the token count of the whole accumulated
	/// batch). `dropout_key` selects the dropout masks (training); `None` runs without.
	/// The gradients on the host (tests, tools); a training step keeps them in the
	/// backend's memory ([`Engine::accumulate`]).
	pub fn step(&self, batch: &Batch, dropout_key: Option<u64>, grads: Option<(&mut [f32], f32)>) -> LossSum {
		let be = self.backend;
		let losses = match grads {
			None => self.run(batch, dropout_key, None),
			Some((host, scale)) => {
				let mut g = be.upload_f32(host);
				let losses = self.run(batch, dropout_key, Some((&mut g, scale)));
				host.copy_from_slice(&be.download_f32(g.view()));
				losses
			},
		};
		losses.sum(be)
	}

	/// `grads += scale · ∂(summed loss of batch)/∂adapter`, all in the backend's memory;
	/// the per-row losses stay there too until the caller reads them.
	pub fn accumulate(&self, batch: &Batch, dropout_key: Option<u64>, grads: &mut Buf<f32>, scale: f32) -> RowLosses {
		self.run(batch, dropout_key, Some((grads, scale)))
	}

	/// Each target's loss (`−log p(target)`, 0 where none is taken), without dropout or
	/// gradients: what evaluation sums per conversation.
	pub fn token_losses(&self, batch: &Batch) -> Vec<f64> {
		self.run(batch, None, None).read(self.backend)
	}

	fn run(&self, batch: &Batch, dropout_key: Option<u64>, grads: Option<(&mut Buf<f32>, f32)>) -> RowLosses {
		batch.check(self.max_seq);
		let be = self.backend;
		let positions = be.upload_u32(&batch.positions);
		let pass = Pass { batch: batch.batch, seq: batch.seq, positions: &positions, dropout_key };
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
		let mut dx = be.zeros_f32(x.len());
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
	/// there (rows without a target keep their 0).
	fn lm_head_loss(&self, x: &Buf<f32>, targets: &[i32], dx: Option<(&mut Buf<f32>, f32)>) -> RowLosses {
		let be = self.backend;
		let c = &self.model.config;
		let (h, v) = (c.hidden_size, c.vocab_size);
		let counted: Vec<usize> = (0..targets.len()).filter(|&i| targets[i] >= 0).collect();
		if let Some(&t) = targets.iter().find(|&&t| t >= 0 && t as usize >= v) {
			// Checked here, before any backend sees it: a kernel would not say which.
			panic!("target {t} outside the model's vocabulary of {v}");
		}
		if counted.is_empty() {
			return RowLosses { rows: targets.len(), counted, losses: None };
		}
		let rows = counted.len();
		let counted_rows = be.upload_u32(&counted.iter().map(|&i| i as u32).collect::<Vec<_>>());
		let ts = be.upload_i32(&counted.iter().map(|&i| targets[i]).collect::<Vec<_>>());
		let mut xs = be.zeros_f32(rows * h);
		be.gather_rows(xs.view_mut(), x.view(), counted_rows.view(), h);
		let mut xf = be.zeros_f32(rows * h);
		let mut rstd = be.zeros_f32(rows);
		let final_norm = &self.frozen.final_norm;
		be.rmsnorm_forward(xf.view_mut(), rstd.view_mut(), xs.view(), final_norm.view(), h, c.rms_norm_eps);
		let head = &self.frozen.head;
		let (mut dxf, scale) = match &dx {
			Some((_, s)) => (Some(be.zeros_f32(rows * h)), *s),
			None => (None, 0.0),
		};
		let mut losses = be.zeros_f64(rows);
		let mut logits = be.zeros_f32(LM_HEAD_ROWS.min(rows) * v);
		for r0 in (0..rows).step_by(LM_HEAD_ROWS) {
			let n = LM_HEAD_ROWS.min(rows - r0);
			let (block, logit_rows) = (r0 * h..(r0 + n) * h, 0..n * v);
			be.frozen_forward(logits.slice_mut(logit_rows.clone()), xf.slice(block.clone()), head, n, false);
			be.cross_entropy(
				logits.slice_mut(logit_rows.clone()),
				ts.slice(r0..r0 + n),
				v,
				scale,
				losses.slice_mut(r0..r0 + n),
			);
			if let Some(dxf) = dxf.as_mut() {
				be.frozen_backward(dxf.slice_mut(block), logits.slice(logit_rows), head, n, false);
			}
		}
		if let (Some((dx, _)), Some(dxf)) = (dx, dxf) {
			let mut dxs = be.zeros_f32(rows * h);
			be.rmsnorm_backward(dxs.view_mut(), dxf.view(), xs.view(), final_norm.view(), rstd.view(), h);
			be.scatter_rows(dx.view_mut(), dxs.view(), counted_rows.view(), h);
		}
		RowLosses { rows: targets.len(), counted, losses: Some(losses) }
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
		let be = self.backend;
		let tokens = &batch.tokens;
		let positions = be.upload_u32(&batch.positions);
		let pass = Pass { batch: batch.batch, seq: batch.seq, positions: &positions, dropout_key: None };
		let mut x = self.embed(tokens);
		for l in 0..self.model.layers.len() {
			x = self.block_forward(l, x, &pass).0;
		}
		let c = &self.model.config;
		let (h, v, rows) = (c.hidden_size, c.vocab_size, tokens.len());
		let mut xf = be.zeros_f32(rows * h);
		let mut rstd = be.zeros_f32(rows);
		be.rmsnorm_forward(xf.view_mut(), rstd.view_mut(), x.view(), self.frozen.final_norm.view(), h, c.rms_norm_eps);
		let mut logits = be.zeros_f32(rows * v);
		be.frozen_forward(logits.view_mut(), xf.view(), &self.frozen.head, rows, false);
		be.download_f32(logits.view())
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
