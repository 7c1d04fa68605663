//! Tokenizer and chat template of a model: Hugging Face's `tokenizers` for the text, and
//! the model's own Jinja chat template rendered by `minijinja` (as Hugging Face's Rust
//! tooling does). From a Hugging Face directory the files are used as they are; from GGUF
//! an equivalent `tokenizer.json` is built from the metadata.

use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use crate::gguf::{GgufError, GgufFile};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
	#[error("{path}: {source}")]
	Io { path: PathBuf, source: std::io::Error },
	#[error(transparent)]
	Gguf(#[from] GgufError),
	#[error("{source_name}: tokenizer: {reason}")]
	Build { source_name: String, reason: String },
	#[error("{source_name}: tokenizer.ggml.model `{model}` is not supported from GGUF (byte-level BPE `gpt2` is); use the Hugging Face directory")]
	UnsupportedModel { source_name: String, model: String },
	#[error("{source_name}: pre-tokenizer `{pre}` (tokenizer.ggml.pre) is not known; known: smollm, gpt2, default, llama-bpe, llama3, qwen2")]
	UnsupportedPreTokenizer { source_name: String, pre: String },
	#[error("{source_name}: the model has no chat template")]
	NoChatTemplate { source_name: String },
	#[error("chat template: {0}")]
	Template(String),
	#[error("tokenizing: {0}")]
	Encode(String),
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
	pub role: String,
	pub content: String,
}

/// A model's tokenizer and chat template.
pub struct ChatTokenizer {
	tokenizer: tokenizers::Tokenizer,
	template: Option<String>,
	bos_token: String,
	eos_token: String,
	/// Tokens that end an assistant turn (EOS and the template's end-of-turn marker).
	pub stop_ids: Vec<u32>,
	source_name: String,
}

