//! The kernels on a GPU against the CPU reference backend (molting-engine's `Cpu`). They
//! run where a CUDA driver and a GPU are present, and say SKIPPED otherwise: on machines
//! without one only the compile tests (`nvrtc.rs`) and the host code's tests run.
//!
//! Tolerances: the CUDA class is its own (another summation order than the CPU's), so
//! float results are compared to the CPU within a relative bound per element; what is
//! computed by the same operations in the same order (the dropout mask, AdamW) is
//! compared bit for bit.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, PushKernelArg};
use molting_cuda::launch;
use molting_engine::backend::cpu::Cpu;
use molting_engine::backend::{AttnShape, OnHost};

/// The CPU reference's operations on host slices.
const CPU: OnHost = OnHost(&Cpu);
use molting_engine::rng::{stream_key, uniform_at, Rng};

struct Gpu {
	stream: Arc<CudaStream>,
	functions: HashMap<&'static str, CudaFunction>,
	_modules: Vec<Arc<CudaModule>>,
}

/// The GPU with every kernel loaded, or `None` (after a visible line) without one.
fn gpu() -> Option<Gpu> {
	let d = molting_cuda::detect();
	let molting_cuda::Detection::Gpu { compute_capability: (major, minor), .. } = d else {
		eprintln!("SKIPPED: no GPU: {}", d.fallback_notice().unwrap_or_default());
		return None;
	};
	if molting_cuda::detect::nvrtc_loads().is_err() {
		eprintln!("SKIPPED: a GPU but no libnvrtc (scripts/fetch-nvrtc.sh)");
		return None;
	}
	if let Err(why) = molting_cuda::detect::cublas_loads() {
		eprintln!("SKIPPED: a GPU but {why}");
		return None;
	}
	let ctx = CudaContext::new(0).expect("GPU 0");
	let stream = ctx.default_stream();
	let mut functions = HashMap::new();
	let mut modules = Vec::new();
	// Machine code for this GPU, as the backend loads it.
	for (k, cubin) in molting_cuda::kernels::compile_all_cubin(&format!("sm_{major}{minor}")).unwrap_or_else(|e| panic!("{e}")) {
		let m = match ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin)) {
			Ok(m) => m,
			Err(e) => panic!("{}: {e:?}", k.file),
		};
		for e in k.entries {
			functions.insert(*e, m.load_function(e).unwrap_or_else(|err| panic!("{e}: {err:?}")));
		}
		modules.push(m);
	}
	Some(Gpu { stream, functions, _modules: modules })
}

/// What an output buffer starts as, so that a kernel that skips writing an element fails.
fn junk<T: cudarc::driver::DeviceRepr + Copy>(s: &Arc<CudaStream>, n: usize, value: T) -> cudarc::driver::CudaSlice<T> {
	s.clone_htod(&vec![value; n]).unwrap()
}

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
	let mut r = Rng::new(seed);
	(0..n).map(|_| (r.uniform() * 2.0 - 1.0) * scale).collect()
}

/// Each element within `rel` of the reference, relative to the reference's largest
/// magnitude in its row of `row` elements (a row's values share one softmax or norm).
#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32], row: usize, rel: f32) {
	assert_eq!(got.len(), want.len(), "{what}: length");
	for (r, (g, w)) in got.chunks(row).zip(want.chunks(row)).enumerate() {
		let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
		for (i, (a, b)) in g.iter().zip(w).enumerate() {
			assert!((a - b).abs() <= rel * scale, "{what}: row {r} element {i}: GPU {a} vs CPU {b} (row scale {scale})");
		}
	}
}

