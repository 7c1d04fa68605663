//! The engine's [`Backend`] on one NVIDIA GPU: every buffer a `CudaSlice` in device memory,
//! every operation a kernel of `kernels/` (NVRTC, compiled once when the backend is made)
//! or a cuBLAS product ([`crate::blas`]), all on one stream. Host and device meet only
//! where the engine asks: uploads of a batch, the parameters and moments, and the reads
//! of the per-row losses, the clipping norm and the state at a step's end.
//!
//! Everything that can fail for a reason of the machine (no driver, no GPU, no libnvrtc or
//! libcublas, an architecture NVRTC does not know, machine code the driver will not load) fails in
//! [`Cuda::new`], with a message that says which. After that, an operation panics only on a
//! driver error mid-step (a lost device, out of memory), naming the operation: the engine's
//! interface is infallible, and a training run resumes from its last checkpoint.
//!
//! Its reproducibility class ([`Cuda::class`]) names what its bits depend on: the GPU's
//! architecture and SM count, NVRTC's and cuBLAS's versions and [`crate::KERNELS_VERSION`]
//! (see the crate doc).

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, PushKernelArg};
use half::bf16;
use molting_engine::backend::{AdamWStep, AttnSaved, AttnShape, Backend, Buf, DropSaved, Frozen, View, ViewMut};
use molting_engine::spec::Precision;

use crate::blas::{Blas, BlasError, Product};
use crate::launch::{self, LaunchError, Plan};
use crate::{detect, CompileError, Detection, KERNELS_VERSION};

/// Why no CUDA backend could be made here.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
	#[error("no CUDA GPU to train on: {0}")]
	NoGpu(String),
	#[error("NVRTC {nvrtc} cannot compile for this GPU's architecture sm_{arch} (it knows {known})")]
	UnsupportedArch { arch: u32, nvrtc: String, known: String },
	#[error(transparent)]
	Compile(#[from] CompileError),
	#[error("the CUDA driver cannot load kernels/{file} ({message}){hint}")]
	Load { file: &'static str, message: String, hint: &'static str },
	#[error(transparent)]
	Blas(#[from] BlasError),
	#[error("the CUDA driver: {what}: {message}")]
	Driver { what: &'static str, message: String },
}

impl CudaError {
	/// Whether this machine lacks what the backend needs (no GPU or driver, no libnvrtc or
	/// libcublas, a driver older than NVRTC's PTX), as opposed to a defect of the backend
	/// (a kernel NVRTC refuses or the driver will not load, cuBLAS refusing its settings):
	/// tests skip on the first and fail on the second.
	pub fn is_unavailable(&self) -> bool {
		match self {
			CudaError::NoGpu(_) | CudaError::UnsupportedArch { .. } | CudaError::Compile(CompileError::NoCompiler(_)) | CudaError::Blas(BlasError::NoLibrary(_)) => true,
			CudaError::Load { hint, .. } => !hint.is_empty(),
			_ => false,
		}
	}
}

fn driver(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> CudaError {
	move |e| CudaError::Driver { what, message: format!("{e:?}") }
}

/// The CUDA backend on GPU 0: f32 throughout, the frozen weights' products either in f32
/// (`Precision::Fp32`) or with bf16 inputs and f32 accumulation (`Precision::Bf16`, the fast
/// path: weights rounded to bf16 once, activations per product; LoRA, norms, attention and
/// the optimizer stay f32). Each precision is its own class.
pub struct Cuda {
	precision: Precision,
	stream: Arc<CudaStream>,
	blas: Blas,
	functions: HashMap<&'static str, CudaFunction>,
	_modules: Vec<Arc<CudaModule>>,
	_ctx: Arc<CudaContext>,
	class: String,
	/// Dynamic shared memory the attention kernels may use per block: the device's opt-in
	/// maximum, set on each of them.
	shared_limit: u32,
	/// What this machine is, for the log: the GPU's name and memory.
	pub device: String,
}

/// A frozen weight on the device: the plain row-major `[out × in]` matrix, in f32 or
/// rounded to bf16.
enum CudaFrozen {
	F32(CudaSlice<f32>),
	Bf16(CudaSlice<bf16>),
}

/// Attention's saved state: one log-sum-exp per (batch row, head, query row); the
/// backward recomputes the probabilities from it (the output, for the row term, it is
/// handed).
struct CudaAttnSaved {
	lse: CudaSlice<f32>,
}

/// A dropout mask on the GPU keeps only its stream and threshold: the kernels recompute
/// each element's bits from `(key, i)`, as the CPU's mask was drawn.
struct CudaDrop {
	key: u64,
	threshold: u64,
	keep: f32,
	len: usize,
}

fn slice<T: 'static>(b: &Buf<T>) -> &CudaSlice<T> {
	b.data::<CudaSlice<T>>()
}

/// A view of a device buffer as cudarc's view.
fn rd<T: 'static>(v: View<'_, T>) -> CudaView<'_, T> {
	slice(v.buf()).slice(v.range())
}

