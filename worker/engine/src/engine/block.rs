//! One decoder block, forward beside backward:
//!
//! ```text
//! x1 = rmsnorm(x)            q, k, v = x1 Wqᵀ, x1 Wkᵀ, x1 Wvᵀ (+ LoRA)   rope(q), rope(k)
//! x2 = x + attn(q, k, v) Woᵀ
//! x3 = rmsnorm(x2)           out = x2 + (silu(x3 Wgᵀ) ⊙ x3 Wuᵀ) Wdᵀ
//! ```

use super::linear::{self, Dims, LoraBranch};
use super::Engine;
use crate::backend::{AttnSaved, AttnShape, DropSaved};
use crate::lora::Target;
use crate::model::LayerWeights;

/// What the backward needs from one block's forward.
pub struct BlockActs {
	pub x: Vec<f32>,
	x1: Vec<f32>,
	rstd1: Vec<f32>,
	q: Vec<f32>,
	k: Vec<f32>,
	v: Vec<f32>,
	/// The attention's saved state, in the backend's form.
	attn: AttnSaved,
	att: Vec<f32>,
	x2: Vec<f32>,
	x3: Vec<f32>,
	rstd2: Vec<f32>,
	gate: Vec<f32>,
	up: Vec<f32>,
	hidden: Vec<f32>,
	/// The LoRA branches' `(α/r) drop(x) Aᵀ` and dropout masks, by target.
	xa: [Vec<f32>; 7],
	masks: [Option<DropSaved>; 7],
}

fn idx(t: Target) -> usize {
	Target::ALL.iter().position(|&x| x == t).unwrap_or(0)
}