#[test]
fn rmsnorm_swiglu_rope_and_cross_entropy_match_the_cpu() {
	let Some(g) = gpu() else { return };
	let s = &g.stream;
	let (rows, dim) = (37usize, 576usize);
	let (x, w) = (random(rows * dim, 1, 3.0), random(dim, 2, 1.0));
	let (mut out, mut rstd) = (vec![0f32; rows * dim], vec![0f32; rows]);
	CPU.rmsnorm_forward(&mut out, &mut rstd, &x, &w, dim, 1e-5);
	let (x_, w_) = (s.clone_htod(&x).unwrap(), s.clone_htod(&w).unwrap());
	let (mut out_, mut rstd_) = (junk(s, rows * dim, 777f32), junk(s, rows, 777f32));
	let (dim_i, eps) = (dim as i32, 1e-5f32);
	let plan = launch::per_row("rmsnorm_forward", rows as u64, dim as u64).unwrap().unwrap();
	let mut b = s.launch_builder(&g.functions["rmsnorm_forward"]);
	b.arg(&mut out_).arg(&mut rstd_).arg(&x_).arg(&w_).arg(&dim_i).arg(&eps);
	unsafe { b.launch(plan.config()) }.unwrap();
	close("rmsnorm forward", &s.clone_dtoh(&out_).unwrap(), &out, dim, 1e-5);
	close("rmsnorm rstd", &s.clone_dtoh(&rstd_).unwrap(), &rstd, rows, 1e-5);
	let dy = random(rows * dim, 3, 1.0);
	let mut dx = random(rows * dim, 4, 1.0); // accumulated into
	let dx0 = dx.clone();
	CPU.rmsnorm_backward(&mut dx, &dy, &x, &w, &rstd, dim);
	let (dy_, mut dxg) = (s.clone_htod(&dy).unwrap(), s.clone_htod(&dx0).unwrap());
	let mut b = s.launch_builder(&g.functions["rmsnorm_backward"]);
	b.arg(&mut dxg).arg(&dy_).arg(&x_).arg(&w_).arg(&rstd_).arg(&dim_i);
	unsafe { b.launch(plan.config()) }.unwrap();
	close("rmsnorm backward", &s.clone_dtoh(&dxg).unwrap(), &dx, dim, 1e-5);

	// SwiGLU.
	let n = rows * dim;
	let (gate, up, dh) = (random(n, 5, 6.0), random(n, 6, 2.0), random(n, 7, 1.0));
	let mut h = vec![0f32; n];
	CPU.swiglu_forward(&mut h, &gate, &up);
	let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
	CPU.swiglu_backward(&mut dg, &mut du, &dh, &gate, &up);
	let (gate_, up_, dh_) = (s.clone_htod(&gate).unwrap(), s.clone_htod(&up).unwrap(), s.clone_htod(&dh).unwrap());
	// Outputs the kernels overwrite start as junk.
	let (mut h_, mut dg_, mut du_) = (junk(s, n, 777f32), junk(s, n, 777f32), junk(s, n, 777f32));
	let n_i = n as i64;
	let plan = launch::elementwise("swiglu", n as u64).unwrap().unwrap();
	let mut b = s.launch_builder(&g.functions["swiglu_forward"]);
	b.arg(&mut h_).arg(&gate_).arg(&up_).arg(&n_i);
	unsafe { b.launch(plan.config()) }.unwrap();
	let mut b = s.launch_builder(&g.functions["swiglu_backward"]);
	b.arg(&mut dg_).arg(&mut du_).arg(&dh_).arg(&gate_).arg(&up_).arg(&n_i);
	unsafe { b.launch(plan.config()) }.unwrap();
	close("swiglu forward", &s.clone_dtoh(&h_).unwrap(), &h, 1, 1e-5);
	// dgate's factor 1 + g(1 − σ(g)) cancels near g ≈ −1.28: relative to its row there.
	close("swiglu dgate", &s.clone_dtoh(&dg_).unwrap(), &dg, dim, 1e-5);
	close("swiglu dup", &s.clone_dtoh(&du_).unwrap(), &du, 1, 1e-5);

	// RoPE, forward and inverse, at positions restarting mid-row.
	let (head_dim, width) = (64usize, 576usize);
	let positions: Vec<u32> = (0..rows as u32).map(|r| if r < 20 { r } else { r - 20 }).collect();
	let half = head_dim / 2;
	let (mut cos, mut sin) = (vec![0f32; rows * half], vec![0f32; rows * half]);
	for p in 0..rows {
		for i in 0..half {
			let a = p as f32 / 10000f32.powf(2.0 * i as f32 / head_dim as f32);
			(cos[p * half + i], sin[p * half + i]) = (a.cos(), a.sin());
		}
	}
	for inverse in [false, true] {
		let mut xr = x[..rows * width].to_vec();
		let mut xg = s.clone_htod(&xr).unwrap();
		CPU.rope(&mut xr, width, &cos, &sin, &positions, head_dim, inverse);
		let (cos_, sin_, pos_) = (s.clone_htod(&cos).unwrap(), s.clone_htod(&sin).unwrap(), s.clone_htod(&positions).unwrap());
		let (rows_i, width_i, hd_i, inv_i) = (rows as i32, width as i32, head_dim as i32, inverse as i32);
		let plan = launch::rope(rows as u64, width as u64, head_dim as u64).unwrap().unwrap();
		let mut b = s.launch_builder(&g.functions["rope"]);
		b.arg(&mut xg).arg(&rows_i).arg(&width_i).arg(&cos_).arg(&sin_).arg(&pos_).arg(&hd_i).arg(&inv_i);
		unsafe { b.launch(plan.config()) }.unwrap();
		close("rope", &s.clone_dtoh(&xg).unwrap(), &xr, width, 1e-6);
	}

	// Cross-entropy over a 49,152-token vocabulary, one row ignored.
	let (rows, vocab) = (9usize, 49_152usize);
	let logits = random(rows * vocab, 8, 8.0);
	let targets: Vec<i32> = (0..rows as i32).map(|r| if r == 4 { -1 } else { r * 5003 }).collect();
	let (mut grad, mut losses) = (logits.clone(), vec![0f64; rows]);
	CPU.cross_entropy(&mut grad, &targets, vocab, 0.125, &mut losses);
	let (mut lg, t_, mut l_) = (s.clone_htod(&logits).unwrap(), s.clone_htod(&targets).unwrap(), junk(s, rows, 777f64));
	let (vocab_i, scale) = (vocab as i32, 0.125f32);
	let plan = launch::per_row("cross_entropy", rows as u64, vocab as u64).unwrap().unwrap();
	let mut b = s.launch_builder(&g.functions["cross_entropy"]);
	b.arg(&mut lg).arg(&t_).arg(&mut l_).arg(&vocab_i).arg(&scale);
	unsafe { b.launch(plan.config()) }.unwrap();
	close("cross-entropy gradient", &s.clone_dtoh(&lg).unwrap(), &grad, vocab, 1e-5);
	for (r, (a, b)) in s.clone_dtoh(&l_).unwrap().iter().zip(&losses).enumerate() {
		assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "loss of row {r}: GPU {a} vs CPU {b}");
	}
}

