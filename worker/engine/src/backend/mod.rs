//! The compute interface the engine runs on: a handful of kernels in the style of llm.c,
//! each layer's forward beside its backward, on row-major f32 buffers the backend owns.
//!
//! Every kernel is deterministic: a result depends only on its inputs, never on the number
//! of threads or on scheduling. Work is split into fixed-size pieces whose reductions run
//! in a fixed order, and nothing is reduced across threads. This is what lets a validator
//! replay a miner's training and get the same bits (worker/README.md, "Reproducibility"; the
//! reproducibility class is the backend's [`Backend::class`]).
//!
//! The CPU backend is the reference. The GPU backend (cuBLAS and NVRTC through `cudarc`,
//! `worker/cuda`) implements the same operations and is tested against this one. What a
//! forward keeps for its backward is the backend's own ([`Frozen`] weights, [`AttnSaved`]
//! attention state, [`DropSaved`] dropout masks), every operation of a training step and of
//! generation is a method here, and every buffer is the backend's own ([`Buf`]: device
//! memory for CUDA); the engine reads back only what leaves a step.

mod buffer;
pub mod cpu;
mod on_host;

pub use buffer::{host, host_mut, Buf, View, ViewMut};
pub use on_host::OnHost;

/// Geometry of one attention call: `batch` sequences of `seq` tokens, `heads` query heads
/// sharing `kv_heads` key/value heads, `head_dim` wide.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
	pub batch: usize,
	pub seq: usize,
	pub heads: usize,
	pub kv_heads: usize,
	pub head_dim: usize,
}

/// A frozen weight `W` (`[out_dim × in_dim]`, a base model's linear layer or LM head) in
/// the form a backend multiplies with: packed panels, another precision, device memory.
/// Made once per model by [`Backend::freeze`]; only a backend of the class that made it
/// can use it.
pub struct Frozen {
	pub out_dim: usize,
	pub in_dim: usize,
	pub class: String,
	data: Box<dyn std::any::Any + Send + Sync>,
}

impl Frozen {
	/// A weight held as `data` by the backend of `class`.
	pub fn new<T: std::any::Any + Send + Sync>(out_dim: usize, in_dim: usize, class: String, data: T) -> Self {
		Frozen { out_dim, in_dim, class, data: Box::new(data) }
	}

	/// The backend's own form of the weight; panics if another backend made it. (An
	/// engine checks the whole model's class once, `Engine::with_frozen`; per product the
	/// type is enough, and costs no string.)
	pub fn get<T: 'static>(&self) -> &T {
		self.data
			.downcast_ref::<T>()
			.unwrap_or_else(|| panic!("a weight frozen by {} used by another backend", self.class))
	}
}

/// What an attention forward keeps for its backward, in the backend's own form: the CPU
/// keeps the softmax (`[batch × heads × seq × seq]`); a flash-style kernel keeps one
/// log-sum-exp per query row and recomputes the rest. Only the backend that made it can
/// read it.
pub struct AttnSaved {
	data: Box<dyn std::any::Any + Send + Sync>,
}

impl AttnSaved {
	pub fn new<T: std::any::Any + Send + Sync>(data: T) -> Self {
		AttnSaved { data: Box::new(data) }
	}

	/// The backend's own form; panics if another backend made it.
	pub fn get<T: 'static>(&self) -> &T {
		self.data.downcast_ref::<T>().unwrap_or_else(|| panic!("an attention state made by another backend"))
	}
}

/// A dropout mask drawn by [`Backend::dropout_mask`], in the backend's own form: the CPU
/// keeps one bit per element; a GPU may keep only the key and recompute the bits from it.
pub struct DropSaved {
	data: Box<dyn std::any::Any + Send + Sync>,
}

impl DropSaved {
	pub fn new<T: std::any::Any + Send + Sync>(data: T) -> Self {
		DropSaved { data: Box::new(data) }
	}

	/// The backend's own form; panics if another backend made it.
	pub fn get<T: 'static>(&self) -> &T {
		self.data.downcast_ref::<T>().unwrap_or_else(|| panic!("a dropout mask made by another backend"))
	}
}

/// One AdamW step's scalars, computed once on the host by `optim` (bias corrections in
/// f64, as PyTorch does) so that every backend applies the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
	pub beta1: f32,
	pub beta2: f32,
	pub eps: f32,
	/// `lr / (1 − β₁ᵗ)`.
	pub step_size: f32,
	/// `√(1 − β₂ᵗ)`.
	pub bc2_sqrt: f32,
	/// `1 − lr · weight_decay`.
	pub decay: f32,
}

