//! Whole runs on a tiny random model: loss falls, hashes are reproducible (twice, and with
//! 1 vs 2 threads), kill-and-resume ends at the same hash, replay confirms a checkpoint and
//! catches a fabricated one, and bad inputs get their named errors.

use std::path::{Path, PathBuf};

use molting_engine::backend::cpu::Cpu;
use molting_engine::checkpoint::{CheckpointError, Manifest, State};
use molting_engine::data::{sha256_file, DataError};
use molting_engine::model::ModelError;
use molting_engine::recipe::RecipeError;
use molting_engine::spec::SpecError;
use molting_engine::testing::{
	random_model, tiny_config, write_hf_dir, write_tiny_job, write_tiny_spec, TINY_JOB_TEMPLATE,
};
use molting_engine::train::{replay, resume, train, Job, RunOptions, Summary, TrainError};

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

struct Fixture {
	dir: tempfile::TempDir,
}

impl Fixture {
	/// A tiny model, the shipped tiny persona set and a spec with their real hashes;
	/// `edit` may change the spec text.
	fn new(edit: impl Fn(String) -> String) -> Self {
		let dir = tempfile::tempdir().unwrap();
		write_tiny_job(dir.path(), edit);
		Fixture { dir }
	}

	fn write_spec(&self, edit: impl Fn(String) -> String) {
		write_tiny_spec(self.dir.path(), edit);
	}

	fn path(&self, p: &str) -> PathBuf {
		self.dir.path().join(p)
	}

	fn spec(&self) -> PathBuf {
		self.path("job.toml")
	}

	fn prepare(&self) -> Result<Job, TrainError> {
		Job::prepare(&self.spec())
	}
}

fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
	rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(f)
}

fn run(job: &Job, out: &Path, threads: usize) -> Summary {
	with_threads(threads, || train(job, out, &Cpu, RunOptions::default())).unwrap().expect("ran to the end")
}

#[test]
fn loss_falls_on_a_tiny_random_model() {
	let f = Fixture::new(|s| s.replace("steps = 12", "steps = 40").replace("lr = 1e-2", "lr = 3e-2"));
	let job = f.prepare().unwrap();
	let mut losses = Vec::new();
	let mut record = |r: &molting_engine::train::StepReport| losses.push(r.loss);
	let summary = train(&job, &f.path("run"), &Cpu, RunOptions { stop_after: None, on_step: Some(&mut record) })
		.unwrap()
		.unwrap();
	// A batch of only system/user tokens counts nothing (loss 0); leave those out.
	losses.retain(|&l| l > 0.0);
	let first: f64 = losses[..4].iter().sum::<f64>() / 4.0;
	let last: f64 = losses[losses.len() - 4..].iter().sum::<f64>() / 4.0;
	assert!(last < 0.8 * first, "training loss {first:.3} -> {last:.3}");
	let (before, after) = (summary.eval_loss_before().unwrap(), summary.eval_loss_after().unwrap());
	assert!(after < before, "eval loss {before:.3} -> {after:.3}");
	// The adapters were written in both formats.
	assert!(f.path("run/adapter/adapter_model.safetensors").is_file());
	assert!(f.path("run/adapter/adapter_config.json").is_file());
	assert!(f.path("run/adapter.gguf").is_file());
}