/// A written view of a device buffer as cudarc's.
fn wr<T: 'static>(v: ViewMut<'_, T>) -> CudaViewMut<'_, T> {
	let (b, range) = v.into_parts();
	b.data_mut::<CudaSlice<T>>().slice_mut(range)
}

/// The launch's plan, or a panic that says which shape it cannot take.
fn plan(p: Result<Option<Plan>, LaunchError>) -> Option<Plan> {
	p.unwrap_or_else(|e| panic!("CUDA backend: {e}"))
}

fn int(what: &str, v: usize) -> i32 {
	i32::try_from(v).unwrap_or_else(|_| panic!("CUDA backend: {what} {v} does not fit a kernel's int"))
}

fn long(v: usize) -> i64 {
	v as i64
}

/// Launches `$name` on `$plan` (skipped when the plan is `None`: nothing to do) with the
/// arguments in the kernel's order. Scalars are passed by reference to locals.
macro_rules! launch {
	($self:expr, $name:literal, $plan:expr, [$($arg:expr),* $(,)?]) => {{
		if let Some(p) = plan($plan) {
			let mut b = $self.stream.launch_builder($self.function($name));
			$( b.arg($arg); )*
			// SAFETY: the arguments are in the kernel's order with its C types (the
			// signatures in kernels/*.cu); every buffer is a live device buffer whose size
			// the caller checked against the shapes the plan was made from.
			unsafe { b.launch(p.config()) }.unwrap_or_else(|e| panic!("CUDA backend: launching {}: {e:?}", $name));
		}
	}};
}

