//! One decoder block, forward beside backward:
//!
//! ```text
//! x1 = rmsnorm(x)            q, k, v = x1 Wqᵀ, x1 Wkᵀ, x1 Wvᵀ (+ LoRA)   rope(q), rope(k)
//! x2 = x + attn(q, k, v) Woᵀ
//! x3 = rmsnorm(x2)           out = x2 + (silu(x3 Wgᵀ) ⊙ x3 Wuᵀ) Wdᵀ
//! ```

use super::linear::{self, Dims, LoraBranch, LoraGrads};
use super::Engine;
use crate::backend::{AttnSaved, AttnShape, Buf, DropSaved, View, ViewMut};
use crate::lora::Target;

/// What the backward needs from one block's forward, in the backend's memory.
pub struct BlockActs {
	pub x: Buf<f32>,
	x1: Buf<f32>,
	rstd1: Buf<f32>,
	q: Buf<f32>,
	k: Buf<f32>,
	v: Buf<f32>,
	/// The attention's saved state, in the backend's form.
	attn: AttnSaved,
	att: Buf<f32>,
	x2: Buf<f32>,
	x3: Buf<f32>,
	rstd2: Buf<f32>,
	gate: Buf<f32>,
	up: Buf<f32>,
	hidden: Buf<f32>,
	/// The LoRA branches' `(α/r) drop(x) Aᵀ` and dropout masks, by target.
	xa: [Option<Buf<f32>>; 7],
	masks: [Option<DropSaved>; 7],
}

fn idx(t: Target) -> usize {
	Target::ALL.iter().position(|&x| x == t).unwrap_or(0)
}

