//! A backend's operations on host slices: each call uploads its inputs, runs the
//! operation on the backend's own buffers and reads its outputs back. For tests and for
//! comparing backends (the GPU tests' CPU reference), never for a training step.

use super::{AdamWStep, AttnSaved, AttnShape, Backend, Buf, DropSaved, Frozen};

/// `backend`'s operations with host slices in and out.
#[derive(Clone, Copy)]
pub struct OnHost<'a>(pub &'a dyn Backend);

impl OnHost<'_> {
	fn up(&self, x: &[f32]) -> Buf<f32> {
		self.0.upload_f32(x)
	}

	fn back(&self, out: &mut [f32], b: &Buf<f32>) {
		out.copy_from_slice(&self.0.download_f32(b.view()));
	}

	/// Runs `op` on an uploaded copy of `out` and copies the result back.
	fn write(&self, out: &mut [f32], op: impl FnOnce(&mut Buf<f32>)) {
		let mut b = self.up(out);
		op(&mut b);
		self.back(out, &b);
	}

	pub fn freeze(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Frozen {
		self.0.freeze(w, out_dim, in_dim)
	}

	pub fn frozen_forward(&self, y: &mut [f32], x: &[f32], w: &Frozen, n: usize, accumulate: bool) {
		let x = self.up(x);
		self.write(y, |y| self.0.frozen_forward(y.view_mut(), x.view(), w, n, accumulate));
	}

	pub fn frozen_backward(&self, dx: &mut [f32], dy: &[f32], w: &Frozen, n: usize, accumulate: bool) {
		let dy = self.up(dy);
		self.write(dx, |dx| self.0.frozen_backward(dx.view_mut(), dy.view(), w, n, accumulate));
	}

	#[allow(clippy::too_many_arguments)]
	pub fn matmul_nt(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		let (a, b) = (self.up(a), self.up(b));
		self.write(c, |c| self.0.matmul_nt(c.view_mut(), a.view(), b.view(), m, k, n, accumulate));
	}

	#[allow(clippy::too_many_arguments)]
	pub fn matmul_nn(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		let (a, b) = (self.up(a), self.up(b));
		self.write(c, |c| self.0.matmul_nn(c.view_mut(), a.view(), b.view(), m, k, n, accumulate));
	}

	#[allow(clippy::too_many_arguments)]
	pub fn matmul_tn(&self, c: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize, accumulate: bool) {
		let (a, b) = (self.up(a), self.up(b));
		self.write(c, |c| self.0.matmul_tn(c.view_mut(), a.view(), b.view(), m, k, n, accumulate));
	}

	pub fn rmsnorm_forward(&self, out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
		let (x, w) = (self.up(x), self.up(w));
		let mut r = self.up(rstd);
		self.write(out, |o| self.0.rmsnorm_forward(o.view_mut(), r.view_mut(), x.view(), w.view(), dim, eps));
		self.back(rstd, &r);
	}

	pub fn rmsnorm_backward(&self, dx: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], rstd: &[f32], dim: usize) {
		let (dout, x, w, rstd) = (self.up(dout), self.up(x), self.up(w), self.up(rstd));
		self.write(dx, |dx| self.0.rmsnorm_backward(dx.view_mut(), dout.view(), x.view(), w.view(), rstd.view(), dim));
	}

	#[allow(clippy::too_many_arguments)]
	pub fn rope(
		&self,
		x: &mut [f32],
		width: usize,
		cos: &[f32],
		sin: &[f32],
		positions: &[u32],
		head_dim: usize,
		inverse: bool,
	) {
		let (cos, sin, p) = (self.up(cos), self.up(sin), self.0.upload_u32(positions));
		self.write(x, |x| self.0.rope(x.view_mut(), width, cos.view(), sin.view(), p.view(), head_dim, inverse));
	}

	pub fn attention_forward(
		&self,
		out: &mut [f32],
		q: &[f32],
		k: &[f32],
		v: &[f32],
		positions: &[u32],
		s: AttnShape,
	) -> AttnSaved {
		let (q, k, v, p) = (self.up(q), self.up(k), self.up(v), self.0.upload_u32(positions));
		let mut o = self.up(out);
		let saved = self.0.attention_forward(o.view_mut(), q.view(), k.view(), v.view(), p.view(), s);
		self.back(out, &o);
		saved
	}

	#[allow(clippy::too_many_arguments)]
	pub fn attention_backward(
		&self,
		dq: &mut [f32],
		dk: &mut [f32],
		dv: &mut [f32],
		dout: &[f32],
		out: &[f32],
		saved: &AttnSaved,
		q: &[f32],
		k: &[f32],
		v: &[f32],
		positions: &[u32],
		s: AttnShape,
	) {
		let (dout, out, q, k, v) = (self.up(dout), self.up(out), self.up(q), self.up(k), self.up(v));
		let p = self.0.upload_u32(positions);
		let (mut gq, mut gk, mut gv) = (self.up(dq), self.up(dk), self.up(dv));
		self.0.attention_backward(
			gq.view_mut(),
			gk.view_mut(),
			gv.view_mut(),
			dout.view(),
			out.view(),
			saved,
			q.view(),
			k.view(),
			v.view(),
			p.view(),
			s,
		);
		self.back(dq, &gq);
		self.back(dk, &gk);
		self.back(dv, &gv);
	}

	#[allow(clippy::too_many_arguments)]
	pub fn attention_cached(
		&self,
		out: &mut [f32],
		q: &[f32],
		k_cache: &[f32],
		v_cache: &[f32],
		past: usize,
		n: usize,
		s: AttnShape,
	) {
		let (q, kc, vc) = (self.up(q), self.up(k_cache), self.up(v_cache));
		self.write(out, |o| self.0.attention_cached(o.view_mut(), q.view(), kc.view(), vc.view(), past, n, s));
	}

	pub fn swiglu_forward(&self, out: &mut [f32], gate: &[f32], up: &[f32]) {
		let (g, u) = (self.up(gate), self.up(up));
		self.write(out, |o| self.0.swiglu_forward(o.view_mut(), g.view(), u.view()));
	}

	pub fn swiglu_backward(&self, dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
		let (d, g, u) = (self.up(dout), self.up(gate), self.up(up));
		let mut du = self.up(dup);
		self.write(dgate, |dg| self.0.swiglu_backward(dg.view_mut(), du.view_mut(), d.view(), g.view(), u.view()));
		self.back(dup, &du);
	}

	pub fn gather_rows(&self, out: &mut [f32], x: &[f32], rows: &[u32], dim: usize) {
		let (x, r) = (self.up(x), self.0.upload_u32(rows));
		self.write(out, |o| self.0.gather_rows(o.view_mut(), x.view(), r.view(), dim));
	}

	pub fn scatter_rows(&self, dst: &mut [f32], src: &[f32], rows: &[u32], dim: usize) {
		let (s, r) = (self.up(src), self.0.upload_u32(rows));
		self.write(dst, |d| self.0.scatter_rows(d.view_mut(), s.view(), r.view(), dim));
	}

	pub fn add_assign(&self, y: &mut [f32], x: &[f32]) {
		let x = self.up(x);
		self.write(y, |y| self.0.add_assign(y.view_mut(), x.view()));
	}

	pub fn add_bias(&self, y: &mut [f32], bias: &[f32]) {
		let b = self.up(bias);
		self.write(y, |y| self.0.add_bias(y.view_mut(), b.view()));
	}

	pub fn scale(&self, x: &mut [f32], a: f32) {
		self.write(x, |x| self.0.scale(x.view_mut(), a));
	}

	pub fn add_transposed(&self, dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
		let s = self.up(src);
		self.write(dst, |d| self.0.add_transposed(d.view_mut(), s.view(), rows, cols));
	}

	pub fn dropout_mask(&self, p: f32, key: u64, len: usize) -> DropSaved {
		self.0.dropout_mask(p, key, len)
	}

	pub fn dropout_apply(&self, out: &mut [f32], x: &[f32], mask: &DropSaved) {
		let x = self.up(x);
		self.write(out, |o| self.0.dropout_apply(o.view_mut(), x.view(), mask));
	}

	pub fn dropout_add_kept(&self, dx: &mut [f32], t: &[f32], mask: &DropSaved) {
		let t = self.up(t);
		self.write(dx, |d| self.0.dropout_add_kept(d.view_mut(), t.view(), mask));
	}

	pub fn sum_squares(&self, x: &[f32]) -> f64 {
		self.0.sum_squares(self.up(x).view())
	}

	pub fn adamw(&self, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], step: AdamWStep) {
		let g = self.up(grads);
		let (mut mb, mut vb) = (self.up(m), self.up(v));
		self.write(params, |p| self.0.adamw(p.view_mut(), g.view(), mb.view_mut(), vb.view_mut(), step));
		self.back(m, &mb);
		self.back(v, &vb);
	}

	pub fn cross_entropy(&self, logits: &mut [f32], targets: &[i32], vocab: usize, scale: f32, losses: &mut [f64]) {
		let t = self.0.upload_i32(targets);
		let mut l = self.0.zeros_f64(losses.len());
		self.write(logits, |x| self.0.cross_entropy(x.view_mut(), t.view(), vocab, scale, l.view_mut()));
		losses.copy_from_slice(&self.0.download_f64(l.view()));
	}
}
