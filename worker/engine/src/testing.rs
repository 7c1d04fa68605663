//! Tiny random models for tests and examples (no download needed).

use crate::model::{LayerWeights, Model, ModelConfig};
use crate::rng::Rng;

/// A small Llama-shaped config: 2 layers, GQA, hidden 32 (rows whole GGUF blocks).
pub fn tiny_config(vocab_size: usize) -> ModelConfig {
	ModelConfig {
		vocab_size,
		hidden_size: 32,
		intermediate_size: 64,
		num_layers: 2,
		num_heads: 4,
		num_kv_heads: 2,
		head_dim: 8,
		rope_theta: 10000.0,
		rope_freq_factors: Vec::new(),
		rms_norm_eps: 1e-5,
		tie_word_embeddings: true,
		attention_bias: false,
		max_position_embeddings: 256,
	}
}

/// Random weights for `config`, scaled like a trained model's (so activations stay O(1)).
pub fn random_model(config: ModelConfig, seed: u64) -> Model {
	let mut rng = Rng::new(seed);
	let mut mat = |rows: usize, cols: usize| -> Vec<f32> {
		let bound = (3.0 / cols as f32).sqrt();
		(0..rows * cols).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect()
	};
	let c = &config;
	let (h, q, kv, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
	let layers = (0..c.num_layers)
		.map(|_| LayerWeights {
			attn_norm: mat(1, h).iter().map(|x| 1.0 + 0.1 * x).collect(),
			wq: mat(q, h),
			wk: mat(kv, h),
			wv: mat(kv, h),
			wo: mat(h, q),
			bq: if c.attention_bias { mat(1, q) } else { vec![] },
			bk: if c.attention_bias { mat(1, kv) } else { vec![] },
			bv: if c.attention_bias { mat(1, kv) } else { vec![] },
			ffn_norm: mat(1, h).iter().map(|x| 1.0 + 0.1 * x).collect(),
			w_gate: mat(f, h),
			w_up: mat(f, h),
			w_down: mat(h, f),
		})
		.collect();
	let embed = mat(c.vocab_size, h);
	let lm_head = (!c.tie_word_embeddings).then(|| mat(c.vocab_size, h));
	let final_norm = mat(1, h).iter().map(|x| 1.0 + 0.1 * x).collect();
	Model { config, embed, layers, final_norm, lm_head }
}

/// The chat template SmolLM2 ships (ChatML), used by the tiny test models.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// GPT-2's byte-to-character map that byte-level BPE vocabularies are written in.
fn byte_chars() -> Vec<char> {
	let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
	let mut extra = 0;
	let mut map = vec!['\0'; 256];
	for b in 0..256u32 {
		if printable.contains(&b) {
			map[b as usize] = char::from_u32(b).unwrap();
		} else {
			map[b as usize] = char::from_u32(256 + extra).unwrap();
			extra += 1;
		}
	}
	map
}

/// A tiny byte-level BPE vocabulary: three ChatML specials, the 256 bytes, and a few merges.
/// Returns `(tokens, merges, token types)` as GGUF stores them.
pub fn tiny_vocab() -> (Vec<String>, Vec<String>, Vec<u32>) {
	let mut tokens: Vec<String> =
		["<|endoftext|>", "<|im_start|>", "<|im_end|>"].iter().map(|s| s.to_string()).collect();
	let mut types = vec![3u32; 3];
	let chars = byte_chars();
	for c in &chars {
		tokens.push(c.to_string());
		types.push(1);
	}
	let sp = chars[b' ' as usize];
	let merges: Vec<String> = [(sp, 't'), (sp, 'a'), ('h', 'e'), ('i', 'n'), ('e', 'r'), (sp, 's')]
		.iter()
		.map(|(a, b)| format!("{a} {b}"))
		.collect();
	for m in &merges {
		tokens.push(m.replace(' ', ""));
		types.push(1);
	}
	(tokens, merges, types)
}

/// `v` with every object's keys in sorted order, so that its text does not depend on
/// whether serde_json's `preserve_order` feature is on. Other crates of the workspace turn
/// on such features (`preserve_order`, `arbitrary_precision`, under which an f32 prints
/// differently: floats are written as f64 below); a different text would change the tiny
/// model's hash and so every state hash of the tiny job.
fn sorted_keys(v: serde_json::Value) -> serde_json::Value {
	match v {
		serde_json::Value::Object(m) => {
			let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
			entries.sort_by(|a, b| a.0.cmp(&b.0));
			serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted_keys(v))).collect())
		},
		serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(sorted_keys).collect()),
		other => other,
	}
}