impl Cuda {
	/// The backend on GPU 0 for `precision`'s frozen products: detection, NVRTC compiling
	/// every kernel for the GPU's architecture, the driver loading them, cuBLAS configured.
	/// Fails with a reason where any of those is missing.
	pub fn new(precision: Precision) -> Result<Self, CudaError> {
		let (name, (major, minor)) = match detect() {
			Detection::Gpu { name, compute_capability, .. } => (name, compute_capability),
			Detection::Unavailable(why) => return Err(CudaError::NoGpu(why)),
		};
		detect::cublas_loads().map_err(BlasError::NoLibrary)?;
		// Machine code for this GPU's own architecture (no JIT by the driver).
		let (arch, sm) = (major * 10 + minor, format!("sm_{major}{minor}"));
		let known = crate::kernels::nvrtc_architectures()?;
		if !known.iter().any(|&k| k as u32 == arch) {
			let (a, b) = crate::kernels::nvrtc_version()?;
			let known = known.iter().map(|k| format!("sm_{k}")).collect::<Vec<_>>().join(" ");
			return Err(CudaError::UnsupportedArch { arch, nvrtc: format!("{a}.{b}"), known });
		}
		let ctx = CudaContext::new(0).map_err(driver("open GPU 0"))?;
		// SAFETY: one stream does all the work, so nothing needs cudarc's cross-stream
		// events (two per allocation otherwise).
		unsafe { ctx.disable_event_tracking() };
		let stream = ctx.default_stream();
		let mut functions = HashMap::new();
		let mut modules = Vec::new();
		for (k, cubin) in crate::kernels::compile_all_cubin(&sm)? {
			let m = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin)).map_err(|e| {
				let message = format!("{e:?}");
				let hint = if message.contains("UNSUPPORTED_PTX_VERSION") || message.contains("NO_BINARY_FOR_GPU") {
					": the driver cannot run NVRTC's machine code for this GPU; install a newer driver or use an NVRTC no newer than it"
				} else {
					""
				};
				CudaError::Load { file: k.file, message, hint }
			})?;
			for e in k.entries {
				let f = m.load_function(e).map_err(|err| CudaError::Load { file: k.file, message: format!("{e}: {err:?}"), hint: "" })?;
				functions.insert(*e, f);
			}
			modules.push(m);
		}
		// The attention kernels keep a row's scores in shared memory: opted in to all the
		// device allows (the launch plans check each shape against it).
		let optin = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN).map_err(driver("read the shared memory limit"))?;
		let shared_limit = u32::try_from(optin).unwrap_or(launch::DEFAULT_SHARED_LIMIT).max(launch::DEFAULT_SHARED_LIMIT);
		for name in ["attention_forward", "attention_cached", "attention_backward_dq", "attention_backward_dkdv"] {
			if let Some(f) = functions.get(name) {
				f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_limit as i32)
					.map_err(driver("raise the attention kernels' shared memory"))?;
			}
		}
		let blas = Blas::new(stream.clone())?;
		let sms = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(driver("count SMs"))?;
		let memory = ctx.total_mem().map_err(driver("read the memory size"))?;
		let (nvrtc_major, nvrtc_minor) = crate::kernels::nvrtc_version()?;
		let class = class(precision, major, minor, sms, (nvrtc_major, nvrtc_minor), blas.version()?);
		let device = format!("{name}, {} GiB, {sms} SMs", memory >> 30);
		Ok(Cuda { precision, stream, blas, functions, _modules: modules, _ctx: ctx, class, shared_limit, device })
	}

	fn function(&self, name: &'static str) -> &CudaFunction {
		self.functions.get(name).unwrap_or_else(|| panic!("CUDA backend: no kernel `{name}` loaded"))
	}

	fn alloc_zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, len: usize) -> CudaSlice<T> {
		// The driver refuses an allocation of 0 bytes; an empty buffer holds one element
		// that no view reaches.
		self.stream.alloc_zeros::<T>(len.max(1)).unwrap_or_else(|e| panic!("CUDA backend: allocating {len} elements: {e:?}"))
	}

	/// `host` in a new device buffer.
	fn upload_slice<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, host: &[T]) -> CudaSlice<T> {
		if host.is_empty() {
			return self.alloc_zeros::<T>(0);
		}
		self.stream.clone_htod(host).unwrap_or_else(|e| panic!("CUDA backend: uploading {} elements: {e:?}", host.len()))
	}

	fn upload<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits + 'static>(&self, host: &[T]) -> Buf<T> {
		Buf::new(host.len(), self.upload_slice(host))
	}

	fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(&self, x: CudaView<'_, T>) -> Vec<T> {
		if x.is_empty() {
			return Vec::new();
		}
		self.stream.clone_dtoh(&x).unwrap_or_else(|e| panic!("CUDA backend: reading back {} elements: {e:?}", x.len()))
	}

	/// `x` rounded to bf16, in a new device buffer.
	fn rounded_to_bf16(&self, x: CudaView<'_, f32>) -> CudaSlice<bf16> {
		let n = x.len();
		let mut out = self.alloc_zeros::<bf16>(n);
		let n_l = long(n);
		launch!(self, "to_bf16", launch::elementwise("to_bf16", n as u64), [&mut out, &x, &n_l]);
		out
	}

	/// A frozen product, `Nt` (`y (+)= x Wᵀ`) or `Nn` (`dx (+)= dy W`), in the weight's
	/// precision.
	#[allow(clippy::too_many_arguments)]
	fn frozen_product(&self, product: Product, c: ViewMut<f32>, a: View<f32>, w: &Frozen, m: usize, k: usize, n: usize, accumulate: bool) {
		let len = w.out_dim * w.in_dim;
		let mut c = wr(c);
		let r = match w.get::<CudaFrozen>() {
			CudaFrozen::F32(wt) => self.blas.matmul(product, &mut c, &rd(a), &wt.slice(0..len), m, k, n, accumulate),
			CudaFrozen::Bf16(wt) => {
				assert_eq!(a.len(), m * k, "a frozen product's input: {m} rows of {k}");
				let a = self.rounded_to_bf16(rd(a));
				self.blas.matmul_bf16(product, &mut c, &a.slice(0..m * k), &wt.slice(0..len), m, k, n, accumulate)
			},
		};
		r.unwrap_or_else(|e| panic!("CUDA backend: {e}"));
	}

	#[allow(clippy::too_many_arguments)]
	fn product(&self, product: Product, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool) {
		let (mut c, a, b) = (wr(c), rd(a), rd(b));
		self.blas.matmul(product, &mut c, &a, &b, m, k, n, accumulate).unwrap_or_else(|e| panic!("CUDA backend: {e}"));
	}
}

