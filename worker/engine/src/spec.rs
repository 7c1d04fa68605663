//! A fine-tuning job's spec (`job.toml`): what to train on, how, and the content hashes
//! every input must match. Paths are relative to the spec file; `models:NAME` means
//! `NAME` in the model cache (`$MOLTING_MODELS`, default `~/.cache/molting/models`).
//!
//! ```toml
//! [model]
//! path = "models:SmolLM2-135M-Instruct.Q4_1.gguf"
//! sha256 = "b179c952..."
//!
//! [data]
//! format = "chat"                 # or "text"
//! train = "data/persona/train.jsonl"
//! train_sha256 = "..."
//! eval = "data/persona/eval.jsonl"  # optional, with eval_sha256
//! eval_sha256 = "..."
//!
//! [lora]
//! rank = 16
//! alpha = 32.0
//! dropout = 0.05
//! targets = ["q", "k", "v", "o"]  # any of q k v o gate up down
//!
//! [train]
//! steps = 60
//! batch_size = 4
//! seq_len = 256
//! grad_accum = 1
//! lr = 2e-3
//! warmup_steps = 5
//! min_lr_ratio = 0.1
//! weight_decay = 0.0
//! max_grad_norm = 1.0
//! seed = 42
//! checkpoint_every = 10
//! precision = "fp32"              # or "bf16": frozen-weight products in bf16 (its own class)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Format;
use crate::lora::{LoraConfig, Target};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
	#[error("{path}: {source}")]
	Io { path: PathBuf, source: std::io::Error },
	#[error("{path}: {message}")]
	Parse { path: PathBuf, message: String },
	#[error("{path}: `{field}` {reason}")]
	Invalid { path: PathBuf, field: &'static str, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
	pub path: String,
	pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
	pub format: Format,
	pub train: String,
	pub train_sha256: String,
	#[serde(default)]
	pub eval: Option<String>,
	#[serde(default)]
	pub eval_sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSection {
	pub rank: usize,
	pub alpha: f32,
	#[serde(default)]
	pub dropout: f32,
	pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
	pub steps: u64,
	pub batch_size: usize,
	pub seq_len: usize,
	#[serde(default = "one")]
	pub grad_accum: usize,
	pub lr: f32,
	#[serde(default)]
	pub warmup_steps: u64,
	#[serde(default)]
	pub min_lr_ratio: f32,
	#[serde(default)]
	pub weight_decay: f32,
	#[serde(default = "default_clip")]
	pub max_grad_norm: f32,
	#[serde(default = "default_beta1")]
	pub beta1: f32,
	#[serde(default = "default_beta2")]
	pub beta2: f32,
	#[serde(default = "default_eps")]
	pub eps: f32,
	pub seed: u64,
	pub checkpoint_every: u64,
	/// The arithmetic of the frozen weights' products, and so the reproducibility class a
	/// miner must run: `fp32` (the reference) or `bf16`.
	#[serde(default)]
	pub precision: Precision,
}

/// See [`TrainSection::precision`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
	#[default]
	Fp32,
	Bf16,
}

impl Precision {
	pub fn as_str(self) -> &'static str {
		match self {
			Precision::Fp32 => "fp32",
			Precision::Bf16 => "bf16",
		}
	}
}

impl std::fmt::Display for Precision {
	fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
		f.write_str(self.as_str())
	}
}

impl std::str::FromStr for Precision {
	type Err = String;
	fn from_str(s: &str) -> Result<Self, String> {
		match s {
			"fp32" => Ok(Precision::Fp32),
			"bf16" => Ok(Precision::Bf16),
			_ => Err(format!("`{s}` is not a precision (fp32 or bf16)")),
		}
	}
}

fn one() -> usize {
	1
}
fn default_clip() -> f32 {
	1.0
}
fn default_beta1() -> f32 {
	0.9
}
fn default_beta2() -> f32 {
	0.999
}
fn default_eps() -> f32 {
	1e-8
}

impl TrainSection {
	pub fn adamw(&self) -> crate::optim::AdamWConfig {
		crate::optim::AdamWConfig {
			beta1: self.beta1,
			beta2: self.beta2,
			eps: self.eps,
			weight_decay: self.weight_decay,
		}
	}

	pub fn schedule(&self) -> crate::optim::Schedule {
		crate::optim::Schedule {
			lr: self.lr,
			warmup_steps: self.warmup_steps,
			total_steps: self.steps,
			min_lr_ratio: self.min_lr_ratio,
		}
	}
}

/// A parsed, validated job spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
	pub model: ModelSection,
	pub data: DataSection,
	pub lora: LoraSection,
	pub train: TrainSection,
}