/// Writes `model` as a Hugging Face directory with the tiny tokenizer.
pub fn write_hf_dir(model: &Model, dir: &std::path::Path) -> std::io::Result<()> {
	use serde_json::json;
	std::fs::create_dir_all(dir)?;
	let c = &model.config;
	let config = json!({
		"architectures": ["LlamaForCausalLM"], "model_type": if c.attention_bias { "qwen2" } else { "llama" },
		"vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
		"num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
		"head_dim": c.head_dim, "rope_theta": c.rope_theta as f64, "rms_norm_eps": c.rms_norm_eps as f64,
		"tie_word_embeddings": c.tie_word_embeddings, "attention_bias": c.attention_bias,
		"max_position_embeddings": c.max_position_embeddings, "torch_dtype": "float32",
		"bos_token_id": 1, "eos_token_id": 2,
	});
	std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&sorted_keys(config))?)?;
	let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
	let mut add = |name: String, shape: Vec<usize>, data: &[f32]| {
		if !data.is_empty() {
			tensors.push((name, shape, data.iter().flat_map(|x| x.to_le_bytes()).collect()));
		}
	};
	let (h, q, kv, f, v) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.vocab_size);
	add("model.embed_tokens.weight".into(), vec![v, h], &model.embed);
	add("model.norm.weight".into(), vec![h], &model.final_norm);
	if let Some(head) = &model.lm_head {
		add("lm_head.weight".into(), vec![v, h], head);
	}
	for (i, l) in model.layers.iter().enumerate() {
		let p = |s: &str| format!("model.layers.{i}.{s}");
		add(p("input_layernorm.weight"), vec![h], &l.attn_norm);
		add(p("post_attention_layernorm.weight"), vec![h], &l.ffn_norm);
		add(p("self_attn.q_proj.weight"), vec![q, h], &l.wq);
		add(p("self_attn.k_proj.weight"), vec![kv, h], &l.wk);
		add(p("self_attn.v_proj.weight"), vec![kv, h], &l.wv);
		add(p("self_attn.o_proj.weight"), vec![h, q], &l.wo);
		add(p("self_attn.q_proj.bias"), vec![q], &l.bq);
		add(p("self_attn.k_proj.bias"), vec![kv], &l.bk);
		add(p("self_attn.v_proj.bias"), vec![kv], &l.bv);
		add(p("mlp.gate_proj.weight"), vec![f, h], &l.w_gate);
		add(p("mlp.up_proj.weight"), vec![f, h], &l.w_up);
		add(p("mlp.down_proj.weight"), vec![h, f], &l.w_down);
	}
	let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
		.iter()
		.map(|(n, s, b)| {
			(n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
		})
		.collect();
	std::fs::write(dir.join("model.safetensors"), safetensors::serialize(views, None).map_err(std::io::Error::other)?)?;

	let (tokens, merges, types) = tiny_vocab();
	let vocab: serde_json::Map<String, serde_json::Value> =
		tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
	let added: Vec<_> = (0..3)
		.map(|i| json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
		.collect();
	let _ = types;
	let tokenizer = json!({
		"version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
		"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true},
			{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
		"post_processor": null,
		"decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
			"fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges},
	});
	std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec_pretty(&sorted_keys(tokenizer))?)?;
	let tcfg = json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": CHATML_TEMPLATE});
	std::fs::write(dir.join("tokenizer_config.json"), serde_json::to_vec_pretty(&sorted_keys(tcfg))?)
}

/// Writes `model` as llama.cpp's converter would (Q/K rows permuted, tokenizer in the
/// metadata), with the weight matrices stored as `ty`.
pub fn write_gguf(model: &Model, path: &std::path::Path, ty: crate::gguf::GgmlType) -> std::io::Result<()> {
	use crate::gguf::{GgmlType, GgufWriter, Value};
	use crate::model::permute_rows_to_gguf;
	let c = &model.config;
	let arch = if c.attention_bias { "qwen2" } else { "llama" };
	let (tokens, merges, types) = tiny_vocab();
	let strs = |v: &[String]| Value::Array(v.iter().map(|s| Value::Str(s.clone())).collect());
	let mut w = GgufWriter::new();
	let k = |s: &str| format!("{arch}.{s}");
	w.meta("general.architecture", Value::Str(arch.into()))
		.meta(&k("block_count"), Value::U32(c.num_layers as u32))
		.meta(&k("context_length"), Value::U32(c.max_position_embeddings as u32))
		.meta(&k("embedding_length"), Value::U32(c.hidden_size as u32))
		.meta(&k("feed_forward_length"), Value::U32(c.intermediate_size as u32))
		.meta(&k("attention.head_count"), Value::U32(c.num_heads as u32))
		.meta(&k("attention.head_count_kv"), Value::U32(c.num_kv_heads as u32))
		.meta(&k("rope.freq_base"), Value::F32(c.rope_theta))
		.meta(&k("rope.dimension_count"), Value::U32(c.head_dim as u32))
		.meta(&k("attention.layer_norm_rms_epsilon"), Value::F32(c.rms_norm_eps))
		.meta(&k("vocab_size"), Value::U32(c.vocab_size as u32))
		.meta("tokenizer.ggml.model", Value::Str("gpt2".into()))
		.meta("tokenizer.ggml.pre", Value::Str("smollm".into()))
		.meta("tokenizer.ggml.tokens", strs(&tokens))
		.meta("tokenizer.ggml.merges", strs(&merges))
		.meta("tokenizer.ggml.token_type", Value::Array(types.iter().map(|&t| Value::I32(t as i32)).collect()))
		.meta("tokenizer.ggml.bos_token_id", Value::U32(1))
		.meta("tokenizer.ggml.eos_token_id", Value::U32(2))
		.meta("tokenizer.chat_template", Value::Str(CHATML_TEMPLATE.into()));
	let (h, q, kv, f, v) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.vocab_size);
	w.tensor("token_embd.weight", &[v, h], &model.embed, ty);
	w.tensor("output_norm.weight", &[h], &model.final_norm, GgmlType::F32);
	if let Some(head) = &model.lm_head {
		w.tensor("output.weight", &[v, h], head, ty);
	}
	let permute = arch == "llama";
	for (i, l) in model.layers.iter().enumerate() {
		let p = |s: &str| format!("blk.{i}.{s}");
		let (wq, wk) = if permute {
			(permute_rows_to_gguf(&l.wq, c.num_heads, h), permute_rows_to_gguf(&l.wk, c.num_kv_heads, h))
		} else {
			(l.wq.clone(), l.wk.clone())
		};
		w.tensor(&p("attn_norm.weight"), &[h], &l.attn_norm, GgmlType::F32)
			.tensor(&p("ffn_norm.weight"), &[h], &l.ffn_norm, GgmlType::F32)
			.tensor(&p("attn_q.weight"), &[q, h], &wq, ty)
			.tensor(&p("attn_k.weight"), &[kv, h], &wk, ty)
			.tensor(&p("attn_v.weight"), &[kv, h], &l.wv, ty)
			.tensor(&p("attn_output.weight"), &[h, q], &l.wo, ty)
			.tensor(&p("ffn_gate.weight"), &[f, h], &l.w_gate, ty)
			.tensor(&p("ffn_up.weight"), &[f, h], &l.w_up, ty)
			.tensor(&p("ffn_down.weight"), &[h, f], &l.w_down, ty);
		if c.attention_bias {
			w.tensor(&p("attn_q.bias"), &[q], &l.bq, GgmlType::F32)
				.tensor(&p("attn_k.bias"), &[kv], &l.bk, GgmlType::F32)
				.tensor(&p("attn_v.bias"), &[kv], &l.bv, GgmlType::F32);
		}
	}
	w.write(path)
}

