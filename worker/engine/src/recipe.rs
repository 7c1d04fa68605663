//! The recipe: one content-addressed document that says everything about a training run.
//!
//! A job on chain names its recipe by SHA-256; the recipe names every input (the model's
//! files, the training set, an optional public eval set) by SHA-256, size and URI, and
//! holds every training parameter. It has no local paths: anyone holding the blobs (or
//! able to fetch them) can train, resume or replay it anywhere.
//!
//! # Canonical form
//!
//! A recipe's bytes are canonical JSON, and a recipe whose bytes are not canonical is
//! refused (so one recipe has exactly one hash):
//!
//! - UTF-8, no whitespace outside strings, object keys sorted by their UTF-8 bytes, no
//!   duplicate keys; every field present (defaults written out), except the optional
//!   `data.eval`, which is left out when absent (never `null`);
//! - strings with JSON's minimal escapes (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, other
//!   control characters as `\u00XX` with lower-case hex; everything else literal);
//! - integers in plain decimal; the fractional parameters (`lora.alpha`, `lora.dropout`,
//!   `train.lr`, ...) are IEEE binary32 values written as the shortest plain decimal
//!   (no exponent) that reads back as the same binary32: `0.002`, `0.00000001`, `32`;
//!   zero is `0`, never `-0`. A reader parsing them as f64 and rounding to f32 gets the
//!   trained value exactly. `train.seed` is below 2^53, so every JSON reader (JavaScript's
//!   too) reads it exactly.
//!
//! ```json
//! {"data":{"format":"chat","train":{"sha256":"5dc5…","size":151334,"uri":"http://…/blobs/5dc5…"}},
//!  "lora":{"alpha":32,"dropout":0.05,"rank":16,"targets":["q","k","v","o","gate","up","down"]},
//!  "model":{"files":{"SmolLM2-135M-Instruct.Q4_1.gguf":{"sha256":"b179…","size":…,"uri":"…"}}},
//!  "recipe":"molting/recipe/v1",
//!  "train":{"batch_size":4,"beta1":0.9,…,"seed":42,"seq_len":256,"steps":60,…}}
//! ```
//! (shown wrapped; the real bytes are one line). `lora.targets` are in the engine's order
//! (q k v o gate up down), each once.
//!
//! # The miner's seed
//!
//! The recipe's `train.seed` is the owner's; a miner trains job `j` with
//! [`miner_seed`]`(seed, j, account)`, so two replicas of a job are different runs and one
//! miner's checkpoints do not replay under another's seed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Format;
use crate::spec::{LoraSection, Spec, SpecError, TrainSection};

/// The `recipe` field of every recipe this engine reads.
pub const RECIPE_VERSION: &str = "molting/recipe/v1";

/// A blob: its SHA-256 (lower-case hex), its size in bytes and where to fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRef {
	pub sha256: String,
	pub size: u64,
	pub uri: String,
}

/// The base model: its files by name (one `.gguf`, or a Hugging Face directory's
/// `config.json`, `tokenizer.json`, `tokenizer_config.json`, `*.safetensors`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInputs {
	pub files: BTreeMap<String, BlobRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataInputs {
	pub format: Format,
	pub train: BlobRef,
	#[serde(default, skip_serializing_if = "Option::is_none")]
	pub eval: Option<BlobRef>,
}

/// A training run, fully specified. See the module's documentation for its bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
	/// Always [`RECIPE_VERSION`].
	pub recipe: String,
	pub model: ModelInputs,
	pub data: DataInputs,
	pub lora: LoraSection,
	pub train: TrainSection,
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
	#[error("{what}: not a recipe: {message}")]
	Parse { what: String, message: String },
	#[error("{what}: not in canonical form (byte {offset} differs from the canonical encoding; write it with `molt-worker recipe`)")]
	NotCanonical { what: String, offset: usize },
	#[error("{what}: `{field}` {reason}")]
	Invalid { what: String, field: String, reason: String },
	#[error(transparent)]
	Spec(#[from] SpecError),
}

