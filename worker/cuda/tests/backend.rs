//! The CUDA backend as the engine runs it, against the CPU reference: a whole training
//! step's loss and every adapter gradient, the logits of a forward, generation through the
//! KV cache, a training run twice to the same hash and resumed to it. They need a GPU, its
//! driver, libnvrtc and libcublas; without one each prints `SKIPPED` and why.
//!
//! Tolerances: the GPU's sums run in other orders than the CPU's (tree reductions over a
//! block, cuBLAS's blocking), each in f32; per element the two agree to a few units in the
//! last place of the sums they come from. A gradient is compared coordinate by coordinate,
//! each within `1e-3` of its own magnitude plus `1e-4` of the root mean square of its
//! LoRA tensor (a coordinate near zero is the difference of larger terms).

use molting_cuda::Cuda;
use molting_engine::backend::cpu::{Cpu, CpuBf16};
use molting_engine::backend::{AttnShape, Backend, OnHost};
use molting_engine::engine::{Batch, Engine};
use molting_engine::generate::Generator;
use molting_engine::lora::{Adapter, LoraConfig, Target};
use molting_engine::model::{Model, ModelConfig};
use molting_engine::rng::Rng;
use molting_engine::spec::Precision;
use molting_engine::testing::{random_model, tiny_config, write_tiny_job};
use molting_engine::train::{self, Job, RunOptions};

fn cuda() -> Option<Cuda> {
	cuda_with(Precision::Fp32)
}

fn cuda_with(precision: Precision) -> Option<Cuda> {
	match Cuda::new(precision) {
		Ok(c) => {
			eprintln!("on {} ({})", c.device, c.class());
			Some(c)
		},
		Err(e) if e.is_unavailable() => {
			eprintln!("SKIPPED: {e}");
			None
		},
		Err(e) => panic!("a GPU here, but the CUDA backend cannot be made: {e}"),
	}
}

/// An adapter on every target with random `B` too (a zero `B` would hide `∂L/∂A`).
fn random_adapter(model: &Model, dropout: f32) -> Adapter {
	let cfg = LoraConfig { rank: 4, alpha: 8.0, dropout, targets: Target::ALL.to_vec() };
	let mut a = Adapter::init(&model.config, cfg, 5);
	let mut r = Rng::new(9);
	a.params.iter_mut().for_each(|p| *p = r.uniform() * 0.6 - 0.3);
	a
}

/// Two rows of 40: the first holds documents of 25 and 15 tokens; every third target
/// ignored, as a chat's non-assistant tokens are.
fn packed_batch(vocab: usize) -> Batch {
	packed_rows(vocab, 40)
}

/// Two rows of `seq` (at least 26), the first holding documents of 25 and `seq − 25`.
fn packed_rows(vocab: usize, seq: usize) -> Batch {
	let mut r = Rng::new(3);
	let n = 2 * seq;
	let tokens = (0..n).map(|_| r.below(vocab) as u32).collect();
	let mut targets: Vec<i32> = (0..n).map(|i| if i % 3 == 1 { -1 } else { r.below(vocab) as i32 }).collect();
	targets[24] = -1;
	let mut b = Batch::unpacked(tokens, targets, 2, seq);
	b.positions[25..seq].iter_mut().enumerate().for_each(|(i, p)| *p = i as u32);
	b
}

/// Each element within `rel` of the largest magnitude of its row of `row` elements.
#[track_caller]
fn close_by_row(what: &str, got: &[f32], want: &[f32], row: usize, rel: f32) {
	assert_eq!(got.len(), want.len(), "{what}: length");
	for (r, (g, w)) in got.chunks(row).zip(want.chunks(row)).enumerate() {
		let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
		for (i, (a, b)) in g.iter().zip(w).enumerate() {
			assert!((a - b).abs() <= rel * scale, "{what}: row {r} element {i}: GPU {a} vs CPU {b} (row scale {scale})");
		}
	}
}

/// Every coordinate of `got` within `1e-3` of its own magnitude plus `1e-4` of the RMS of
/// its LoRA tensor in `want`.
#[track_caller]
fn same_gradients(what: &str, adapter: &Adapter, got: &[f32], want: &[f32]) {
	let layout = &adapter.layout;
	for s in &layout.slots {
		for (name, range) in [("A", layout.a_range(s)), ("B", layout.b_range(s))] {
			let (c, g) = (&want[range.clone()], &got[range]);
			let rms = (c.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / c.len() as f64).sqrt() as f32;
			assert!(rms > 0.0, "layer {} {:?} {name}: a gradient to compare", s.layer, s.target);
			for (i, (x, y)) in g.iter().zip(c).enumerate() {
				let tol = 1e-3 * y.abs() + 1e-4 * rms;
				assert!((x - y).abs() <= tol, "{what}: layer {} {:?} {name}[{i}]: GPU {x} vs CPU {y} (tolerance {tol:.2e})", s.layer, s.target);
			}
		}
	}
}

