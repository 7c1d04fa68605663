//! A Llama-family decoder's weights (RMSNorm, RoPE, SwiGLU, grouped-query attention),
//! loaded from a Hugging Face directory or a GGUF file into f32, row-major `[out, in]` as
//! in PyTorch's `nn.Linear`.

mod config;
mod load;

pub use config::ModelConfig;
pub use load::{load_model, ModelSource};

use std::path::PathBuf;

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
	pub fn linear_mut(&mut self, target: crate::lora::Target) -> &mut Vec<f32> {
		use crate::lora::Target::*;
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
	pub fn linear(&self, layer: usize, target: crate::lora::Target) -> &[f32] {
		use crate::lora::Target::*;
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

	/// Folds `adapter` into the weights (`W += (α/r) B A`), for serving.
	pub fn merge_adapter(&mut self, adapter: &crate::lora::Adapter, backend: &dyn crate::backend::Backend) {
		let (l, scale) = (&adapter.layout, adapter.config.scale());
		for s in &l.slots {
			let mut delta = vec![0f32; s.out_dim * s.in_dim];
			backend.matmul_nn(&mut delta, l.b(s, &adapter.params), l.a(s, &adapter.params), s.out_dim, l.rank, s.in_dim, false);
			let w = self.layers[s.layer].linear_mut(s.target);
			w.iter_mut().zip(&delta).for_each(|(w, d)| *w += scale * d);
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
