//! Training data: chat JSONL (`{"messages": [{"role", "content"}, ...]}`, the form TRL and
//! hosted fine-tuning APIs use) rendered with the model's chat template, loss on assistant
//! tokens only; plain text, loss everywhere; packing whole conversations into rows.
//!
//! Packing (as TRL's padding-free packing with `position_ids`): conversations are placed
//! whole into rows of `seq_len` tokens, first-fit decreasing (longest first, ties in file
//! order; each into the first row with room, rows in the order they were opened). Each
//! conversation keeps its own positions from 0, so attention stays inside it and RoPE sees
//! it as if alone; its last token predicts nothing (no target across a boundary). The rest
//! of a row is padding, positions from 0 again, no targets. A conversation longer than a
//! row is cut to `seq_len` tokens, then shifted like any other (as TRL truncates before it
//! shifts), and reported (`Packed::truncated`, with whether any target is left).

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
	/// UTF-8 bytes of the text the predicted tokens spell (for bits per byte): for chat,
	/// the assistant turns with their end-of-turn markers.
	pub bytes: usize,
	/// Where it starts in its file (1-based line), for messages.
	pub line: usize,
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
		let mut ex = render_masked(tok, &messages).map_err(|source| DataError::Tokenizer {
			file: path.into(),
			line: line_no,
			source,
		})?;
		ex.line = line_no;
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
	let train: Vec<bool> = offsets.iter().map(|&(s, _)| spans.iter().any(|&(a, b)| a <= s && s < b)).collect();
	let bytes = predicted_bytes(&offsets, &train, text.len());
	Ok(Example { ids, train, bytes, line: 0 })
}

/// Bytes of the text covered by the predicted tokens (all but the first, which nothing
/// predicts), each byte once even where a multi-byte character is split between tokens.
fn predicted_bytes(offsets: &[(usize, usize)], train: &[bool], len: usize) -> usize {
	let mut covered = vec![false; len];
	for (&(s, e), _) in offsets.iter().zip(train).skip(1).filter(|(_, &t)| t) {
		covered[s.min(len)..e.min(len)].iter_mut().for_each(|c| *c = true);
	}
	covered.iter().filter(|&&c| c).count()
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
		let (mut ids, offsets) = tok.encode_with_offsets(doc).map_err(|source| DataError::Tokenizer {
			file: path.into(),
			line: start_line,
			source,
		})?;
		let bytes = predicted_bytes(&offsets, &vec![true; ids.len()], doc.len());
		ids.extend(eos);
		out.push(Example { train: vec![true; ids.len()], ids, bytes, line: start_line });
	}
	if out.is_empty() {
		return Err(DataError::Empty { file: path.into(), what: "text" });
	}
	Ok(out)
}

/// One packed row: inputs, targets (negative: no loss) and each token's position in its
/// own conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
	pub tokens: Vec<u32>,
	pub targets: Vec<i32>,
	pub positions: Vec<u32>,
}

/// Rows and what did not fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
	pub rows: Vec<Row>,
	/// The examples (indices into the input) each row holds, in the row's order.
	pub members: Vec<Vec<usize>>,
	/// The conversations that were cut to the row length, in file order: their line, and
	/// whether any of their predicted tokens is left.
	pub truncated: Vec<(usize, bool)>,
}

/// Packs whole examples into rows of `seq` tokens (see the module docs), padding with `pad`.
pub fn pack(examples: &[Example], seq: usize, pad: u32) -> Packed {
	assert!(seq > 0, "rows need room for a token");
	let len = |e: &Example| e.ids.len().min(seq);
	let mut order: Vec<usize> = (0..examples.len()).filter(|&i| examples[i].ids.len() > 1).collect();
	order.sort_by_key(|&i| (std::cmp::Reverse(len(&examples[i])), i));
	// First fit: each example into the first row with room.
	let mut rows: Vec<(usize, Vec<usize>)> = Vec::new();
	for i in order {
		let n = len(&examples[i]);
		match rows.iter_mut().find(|(used, _)| used + n <= seq) {
			Some((used, members)) => {
				*used += n;
				members.push(i);
			},
			None => rows.push((n, vec![i])),
		}
	}
	let members: Vec<Vec<usize>> = rows.into_iter().map(|(_, m)| m).collect();
	let rows = members
		.iter()
		.map(|members| {
			let mut row = Row {
				tokens: Vec::with_capacity(seq),
				targets: Vec::with_capacity(seq),
				positions: Vec::with_capacity(seq),
			};
			for &i in members {
				let e = &examples[i];
				for j in 0..len(e) {
					row.tokens.push(e.ids[j]);
					let next = j + 1;
					row.targets.push(if next < len(e) && e.train[next] { e.ids[next] as i32 } else { -1 });
					row.positions.push(j as u32);
				}
			}
			let used = row.tokens.len();
			row.tokens.resize(seq, pad);
			row.targets.resize(seq, -1);
			row.positions.extend(0..(seq - used) as u32);
			row
		})
		.collect();
	let truncated =
		examples.iter().filter(|e| e.ids.len() > seq).map(|e| (e.line, e.train[1..seq].iter().any(|&t| t))).collect();
	Packed { rows, members, truncated }
}

