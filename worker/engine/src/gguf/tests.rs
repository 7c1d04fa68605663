use super::*;

fn ramp(n: usize) -> Vec<f32> {
	(0..n).map(|i| ((i as f32) * 0.37).sin() * 2.0 - 0.25).collect()
}

#[test]
fn metadata_and_tensors_round_trip() {
	let dir = tempfile::tempdir().unwrap();
	let path = dir.path().join("m.gguf");
	let data = ramp(64);
	let mut w = GgufWriter::new();
	w.meta("general.architecture", Value::Str("llama".into()))
		.meta("llama.block_count", Value::U32(2))
		.meta("x.eps", Value::F32(1e-5))
		.meta("tokenizer.ggml.tokens", Value::Array(vec![Value::Str("a".into()), Value::Str("b".into())]))
		.tensor("t.f32", &[2, 32], &data, GgmlType::F32)
		.tensor("t.q8", &[2, 32], &data, GgmlType::Q8_0);
	w.write(&path).unwrap();

	let f = GgufFile::open(&path).unwrap();
	assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
	assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
	assert_eq!(f.get_f32("x.eps").unwrap(), 1e-5);
	assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap(), vec!["a", "b"]);
	let (t, dims) = f.tensor_f32("t.f32").unwrap();
	assert_eq!(dims, vec![32, 2], "GGUF dims are fastest-varying first");
	assert_eq!(t, data);
	let (q, _) = f.tensor_f32("t.q8").unwrap();
	let max_err = q.iter().zip(&data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
	assert!(max_err < 2.0 / 127.0 + 1e-3, "Q8_0 error {max_err}");
	assert!(matches!(f.get_u64("general.architecture"), Err(GgufError::WrongType { .. })));
	assert!(matches!(f.get_str("nope"), Err(GgufError::MissingKey { key, .. }) if key == "nope"));
	assert!(matches!(f.tensor_f32("nope"), Err(GgufError::MissingTensor { tensor, .. }) if tensor == "nope"));
}

#[test]
fn block_formats_decode_as_llama_cpp_lays_them_out() {
	// One hand-built block per type: scale 0.5 (f16 0x3800), min -1.0 (f16 0xBC00).
	let mut q8 = vec![0x00, 0x38];
	q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
	let want: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
	assert_eq!(dequantize(GgmlType::Q8_0, &q8, 32), want);

	// Q4_0: byte j holds element j (low nibble) and element j + 16 (high nibble), offset 8.
	let mut q40 = vec![0x00, 0x38];
	q40.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
	let d = dequantize(GgmlType::Q4_0, &q40, 32);
	for j in 0..16 {
		assert_eq!(d[j], (j as f32 - 8.0) * 0.5);
		assert_eq!(d[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
	}

	let mut q41 = vec![0x00, 0x38, 0x00, 0xBC];
	q41.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
	let d = dequantize(GgmlType::Q4_1, &q41, 32);
	for j in 0..16 {
		assert_eq!(d[j], j as f32 * 0.5 - 1.0);
		assert_eq!(d[j + 16], (15 - j) as f32 * 0.5 - 1.0);
	}
	assert_eq!(dequantize(GgmlType::F16, &[0x00, 0x38, 0x00, 0xBC], 2), vec![0.5, -1.0]);
	assert_eq!(dequantize(GgmlType::BF16, &[0x00, 0x3f, 0x80, 0xbf], 2), vec![0.5, -1.0]);
}

#[test]
fn quantisers_stay_within_their_step() {
	let data = ramp(256);
	for (ty, step) in
		[(GgmlType::Q4_0, 4.5 / 8.0), (GgmlType::Q4_1, 4.5 / 15.0), (GgmlType::F16, 2e-3), (GgmlType::BF16, 2e-2)]
	{
		let back = dequantize(ty, &quantize(ty, &data), data.len());
		let err = back.iter().zip(&data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
		assert!(err <= step, "{ty:?}: max error {err} > {step}");
	}
}

#[test]
fn bad_files_get_named_errors() {
	let dir = tempfile::tempdir().unwrap();
	let p = dir.path().join("x.gguf");
	std::fs::write(&p, b"GGML\x03\0\0\0").unwrap();
	assert!(matches!(GgufFile::open(&p), Err(GgufError::BadMagic { .. })));

	let mut w = GgufWriter::new();
	w.meta("general.architecture", Value::Str("llama".into())).tensor("w", &[32], &ramp(32), GgmlType::Q4_1);
	w.write(&p).unwrap();
	let full = std::fs::read(&p).unwrap();

	// Truncated in the header: the error says what was being read.
	std::fs::write(&p, &full[..60]).unwrap(); // inside the first value
	assert!(matches!(GgufFile::open(&p), Err(GgufError::Corrupt { what: "metadata value", .. })));

	// Truncated in the data: opening works, reading the tensor does not.
	std::fs::write(&p, &full[..full.len() - 4]).unwrap();
	let f = GgufFile::open(&p).unwrap();
	assert!(matches!(f.tensor_f32("w"), Err(GgufError::BadTensorData { tensor, .. }) if tensor == "w"));

	// A type we do not dequantise (Q6_K = 14) is named.
	let mut bytes = full.clone();
	let header = &bytes[..bytes.len() - 20]; // the data is one 20-byte Q4_1 block
	let at = header.windows(4).rposition(|w| w == (GgmlType::Q4_1 as u32).to_le_bytes()).unwrap();
	bytes[at..at + 4].copy_from_slice(&14u32.to_le_bytes());
	std::fs::write(&p, &bytes).unwrap();
	let err = GgufFile::open(&p).unwrap().tensor_f32("w").unwrap_err();
	assert!(matches!(err, GgufError::UnsupportedTensorType { type_id: 14, .. }));
	assert!(err.to_string().contains("Q6_K") && err.to_string().contains("`w`"), "{err}");
}