pub trait Backend: Send + Sync {
	/// The reproducibility class: runs of the same class give the same bits.
	fn class(&self) -> String;

	/// The longest row (`seq_len`) a training step can take here, where the backend has a
	/// limit (the CUDA attention's scores live in a block's shared memory); `None`: none.
	fn max_train_row(&self) -> Option<usize> {
		None
	}

	// Memory. Every buffer an operation reads or writes is one of these; only what leaves a
	// step (losses, gradients, parameters) is read back.

	/// `host` copied into a new buffer.
	fn upload_f32(&self, host: &[f32]) -> Buf<f32>;
	/// `host` copied into a new buffer (token ids, positions, row indices).
	fn upload_u32(&self, host: &[u32]) -> Buf<u32>;
	/// `host` copied into a new buffer (targets; negative: ignored).
	fn upload_i32(&self, host: &[i32]) -> Buf<i32>;
	/// A new buffer of `len` zeros.
	fn zeros_f32(&self, len: usize) -> Buf<f32>;
	/// A new buffer of `len` zeros (per-row losses).
	fn zeros_f64(&self, len: usize) -> Buf<f64>;
	/// The elements of `x`, on the host (waits for the operations writing them).
	fn download_f32(&self, x: View<f32>) -> Vec<f32>;
	/// The elements of `x`, on the host.
	fn download_f64(&self, x: View<f64>) -> Vec<f64>;
	/// `dst = src` (same length).
	fn copy(&self, dst: ViewMut<f32>, src: View<f32>);

