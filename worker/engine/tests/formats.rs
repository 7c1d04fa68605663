//! The same weights through both model formats, and adapters out through both adapter
//! formats.

use molting_engine::adapter::{read_peft, write_gguf as write_gguf_adapter, write_peft};
use molting_engine::backend::cpu::Cpu;
use molting_engine::engine::Engine;
use molting_engine::gguf::{GgmlType, GgufFile};
use molting_engine::lora::{Adapter, LoraConfig, Target};
use molting_engine::model::{load_model, unpermute_rows_from_gguf, ModelSource};
use molting_engine::rng::Rng;
use molting_engine::testing::{random_model, tiny_config, write_gguf, write_hf_dir};
use molting_engine::tokenizer::{ChatTokenizer, Message};

fn conversation() -> Vec<Message> {
	vec![
		Message { role: "system".into(), content: "You are Keeper.".into() },
		Message { role: "user".into(), content: "How far is 42 nautical miles?".into() },
		Message { role: "assistant".into(), content: "About 78 km, sailor. Steady as she goes.".into() },
	]
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
	a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn hf_and_gguf_copies_of_the_same_weights_give_the_same_logits_and_tokens() {
	for qkv_bias in [false, true] {
		let mut cfg = tiny_config(272);
		cfg.attention_bias = qkv_bias; // qwen2-style: no Q/K permutation in GGUF
		let model = random_model(cfg, 31);
		let dir = tempfile::tempdir().unwrap();
		write_hf_dir(&model, &dir.path().join("hf")).unwrap();
		write_gguf(&model, &dir.path().join("m.gguf"), GgmlType::F32).unwrap();
		let hf = load_model(&ModelSource::detect(&dir.path().join("hf")).unwrap()).unwrap();
		let gg = load_model(&ModelSource::detect(&dir.path().join("m.gguf")).unwrap()).unwrap();
		assert_eq!(hf.config, gg.config);

		let tok_hf = ChatTokenizer::from_hf_dir(&dir.path().join("hf")).unwrap();
		let tok_gg = ChatTokenizer::from_gguf(&GgufFile::open(&dir.path().join("m.gguf")).unwrap()).unwrap();
		let text = tok_hf.render_chat(&conversation(), false).unwrap();
		assert_eq!(text, tok_gg.render_chat(&conversation(), false).unwrap());
		let ids = tok_hf.encode(&text).unwrap();
		assert_eq!(ids, tok_gg.encode(&text).unwrap());
		assert_eq!(tok_hf.decode(&ids).unwrap(), tok_gg.decode(&ids).unwrap());
		assert!(ids.starts_with(&[1]), "<|im_start|> is one special token");

		let n = ids.len();
		let a = Engine::new(&Cpu, &hf, None, n).logits(&ids, 1, n);
		let b = Engine::new(&Cpu, &gg, None, n).logits(&ids, 1, n);
		assert_eq!(a, b, "bias={qkv_bias}: F32 GGUF and safetensors give bit-identical logits");

		// Quantised copies stay close to the original (relative to the largest logit).
		let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
		for (ty, tol) in [(GgmlType::F16, 2e-3), (GgmlType::BF16, 2e-2), (GgmlType::Q8_0, 5e-2)] {
			let p = dir.path().join("q.gguf");
			write_gguf(&model, &p, ty).unwrap();
			let q = load_model(&ModelSource::detect(&p).unwrap()).unwrap();
			let c = Engine::new(&Cpu, &q, None, n).logits(&ids, 1, n);
			let d = max_diff(&a, &c) / scale;
			assert!(d < tol, "{ty:?}: max logit difference {d} of the largest logit");
		}
	}
}

#[test]
fn adapters_are_written_as_peft_and_as_gguf_lora() {
	let model = random_model(tiny_config(272), 32);
	let c = &model.config;
	let mut adapter = Adapter::init(
		c,
		LoraConfig {
			rank: 4,
			alpha: 8.0,
			dropout: 0.05,
			targets: vec![Target::Q, Target::K, Target::V, Target::O, Target::Down],
		},
		1,
	);
	let mut r = Rng::new(3);
	adapter.params.iter_mut().for_each(|p| *p = r.uniform() - 0.5);
	let dir = tempfile::tempdir().unwrap();
	let base = "tiny-base";

	write_peft(&adapter, c, &dir.path().join("peft"), base).unwrap();
	let cfg: serde_json::Value =
		serde_json::from_str(&std::fs::read_to_string(dir.path().join("peft/adapter_config.json")).unwrap()).unwrap();
	assert_eq!(cfg["peft_type"], "LORA");
	assert_eq!(cfg["r"], 4);
	assert_eq!(cfg["lora_alpha"], 8.0);
	assert_eq!(cfg["target_modules"], serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]));
	let back = read_peft(&dir.path().join("peft"), c).unwrap();
	assert_eq!(back.params, adapter.params);

	let path = dir.path().join("a.gguf");
	write_gguf_adapter(&adapter, c, &path, base).unwrap();
	let g = GgufFile::open(&path).unwrap();
	assert_eq!(g.get_str("general.type").unwrap(), "adapter");
	assert_eq!(g.get_str("adapter.type").unwrap(), "lora");
	assert_eq!(g.get_f32("adapter.lora.alpha").unwrap(), 8.0);
	assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
	let l = &adapter.layout;
	for s in &l.slots {
		let name = format!("blk.{}.{}.weight", s.layer, s.target.gguf_name());
		let (a, a_dims) = g.tensor_f32(&format!("{name}.lora_a")).unwrap();
		let (b, b_dims) = g.tensor_f32(&format!("{name}.lora_b")).unwrap();
		assert_eq!(a_dims, vec![s.in_dim as u64, 4], "lora_a is ne = [in, r]");
		assert_eq!(b_dims, vec![4, s.out_dim as u64], "lora_b is ne = [r, out]");
		assert_eq!(a, l.a(s, &adapter.params));
		// Q and K rows are in llama.cpp's order, like its base weights.
		let b = match s.target {
			Target::Q => unpermute_rows_from_gguf(&b, c.num_heads, 4),
			Target::K => unpermute_rows_from_gguf(&b, c.num_kv_heads, 4),
			_ => b,
		};
		assert_eq!(b, l.b(s, &adapter.params), "{name}");
	}
	assert_eq!(g.tensors.len(), 2 * l.slots.len());
}
