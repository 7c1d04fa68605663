//! A Llama-family decoder's weights (RMSNorm, RoPE, SwiGLU, grouped-query attention),
//! loaded from a Hugging Face directory or a GGUF file into f32, row-major `[out, in]` as
//! in PyTorch's `nn.Linear`.

mod config;
mod load;

pub use config::ModelConfig;
pub use load::{load_model, ModelSource};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::gguf::GgufError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
	#[error("{path}: {source}")]
	Io { path: PathBuf, source: std::io::Error },
	#[error(transparent)]
	Gguf(#[from] GgufError),
	#[error("{path}: {reason}")]
	Safetensors { path: PathBuf, reason: String },
	#[error("model config: {0}")]
	BadConfig(String),
	#[error("architecture {0} is not supported (Llama-family: llama, mistral, qwen2)")]
	UnsupportedArchitecture(String),
	#[error("{path}: tensor `{tensor}` is missing")]
	MissingTensor { path: PathBuf, tensor: String },
	#[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
	ShapeMismatch { path: PathBuf, tensor: String, expected: Vec<usize>, found: Vec<usize> },
	#[error("{path}: tensor `{tensor}` has dtype {dtype}, which is not supported (F32, F16, BF16 are)")]
	UnsupportedDtype { path: PathBuf, tensor: String, dtype: String },
	#[error("{path}: not a model: expected a GGUF file or a directory with config.json")]
	NotAModel { path: PathBuf },
}

/// One decoder block's weights.
#[derive(Clone)]
pub struct LayerWeights {
	pub attn_norm: Vec<f32>,
	/// `[q_dim, hidden]`, `[kv_dim, hidden]`, `[kv_dim, hidden]`, `[hidden, q_dim]`.
	pub wq: Vec<f32>,
	pub wk: Vec<f32>,
	pub wv: Vec<f32>,
	pub wo: Vec<f32>,
	/// Qwen2-style q, k, v biases (empty when the architecture has none).
	pub bq: Vec<f32>,
	pub bk: Vec<f32>,
	pub bv: Vec<f32>,
	pub ffn_norm: Vec<f32>,
	/// `[inter, hidden]`, `[inter, hidden]`, `[hidden, inter]`.
	pub w_gate: Vec<f32>,
	pub w_up: Vec<f32>,
	pub w_down: Vec<f32>,
}

impl LayerWeights {
	/// The weight of a linear layer LoRA can target.
	pub fn linear_mut(&mut self, target: Target) -> &mut Vec<f32> {
		use Target::*;
		match target {
			Q => &mut self.wq,
			K => &mut self.wk,
			V => &mut self.wv,
			O => &mut self.wo,
			Gate => &mut self.w_gate,
			Up => &mut self.w_up,
			Down => &mut self.w_down,
		}
	}
}

/// A linear layer of a decoder block (the layers LoRA can adapt).
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

	/// The short name (`q`, `gate`, ...), as recipes and specs write it.
	pub fn name(self) -> &'static str {
		match self {
			Target::Q => "q",
			Target::K => "k",
			Target::V => "v",
			Target::O => "o",
			Target::Gate => "gate",
			Target::Up => "up",
			Target::Down => "down",
		}
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

/// A whole model: configuration and frozen base weights.
#[derive(Clone)]
pub struct Model {
	pub config: ModelConfig,
	/// `[vocab, hidden]`.
	pub embed: Vec<f32>,
	pub layers: Vec<LayerWeights>,
	pub final_norm: Vec<f32>,
	/// `[vocab, hidden]`; `None` when tied to `embed`.
	pub lm_head: Option<Vec<f32>>,
}

impl Model {
	pub fn lm_head(&self) -> &[f32] {
		self.lm_head.as_deref().unwrap_or(&self.embed)
	}

	/// The linear layers a LoRA adapter can target, by their short names.
	pub fn linear(&self, layer: usize, target: Target) -> &[f32] {
		use Target::*;
		let l = &self.layers[layer];
		match target {
			Q => &l.wq,
			K => &l.wk,
			V => &l.wv,
			O => &l.wo,
			Gate => &l.w_gate,
			Up => &l.w_up,
			Down => &l.w_down,
		}
	}

	pub fn num_params(&self) -> usize {
		let per_layer: usize = self.layers.first().map_or(0, |l| {
			[&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.bq, &l.bk, &l.bv, &l.ffn_norm, &l.w_gate, &l.w_up, &l.w_down]
				.iter()
				.map(|t| t.len())
				.sum()
		});
		self.embed.len()
			+ per_layer * self.layers.len()
			+ self.final_norm.len()
			+ self.lm_head.as_ref().map_or(0, Vec::len)
	}
}

/// The Q/K row order llama.cpp's converter writes for `llama` models (pairs interleaved for
/// its RoPE kernel) and back. Row `h*d + 2i + j` of GGUF is row `h*d + j*d/2 + i` of HF.
pub fn unpermute_rows_from_gguf(w: &[f32], n_heads: usize, row_len: usize) -> Vec<f32> {
	permute_rows(w, n_heads, row_len, false)
}

pub fn permute_rows_to_gguf(w: &[f32], n_heads: usize, row_len: usize) -> Vec<f32> {
	permute_rows(w, n_heads, row_len, true)
}

fn permute_rows(w: &[f32], n_heads: usize, row_len: usize, to_gguf: bool) -> Vec<f32> {
	let rows = w.len() / row_len;
	let d = rows / n_heads;
	let half = d / 2;
	let mut out = vec![0f32; w.len()];
	for h in 0..n_heads {
		for i in 0..half {
			for j in 0..2 {
				let gguf = h * d + 2 * i + j;
				let hf = h * d + j * half + i;
				let (src, dst) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
				out[dst * row_len..(dst + 1) * row_len].copy_from_slice(&w[src * row_len..(src + 1) * row_len]);
			}
		}
	}
	out
}
