//! `molt-worker bench`: the real training step of a job (by default the persona demo,
//! `jobs/keeper.toml`: its packed Keeper rows, its LoRA, dropout and AdamW) timed step by
//! step, with the figures the PyTorch reference (`scripts/bench/torch_reference.py`) prints
//! for the same batches: raw and trained (assistant) tokens per second, peak memory, and
//! the useful GFLOP/s against the best GEMM rate measured in the same process.

use std::time::Instant;

use crate::backend::Backend;
use crate::engine::Batch;
use crate::lora::LoraConfig;
use crate::model::ModelConfig;
use crate::rng::Rng;
use crate::train::Job;

/// What a bench measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
	pub backend: String,
	pub threads: usize,
	pub batch: usize,
	pub seq: usize,
	pub grad_accum: usize,
	pub rank: usize,
	pub targets: Vec<String>,
	pub steps: usize,
	/// Median of the timed steps.
	pub step_seconds: f64,
	/// Every token slot of the rows (padding included) per second.
	pub tokens_per_second: f64,
	/// Predicted (assistant) tokens per second.
	pub trained_tokens_per_second: f64,
	/// Useful work of one step (see [`useful_flops`]), mean over the timed steps.
	pub useful_gflops_per_step: f64,
	pub useful_gflops_per_second: f64,
	/// The best rate of this backend's frozen-weight GEMM on the model's big shapes, measured
	/// in the same process, and the step's useful rate as a share of it.
	pub best_gemm_gflops: f64,
	pub share_of_best_gemm: f64,
	pub peak_rss_mib: f64,
	pub loss_first: f64,
	pub loss_last: f64,
}

/// Useful FLOPs of one training step on `batches` (a multiply-add is 2): the frozen linear
/// layers forward and their input gradients (not layer 0's q, k, v, whose input needs
/// none) on every real token (padding excluded); LoRA forward and backward; attention
/// over the block-diagonal-causal part only (each token against itself and the tokens
/// before it in its own conversation); the LM head forward and backward on predicted
/// tokens only.
pub fn useful_flops(c: &ModelConfig, lora: &LoraConfig, batches: &[Batch]) -> f64 {
	let (h, f, qd, kvd) = (c.hidden_size as f64, c.intermediate_size as f64, c.q_dim() as f64, c.kv_dim() as f64);
	let linear = h * qd + 2.0 * h * kvd + qd * h + 3.0 * h * f;
	let qkv = h * qd + 2.0 * h * kvd;
	let r = lora.rank as f64;
	let lora_params: f64 = lora.targets.iter().map(|t| t.dims(c)).map(|(i, o)| r * (i + o) as f64).sum();
	let mut total = 0.0;
	for b in batches {
		let (mut tokens, mut pairs) = (0f64, 0f64);
		for r in 0..b.batch {
			let positions = &b.positions[r * b.seq..(r + 1) * b.seq];
			let targets = &b.targets[r * b.seq..(r + 1) * b.seq];
			// Documents by where positions restart; the padding after the last
			// conversation is the one document without a target (after the first).
			let mut start = 0;
			for end in (1..=b.seq).filter(|&i| i == b.seq || positions[i] == 0) {
				if start == 0 || targets[start..end].iter().any(|&t| t >= 0) {
					let len = (end - start) as f64;
					tokens += len;
					pairs += len * (len + 1.0) / 2.0;
				}
				start = end;
			}
		}
		let counted = b.counted() as f64;
		let layers = c.num_layers as f64;
		let linears = 2.0 * tokens * linear * (2.0 * layers) - 2.0 * tokens * qkv;
		let lora_work = 6.0 * tokens * lora_params * layers;
		let attn = 12.0 * pairs * c.head_dim as f64 * c.num_heads as f64 * layers;
		let head = 4.0 * counted * h * c.vocab_size as f64;
		total += linears + lora_work + attn + head;
	}
	total
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
	std::fs::read_to_string("/proc/self/status")
		.ok()
		.and_then(|s| {
			s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
		})
		.map_or(0.0, |kib| kib / 1024.0)
}

