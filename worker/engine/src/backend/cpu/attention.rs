//! Grouped-query attention, causal within each document and blind across documents.
//!
//! A row of the batch holds one or more documents back to back (positions restart at 0
//! at each). Work is one task per (row, head) in the forward and per (row, key/value head)
//! in the backward; inside a task, each document is processed in blocks of `ROW_BLOCK`
//! query rows, and a block's scores are computed only against the keys it may see (the
//! document's keys up to the block's last row). Key blocks of other documents and the
//! causal upper triangle beyond the diagonal block are never computed. Inside the
//! diagonal block the entries above the diagonal are zeroed.
//!
//! Blocks are laid out relative to the document's start, so a document's results do not
//! depend on where in a row it sits or what shares the row with it: the same bits as
//! computing it alone.

use rayon::prelude::*;

use super::{matmul::gemm_single, reduce, SharedMut};
use crate::backend::AttnShape;
use crate::math::exp_f32_in_place;

/// Query rows per block.
const ROW_BLOCK: usize = 64;

/// The documents of one row: `(start, len)` from its positions (0 starts a document).
fn documents(positions: &[u32]) -> Vec<(usize, usize)> {
	let mut docs: Vec<(usize, usize)> = Vec::new();
	for (i, &p) in positions.iter().enumerate() {
		match docs.last_mut() {
			Some((start, len)) if p != 0 => {
				assert_eq!(p as usize, *len, "position {p} at row index {i} does not follow the document at {start}");
				*len += 1;
			},
			_ => {
				assert_eq!(p, 0, "a row must start at position 0");
				docs.push((i, 1));
			},
		}
	}
	docs
}

