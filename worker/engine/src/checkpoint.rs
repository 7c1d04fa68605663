//! Checkpoints and what a miner attests about them.
//!
//! A checkpoint is the complete training state in one canonical byte encoding; its
//! **state hash** is the SHA-256 of those bytes, and the file on disk *is* the encoding,
//! so anyone can hash it. Encoding, all integers and floats little-endian:
//!
//! ```text
//! "MOLTCKPT"  u32 version (2)  [u8;32] the recipe's training identity (Recipe::training_id)
//! u16 c  u8[c] reproducibility class (UTF-8, e.g. "cpu/x86_64-avx512f/k2/v0.1.0")
//! u64 step  u64 data epoch  u64 data position  u64 seed
//! u64 n  f32[n] adapter parameters  f32[n] AdamW m  f32[n] AdamW v
//! ```
//!
//! The class is the backend's that computed the state (`Backend::class`): a run is
//! resumed or replayed only on the same class, so two classes' bits are never mixed in
//! one history, and the state hash itself says which arithmetic produced it.
//! The parameters are in the adapter's canonical layout (see `lora`). Checkpoint `k` is
//! the state after `k · checkpoint_every` steps (checkpoint 0 is the initial state), plus
//! one for the final step if it is not a multiple.
//!
//! The **Merkle root** over the state hashes `h₀ … hₙ` is built with domain-separated
//! SHA-256: leaf `SHA256(0x00 ‖ hᵢ)`, node `SHA256(0x01 ‖ left ‖ right)`, and an odd node
//! at the end of a level carried up unchanged.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::data::Cursor;

const MAGIC: &[u8; 8] = b"MOLTCKPT";
const VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
	#[error("{path}: {source}")]
	Io { path: PathBuf, source: std::io::Error },
	#[error("{path}: not a checkpoint ({reason})")]
	Corrupt { path: PathBuf, reason: String },
	#[error("{path}: belongs to another recipe")]
	OtherRecipe { path: PathBuf },
	#[error("{path}: computed by reproducibility class `{recorded}`, but this worker is `{running}`; its steps cannot be continued or replayed here bit for bit")]
	OtherClass { path: PathBuf, recorded: String, running: String },
	#[error("{path}: hash {found} does not match the recorded {expected}")]
	Tampered { path: PathBuf, expected: String, found: String },
	#[error("{path}: {reason}")]
	Manifest { path: PathBuf, reason: String },
}

/// The complete state of a run between steps.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
	/// The reproducibility class that computed it.
	pub class: String,
	pub training_id: [u8; 32],
	pub step: u64,
	pub cursor: Cursor,
	pub seed: u64,
	pub params: Vec<f32>,
	pub m: Vec<f32>,
	pub v: Vec<f32>,
}

impl State {
	pub fn encode(&self) -> Vec<u8> {
		let n = self.params.len();
		let class = self.class.as_bytes();
		let class_len = u16::try_from(class.len()).expect("a class string is short");
		let mut out = Vec::with_capacity(8 + 4 + 32 + 2 + class.len() + 40 + 12 * n);
		out.extend_from_slice(MAGIC);
		out.extend_from_slice(&VERSION.to_le_bytes());
		out.extend_from_slice(&self.training_id);
		out.extend_from_slice(&class_len.to_le_bytes());
		out.extend_from_slice(class);
		for x in [self.step, self.cursor.epoch, self.cursor.position, self.seed, n as u64] {
			out.extend_from_slice(&x.to_le_bytes());
		}
		for v in [&self.params, &self.m, &self.v] {
			for x in v.iter() {
				out.extend_from_slice(&x.to_le_bytes());
			}
		}
		out
	}

	pub fn decode(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
		let corrupt = |reason: &str| CheckpointError::Corrupt { path: path.into(), reason: reason.into() };
		let mut r = Reader { bytes, at: 0 };
		if r.take(8) != Some(MAGIC.as_slice()) {
			return Err(corrupt("bad magic or too short"));
		}
		match r.u32() {
			Some(VERSION) => {},
			Some(v) => return Err(corrupt(&format!("version {v}; this worker reads version {VERSION}"))),
			None => return Err(corrupt("too short")),
		}
		let training_id: [u8; 32] = r.take(32).and_then(|b| b.try_into().ok()).ok_or_else(|| corrupt("too short"))?;
		let class_len = r.take(2).map(|b| u16::from_le_bytes([b[0], b[1]])).ok_or_else(|| corrupt("too short"))?;
		let class = r
			.take(class_len as usize)
			.and_then(|b| std::str::from_utf8(b).ok())
			.ok_or_else(|| corrupt("class is not UTF-8 or too short"))?
			.to_string();
		let mut fields = [0u64; 5];
		for f in &mut fields {
			*f = r.u64().ok_or_else(|| corrupt("too short"))?;
		}
		let [step, epoch, position, seed, n] = fields;
		let n = usize::try_from(n).map_err(|_| corrupt("size"))?;
		if n.checked_mul(12) != Some(bytes.len() - r.at) {
			return Err(corrupt("length does not match the parameter count"));
		}
		let mut floats = || -> Vec<f32> {
			let b = r.take(4 * n).unwrap_or_default();
			b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
		};
		let (params, m, v) = (floats(), floats(), floats());
		Ok(State { class, training_id, step, cursor: Cursor { epoch, position }, seed, params, m, v })
	}

	pub fn hash(&self) -> [u8; 32] {
		Sha256::digest(self.encode()).into()
	}
}

/// Reads a byte string front to back; `None` once it runs out.
struct Reader<'a> {
	bytes: &'a [u8],
	at: usize,
}