/// Runs `warmup + steps` real training steps of `job`; `on_batches` sees each step's
/// batches first (for the reference to train on the same ones).
pub fn run(
	backend: &dyn Backend,
	job: &Job,
	steps: usize,
	warmup: usize,
	mut on_batches: impl FnMut(&[Batch]),
) -> BenchReport {
	let hp = &job.recipe.train;
	let lora = job.recipe.lora_config();
	let best_gemm = matmul_gflops(backend, &job.model.config, hp.batch_size * hp.seq_len)
		.into_iter()
		.map(|(_, g)| g)
		.fold(0f64, f64::max);
	// Freeze (pack) the weights before the clock starts: that is done once per run.
	let _ = job.frozen_for(backend);
	let mut state = job.initial_state(backend);
	let (mut times, mut losses, mut flops, mut counted) = (Vec::new(), Vec::new(), 0f64, 0usize);
	for i in 0..warmup + steps {
		let (batches, _) = job.step_batches(&state);
		on_batches(&batches);
		let started = Instant::now();
		let report = job.step(backend, &mut state);
		let secs = started.elapsed().as_secs_f64();
		losses.push(report.loss);
		if i >= warmup {
			times.push(secs);
			flops += useful_flops(&job.model.config, &lora, &batches);
			counted += report.tokens_counted;
		}
	}
	times.sort_by(f64::total_cmp);
	let median = times[times.len() / 2];
	let per_step = flops / steps as f64;
	let tokens = (hp.batch_size * hp.seq_len * hp.grad_accum) as f64;
	BenchReport {
		backend: backend.class(),
		threads: rayon::current_num_threads(),
		batch: hp.batch_size,
		seq: hp.seq_len,
		grad_accum: hp.grad_accum,
		rank: lora.rank,
		targets: job.recipe.lora.targets.clone(),
		steps,
		step_seconds: median,
		tokens_per_second: tokens / median,
		trained_tokens_per_second: counted as f64 / steps as f64 / median,
		useful_gflops_per_step: per_step / 1e9,
		useful_gflops_per_second: per_step / 1e9 / median,
		best_gemm_gflops: best_gemm,
		share_of_best_gemm: per_step / 1e9 / median / best_gemm,
		peak_rss_mib: peak_rss_mib(),
		loss_first: losses[0],
		loss_last: *losses.last().unwrap_or(&0.0),
	}
}

/// GFLOP/s of the frozen-weight products a step of `c` runs (`x Wᵀ`, `dY W`, the LM head),
/// best of five each.
pub fn matmul_gflops(backend: &dyn Backend, c: &ModelConfig, rows: usize) -> Vec<(String, f64)> {
	let mut rng = Rng::new(5);
	let mut out = Vec::new();
	let (h, f, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
	let shapes = [
		("x·Wqᵀ", rows, h, c.q_dim(), false),
		("x·Wgateᵀ", rows, h, f, false),
		("dY·Wgate", rows, f, h, true),
		("lm head", 256, h, v, false),
		("lm head dX", 256, v, h, true),
	];
	for (name, m, k, n, backward) in shapes {
		let (out_dim, in_dim) = if backward { (k, n) } else { (n, k) };
		let w: Vec<f32> = (0..out_dim * in_dim).map(|_| rng.uniform() - 0.5).collect();
		let frozen = backend.freeze(&w, out_dim, in_dim);
		let a: Vec<f32> = (0..m * k).map(|_| rng.uniform() - 0.5).collect();
		let a = backend.upload_f32(&a);
		let mut cbuf = backend.zeros_f32(m * n);
		let mut best = f64::INFINITY;
		// One untimed call (first touches of the buffers), then the best of five; one
		// element read back is what waits for a device to finish (nothing on the CPU).
		for rep in 0..6 {
			let started = Instant::now();
			match backward {
				false => backend.frozen_forward(cbuf.view_mut(), a.view(), &frozen, m, false),
				true => backend.frozen_backward(cbuf.view_mut(), a.view(), &frozen, m, false),
			}
			let _ = backend.download_f32(cbuf.slice(0..1));
			if rep > 0 {
				best = best.min(started.elapsed().as_secs_f64());
			}
		}
		out.push((format!("{name} {m}x{k}x{n}"), 2.0 * (m * k * n) as f64 / best / 1e9));
	}
	out
}
