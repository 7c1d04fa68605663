//! Each kernel's backward against central finite differences, and the matmuls against a
//! naive triple loop. Objectives are `L = Σ r ⊙ f(x)` for a fixed random `r`.

use super::*;
use crate::rng::Rng;

fn random(n: usize, seed: u64) -> Vec<f32> {
	let mut r = Rng::new(seed);
	(0..n).map(|_| r.uniform() * 2.0 - 1.0).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
	a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Checks `analytic` against `(L(x + h eᵢ) − L(x − h eᵢ)) / 2h` for every coordinate.
fn check_grad(name: &str, x: &[f32], analytic: &[f32], loss: impl Fn(&[f32]) -> f64) {
	let h = 1e-2f32;
	let scale = analytic.iter().fold(1e-3f32, |m, g| m.max(g.abs()));
	for i in 0..x.len() {
		let mut xp = x.to_vec();
		xp[i] += h;
		let mut xm = x.to_vec();
		xm[i] -= h;
		let fd = ((loss(&xp) - loss(&xm)) / (2.0 * h as f64)) as f32;
		let err = (fd - analytic[i]).abs() / scale;
		assert!(
			err < 2e-2,
			"{name}: d/dx[{i}] analytic {} vs finite difference {fd} (relative error {err})",
			analytic[i]
		);
	}
}

#[test]
fn matmuls_match_a_naive_product() {
	// Shapes that cross the tile edges in both directions.
	let (m, k, n) = (TILE_M_TEST + 3, 7, 1030);
	let a = random(m * k, 1);
	let b = random(n * k, 2);
	let naive = |i: usize, j: usize, av: &dyn Fn(usize, usize) -> f32, bv: &dyn Fn(usize, usize) -> f32| -> f32 {
		(0..k).map(|p| av(i, p) * bv(p, j)).sum()
	};
	let mut c = vec![1.0; m * n];
	Cpu.matmul_nt(&mut c, &a, &b, m, k, n, true);
	for (i, j) in [(0, 0), (m - 1, n - 1), (130, 1025), (5, 700)] {
		let want = 1.0 + naive(i, j, &|i, p| a[i * k + p], &|p, j| b[j * k + p]);
		assert!((c[i * n + j] - want).abs() < 1e-4, "nt ({i},{j})");
	}
	let bkn = random(k * n, 3);
	Cpu.matmul_nn(&mut c, &a, &bkn, m, k, n, false);
	for (i, j) in [(0, 0), (m - 1, n - 1), (130, 1025)] {
		let want = naive(i, j, &|i, p| a[i * k + p], &|p, j| bkn[p * n + j]);
		assert!((c[i * n + j] - want).abs() < 1e-4, "nn ({i},{j})");
	}
	let akm = random(k * m, 4);
	Cpu.matmul_tn(&mut c, &akm, &bkn, m, k, n, false);
	for (i, j) in [(0, 0), (m - 1, n - 1), (130, 1025)] {
		let want = naive(i, j, &|i, p| akm[p * m + i], &|p, j| bkn[p * n + j]);
		assert!((c[i * n + j] - want).abs() < 1e-4, "tn ({i},{j})");
	}
}

const TILE_M_TEST: usize = 128;

#[test]
fn rmsnorm_backward_matches_finite_differences() {
	let (rows, dim) = (3, 8);
	let x = random(rows * dim, 10);
	let w = random(dim, 11);
	let r = random(rows * dim, 12);
	let f = |x: &[f32]| {
		let mut out = vec![0.0; rows * dim];
		let mut rstd = vec![0.0; rows];
		Cpu.rmsnorm_forward(&mut out, &mut rstd, x, &w, dim, 1e-5);
		(out, rstd)
	};
	let (_, rstd) = f(&x);
	let mut dx = vec![0.0; rows * dim];
	Cpu.rmsnorm_backward(&mut dx, &r, &x, &w, &rstd, dim);
	check_grad("rmsnorm", &x, &dx, |x| dot(&f(x).0, &r));
}

#[test]
fn rope_backward_matches_finite_differences_and_inverts() {
	let (seq, heads, d) = (4, 2, 6);
	let width = heads * d;
	let x = random(2 * seq * width, 20);
	let r = random(x.len(), 21);
	let half = d / 2;
	let angles: Vec<f32> = (0..seq * half).map(|i| (i / half) as f32 * 0.3 * (1 + i % half) as f32).collect();
	let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
	let f = |x: &[f32]| {
		let mut y = x.to_vec();
		Cpu.rope(&mut y, width, &cos, &sin, seq, d, false);
		y
	};
	let mut back = f(&x);
	Cpu.rope(&mut back, width, &cos, &sin, seq, d, true);
	assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-5), "inverse rotation undoes the rotation");
	let mut dx = r.clone();
	Cpu.rope(&mut dx, width, &cos, &sin, seq, d, true);
	check_grad("rope", &x, &dx, |x| dot(&f(x), &r));
}