#[test]
fn a_training_step_gives_the_cpus_loss_and_every_adapter_gradient() {
	let Some(gpu) = cuda() else { return };
	let model = random_model(tiny_config(300), 6);
	let b = packed_batch(300);
	for dropout in [0.0, 0.1] {
		let adapter = random_adapter(&model, dropout);
		let step = |be: &dyn Backend| {
			let mut grads = vec![0f32; adapter.params.len()];
			let loss = Engine::new(be, &model, Some(&adapter), 64).step(&b, Some(5), Some((&mut grads, 0.25)));
			(loss, grads)
		};
		let ((lc, gc), (lg, gg)) = (step(&Cpu), step(&gpu));
		assert_eq!(lg.count, lc.count);
		assert!((lg.sum - lc.sum).abs() <= 1e-5 * lc.sum.abs(), "dropout {dropout}: loss GPU {} vs CPU {}", lg.sum, lc.sum);
		same_gradients(&format!("dropout {dropout}"), &adapter, &gg, &gc);
		// The same inputs twice: the same bits.
		let again = step(&gpu);
		assert!(again.0.sum.to_bits() == lg.sum.to_bits() && again.1 == gg, "dropout {dropout}: a second GPU step differs");
	}
}

#[test]
fn a_long_batch_with_biases_gives_the_cpus_loss_and_gradients_across_lm_head_blocks() {
	let Some(gpu) = cuda() else { return };
	// Qwen2-style q, k, v biases (add_bias), and 2 × 200 tokens of which 266 have a target:
	// the LM head's second block of rows (offsets into the logits, targets and losses).
	let model = random_model(ModelConfig { attention_bias: true, ..tiny_config(300) }, 8);
	let b = packed_rows(300, 200);
	assert!(b.counted() > 256, "{} counted rows", b.counted());
	let adapter = random_adapter(&model, 0.1);
	let step = |be: &dyn Backend| {
		let mut grads = vec![0f32; adapter.params.len()];
		let loss = Engine::new(be, &model, Some(&adapter), 256).step(&b, Some(7), Some((&mut grads, 1.0 / 266.0)));
		(loss, grads, Engine::new(be, &model, Some(&adapter), 256).token_losses(&b))
	};
	let ((lc, gc, tc), (lg, gg, tg)) = (step(&Cpu), step(&gpu));
	assert!((lg.sum - lc.sum).abs() <= 1e-5 * lc.sum.abs(), "loss GPU {} vs CPU {}", lg.sum, lc.sum);
	for (i, (g, c)) in tg.iter().zip(&tc).enumerate() {
		assert!((g - c).abs() <= 1e-5 * c.abs().max(1.0), "row {i}'s loss: GPU {g} vs CPU {c}");
		assert_eq!(*g == 0.0, *c == 0.0, "row {i}: a loss where one is taken, 0 elsewhere");
	}
	same_gradients("long batch", &adapter, &gg, &gc);
}

#[test]
fn the_forward_and_generation_through_the_kv_cache_give_the_cpus_logits() {
	let Some(gpu) = cuda() else { return };
	let model = random_model(tiny_config(300), 21);
	let adapter = random_adapter(&model, 0.0);
	let b = packed_batch(300);
	let v = model.config.vocab_size;
	let logits = |be: &dyn Backend| Engine::new(be, &model, Some(&adapter), 64).logits_of(&b);
	close_by_row("logits", &logits(&gpu), &logits(&Cpu), v, 1e-5);
	let tokens: Vec<u32> = b.tokens[..30].to_vec();
	// A prefill, several tokens at once over a filled cache, then one at a time.
	let generate = |be: &dyn Backend| {
		let mut g = Generator::new(be, &model, Some(&adapter), 64);
		let mut out = g.feed(&tokens[..12]);
		out.extend(g.feed(&tokens[12..20]));
		for &t in &tokens[20..] {
			out.extend(g.feed(&[t]));
		}
		out
	};
	close_by_row("prefill and one token at a time", &generate(&gpu), &generate(&Cpu), v, 1e-5);
}

