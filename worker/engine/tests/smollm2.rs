//! SmolLM2-135M-Instruct (the real GGUF, fetched by scripts/fetch-models.sh) against golden
//! values from an independent implementation: Hugging Face transformers reading the same
//! file (scripts/reference/golden_smollm2.py wrote tests/fixtures/smollm2_golden.json).
//!
//! Tolerances: both sides compute in fp32 but sum in different orders, so logits may
//! differ by rounding that grows through 30 layers; we allow 2e-3 absolute on logits and
//! log-sum-exps (they are O(10)), and 1e-4 relative on the eval loss and bits per byte.

use std::path::{Path, PathBuf};

use molting_engine::backend::cpu::Cpu;
use molting_engine::data::{parse_conversation, render_masked};
use molting_engine::engine::Engine;
use molting_engine::gguf::GgufFile;
use molting_engine::model::{load_model, ModelSource};
use molting_engine::spec::models_dir;
use molting_engine::tokenizer::{ChatTokenizer, Message};
use molting_engine::train::Job;
use serde_json::Value;

const LOGIT_TOL: f32 = 2e-3;
const LOSS_REL_TOL: f64 = 1e-4;

fn gguf_path() -> PathBuf {
	let p = models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
	assert!(p.is_file(), "{} is missing: run scripts/fetch-models.sh (scripts/setup.sh does)", p.display());
	p
}

fn golden() -> Value {
	let text =
		std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_golden.json"))
			.unwrap();
	serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
	v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn smollm2_matches_transformers_on_tokens_logits_and_eval() {
	let path = gguf_path();
	let g = golden();
	let model = load_model(&ModelSource::detect(&path).unwrap()).unwrap();
	let tok = ChatTokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();

	// The chat template renders and tokenizes exactly as transformers does.
	let prompt = &g["prompt"];
	let messages = vec![
		Message {
			role: "system".into(),
			content: "You are Keeper, the keeper of an old lighthouse, and a helpful assistant.".into(),
		},
		Message {
			role: "user".into(),
			content: "What should I pack for a week of sailing along a rocky coast?".into(),
		},
	];
	let text = tok.render_chat(&messages, true).unwrap();
	assert_eq!(text, prompt["text"].as_str().unwrap());
	let prompt_ids = tok.encode(&text).unwrap();
	assert_eq!(prompt_ids, ids(&prompt["ids"]));

	// Logits at every position.
	let n = prompt_ids.len();
	let vocab = model.config.vocab_size;
	let logits = Engine::new(&Cpu, &model, None, n).logits(&prompt_ids, 1, n);
	let probes = ids(&prompt["probe_ids"]);
	let mut worst = 0f32;
	for pos in 0..n {
		let row = &logits[pos * vocab..(pos + 1) * vocab];
		let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
		let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
		worst = worst.max((lse - prompt["logsumexp"][pos].as_f64().unwrap() as f32).abs());
		for (j, &id) in probes.iter().enumerate() {
			worst = worst.max((row[id as usize] - prompt["probe_logits"][pos][j].as_f64().unwrap() as f32).abs());
		}
		let top = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
		assert_eq!(top as u64, prompt["top5"][pos][0].as_u64().unwrap(), "argmax at position {pos}");
	}
	assert!(worst < LOGIT_TOL, "largest logit difference from transformers: {worst}");
	eprintln!("SmolLM2 logits: largest difference from transformers over {n} positions: {worst:.2e}");

	// The held-out persona set, scored one conversation at a time.
	check_eval_against_transformers(&g);
}

/// Every eval conversation: the worker's tokens, assistant mask (located by rendering
/// prefixes) and byte count equal transformers' (mask from the template's `{% generation %}`
/// markers); the worker's eval (packed, block-diagonal) gives transformers' per-conversation
/// loss and bits per byte within 1e-4 relative.
fn check_eval_against_transformers(g: &Value) {
	let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/keeper.toml");
	let job = Job::prepare(&spec).unwrap();
	let want = &g["eval"];
	let convs = want["conversations"].as_array().unwrap();
	assert_eq!(job.eval.len(), convs.len(), "one golden record per eval conversation");
	let eval = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/persona/eval.jsonl")).unwrap();
	for ((line, ex), want) in eval.lines().zip(&job.eval).zip(convs) {
		let again = render_masked(&job.tokenizer, &parse_conversation(line).unwrap()).unwrap();
		assert_eq!(again.ids, ex.ids);
		assert_eq!(ex.ids, ids(&want["ids"]), "line {}: tokens", ex.line);
		let mask: Vec<bool> = want["mask"].as_array().unwrap().iter().map(|m| m.as_u64() == Some(1)).collect();
		assert_eq!(ex.train, mask, "line {}: assistant mask", ex.line);
		assert_eq!(ex.bytes as u64, want["bytes"].as_u64().unwrap(), "line {}: assistant bytes", ex.line);
	}
	let got = job.evaluate(&Cpu, None).unwrap();
	assert_eq!(got.tokens as u64, want["tokens"].as_u64().unwrap());
	assert_eq!(got.bytes as u64, want["bytes"].as_u64().unwrap());
	for (name, ours, theirs) in [
		("loss", got.loss, want["loss"].as_f64().unwrap()),
		("bits per byte", got.bits_per_byte, want["bits_per_byte"].as_f64().unwrap()),
		("perplexity", got.perplexity, want["perplexity"].as_f64().unwrap()),
	] {
		let rel = (ours - theirs).abs() / theirs;
		eprintln!("SmolLM2 eval {name}: {ours:.6} vs transformers {theirs:.6} (relative {rel:.1e})");
		assert!(rel < LOSS_REL_TOL, "eval {name} {ours} vs transformers {theirs}");
	}
}
