//! Loading weights from a Hugging Face directory (safetensors, single or sharded) or a GGUF
//! file, with every tensor's presence and shape checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::{unpermute_rows_from_gguf, LayerWeights, Model, ModelConfig, ModelError};
use crate::gguf::GgufFile;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
	/// A Hugging Face directory: `config.json`, `model.safetensors` (or an index and
	/// shards), `tokenizer.json`, `tokenizer_config.json`.
	HfDir(PathBuf),
	/// A llama.cpp GGUF file (weights, tokenizer and chat template inside).
	Gguf(PathBuf),
}

impl ModelSource {
	pub fn detect(path: &Path) -> Result<Self, ModelError> {
		if path.is_dir() {
			if path.join("config.json").is_file() {
				return Ok(Self::HfDir(path.into()));
			}
		} else if path.is_file() {
			let mut magic = [0u8; 4];
			let io = |source| ModelError::Io { path: path.into(), source };
			use std::io::Read;
			let n = std::fs::File::open(path).map_err(io)?.read(&mut magic).map_err(io)?;
			if n == 4 && &magic == b"GGUF" {
				return Ok(Self::Gguf(path.into()));
			}
		} else {
			return Err(ModelError::Io { path: path.into(), source: std::io::ErrorKind::NotFound.into() });
		}
		Err(ModelError::NotAModel { path: path.into() })
	}

	pub fn path(&self) -> &Path {
		match self {
			Self::HfDir(p) | Self::Gguf(p) => p,
		}
	}
}

pub fn load_model(source: &ModelSource) -> Result<Model, ModelError> {
	match source {
		ModelSource::HfDir(dir) => load_hf(dir),
		ModelSource::Gguf(path) => load_gguf(&GgufFile::open(path)?),
	}
}

/// Reads named tensors and checks their shapes; `T` is where they live.
trait TensorStore {
	fn path(&self) -> &Path;
	/// The tensor as f32 and its shape (slowest-varying first), or `None` if absent.
	fn read(&self, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>, ModelError>;

	fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
		self.tensor_opt(name, shape)?
			.ok_or_else(|| ModelError::MissingTensor { path: self.path().into(), tensor: name.into() })
	}

	fn tensor_opt(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>, ModelError> {
		let Some((data, found)) = self.read(name)? else { return Ok(None) };
		if found != shape {
			return Err(ModelError::ShapeMismatch {
				path: self.path().into(),
				tensor: name.into(),
				expected: shape.into(),
				found,
			});
		}
		Ok(Some(data))
	}
}

// --- Hugging Face ---------------------------------------------------------------------------

struct HfStore {
	dir: PathBuf,
	/// Memory-mapped shard files and, for each tensor name, the shard that holds it.
	shards: Vec<(PathBuf, memmap2::Mmap)>,
	index: BTreeMap<String, usize>,
}

impl HfStore {
	fn open(dir: &Path) -> Result<Self, ModelError> {
		let single = dir.join("model.safetensors");
		let index_path = dir.join("model.safetensors.index.json");
		let files: Vec<String> = if single.is_file() {
			vec!["model.safetensors".into()]
		} else if index_path.is_file() {
			let text = read_text(&index_path)?;
			let j: serde_json::Value = serde_json::from_str(&text)
				.map_err(|e| ModelError::Safetensors { path: index_path.clone(), reason: e.to_string() })?;
			let map = j["weight_map"].as_object().ok_or_else(|| ModelError::Safetensors {
				path: index_path.clone(),
				reason: "no `weight_map` object".into(),
			})?;
			let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
			files.sort();
			files.dedup();
			files
		} else {
			return Err(ModelError::MissingTensor { path: dir.into(), tensor: "model.safetensors".into() });
		};
		let mut shards = Vec::new();
		let mut index = BTreeMap::new();
		for (i, name) in files.iter().enumerate() {
			let path = dir.join(name);
			let io = |source| ModelError::Io { path: path.clone(), source };
			let file = std::fs::File::open(&path).map_err(io)?;
			// SAFETY: read-only map of a file we do not modify.
			let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
			let st = SafeTensors::deserialize(&map)
				.map_err(|e| ModelError::Safetensors { path: path.clone(), reason: e.to_string() })?;
			for n in st.names() {
				index.insert(n.to_string(), i);
			}
			shards.push((path, map));
		}
		Ok(HfStore { dir: dir.into(), shards, index })
	}
}

impl TensorStore for HfStore {
	fn path(&self) -> &Path {
		&self.dir
	}

	fn read(&self, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>, ModelError> {
		let Some(&i) = self.index.get(name) else { return Ok(None) };
		let (path, map) = &self.shards[i];
		let err = |reason: String| ModelError::Safetensors { path: path.clone(), reason };
		let st = SafeTensors::deserialize(map).map_err(|e| err(e.to_string()))?;
		let view = st.tensor(name).map_err(|e| err(e.to_string()))?;
		let b = view.data();
		let data: Vec<f32> = match view.dtype() {
			Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
			Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
			Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
			other => {
				return Err(ModelError::UnsupportedDtype {
					path: path.clone(),
					tensor: name.into(),
					dtype: format!("{other:?}"),
				})
			},
		};
		Ok(Some((data, view.shape().to_vec())))
	}
}

fn read_text(path: &Path) -> Result<String, ModelError> {
	std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })
}