#[test]
fn the_same_spec_gives_identical_hashes_twice_and_for_one_or_two_threads() {
	let f = Fixture::new(|s| s);
	let job = f.prepare().unwrap();
	let a = run(&job, &f.path("a"), 1);
	let b = run(&job, &f.path("b"), 2);
	let c = run(&job, &f.path("c"), 1);
	let (ma, mb, mc) = (
		Manifest::load(&f.path("a")).unwrap(),
		Manifest::load(&f.path("b")).unwrap(),
		Manifest::load(&f.path("c")).unwrap(),
	);
	assert_eq!(ma.steps, vec![0, 4, 8, 12]);
	assert_eq!(ma.hashes, mb.hashes, "1 vs 2 threads");
	assert_eq!(ma.hashes, mc.hashes, "twice");
	assert_eq!((a.merkle_root.clone(), a.final_state_hash.clone()), (b.merkle_root, b.final_state_hash));
	assert_eq!(a.merkle_root, c.merkle_root);
	// And the hashes do depend on the inputs: another seed, another history.
	let g = Fixture::new(|s| s.replace("seed = 1234", "seed = 1235"));
	let other = run(&g.prepare().unwrap(), &g.path("a"), 2);
	assert_ne!(other.final_state_hash, a.final_state_hash);
}

#[test]
fn a_killed_run_resumes_to_the_same_final_hash() {
	let f = Fixture::new(|s| s);
	let job = f.prepare().unwrap();
	let whole = run(&job, &f.path("whole"), 2);
	// Killed after step 6: the last checkpoint is step 4, so steps 5 and 6 are redone.
	let stopped = train(&job, &f.path("killed"), &Cpu, RunOptions { stop_after: Some(6), on_step: None }).unwrap();
	assert!(stopped.is_none());
	assert_eq!(Manifest::load(&f.path("killed")).unwrap().steps, vec![0, 4]);
	let (_, resumed) = resume(&f.path("killed"), &Cpu, RunOptions::default()).unwrap();
	let resumed = resumed.unwrap();
	assert_eq!(resumed.final_state_hash, whole.final_state_hash);
	assert_eq!(resumed.merkle_root, whole.merkle_root);
	// A finished or fresh run refuses to start over an existing one.
	assert!(matches!(train(&job, &f.path("whole"), &Cpu, RunOptions::default()), Err(TrainError::RunExists { .. })));
}

#[test]
fn replay_confirms_a_checkpoint_and_catches_a_fabricated_one() {
	let f = Fixture::new(|s| s);
	let job = f.prepare().unwrap();
	run(&job, &f.path("run"), 2);
	let run_dir = f.path("run");
	let ok = replay(&run_dir, 1, &Cpu).unwrap();
	assert!(ok.matches && ok.stored_matches, "{ok:?}");
	assert_eq!((ok.from_step, ok.to_step), (4, 8));

	// A lazy miner fabricates checkpoint 2 and records its hash consistently.
	let mut manifest = Manifest::load(&run_dir).unwrap();
	let mut fake: State = manifest.read_checked(&run_dir, 2).unwrap();
	fake.params[0] += 1e-3;
	let path = Manifest::checkpoint_path(&run_dir, 2);
	std::fs::write(&path, fake.encode()).unwrap();
	manifest.hashes[2] = hex::encode(fake.hash());
	std::fs::write(Manifest::path(&run_dir), serde_json::to_vec(&manifest).unwrap()).unwrap();
	let caught = replay(&run_dir, 1, &Cpu).unwrap();
	assert!(!caught.matches, "the replayed state differs from the fabricated one");
	assert_eq!(caught.found, ok.found, "the honest recomputation is unchanged");

	// A miner who records checkpoint 1 again as checkpoint 2 (so that a replay would have
	// nothing to do) is caught too: the segment's end comes from the spec.
	let mut manifest = Manifest::load(&run_dir).unwrap();
	std::fs::copy(Manifest::checkpoint_path(&run_dir, 1), &path).unwrap();
	manifest.hashes[2] = manifest.hashes[1].clone();
	manifest.steps[2] = manifest.steps[1];
	std::fs::write(Manifest::path(&run_dir), serde_json::to_vec(&manifest).unwrap()).unwrap();
	let copied = replay(&run_dir, 1, &Cpu).unwrap();
	assert!(!copied.matches && !copied.stored_matches, "{copied:?}");
	assert_eq!((copied.from_step, copied.to_step), (4, 8));

	// A checkpoint file that no longer matches its recorded hash is refused outright.
	let mut bytes = std::fs::read(&path).unwrap();
	bytes[100] ^= 1;
	std::fs::write(&path, bytes).unwrap();
	assert!(matches!(replay(&run_dir, 2, &Cpu), Err(TrainError::Checkpoint(CheckpointError::Tampered { .. }))));
	// Nothing follows the last checkpoint.
	assert!(matches!(replay(&run_dir, 3, &Cpu), Err(TrainError::Checkpoint(CheckpointError::Manifest { .. }))));
}