impl<'a> Reader<'a> {
	fn take(&mut self, n: usize) -> Option<&'a [u8]> {
		let end = self.at.checked_add(n)?;
		let out = self.bytes.get(self.at..end)?;
		self.at = end;
		Some(out)
	}

	fn u32(&mut self) -> Option<u32> {
		self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
	}

	fn u64(&mut self) -> Option<u64> {
		self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
	}
}

/// The Merkle root over state hashes (see the module docs).
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
	let mut level: Vec<[u8; 32]> =
		leaves.iter().map(|h| Sha256::new().chain_update([0u8]).chain_update(h).finalize().into()).collect();
	if level.is_empty() {
		return Sha256::digest([]).into();
	}
	while level.len() > 1 {
		level = level
			.chunks(2)
			.map(|p| match p {
				[l, r] => Sha256::new().chain_update([1u8]).chain_update(l).chain_update(r).finalize().into(),
				[odd] => *odd,
				_ => unreachable!("chunks(2)"),
			})
			.collect();
	}
	level[0]
}

/// The run directory's record of its checkpoints: `checkpoints.json`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
	pub checkpoint_every: u64,
	/// The step of each checkpoint, and its state hash (hex).
	pub steps: Vec<u64>,
	pub hashes: Vec<String>,
	/// Over `hashes`; what the miner attests.
	pub merkle_root: String,
}

impl Manifest {
	pub fn path(run: &Path) -> PathBuf {
		run.join("checkpoints.json")
	}

	pub fn checkpoint_path(run: &Path, index: usize) -> PathBuf {
		run.join("checkpoints").join(format!("{index:05}.ckpt"))
	}

	pub fn load(run: &Path) -> Result<Self, CheckpointError> {
		let path = Self::path(run);
		let text =
			std::fs::read_to_string(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
		serde_json::from_str(&text).map_err(|e| CheckpointError::Manifest { path, reason: e.to_string() })
	}

	/// Writes checkpoint `state` as the next entry, file first, then the manifest, each
	/// atomically (temporary file + rename), so a crash leaves the last good pair.
	pub fn append(&mut self, run: &Path, state: &State) -> Result<[u8; 32], CheckpointError> {
		let bytes = state.encode();
		let hash: [u8; 32] = Sha256::digest(&bytes).into();
		let index = self.hashes.len();
		write_atomic(&Self::checkpoint_path(run, index), &bytes)?;
		self.steps.push(state.step);
		self.hashes.push(hex::encode(hash));
		self.merkle_root = hex::encode(merkle_root(&self.leaves()));
		let json = serde_json::to_vec_pretty(self).expect("a manifest serialises");
		write_atomic(&Self::path(run), &json)?;
		Ok(hash)
	}

	pub fn leaves(&self) -> Vec<[u8; 32]> {
		self.hashes.iter().map(|h| hex::decode(h).ok().and_then(|b| b.try_into().ok()).unwrap_or([0; 32])).collect()
	}

	/// Reads checkpoint `index` and checks it against its recorded hash.
	pub fn read_checked(&self, run: &Path, index: usize) -> Result<State, CheckpointError> {
		let path = Self::checkpoint_path(run, index);
		let expected = self.hashes.get(index).ok_or_else(|| CheckpointError::Manifest {
			path: Self::path(run),
			reason: format!("no checkpoint {index} (there are {})", self.hashes.len()),
		})?;
		let bytes = std::fs::read(&path).map_err(|source| CheckpointError::Io { path: path.clone(), source })?;
		let found = hex::encode(Sha256::digest(&bytes));
		if &found != expected {
			return Err(CheckpointError::Tampered { path, expected: expected.clone(), found });
		}
		State::decode(&bytes, &path)
	}
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
	let io = |source| CheckpointError::Io { path: path.into(), source };
	if let Some(dir) = path.parent() {
		std::fs::create_dir_all(dir).map_err(io)?;
	}
	let tmp = path.with_extension("tmp");
	{
		use std::io::Write;
		let mut f = std::fs::File::create(&tmp).map_err(io)?;
		f.write_all(bytes).map_err(io)?;
		f.sync_all().map_err(io)?;
	}
	std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn encoding_round_trips_and_merkle_root_is_pinned() {
		let s = State {
			class: "cpu/test".into(),
			training_id: [7; 32],
			step: 3,
			cursor: Cursor { epoch: 1, position: 2 },
			seed: 9,
			params: vec![1.0, -2.5],
			m: vec![0.1, 0.2],
			v: vec![0.3, 0.4],
		};
		let bytes = s.encode();
		assert_eq!(bytes.len(), 86 + 8 + 24);
		assert_eq!(&bytes[44..54], b"\x08\x00cpu/test", "the class follows the training identity, length first");
		assert_eq!(State::decode(&bytes, Path::new("x")).unwrap(), s);
		assert!(State::decode(&bytes[..bytes.len() - 1], Path::new("x")).is_err());

		let leaf = |b: u8| [b; 32];
		let h = |parts: &[&[u8]]| -> [u8; 32] {
			let mut d = Sha256::new();
			parts.iter().for_each(|p| d.update(p));
			d.finalize().into()
		};
		let (l0, l1, l2) = (h(&[&[0], &leaf(0)]), h(&[&[0], &leaf(1)]), h(&[&[0], &leaf(2)]));
		assert_eq!(merkle_root(&[leaf(0)]), l0);
		assert_eq!(merkle_root(&[leaf(0), leaf(1), leaf(2)]), h(&[&[1], &h(&[&[1], &l0, &l1]), &l2]));
		assert_ne!(merkle_root(&[leaf(1), leaf(0)]), merkle_root(&[leaf(0), leaf(1)]));
	}
}