// GPT-2's pre-tokenizer split, and the Llama 3 / Qwen2 variants (digits in threes / singly).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
	r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Json {
	json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

impl ChatTokenizer {
	/// From a Hugging Face directory: `tokenizer.json` and `tokenizer_config.json`.
	pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
		let tok_path = dir.join("tokenizer.json");
		let source_name = tok_path.display().to_string();
		let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
			.map_err(|e| TokenizerError::Build { source_name: source_name.clone(), reason: e.to_string() })?;
		let cfg_path = dir.join("tokenizer_config.json");
		let cfg: Json = match std::fs::read_to_string(&cfg_path) {
			Ok(text) => serde_json::from_str(&text).map_err(|e| TokenizerError::Build {
				source_name: cfg_path.display().to_string(),
				reason: e.to_string(),
			})?,
			Err(e) if e.kind() == std::io::ErrorKind::NotFound => Json::Null,
			Err(source) => return Err(TokenizerError::Io { path: cfg_path, source }),
		};
		// Special tokens are either strings or `{"content": ...}` objects.
		let token = |k: &str| -> String {
			match &cfg[k] {
				Json::String(s) => s.clone(),
				Json::Object(o) => o.get("content").and_then(Json::as_str).unwrap_or_default().to_string(),
				_ => String::new(),
			}
		};
		let template = match &cfg["chat_template"] {
			Json::String(s) => Some(s.clone()),
			// A list of named templates: the default one.
			Json::Array(list) => {
				list.iter().find(|t| t["name"] == "default").and_then(|t| t["template"].as_str()).map(String::from)
			},
			_ => None,
		};
		Ok(Self::assemble(tokenizer, template, token("bos_token"), token("eos_token"), source_name))
	}

	/// From GGUF metadata: tokens, merges and token types, the pre-tokenizer that
	/// `tokenizer.ggml.pre` names, and `tokenizer.chat_template`.
	pub fn from_gguf(g: &GgufFile) -> Result<Self, TokenizerError> {
		let source_name = g.path().display().to_string();
		let model = g.get_str("tokenizer.ggml.model")?;
		if model != "gpt2" {
			return Err(TokenizerError::UnsupportedModel { source_name, model: model.into() });
		}
		let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default");
		let pre_tokenizer = match pre {
			"smollm" => json!({"type": "Sequence", "pretokenizers": [
				{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
			"gpt2" | "default" => byte_level(true),
			"llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
				{"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
				byte_level(false)]}),
			"qwen2" => json!({"type": "Sequence", "pretokenizers": [
				{"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
				byte_level(false)]}),
			other => return Err(TokenizerError::UnsupportedPreTokenizer { source_name, pre: other.into() }),
		};
		let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
		let types = g.get_u64_array("tokenizer.ggml.token_type").unwrap_or_default();
		let merges = g.get_str_array("tokenizer.ggml.merges")?;
		let vocab: serde_json::Map<String, Json> =
			tokens.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
		// Control (3) and user-defined (4) tokens are matched whole, before the BPE.
		let added: Vec<Json> = tokens
			.iter()
			.enumerate()
			.filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
			.map(|(i, t)| {
				json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
					"normalized": false, "special": types.get(i) == Some(&3)})
			})
			.collect();
		let spec = json!({
			"version": "1.0",
			"truncation": null,
			"padding": null,
			"added_tokens": added,
			"normalizer": null,
			"pre_tokenizer": pre_tokenizer,
			"post_processor": null,
			"decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
			"model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
				"end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
				"vocab": vocab, "merges": merges},
		});
		let tokenizer: tokenizers::Tokenizer = serde_json::from_value(spec)
			.map_err(|e| TokenizerError::Build { source_name: source_name.clone(), reason: e.to_string() })?;
		let name_of = |key: &str| {
			g.get_u64(key).ok().and_then(|id| tokens.get(id as usize)).map(|s| s.to_string()).unwrap_or_default()
		};
		let template = g.get_str("tokenizer.chat_template").ok().map(String::from);
		Ok(Self::assemble(
			tokenizer,
			template,
			name_of("tokenizer.ggml.bos_token_id"),
			name_of("tokenizer.ggml.eos_token_id"),
			source_name,
		))
	}

	fn assemble(
		tokenizer: tokenizers::Tokenizer,
		template: Option<String>,
		bos: String,
		eos: String,
		source_name: String,
	) -> Self {
		let mut stop_ids: Vec<u32> = [eos.as_str(), "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>"]
			.iter()
			.filter_map(|t| tokenizer.token_to_id(t))
			.collect();
		stop_ids.sort_unstable();
		stop_ids.dedup();
		ChatTokenizer { tokenizer, template, bos_token: bos, eos_token: eos, stop_ids, source_name }
	}

	pub fn vocab_size(&self) -> usize {
		self.tokenizer.get_vocab_size(true)
	}

	pub fn eos_token(&self) -> &str {
		&self.eos_token
	}

	pub fn token_to_id(&self, token: &str) -> Option<u32> {
		self.tokenizer.token_to_id(token)
	}

	/// Token ids of `text`, special tokens recognised, nothing added.
	pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
		Ok(self.encode_with_offsets(text)?.0)
	}

	/// Token ids and each token's byte span in `text`.
	pub fn encode_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Vec<(usize, usize)>), TokenizerError> {
		let enc = self.tokenizer.encode(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
		Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
	}

	pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
		self.tokenizer.decode(ids, true).map_err(|e| TokenizerError::Encode(e.to_string()))
	}

	/// Renders `messages` with the model's chat template (as `apply_chat_template` does).
	pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TokenizerError> {
		let template = self
			.template
			.as_deref()
			.ok_or_else(|| TokenizerError::NoChatTemplate { source_name: self.source_name.clone() })?;
		let mut env = minijinja::Environment::new();
		// Hugging Face renders with these Jinja settings.
		env.set_trim_blocks(true);
		env.set_lstrip_blocks(true);
		env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
		env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
			Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
		});
		env.add_template("chat", template).map_err(|e| TokenizerError::Template(e.to_string()))?;
		let ctx = minijinja::context! {
			messages => messages,
			add_generation_prompt => add_generation_prompt,
			bos_token => self.bos_token,
			eos_token => self.eos_token,
		};
		env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| TokenizerError::Template(e.to_string()))
	}
}