impl Engine<'_> {
	/// Runs block `l` on `x` (`[batch·seq × hidden]`), returning its output and activations.
	pub(super) fn block_forward(&self, l: usize, x: Vec<f32>, pass: &super::Pass) -> (Vec<f32>, BlockActs) {
		let be = self.backend;
		let c = &self.model.config;
		let w: &LayerWeights = &self.model.layers[l];
		let n = pass.batch * pass.seq;
		let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
		let mut xa: [Vec<f32>; 7] = Default::default();
		let mut masks: [Option<DropSaved>; 7] = Default::default();
		let frozen = self.frozen();
		let mut lin = |t: Target, y: &mut [f32], x: &[f32], b: &[f32], in_dim: usize, out_dim: usize| {
			let branch = self.branch(l, t, pass);
			let w = frozen.linear(l, t);
			(xa[idx(t)], masks[idx(t)]) = linear::forward(be, y, x, w, b, branch.as_ref(), Dims { n, in_dim, out_dim });
		};

		let mut x1 = vec![0f32; n * h];
		let mut rstd1 = vec![0f32; n];
		be.rmsnorm_forward(&mut x1, &mut rstd1, &x, &w.attn_norm, h, c.rms_norm_eps);
		let (mut q, mut k, mut v) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
		lin(Target::Q, &mut q, &x1, &w.bq, h, qd);
		lin(Target::K, &mut k, &x1, &w.bk, h, kvd);
		lin(Target::V, &mut v, &x1, &w.bv, h, kvd);
		be.rope(&mut q, qd, &self.rope_cos, &self.rope_sin, pass.positions, c.head_dim, false);
		be.rope(&mut k, kvd, &self.rope_cos, &self.rope_sin, pass.positions, c.head_dim, false);
		let shape = self.attn_shape(pass);
		let mut att = vec![0f32; n * qd];
		let attn = be.attention_forward(&mut att, &q, &k, &v, pass.positions, shape);
		let mut x2 = vec![0f32; n * h];
		lin(Target::O, &mut x2, &att, &[], qd, h);
		be.add_assign(&mut x2, &x);

		let mut x3 = vec![0f32; n * h];
		let mut rstd2 = vec![0f32; n];
		be.rmsnorm_forward(&mut x3, &mut rstd2, &x2, &w.ffn_norm, h, c.rms_norm_eps);
		let (mut gate, mut up) = (vec![0f32; n * f], vec![0f32; n * f]);
		lin(Target::Gate, &mut gate, &x3, &[], h, f);
		lin(Target::Up, &mut up, &x3, &[], h, f);
		let mut hidden = vec![0f32; n * f];
		be.swiglu_forward(&mut hidden, &gate, &up);
		let mut out = vec![0f32; n * h];
		lin(Target::Down, &mut out, &hidden, &[], f, h);
		be.add_assign(&mut out, &x2);

		let acts = BlockActs { x, x1, rstd1, q, k, v, attn, att, x2, x3, rstd2, gate, up, hidden, xa, masks };
		(out, acts)
	}

	/// Backward of block `l`: from `dout`, adds the LoRA gradients into `grads` and returns
	/// the gradient of the block's input (`None` for the first block, whose input, the
	/// frozen embeddings, needs none).
	pub(super) fn block_backward(
		&self,
		l: usize,
		a: &BlockActs,
		dout: &[f32],
		grads: &mut [f32],
		pass: &super::Pass,
	) -> Option<Vec<f32>> {
		let be = self.backend;
		let c = &self.model.config;
		let w = &self.model.layers[l];
		let n = pass.batch * pass.seq;
		let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
		let need_dx = l > 0;
		// One layer's backward with its LoRA gradients routed to their slots in `grads`.
		let frozen = self.frozen();
		let lin =
			|t: Target, dx: Option<(&mut [f32], bool)>, dy: &[f32], x: &[f32], grads: &mut [f32], in_dim, out_dim| {
				let wt = frozen.linear(l, t);
				let branch = self.branch(l, t, pass);
				let slot = self.layout.slot(l, t);
				let lora = match (branch.as_ref(), slot) {
					(Some(br), Some(s)) => {
						let (ga, gb) = grads[s.a..s.b + s.out_dim * self.layout.rank].split_at_mut(s.b - s.a);
						Some((br, &a.xa[idx(t)][..], a.masks[idx(t)].as_ref(), ga, gb))
					},
					_ => None,
				};
				linear::backward(be, dx, dy, x, wt, lora, Dims { n, in_dim, out_dim });
			};

		// MLP: out = x2 + down(silu(gate) ⊙ up)
		let mut dhidden = vec![0f32; n * f];
		lin(Target::Down, Some((&mut dhidden, false)), dout, &a.hidden, grads, f, h);
		let (mut dgate, mut dup) = (vec![0f32; n * f], vec![0f32; n * f]);
		be.swiglu_backward(&mut dgate, &mut dup, &dhidden, &a.gate, &a.up);
		drop(dhidden);
		let mut dx3 = vec![0f32; n * h];
		lin(Target::Gate, Some((&mut dx3, false)), &dgate, &a.x3, grads, h, f);
		lin(Target::Up, Some((&mut dx3, true)), &dup, &a.x3, grads, h, f);
		let mut dx2 = dout.to_vec();
		be.rmsnorm_backward(&mut dx2, &dx3, &a.x2, &w.ffn_norm, &a.rstd2, h);

		// Attention: x2 = x + o(attn(rope(q), rope(k), v))
		let mut datt = vec![0f32; n * qd];
		lin(Target::O, Some((&mut datt, false)), &dx2, &a.att, grads, qd, h);
		let (mut dq, mut dk, mut dv) = (vec![0f32; n * qd], vec![0f32; n * kvd], vec![0f32; n * kvd]);
		let shape = self.attn_shape(pass);
		be.attention_backward(&mut dq, &mut dk, &mut dv, &datt, &a.attn, &a.q, &a.k, &a.v, pass.positions, shape);
		be.rope(&mut dq, qd, &self.rope_cos, &self.rope_sin, pass.positions, c.head_dim, true);
		be.rope(&mut dk, kvd, &self.rope_cos, &self.rope_sin, pass.positions, c.head_dim, true);
		let mut dx1 = need_dx.then(|| vec![0f32; n * h]);
		lin(Target::Q, dx1.as_deref_mut().map(|d| (d, false)), &dq, &a.x1, grads, h, qd);
		lin(Target::K, dx1.as_deref_mut().map(|d| (d, true)), &dk, &a.x1, grads, h, kvd);
		lin(Target::V, dx1.as_deref_mut().map(|d| (d, true)), &dv, &a.x1, grads, h, kvd);
		let dx1 = dx1?;
		be.rmsnorm_backward(&mut dx2, &dx1, &a.x, &w.attn_norm, &a.rstd1, h);
		Some(dx2)
	}

	fn attn_shape(&self, pass: &super::Pass) -> AttnShape {
		let c = &self.model.config;
		AttnShape {
			batch: pass.batch,
			seq: pass.seq,
			heads: c.num_heads,
			kv_heads: c.num_kv_heads,
			head_dim: c.head_dim,
		}
	}

	fn branch(&self, l: usize, t: Target, pass: &super::Pass) -> Option<LoraBranch<'_>> {
		let adapter = self.adapter?;
		let s = self.layout.slot(l, t)?;
		let dropout = match pass.dropout_key {
			Some(key) if adapter.config.dropout > 0.0 => {
				Some((adapter.config.dropout, crate::rng::stream_key(key, &[l as u64, idx(t) as u64])))
			},
			_ => None,
		};
		Some(LoraBranch {
			a: self.layout.a(s, &adapter.params),
			b: self.layout.b(s, &adapter.params),
			rank: self.layout.rank,
			scale: adapter.config.scale(),
			dropout,
		})
	}
}
