//! `molt-worker bench`: the cost of LoRA training steps on a real model, in the figures the
//! PyTorch reference (`scripts/bench/torch_reference.py`) prints too.

use std::time::Instant;

use crate::backend::Backend;
use crate::engine::{Batch, Engine};
use crate::lora::{Adapter, LoraConfig, Target};
use crate::model::{Model, ModelConfig};
use crate::optim::{clip_grad_norm, AdamW};
use crate::rng::Rng;

/// What a bench measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
	pub backend: String,
	pub threads: usize,
	pub batch: usize,
	pub seq: usize,
	pub rank: usize,
	pub steps: usize,
	pub step_seconds: f64,
	pub tokens_per_second: f64,
	pub gflops_per_step: f64,
	pub achieved_gflops: f64,
	pub peak_rss_mib: f64,
	pub loss_first: f64,
	pub loss_last: f64,
}

/// FLOPs of one training step (forward, and the backward to activations and adapters; the
/// frozen weights get no gradients), counting a multiply-add as 2.
pub fn step_flops(c: &ModelConfig, lora: &LoraConfig, batch: usize, seq: usize) -> f64 {
	let n = (batch * seq) as f64;
	let (h, f) = (c.hidden_size as f64, c.intermediate_size as f64);
	let (qd, kvd) = (c.q_dim() as f64, c.kv_dim() as f64);
	let linears = h * qd + 2.0 * h * kvd + qd * h + 3.0 * h * f;
	let attn = 4.0 * batch as f64 * c.num_heads as f64 * (seq * seq) as f64 * c.head_dim as f64;
	let r = lora.rank as f64;
	let lora_params: f64 = lora
		.targets
		.iter()
		.map(|t| {
			let (i, o) = t.dims(c);
			r * (i + o) as f64
		})
		.sum();
	let per_layer_fwd = 2.0 * n * linears + attn + 2.0 * n * lora_params;
	// Backward: input gradients (as much as the forward), attention twice, LoRA weight grads.
	let per_layer_bwd = 2.0 * n * linears + 2.0 * attn + 4.0 * n * lora_params;
	let head = 2.0 * n * h * c.vocab_size as f64;
	c.num_layers as f64 * (per_layer_fwd + per_layer_bwd) + 2.0 * head
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

/// Runs `warmup + steps` training steps on random tokens (every target counted).
pub fn run(
	backend: &dyn Backend,
	model: &Model,
	batch: usize,
	seq: usize,
	rank: usize,
	steps: usize,
	warmup: usize,
) -> BenchReport {
	let lora = LoraConfig {
		rank,
		alpha: 2.0 * rank as f32,
		dropout: 0.0,
		targets: vec![Target::Q, Target::K, Target::V, Target::O],
	};
	let mut adapter = Adapter::init(&model.config, lora.clone(), 1);
	let mut rng = Rng::new(2);
	let vocab = model.config.vocab_size;
	let tokens: Vec<u32> = (0..batch * (seq + 1)).map(|_| rng.below(vocab) as u32).collect();
	let rows: Vec<&[u32]> = tokens.chunks(seq + 1).collect();
	let b = Batch::unpacked(
		rows.iter().flat_map(|r| r[..seq].iter().copied()).collect(),
		rows.iter().flat_map(|r| r[1..].iter().map(|&t| t as i32)).collect(),
		batch,
		seq,
	);
	let hp = crate::spec::TrainSection {
		steps: (warmup + steps) as u64,
		batch_size: batch,
		seq_len: seq,
		grad_accum: 1,
		lr: 1e-3,
		warmup_steps: 0,
		min_lr_ratio: 1.0,
		weight_decay: 0.0,
		max_grad_norm: 1.0,
		beta1: 0.9,
		beta2: 0.999,
		eps: 1e-8,
		seed: 0,
		checkpoint_every: 1,
	};
	let mut opt = AdamW::new(adapter.params.len());
	let mut losses = Vec::new();
	let mut timed = 0.0;
	for i in 0..warmup + steps {
		let started = Instant::now();
		let mut grads = vec![0f32; adapter.params.len()];
		let loss = Engine::new(backend, model, Some(&adapter), seq).step(&b, None, Some((&mut grads, 1.0)));
		clip_grad_norm(&mut grads, 1.0);
		opt.update(&mut adapter.params, &grads, 1e-3, i as u64 + 1, &hp.adamw());
		if i >= warmup {
			timed += started.elapsed().as_secs_f64();
		}
		losses.push(loss.mean());
	}
	let step_seconds = timed / steps.max(1) as f64;
	let flops = step_flops(&model.config, &lora, batch, seq);
	BenchReport {
		backend: backend.class(),
		threads: rayon::current_num_threads(),
		batch,
		seq,
		rank,
		steps,
		step_seconds,
		tokens_per_second: (batch * seq) as f64 / step_seconds,
		gflops_per_step: flops / 1e9,
		achieved_gflops: flops / 1e9 / step_seconds,
		peak_rss_mib: peak_rss_mib(),
		loss_first: losses[0],
		loss_last: *losses.last().unwrap_or(&0.0),
	}
}

/// GFLOP/s of the matmul shapes a step of `c` runs (`x Wᵀ`, `dY W`, the LM head), for
/// tuning the kernels.
pub fn matmul_gflops(backend: &dyn Backend, c: &ModelConfig, rows: usize) -> Vec<(String, f64)> {
	let mut rng = Rng::new(5);
	let mut out = Vec::new();
	let shapes = [
		("x·Wqᵀ", rows, c.hidden_size, c.q_dim(), 0),
		("x·Wgateᵀ", rows, c.hidden_size, c.intermediate_size, 0),
		("dY·Wgate", rows, c.intermediate_size, c.hidden_size, 1),
		("lm head", 256, c.hidden_size, c.vocab_size, 0),
		("lm head dX", 256, c.vocab_size, c.hidden_size, 1),
	];
	for (name, m, k, n, kind) in shapes {
		let a: Vec<f32> = (0..m * k).map(|_| rng.uniform()).collect();
		let b: Vec<f32> = (0..k * n).map(|_| rng.uniform()).collect();
		let mut cbuf = vec![0f32; m * n];
		let reps = 3;
		let started = Instant::now();
		for _ in 0..reps {
			match kind {
				0 => backend.matmul_nt(&mut cbuf, &a, &b, m, k, n, false),
				_ => backend.matmul_nn(&mut cbuf, &a, &b, m, k, n, false),
			}
		}
		let secs = started.elapsed().as_secs_f64() / reps as f64;
		out.push((format!("{name} {m}x{k}x{n}"), 2.0 * (m * k * n) as f64 / secs / 1e9));
	}
	out
}