/// Where a run is in its data: which epoch and how many rows of it were used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
	pub epoch: u64,
	pub position: u64,
}

/// Packed rows served in a seeded order, reshuffled every epoch.
pub struct Loader<'a> {
	rows: &'a [Row],
	seed: u64,
	order: Vec<usize>,
	pub cursor: Cursor,
}

impl<'a> Loader<'a> {
	pub fn new(rows: &'a [Row], seed: u64, cursor: Cursor) -> Self {
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
		let mut b = Batch {
			tokens: Vec::with_capacity(batch * seq),
			targets: Vec::with_capacity(batch * seq),
			positions: Vec::with_capacity(batch * seq),
			batch,
			seq,
		};
		for _ in 0..batch {
			if self.cursor.position as usize >= self.rows.len() {
				self.cursor = Cursor { epoch: self.cursor.epoch + 1, position: 0 };
				self.shuffle();
			}
			let row = &self.rows[self.order[self.cursor.position as usize]];
			b.tokens.extend_from_slice(&row.tokens);
			b.targets.extend_from_slice(&row.targets);
			b.positions.extend_from_slice(&row.positions);
			self.cursor.position += 1;
		}
		b
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	fn example(n: usize, first: u32, line: usize) -> Example {
		let ids: Vec<u32> = (0..n as u32).map(|i| first + i).collect();
		// The first half is prompt, the rest is the answer.
		let train = (0..n).map(|i| i >= n / 2).collect();
		Example { ids, train, bytes: n, line }
	}

	#[test]
	fn whole_conversations_are_packed_first_fit_decreasing_with_positions_from_zero() {
		let ex = [example(6, 100, 1), example(9, 200, 2), example(4, 300, 3), example(3, 400, 4)];
		let p = pack(&ex, 10, 0);
		// Longest first: 9 opens row 0, 6 opens row 1, 4 joins it, 3 opens row 2 (row 0
		// has one slot left, row 1 none).
		assert_eq!(p.members, vec![vec![1], vec![0, 2], vec![3]]);
		assert!(p.truncated.is_empty());
		let r = &p.rows[1];
		assert_eq!(r.tokens, vec![100, 101, 102, 103, 104, 105, 300, 301, 302, 303]);
		assert_eq!(r.positions, vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3], "positions restart at each conversation");
		// Targets: the next token where it is trained, never across the boundary.
		assert_eq!(r.targets, vec![-1, -1, 103, 104, 105, -1, -1, 302, 303, -1]);
		// Padding: its own positions from 0, no targets.
		let r = &p.rows[2];
		assert_eq!(r.tokens[3..], [0; 7]);
		assert_eq!(r.positions, vec![0, 1, 2, 0, 1, 2, 3, 4, 5, 6]);
		assert!(r.targets[2..].iter().all(|&t| t == -1));
	}

	#[test]
	fn a_conversation_longer_than_a_row_is_cut_and_reported() {
		let ex = [example(4, 10, 7), example(13, 50, 9)];
		let p = pack(&ex, 8, 0);
		assert_eq!(p.truncated, vec![(9, true)]);
		assert_eq!(p.rows[0].tokens, (50..58).collect::<Vec<u32>>());
		// Cut, then shifted: its last kept token predicts nothing, as in TRL.
		assert_eq!(p.rows[0].targets, vec![-1, -1, -1, -1, -1, 56, 57, -1]);
		// Cut before its first predicted token: reported as such.
		let q = pack(&[example(20, 0, 4)], 8, 0);
		assert_eq!(q.truncated, vec![(4, false)]);
		assert_eq!(p.rows[1].positions[..4], [0, 1, 2, 3]);
	}
}
