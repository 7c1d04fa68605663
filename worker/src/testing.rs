//! Tiny random models for tests and examples (no download needed).

use crate::model::{LayerWeights, Model, ModelConfig};
use crate::rng::Rng;

/// A small Llama-shaped config: 2 layers, GQA, hidden 16.
pub fn tiny_config(vocab_size: usize) -> ModelConfig {
	ModelConfig {
		vocab_size,
		hidden_size: 16,
		intermediate_size: 24,
		num_layers: 2,
		num_heads: 4,
		num_kv_heads: 2,
		head_dim: 4,
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