#[test]
fn the_tiny_job_trains_twice_to_one_hash_is_resumed_to_it_and_learns_as_on_the_cpu() {
	let Some(gpu) = cuda() else { return };
	let dir = tempfile::tempdir().unwrap();
	let spec = write_tiny_job(dir.path(), |s| s);
	let job = Job::prepare(&spec).unwrap();
	let run = |be: &dyn Backend, out: &str| train::train(&job, &dir.path().join(out), be, RunOptions::default()).unwrap().unwrap();
	let (a, b, cpu) = (run(&gpu, "a"), run(&gpu, "b"), run(&Cpu, "cpu"));
	assert_eq!(a.final_state_hash, b.final_state_hash, "two GPU runs, one hash");
	assert_eq!(a.backend, gpu.class());
	// Stopped at a checkpoint (as if killed) and resumed: the same hash.
	let stop = Some(job.recipe.train.checkpoint_every);
	let stopped = train::train(&job, &dir.path().join("c"), &gpu, RunOptions { stop_after: stop, on_step: None }).unwrap();
	assert!(stopped.is_none(), "stopped early");
	let (_, resumed) = train::resume(&dir.path().join("c"), &gpu, RunOptions::default()).unwrap();
	assert_eq!(resumed.unwrap().final_state_hash, a.final_state_hash, "resumed to the uninterrupted hash");
	// Another class, so other bits; the same training all the same.
	let (ga, ca) = (a.eval_loss_after().unwrap(), cpu.eval_loss_after().unwrap());
	assert!((ga - ca).abs() <= 1e-3 * ca, "eval loss after training: GPU {ga} vs CPU {ca}");
	assert!(ga < a.eval_loss_before().unwrap(), "the GPU run learned");
}

#[test]
fn the_bf16_products_give_the_cpu_bf16_classs_step_and_repeat_to_the_bit() {
	let Some(gpu) = cuda_with(Precision::Bf16) else { return };
	assert!(gpu.class().starts_with("cuda-bf16/"), "{}", gpu.class());
	let model = random_model(tiny_config(300), 6);
	let b = packed_batch(300);
	let adapter = random_adapter(&model, 0.1);
	let step = |be: &dyn Backend| {
		let mut grads = vec![0f32; adapter.params.len()];
		let loss = Engine::new(be, &model, Some(&adapter), 64).step(&b, Some(5), Some((&mut grads, 0.25)));
		(loss, grads)
	};
	let (lg, gg) = step(&gpu);
	let again = step(&gpu);
	assert!(again.0.sum.to_bits() == lg.sum.to_bits() && again.1 == gg, "a second bf16 GPU step differs");
	// Against the f32 reference: the error of rounding the products' inputs to bf16 (8 bits).
	let (lf, gf) = step(&Cpu);
	assert!((lg.sum - lf.sum).abs() <= 1e-2 * lf.sum.abs(), "bf16 loss {} vs f32 {}", lg.sum, lf.sum);
	// Against the CPU's bf16 class (the same rounding of the same inputs, f32 sums in
	// another order), where this CPU has it: at least ten times closer to it than to the
	// f32 reference (an f32 sum one ulp apart can round to the next bf16, 2⁻⁸ away, as it
	// enters the next product, so not to f32 precision).
	match CpuBf16::new() {
		Some(cpu16) => {
			let (lc, gc) = step(&cpu16);
			let to_f32 = (lf.sum - lc.sum).abs();
			assert!((lg.sum - lc.sum).abs() <= 0.1 * to_f32, "loss GPU bf16 {} vs CPU bf16 {} (bf16 to f32: {to_f32:.3e})", lg.sum, lc.sum);
			let layout = &adapter.layout;
			let norm = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
			for s in &layout.slots {
				for range in [layout.a_range(s), layout.b_range(s)] {
					let (c, g, f) = (&gc[range.clone()], &gg[range.clone()], &gf[range]);
					let (to_cpu16, to_f32) = (norm(g, c), norm(c, f));
					assert!(to_cpu16 <= 0.1 * to_f32, "layer {} {:?}: bf16 gradients GPU vs CPU bf16 {to_cpu16:.2e}, bf16 vs f32 {to_f32:.2e}", s.layer, s.target);
				}
			}
		},
		None => eprintln!("no AVX512_BF16 on this CPU: the bf16 gradients are not compared coordinate by coordinate"),
	}
}

