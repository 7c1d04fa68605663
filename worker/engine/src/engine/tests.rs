use super::*;
use crate::backend::cpu::Cpu;
use crate::backend::Backend;
use crate::lora::{Adapter, LoraConfig, Target};
use crate::rng::Rng;
use crate::testing::{random_model, tiny_config};

fn batch(vocab: usize, b: usize, t: usize, seed: u64) -> Batch {
	let mut r = Rng::new(seed);
	let tokens: Vec<u32> = (0..b * t).map(|_| r.below(vocab) as u32).collect();
	// Every third target ignored, like the non-assistant tokens of a chat.
	let targets = (0..b * t).map(|i| if i % 3 == 1 { -1 } else { r.below(vocab) as i32 }).collect();
	Batch::unpacked(tokens, targets, b, t)
}

/// An adapter on every target with random `B` too (PEFT starts `B` at zero, which would
/// make `∂L/∂A` vanish and hide bugs).
fn random_adapter(model: &Model, dropout: f32) -> Adapter {
	let cfg = LoraConfig { rank: 2, alpha: 4.0, dropout, targets: Target::ALL.to_vec() };
	let mut a = Adapter::init(&model.config, cfg, 5);
	let mut r = Rng::new(9);
	a.params.iter_mut().for_each(|p| *p = r.uniform() * 0.6 - 0.3);
	a
}

/// A batch of two rows: the first holds two documents (4 and 2 tokens), the second one.
fn packed_batch(vocab: usize, seed: u64) -> Batch {
	let mut b = batch(vocab, 2, 6, seed);
	b.positions = vec![0, 1, 2, 3, 0, 1, 0, 1, 2, 3, 4, 5];
	// No target across the boundary: the first document's last token predicts nothing.
	b.targets[3] = -1;
	b
}

/// Every adapter coordinate's gradient of the summed loss against a central finite
/// difference, each within its own tolerance (`|fd − g| ≤ 2e-3 + 2e-2·|g|`).
fn fd_check(model: &Model, adapter: &Adapter, dropout_key: Option<u64>) {
	let b = packed_batch(model.config.vocab_size, 1);
	let mut grads = vec![0f32; adapter.params.len()];
	let engine = Engine::new(&Cpu, model, Some(adapter), 16);
	let base = engine.step(&b, dropout_key, Some((&mut grads, 1.0)));
	assert!(base.count > 0);
	let loss_at = |params: &[f32]| {
		let mut a = adapter.clone();
		a.params.copy_from_slice(params);
		Engine::new(&Cpu, model, Some(&a), 16).step(&b, dropout_key, None).sum
	};
	let h = 1e-2f32;
	let mut p = adapter.params.clone();
	for s in &adapter.layout.slots {
		for i in s.a..s.b + s.out_dim * adapter.layout.rank {
			let orig = p[i];
			p[i] = orig + h;
			let up = loss_at(&p);
			p[i] = orig - h;
			let down = loss_at(&p);
			p[i] = orig;
			let fd = ((up - down) / (2.0 * h as f64)) as f32;
			let err = (fd - grads[i]).abs();
			let which = if i < s.b { format!("A[{}]", i - s.a) } else { format!("B[{}]", i - s.b) };
			assert!(
				err <= 2e-3 + 2e-2 * grads[i].abs(),
				"layer {} {:?} {which}: analytic {} vs finite difference {fd}",
				s.layer,
				s.target,
				grads[i]
			);
		}
	}
}

#[test]
fn model_gradients_match_finite_differences() {
	let model = random_model(tiny_config(32), 3);
	fd_check(&model, &random_adapter(&model, 0.0), None);
}

#[test]
fn model_gradients_match_finite_differences_with_dropout_and_qkv_bias() {
	let mut cfg = tiny_config(32);
	cfg.attention_bias = true;
	cfg.tie_word_embeddings = false;
	let model = random_model(cfg, 4);
	fd_check(&model, &random_adapter(&model, 0.25), Some(77));
}

#[test]
fn a_fresh_adapter_leaves_the_model_unchanged_and_merging_matches_the_branch() {
	let model = random_model(tiny_config(32), 3);
	let b = batch(32, 1, 5, 2);
	let base = Engine::new(&Cpu, &model, None, 8).logits(&b.tokens, 1, 5);
	let fresh = Adapter::init(
		&model.config,
		LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: vec![Target::Q, Target::V] },
		1,
	);
	assert_eq!(Engine::new(&Cpu, &model, Some(&fresh), 8).logits(&b.tokens, 1, 5), base, "B = 0 at init");

	let trained = random_adapter(&model, 0.0);
	let with_branch = Engine::new(&Cpu, &model, Some(&trained), 8).logits(&b.tokens, 1, 5);
	let mut merged = model.clone();
	trained.merge_into(&mut merged, &Cpu);
	let via_merge = Engine::new(&Cpu, &merged, None, 8).logits(&b.tokens, 1, 5);
	let diff = with_branch.iter().zip(&via_merge).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
	assert!(diff < 1e-4, "merged weights give the same logits (max diff {diff})");
	assert_ne!(with_branch, base);
}

