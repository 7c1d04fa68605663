//! The shape of a Llama-family decoder, read from a Hugging Face `config.json` or from
//! GGUF metadata.

use serde::{Deserialize, Serialize};

use super::ModelError;
use crate::gguf::GgufFile;

/// Everything the engine needs to know about the architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
	pub vocab_size: usize,
	pub hidden_size: usize,
	pub intermediate_size: usize,
	pub num_layers: usize,
	pub num_heads: usize,
	pub num_kv_heads: usize,
	pub head_dim: usize,
	pub rope_theta: f32,
	/// Per-frequency divisors (Llama 3.x "llama3" RoPE scaling); empty for plain RoPE.
	#[serde(default, skip_serializing_if = "Vec::is_empty")]
	pub rope_freq_factors: Vec<f32>,
	pub rms_norm_eps: f32,
	pub tie_word_embeddings: bool,
	/// Qwen2-style biases on the q, k, v projections.
	pub attention_bias: bool,
	pub max_position_embeddings: usize,
}

impl ModelConfig {
	pub fn q_dim(&self) -> usize {
		self.num_heads * self.head_dim
	}

	pub fn kv_dim(&self) -> usize {
		self.num_kv_heads * self.head_dim
	}

	/// RoPE inverse frequencies, `theta^(-2i/d) / factor_i` for `i < d/2`.
	pub fn rope_inv_freq(&self) -> Vec<f32> {
		let half = self.head_dim / 2;
		(0..half)
			.map(|i| {
				let f = crate::math::pow_f64(self.rope_theta as f64, -(2.0 * i as f64) / self.head_dim as f64);
				let factor = self.rope_freq_factors.get(i).copied().unwrap_or(1.0) as f64;
				(f / factor) as f32
			})
			.collect()
	}

	pub fn validate(&self) -> Result<(), ModelError> {
		let bad = |what: String| Err(ModelError::BadConfig(what));
		if self.num_heads == 0 || self.num_kv_heads == 0 || self.num_heads % self.num_kv_heads != 0 {
			return bad(format!("{} heads cannot share {} key/value heads", self.num_heads, self.num_kv_heads));
		}
		if self.head_dim == 0 || self.head_dim % 2 != 0 {
			return bad(format!("head dimension {} must be even", self.head_dim));
		}
		if [self.vocab_size, self.hidden_size, self.intermediate_size, self.num_layers].contains(&0) {
			return bad("vocab, hidden, intermediate size and layer count must be non-zero".into());
		}
		if !self.rope_freq_factors.is_empty() && self.rope_freq_factors.len() != self.head_dim / 2 {
			return bad(format!(
				"{} RoPE frequency factors for head dimension {}",
				self.rope_freq_factors.len(),
				self.head_dim
			));
		}
		Ok(())
	}