#[test]
fn dropout_draws_the_engines_mask_and_adamw_its_update_bit_for_bit() {
	let Some(g) = gpu() else { return };
	let s = &g.stream;
	let n = 100_003usize;
	let (p, key) = (0.05f32, stream_key(42, &[3, 7]));
	let threshold = (p as f64 * (1u64 << 24) as f64).ceil() as u64;
	let keep = 1.0 / (1.0 - p);
	let x = random(n, 9, 1.0);
	let want: Vec<f32> = x.iter().enumerate().map(|(i, &v)| if uniform_at(key, i as u64) < p { 0.0 } else { v * keep }).collect();
	let (x_, mut out_) = (s.clone_htod(&x).unwrap(), junk(s, n, 777f32));
	let n_i = n as i64;
	let plan = launch::elementwise("dropout", n as u64).unwrap().unwrap();
	let mut b = s.launch_builder(&g.functions["dropout_forward"]);
	b.arg(&mut out_).arg(&x_).arg(&n_i).arg(&key).arg(&threshold).arg(&keep);
	unsafe { b.launch(plan.config()) }.unwrap();
	let got = s.clone_dtoh(&out_).unwrap();
	assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "the GPU's mask and scaling are the engine's");

	let hp = molting_engine::optim::AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
	let (mut params, grads) = (random(n, 10, 0.1), random(n, 11, 1.0));
	let (mut m_host, mut v_host) = (vec![0f32; n], vec![0f32; n]);
	let (p_, g_) = (s.clone_htod(&params).unwrap(), s.clone_htod(&grads).unwrap());
	let mut p_ = p_;
	let (mut m_, mut v_) = (s.alloc_zeros::<f32>(n).unwrap(), s.alloc_zeros::<f32>(n).unwrap());
	let (lr, t) = (2e-3f32, 3u64);
	CPU.adamw(&mut params, &grads, &mut m_host, &mut v_host, molting_engine::optim::adamw_step(lr, t, &hp));
	// The host's scalars, as every backend gets them.
	let molting_engine::backend::AdamWStep { step_size, bc2_sqrt, decay, .. } = molting_engine::optim::adamw_step(lr, t, &hp);
	let mut b = s.launch_builder(&g.functions["adamw"]);
	b.arg(&mut p_).arg(&g_).arg(&mut m_).arg(&mut v_).arg(&n_i).arg(&hp.beta1).arg(&hp.beta2).arg(&hp.eps).arg(&step_size).arg(&bc2_sqrt).arg(&decay);
	unsafe { b.launch(plan.config()) }.unwrap();
	let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
	assert!(bits(&s.clone_dtoh(&p_).unwrap()) == bits(&params), "AdamW's parameters bit for bit: the same operations in the same order");
	assert!(bits(&s.clone_dtoh(&m_).unwrap()) == bits(&m_host), "first moments bit for bit");
	assert!(bits(&s.clone_dtoh(&v_).unwrap()) == bits(&v_host), "second moments bit for bit");

	// The backward: dx += kept ? t·keep : +0, onto a non-zero dx.
	let (t, dx0) = (random(n, 16, 1.0), random(n, 17, 1.0));
	let mut dx = dx0.clone();
	let mask = CPU.dropout_mask(p, key, n);
	CPU.dropout_add_kept(&mut dx, &t, &mask);
	let (t_, mut dx_) = (s.clone_htod(&t).unwrap(), s.clone_htod(&dx0).unwrap());
	let mut b = s.launch_builder(&g.functions["dropout_backward"]);
	b.arg(&mut dx_).arg(&t_).arg(&n_i).arg(&key).arg(&threshold).arg(&keep);
	unsafe { b.launch(plan.config()) }.unwrap();
	assert!(bits(&s.clone_dtoh(&dx_).unwrap()) == bits(&dx), "dropout's backward bit for bit");
}