impl Recipe {
	/// The canonical bytes.
	pub fn to_canonical(&self) -> Vec<u8> {
		let mut lora = self.lora.clone();
		lora.targets = canonical_targets(&lora.targets);
		let value = serde_json::to_value(Recipe { lora, ..self.clone() }).expect("a recipe serialises");
		let mut out = String::new();
		write_canonical(&value, &mut out);
		out.into_bytes()
	}

	/// SHA-256 of the canonical bytes.
	pub fn sha256(&self) -> [u8; 32] {
		Sha256::digest(self.to_canonical()).into()
	}

	/// The training identity: SHA-256 of the canonical form with every `uri` emptied. Two
	/// recipes that differ only in where their blobs are fetched from train the same run,
	/// so checkpoints (and so state hashes and Merkle roots) bind this, not [`Recipe::sha256`].
	pub fn training_id(&self) -> [u8; 32] {
		let mut r = self.clone();
		for b in r.model.files.values_mut() {
			b.uri.clear();
		}
		r.data.train.uri.clear();
		if let Some(e) = r.data.eval.as_mut() {
			e.uri.clear();
		}
		Sha256::digest(r.to_canonical()).into()
	}

	/// Reads a recipe from its bytes; refuses anything that is not a valid recipe in
	/// canonical form. `what` names the source in errors.
	pub fn parse(bytes: &[u8], what: &str) -> Result<Recipe, RecipeError> {
		let recipe: Recipe = serde_json::from_slice(bytes)
			.map_err(|e| RecipeError::Parse { what: what.into(), message: e.to_string() })?;
		let canonical = recipe.to_canonical();
		if canonical != bytes {
			let offset = canonical.iter().zip(bytes).take_while(|(a, b)| a == b).count();
			return Err(RecipeError::NotCanonical { what: what.into(), offset });
		}
		recipe.validate(what)?;
		Ok(recipe)
	}

	pub fn validate(&self, what: &str) -> Result<(), RecipeError> {
		let bad = |field: &str, reason: String| {
			Err(RecipeError::Invalid { what: what.into(), field: field.into(), reason })
		};
		if self.recipe != RECIPE_VERSION {
			return bad("recipe", format!("is `{}`; this worker reads `{RECIPE_VERSION}`", self.recipe));
		}
		if self.model.files.is_empty() {
			return bad("model.files", "is empty".into());
		}
		for (name, blob) in &self.model.files {
			let plain = !name.is_empty()
				&& name != "."
				&& name != ".."
				&& !name.contains(['/', '\\', '\0'])
				&& !name.starts_with('.');
			if !plain {
				return bad("model.files", format!("names `{name}`, which is not a plain file name"));
			}
			check_blob(what, &format!("model.files.{name}"), blob)?;
		}
		check_blob(what, "data.train", &self.data.train)?;
		if let Some(e) = &self.data.eval {
			check_blob(what, "data.eval", e)?;
		}
		crate::spec::validate_sections(&self.lora, &self.train, Path::new(what))?;
		if self.train.seed >= 1 << 53 {
			return bad("train.seed", "must be below 2^53 (so every JSON reader reads it exactly)".into());
		}
		Ok(())
	}

	pub fn lora_config(&self) -> crate::lora::LoraConfig {
		crate::spec::lora_config(&self.lora)
	}

	/// Every input, with what it is for (for fetching and for error messages).
	pub fn inputs(&self) -> Vec<(String, &BlobRef)> {
		let mut out: Vec<(String, &BlobRef)> =
			self.model.files.iter().map(|(n, b)| (format!("model file {n}"), b)).collect();
		out.push(("training set".into(), &self.data.train));
		if let Some(e) = &self.data.eval {
			out.push(("eval set".into(), e));
		}
		out
	}
}

fn check_blob(what: &str, field: &str, blob: &BlobRef) -> Result<(), RecipeError> {
	let is_hash = blob.sha256.len() == 64 && blob.sha256.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
	let reason = if !is_hash {
		"has a sha256 that is not 64 lower-case hex digits"
	} else if blob.uri.is_empty() {
		"has an empty uri"
	} else {
		return Ok(());
	};
	Err(RecipeError::Invalid { what: what.into(), field: field.into(), reason: reason.into() })
}