/// The CUDA class: `cuda/sm_90x132/nvrtc13.5/cublas130100/k1/v0.1.0` (`cuda-bf16/...` for
/// the bf16 products: the precision, the architecture and SM count, NVRTC's version,
/// cuBLAS's, the kernels', the worker's).
pub fn class(precision: Precision, major: u32, minor: u32, sms: i32, nvrtc: (i32, i32), cublas: i32) -> String {
	let backend = match precision {
		Precision::Fp32 => "cuda",
		Precision::Bf16 => "cuda-bf16",
	};
	format!(
		"{backend}/sm_{major}{minor}x{sms}/nvrtc{}.{}/cublas{cublas}/k{KERNELS_VERSION}/v{}",
		nvrtc.0,
		nvrtc.1,
		env!("CARGO_PKG_VERSION")
	)
}

impl Backend for Cuda {
	fn class(&self) -> String {
		self.class.clone()
	}

	fn max_train_row(&self) -> Option<usize> {
		Some(launch::longest_attention_row(self.shared_limit))
	}

	fn upload_f32(&self, host: &[f32]) -> Buf<f32> {
		self.upload(host)
	}

	fn upload_u32(&self, host: &[u32]) -> Buf<u32> {
		self.upload(host)
	}

	fn upload_i32(&self, host: &[i32]) -> Buf<i32> {
		self.upload(host)
	}

	fn zeros_f32(&self, len: usize) -> Buf<f32> {
		Buf::new(len, self.alloc_zeros::<f32>(len))
	}

	fn zeros_f64(&self, len: usize) -> Buf<f64> {
		Buf::new(len, self.alloc_zeros::<f64>(len))
	}

	fn download_f32(&self, x: View<f32>) -> Vec<f32> {
		self.download(rd(x))
	}

	fn download_f64(&self, x: View<f64>) -> Vec<f64> {
		self.download(rd(x))
	}

	fn copy(&self, dst: ViewMut<f32>, src: View<f32>) {
		assert_eq!(dst.len(), src.len(), "copy: lengths");
		if src.is_empty() {
			return;
		}
		let (mut d, s) = (wr(dst), rd(src));
		self.stream.memcpy_dtod(&s, &mut d).unwrap_or_else(|e| panic!("CUDA backend: copy: {e:?}"));
	}

	fn freeze(&self, w: &[f32], out_dim: usize, in_dim: usize) -> Frozen {
		assert_eq!(w.len(), out_dim * in_dim, "weight is not out × in");
		let w32 = self.upload_slice(w);
		let data = match self.precision {
			Precision::Fp32 => CudaFrozen::F32(w32),
			Precision::Bf16 => CudaFrozen::Bf16(self.rounded_to_bf16(w32.slice(0..w.len()))),
		};
		Frozen::new(out_dim, in_dim, self.class.clone(), data)
	}

	fn frozen_forward(&self, y: ViewMut<f32>, x: View<f32>, w: &Frozen, n: usize, accumulate: bool) {
		// y[n×out] = x[n×in] · Wᵀ, W the row-major [out × in] matrix.
		self.frozen_product(Product::Nt, y, x, w, n, w.in_dim, w.out_dim, accumulate)
	}

	fn frozen_backward(&self, dx: ViewMut<f32>, dy: View<f32>, w: &Frozen, n: usize, accumulate: bool) {
		// dx[n×in] = dy[n×out] · W.
		self.frozen_product(Product::Nn, dx, dy, w, n, w.out_dim, w.in_dim, accumulate)
	}