#[test]
fn attention_forward_and_backward_match_the_cpu_across_documents() {
	let Some(g) = gpu() else { return };
	let s = &g.stream;
	// Two rows; the second holds two documents (positions restart at 0).
	let shape = AttnShape { batch: 2, seq: 70, heads: 6, kv_heads: 2, head_dim: 32 };
	let (t, qw, kvw) = (shape.seq, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim);
	let tokens = shape.batch * t;
	let positions: Vec<u32> = (0..tokens).map(|i| if i < t { i as u32 } else if i < t + 30 { (i - t) as u32 } else { (i - t - 30) as u32 }).collect();
	let (q, k, v, dout) = (random(tokens * qw, 12, 1.0), random(tokens * kvw, 13, 1.0), random(tokens * kvw, 14, 1.0), random(tokens * qw, 15, 1.0));
	let mut out = vec![0f32; tokens * qw];
	let saved = CPU.attention_forward(&mut out, &q, &k, &v, &positions, shape);
	let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
	CPU.attention_backward(&mut dq, &mut dk, &mut dv, &dout, &out, &saved, &q, &k, &v, &positions, shape);

	let plans = launch::attention(
		launch::Attention { batch: 2, seq: t as u64, heads: 6, kv_heads: 2, head_dim: 32 },
		launch::DEFAULT_SHARED_LIMIT,
	)
	.unwrap()
	.unwrap();
	let (q_, k_, v_, do_, pos_) = (s.clone_htod(&q).unwrap(), s.clone_htod(&k).unwrap(), s.clone_htod(&v).unwrap(), s.clone_htod(&dout).unwrap(), s.clone_htod(&positions).unwrap());
	let stats = shape.batch * shape.heads * t;
	let (mut out_, mut lse_, mut delta_) = (junk(s, out.len(), 777f32), junk(s, stats, 777f32), junk(s, stats, 777f32));
	// Gradients the kernels overwrite start as junk.
	let (mut dq_, mut dk_, mut dv_) = (
		s.clone_htod(&random(dq.len(), 97, 1e3)).unwrap(),
		s.clone_htod(&random(dk.len(), 98, 1e3)).unwrap(),
		s.clone_htod(&random(dv.len(), 99, 1e3)).unwrap(),
	);
	let (seq_i, h_i, kv_i, d_i, scale) = (t as i32, 6i32, 2i32, 32i32, 1.0 / 32f32.sqrt());
	let mut b = s.launch_builder(&g.functions["attention_forward"]);
	b.arg(&mut out_).arg(&mut lse_).arg(&q_).arg(&k_).arg(&v_).arg(&pos_).arg(&seq_i).arg(&h_i).arg(&kv_i).arg(&d_i).arg(&scale);
	unsafe { b.launch(plans.forward.config()) }.unwrap();
	close("attention forward", &s.clone_dtoh(&out_).unwrap(), &out, shape.head_dim, 1e-5);
	let mut b = s.launch_builder(&g.functions["attention_delta"]);
	b.arg(&mut delta_).arg(&do_).arg(&out_).arg(&seq_i).arg(&h_i).arg(&d_i);
	unsafe { b.launch(plans.delta.config()) }.unwrap();
	let mut b = s.launch_builder(&g.functions["attention_backward_dq"]);
	b.arg(&mut dq_).arg(&do_).arg(&lse_).arg(&delta_).arg(&q_).arg(&k_).arg(&v_).arg(&pos_).arg(&seq_i).arg(&h_i).arg(&kv_i).arg(&d_i).arg(&scale);
	unsafe { b.launch(plans.backward_dq.config()) }.unwrap();
	let mut b = s.launch_builder(&g.functions["attention_backward_dkdv"]);
	b.arg(&mut dk_).arg(&mut dv_).arg(&do_).arg(&lse_).arg(&delta_).arg(&q_).arg(&k_).arg(&v_).arg(&pos_).arg(&seq_i).arg(&h_i).arg(&kv_i).arg(&d_i).arg(&scale);
	unsafe { b.launch(plans.backward_dkdv.config()) }.unwrap();
	close("attention dq", &s.clone_dtoh(&dq_).unwrap(), &dq, shape.head_dim, 1e-4);
	close("attention dk", &s.clone_dtoh(&dk_).unwrap(), &dk, shape.head_dim, 1e-4);
	close("attention dv", &s.clone_dtoh(&dv_).unwrap(), &dv, shape.head_dim, 1e-4);
}