#[test]
fn bad_specs_get_named_errors() {
	let f = Fixture::new(|s| s);
	let cases: Vec<(&str, String, fn(&TrainError) -> bool)> = vec![
		("unknown key", TINY_JOB_TEMPLATE.replace("[lora]", "[lora]\nrnak = 3"), |e| {
			matches!(e, TrainError::Spec(SpecError::Parse { .. }))
		}),
		("rank 0", TINY_JOB_TEMPLATE.replace("rank = 4", "rank = 0"), |e| {
			matches!(e, TrainError::Spec(SpecError::Invalid { field: "lora.rank", .. }))
		}),
		(
			"bad target",
			TINY_JOB_TEMPLATE.replace("\"gate\"]", "\"gait\"]"),
			|e| matches!(e, TrainError::Spec(SpecError::Invalid { field: "lora.targets", reason, .. }) if reason.contains("gait")),
		),
		("bad hash", TINY_JOB_TEMPLATE.replacen(ZERO, "abc", 1), |e| {
			matches!(e, TrainError::Spec(SpecError::Invalid { field: "model.sha256", .. }))
		}),
		("dropout 1", TINY_JOB_TEMPLATE.replace("dropout = 0.1", "dropout = 1.0"), |e| {
			matches!(e, TrainError::Spec(SpecError::Invalid { field: "lora.dropout", .. }))
		}),
		("steps 0", TINY_JOB_TEMPLATE.replace("steps = 12", "steps = 0"), |e| {
			matches!(e, TrainError::Spec(SpecError::Invalid { field: "train.steps", .. }))
		}),
	];
	for (what, text, check) in cases {
		std::fs::write(f.spec(), text).unwrap();
		let err = f.prepare().err().unwrap_or_else(|| panic!("{what}: accepted"));
		assert!(check(&err), "{what}: {err}");
		assert!(err.to_string().contains("job.toml"), "{what}: the message names the file: {err}");
	}
}