/// The tiny job spec's template (`tests/fixtures/tiny-job.toml`): its hashes are zeros.
pub const TINY_JOB_TEMPLATE: &str = include_str!("../tests/fixtures/tiny-job.toml");
/// The shipped tiny persona set (`worker/data/persona/tiny.jsonl`).
pub const TINY_PERSONA: &str = include_str!("../../data/persona/tiny.jsonl");
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A tiny job in `dir`: a random model (`tiny-model/`), the shipped tiny persona set
/// (`tiny.jsonl`) and `job.toml`, which [`write_tiny_spec`] writes.
pub fn write_tiny_job(dir: &std::path::Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
	write_hf_dir(&random_model(tiny_config(272), 11), &dir.join("tiny-model")).unwrap();
	// Compiled in: a build shared between clones (one target directory) must not read a
	// source tree that may be gone.
	std::fs::write(dir.join("tiny.jsonl"), TINY_PERSONA).unwrap();
	write_tiny_spec(dir, edit)
}

/// (Re)writes `dir/job.toml` from the template with the current hashes of `dir`'s model
/// and data, then `edit`.
pub fn write_tiny_spec(dir: &std::path::Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
	let model = crate::spec::model_sha256(&dir.join("tiny-model")).unwrap();
	let data = crate::data::sha256_file(&dir.join("tiny.jsonl")).unwrap();
	let text = TINY_JOB_TEMPLATE.replacen(ZERO_HASH, &model, 1).replacen(ZERO_HASH, &data, 2);
	let spec = dir.join("job.toml");
	std::fs::write(&spec, edit(text)).unwrap();
	spec
}

