//! Each kernel's backward against central finite differences, coordinate by coordinate,
//! and the matmuls against an f64 product on shapes that reach every blocking path.
//! Objectives are `L = Σ r ⊙ f(x)` for a fixed random `r`.

use super::*;
use crate::backend::OnHost;
use crate::rng::Rng;

/// The CPU backend's operations on host slices.
const CPU: OnHost = OnHost(&Cpu);

fn random(n: usize, seed: u64) -> Vec<f32> {
	let mut r = Rng::new(seed);
	(0..n).map(|_| r.uniform() * 2.0 - 1.0).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
	a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Per-coordinate tolerance of a finite-difference check: `|fd − analytic| ≤ ABS + REL·|analytic|`.
/// The objectives are O(1)-scaled sums of f32 results: the central difference's rounding
/// noise is about `1e-7·|L| / h ≈ 1e-5`, its truncation `h²/6·f‴ ≈ 2e-5`.
const FD_REL: f32 = 1e-2;
const FD_ABS: f32 = 2e-4;

/// Checks `analytic` against `(L(x + h eᵢ) − L(x − h eᵢ)) / 2h` for every coordinate.
pub(crate) fn check_grad(name: &str, x: &[f32], analytic: &[f32], loss: impl Fn(&[f32]) -> f64) {
	let h = 1e-2f32;
	assert_eq!(x.len(), analytic.len(), "{name}: one gradient per coordinate");
	for i in 0..x.len() {
		let mut xp = x.to_vec();
		xp[i] += h;
		let mut xm = x.to_vec();
		xm[i] -= h;
		let fd = ((loss(&xp) - loss(&xm)) / (2.0 * h as f64)) as f32;
		let err = (fd - analytic[i]).abs();
		assert!(
			err <= FD_ABS + FD_REL * analytic[i].abs(),
			"{name}: d/dx[{i}] analytic {} vs finite difference {fd} (error {err})",
			analytic[i]
		);
	}
}

/// `C = A·B` in f64 with `|A|·|B|` (the bound rounding errors scale with).
fn naive(
	m: usize,
	k: usize,
	n: usize,
	a: impl Fn(usize, usize) -> f32,
	b: impl Fn(usize, usize) -> f32,
) -> (Vec<f64>, Vec<f64>) {
	let mut c = vec![0f64; m * n];
	let mut mag = vec![0f64; m * n];
	for i in 0..m {
		for p in 0..k {
			let av = a(i, p) as f64;
			for j in 0..n {
				let bv = b(p, j) as f64;
				c[i * n + j] += av * bv;
				mag[i * n + j] += (av * bv).abs();
			}
		}
	}
	(c, mag)
}

#[test]
fn matmuls_match_an_f64_product_on_every_blocking_path() {
	// The AVX-512 kernel blocks k by 192, tiles 12 × 32, the grid 512 × 1024 (at least four
	// tiles). These shapes cross each: k over one and two KC blocks, edge tiles in both
	// directions, several row tiles and several column tiles, a single element.
	// Few rows split by columns instead (13 × 33, 16 × 600).
	let shapes =
		[(1, 1, 1), (13, 389, 33), (517, 7, 1030), (25, 200, 65), (530, 390, 40), (12, 192, 32), (16, 1030, 600)];
	for (si, &(m, k, n)) in shapes.iter().enumerate() {
		let seed = 10 * si as u64;
		let a = random(m * k, seed + 1);
		let b_nk = random(n * k, seed + 2);
		let b_kn = random(k * n, seed + 3);
		let a_km = random(k * m, seed + 4);
		let init = random(m * n, seed + 5);
		let cases: [(&str, Box<dyn Fn(&mut [f32], bool)>, (Vec<f64>, Vec<f64>)); 3] = [
			(
				"nt",
				Box::new(|c: &mut [f32], acc| CPU.matmul_nt(c, &a, &b_nk, m, k, n, acc)),
				naive(m, k, n, |i, p| a[i * k + p], |p, j| b_nk[j * k + p]),
			),
			(
				"nn",
				Box::new(|c: &mut [f32], acc| CPU.matmul_nn(c, &a, &b_kn, m, k, n, acc)),
				naive(m, k, n, |i, p| a[i * k + p], |p, j| b_kn[p * n + j]),
			),
			(
				"tn",
				Box::new(|c: &mut [f32], acc| CPU.matmul_tn(c, &a_km, &b_kn, m, k, n, acc)),
				naive(m, k, n, |i, p| a_km[p * m + i], |p, j| b_kn[p * n + j]),
			),
		];
		for (name, f, (want, mag)) in &cases {
			for accumulate in [false, true] {
				let mut c = init.clone();
				f(&mut c, accumulate);
				for idx in 0..m * n {
					let base = if accumulate { init[idx] as f64 } else { 0.0 };
					let err = (c[idx] as f64 - base - want[idx]).abs();
					// f32 rounding of a k-term sum: a few ulps of the magnitude.
					let tol = 4.0 * f32::EPSILON as f64 * (mag[idx] + base.abs()) + 1e-30;
					assert!(
						err <= tol,
						"{name} {m}x{k}x{n} accumulate={accumulate} at ({}, {}): {} vs {} (error {err:.3e}, allowed {tol:.3e})",
						idx / n,
						idx % n,
						c[idx],
						base + want[idx]
					);
				}
			}
		}
	}
}

#[test]
fn matmul_rows_do_not_depend_on_the_other_rows() {
	// What packing relies on: a row's result depends on that row only, to the bit, whatever
	// the row count (and so the tile grid) and the row's place.
	let (k, n) = (389, 70);
	let w = random(n * k, 1);
	let big = random(40 * k, 2);
	let mut c_big = vec![0f32; 40 * n];
	CPU.matmul_nt(&mut c_big, &big, &w, 40, k, n, false);
	// Few rows are tiled by columns, many by rows: the same bits either way.
	for (start, rows) in [(0, 1), (7, 5), (13, 27), (0, 16), (20, 20)] {
		let mut c = vec![0f32; rows * n];
		CPU.matmul_nt(&mut c, &big[start * k..(start + rows) * k], &w, rows, k, n, false);
		assert_eq!(c, &c_big[start * n..(start + rows) * n], "rows {start}..{}", start + rows);
	}
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
	let (rows, dim) = (3, 40);
	let x = random(rows * dim, 10);
	let w = random(dim, 11);
	let r = random(rows * dim, 12);
	let f = |x: &[f32]| {
		let mut out = vec![0.0; rows * dim];
		let mut rstd = vec![0.0; rows];
		CPU.rmsnorm_forward(&mut out, &mut rstd, x, &w, dim, 1e-5);
		(out, rstd)
	};
	let (_, rstd) = f(&x);
	let mut dx = vec![0.0; rows * dim];
	CPU.rmsnorm_backward(&mut dx, &r, &x, &w, &rstd, dim);
	check_grad("rmsnorm", &x, &dx, |x| dot(&f(x).0, &r));
}

#[test]
fn rope_uses_each_rows_position_and_its_backward_matches_finite_differences() {
	let (heads, d) = (2, 6);
	let width = heads * d;
	// Two documents in the first row (positions restart), one in the second.
	let positions = [0u32, 1, 2, 0, 1, 0, 1, 2, 3, 4];
	let x = random(positions.len() * width, 20);
	let r = random(x.len(), 21);
	let half = d / 2;
	let angles: Vec<f32> = (0..5 * half).map(|i| (i / half) as f32 * 0.3 * (1 + i % half) as f32).collect();
	let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
	let f = |x: &[f32]| {
		let mut y = x.to_vec();
		CPU.rope(&mut y, width, &cos, &sin, &positions, d, false);
		y
	};
	let y = f(&x);
	// Rows at position 0 are unrotated; rows at the same position turn the same way.
	assert_eq!(&y[..width], &x[..width]);
	assert_eq!(&y[3 * width..4 * width], &x[3 * width..4 * width]);
	let mut alone = x[6 * width..7 * width].to_vec();
	CPU.rope(&mut alone, width, &cos, &sin, &[1], d, false);
	assert_eq!(&alone, &y[6 * width..7 * width], "position 1 in either row");
	let mut back = y.clone();
	CPU.rope(&mut back, width, &cos, &sin, &positions, d, true);
	assert!(back.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-5), "inverse rotation undoes the rotation");
	let mut dx = r.clone();
	CPU.rope(&mut dx, width, &cos, &sin, &positions, d, true);
	check_grad("rope", &x, &dx, |x| dot(&f(x), &r));
}

