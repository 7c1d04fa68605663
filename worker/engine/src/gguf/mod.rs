//! GGUF, llama.cpp's model file format: a reader that dequantises tensors to f32 at load,
//! and a writer (used for GGUF LoRA adapters and for test models).
//!
//! Layout (version 3, little-endian): magic `GGUF`, version `u32`, tensor count `u64`,
//! metadata count `u64`, the metadata key/value pairs, the tensor infos (name, dims with
//! the fastest-varying first, type, offset), then the tensor data, aligned to
//! `general.alignment` (32 by default).

mod quant;

pub use quant::{dequantize, quantize, type_name as quant_type_name, GgmlType};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
	#[error("{path}: cannot read: {source}")]
	Io { path: PathBuf, source: std::io::Error },
	#[error("{path}: not a GGUF file (magic {found:?})")]
	BadMagic { path: PathBuf, found: [u8; 4] },
	#[error("{path}: GGUF version {version} is not supported (2 and 3 are)")]
	UnsupportedVersion { path: PathBuf, version: u32 },
	#[error("{path}: truncated or corrupt at byte {at} while reading {what}")]
	Corrupt { path: PathBuf, at: usize, what: &'static str },
	#[error("{path}: metadata key `{key}` is missing")]
	MissingKey { path: PathBuf, key: String },
	#[error("{path}: metadata key `{key}` has the wrong type (expected {expected})")]
	WrongType { path: PathBuf, key: String, expected: &'static str },
	#[error("{path}: tensor `{tensor}` is missing")]
	MissingTensor { path: PathBuf, tensor: String },
	#[error("{path}: tensor `{tensor}` has type {type_id} ({type_name}), which is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1 are)")]
	UnsupportedTensorType { path: PathBuf, tensor: String, type_id: u32, type_name: &'static str },
	#[error("{path}: tensor `{tensor}` lies outside the file or is not a whole number of blocks")]
	BadTensorData { path: PathBuf, tensor: String },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
	U8(u8),
	I8(i8),
	U16(u16),
	I16(i16),
	U32(u32),
	I32(i32),
	F32(f32),
	Bool(bool),
	Str(String),
	Array(Vec<Value>),
	U64(u64),
	I64(i64),
	F64(f64),
}

impl Value {
	fn type_id(&self) -> u32 {
		match self {
			Value::U8(_) => 0,
			Value::I8(_) => 1,
			Value::U16(_) => 2,
			Value::I16(_) => 3,
			Value::U32(_) => 4,
			Value::I32(_) => 5,
			Value::F32(_) => 6,
			Value::Bool(_) => 7,
			Value::Str(_) => 8,
			Value::Array(_) => 9,
			Value::U64(_) => 10,
			Value::I64(_) => 11,
			Value::F64(_) => 12,
		}
	}

	/// Any integer value that fits a `u64`.
	pub fn as_u64(&self) -> Option<u64> {
		match *self {
			Value::U8(v) => Some(v as u64),
			Value::U16(v) => Some(v as u64),
			Value::U32(v) => Some(v as u64),
			Value::U64(v) => Some(v),
			Value::I8(v) => u64::try_from(v).ok(),
			Value::I16(v) => u64::try_from(v).ok(),
			Value::I32(v) => u64::try_from(v).ok(),
			Value::I64(v) => u64::try_from(v).ok(),
			_ => None,
		}
	}

	pub fn as_f32(&self) -> Option<f32> {
		match *self {
			Value::F32(v) => Some(v),
			Value::F64(v) => Some(v as f32),
			_ => self.as_u64().map(|v| v as f32),
		}
	}

	pub fn as_str(&self) -> Option<&str> {
		match self {
			Value::Str(s) => Some(s),
			_ => None,
		}
	}

	pub fn as_array(&self) -> Option<&[Value]> {
		match self {
			Value::Array(a) => Some(a),
			_ => None,
		}
	}
}

/// Where a tensor is and what it holds.
#[derive(Debug, Clone)]
pub struct TensorInfo {
	pub name: String,
	/// Dimensions, fastest-varying first (GGUF order: a `[rows, cols]` matrix is `[cols, rows]`).
	pub dims: Vec<u64>,
	pub type_id: u32,
	offset: u64,
}

impl TensorInfo {
	/// Elements, or `None` if the dims overflow.
	pub fn numel(&self) -> Option<u64> {
		self.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
	}
}

/// An opened GGUF file (memory-mapped).
pub struct GgufFile {
	path: PathBuf,
	pub metadata: BTreeMap<String, Value>,
	pub tensors: Vec<TensorInfo>,
	map: memmap2::Mmap,
	data_start: usize,
}

struct Cursor<'a> {
	bytes: &'a [u8],
	at: usize,
	path: &'a Path,
}

impl<'a> Cursor<'a> {
	fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], GgufError> {
		let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
		let Some(end) = end else {
			return Err(GgufError::Corrupt { path: self.path.into(), at: self.at, what });
		};
		let s = &self.bytes[self.at..end];
		self.at = end;
		Ok(s)
	}
	fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
		Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
	}
	fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
		Ok(u32::from_le_bytes(self.array(what)?))
	}
	fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
		Ok(u64::from_le_bytes(self.array(what)?))
	}
	fn len(&mut self, what: &'static str) -> Result<usize, GgufError> {
		let n = self.u64(what)?;
		// A length can never exceed the bytes left; this also stops absurd allocations.
		usize::try_from(n).ok().filter(|&n| n <= self.bytes.len() - self.at).ok_or(GgufError::Corrupt {
			path: self.path.into(),
			at: self.at,
			what,
		})
	}
	fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
		let n = self.len(what)?;
		let at = self.at;
		let b = self.take(n, what)?;
		String::from_utf8(b.to_vec()).map_err(|_| GgufError::Corrupt { path: self.path.into(), at, what })
	}
	fn value(&mut self, type_id: u32, depth: u32) -> Result<Value, GgufError> {
		let what = "metadata value";
		Ok(match type_id {
			0 => Value::U8(self.array::<1>(what)?[0]),
			1 => Value::I8(self.array::<1>(what)?[0] as i8),
			2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
			3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
			4 => Value::U32(self.u32(what)?),
			5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
			6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
			7 => Value::Bool(self.array::<1>(what)?[0] != 0),
			8 => Value::Str(self.string(what)?),
			9 if depth == 0 => {
				let item_type = self.u32(what)?;
				let n = self.len(what)?;
				let mut items = Vec::with_capacity(n.min(1 << 20));
				for _ in 0..n {
					items.push(self.value(item_type, depth + 1)?);
				}
				Value::Array(items)
			},
			10 => Value::U64(self.u64(what)?),
			11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
			12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
			_ => return Err(GgufError::Corrupt { path: self.path.into(), at: self.at, what: "metadata type" }),
		})
	}
}