#[test]
fn the_elementwise_kernels_and_the_clipping_norm_match_the_cpu() {
	let Some(g) = gpu() else { return };
	let s = &g.stream;
	let (rows, dim) = (33usize, 576usize);
	let n = rows * dim;
	let (y0, x, bias) = (random(n, 20, 1.0), random(n, 21, 1.0), random(dim, 22, 1.0));
	let n_i = n as i64;
	let plan = launch::elementwise("elementwise", n as u64).unwrap().unwrap();
	let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
	let x_ = s.clone_htod(&x).unwrap();
	// y += x, y += bias per row, x *= a, y += a·x: one rounding each, so bit for bit.
	let mut want = y0.clone();
	CPU.add_assign(&mut want, &x);
	let mut y_ = s.clone_htod(&y0).unwrap();
	let mut b = s.launch_builder(&g.functions["add_assign"]);
	b.arg(&mut y_).arg(&x_).arg(&n_i);
	unsafe { b.launch(plan.config()) }.unwrap();
	assert!(bits(&s.clone_dtoh(&y_).unwrap()) == bits(&want), "add_assign");
	CPU.add_bias(&mut want, &bias);
	let (bias_, rows_i, dim_i) = (s.clone_htod(&bias).unwrap(), rows as i64, dim as i32);
	let mut b = s.launch_builder(&g.functions["add_bias"]);
	b.arg(&mut y_).arg(&bias_).arg(&rows_i).arg(&dim_i);
	unsafe { b.launch(plan.config()) }.unwrap();
	assert!(bits(&s.clone_dtoh(&y_).unwrap()) == bits(&want), "add_bias");
	CPU.scale(&mut want, 0.37);
	let a = 0.37f32;
	let mut b = s.launch_builder(&g.functions["scale"]);
	b.arg(&mut y_).arg(&a).arg(&n_i);
	unsafe { b.launch(plan.config()) }.unwrap();
	assert!(bits(&s.clone_dtoh(&y_).unwrap()) == bits(&want), "scale");
	let axpy: Vec<f32> = want.iter().zip(&x).map(|(y, x)| y + a * x).collect();
	let mut b = s.launch_builder(&g.functions["axpy"]);
	b.arg(&mut y_).arg(&x_).arg(&a).arg(&n_i);
	unsafe { b.launch(plan.config()) }.unwrap();
	assert!(bits(&s.clone_dtoh(&y_).unwrap()) == bits(&axpy), "axpy");

	// Row gathers (the embedding lookup) and scatters (the LM head's gradient rows).
	let (vocab, tokens) = (50usize, vec![3u32, 49, 0, 3, 17]);
	let table = random(vocab * dim, 23, 1.0);
	let mut want = vec![0f32; tokens.len() * dim];
	CPU.gather_rows(&mut want, &table, &tokens, dim);
	let (table_, tokens_) = (s.clone_htod(&table).unwrap(), s.clone_htod(&tokens).unwrap());
	let mut out_ = s.clone_htod(&random(want.len(), 24, 1e3)).unwrap();
	let t_rows = tokens.len() as i64;
	let rows_plan = launch::elementwise("gather_rows", want.len() as u64).unwrap().unwrap();
	let mut b = s.launch_builder(&g.functions["gather_rows"]);
	b.arg(&mut out_).arg(&table_).arg(&tokens_).arg(&t_rows).arg(&dim_i);
	unsafe { b.launch(rows_plan.config()) }.unwrap();
	assert!(bits(&s.clone_dtoh(&out_).unwrap()) == bits(&want), "gather_rows");
	let distinct = vec![7u32, 0, 32, 5];
	let src = random(distinct.len() * dim, 26, 1.0);
	let mut dst = random(rows * dim, 27, 1.0);
	let mut dst_ = s.clone_htod(&dst).unwrap();
	CPU.scatter_rows(&mut dst, &src, &distinct, dim);
	let (src_, idx_, s_rows) = (s.clone_htod(&src).unwrap(), s.clone_htod(&distinct).unwrap(), distinct.len() as i64);
	let plan_s = launch::elementwise("scatter_rows", src.len() as u64).unwrap().unwrap();
	let mut b = s.launch_builder(&g.functions["scatter_rows"]);
	b.arg(&mut dst_).arg(&src_).arg(&idx_).arg(&s_rows).arg(&dim_i);
	unsafe { b.launch(plan_s.config()) }.unwrap();
	assert!(bits(&s.clone_dtoh(&dst_).unwrap()) == bits(&dst), "scatter_rows: the rows written, the others kept");

	// The clipping norm's square: another order than the CPU's sequential sum, in f64.
	let grads = random(3 * launch::SUMSQ_PER_BLOCK as usize + 5, 25, 1.0);
	let cpu = CPU.sum_squares(&grads);
	let (first, second, partials) = launch::sum_of_squares(grads.len() as u64).unwrap().unwrap();
	let (g_, mut part_, mut out_) = (s.clone_htod(&grads).unwrap(), junk(s, partials as usize, 777f64), junk(s, 1, 777f64));
	let (len, per) = (grads.len() as i64, launch::SUMSQ_PER_BLOCK as i64);
	let mut b = s.launch_builder(&g.functions["sumsq_partials"]);
	b.arg(&mut part_).arg(&g_).arg(&len).arg(&per);
	unsafe { b.launch(first.config()) }.unwrap();
	let count = partials as i32;
	let mut b = s.launch_builder(&g.functions["sum_partials"]);
	b.arg(&mut out_).arg(&part_).arg(&count);
	unsafe { b.launch(second.config()) }.unwrap();
	let gpu = s.clone_dtoh(&out_).unwrap()[0];
	assert!((gpu - cpu).abs() <= 1e-12 * cpu, "sum of squares: GPU {gpu} vs CPU {cpu}");
}

