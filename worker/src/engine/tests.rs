use super::*;
use crate::backend::cpu::Cpu;
use crate::lora::{Adapter, LoraConfig, Target};
use crate::rng::Rng;
use crate::testing::{random_model, tiny_config};

fn batch(vocab: usize, b: usize, t: usize, seed: u64) -> Batch {
	let mut r = Rng::new(seed);
	let tokens: Vec<u32> = (0..b * t).map(|_| r.below(vocab) as u32).collect();
	// Every third target ignored, like the non-assistant tokens of a chat.
	let targets = (0..b * t).map(|i| if i % 3 == 1 { -1 } else { r.below(vocab) as i32 }).collect();
	Batch { tokens, targets, batch: b, seq: t }
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

fn fd_check(model: &Model, adapter: &Adapter, dropout_key: Option<u64>) {
	let b = batch(model.config.vocab_size, 2, 6, 1);
	let mut grads = vec![0f32; adapter.params.len()];
	let engine = Engine::new(&Cpu, model, Some(adapter), 16);
	let base = engine.step(&b, dropout_key, Some((&mut grads, 1.0)));
	assert!(base.count > 0);
	let loss_at = |params: &[f32]| {
		let mut a = adapter.clone();
		a.params.copy_from_slice(params);
		Engine::new(&Cpu, model, Some(&a), 16).step(&b, dropout_key, None).mean()
	};
	let scale = grads.iter().fold(1e-4f32, |m, g| m.max(g.abs()));
	let h = 1e-2f32;
	let mut checked = 0;
	// Every slot's A and B, a few coordinates each.
	for s in &adapter.layout.slots {
		for i in [s.a, s.a + 1, s.b, s.b + 1] {
			let mut p = adapter.params.clone();
			p[i] += h;
			let up = loss_at(&p);
			p[i] -= 2.0 * h;
			let down = loss_at(&p);
			let fd = ((up - down) / (2.0 * h as f64)) as f32;
			let err = (fd - grads[i]).abs() / scale;
			assert!(
				err < 2e-2,
				"layer {} {:?} param {i}: analytic {} vs finite difference {fd}",
				s.layer,
				s.target,
				grads[i]
			);
			checked += 1;
		}
	}
	assert!(checked >= 28);
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
	merged.merge_adapter(&trained, &Cpu);
	let via_merge = Engine::new(&Cpu, &merged, None, 8).logits(&b.tokens, 1, 5);
	let diff = with_branch.iter().zip(&via_merge).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
	assert!(diff < 1e-4, "merged weights give the same logits (max diff {diff})");
	assert_ne!(with_branch, base);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
	let model = random_model(tiny_config(300), 6);
	let adapter = random_adapter(&model, 0.1);
	// Big enough that matmuls split into several tiles and attention into several tasks.
	let b = batch(300, 3, 64, 3);
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