impl Engine<'_> {
	/// Runs block `l` on `x` (`[batch·seq × hidden]`), returning its output and activations.
	pub(super) fn block_forward(&self, l: usize, x: Buf<f32>, pass: &super::Pass) -> (Buf<f32>, BlockActs) {
		let be = self.backend;
		let c = &self.model.config;
		let w = self.frozen.vectors(l);
		let n = pass.batch * pass.seq;
		let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
		let mut xa: [Option<Buf<f32>>; 7] = Default::default();
		let mut masks: [Option<DropSaved>; 7] = Default::default();
		let frozen = &*self.frozen;
		let mut lin = |t: Target, y: ViewMut<f32>, x: View<f32>, b: Option<&Buf<f32>>, in_dim: usize, out_dim: usize| {
			let branch = self.branch(l, t, pass);
			let w = frozen.linear(l, t);
			let bias = b.map(Buf::view);
			(xa[idx(t)], masks[idx(t)]) = linear::forward(be, y, x, w, bias, branch.as_ref(), Dims { n, in_dim, out_dim });
		};
		let (rope_cos, rope_sin, positions) = (self.rope_cos.view(), self.rope_sin.view(), pass.positions.view());

		let mut x1 = be.zeros_f32(n * h);
		let mut rstd1 = be.zeros_f32(n);
		be.rmsnorm_forward(x1.view_mut(), rstd1.view_mut(), x.view(), w.attn_norm.view(), h, c.rms_norm_eps);
		let (mut q, mut k, mut v) = (be.zeros_f32(n * qd), be.zeros_f32(n * kvd), be.zeros_f32(n * kvd));
		lin(Target::Q, q.view_mut(), x1.view(), w.bq.as_ref(), h, qd);
		lin(Target::K, k.view_mut(), x1.view(), w.bk.as_ref(), h, kvd);
		lin(Target::V, v.view_mut(), x1.view(), w.bv.as_ref(), h, kvd);
		be.rope(q.view_mut(), qd, rope_cos, rope_sin, positions, c.head_dim, false);
		be.rope(k.view_mut(), kvd, rope_cos, rope_sin, positions, c.head_dim, false);
		let shape = self.attn_shape(pass);
		let mut att = be.zeros_f32(n * qd);
		let attn = be.attention_forward(att.view_mut(), q.view(), k.view(), v.view(), positions, shape);
		let mut x2 = be.zeros_f32(n * h);
		lin(Target::O, x2.view_mut(), att.view(), None, qd, h);
		be.add_assign(x2.view_mut(), x.view());

		let mut x3 = be.zeros_f32(n * h);
		let mut rstd2 = be.zeros_f32(n);
		be.rmsnorm_forward(x3.view_mut(), rstd2.view_mut(), x2.view(), w.ffn_norm.view(), h, c.rms_norm_eps);
		let (mut gate, mut up) = (be.zeros_f32(n * f), be.zeros_f32(n * f));
		lin(Target::Gate, gate.view_mut(), x3.view(), None, h, f);
		lin(Target::Up, up.view_mut(), x3.view(), None, h, f);
		let mut hidden = be.zeros_f32(n * f);
		be.swiglu_forward(hidden.view_mut(), gate.view(), up.view());
		let mut out = be.zeros_f32(n * h);
		lin(Target::Down, out.view_mut(), hidden.view(), None, f, h);
		be.add_assign(out.view_mut(), x2.view());

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
		dout: &Buf<f32>,
		grads: &mut Buf<f32>,
		pass: &super::Pass,
	) -> Option<Buf<f32>> {
		let be = self.backend;
		let c = &self.model.config;
		let w = self.frozen.vectors(l);
		let n = pass.batch * pass.seq;
		let (h, qd, kvd, f) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
		let need_dx = l > 0;
		let (rope_cos, rope_sin, positions) = (self.rope_cos.view(), self.rope_sin.view(), pass.positions.view());
		// One layer's backward with its LoRA gradients routed to their slots in `grads`.
		let frozen = &*self.frozen;
		let lin = |t: Target,
		           dx: Option<(ViewMut<f32>, bool)>,
		           dy: View<f32>,
		           x: View<f32>,
		           grads: &mut Buf<f32>,
		           in_dim,
		           out_dim| {
			let wt = frozen.linear(l, t);
			let branch = self.branch(l, t, pass);
			let slot = self.layout.slot(l, t);
			let lora = match (branch.as_ref(), slot, a.xa[idx(t)].as_ref()) {
				(Some(br), Some(s), Some(xa)) => Some(LoraGrads {
					branch: br,
					xa: xa.view(),
					mask: a.masks[idx(t)].as_ref(),
					grads,
					a: self.layout.a_range(s),
					b: self.layout.b_range(s),
				}),
				_ => None,
			};
			linear::backward(be, dx, dy, x, wt, lora, Dims { n, in_dim, out_dim });
		};

		// MLP: out = x2 + down(silu(gate) ⊙ up)
		let mut dhidden = be.zeros_f32(n * f);
		lin(Target::Down, Some((dhidden.view_mut(), false)), dout.view(), a.hidden.view(), grads, f, h);
		let (mut dgate, mut dup) = (be.zeros_f32(n * f), be.zeros_f32(n * f));
		be.swiglu_backward(dgate.view_mut(), dup.view_mut(), dhidden.view(), a.gate.view(), a.up.view());
		drop(dhidden);
		let mut dx3 = be.zeros_f32(n * h);
		lin(Target::Gate, Some((dx3.view_mut(), false)), dgate.view(), a.x3.view(), grads, h, f);
		lin(Target::Up, Some((dx3.view_mut(), true)), dup.view(), a.x3.view(), grads, h, f);
		let mut dx2 = be.zeros_f32(n * h);
		be.copy(dx2.view_mut(), dout.view());
		be.rmsnorm_backward(dx2.view_mut(), dx3.view(), a.x2.view(), w.ffn_norm.view(), a.rstd2.view(), h);

		// Attention: x2 = x + o(attn(rope(q), rope(k), v))
		let mut datt = be.zeros_f32(n * qd);
		lin(Target::O, Some((datt.view_mut(), false)), dx2.view(), a.att.view(), grads, qd, h);
		let (mut dq, mut dk, mut dv) = (be.zeros_f32(n * qd), be.zeros_f32(n * kvd), be.zeros_f32(n * kvd));
		let shape = self.attn_shape(pass);
		be.attention_backward(
			dq.view_mut(),
			dk.view_mut(),
			dv.view_mut(),
			datt.view(),
			a.att.view(),
			&a.attn,
			a.q.view(),
			a.k.view(),
			a.v.view(),
			positions,
			shape,
		);
		be.rope(dq.view_mut(), qd, rope_cos, rope_sin, positions, c.head_dim, true);
		be.rope(dk.view_mut(), kvd, rope_cos, rope_sin, positions, c.head_dim, true);
		let mut dx1 = need_dx.then(|| be.zeros_f32(n * h));
		lin(Target::Q, dx1.as_mut().map(|d| (d.view_mut(), false)), dq.view(), a.x1.view(), grads, h, qd);
		lin(Target::K, dx1.as_mut().map(|d| (d.view_mut(), true)), dk.view(), a.x1.view(), grads, h, kvd);
		lin(Target::V, dx1.as_mut().map(|d| (d.view_mut(), true)), dv.view(), a.x1.view(), grads, h, kvd);
		let dx1 = dx1?;
		be.rmsnorm_backward(dx2.view_mut(), dx1.view(), a.x.view(), w.attn_norm.view(), a.rstd1.view(), h);
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
		let lora = self.lora.as_ref()?;
		let s = self.layout.slot(l, t)?;
		let dropout = match pass.dropout_key {
			Some(key) if lora.dropout > 0.0 => {
				Some((lora.dropout, crate::rng::stream_key(key, &[l as u64, idx(t) as u64])))
			},
			_ => None,
		};
		Some(LoraBranch {
			a: lora.params.slice(self.layout.a_range(s)),
			b: lora.params.slice(self.layout.b_range(s)),
			rank: self.layout.rank,
			scale: lora.scale,
			dropout,
		})
	}
}