#[test]
fn a_conversation_never_sees_the_others_in_its_row() {
	// Three conversations in one row (lengths 7, 5, 8) and a second row; the middle one is
	// changed (other tokens, same length): every other conversation's logits and losses
	// stay the same to the bit, and the changed one's are what it gives alone.
	let model = random_model(tiny_config(64), 8);
	let adapter = random_adapter(&model, 0.0);
	let engine = Engine::new(&Cpu, &model, Some(&adapter), 24);
	let lens = [7usize, 5, 8];
	let mut r = Rng::new(3);
	let tokens: Vec<u32> = (0..40).map(|_| r.below(64) as u32).collect();
	let targets: Vec<i32> = (0..40).map(|i| if i % 5 == 4 { -1 } else { r.below(64) as i32 }).collect();
	let mut positions: Vec<u32> = lens.iter().flat_map(|&n| 0..n as u32).collect();
	positions.extend(0..20);
	let a = Batch { tokens: tokens.clone(), targets: targets.clone(), positions: positions.clone(), batch: 2, seq: 20 };
	let mut b = a.clone();
	for t in &mut b.tokens[7..12] {
		*t = (*t + 17) % 64;
	}
	let v = model.config.vocab_size;
	let (la, lb) = (engine.logits_of(&a), engine.logits_of(&b));
	let (ta, tb) = (engine.token_losses(&a), engine.token_losses(&b));
	let unchanged = (0..7).chain(12..40);
	for i in unchanged {
		assert_eq!(la[i * v..(i + 1) * v], lb[i * v..(i + 1) * v], "logits of token {i}");
		assert_eq!(ta[i].to_bits(), tb[i].to_bits(), "loss of token {i}");
	}
	assert_ne!(la[7 * v..12 * v], lb[7 * v..12 * v], "the changed conversation's logits changed");
	// The changed conversation alone, at positions 0..5 of a row of its own.
	let alone = Batch {
		tokens: b.tokens[7..12].to_vec(),
		targets: b.targets[7..12].to_vec(),
		positions: (0..5).collect(),
		batch: 1,
		seq: 5,
	};
	assert_eq!(engine.logits_of(&alone), lb[7 * v..12 * v], "packed = alone, to the bit");
	// Unpacked, the same tokens would see each other: packing is not a no-op.
	let unpacked = Batch::unpacked(tokens, targets, 2, 20);
	assert_ne!(engine.logits_of(&unpacked)[7 * v..12 * v], la[7 * v..12 * v]);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
	let model = random_model(tiny_config(300), 6);
	let adapter = random_adapter(&model, 0.1);
	// Big enough that matmuls split into several tiles and attention into several tasks.
	let mut b = batch(300, 3, 64, 3);
	// Documents of 40 and 24 tokens in the first row.
	b.positions[40..64].iter_mut().enumerate().for_each(|(i, p)| *p = i as u32);
	let run = |threads: usize| {
		let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
		pool.install(|| {
			let mut grads = vec![0f32; adapter.params.len()];
			let loss = Engine::new(&Cpu, &model, Some(&adapter), 64).step(&b, Some(5), Some((&mut grads, 1.0)));
			(loss.sum.to_bits(), grads.iter().map(|g| g.to_bits()).collect::<Vec<_>>())
		})
	};
	let one = run(1);
	assert_eq!(one, run(2), "1 vs 2 threads");
	assert_eq!(one, run(3), "1 vs 3 threads");
	assert_eq!(one, run(1), "the same run twice");
}

#[test]
fn the_bf16_path_tracks_fp32_and_is_reproducible_too() {
	let Some(bf) = crate::backend::cpu::CpuBf16::new() else {
		eprintln!("no AVX512_BF16 here: the bf16 backend is not available");
		return;
	};
	let model = random_model(tiny_config(300), 6);
	let adapter = random_adapter(&model, 0.1);
	let b = batch(300, 3, 64, 3);
	let run = |be: &dyn Backend, threads: usize| {
		let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
		pool.install(|| {
			let mut grads = vec![0f32; adapter.params.len()];
			let loss = Engine::new(be, &model, Some(&adapter), 64).step(&b, Some(5), Some((&mut grads, 1.0)));
			(loss, grads)
		})
	};
	let (l32, g32) = run(&Cpu, 2);
	let (l16, g16) = run(&bf, 2);
	let (l16b, g16b) = run(&bf, 1);
	assert_eq!((l16.sum.to_bits(), &g16), (l16b.sum.to_bits(), &g16b), "bf16: 1 vs 2 threads");
	// Stated tolerance of the bf16 class against fp32: the loss within 1% relative, the
	// gradient within 5% in relative L2 norm (bf16 keeps 8 bits of each frozen weight and
	// activation entering a frozen product; everything else is f32).
	let rel_loss = ((l16.sum - l32.sum) / l32.sum).abs();
	let diff: f64 = g16.iter().zip(&g32).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
	let norm: f64 = g32.iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
	assert!(rel_loss < 1e-2, "loss {} vs {} ({rel_loss:.2e})", l16.sum, l32.sum);
	assert!(diff / norm < 5e-2, "gradient relative error {:.3e}", diff / norm);
	assert!(rel_loss > 0.0, "the bf16 path does compute in bf16");
	eprintln!("bf16 vs fp32: loss {rel_loss:.2e} relative, gradient {:.2e} relative L2", diff / norm);
}