	/// `W` (`[out_dim × in_dim]`, row-major, on the host) in this backend's form for
	/// [`Backend::frozen_forward`] and [`Backend::frozen_backward`].
	fn freeze(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Frozen;
	/// `y[n×out] (+)= x[n×in] · Wᵀ`: a frozen linear layer.
	fn frozen_forward(&self, y: ViewMut<f32>, x: View<f32>, w: &Frozen, n: usize, accumulate: bool);
	/// `dx[n×in] (+)= dy[n×out] · W`: its input gradient.
	fn frozen_backward(&self, dx: ViewMut<f32>, dy: View<f32>, w: &Frozen, n: usize, accumulate: bool);

	/// `c[m×n] (+)= a[m×k] · b[n×k]ᵀ`: a linear layer, `x Wᵀ`.
	#[allow(clippy::too_many_arguments)]
	fn matmul_nt(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool);
	/// `c[m×n] (+)= a[m×k] · b[k×n]`: an input gradient, `dY W`.
	#[allow(clippy::too_many_arguments)]
	fn matmul_nn(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool);
	/// `c[m×n] (+)= a[k×m]ᵀ · b[k×n]`: a weight gradient, `dYᵀ X`.
	#[allow(clippy::too_many_arguments)]
	fn matmul_tn(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool);

	/// `out = x / rms(x) * w` per row of `dim`; `rstd` keeps `1/rms` for the backward.
	fn rmsnorm_forward(&self, out: ViewMut<f32>, rstd: ViewMut<f32>, x: View<f32>, w: View<f32>, dim: usize, eps: f32);
	/// `dx += ∂/∂x` of the above (the weight is frozen).
	fn rmsnorm_backward(
		&self,
		dx: ViewMut<f32>,
		dout: View<f32>,
		x: View<f32>,
		w: View<f32>,
		rstd: View<f32>,
		dim: usize,
	);

	/// Rotates each head of each `width`-wide row in place (Hugging Face's rotate-half
	/// layout); row `r` is at position `positions[r]`. `cos`/`sin` are
	/// `[> max position × head_dim/2]`. `inverse` rotates back, which is the backward.
	#[allow(clippy::too_many_arguments)]
	fn rope(
		&self,
		x: ViewMut<f32>,
		width: usize,
		cos: View<f32>,
		sin: View<f32>,
		positions: View<u32>,
		head_dim: usize,
		inverse: bool,
	);

	/// Grouped-query attention, causal within each document and blind across documents
	/// (block-diagonal-causal, as with `position_ids` in padding-free packing): a token at
	/// position `p` (`positions`, `[batch·seq]`) sees itself and the `p` tokens before it.
	/// Positions are 0 at each row's start and where a document starts, else the previous
	/// plus one. `q`/`out` are `[batch·seq × heads·head_dim]`, `k`/`v`
	/// `[batch·seq × kv_heads·head_dim]`. Returns what the backward needs, in the
	/// backend's form ([`AttnSaved`]). Masked blocks are skipped, not computed and thrown
	/// away.
	fn attention_forward(
		&self,
		out: ViewMut<f32>,
		q: View<f32>,
		k: View<f32>,
		v: View<f32>,
		positions: View<u32>,
		s: AttnShape,
	) -> AttnSaved;
	/// Gradients of the above from its saved state and its output `out` (which the engine
	/// keeps anyway: a flash-style backward needs `Σ dout ⊙ out` per row); `dq`, `dk`, `dv`
	/// are overwritten.
	#[allow(clippy::too_many_arguments)]
	fn attention_backward(
		&self,
		dq: ViewMut<f32>,
		dk: ViewMut<f32>,
		dv: ViewMut<f32>,
		dout: View<f32>,
		out: View<f32>,
		saved: &AttnSaved,
		q: View<f32>,
		k: View<f32>,
		v: View<f32>,
		positions: View<u32>,
		s: AttnShape,
	);
	/// Causal attention of `n` new queries (`q`, `[n × heads·head_dim]`, at positions
	/// `past..past + n`) over a KV cache holding positions `0..past + n` (`k_cache`,
	/// `v_cache`: `[≥ past + n × kv_heads·head_dim]`): generation. `out` is overwritten.
	#[allow(clippy::too_many_arguments)]
	fn attention_cached(
		&self,
		out: ViewMut<f32>,
		q: View<f32>,
		k_cache: View<f32>,
		v_cache: View<f32>,
		past: usize,
		n: usize,
		s: AttnShape,
	);

	/// `out = silu(gate) * up`.
	fn swiglu_forward(&self, out: ViewMut<f32>, gate: View<f32>, up: View<f32>);
	/// `dgate`, `dup` (overwritten) from `dout`.
	fn swiglu_backward(
		&self,
		dgate: ViewMut<f32>,
		dup: ViewMut<f32>,
		dout: View<f32>,
		gate: View<f32>,
		up: View<f32>,
	);

	/// `out[j] = x[rows[j]]`, rows of `dim` (the embedding lookup; the LM head's counted
	/// rows). The rows checked against `x` before.
	fn gather_rows(&self, out: ViewMut<f32>, x: View<f32>, rows: View<u32>, dim: usize);
	/// `dst[rows[j]] = src[j]`, rows of `dim` (the rows distinct); the other rows of `dst`
	/// untouched.
	fn scatter_rows(&self, dst: ViewMut<f32>, src: View<f32>, rows: View<u32>, dim: usize);
	/// `y += x` (residual connections).
	fn add_assign(&self, y: ViewMut<f32>, x: View<f32>);
	/// Every row of `y` (rows of `bias.len()`) `+= bias`.
	fn add_bias(&self, y: ViewMut<f32>, bias: View<f32>);
	/// `x *= a` (LoRA's `α/r`, clipping).
	fn scale(&self, x: ViewMut<f32>, a: f32);
	/// `dst[o·rows + j] += src[j·cols + o]`: `src` (`[rows × cols]`) added transposed.
	fn add_transposed(&self, dst: ViewMut<f32>, src: View<f32>, rows: usize, cols: usize);
	/// The mask of `len` elements: element `i` dropped iff `rng::uniform_at(key, i) < p`.
	fn dropout_mask(&self, p: f32, key: u64, len: usize) -> DropSaved;
	/// `out = drop(x)`: dropped elements 0, kept ones times `1/(1−p)`.
	fn dropout_apply(&self, out: ViewMut<f32>, x: View<f32>, mask: &DropSaved);
	/// `dx += drop'(t)`: `t · 1/(1−p)` where the input was kept.
	fn dropout_add_kept(&self, dx: ViewMut<f32>, t: View<f32>, mask: &DropSaved);
	/// `Σ x²` in f64 (the square of the clipping norm).
	fn sum_squares(&self, x: View<f32>) -> f64;
	/// AdamW with decoupled weight decay on `params`, its moments `m`, `v` and `grads`.
	fn adamw(&self, params: ViewMut<f32>, grads: View<f32>, m: ViewMut<f32>, v: ViewMut<f32>, step: AdamWStep);

	/// Cross-entropy of logits rows `[rows × vocab]` against `targets` (negative: ignored).
	/// Overwrites the logits with `scale · ∂loss/∂logits` and writes each row's loss
	/// (`−log softmax[target]`, 0 for ignored rows) to `losses`, which stay where they are
	/// until the step reads them back.
	fn cross_entropy(&self, logits: ViewMut<f32>, targets: View<i32>, vocab: usize, scale: f32, losses: ViewMut<f64>);
}