/// Heavy (60 SmolLM2 steps on the GPU and on the CPU): `cargo test -p molting-cuda --test
/// backend -- --ignored --nocapture`.
#[test]
#[ignore]
fn the_persona_demo_trains_on_the_gpu_and_learns_what_the_cpu_learns() {
	let Some(gpu) = cuda() else { return };
	let model = molting_engine::spec::models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
	if !model.is_file() {
		eprintln!("SKIPPED: {} is not here (scripts/fetch-models.sh)", model.display());
		return;
	}
	// The demo's job (jobs/keeper.toml: SmolLM2-135M-Instruct, the Keeper persona), trained
	// on the GPU and on the CPU of the same machine; the times printed side by side.
	// From the source tree it was built in, or (a binary carried to a GPU machine by
	// scripts/gpu/prepare.sh) from the repository root it runs in.
	let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/keeper.toml");
	let spec = if built.is_file() { built } else { std::path::PathBuf::from("worker/jobs/keeper.toml") };
	let job = Job::prepare(&spec).unwrap_or_else(|e| panic!("{}: {e} (scripts/fetch-models.sh fetches SmolLM2)", spec.display()));
	let dir = tempfile::tempdir().unwrap();
	let timed = |be: &dyn Backend, out: &str| {
		let t0 = std::time::Instant::now();
		let s = train::train(&job, &dir.path().join(out), be, RunOptions::default()).unwrap().unwrap();
		(s, t0.elapsed().as_secs_f64())
	};
	let ((g, gt), (c, ct)) = (timed(&gpu, "gpu"), timed(&Cpu, "cpu"));
	eprintln!(
		"persona demo: {} steps in {gt:.1} s on {} ({}), {ct:.1} s on the CPU ({}, {} cores): {:.1}x",
		job.recipe.train.steps,
		gpu.device,
		gpu.class(),
		Cpu.class(),
		std::thread::available_parallelism().map_or(1, |n| n.get()),
		ct / gt
	);
	let (before, after, cpu_after) = (g.eval_loss_before().unwrap(), g.eval_loss_after().unwrap(), c.eval_loss_after().unwrap());
	assert!((before - c.eval_loss_before().unwrap()).abs() <= 1e-4 * before, "the base model's eval loss: GPU {before} vs CPU {}", c.eval_loss_before().unwrap());
	assert!(after < before, "the GPU run learned: {before} -> {after}");
	assert!((after - cpu_after).abs() <= 1e-2 * cpu_after, "eval loss after the demo: GPU {after} vs CPU {cpu_after}");
}

#[test]
fn attention_over_rows_past_the_default_shared_memory_gives_the_cpus() {
	let Some(gpu) = cuda() else { return };
	// 8,192 tokens: the backward's scores need 64 KiB of shared memory, over the default
	// 48 KiB, so this runs only with the opt-in the backend sets.
	let s = AttnShape { batch: 1, seq: 8192, heads: 2, kv_heads: 1, head_dim: 8 };
	assert!(gpu.max_train_row().unwrap() >= s.seq, "{:?}", gpu.max_train_row());
	let positions: Vec<u32> = (0..s.seq as u32).collect();
	let (nq, nkv) = (s.seq * s.heads * s.head_dim, s.seq * s.kv_heads * s.head_dim);
	let mut r = Rng::new(4);
	let mut random = |n: usize| (0..n).map(|_| r.uniform() * 2.0 - 1.0).collect::<Vec<f32>>();
	let (q, k, v, dout) = (random(nq), random(nkv), random(nkv), random(nq));
	let run = |be: OnHost| {
		let mut out = vec![0f32; nq];
		let saved = be.attention_forward(&mut out, &q, &k, &v, &positions, s);
		let (mut dq, mut dk, mut dv) = (vec![0f32; nq], vec![0f32; nkv], vec![0f32; nkv]);
		be.attention_backward(&mut dq, &mut dk, &mut dv, &dout, &out, &saved, &q, &k, &v, &positions, s);
		(out, dq, dk, dv)
	};
	let (g, c) = (run(OnHost(&gpu)), run(OnHost(&Cpu)));
	close_by_row("long attention out", &g.0, &c.0, s.head_dim, 1e-4);
	close_by_row("long attention dq", &g.1, &c.1, s.head_dim, 1e-3);
	close_by_row("long attention dk", &g.2, &c.2, s.head_dim, 1e-3);
	close_by_row("long attention dv", &g.3, &c.3, s.head_dim, 1e-3);
	// Generation after 12,300 cached positions: 49 KiB of scores.
	let (past, n) = (12_300usize, 3usize);
	let shape = AttnShape { batch: 1, seq: n, heads: 2, kv_heads: 1, head_dim: 8 };
	let (qn, kc, vc) = (random(n * 16), random((past + n) * 8), random((past + n) * 8));
	let cached = |be: OnHost| {
		let mut out = vec![0f32; n * 16];
		be.attention_cached(&mut out, &qn, &kc, &vc, past, n, shape);
		out
	};
	close_by_row("attention over a long cache", &cached(OnHost(&gpu)), &cached(OnHost(&Cpu)), 8, 1e-4);
}