fn check_shapes(s: &AttnShape, q: usize, kv: usize, positions: usize) -> (usize, usize, usize) {
	let AttnShape { batch, seq: t, heads, kv_heads, head_dim: d } = *s;
	assert!(kv_heads > 0 && heads % kv_heads == 0, "{heads} heads cannot share {kv_heads} key/value heads");
	let (qw, kvw) = (heads * d, kv_heads * d);
	assert!(q == batch * t * qw && kv == batch * t * kvw, "attention buffer sizes");
	assert_eq!(positions, batch * t, "one position per token");
	(qw, kvw, heads / kv_heads)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
	out: &mut [f32],
	probs: &mut [f32],
	q: &[f32],
	k: &[f32],
	v: &[f32],
	positions: &[u32],
	s: AttnShape,
) {
	let AttnShape { seq: t, heads, head_dim: d, .. } = s;
	let (qw, kvw, group) = check_shapes(&s, q.len(), k.len(), positions.len());
	assert!(out.len() == q.len() && v.len() == k.len() && probs.len() == s.batch * heads * t * t);
	let docs: Vec<Vec<(usize, usize)>> = positions.chunks(t).map(documents).collect();
	let scale = 1.0 / (d as f32).sqrt();
	let outp = SharedMut(out.as_mut_ptr());
	probs.par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| {
		let outp = outp;
		let (b, h) = (bh / heads, bh % heads);
		let qo = b * t * qw + h * d;
		let kvo = b * t * kvw + (h / group) * d;
		for &(s0, len) in &docs[b] {
			for r0 in (0..len).step_by(ROW_BLOCK) {
				let r1 = (r0 + ROW_BLOCK).min(len);
				let (m, n) = (r1 - r0, r1);
				let blk = (s0 + r0) * t + s0;
				// SAFETY: offsets stay inside the buffers (sizes asserted, rows < t); this task
				// alone writes head `h` of row `b` in `out` (columns h*d..(h+1)*d of its rows).
				unsafe {
					// S = Q[r0..r1] K[0..r1]ᵀ / √d
					gemm_single(
						m,
						n,
						d,
						p.as_mut_ptr().add(blk),
						t,
						q.as_ptr().add(qo + (s0 + r0) * qw),
						(qw, 1),
						k.as_ptr().add(kvo + s0 * kvw),
						(1, kvw),
						scale,
						false,
					);
				}
				for i in 0..m {
					let row = &mut p[blk + i * t..blk + i * t + n];
					let (live, masked) = row.split_at_mut(r0 + i + 1);
					let max = reduce::max(live);
					live.iter_mut().for_each(|x| *x -= max);
					exp_f32_in_place(live);
					let inv = 1.0 / reduce::sum(live);
					live.iter_mut().for_each(|x| *x *= inv);
					masked.fill(0.0);
				}
				unsafe {
					// O[r0..r1] = P[r0..r1, 0..r1] V[0..r1]
					gemm_single(
						m,
						d,
						n,
						outp.0.add(qo + (s0 + r0) * qw),
						qw,
						p.as_ptr().add(blk),
						(t, 1),
						v.as_ptr().add(kvo + s0 * kvw),
						(kvw, 1),
						1.0,
						false,
					);
				}
			}
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
	positions: &[u32],
	s: AttnShape,
) {
	let AttnShape { batch, seq: t, heads, kv_heads, head_dim: d } = s;
	let (qw, kvw, group) = check_shapes(&s, q.len(), k.len(), positions.len());
	assert!(dq.len() == q.len() && dout.len() == q.len() && dk.len() == k.len() && dv.len() == k.len());
	assert!(v.len() == k.len() && probs.len() == batch * heads * t * t);
	let docs: Vec<Vec<(usize, usize)>> = positions.chunks(t).map(documents).collect();
	let scale = 1.0 / (d as f32).sqrt();
	let (dqp, dkp, dvp) = (SharedMut(dq.as_mut_ptr()), SharedMut(dk.as_mut_ptr()), SharedMut(dv.as_mut_ptr()));
	// One task per key/value head of a row: the heads of its group add into its dK, dV in
	// order (heads, then documents, then row blocks).
	(0..batch * kv_heads).into_par_iter().for_each(|bkv| {
		let (dqp, dkp, dvp) = (dqp, dkp, dvp);
		let (b, kvh) = (bkv / kv_heads, bkv % kv_heads);
		let kvo = b * t * kvw + kvh * d;
		// SAFETY (all blocks below): offsets stay inside the asserted buffer sizes; this task
		// alone writes kv head `kvh` of row `b` in dk, dv and heads of its group in dq.
		for i in 0..t {
			unsafe {
				std::ptr::write_bytes(dkp.0.add(kvo + i * kvw), 0, d);
				std::ptr::write_bytes(dvp.0.add(kvo + i * kvw), 0, d);
			}
		}
		let mut ds = vec![0f32; ROW_BLOCK * t];
		for h in kvh * group..(kvh + 1) * group {
			let qo = b * t * qw + h * d;
			let p = &probs[(b * heads + h) * t * t..(b * heads + h + 1) * t * t];
			for &(s0, len) in &docs[b] {
				for r0 in (0..len).step_by(ROW_BLOCK) {
					let r1 = (r0 + ROW_BLOCK).min(len);
					let (m, n) = (r1 - r0, r1);
					let blk = (s0 + r0) * t + s0;
					let rows = qo + (s0 + r0) * qw;
					unsafe {
						// dP = dO[r0..r1] V[0..r1]ᵀ
						gemm_single(
							m,
							n,
							d,
							ds.as_mut_ptr(),
							t,
							dout.as_ptr().add(rows),
							(qw, 1),
							v.as_ptr().add(kvo + s0 * kvw),
							(1, kvw),
							1.0,
							false,
						);
					}
					// dS = P ⊙ (dP − Σⱼ P dP), scaled for the scores' 1/√d; 0 above the diagonal.
					for i in 0..m {
						let live = r0 + i + 1;
						let prow = &p[blk + i * t..blk + i * t + live];
						let drow = &mut ds[i * t..i * t + n];
						let dot = reduce::dot(prow, &drow[..live]);
						for (dx, &p) in drow.iter_mut().zip(prow) {
							*dx = p * (*dx - dot) * scale;
						}
						drow[live..].fill(0.0);
					}
					unsafe {
						// dQ[r0..r1] = dS K[0..r1]
						gemm_single(
							m,
							d,
							n,
							dqp.0.add(rows),
							qw,
							ds.as_ptr(),
							(t, 1),
							k.as_ptr().add(kvo + s0 * kvw),
							(kvw, 1),
							1.0,
							false,
						);
						// dK[0..r1] += dSᵀ Q[r0..r1]
						gemm_single(
							n,
							d,
							m,
							dkp.0.add(kvo + s0 * kvw),
							kvw,
							ds.as_ptr(),
							(1, t),
							q.as_ptr().add(rows),
							(qw, 1),
							1.0,
							true,
						);
						// dV[0..r1] += P[r0..r1, 0..r1]ᵀ dO[r0..r1]
						gemm_single(
							n,
							d,
							m,
							dvp.0.add(kvo + s0 * kvw),
							kvw,
							p.as_ptr().add(blk),
							(1, t),
							dout.as_ptr().add(rows),
							(qw, 1),
							1.0,
							true,
						);
					}
				}
			}
		}
	});
}

/// Causal attention of `n` new queries (positions `past..past + n`) over a KV cache of
/// `past + n` positions: generation, one (query, head) at a time with the scores in f32,
/// summed in position order.
pub(super) fn cached(out: &mut [f32], q: &[f32], k_cache: &[f32], v_cache: &[f32], past: usize, n: usize, s: AttnShape) {
	let (d, qd, kvd) = (s.head_dim, s.heads * s.head_dim, s.kv_heads * s.head_dim);
	let group = s.heads / s.kv_heads;
	let total = past + n;
	assert!(q.len() == n * qd && out.len() == n * qd, "cached attention: queries and output");
	assert!(k_cache.len() >= total * kvd && v_cache.len() >= total * kvd, "cached attention: the cache holds fewer than {total} positions");
	let scale = 1.0 / (d as f32).sqrt();
	out.fill(0.0);
	let mut scores = Vec::with_capacity(total);
	for i in 0..n {
		let upto = past + i + 1;
		for head in 0..s.heads {
			let kvh = head / group;
			let qh = &q[i * qd + head * d..][..d];
			scores.clear();
			scores.extend(
				(0..upto).map(|p| qh.iter().zip(&k_cache[p * kvd + kvh * d..][..d]).map(|(a, b)| a * b).sum::<f32>() * scale),
			);
			let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
			let mut sum = 0f32;
			scores.iter_mut().for_each(|s| {
				*s = crate::math::exp_f32(*s - max);
				sum += *s;
			});
			let o = &mut out[i * qd + head * d..][..d];
			for (p, s) in scores.iter().enumerate() {
				let w = s / sum;
				o.iter_mut().zip(&v_cache[p * kvd + kvh * d..][..d]).for_each(|(o, v)| *o += w * v);
			}
		}
	}
}

#[cfg(test)]
mod tests {
	use super::documents;

	#[test]
	fn documents_come_from_positions() {
		assert_eq!(documents(&[0, 1, 2, 0, 1, 0]), vec![(0, 3), (3, 2), (5, 1)]);
	}

	#[test]
	#[should_panic(expected = "does not follow")]
	fn positions_must_count_up_within_a_document() {
		documents(&[0, 1, 3]);
	}
}