	fn matmul_nt(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool) {
		self.product(Product::Nt, c, a, b, m, k, n, accumulate)
	}

	fn matmul_nn(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool) {
		self.product(Product::Nn, c, a, b, m, k, n, accumulate)
	}

	fn matmul_tn(&self, c: ViewMut<f32>, a: View<f32>, b: View<f32>, m: usize, k: usize, n: usize, accumulate: bool) {
		self.product(Product::Tn, c, a, b, m, k, n, accumulate)
	}

	fn rmsnorm_forward(&self, out: ViewMut<f32>, rstd: ViewMut<f32>, x: View<f32>, w: View<f32>, dim: usize, eps: f32) {
		let rows = x.len() / dim.max(1);
		assert!(x.len() == rows * dim && out.len() == x.len() && rstd.len() == rows && w.len() == dim, "rmsnorm shapes");
		let (mut out, mut rstd, x, w, dim_i) = (wr(out), wr(rstd), rd(x), rd(w), int("dim", dim));
		launch!(self, "rmsnorm_forward", launch::per_row("rmsnorm_forward", rows as u64, dim as u64), [&mut out, &mut rstd, &x, &w, &dim_i, &eps]);
	}

	fn rmsnorm_backward(&self, dx: ViewMut<f32>, dout: View<f32>, x: View<f32>, w: View<f32>, rstd: View<f32>, dim: usize) {
		let rows = x.len() / dim.max(1);
		assert!(x.len() == rows * dim && dx.len() == x.len() && dout.len() == x.len() && rstd.len() == rows, "rmsnorm shapes");
		let (mut dx, dout, x, w, rstd, dim_i) = (wr(dx), rd(dout), rd(x), rd(w), rd(rstd), int("dim", dim));
		launch!(self, "rmsnorm_backward", launch::per_row("rmsnorm_backward", rows as u64, dim as u64), [&mut dx, &dout, &x, &w, &rstd, &dim_i]);
	}

	fn rope(&self, x: ViewMut<f32>, width: usize, cos: View<f32>, sin: View<f32>, positions: View<u32>, head_dim: usize, inverse: bool) {
		let rows = x.len() / width.max(1);
		assert!(x.len() == rows * width && positions.len() == rows, "rope shapes");
		let p = launch::rope(rows as u64, width as u64, head_dim as u64);
		let (mut x, cos, sin, pos) = (wr(x), rd(cos), rd(sin), rd(positions));
		let (rows_i, width_i, d_i, inv_i) = (int("rows", rows), int("width", width), int("head_dim", head_dim), i32::from(inverse));
		launch!(self, "rope", p, [&mut x, &rows_i, &width_i, &cos, &sin, &pos, &d_i, &inv_i]);
	}