fn load_hf(dir: &Path) -> Result<Model, ModelError> {
	let cfg_path = dir.join("config.json");
	let config = ModelConfig::from_hf_json(&read_text(&cfg_path)?, &cfg_path.display().to_string())?;
	load_weights(&HfStore::open(dir)?, config, &HF_NAMES, false)
}

// --- GGUF -----------------------------------------------------------------------------------

impl TensorStore for GgufFile {
	fn path(&self) -> &Path {
		GgufFile::path(self)
	}

	fn read(&self, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>, ModelError> {
		if self.tensor_info(name).is_none() {
			return Ok(None);
		}
		let (data, dims) = self.tensor_f32(name)?;
		// GGUF dims are fastest-varying first; shapes here are PyTorch order.
		Ok(Some((data, dims.iter().rev().map(|&d| d as usize).collect())))
	}
}

fn load_gguf(g: &GgufFile) -> Result<Model, ModelError> {
	let config = ModelConfig::from_gguf(g)?;
	// llama.cpp's converter interleaves Q/K rows for `llama` (not for NeoX-style qwen2).
	let permuted = g.get_str("general.architecture")? == "llama";
	load_weights(g, config, &GGUF_NAMES, permuted)
}

// --- both -----------------------------------------------------------------------------------

/// What a format calls each weight; a layer's are `<layer><i>.<name>`.
struct Names {
	layer: &'static str,
	attn_norm: &'static str,
	q: &'static str,
	k: &'static str,
	v: &'static str,
	o: &'static str,
	q_bias: &'static str,
	k_bias: &'static str,
	v_bias: &'static str,
	ffn_norm: &'static str,
	gate: &'static str,
	up: &'static str,
	down: &'static str,
	embed: &'static str,
	final_norm: &'static str,
	lm_head: &'static str,
}

const HF_NAMES: Names = Names {
	layer: "model.layers.",
	attn_norm: "input_layernorm.weight",
	q: "self_attn.q_proj.weight",
	k: "self_attn.k_proj.weight",
	v: "self_attn.v_proj.weight",
	o: "self_attn.o_proj.weight",
	q_bias: "self_attn.q_proj.bias",
	k_bias: "self_attn.k_proj.bias",
	v_bias: "self_attn.v_proj.bias",
	ffn_norm: "post_attention_layernorm.weight",
	gate: "mlp.gate_proj.weight",
	up: "mlp.up_proj.weight",
	down: "mlp.down_proj.weight",
	embed: "model.embed_tokens.weight",
	final_norm: "model.norm.weight",
	lm_head: "lm_head.weight",
};

const GGUF_NAMES: Names = Names {
	layer: "blk.",
	attn_norm: "attn_norm.weight",
	q: "attn_q.weight",
	k: "attn_k.weight",
	v: "attn_v.weight",
	o: "attn_output.weight",
	q_bias: "attn_q.bias",
	k_bias: "attn_k.bias",
	v_bias: "attn_v.bias",
	ffn_norm: "ffn_norm.weight",
	gate: "ffn_gate.weight",
	up: "ffn_up.weight",
	down: "ffn_down.weight",
	embed: "token_embd.weight",
	final_norm: "output_norm.weight",
	lm_head: "output.weight",
};

/// Every weight of `config`'s model from `store`, shapes checked; `qk_permuted` puts Q/K
/// rows back from llama.cpp's order.
fn load_weights(
	store: &impl TensorStore,
	config: ModelConfig,
	n: &Names,
	qk_permuted: bool,
) -> Result<Model, ModelError> {
	let (h, q, kv, f, v) =
		(config.hidden_size, config.q_dim(), config.kv_dim(), config.intermediate_size, config.vocab_size);
	let mut layers = Vec::with_capacity(config.num_layers);
	for i in 0..config.num_layers {
		let get = |name: &str, shape: &[usize]| store.tensor(&format!("{}{i}.{name}", n.layer), shape);
		let bias = |name: &str, len: usize| if config.attention_bias { get(name, &[len]) } else { Ok(Vec::new()) };
		let attn_norm = get(n.attn_norm, &[h])?;
		let (mut wq, mut wk) = (get(n.q, &[q, h])?, get(n.k, &[kv, h])?);
		if qk_permuted {
			wq = unpermute_rows_from_gguf(&wq, config.num_heads, h);
			wk = unpermute_rows_from_gguf(&wk, config.num_kv_heads, h);
		}
		layers.push(LayerWeights {
			attn_norm,
			wq,
			wk,
			wv: get(n.v, &[kv, h])?,
			wo: get(n.o, &[h, q])?,
			bq: bias(n.q_bias, q)?,
			bk: bias(n.k_bias, kv)?,
			bv: bias(n.v_bias, kv)?,
			ffn_norm: get(n.ffn_norm, &[h])?,
			w_gate: get(n.gate, &[f, h])?,
			w_up: get(n.up, &[f, h])?,
			w_down: get(n.down, &[h, f])?,
		});
	}
	let embed = store.tensor(n.embed, &[v, h])?;
	let lm_head = if config.tie_word_embeddings { None } else { Some(store.tensor(n.lm_head, &[v, h])?) };
	Ok(Model { embed, layers, final_norm: store.tensor(n.final_norm, &[h])?, lm_head, config })
}