#[test]
fn cublas_products_match_the_cpu_and_repeat_to_the_bit() {
	use molting_cuda::blas::{Blas, Product};
	let Some(g) = gpu() else { return };
	let s = &g.stream;
	let blas = Blas::new(s.clone()).unwrap_or_else(|e| panic!("{e}"));
	// A LoRA-sized and a layer-sized product, odd sizes on purpose, and a weight
	// gradient's long reduction (k = tokens), where cuBLAS would split K if it could.
	for (m, k, n) in [(37usize, 576usize, 16usize), (130, 576, 1536), (16, 8192, 576)] {
		for (product, a_len, b_len) in [(Product::Nt, m * k, n * k), (Product::Nn, m * k, k * n), (Product::Tn, k * m, k * n)] {
			let (a, b, c0) = (random(a_len, 30, 1.0), random(b_len, 31, 1.0), random(m * n, 32, 1.0));
			for accumulate in [false, true] {
				let mut want = c0.clone();
				match product {
					Product::Nt => CPU.matmul_nt(&mut want, &a, &b, m, k, n, accumulate),
					Product::Nn => CPU.matmul_nn(&mut want, &a, &b, m, k, n, accumulate),
					Product::Tn => CPU.matmul_tn(&mut want, &a, &b, m, k, n, accumulate),
				}
				let (a_, b_) = (s.clone_htod(&a).unwrap(), s.clone_htod(&b).unwrap());
				let mut c_ = s.clone_htod(&c0).unwrap();
				blas.matmul(product, &mut c_, &a_, &b_, m, k, n, accumulate).unwrap();
				let got = s.clone_dtoh(&c_).unwrap();
				// f32 sums of k products in another order: within k·2⁻²⁴ of the row's scale.
				close(&format!("{product:?} {m}x{k}x{n} accumulate={accumulate}"), &got, &want, n, k as f32 * 6e-8);
				let mut again = s.clone_htod(&c0).unwrap();
				blas.matmul(product, &mut again, &a_, &b_, m, k, n, accumulate).unwrap();
				let twice = s.clone_dtoh(&again).unwrap();
				assert!(got.iter().zip(&twice).all(|(x, y)| x.to_bits() == y.to_bits()), "{product:?}: the same bits twice");
			}
		}
	}
	// bf16 inputs, f32 accumulation, every product, plain and accumulating, twice: against
	// the CPU's f32 product of the same bf16-rounded inputs (their products are exact in f32).
	let (m, k, n) = (64usize, 576usize, 192usize);
	let round = |v: &[f32]| v.iter().map(|&x| half::bf16::from_f32(x)).collect::<Vec<_>>();
	let widen = |v: &[half::bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
	for (product, a_len, b_len) in [(Product::Nt, m * k, n * k), (Product::Nn, m * k, k * n), (Product::Tn, k * m, k * n)] {
		let (a16, b16) = (round(&random(a_len, 33, 1.0)), round(&random(b_len, 34, 1.0)));
		let (ar, br) = (widen(&a16), widen(&b16));
		let c0 = random(m * n, 35, 1.0);
		for accumulate in [false, true] {
			let mut want = c0.clone();
			match product {
				Product::Nt => CPU.matmul_nt(&mut want, &ar, &br, m, k, n, accumulate),
				Product::Nn => CPU.matmul_nn(&mut want, &ar, &br, m, k, n, accumulate),
				Product::Tn => CPU.matmul_tn(&mut want, &ar, &br, m, k, n, accumulate),
			}
			let (a_, b_) = (s.clone_htod(&a16).unwrap(), s.clone_htod(&b16).unwrap());
			let run = || {
				let mut c_ = s.clone_htod(&c0).unwrap();
				blas.matmul_bf16(product, &mut c_, &a_, &b_, m, k, n, accumulate).unwrap();
				s.clone_dtoh(&c_).unwrap()
			};
			let (got, twice) = (run(), run());
			close(&format!("bf16 {product:?} accumulate={accumulate}"), &got, &want, n, k as f32 * 6e-8);
			assert!(got.iter().zip(&twice).all(|(x, y)| x.to_bits() == y.to_bits()), "bf16 {product:?}: the same bits twice");
		}
	}
	// An empty sum (k = 0): c is zeroed, or kept when accumulating, as on the CPU.
	let c0 = random(6, 36, 1.0);
	let (Ok(a0), Ok(b0)) = (s.alloc_zeros::<f32>(0), s.alloc_zeros::<f32>(0)) else {
		eprintln!("SKIPPED: the k = 0 case (the driver refuses empty buffers)");
		return;
	};
	for accumulate in [false, true] {
		let mut c_ = s.clone_htod(&c0).unwrap();
		blas.matmul(Product::Nt, &mut c_, &a0, &b0, 2, 0, 3, accumulate).unwrap();
		let want = if accumulate { c0.clone() } else { vec![0.0; 6] };
		assert_eq!(s.clone_dtoh(&c_).unwrap(), want, "k = 0, accumulate = {accumulate}");
	}
}

#[test]
fn to_bf16_rounds_to_nearest_even_as_the_half_crate_does() {
	let Some(g) = gpu() else { return };
	let s = &g.stream;
	// Ties both ways, the largest finite values, infinities, denormals, signed zeros.
	let mut x: Vec<f32> = random(10_000, 40, 3.0);
	x.extend([
		f32::from_bits(0x3f80_8000),
		f32::from_bits(0x3f81_8000),
		f32::MAX,
		f32::MIN,
		f32::INFINITY,
		f32::NEG_INFINITY,
		f32::from_bits(1),
		f32::from_bits(0x8000_7fff),
		0.0,
		-0.0,
	]);
	let n = x.len();
	let x_ = s.clone_htod(&x).unwrap();
	let mut out = junk(s, n, half::bf16::from_bits(0x1234));
	let n_i = n as i64;
	let plan = launch::elementwise("to_bf16", n as u64).unwrap().unwrap();
	let mut b = s.launch_builder(&g.functions["to_bf16"]);
	b.arg(&mut out).arg(&x_).arg(&n_i);
	unsafe { b.launch(plan.config()) }.unwrap();
	let got = s.clone_dtoh(&out).unwrap();
	for (i, (v, r)) in x.iter().zip(&got).enumerate() {
		assert_eq!(r.to_bits(), half::bf16::from_f32(*v).to_bits(), "element {i}: {v:e}");
	}
	let nan = s.clone_htod(&[f32::NAN, -f32::NAN]).unwrap();
	let mut out = junk(s, 2, half::bf16::from_bits(0x1234));
	let two = 2i64;
	let mut b = s.launch_builder(&g.functions["to_bf16"]);
	b.arg(&mut out).arg(&nan).arg(&two);
	unsafe { b.launch(launch::elementwise("to_bf16", 2).unwrap().unwrap().config()) }.unwrap();
	assert!(s.clone_dtoh(&out).unwrap().iter().all(|r| r.to_bits() == 0x7fc0), "a NaN becomes the quiet 0x7fc0");
}
