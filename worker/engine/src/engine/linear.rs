//! A frozen linear layer with an optional LoRA branch, forward beside backward:
//! `y = x Wᵀ + b + (α/r) · drop(x) Aᵀ Bᵀ`.

use std::ops::Range;

use crate::backend::{Backend, Buf, DropSaved, Frozen, View, ViewMut};

/// The trainable branch of one layer, as the forward sees it.
pub struct LoraBranch<'a> {
	pub a: View<'a, f32>,
	pub b: View<'a, f32>,
	pub rank: usize,
	pub scale: f32,
	/// Dropout probability and the stream its mask is drawn from (`None`: no dropout).
	pub dropout: Option<(f32, u64)>,
}

/// What the backward of a branch needs: the branch, what its forward kept, and where its
/// gradients go in the flat gradient buffer.
pub struct LoraGrads<'a, 'g> {
	pub branch: &'a LoraBranch<'a>,
	/// `(α/r) · drop(x) Aᵀ` from the forward.
	pub xa: View<'a, f32>,
	pub mask: Option<&'a DropSaved>,
	pub grads: &'g mut Buf<f32>,
	pub a: Range<usize>,
	pub b: Range<usize>,
}

/// Shapes of one call: `n` rows of `in_dim` in, `out_dim` out.
#[derive(Clone, Copy)]
pub struct Dims {
	pub n: usize,
	pub in_dim: usize,
	pub out_dim: usize,
}

/// Forward. Returns `(α/r) · drop(x) Aᵀ` (`[n × r]`) and the dropout mask, which the
/// backward needs (`None`, `None` without a branch).
pub fn forward(
	be: &dyn Backend,
	mut y: ViewMut<f32>,
	x: View<f32>,
	w: &Frozen,
	bias: Option<View<f32>>,
	lora: Option<&LoraBranch>,
	d: Dims,
) -> (Option<Buf<f32>>, Option<DropSaved>) {
	be.frozen_forward(y.reborrow(), x, w, d.n, false);
	if let Some(bias) = bias {
		assert_eq!(bias.len(), d.out_dim, "a bias per output");
		be.add_bias(y.reborrow(), bias);
	}
	let Some(l) = lora else { return (None, None) };
	let mask = l.dropout.map(|(p, key)| be.dropout_mask(p, key, x.len()));
	let dropped = mask.as_ref().map(|m| dropped(be, x, m));
	let mut xa = be.zeros_f32(d.n * l.rank);
	be.matmul_nt(xa.view_mut(), dropped.as_ref().map_or(x, Buf::view), l.a, d.n, d.in_dim, l.rank, false);
	be.scale(xa.view_mut(), l.scale);
	be.matmul_nt(y, xa.view(), l.b, d.n, l.rank, d.out_dim, true);
	(Some(xa), mask)
}

/// `drop(x)` under `mask`.
fn dropped(be: &dyn Backend, x: View<f32>, mask: &DropSaved) -> Buf<f32> {
	let mut out = be.zeros_f32(x.len());
	be.dropout_apply(out.view_mut(), x, mask);
	out
}

/// Backward. `dx` (if wanted) gets `+=` or `=` the input gradient; the branch's `A` and
/// `B` gradients get `+=`.
pub fn backward(
	be: &dyn Backend,
	dx: Option<(ViewMut<f32>, bool)>,
	dy: View<f32>,
	x: View<f32>,
	w: &Frozen,
	lora: Option<LoraGrads>,
	d: Dims,
) {
	let Dims { n, in_dim, out_dim } = d;
	let mut dx = dx;
	if let Some((dx, accumulate)) = dx.as_mut() {
		be.frozen_backward(dx.reborrow(), dy, w, n, *accumulate);
	}
	let Some(LoraGrads { branch: l, xa, mask, grads, a, b }) = lora else { return };
	let r = l.rank;
	// dB += dyᵀ · (α/r) drop(x) Aᵀ, computed as its transpose ((α/r) drop(x) Aᵀ)ᵀ dy so
	// that the long operand, dy, is read by rows.
	let mut dbt = be.zeros_f32(r * out_dim);
	be.matmul_tn(dbt.view_mut(), xa, dy, r, n, out_dim, false);
	be.add_transposed(grads.slice_mut(b), dbt.view(), r, out_dim);
	// g = (α/r) · dy B;  dA += gᵀ drop(x);  dx += drop'(g A)
	let mut g = be.zeros_f32(n * r);
	be.matmul_nn(g.view_mut(), dy, l.b, n, out_dim, r, false);
	be.scale(g.view_mut(), l.scale);
	let dropped = mask.map(|m| dropped(be, x, m));
	be.matmul_tn(grads.slice_mut(a), g.view(), dropped.as_ref().map_or(x, Buf::view), r, n, in_dim, true);
	if let Some((dx, _)) = dx {
		match mask {
			None => be.matmul_nn(dx, g.view(), l.a, n, r, in_dim, true),
			Some(m) => {
				let mut t = be.zeros_f32(n * in_dim);
				be.matmul_nn(t.view_mut(), g.view(), l.a, n, r, in_dim, false);
				be.dropout_add_kept(dx, t.view(), m);
			},
		}
	}
}