/// What a lazy miner does, for the tests of validators: after a run stopped at a
/// checkpoint, it writes the remaining checkpoints without training them (the last real
/// state under later step numbers), then that state's adapters and a summary, as if it had
/// trained every step. Every checkpoint hashes and chains correctly; only a replay of a
/// fabricated segment tells.
pub fn fabricate_rest(
	job: &crate::train::Job,
	run: &std::path::Path,
	backend: &dyn crate::backend::Backend,
) -> Result<(), crate::train::TrainError> {
	use crate::checkpoint::{write_atomic, Manifest};
	let mut manifest = Manifest::load(run)?;
	let last = manifest.hashes.len().saturating_sub(1);
	let mut state = manifest.read_checked(run, last)?;
	let every = job.recipe.train.checkpoint_every.max(1);
	let count = job.recipe.train.steps.div_ceil(every) as usize + 1;
	for k in manifest.hashes.len()..count {
		state.step = job.checkpoint_step(k);
		manifest.append(run, &state)?;
	}
	let adapter = job.adapter(&state.params);
	let io = |e: std::io::Error| crate::train::TrainError::Io(e.to_string());
	crate::adapter::write_peft(&adapter, &job.model.config, &run.join("adapter"), &job.model_name).map_err(io)?;
	crate::adapter::write_gguf(&adapter, &job.model.config, &run.join("adapter.gguf"), &job.model_name).map_err(io)?;
	let summary = crate::train::Summary {
		steps: state.step,
		final_state_hash: manifest.hashes.last().cloned().unwrap_or_default(),
		merkle_root: manifest.merkle_root.clone(),
		backend: backend.class(),
		eval_before: None,
		eval_after: None,
		train_tokens_per_second: 0.0,
	};
	write_atomic(&run.join("summary.json"), &serde_json::to_vec_pretty(&summary).expect("serialises"))?;
	Ok(())
}