	/// From a Hugging Face `config.json` (`model_type` llama, mistral or qwen2).
	pub fn from_hf_json(text: &str, file: &str) -> Result<Self, ModelError> {
		let j: serde_json::Value =
			serde_json::from_str(text).map_err(|e| ModelError::BadConfig(format!("{file}: {e}")))?;
		let arch = j["model_type"].as_str().unwrap_or("<none>");
		if !matches!(arch, "llama" | "mistral" | "qwen2") {
			return Err(ModelError::UnsupportedArchitecture(format!("{arch} (in {file})")));
		}
		let int = |k: &str| -> Result<usize, ModelError> {
			j[k].as_u64()
				.map(|v| v as usize)
				.ok_or_else(|| ModelError::BadConfig(format!("{file}: `{k}` is missing or not an integer")))
		};
		let num_heads = int("num_attention_heads")?;
		let hidden_size = int("hidden_size")?;
		let head_dim = j["head_dim"].as_u64().map(|v| v as usize).unwrap_or(hidden_size / num_heads.max(1));
		let rope_theta = j["rope_theta"].as_f64().unwrap_or(10000.0) as f32;
		let mut cfg = ModelConfig {
			vocab_size: int("vocab_size")?,
			hidden_size,
			intermediate_size: int("intermediate_size")?,
			num_layers: int("num_hidden_layers")?,
			num_heads,
			num_kv_heads: j["num_key_value_heads"].as_u64().map(|v| v as usize).unwrap_or(num_heads),
			head_dim,
			rope_theta,
			rope_freq_factors: Vec::new(),
			rms_norm_eps: j["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
			tie_word_embeddings: j["tie_word_embeddings"].as_bool().unwrap_or(false),
			attention_bias: j["attention_bias"].as_bool().unwrap_or(arch == "qwen2"),
			max_position_embeddings: int("max_position_embeddings").unwrap_or(4096),
		};
		if let Some(scaling) = j.get("rope_scaling").filter(|s| !s.is_null()) {
			let kind = scaling["rope_type"].as_str().or(scaling["type"].as_str()).unwrap_or("<none>");
			if kind != "llama3" {
				return Err(ModelError::BadConfig(format!(
					"{file}: RoPE scaling `{kind}` is not supported (llama3 is)"
				)));
			}
			let num = |k: &str| {
				scaling[k].as_f64().ok_or_else(|| ModelError::BadConfig(format!("{file}: rope_scaling.{k} is missing")))
			};
			cfg.rope_freq_factors = llama3_freq_factors(
				&cfg,
				num("factor")?,
				num("low_freq_factor")?,
				num("high_freq_factor")?,
				num("original_max_position_embeddings")?,
			);
		}
		cfg.validate()?;
		Ok(cfg)
	}

	/// From GGUF metadata (`general.architecture` llama or qwen2).
	pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
		let arch = g.get_str("general.architecture")?;
		if !matches!(arch, "llama" | "qwen2") {
			return Err(ModelError::UnsupportedArchitecture(format!("{arch} (in {})", g.path().display())));
		}
		let key = |k: &str| format!("{arch}.{k}");
		let int = |k: &str| g.get_u64(&key(k)).map(|v| v as usize);
		let hidden_size = int("embedding_length")?;
		let num_heads = int("attention.head_count")?;
		let vocab_size = match int("vocab_size") {
			Ok(v) => v,
			Err(_) => g.get_str_array("tokenizer.ggml.tokens")?.len(),
		};
		let head_dim = int("rope.dimension_count").unwrap_or(hidden_size / num_heads.max(1));
		let rope_freq_factors = match g.tensor_info("rope_freqs.weight") {
			Some(_) => g.tensor_f32("rope_freqs.weight")?.0,
			None => Vec::new(),
		};
		let cfg = ModelConfig {
			vocab_size,
			hidden_size,
			intermediate_size: int("feed_forward_length")?,
			num_layers: int("block_count")?,
			num_heads,
			num_kv_heads: int("attention.head_count_kv").unwrap_or(num_heads),
			head_dim,
			rope_theta: g.get_f32(&key("rope.freq_base")).unwrap_or(10000.0),
			rope_freq_factors,
			rms_norm_eps: g.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
			tie_word_embeddings: g.tensor_info("output.weight").is_none(),
			attention_bias: g.tensor_info("blk.0.attn_q.bias").is_some(),
			max_position_embeddings: int("context_length").unwrap_or(4096),
		};
		cfg.validate()?;
		Ok(cfg)
	}
}

/// Llama 3.1's RoPE rescaling, as divisors of each inverse frequency (what llama.cpp stores
/// as `rope_freqs.weight`).
fn llama3_freq_factors(cfg: &ModelConfig, factor: f64, low: f64, high: f64, original: f64) -> Vec<f32> {
	let low_wavelen = original / low;
	let high_wavelen = original / high;
	(0..cfg.head_dim / 2)
		.map(|i| {
			let freq = crate::math::pow_f64(cfg.rope_theta as f64, -(2.0 * i as f64) / cfg.head_dim as f64);
			let wavelen = 2.0 * std::f64::consts::PI / freq;
			if wavelen < high_wavelen {
				1.0
			} else if wavelen > low_wavelen {
				factor as f32
			} else {
				let smooth = (original / wavelen - low) / (high - low);
				(1.0 / ((1.0 - smooth) / factor + smooth)) as f32
			}
		})
		.collect()
}