impl GgufFile {
	pub fn open(path: &Path) -> Result<Self, GgufError> {
		let io = |source| GgufError::Io { path: path.into(), source };
		let file = std::fs::File::open(path).map_err(io)?;
		// SAFETY: the file is opened read-only and the map is only read; a file changed
		// underneath us by another process would give wrong values, not unsoundness we rely on.
		let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
		let mut c = Cursor { bytes: &map, at: 0, path };
		let magic: [u8; 4] = c.array("magic")?;
		if &magic != MAGIC {
			return Err(GgufError::BadMagic { path: path.into(), found: magic });
		}
		let version = c.u32("version")?;
		if !(2..=3).contains(&version) {
			return Err(GgufError::UnsupportedVersion { path: path.into(), version });
		}
		let n_tensors = c.len("tensor count")?;
		let n_kv = c.len("metadata count")?;
		let mut metadata = BTreeMap::new();
		for _ in 0..n_kv {
			let key = c.string("metadata key")?;
			let type_id = c.u32("metadata type")?;
			metadata.insert(key, c.value(type_id, 0)?);
		}
		let mut tensors = Vec::with_capacity(n_tensors.min(1 << 16));
		for _ in 0..n_tensors {
			let name = c.string("tensor name")?;
			let n_dims = c.u32("tensor dims")?;
			if n_dims > 4 {
				return Err(GgufError::Corrupt { path: path.into(), at: c.at, what: "tensor dims" });
			}
			let dims = (0..n_dims).map(|_| c.u64("tensor dims")).collect::<Result<Vec<_>, _>>()?;
			let type_id = c.u32("tensor type")?;
			let offset = c.u64("tensor offset")?;
			tensors.push(TensorInfo { name, dims, type_id, offset });
		}
		let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(DEFAULT_ALIGNMENT).max(1);
		let data_start = (c.at as u64).div_ceil(alignment) * alignment;
		let data_start = usize::try_from(data_start).unwrap_or(usize::MAX);
		Ok(GgufFile { path: path.into(), metadata, tensors, map, data_start })
	}

	pub fn path(&self) -> &Path {
		&self.path
	}

	pub fn get(&self, key: &str) -> Result<&Value, GgufError> {
		self.metadata.get(key).ok_or_else(|| GgufError::MissingKey { path: self.path.clone(), key: key.into() })
	}

	pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
		self.get(key)?.as_u64().ok_or_else(|| self.wrong_type(key, "an integer"))
	}

	pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
		self.get(key)?.as_f32().ok_or_else(|| self.wrong_type(key, "a number"))
	}

	pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
		self.get(key)?.as_str().ok_or_else(|| self.wrong_type(key, "a string"))
	}

	/// A string array (tokens, merges).
	pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
		let arr = self.get(key)?.as_array().ok_or_else(|| self.wrong_type(key, "an array"))?;
		arr.iter().map(|v| v.as_str().ok_or_else(|| self.wrong_type(key, "an array of strings"))).collect()
	}

	pub fn get_u64_array(&self, key: &str) -> Result<Vec<u64>, GgufError> {
		let arr = self.get(key)?.as_array().ok_or_else(|| self.wrong_type(key, "an array"))?;
		arr.iter().map(|v| v.as_u64().ok_or_else(|| self.wrong_type(key, "an array of integers"))).collect()
	}

	fn wrong_type(&self, key: &str, expected: &'static str) -> GgufError {
		GgufError::WrongType { path: self.path.clone(), key: key.into(), expected }
	}

	pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
		self.tensors.iter().find(|t| t.name == name)
	}

	/// The tensor `name`, dequantised to f32, with its GGUF dims (fastest-varying first).
	pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<u64>), GgufError> {
		let info = self
			.tensor_info(name)
			.ok_or_else(|| GgufError::MissingTensor { path: self.path.clone(), tensor: name.into() })?;
		let ty = GgmlType::from_id(info.type_id).ok_or_else(|| GgufError::UnsupportedTensorType {
			path: self.path.clone(),
			tensor: name.into(),
			type_id: info.type_id,
			type_name: quant::type_name(info.type_id),
		})?;
		let bad = || GgufError::BadTensorData { path: self.path.clone(), tensor: name.into() };
		let numel = info.numel().and_then(|n| usize::try_from(n).ok()).ok_or_else(bad)?;
		let nbytes = ty.bytes_for(numel).ok_or_else(bad)?;
		let start = usize::try_from(info.offset).ok().and_then(|o| o.checked_add(self.data_start)).ok_or_else(bad)?;
		let bytes = start.checked_add(nbytes).and_then(|end| self.map.get(start..end)).ok_or_else(bad)?;
		Ok((dequantize(ty, bytes, numel), info.dims.clone()))
	}
}

/// Builds a GGUF file in memory order: metadata first, then tensors.
#[derive(Default)]
pub struct GgufWriter {
	metadata: Vec<(String, Value)>,
	tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
	pub fn new() -> Self {
		Self::default()
	}

	pub fn meta(&mut self, key: &str, value: Value) -> &mut Self {
		self.metadata.push((key.into(), value));
		self
	}

	/// Adds a tensor given row-major with `shape` (slowest-varying first, as in PyTorch),
	/// stored as `ty`. GGUF dims are written reversed.
	pub fn tensor(&mut self, name: &str, shape: &[usize], data: &[f32], ty: GgmlType) -> &mut Self {
		assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor {name}: shape does not match data");
		let dims = shape.iter().rev().map(|&d| d as u64).collect();
		self.tensors.push((name.into(), dims, ty, quantize(ty, data)));
		self
	}

	pub fn write(&self, path: &Path) -> std::io::Result<()> {
		let mut out = Vec::new();
		out.extend_from_slice(MAGIC);
		out.extend_from_slice(&3u32.to_le_bytes());
		out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
		out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
		for (key, value) in &self.metadata {
			write_string(&mut out, key);
			out.extend_from_slice(&value.type_id().to_le_bytes());
			write_value(&mut out, value);
		}
		let mut offset = 0u64;
		for (name, dims, ty, bytes) in &self.tensors {
			write_string(&mut out, name);
			out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
			for d in dims {
				out.extend_from_slice(&d.to_le_bytes());
			}
			out.extend_from_slice(&(*ty as u32).to_le_bytes());
			out.extend_from_slice(&offset.to_le_bytes());
			offset = (offset + bytes.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
		}
		for (_, _, _, bytes) in &self.tensors {
			out.resize((out.len() as u64).div_ceil(DEFAULT_ALIGNMENT) as usize * DEFAULT_ALIGNMENT as usize, 0);
			out.extend_from_slice(bytes);
		}
		let mut f = std::fs::File::create(path)?;
		f.write_all(&out)?;
		f.sync_all()
	}
}

fn write_string(out: &mut Vec<u8>, s: &str) {
	out.extend_from_slice(&(s.len() as u64).to_le_bytes());
	out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
	match v {
		Value::U8(x) => out.push(*x),
		Value::I8(x) => out.push(*x as u8),
		Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
		Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
		Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
		Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
		Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
		Value::Bool(x) => out.push(*x as u8),
		Value::Str(s) => write_string(out, s),
		Value::Array(items) => {
			let item_type = items.first().map_or(4, Value::type_id);
			out.extend_from_slice(&item_type.to_le_bytes());
			out.extend_from_slice(&(items.len() as u64).to_le_bytes());
			for it in items {
				write_value(out, it);
			}
		},
		Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
		Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
		Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
	}
}

#[cfg(test)]
mod tests;
