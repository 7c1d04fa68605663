//! LoRA adapters: for a frozen linear layer `W` (`[out × in]`), the trainable low-rank
//! update `ΔW = (α/r) · B A` with `A: [r × in]`, `B: [out × r]`, as in PEFT.
//!
//! All adapter tensors live in one flat vector (and so do their gradients and the
//! optimizer's moments) in a fixed canonical order: layer by layer, targets in the order
//! q, k, v, o, gate, up, down, `A` before `B`. That order is what checkpoints hash.

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
pub use crate::model::Target;
use crate::model::{Model, ModelConfig};
use crate::rng::Rng;

/// Rank, scaling and targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
	pub rank: usize,
	pub alpha: f32,
	pub dropout: f32,
	/// Sorted, without duplicates.
	pub targets: Vec<Target>,
}

impl LoraConfig {
	pub fn scale(&self) -> f32 {
		self.alpha / self.rank as f32
	}
}

/// Where one adapted layer's `A` and `B` sit in the flat parameter vector.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
	pub layer: usize,
	pub target: Target,
	pub in_dim: usize,
	pub out_dim: usize,
	pub a: usize,
	pub b: usize,
}

/// The canonical layout of an adapter's tensors.
#[derive(Debug, Clone)]
pub struct Layout {
	pub slots: Vec<Slot>,
	pub len: usize,
	pub rank: usize,
}

impl Layout {
	pub fn new(model: &ModelConfig, lora: &LoraConfig) -> Self {
		let mut slots = Vec::new();
		let mut at = 0;
		for layer in 0..model.num_layers {
			for &target in &lora.targets {
				let (in_dim, out_dim) = target.dims(model);
				let a = at;
				let b = a + lora.rank * in_dim;
				at = b + out_dim * lora.rank;
				slots.push(Slot { layer, target, in_dim, out_dim, a, b });
			}
		}
		Layout { slots, len: at, rank: lora.rank }
	}

	pub fn slot(&self, layer: usize, target: Target) -> Option<&Slot> {
		self.slots.iter().find(|s| s.layer == layer && s.target == target)
	}

	pub fn a<'a>(&self, s: &Slot, v: &'a [f32]) -> &'a [f32] {
		&v[self.a_range(s)]
	}

	pub fn b<'a>(&self, s: &Slot, v: &'a [f32]) -> &'a [f32] {
		&v[self.b_range(s)]
	}

	/// Where the slot's `A` (`[r × in]`) lies in the flat vector.
	pub fn a_range(&self, s: &Slot) -> std::ops::Range<usize> {
		s.a..s.a + self.rank * s.in_dim
	}

	/// Where the slot's `B` (`[out × r]`) lies in the flat vector.
	pub fn b_range(&self, s: &Slot) -> std::ops::Range<usize> {
		s.b..s.b + s.out_dim * self.rank
	}
}

/// An adapter: configuration, layout and the flat parameters.
#[derive(Debug, Clone)]
pub struct Adapter {
	pub config: LoraConfig,
	pub layout: Layout,
	pub params: Vec<f32>,
}

impl Adapter {
	/// PEFT's default initialisation: `A` Kaiming-uniform (bound `1/√in`), `B` zero, so the
	/// adapted model starts equal to the base. Drawn from `seed` in canonical order.
	pub fn init(model: &ModelConfig, config: LoraConfig, seed: u64) -> Self {
		let layout = Layout::new(model, &config);
		let mut params = vec![0f32; layout.len];
		let mut rng = Rng::new(crate::rng::stream_key(seed, &[0x1041]));
		for s in &layout.slots {
			let bound = 1.0 / (s.in_dim as f32).sqrt();
			for p in &mut params[s.a..s.b] {
				*p = (rng.uniform() * 2.0 - 1.0) * bound;
			}
		}
		Adapter { config, layout, params }
	}

	/// An adapter holding `params` (in the canonical layout of `config` on `model`).
	pub fn from_params(model: &ModelConfig, config: LoraConfig, params: Vec<f32>) -> Self {
		let layout = Layout::new(model, &config);
		assert_eq!(params.len(), layout.len, "parameters do not fit the adapter's layout");
		Adapter { config, layout, params }
	}

	/// Folds the adapter into `model`'s weights (`W += (α/r) B A`), for serving.
	pub fn merge_into(&self, model: &mut Model, backend: &dyn Backend) {
		let (l, scale) = (&self.layout, self.config.scale());
		let params = backend.upload_f32(&self.params);
		for s in &l.slots {
			let mut delta = backend.zeros_f32(s.out_dim * s.in_dim);
			backend.matmul_nn(
				delta.view_mut(),
				params.slice(l.b_range(s)),
				params.slice(l.a_range(s)),
				s.out_dim,
				l.rank,
				s.in_dim,
				false,
			);
			let delta = backend.download_f32(delta.view());
			let w = model.layers[s.layer].linear_mut(s.target);
			w.iter_mut().zip(&delta).for_each(|(w, d)| *w += scale * d);
		}
	}
}