/// Attention over `positions` (one row of `seq`): output and saved state.
fn attend(q: &[f32], k: &[f32], v: &[f32], positions: &[u32], s: AttnShape) -> (Vec<f32>, AttnSaved) {
	let mut out = vec![0.0; q.len()];
	let saved = CPU.attention_forward(&mut out, q, k, v, positions, s);
	(out, saved)
}

#[test]
fn attention_backward_matches_finite_differences_across_documents() {
	let s = AttnShape { batch: 2, seq: 5, heads: 4, kv_heads: 2, head_dim: 3 };
	let positions = [0u32, 1, 2, 0, 1, 0, 1, 2, 3, 4];
	let (nq, nkv) = (s.batch * s.seq * s.heads * s.head_dim, s.batch * s.seq * s.kv_heads * s.head_dim);
	let (q, k, v) = (random(nq, 30), random(nkv, 31), random(nkv, 32));
	let r = random(nq, 33);
	let f = |q: &[f32], k: &[f32], v: &[f32]| attend(q, k, v, &positions, s);
	let (out, saved) = f(&q, &k, &v);
	// The first token of each document attends to itself only: its output is its value.
	let (qw, kvw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
	for row in [0, 3, 5] {
		for h in 0..s.heads {
			let kvh = h / (s.heads / s.kv_heads);
			for j in 0..s.head_dim {
				assert_eq!(out[row * qw + h * s.head_dim + j], v[row * kvw + kvh * s.head_dim + j], "row {row}");
			}
		}
	}
	let (mut dq, mut dk, mut dv) = (vec![0.0; nq], vec![0.0; nkv], vec![0.0; nkv]);
	CPU.attention_backward(&mut dq, &mut dk, &mut dv, &r, &out, &saved, &q, &k, &v, &positions, s);
	check_grad("attention dq", &q, &dq, |q| dot(&f(q, &k, &v).0, &r));
	check_grad("attention dk", &k, &dk, |k| dot(&f(&q, k, &v).0, &r));
	check_grad("attention dv", &v, &dv, |v| dot(&f(&q, &k, v).0, &r));
}

#[test]
fn attention_of_a_document_is_the_same_bits_as_alone_over_several_row_blocks() {
	// 150 tokens (three row blocks of 64) after a 30-token document, against the same
	// 150 tokens alone: every output bit equal, and the first document changes nothing.
	let (heads, kv_heads, d) = (2, 1, 8);
	let (qw, kvw) = (heads * d, kv_heads * d);
	let (a, b) = (30, 150);
	let t = a + b;
	let s = AttnShape { batch: 1, seq: t, heads, kv_heads, head_dim: d };
	let positions: Vec<u32> = (0..a as u32).chain(0..b as u32).collect();
	let (q, k, v) = (random(t * qw, 40), random(t * kvw, 41), random(t * kvw, 42));
	let (out, _) = attend(&q, &k, &v, &positions, s);
	let alone = AttnShape { seq: b, ..s };
	let pos_b: Vec<u32> = (0..b as u32).collect();
	let (out_b, _) = attend(&q[a * qw..], &k[a * kvw..], &v[a * kvw..], &pos_b, alone);
	assert_eq!(&out[a * qw..], &out_b[..]);
	// A different first document: the second one's output is unchanged, to the bit.
	let (mut q2, mut k2) = (q.clone(), k.clone());
	q2[..a * qw].iter_mut().for_each(|x| *x = -*x * 3.0);
	k2[..a * kvw].iter_mut().for_each(|x| *x += 1.0);
	let (out2, _) = attend(&q2, &k2, &v, &positions, s);
	assert_eq!(&out2[a * qw..], &out[a * qw..]);
	// And it is the causal attention a plain triple loop computes.
	for i in [0, 63, 64, 149] {
		for h in 0..heads {
			let qi = &q[(a + i) * qw + h * d..][..d];
			let scores: Vec<f64> = (0..=i).map(|j| dot(qi, &k[(a + j) * kvw..][..d]) / (d as f64).sqrt()).collect();
			let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
			let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
			let z: f64 = w.iter().sum();
			for c in 0..d {
				let want: f64 = (0..=i).map(|j| w[j] / z * v[(a + j) * kvw + c] as f64).sum();
				let got = out[(a + i) * qw + h * d + c] as f64;
				assert!((got - want).abs() < 1e-5, "token {i} head {h}: {got} vs {want}");
			}
		}
	}
}

#[test]
fn swiglu_backward_matches_finite_differences() {
	let (g, u, r) = (random(40, 40), random(40, 41), random(40, 42));
	let g: Vec<f32> = g.iter().map(|x| x * 4.0).collect();
	let f = |g: &[f32], u: &[f32]| {
		let mut out = vec![0.0; 40];
		CPU.swiglu_forward(&mut out, g, u);
		out
	};
	// silu(g)·u against its definition.
	for ((o, &g), &u) in f(&g, &u).iter().zip(&g).zip(&u) {
		let want = g as f64 / (1.0 + (-g as f64).exp()) * u as f64;
		assert!((*o as f64 - want).abs() < 1e-6, "{o} vs {want}");
	}
	let (mut dg, mut du) = (vec![0.0; 40], vec![0.0; 40]);
	CPU.swiglu_backward(&mut dg, &mut du, &r, &g, &u);
	check_grad("swiglu dgate", &g, &dg, |g| dot(&f(g, &u), &r));
	check_grad("swiglu dup", &u, &du, |u| dot(&f(&g, u), &r));
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
	let vocab = 37;
	let logits: Vec<f32> = random(3 * vocab, 50).iter().map(|x| x * 3.0).collect();
	let targets = [2, -1, 36];
	let ce = |l: &mut [f32]| {
		let mut losses = vec![0f64; 3];
		CPU.cross_entropy(l, &targets, vocab, 1.0, &mut losses);
		losses
	};
	let mut grad = logits.clone();
	let losses = ce(&mut grad);
	assert!(grad[vocab..2 * vocab].iter().all(|&g| g == 0.0), "ignored rows get no gradient");
	assert_eq!(losses[1], 0.0);
	// Each loss is the negative log-softmax of its target, computed in f64.
	let lse = |row: &[f32]| row.iter().map(|x| (*x as f64).exp()).sum::<f64>().ln();
	for (r, t) in [(0usize, 2usize), (2, 36)] {
		let want = lse(&logits[r * vocab..(r + 1) * vocab]) - logits[r * vocab + t] as f64;
		assert!((losses[r] - want).abs() < 1e-6 * want.abs().max(1.0), "row {r}: {} vs {want}", losses[r]);
	}
	check_grad("cross-entropy", &logits, &grad, |l| ce(&mut l.to_vec()).iter().sum());
}

#[test]
fn frozen_products_give_the_plain_matmuls_bits() {
	// Packing the weight once changes where it is read from, not the arithmetic.
	let (m, k, n) = (37, 389, 70);
	let (x, w, dy) = (random(m * k, 60), random(n * k, 61), random(m * n, 62));
	let frozen = CPU.freeze(&w, n, k);
	let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
	CPU.frozen_forward(&mut a, &x, &frozen, m, false);
	CPU.matmul_nt(&mut b, &x, &w, m, k, n, false);
	assert_eq!(a, b);
	let (mut a, mut b) = (random(m * k, 63), random(m * k, 63));
	CPU.frozen_backward(&mut a, &dy, &frozen, m, true);
	CPU.matmul_nn(&mut b, &dy, &w, m, n, k, true);
	assert_eq!(a, b);
}

#[test]
fn bf16_products_match_an_f64_product_of_the_rounded_operands() {
	let Some(bf16) = CpuBf16::new() else {
		eprintln!("no AVX512_BF16 here: the bf16 backend is not available");
		return;
	};
	let bf = OnHost(&bf16);
	let round =
		|v: &[f32]| -> Vec<f32> { v.iter().map(|&x| f32::from_bits((sgemm_bf16::to_bf16(x) as u32) << 16)).collect() };
	// k over one and two blocks of 256 and odd (a padded pair), edge tiles both ways,
	// several row and column tiles.
	for (si, &(m, k, n)) in [(1, 1, 1), (13, 389, 33), (530, 7, 1030), (25, 600, 65), (12, 256, 32)].iter().enumerate()
	{
		let seed = 100 + 10 * si as u64;
		let (x, w, dy) = (random(m * k, seed), random(n * k, seed + 1), random(m * n, seed + 2));
		let frozen = bf.freeze(&w, n, k);
		let (xr, wr, dyr) = (round(&x), round(&w), round(&dy));
		let init = random(m * n, seed + 3);
		for accumulate in [false, true] {
			let mut y = init.clone();
			bf.frozen_forward(&mut y, &x, &frozen, m, accumulate);
			let (want, mag) = naive(m, k, n, |i, p| xr[i * k + p], |p, j| wr[j * k + p]);
			for idx in 0..m * n {
				let base = if accumulate { init[idx] as f64 } else { 0.0 };
				let err = (y[idx] as f64 - base - want[idx]).abs();
				let tol = 4.0 * f32::EPSILON as f64 * (mag[idx] + base.abs()) + 1e-30;
				assert!(
					err <= tol,
					"bf16 forward {m}x{k}x{n} at {idx}: {} vs {} ({err:.2e} > {tol:.2e})",
					y[idx],
					base + want[idx]
				);
			}
		}
		let mut dx = vec![0f32; m * k];
		bf.frozen_backward(&mut dx, &dy, &frozen, m, false);
		let (want, mag) = naive(m, n, k, |i, p| dyr[i * n + p], |p, j| wr[p * k + j]);
		for idx in 0..m * k {
			let err = (dx[idx] as f64 - want[idx]).abs();
			assert!(err <= 4.0 * f32::EPSILON as f64 * mag[idx] + 1e-30, "bf16 backward {m}x{k}x{n} at {idx}");
		}
		// Against the unrounded product the error is bf16's: about 2⁻⁸ of the magnitude.
		let mut y = vec![0f32; m * n];
		bf.frozen_forward(&mut y, &x, &frozen, m, false);
		let (exact, mag) = naive(m, k, n, |i, p| x[i * k + p], |p, j| w[j * k + p]);
		for idx in 0..m * n {
			assert!((y[idx] as f64 - exact[idx]).abs() <= 2f64.powi(-7) * mag[idx] + 1e-30);
		}
	}
}
