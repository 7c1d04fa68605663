//! LoRA adapters: for a frozen linear layer `W` (`[out × in]`), the trainable low-rank
//! update `ΔW = (α/r) · B A` with `A: [r × in]`, `B: [out × r]`, as in PEFT.
//!
//! All adapter tensors live in one flat vector (and so do their gradients and the
//! optimizer's moments) in a fixed canonical order: layer by layer, targets in the order
//! q, k, v, o, gate, up, down, `A` before `B`. That order is what checkpoints hash.

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;
use crate::rng::Rng;

/// A linear layer LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
	Q,
	K,
	V,
	O,
	Gate,
	Up,
	Down,
}

impl Target {
	pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

	/// Accepts the short name (`q`) or the Hugging Face module name (`q_proj`).
	pub fn parse(s: &str) -> Option<Self> {
		Some(match s.trim_end_matches("_proj") {
			"q" => Target::Q,
			"k" => Target::K,
			"v" => Target::V,
			"o" => Target::O,
			"gate" => Target::Gate,
			"up" => Target::Up,
			"down" => Target::Down,
			_ => return None,
		})
	}

	/// The module path inside a Hugging Face decoder layer.
	pub fn hf_module(self) -> &'static str {
		match self {
			Target::Q => "self_attn.q_proj",
			Target::K => "self_attn.k_proj",
			Target::V => "self_attn.v_proj",
			Target::O => "self_attn.o_proj",
			Target::Gate => "mlp.gate_proj",
			Target::Up => "mlp.up_proj",
			Target::Down => "mlp.down_proj",
		}
	}

	/// The tensor name inside a GGUF block.
	pub fn gguf_name(self) -> &'static str {
		match self {
			Target::Q => "attn_q",
			Target::K => "attn_k",
			Target::V => "attn_v",
			Target::O => "attn_output",
			Target::Gate => "ffn_gate",
			Target::Up => "ffn_up",
			Target::Down => "ffn_down",
		}
	}

	/// `(in, out)` features of the adapted layer.
	pub fn dims(self, c: &ModelConfig) -> (usize, usize) {
		match self {
			Target::Q => (c.hidden_size, c.q_dim()),
			Target::K | Target::V => (c.hidden_size, c.kv_dim()),
			Target::O => (c.q_dim(), c.hidden_size),
			Target::Gate | Target::Up => (c.hidden_size, c.intermediate_size),
			Target::Down => (c.intermediate_size, c.hidden_size),
		}
	}
}

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
		&v[s.a..s.a + self.rank * s.in_dim]
	}

	pub fn b<'a>(&self, s: &Slot, v: &'a [f32]) -> &'a [f32] {
		&v[s.b..s.b + s.out_dim * self.rank]
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
}