#[test]
fn attention_backward_matches_finite_differences() {
	let s = AttnShape { batch: 2, seq: 5, heads: 4, kv_heads: 2, head_dim: 3 };
	let (nq, nkv) = (s.batch * s.seq * s.heads * s.head_dim, s.batch * s.seq * s.kv_heads * s.head_dim);
	let (q, k, v) = (random(nq, 30), random(nkv, 31), random(nkv, 32));
	let r = random(nq, 33);
	let f = |q: &[f32], k: &[f32], v: &[f32]| {
		let mut out = vec![0.0; nq];
		let mut probs = vec![0.0; s.batch * s.heads * s.seq * s.seq];
		Cpu.attention_forward(&mut out, &mut probs, q, k, v, s);
		(out, probs)
	};
	let (out, probs) = f(&q, &k, &v);
	// Causality: the first token attends to itself only, so its output is its value.
	assert!((out[0] - v[0]).abs() < 1e-6);
	let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nkv], vec![0.0; nkv]);
	Cpu.attention_backward(&mut dq, &mut dk, &mut dv, &r, &probs, &q, &k, &v, s);
	check_grad("attention dq", &q, &dq, |q| dot(&f(q, &k, &v).0, &r));
	check_grad("attention dk", &k, &dk, |k| dot(&f(&q, k, &v).0, &r));
	check_grad("attention dv", &v, &dv, |v| dot(&f(&q, &k, v).0, &r));
}

#[test]
fn swiglu_backward_matches_finite_differences() {
	let (g, u, r) = (random(20, 40), random(20, 41), random(20, 42));
	let f = |g: &[f32], u: &[f32]| {
		let mut out = vec![0.0; 20];
		Cpu.swiglu_forward(&mut out, g, u);
		out
	};
	let (mut dg, mut du) = (vec![0.0; 20], vec![0.0; 20]);
	Cpu.swiglu_backward(&mut dg, &mut du, &r, &g, &u);
	check_grad("swiglu dgate", &g, &dg, |g| dot(&f(g, &u), &r));
	check_grad("swiglu dup", &u, &du, |u| dot(&f(&g, u), &r));
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
	let vocab = 7;
	let logits = random(3 * vocab, 50);
	let targets = [2, -1, 6];
	let loss = |l: &[f32]| Cpu.cross_entropy(&mut l.to_vec(), &targets, vocab, 1.0);
	let mut grad = logits.clone();
	let total = Cpu.cross_entropy(&mut grad, &targets, vocab, 1.0);
	assert!(grad[vocab..2 * vocab].iter().all(|&g| g == 0.0), "ignored rows get no gradient");
	// The loss is the negative log-softmax of the targets.
	let lse = |row: &[f32]| row.iter().map(|x| (*x as f64).exp()).sum::<f64>().ln();
	let want = (lse(&logits[..vocab]) - logits[2] as f64) + (lse(&logits[2 * vocab..]) - logits[2 * vocab + 6] as f64);
	assert!((total - want).abs() < 1e-5, "{total} vs {want}");
	check_grad("cross-entropy", &logits, &grad, loss);
}