/// The targets in the engine's order, each once (their order does not change training).
pub(crate) fn canonical_targets(targets: &[String]) -> Vec<String> {
	let mut parsed: Vec<crate::model::Target> =
		targets.iter().filter_map(|t| crate::model::Target::parse(t)).collect();
	parsed.sort();
	parsed.dedup();
	let mut out: Vec<String> = parsed.iter().map(|t| t.name().to_string()).collect();
	// Unknown names are kept (at the end, as given) so that validation can name them.
	out.extend(targets.iter().filter(|t| crate::model::Target::parse(t).is_none()).cloned());
	out
}

/// `value` as canonical JSON (the rules of the module's documentation; every fractional
/// number is written as an f32). Used for every hashed JSON document the protocol makes.
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
	let mut out = String::new();
	write_canonical(value, &mut out);
	out.into_bytes()
}

fn write_canonical(v: &serde_json::Value, out: &mut String) {
	use serde_json::Value;
	match v {
		Value::Null => out.push_str("null"),
		Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
		Value::Number(n) => {
			if let Some(i) = n.as_u64() {
				out.push_str(&i.to_string());
			} else if let Some(i) = n.as_i64() {
				out.push_str(&i.to_string());
			} else {
				// Every fractional number of a recipe is an f32 (see the module docs); -0 is 0
				// (one value, one spelling), and a non-finite number, which validation refuses,
				// is not JSON: it is written as null, which no recipe field reads.
				let f = n.as_f64().unwrap_or(f64::NAN) as f32;
				if !f.is_finite() {
					out.push_str("null");
				} else if f == 0.0 {
					out.push('0');
				} else {
					out.push_str(&format!("{f}"));
				}
			}
		},
		Value::String(s) => write_string(s, out),
		Value::Array(items) => {
			out.push('[');
			for (i, item) in items.iter().enumerate() {
				if i > 0 {
					out.push(',');
				}
				write_canonical(item, out);
			}
			out.push(']');
		},
		Value::Object(map) => {
			// Sorted here whatever order the map keeps (serde_json's `preserve_order` may be
			// on in some builds).
			let mut entries: Vec<(&String, &Value)> = map.iter().collect();
			entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
			out.push('{');
			for (i, (k, val)) in entries.into_iter().enumerate() {
				if i > 0 {
					out.push(',');
				}
				write_string(k, out);
				out.push(':');
				write_canonical(val, out);
			}
			out.push('}');
		},
	}
}

fn write_string(s: &str, out: &mut String) {
	out.push('"');
	for c in s.chars() {
		match c {
			'"' => out.push_str("\\\""),
			'\\' => out.push_str("\\\\"),
			'\n' => out.push_str("\\n"),
			'\r' => out.push_str("\\r"),
			'\t' => out.push_str("\\t"),
			'\u{8}' => out.push_str("\\b"),
			'\u{c}' => out.push_str("\\f"),
			c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
			c => out.push(c),
		}
	}
	out.push('"');
}

