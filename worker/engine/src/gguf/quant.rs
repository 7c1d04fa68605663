//! ggml tensor types: block layouts, dequantisation to f32, and the reference quantisers
//! (llama.cpp's `quantize_row_*_ref`) used by the writer and the tests.

use half::{bf16, f16};

const QK: usize = 32; // elements per block of every quantised type here

/// The ggml tensor types this worker reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum GgmlType {
	F32 = 0,
	F16 = 1,
	Q4_0 = 2,
	Q4_1 = 3,
	Q8_0 = 8,
	BF16 = 30,
}

impl GgmlType {
	pub fn from_id(id: u32) -> Option<Self> {
		Some(match id {
			0 => Self::F32,
			1 => Self::F16,
			2 => Self::Q4_0,
			3 => Self::Q4_1,
			8 => Self::Q8_0,
			30 => Self::BF16,
			_ => return None,
		})
	}

	/// Bytes that `numel` elements take, or `None` if they are not whole blocks.
	pub fn bytes_for(self, numel: usize) -> Option<usize> {
		let (block, bytes) = match self {
			Self::F32 => (1, 4),
			Self::F16 | Self::BF16 => (1, 2),
			Self::Q4_0 => (QK, 2 + QK / 2),
			Self::Q4_1 => (QK, 4 + QK / 2),
			Self::Q8_0 => (QK, 2 + QK),
		};
		if numel % block != 0 {
			return None;
		}
		(numel / block).checked_mul(bytes)
	}
}

/// A name for any ggml type id, for error messages.
pub fn type_name(id: u32) -> &'static str {
	match id {
		0 => "F32",
		1 => "F16",
		2 => "Q4_0",
		3 => "Q4_1",
		6 => "Q5_0",
		7 => "Q5_1",
		8 => "Q8_0",
		9 => "Q8_1",
		10 => "Q2_K",
		11 => "Q3_K",
		12 => "Q4_K",
		13 => "Q5_K",
		14 => "Q6_K",
		15 => "Q8_K",
		16..=23 => "IQ (importance) quant",
		24 => "I8",
		25 => "I16",
		26 => "I32",
		27 => "I64",
		28 => "F64",
		29 => "IQ1_M",
		30 => "BF16",
		_ => "unknown",
	}
}

fn f16_at(b: &[u8], i: usize) -> f32 {
	f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `bytes` (exactly `ty.bytes_for(numel)` long) to f32.
pub fn dequantize(ty: GgmlType, bytes: &[u8], numel: usize) -> Vec<f32> {
	let mut out = Vec::with_capacity(numel);
	match ty {
		GgmlType::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))),
		GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())),
		GgmlType::BF16 => out.extend(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
		GgmlType::Q8_0 => {
			for blk in bytes.chunks_exact(2 + QK) {
				let d = f16_at(blk, 0);
				out.extend(blk[2..].iter().map(|&q| q as i8 as f32 * d));
			}
		},
		GgmlType::Q4_0 => {
			// Low nibbles are elements 0..16 of the block, high nibbles 16..32.
			for blk in bytes.chunks_exact(2 + QK / 2) {
				let d = f16_at(blk, 0);
				let qs = &blk[2..];
				out.extend(qs.iter().map(|&q| ((q & 0x0f) as i32 - 8) as f32 * d));
				out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
			}
		},
		GgmlType::Q4_1 => {
			for blk in bytes.chunks_exact(4 + QK / 2) {
				let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
				let qs = &blk[4..];
				out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
				out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
			}
		},
	}
	debug_assert_eq!(out.len(), numel);
	out
}

/// Quantises `data` (a whole number of blocks for the block types) the way llama.cpp's
/// reference quantisers do.
pub fn quantize(ty: GgmlType, data: &[f32]) -> Vec<u8> {
	let mut out = Vec::with_capacity(ty.bytes_for(data.len()).expect("whole blocks"));
	match ty {
		GgmlType::F32 => data.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
		GgmlType::F16 => data.iter().for_each(|x| out.extend_from_slice(&f16::from_f32(*x).to_le_bytes())),
		GgmlType::BF16 => data.iter().for_each(|x| out.extend_from_slice(&bf16::from_f32(*x).to_le_bytes())),
		GgmlType::Q8_0 => {
			for blk in data.chunks_exact(QK) {
				let amax = blk.iter().fold(0f32, |a, x| a.max(x.abs()));
				let d = amax / 127.0;
				let id = if d != 0.0 { 1.0 / d } else { 0.0 };
				out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
				out.extend(blk.iter().map(|x| (x * id).round() as i8 as u8));
			}
		},
		GgmlType::Q4_0 => {
			for blk in data.chunks_exact(QK) {
				// The value of largest magnitude, with its sign, maps to -8.
				let max = blk.iter().fold(0f32, |m, &x| if x.abs() > m.abs() { x } else { m });
				let d = max / -8.0;
				let id = if d != 0.0 { 1.0 / d } else { 0.0 };
				out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
				let q = |x: f32| ((x * id + 8.5) as u8).min(15);
				out.extend((0..QK / 2).map(|j| q(blk[j]) | (q(blk[j + QK / 2]) << 4)));
			}
		},
		GgmlType::Q4_1 => {
			for blk in data.chunks_exact(QK) {
				let min = blk.iter().fold(f32::INFINITY, |m, &x| m.min(x));
				let max = blk.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
				let d = (max - min) / 15.0;
				let id = if d != 0.0 { 1.0 / d } else { 0.0 };
				out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
				out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
				let q = |x: f32| (((x - min) * id + 0.5) as u8).min(15);
				out.extend((0..QK / 2).map(|j| q(blk[j]) | (q(blk[j + QK / 2]) << 4)));
			}
		},
	}
	out
}
