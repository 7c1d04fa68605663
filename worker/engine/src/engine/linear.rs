//! A frozen linear layer with an optional LoRA branch, forward beside backward:
//! `y = x Wᵀ + b + (α/r) · drop(x) Aᵀ Bᵀ`.

use crate::backend::{Backend, DropSaved, Frozen};

/// The trainable branch of one layer, as the forward sees it.
pub struct LoraBranch<'a> {
	pub a: &'a [f32],
	pub b: &'a [f32],
	pub rank: usize,
	pub scale: f32,
	/// Dropout probability and the stream its mask is drawn from (`None`: no dropout).
	pub dropout: Option<(f32, u64)>,
}

/// Shapes of one call: `n` rows of `in_dim` in, `out_dim` out.
#[derive(Clone, Copy)]
pub struct Dims {
	pub n: usize,
	pub in_dim: usize,
	pub out_dim: usize,
}

/// Forward. Returns `(α/r) · drop(x) Aᵀ` (`[n × r]`) and the dropout mask, which the
/// backward needs.
pub fn forward(
	be: &dyn Backend,
	y: &mut [f32],
	x: &[f32],
	w: &Frozen,
	bias: &[f32],
	lora: Option<&LoraBranch>,
	d: Dims,
) -> (Vec<f32>, Option<DropSaved>) {
	be.frozen_forward(y, x, w, d.n, false);
	if !bias.is_empty() {
		assert_eq!(bias.len(), d.out_dim, "a bias per output");
		be.add_bias(y, bias);
	}
	let Some(l) = lora else { return (Vec::new(), None) };
	let mask = l.dropout.map(|(p, key)| be.dropout_mask(p, key, x.len()));
	let dropped = mask.as_ref().map(|m| dropped(be, x, m));
	let mut xa = vec![0f32; d.n * l.rank];
	be.matmul_nt(&mut xa, dropped.as_deref().unwrap_or(x), l.a, d.n, d.in_dim, l.rank, false);
	be.scale(&mut xa, l.scale);
	be.matmul_nt(y, &xa, l.b, d.n, l.rank, d.out_dim, true);
	(xa, mask)
}

/// `drop(x)` under `mask`.
fn dropped(be: &dyn Backend, x: &[f32], mask: &DropSaved) -> Vec<f32> {
	let mut out = vec![0f32; x.len()];
	be.dropout_apply(&mut out, x, mask);
	out
}

/// Backward. `dx` (if wanted) gets `+=` or `=` the input gradient; `grad_a`/`grad_b` get `+=`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
	be: &dyn Backend,
	dx: Option<(&mut [f32], bool)>,
	dy: &[f32],
	x: &[f32],
	w: &Frozen,
	lora: Option<(&LoraBranch, &[f32], Option<&DropSaved>, &mut [f32], &mut [f32])>,
	d: Dims,
) {
	let Dims { n, in_dim, out_dim } = d;
	let mut dx = dx;
	if let Some((dx, accumulate)) = dx.as_mut() {
		be.frozen_backward(dx, dy, w, n, *accumulate);
	}
	let Some((l, xa, mask, grad_a, grad_b)) = lora else { return };
	let r = l.rank;
	// dB += dyᵀ · (α/r) drop(x) Aᵀ, computed as its transpose ((α/r) drop(x) Aᵀ)ᵀ dy so
	// that the long operand, dy, is read by rows.
	let mut dbt = vec![0f32; r * out_dim];
	be.matmul_tn(&mut dbt, xa, dy, r, n, out_dim, false);
	be.add_transposed(grad_b, &dbt, r, out_dim);
	// g = (α/r) · dy B;  dA += gᵀ drop(x);  dx += drop'(g A)
	let mut g = vec![0f32; n * r];
	be.matmul_nn(&mut g, dy, l.b, n, out_dim, r, false);
	be.scale(&mut g, l.scale);
	let dropped = mask.map(|m| dropped(be, x, m));
	be.matmul_tn(grad_a, &g, dropped.as_deref().unwrap_or(x), r, n, in_dim, true);
	if let Some((dx, _)) = dx {
		match mask {
			None => be.matmul_nn(dx, &g, l.a, n, r, in_dim, true),
			Some(m) => {
				let mut t = vec![0f32; n * in_dim];
				be.matmul_nn(&mut t, &g, l.a, n, r, in_dim, false);
				be.dropout_add_kept(dx, &t, m);
			},
		}
	}
}

