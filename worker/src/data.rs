//! Training data: chat JSONL (`{"messages": [{"role", "content"}, ...]}`, the form TRL and
//! hosted fine-tuning APIs use) rendered with the model's chat template, loss on assistant
//! tokens only; plain text, loss everywhere; packing into fixed-length rows.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::engine::Batch;
use crate::rng::Rng;
use crate::tokenizer::{ChatTokenizer, Message, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
	#[error("{path}: {source}")]
	Io { path: PathBuf, source: std::io::Error },
	#[error("{file}:{line}: {reason}")]
	MalformedLine { file: PathBuf, line: usize, reason: String },
	#[error("{file}: SHA-256 is {found}, but the spec says {expected}")]
	HashMismatch { file: PathBuf, expected: String, found: String },
	#[error("{file}: no {what} in it")]
	Empty { file: PathBuf, what: &'static str },
	#[error("{file}:{line}: {source}")]
	Tokenizer { file: PathBuf, line: usize, source: TokenizerError },
	#[error("{file}: example {example}: token {token} is outside the model's vocabulary of {vocab}")]
	TokenOutOfVocab { file: PathBuf, example: usize, token: u32, vocab: usize },
}

/// How a data file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
	/// JSONL conversations; loss on assistant turns (including their end-of-turn token).
	Chat,
	/// Plain text; documents separated by blank lines, each followed by EOS; loss everywhere.
	Text,
}

/// One tokenized example: `train[i]` says whether token `i` is predicted (in the loss).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
	pub ids: Vec<u32>,
	pub train: Vec<bool>,
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, DataError> {
	let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.into(), source })?;
	Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Reads `path` after checking its SHA-256 against `expected` (the spec's).
pub fn read_checked(path: &Path, expected: &str) -> Result<String, DataError> {
	let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.into(), source })?;
	let found = hex::encode(Sha256::digest(&bytes));
	if !found.eq_ignore_ascii_case(expected) {
		return Err(DataError::HashMismatch { file: path.into(), expected: expected.into(), found });
	}
	String::from_utf8(bytes).map_err(|e| DataError::MalformedLine {
		file: path.into(),
		line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count(),
		reason: "not valid UTF-8".into(),
	})
}

/// Loads a data file (already checked) into examples.
pub fn load(
	path: &Path,
	text: &str,
	format: Format,
	tok: &ChatTokenizer,
	vocab: usize,
) -> Result<Vec<Example>, DataError> {
	let examples = match format {
		Format::Chat => load_chat(path, text, tok)?,
		Format::Text => load_text(path, text, tok)?,
	};
	for (i, e) in examples.iter().enumerate() {
		if let Some(&token) = e.ids.iter().find(|&&t| t as usize >= vocab) {
			return Err(DataError::TokenOutOfVocab { file: path.into(), example: i + 1, token, vocab });
		}
	}
	Ok(examples)
}

fn load_chat(path: &Path, text: &str, tok: &ChatTokenizer) -> Result<Vec<Example>, DataError> {
	let mut out = Vec::new();
	for (i, line) in text.lines().enumerate() {
		let line_no = i + 1;
		if line.trim().is_empty() {
			continue;
		}
		let bad = |reason: String| DataError::MalformedLine { file: path.into(), line: line_no, reason };
		let messages = parse_conversation(line).map_err(bad)?;
		let ex = render_masked(tok, &messages).map_err(|source| DataError::Tokenizer {
			file: path.into(),
			line: line_no,
			source,
		})?;
		out.push(ex);
	}
	if out.is_empty() {
		return Err(DataError::Empty { file: path.into(), what: "conversations" });
	}
	Ok(out)
}

/// Parses one JSONL line and checks the conversation's shape.
pub fn parse_conversation(line: &str) -> Result<Vec<Message>, String> {
	#[derive(serde::Deserialize)]
	#[serde(deny_unknown_fields)]
	struct Line {
		messages: Vec<Message>,
	}
	let parsed: Line = serde_json::from_str(line).map_err(|e| format!("not a {{\"messages\": [...]}} object: {e}"))?;
	let msgs = parsed.messages;
	for (i, m) in msgs.iter().enumerate() {
		match m.role.as_str() {
			"system" if i == 0 => {},
			"system" => return Err(format!("message {}: a system message may only come first", i + 1)),
			"user" | "assistant" => {},
			other => return Err(format!("message {}: unknown role `{other}` (system, user, assistant)", i + 1)),
		}
	}
	if !msgs.iter().any(|m| m.role == "assistant") {
		return Err("no assistant message, so nothing to learn".into());
	}
	Ok(msgs)
}