/// The seed miner `account` trains job `job_id` with: the first 8 bytes (little endian)
/// of `SHA-256("molting/miner-seed/v1" ‖ seed as u64 LE ‖ job_id as u64 LE ‖ account)`.
pub fn miner_seed(recipe_seed: u64, job_id: u64, account: &[u8; 32]) -> u64 {
	let mut h = Sha256::new();
	h.update(b"molting/miner-seed/v1");
	h.update(recipe_seed.to_le_bytes());
	h.update(job_id.to_le_bytes());
	h.update(account);
	let d = h.finalize();
	u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Where a recipe's inputs come from: a local file holding exactly a blob's bytes.
///
/// The engine reads only local files; fetching from the network (and caching) is the blob
/// store's business (`molting-store`), which implements this trait. Every file returned is
/// hashed again by the engine as it is read.
pub trait Inputs {
	/// A local file with `blob`'s bytes; `what` says what it is for, for errors.
	fn file(&self, what: &str, blob: &BlobRef) -> Result<PathBuf, String>;
	/// A directory the engine may write in, to give a model's files their names.
	fn scratch_dir(&self) -> PathBuf;
}

/// The inputs of a recipe on this machine only: a content-addressed cache directory
/// (`<dir>/sha256/<hex>`, the blob store's layout) and `file://` URIs.
pub struct LocalInputs {
	pub cache: PathBuf,
}

impl Inputs for LocalInputs {
	fn file(&self, what: &str, blob: &BlobRef) -> Result<PathBuf, String> {
		let cached = self.cache.join("sha256").join(&blob.sha256);
		if cached.is_file() {
			return Ok(cached);
		}
		match blob.uri.strip_prefix("file://") {
			Some(path) => Ok(PathBuf::from(path)),
			None => Err(format!(
				"{what} ({}) is not in the cache {} and `{}` is not a file:// URI (fetching is the miner's, \
				 `molt-worker fetch-inputs`)",
				blob.sha256,
				self.cache.display(),
				blob.uri
			)),
		}
	}

	fn scratch_dir(&self) -> PathBuf {
		self.cache.join("models")
	}
}

/// The blob cache: `$MOLTING_CACHE`, default `~/.cache/molting/blobs`.
pub fn cache_dir() -> PathBuf {
	if let Some(d) = std::env::var_os("MOLTING_CACHE") {
		return d.into();
	}
	let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
	Path::new(&home).join(".cache/molting/blobs")
}

/// A blob reference to a local file: its hash and size, `file://` + its absolute path.
pub fn local_blob(path: &Path) -> Result<BlobRef, crate::data::DataError> {
	let sha256 = crate::data::sha256_file(path)?;
	let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
	let size = std::fs::metadata(path).map_err(|source| crate::data::DataError::Io { path: path.into(), source })?.len();
	Ok(BlobRef { sha256, size, uri: format!("file://{}", abs.display()) })
}

impl Spec {
	/// The recipe this spec writes: its inputs as local blobs (`file://` URIs; `job post`
	/// replaces them with the store's), after checking them against the spec's hashes.
	pub fn to_recipe(&self, spec_path: &Path) -> Result<Recipe, RecipeError> {
		let base = spec_path.parent().map(Path::to_path_buf).unwrap_or_default();
		let what = spec_path.display().to_string();
		let io = |e: crate::data::DataError| RecipeError::Parse { what: what.clone(), message: e.to_string() };
		let model_path = crate::spec::resolve(&base, &self.model.path);
		let found = crate::spec::model_sha256(&model_path).map_err(io)?;
		if !found.eq_ignore_ascii_case(&self.model.sha256) {
			return Err(RecipeError::Invalid {
				what,
				field: "model.sha256".into(),
				reason: format!("is {}, but {} hashes to {found}", self.model.sha256, model_path.display()),
			});
		}
		let mut files = BTreeMap::new();
		if model_path.is_file() {
			let name = model_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
			files.insert(name, local_blob(&model_path).map_err(io)?);
		} else {
			for name in crate::spec::model_files(&model_path).map_err(io)? {
				files.insert(name.clone(), local_blob(&model_path.join(&name)).map_err(io)?);
			}
		}
		let data_blob = |file: &str, expected: &str, field: &str| -> Result<BlobRef, RecipeError> {
			let path = crate::spec::resolve(&base, file);
			let blob = local_blob(&path).map_err(io)?;
			if !blob.sha256.eq_ignore_ascii_case(expected) {
				return Err(RecipeError::Invalid {
					what: what.clone(),
					field: field.into(),
					reason: format!("is {expected}, but {} hashes to {}", path.display(), blob.sha256),
				});
			}
			Ok(blob)
		};
		let train = data_blob(&self.data.train, &self.data.train_sha256, "data.train_sha256")?;
		let eval = match (&self.data.eval, &self.data.eval_sha256) {
			(Some(f), Some(h)) => Some(data_blob(f, h, "data.eval_sha256")?),
			_ => None,
		};
		let mut lora = self.lora.clone();
		lora.targets = canonical_targets(&lora.targets);
		let recipe = Recipe {
			recipe: RECIPE_VERSION.into(),
			model: ModelInputs { files },
			data: DataInputs { format: self.data.format, train, eval },
			lora,
			train: self.train.clone(),
		};
		recipe.validate(&what)?;
		Ok(recipe)
	}
}
