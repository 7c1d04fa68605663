//! Causal grouped-query attention, one task per head: scores by gemm, a row softmax with
//! the causal mask, then the weighted sum of values. The softmax is kept for the backward.

use rayon::prelude::*;

use super::{matmul::gemm_single, SharedMut};
use crate::backend::AttnShape;

pub(super) fn forward(out: &mut [f32], probs: &mut [f32], q: &[f32], k: &[f32], v: &[f32], s: AttnShape) {
	let AttnShape { batch, seq: t, heads, kv_heads, head_dim: d } = s;
	assert!(kv_heads > 0 && heads % kv_heads == 0, "{heads} heads cannot share {kv_heads} key/value heads");
	let (qw, kvw, group) = (heads * d, kv_heads * d, heads / kv_heads);
	assert!(q.len() == batch * t * qw && out.len() == q.len() && k.len() == batch * t * kvw && v.len() == k.len());
	assert_eq!(probs.len(), batch * heads * t * t);
	let scale = 1.0 / (d as f32).sqrt();
	let outp = SharedMut(out.as_mut_ptr());
	probs.par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| {
		let outp = outp;
		let (b, h) = (bh / heads, bh % heads);
		let kvh = h / group;
		let qo = b * t * qw + h * d;
		let kvo = b * t * kvw + kvh * d;
		// SAFETY: q/k/v offsets stay inside their buffers (asserted sizes); this task alone
		// writes head `h` of batch `b` in `out` (columns h*d..(h+1)*d of its rows).
		unsafe {
			gemm_single(
				t,
				t,
				d,
				p.as_mut_ptr(),
				t,
				q.as_ptr().add(qo),
				(qw, 1),
				k.as_ptr().add(kvo),
				(1, kvw),
				scale,
				false,
			);
		}
		for (i, row) in p.chunks_exact_mut(t).enumerate() {
			let (live, masked) = row.split_at_mut(i + 1);
			let max = live.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
			let mut sum = 0f32;
			for x in live.iter_mut() {
				*x = (*x - max).exp();
				sum += *x;
			}
			let inv = 1.0 / sum;
			live.iter_mut().for_each(|x| *x *= inv);
			masked.fill(0.0);
		}
		unsafe {
			gemm_single(t, d, t, outp.0.add(qo), qw, p.as_ptr(), (t, 1), v.as_ptr().add(kvo), (kvw, 1), 1.0, false);
		}
	});
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
	dq: &mut [f32],
	dk: &mut [f32],
	dv: &mut [f32],
	dout: &[f32],
	probs: &[f32],
	q: &[f32],
	k: &[f32],
	v: &[f32],
	s: AttnShape,
) {
	let AttnShape { batch, seq: t, heads, kv_heads, head_dim: d } = s;
	assert!(kv_heads > 0 && heads % kv_heads == 0, "{heads} heads cannot share {kv_heads} key/value heads");
	let (qw, kvw, group) = (heads * d, kv_heads * d, heads / kv_heads);
	assert!(dq.len() == batch * t * qw && dout.len() == dq.len() && q.len() == dq.len());
	assert!(dk.len() == batch * t * kvw && dv.len() == dk.len() && k.len() == dk.len() && v.len() == dk.len());
	assert_eq!(probs.len(), batch * heads * t * t);
	let scale = 1.0 / (d as f32).sqrt();
	let (dqp, dkp, dvp) = (SharedMut(dq.as_mut_ptr()), SharedMut(dk.as_mut_ptr()), SharedMut(dv.as_mut_ptr()));
	// One task per key/value head: the heads of its group add into its dK, dV in order.
	(0..batch * kv_heads).into_par_iter().for_each(|bkv| {
		let (dqp, dkp, dvp) = (dqp, dkp, dvp);
		let (b, kvh) = (bkv / kv_heads, bkv % kv_heads);
		let kvo = b * t * kvw + kvh * d;
		let mut ds = vec![0f32; t * t];
		for h in kvh * group..(kvh + 1) * group {
			let qo = b * t * qw + h * d;
			let p = &probs[(b * heads + h) * t * t..(b * heads + h + 1) * t * t];
			let first = h == kvh * group;
			// SAFETY: offsets inside the asserted buffer sizes; this task alone writes head
			// `h` of batch `b` in dq and kv head `kvh` of batch `b` in dk, dv.
			unsafe {
				// dP = dO Vᵀ
				gemm_single(
					t,
					t,
					d,
					ds.as_mut_ptr(),
					t,
					dout.as_ptr().add(qo),
					(qw, 1),
					v.as_ptr().add(kvo),
					(1, kvw),
					1.0,
					false,
				);
				// dS = P ⊙ (dP − Σⱼ P dP), scaled for the scores' 1/√d.
				for (prow, drow) in p.chunks_exact(t).zip(ds.chunks_exact_mut(t)) {
					let dot: f32 = prow.iter().zip(drow.iter()).map(|(p, dp)| p * dp).sum();
					for (dx, &p) in drow.iter_mut().zip(prow) {
						*dx = p * (*dx - dot) * scale;
					}
				}
				// dQ = dS K
				gemm_single(t, d, t, dqp.0.add(qo), qw, ds.as_ptr(), (t, 1), k.as_ptr().add(kvo), (kvw, 1), 1.0, false);
				// dK += dSᵀ Q
				gemm_single(
					t,
					d,
					t,
					dkp.0.add(kvo),
					kvw,
					ds.as_ptr(),
					(1, t),
					q.as_ptr().add(qo),
					(qw, 1),
					1.0,
					!first,
				);
				// dV += Pᵀ dO
				gemm_single(
					t,
					d,
					t,
					dvp.0.add(kvo),
					kvw,
					p.as_ptr(),
					(1, t),
					dout.as_ptr().add(qo),
					(qw, 1),
					1.0,
					!first,
				);
			}
		}
	});
}