/// Renders a conversation and marks its assistant tokens. Each assistant turn is the text
/// between the conversation rendered up to it with the generation prompt and rendered
/// through it: exactly what the model must produce after "assistant" (its end-of-turn
/// marker included).
pub fn render_masked(tok: &ChatTokenizer, messages: &[Message]) -> Result<Example, TokenizerError> {
	let text = tok.render_chat(messages, false)?;
	let mut spans = Vec::new();
	for (i, m) in messages.iter().enumerate() {
		if m.role != "assistant" {
			continue;
		}
		let before = tok.render_chat(&messages[..i], true)?;
		let through = tok.render_chat(&messages[..=i], false)?;
		if !through.starts_with(&before) || !text.starts_with(&through) {
			return Err(TokenizerError::Template(
				"the chat template does not render conversations prefix by prefix, so assistant turns cannot be located".into(),
			));
		}
		spans.push((before.len(), through.len()));
	}
	let (ids, offsets) = tok.encode_with_offsets(&text)?;
	let train = offsets.iter().map(|&(s, _)| spans.iter().any(|&(a, b)| a <= s && s < b)).collect();
	Ok(Example { ids, train })
}

fn load_text(path: &Path, text: &str, tok: &ChatTokenizer) -> Result<Vec<Example>, DataError> {
	let eos = tok.token_to_id(tok.eos_token());
	let mut out = Vec::new();
	let mut line_no = 1;
	for doc in text.split("\n\n") {
		let start_line = line_no;
		line_no += doc.matches('\n').count() + 2;
		if doc.trim().is_empty() {
			continue;
		}
		let mut ids =
			tok.encode(doc).map_err(|source| DataError::Tokenizer { file: path.into(), line: start_line, source })?;
		ids.extend(eos);
		out.push(Example { train: vec![true; ids.len()], ids });
	}
	if out.is_empty() {
		return Err(DataError::Empty { file: path.into(), what: "text" });
	}
	Ok(out)
}

/// Examples packed end to end into rows of `seq` inputs (the stream is cut every `seq + 1`
/// tokens; each row's targets are its inputs shifted by one). The last row is padded with
/// `pad` and no loss. Attention is causal over the whole row, as TRL's packing does.
pub fn pack(examples: &[Example], seq: usize, pad: u32) -> Vec<(Vec<u32>, Vec<i32>)> {
	let ids: Vec<u32> = examples.iter().flat_map(|e| e.ids.iter().copied()).collect();
	let train: Vec<bool> = examples.iter().flat_map(|e| e.train.iter().copied()).collect();
	ids.chunks(seq + 1)
		.zip(train.chunks(seq + 1))
		.filter(|(c, _)| c.len() > 1)
		.map(|(c, t)| {
			let mut tokens: Vec<u32> = c[..c.len() - 1].to_vec();
			let mut targets: Vec<i32> = (1..c.len()).map(|i| if t[i] { c[i] as i32 } else { -1 }).collect();
			tokens.resize(seq, pad);
			targets.resize(seq, -1);
			(tokens, targets)
		})
		.collect()
}

/// Where a run is in its data: which epoch and how many rows of it were used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
	pub epoch: u64,
	pub position: u64,
}

/// Packed rows served in a seeded order, reshuffled every epoch.
pub struct Loader<'a> {
	rows: &'a [(Vec<u32>, Vec<i32>)],
	seed: u64,
	order: Vec<usize>,
	pub cursor: Cursor,
}

impl<'a> Loader<'a> {
	pub fn new(rows: &'a [(Vec<u32>, Vec<i32>)], seed: u64, cursor: Cursor) -> Self {
		let mut l = Loader { rows, seed, order: Vec::new(), cursor };
		l.shuffle();
		l
	}

	pub fn num_rows(&self) -> usize {
		self.rows.len()
	}

	fn shuffle(&mut self) {
		self.order = (0..self.rows.len()).collect();
		Rng::new(crate::rng::stream_key(self.seed, &[0xda7a, self.cursor.epoch])).shuffle(&mut self.order);
	}

	/// The next `batch` rows as one batch (wrapping into the next epoch when needed).
	pub fn next_batch(&mut self, batch: usize, seq: usize) -> Batch {
		let mut tokens = Vec::with_capacity(batch * seq);
		let mut targets = Vec::with_capacity(batch * seq);
		for _ in 0..batch {
			if self.cursor.position as usize >= self.rows.len() {
				self.cursor = Cursor { epoch: self.cursor.epoch + 1, position: 0 };
				self.shuffle();
			}
			let (t, g) = &self.rows[self.order[self.cursor.position as usize]];
			tokens.extend_from_slice(t);
			targets.extend_from_slice(g);
			self.cursor.position += 1;
		}
		Batch { tokens, targets, batch, seq }
	}
}