impl Spec {
	/// Reads and validates a spec; returns it with the SHA-256 of its bytes.
	pub fn load(path: &Path) -> Result<(Spec, [u8; 32]), SpecError> {
		let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io { path: path.into(), source })?;
		let spec = Self::parse(&text, path)?;
		Ok((spec, Sha256::digest(text.as_bytes()).into()))
	}

	pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
		let spec: Spec =
			toml::from_str(text).map_err(|e| SpecError::Parse { path: path.into(), message: e.to_string() })?;
		spec.validate(path)?;
		Ok(spec)
	}

	fn validate(&self, path: &Path) -> Result<(), SpecError> {
		let bad = |field: &'static str, reason: &str| {
			Err(SpecError::Invalid { path: path.into(), field, reason: reason.into() })
		};
		let is_hash = |s: &str| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit());
		if !is_hash(&self.model.sha256) {
			return bad("model.sha256", "must be 64 hex digits");
		}
		if !is_hash(&self.data.train_sha256) {
			return bad("data.train_sha256", "must be 64 hex digits");
		}
		match (&self.data.eval, &self.data.eval_sha256) {
			(Some(_), Some(h)) if !is_hash(h) => return bad("data.eval_sha256", "must be 64 hex digits"),
			(Some(_), None) => return bad("data.eval_sha256", "is required when data.eval is set"),
			(None, Some(_)) => return bad("data.eval", "is required when data.eval_sha256 is set"),
			_ => {},
		}
		validate_sections(&self.lora, &self.train, path)
	}

	pub fn lora_config(&self) -> LoraConfig {
		lora_config(&self.lora)
	}
}

/// Checks the training parameters (a spec's or a recipe's); errors name `path`.
pub fn validate_sections(l: &LoraSection, t: &TrainSection, path: &Path) -> Result<(), SpecError> {
	let bad = |field: &'static str, reason: &str| {
		Err(SpecError::Invalid { path: path.into(), field, reason: reason.into() })
	};
		if l.rank == 0 || l.rank > 1024 {
			return bad("lora.rank", "must be between 1 and 1024");
		}
		if !(l.alpha > 0.0 && l.alpha.is_finite()) {
			return bad("lora.alpha", "must be a positive number");
		}
		if !(0.0..1.0).contains(&l.dropout) {
			return bad("lora.dropout", "must be in [0, 1)");
		}
		if l.targets.is_empty() {
			return bad("lora.targets", "must name at least one of q k v o gate up down");
		}
		if let Some(t) = l.targets.iter().find(|t| Target::parse(t).is_none()) {
			return bad("lora.targets", &format!("names `{t}`, which is not one of q k v o gate up down"));
		}
		if t.steps == 0 {
			return bad("train.steps", "must be at least 1");
		}
		if t.batch_size == 0 || t.grad_accum == 0 {
			return bad("train.batch_size", "and train.grad_accum must be at least 1");
		}
		if t.seq_len < 2 || t.seq_len > 32768 {
			return bad("train.seq_len", "must be between 2 and 32768");
		}
		if !(t.lr > 0.0 && t.lr.is_finite()) {
			return bad("train.lr", "must be a positive number");
		}
		if !(0.0..=1.0).contains(&t.min_lr_ratio) {
			return bad("train.min_lr_ratio", "must be in [0, 1]");
		}
		if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
			return bad("train.beta1", "and train.beta2 must be in [0, 1)");
		}
		if !(t.eps > 0.0 && t.eps.is_finite()) {
			return bad("train.eps", "must be a positive number");
		}
		if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
			return bad("train.weight_decay", "must be a non-negative number");
		}
		if !(t.max_grad_norm > 0.0) {
			return bad("train.max_grad_norm", "must be positive");
		}
		if t.checkpoint_every == 0 {
			return bad("train.checkpoint_every", "must be at least 1");
		}
	Ok(())
}

/// The adapter these parameters train: targets in the engine's order, each once.
pub fn lora_config(l: &LoraSection) -> LoraConfig {
	let mut targets: Vec<Target> = l.targets.iter().filter_map(|t| Target::parse(t)).collect();
	targets.sort();
	targets.dedup();
	LoraConfig { rank: l.rank, alpha: l.alpha, dropout: l.dropout, targets }
}

/// Resolves a path of the spec: `models:NAME` in the model cache, else relative to `base`.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
	if let Some(name) = p.strip_prefix("models:") {
		return models_dir().join(name);
	}
	base.join(p)
}

/// The model cache: `$MOLTING_MODELS`, default `~/.cache/molting/models`.
pub fn models_dir() -> PathBuf {
	if let Some(d) = std::env::var_os("MOLTING_MODELS") {
		return d.into();
	}
	let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
	Path::new(&home).join(".cache/molting/models")
}

/// A model's content hash: the file's SHA-256 for GGUF; for a Hugging Face directory, the
/// SHA-256 of the lines `"<file> <sha256>\n"` for its config, tokenizer and weight files
/// in name order.
pub fn model_sha256(path: &Path) -> Result<String, crate::data::DataError> {
	if path.is_file() {
		return crate::data::sha256_file(path);
	}
	let names = model_files(path)?;
	let mut listing = String::new();
	for n in names {
		listing.push_str(&format!("{n} {}\n", crate::data::sha256_file(&path.join(&n))?));
	}
	Ok(hex::encode(Sha256::digest(listing.as_bytes())))
}

/// The files of a Hugging Face model directory that make the model (config, tokenizer and
/// weight files: `*.json`, `*.safetensors`), in name order.
pub fn model_files(dir: &Path) -> Result<Vec<String>, crate::data::DataError> {
	let io = |source| crate::data::DataError::Io { path: dir.into(), source };
	let mut names: Vec<String> = std::fs::read_dir(dir)
		.map_err(io)?
		.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
		.filter(|n| n.ends_with(".safetensors") || n.ends_with(".json"))
		.collect();
	names.sort();
	Ok(names)
}