	fn attention_forward(&self, out: ViewMut<f32>, q: View<f32>, k: View<f32>, v: View<f32>, positions: View<u32>, s: AttnShape) -> AttnSaved {
		let tokens = s.batch * s.seq;
		let (qw, kvw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
		assert!(q.len() == tokens * qw && out.len() == q.len() && k.len() == tokens * kvw && v.len() == k.len() && positions.len() == tokens, "attention shapes");
		let plan = launch::attention_forward(attention_shape(s), self.shared_limit);
		let mut lse = self.alloc_zeros::<f32>(s.batch * s.heads * s.seq);
		let (mut o, q, k, v, pos) = (wr(out), rd(q), rd(k), rd(v), rd(positions));
		let (seq_i, h_i, kv_i, d_i) = (int("seq", s.seq), int("heads", s.heads), int("kv_heads", s.kv_heads), int("head_dim", s.head_dim));
		let scale = 1.0 / (s.head_dim as f32).sqrt();
		launch!(self, "attention_forward", plan, [&mut o, &mut lse, &q, &k, &v, &pos, &seq_i, &h_i, &kv_i, &d_i, &scale]);
		AttnSaved::new(CudaAttnSaved { lse })
	}

	fn attention_backward(
		&self,
		dq: ViewMut<f32>,
		dk: ViewMut<f32>,
		dv: ViewMut<f32>,
		dout: View<f32>,
		out: View<f32>,
		saved: &AttnSaved,
		q: View<f32>,
		k: View<f32>,
		v: View<f32>,
		positions: View<u32>,
		s: AttnShape,
	) {
		let tokens = s.batch * s.seq;
		let (qw, kvw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
		assert!(
			dq.len() == tokens * qw && dout.len() == dq.len() && out.len() == dq.len() && q.len() == dq.len() && dk.len() == tokens * kvw && dv.len() == dk.len() && k.len() == dk.len() && v.len() == dk.len() && positions.len() == tokens,
			"attention shapes"
		);
		let saved = saved.get::<CudaAttnSaved>();
		let plans = launch::attention(attention_shape(s), self.shared_limit).unwrap_or_else(|e| panic!("CUDA backend: {e}"));
		let Some(plans) = plans else { return };
		let mut delta = self.alloc_zeros::<f32>(s.batch * s.heads * s.seq);
		let (mut dq, mut dk, mut dv, dout, q, k, v, pos) = (wr(dq), wr(dk), wr(dv), rd(dout), rd(q), rd(k), rd(v), rd(positions));
		let out = rd(out);
		let (seq_i, h_i, kv_i, d_i) = (int("seq", s.seq), int("heads", s.heads), int("kv_heads", s.kv_heads), int("head_dim", s.head_dim));
		let scale = 1.0 / (s.head_dim as f32).sqrt();
		launch!(self, "attention_delta", Ok(Some(plans.delta)), [&mut delta, &dout, &out, &seq_i, &h_i, &d_i]);
		launch!(self, "attention_backward_dq", Ok(Some(plans.backward_dq)), [&mut dq, &dout, &saved.lse, &delta, &q, &k, &v, &pos, &seq_i, &h_i, &kv_i, &d_i, &scale]);
		launch!(
			self,
			"attention_backward_dkdv",
			Ok(Some(plans.backward_dkdv)),
			[&mut dk, &mut dv, &dout, &saved.lse, &delta, &q, &k, &v, &pos, &seq_i, &h_i, &kv_i, &d_i, &scale]
		);
	}

	fn attention_cached(&self, out: ViewMut<f32>, q: View<f32>, k_cache: View<f32>, v_cache: View<f32>, past: usize, n: usize, s: AttnShape) {
		let (qw, kvw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
		assert!(q.len() == n * qw && out.len() == q.len(), "cached attention: queries and output");
		assert!(k_cache.len() >= (past + n) * kvw && v_cache.len() >= (past + n) * kvw, "cached attention: the cache holds fewer than {} positions", past + n);
		let p = launch::attention_cached(past as u64, n as u64, s.heads as u64, s.kv_heads as u64, self.shared_limit);
		let (mut o, q, kc, vc) = (wr(out), rd(q), rd(k_cache), rd(v_cache));
		let (past_i, h_i, kv_i, d_i) = (int("past", past), int("heads", s.heads), int("kv_heads", s.kv_heads), int("head_dim", s.head_dim));
		let scale = 1.0 / (s.head_dim as f32).sqrt();
		launch!(self, "attention_cached", p, [&mut o, &q, &kc, &vc, &past_i, &h_i, &kv_i, &d_i, &scale]);
	}

	fn swiglu_forward(&self, out: ViewMut<f32>, gate: View<f32>, up: View<f32>) {
		let n = out.len();
		assert!(gate.len() == n && up.len() == n, "swiglu shapes");
		let (mut o, g, u, n_l) = (wr(out), rd(gate), rd(up), long(n));
		launch!(self, "swiglu_forward", launch::elementwise("swiglu_forward", n as u64), [&mut o, &g, &u, &n_l]);
	}

	fn swiglu_backward(&self, dgate: ViewMut<f32>, dup: ViewMut<f32>, dout: View<f32>, gate: View<f32>, up: View<f32>) {
		let n = dout.len();
		assert!(dgate.len() == n && dup.len() == n && gate.len() == n && up.len() == n, "swiglu shapes");
		let (mut dg, mut du, d, g, u, n_l) = (wr(dgate), wr(dup), rd(dout), rd(gate), rd(up), long(n));
		launch!(self, "swiglu_backward", launch::elementwise("swiglu_backward", n as u64), [&mut dg, &mut du, &d, &g, &u, &n_l]);
	}

	fn gather_rows(&self, out: ViewMut<f32>, x: View<f32>, rows: View<u32>, dim: usize) {
		assert_eq!(out.len(), rows.len() * dim, "gather buffers");
		let r = rows.len();
		let (mut o, x, idx, r_l, d_i) = (wr(out), rd(x), rd(rows), long(r), int("dim", dim));
		launch!(self, "gather_rows", launch::elementwise("gather_rows", (r * dim) as u64), [&mut o, &x, &idx, &r_l, &d_i]);
	}

	fn scatter_rows(&self, dst: ViewMut<f32>, src: View<f32>, rows: View<u32>, dim: usize) {
		assert_eq!(src.len(), rows.len() * dim, "scatter buffers");
		let r = rows.len();
		let (mut d, s, idx, r_l, d_i) = (wr(dst), rd(src), rd(rows), long(r), int("dim", dim));
		launch!(self, "scatter_rows", launch::elementwise("scatter_rows", (r * dim) as u64), [&mut d, &s, &idx, &r_l, &d_i]);
	}

	fn add_assign(&self, y: ViewMut<f32>, x: View<f32>) {
		assert_eq!(y.len(), x.len(), "add buffers");
		let n = y.len();
		let (mut y, x, n_l) = (wr(y), rd(x), long(n));
		launch!(self, "add_assign", launch::elementwise("add_assign", n as u64), [&mut y, &x, &n_l]);
	}

	fn add_bias(&self, y: ViewMut<f32>, bias: View<f32>) {
		let dim = bias.len();
		assert!(dim > 0 && y.len() % dim == 0, "a bias per output");
		let rows = y.len() / dim;
		let (mut y, b, r_l, d_i) = (wr(y), rd(bias), long(rows), int("dim", dim));
		launch!(self, "add_bias", launch::elementwise("add_bias", (rows * dim) as u64), [&mut y, &b, &r_l, &d_i]);
	}

	fn scale(&self, x: ViewMut<f32>, a: f32) {
		let n = x.len();
		let (mut x, n_l) = (wr(x), long(n));
		launch!(self, "scale", launch::elementwise("scale", n as u64), [&mut x, &a, &n_l]);
	}

	fn add_transposed(&self, dst: ViewMut<f32>, src: View<f32>, rows: usize, cols: usize) {
		assert!(src.len() == rows * cols && dst.len() == rows * cols, "transposed add buffers");
		let (mut d, s, r_l, c_l) = (wr(dst), rd(src), long(rows), long(cols));
		launch!(self, "add_transposed", launch::add_transposed(rows as u64, cols as u64), [&mut d, &s, &r_l, &c_l]);
	}

	fn dropout_mask(&self, p: f32, key: u64, len: usize) -> DropSaved {
		// As the CPU's mask: uniform_at is u·2⁻²⁴ for a 24-bit u, so `< p` is `u < ⌈p·2²⁴⌉`.
		let threshold = (p as f64 * (1u64 << 24) as f64).ceil() as u64;
		DropSaved::new(CudaDrop { key, threshold, keep: 1.0 / (1.0 - p), len })
	}

	fn dropout_apply(&self, out: ViewMut<f32>, x: View<f32>, mask: &DropSaved) {
		let m = mask.get::<CudaDrop>();
		assert!(out.len() == m.len && x.len() == m.len, "a dropout mask of {} elements applied to {}", m.len, x.len());
		let (mut o, x, n_l) = (wr(out), rd(x), long(m.len));
		launch!(self, "dropout_forward", launch::elementwise("dropout_forward", m.len as u64), [&mut o, &x, &n_l, &m.key, &m.threshold, &m.keep]);
	}

	fn dropout_add_kept(&self, dx: ViewMut<f32>, t: View<f32>, mask: &DropSaved) {
		let m = mask.get::<CudaDrop>();
		assert!(dx.len() == m.len && t.len() == m.len, "a dropout mask of {} elements applied to {}", m.len, t.len());
		let (mut d, t, n_l) = (wr(dx), rd(t), long(m.len));
		launch!(self, "dropout_backward", launch::elementwise("dropout_backward", m.len as u64), [&mut d, &t, &n_l, &m.key, &m.threshold, &m.keep]);
	}

	fn sum_squares(&self, x: View<f32>) -> f64 {
		let n = x.len();
		let Some((first, second, count)) = launch::sum_of_squares(n as u64).unwrap_or_else(|e| panic!("CUDA backend: {e}")) else {
			return 0.0;
		};
		let mut partials = self.alloc_zeros::<f64>(count as usize);
		let mut out = self.alloc_zeros::<f64>(1);
		let (x, n_l, per_block, count_i) = (rd(x), long(n), launch::SUMSQ_PER_BLOCK as i64, count as i32);
		launch!(self, "sumsq_partials", Ok(Some(first)), [&mut partials, &x, &n_l, &per_block]);
		launch!(self, "sum_partials", Ok(Some(second)), [&mut out, &partials, &count_i]);
		self.download(out.slice(0..1))[0]
	}

	fn adamw(&self, params: ViewMut<f32>, grads: View<f32>, m: ViewMut<f32>, v: ViewMut<f32>, step: AdamWStep) {
		let n = params.len();
		assert!(grads.len() == n && m.len() == n && v.len() == n, "AdamW buffers");
		let (mut p, g, mut m, mut v, n_l) = (wr(params), rd(grads), wr(m), wr(v), long(n));
		let AdamWStep { beta1, beta2, eps, step_size, bc2_sqrt, decay } = step;
		launch!(self, "adamw", launch::elementwise("adamw", n as u64), [&mut p, &g, &mut m, &mut v, &n_l, &beta1, &beta2, &eps, &step_size, &bc2_sqrt, &decay]);
	}

	fn cross_entropy(&self, logits: ViewMut<f32>, targets: View<i32>, vocab: usize, scale: f32, losses: ViewMut<f64>) {
		let rows = targets.len();
		assert!(logits.len() == rows * vocab && losses.len() == rows, "cross-entropy shapes");
		let (mut x, t, mut l, v_i) = (wr(logits), rd(targets), wr(losses), int("vocab", vocab));
		launch!(self, "cross_entropy", launch::per_row("cross_entropy", rows as u64, vocab as u64), [&mut x, &t, &mut l, &v_i, &scale]);
	}
}

fn attention_shape(s: AttnShape) -> launch::Attention {
	launch::Attention {
		batch: s.batch as u64,
		seq: s.seq as u64,
		heads: s.heads as u64,
		kv_heads: s.kv_heads as u64,
		head_dim: s.head_dim as u64,
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn the_class_names_what_cublas_and_nvrtc_make_the_bits_depend_on() {
		let f32 = Precision::Fp32;
		let c = class(f32, 9, 0, 132, (13, 5), 130_100);
		assert_eq!(c, format!("cuda/sm_90x132/nvrtc13.5/cublas130100/k{KERNELS_VERSION}/v{}", env!("CARGO_PKG_VERSION")));
		assert_ne!(c, class(f32, 9, 0, 114, (13, 5), 130_100), "an H100 PCIe (114 SMs) is not an H100 SXM (132)");
		assert_ne!(c, class(f32, 9, 0, 132, (13, 5), 130_200), "another cuBLAS");
		assert_ne!(c, class(f32, 9, 0, 132, (13, 4), 130_100), "another NVRTC");
		assert!(class(Precision::Bf16, 9, 0, 132, (13, 5), 130_100).starts_with("cuda-bf16/sm_90x132/"), "bf16 products: its own class");
	}

	#[test]
	fn without_a_gpu_the_backend_says_why_and_does_not_panic() {
		match Cuda::new(Precision::Fp32) {
			Ok(c) => eprintln!("a GPU here: {} ({})", c.device, c.class()),
			Err(e) => {
				let msg = e.to_string();
				eprintln!("no CUDA backend here: {msg}");
				assert!(e.is_unavailable(), "a defect, not a missing GPU: {msg}");
				assert!(!msg.is_empty() && !msg.contains('\n'), "one line: {msg}");
			},
		}
	}
}