#[test]
fn inputs_that_do_not_match_their_hashes_or_are_malformed_get_named_errors() {
	let f = Fixture::new(|s| s);
	// The data changes after the spec was written.
	std::fs::write(f.path("tiny.jsonl"), "{}\n").unwrap();
	let err = f.prepare().err().unwrap();
	assert!(
		matches!(&err, TrainError::Recipe(RecipeError::Invalid { field, .. }) if field == "data.train_sha256"),
		"{err}"
	);
	assert!(err.to_string().contains("tiny.jsonl hashes to"), "{err}");

	// Malformed lines name the file and line.
	let good = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/persona/tiny.jsonl")).unwrap();
	let first = good.lines().next().unwrap();
	for (bad_line, needle) in [
		("{\"messages\": [", "not a"),
		("{\"messages\": [{\"role\": \"robot\", \"content\": \"hi\"}]}", "unknown role `robot`"),
		("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "no assistant message"),
		("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"system\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}", "system message may only come first"),
	] {
		std::fs::write(f.path("tiny.jsonl"), format!("{first}\n\n{bad_line}\n")).unwrap();
		f.write_spec(|s| s);
		let err = f.prepare().err().unwrap();
		assert!(matches!(&err, TrainError::Data(DataError::MalformedLine { line: 3, .. })), "{err}");
		assert!(err.to_string().contains("tiny.jsonl:3:") && err.to_string().contains(needle), "{err}");
	}

	// The model changes after the spec was written.
	std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/persona/tiny.jsonl"), f.path("tiny.jsonl")).unwrap();
	f.write_spec(|s| s);
	write_hf_dir(&random_model(tiny_config(272), 12), &f.path("tiny-model")).unwrap();
	let err = f.prepare().err().unwrap();
	assert!(matches!(&err, TrainError::Recipe(RecipeError::Invalid { field, .. }) if field == "model.sha256"), "{err}");
}

#[test]
fn bad_models_get_named_errors() {
	let f = Fixture::new(|s| s);
	let cfg_path = f.path("tiny-model/config.json");
	let cfg = std::fs::read_to_string(&cfg_path).unwrap();
	let check = |edited: String, want: &dyn Fn(&ModelError) -> bool, needle: &str| {
		std::fs::write(&cfg_path, edited).unwrap();
		f.write_spec(|s| s);
		match f.prepare() {
			Err(TrainError::Model(e)) => {
				assert!(want(&e), "{e}");
				assert!(e.to_string().contains(needle), "`{needle}` not in: {e}");
			},
			Err(e) => panic!("wrong error: {e}"),
			Ok(_) => panic!("accepted"),
		}
	};
	check(
		cfg.replace("\"llama\"", "\"gpt_neox\""),
		&|e| matches!(e, ModelError::UnsupportedArchitecture(_)),
		"gpt_neox",
	);
	check(
		cfg.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"),
		&|e| matches!(e, ModelError::MissingTensor { .. }),
		"model.layers.2.input_layernorm.weight",
	);
	check(
		cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
		&|e| matches!(e, ModelError::ShapeMismatch { .. }),
		"mlp.gate_proj.weight",
	);
	check(
		cfg.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
		&|e| matches!(e, ModelError::BadConfig(_)),
		"key/value heads",
	);
	std::fs::write(&cfg_path, &cfg).unwrap();
	std::fs::write(f.path("not-a-model.bin"), b"hello").unwrap();
	let err = molting_engine::model::ModelSource::detect(&f.path("not-a-model.bin")).unwrap_err();
	assert!(matches!(err, ModelError::NotAModel { .. }), "{err}");
}

#[test]
fn plain_text_trains_with_loss_on_every_token() {
	let f = Fixture::new(|s| s);
	let text = "The lamp turns every ten seconds.\nIt has done so for a century.\n\nFog comes in at dusk.\n";
	std::fs::write(f.path("notes.txt"), text).unwrap();
	let hash = sha256_file(&f.path("notes.txt")).unwrap();
	let data = sha256_file(&f.path("tiny.jsonl")).unwrap();
	f.write_spec(|s| {
		s.replace("format = \"chat\"", "format = \"text\"")
			.replacen("train = \"tiny.jsonl\"", "train = \"notes.txt\"", 1)
			.replacen(&format!("train_sha256 = \"{data}\""), &format!("train_sha256 = \"{hash}\""), 1)
			.replace("eval = \"tiny.jsonl\"", "eval = \"notes.txt\"")
			.replace(&format!("eval_sha256 = \"{data}\""), &format!("eval_sha256 = \"{hash}\""))
	});
	let job = f.prepare().unwrap();
	// Two documents, each followed by EOS; every token is a target except each document's
	// first (nothing before it in its document predicts it).
	let stream: usize = ["The lamp turns every ten seconds.\nIt has done so for a century.", "Fog comes in at dusk.\n"]
		.iter()
		.map(|d| job.tokenizer.encode(d).unwrap().len() + 1)
		.sum();
	let counted: usize = job.train_rows.iter().map(|r| r.targets.iter().filter(|&&t| t >= 0).count()).sum();
	assert_eq!(counted, stream - 2);
	let eos = job.tokenizer.token_to_id(job.tokenizer.eos_token()).unwrap() as i32;
	assert_eq!(job.train_rows.iter().flat_map(|r| r.targets.iter()).filter(|&&t| t == eos).count(), 2);
	let s = run(&job, &f.path("run"), 2);
	assert!(s.eval_loss_after().unwrap() < s.eval_loss_before().unwrap());
}

/// The final state hash of the tiny job (tests/fixtures/tiny-job.toml) on our reference
/// classes, fp32 and bf16. Any change to the engine's arithmetic changes them: bump the
/// kernel version (`backend::cpu::KERNELS_VERSION`, part of the class) and pin the new ones.
// Moved on 2026-12-02 on purpose: a checkpoint now binds the recipe's training identity
// (`Recipe::training_id`) where it bound the spec file's bytes; the arithmetic did not change.
const TINY_JOB_FP32: (&str, &str) =
	("cpu/x86_64-avx512f", "15fe8ac90ed8a079668d328e244859451e41307a0336e6248211cd7b00f93d79");
const TINY_JOB_BF16: (&str, &str) =
	("cpu-bf16/x86_64-avx512bf16", "cd929f9d392715b1da8249ddc4dabd4104344ad22bbc20a4371bf03f9d02cd81");

#[test]
fn the_tiny_job_ends_at_its_pinned_hashes() {
	let version = format!("k{}/v{}", molting_engine::backend::cpu::KERNELS_VERSION, env!("CARGO_PKG_VERSION"));
	let f = Fixture::new(|s| s);
	let s = run(&f.prepare().unwrap(), &f.path("fp32"), 2);
	let (class, hash) = TINY_JOB_FP32;
	if s.backend == format!("{class}/{version}") {
		assert_eq!(s.final_state_hash, hash, "the tiny job's fp32 state changed: a deliberate class bump?");
	} else {
		eprintln!(
			"no pinned hash for class {} (pinned: {class}/{version}); final hash {}",
			s.backend, s.final_state_hash
		);
	}
	let Some(bf16) = molting_engine::backend::cpu::CpuBf16::new() else { return };
	let s = with_threads(2, || train(&f.prepare().unwrap(), &f.path("bf16"), &bf16, RunOptions::default()))
		.unwrap()
		.unwrap();
	let (class, hash) = TINY_JOB_BF16;
	assert_eq!(s.backend, format!("{class}/{version}"));
	assert_eq!(s.final_state_hash, hash, "the tiny job's bf16 state changed: a deliberate class bump?");
}

#[test]
fn a_run_of_another_class_is_not_resumed_or_replayed() {
	let f = Fixture::new(|s| s);
	let job = f.prepare().unwrap();
	let dir = f.path("run");
	assert!(train(&job, &dir, &Cpu, RunOptions { stop_after: Some(8), on_step: None }).unwrap().is_none());
	// The same run as a worker of another class would have recorded it: every checkpoint
	// says so (and the manifest records their hashes, so nothing looks tampered with).
	let mut manifest = Manifest::load(&dir).unwrap();
	for i in 0..manifest.hashes.len() {
		let mut s = manifest.read_checked(&dir, i).unwrap();
		s.class = "cpu/riscv64-rvv/k2/v0.1.0".into();
		std::fs::write(Manifest::checkpoint_path(&dir, i), s.encode()).unwrap();
		manifest.hashes[i] = hex::encode(s.hash());
	}
	std::fs::write(Manifest::path(&dir), serde_json::to_vec(&manifest).unwrap()).unwrap();
	let other_class = |e: &TrainError| {
		matches!(e, TrainError::Checkpoint(CheckpointError::OtherClass { recorded, running, .. })
			if recorded == "cpu/riscv64-rvv/k2/v0.1.0" && *running == molting_engine::backend::cpu::class())
	};
	let err = resume(&dir, &Cpu, RunOptions::default()).err().expect("refused");
	assert!(other_class(&err), "{err}");
	assert!(err.to_string().contains("cpu/riscv64-rvv"), "the message names the class: {err}");
	let err = replay(&dir, 0, &Cpu).err().expect("refused");
	assert!(other_class(&err), "{err}");
}

#[test]
fn eval_scores_each_conversation_alone_whatever_seq_len_and_file_order() {
	use molting_engine::engine::{Batch, Engine};
	let f = Fixture::new(|s| s);
	let job = f.prepare().unwrap();
	let adapter = job.adapter(&{
		let mut p = job.initial_state(&Cpu).params;
		p.iter_mut().enumerate().for_each(|(i, x)| *x += ((i % 7) as f32 - 3.0) * 1e-2);
		p
	});
	let base = job.evaluate_with(&Cpu, Some(&adapter)).unwrap();
	// One conversation at a time, straight through the engine: each conversation's sum
	// the same bits as in the packed eval.
	let engine = Engine::new(&Cpu, &job.model, Some(&adapter), 1024);
	let each = job.evaluate_each(&Cpu, Some(&adapter));
	let (mut sum, mut count, mut bytes) = (0f64, 0usize, 0usize);
	for (e, &(packed_sum, packed_count)) in job.eval.iter().zip(&each) {
		let n = e.ids.len();
		let targets = (1..=n).map(|i| if i < n && e.train[i] { e.ids[i] as i32 } else { -1 }).collect();
		let l = engine.step(&Batch::unpacked(e.ids.clone(), targets, 1, n), None, None);
		assert_eq!((l.sum.to_bits(), l.count), (packed_sum.to_bits(), packed_count), "line {}", e.line);
		sum += l.sum;
		count += l.count;
		bytes += e.bytes;
	}
	assert_eq!((base.tokens, base.bytes), (count, bytes));
	assert!((base.loss - sum / count as f64).abs() < 1e-12, "{} vs {}", base.loss, sum / count as f64);
	assert!((base.bits_per_byte - sum / std::f64::consts::LN_2 / bytes as f64).abs() < 1e-12);
	assert!((base.perplexity - base.loss.exp()).abs() < 1e-9 * base.perplexity);

	// Another seq_len and the eval file reversed: the same bits.
	let text = std::fs::read_to_string(f.path("tiny.jsonl")).unwrap();
	let reversed: String = text.lines().rev().map(|l| format!("{l}\n")).collect();
	std::fs::write(f.path("eval.jsonl"), &reversed).unwrap();
	let hash = sha256_file(&f.path("eval.jsonl")).unwrap();
	let data = sha256_file(&f.path("tiny.jsonl")).unwrap();
	f.write_spec(|s| {
		s.replace("seq_len = 256", "seq_len = 300")
			.replace("eval = \"tiny.jsonl\"", "eval = \"eval.jsonl\"")
			.replace(&format!("eval_sha256 = \"{data}\""), &format!("eval_sha256 = \"{hash}\""))
	});
	let other = f.prepare().unwrap();
	assert_eq!(other.recipe.train.seq_len, 300);
	assert_ne!(other.eval[0].ids, job.eval[0].ids, "the order did change");
	let again = other.evaluate_with(&Cpu, Some(&adapter)).unwrap();
	assert_eq!(again.loss.to_bits(), base.loss.to_bits());
	assert_eq!(again, base);
}

#[test]
fn conversations_longer_than_seq_len_are_cut_with_a_warning_that_names_them() {
	let f = Fixture::new(|s| s.replace("seq_len = 256", "seq_len = 150"));
	let job = f.prepare().unwrap();
	assert!(!job.warnings.is_empty());
	assert!(
		job.warnings.iter().all(|w| w.contains("tiny.jsonl:") && w.contains("seq_len = 150")),
		"{:?}",
		job.warnings
	);
	// Every row is whole conversations: positions restart only at conversation starts.
	for row in &job.train_rows {
		assert_eq!(row.positions[0], 0);
		assert!(row.positions.windows(2).all(|w| w[1] == 0 || w[1] == w[0] + 1));
	}
}
