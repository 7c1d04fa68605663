//! The matrix products on cuBLAS, with what a reproducibility class needs held fixed: one
//! handle on one stream, the only one active; a workspace of fixed size set once (so cuBLAS
//! never chooses an algorithm by what memory it happens to get); pedantic math and
//! `COMPUTE_32F_PEDANTIC` (no TF32, no reduced-precision reductions); atomics disallowed
//! (cuBLAS's default, set so that no library default can change it); the default
//! algorithm. cuBLAS documents bit-identical results only for the same cuBLAS version, the
//! same GPU architecture and the same number of SMs, so the class must name all three (an
//! H100 PCIe and an H100 SXM, or a MIG slice, are different classes).
//!
//! The engine's matrices are row-major; cuBLAS's are column-major. A row-major `X[r × c]`
//! is the column-major `Xᵀ` with leading dimension `c`, so each row-major product is
//! computed as its transpose: `C = A·Bᵀ` as `Cᵀ = B·Aᵀ`, and so on ([`Product::plan`]).

use std::ffi::{c_int, c_void};
use std::sync::Arc;

use cudarc::cublas::sys::{
	cublasAtomicsMode_t, cublasComputeType_t, cublasGemmAlgo_t, cublasMath_t, cublasOperation_t, cudaDataType,
};
use cudarc::cublas::{result, sys, CudaBlas};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

/// The workspace cuBLAS gets, once: 32 MiB, what NVIDIA recommends for Hopper.
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// The engine's three row-major products (its `Backend::matmul_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
	/// `c[m×n] (+)= a[m×k] · b[n×k]ᵀ`: a linear layer.
	Nt,
	/// `c[m×n] (+)= a[m×k] · b[k×n]`: an input gradient.
	Nn,
	/// `c[m×n] (+)= a[k×m]ᵀ · b[k×n]`: a weight gradient.
	Tn,
}

/// A column-major `gemm` call: `C'[m'×n'] = op(A')·op(B')` with `A'` the engine's `b` and
/// `B'` its `a` ([`Gemm::operands`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemm {
	pub trans_a: bool,
	pub trans_b: bool,
	pub m: usize,
	pub n: usize,
	pub k: usize,
	/// Leading dimensions of `A'` (the engine's `b`), `B'` (its `a`) and `C'`.
	pub lda: usize,
	pub ldb: usize,
	pub ldc: usize,
}

impl Gemm {
	/// `(A', B')` from the engine's `(a, b)`: every product is computed as its transpose,
	/// so the operands swap.
	pub fn operands<T>(a: T, b: T) -> (T, T) {
		(b, a)
	}
}

impl Product {
	/// The column-major call computing the row-major product of these shapes.
	pub fn plan(self, m: usize, k: usize, n: usize) -> Gemm {
		match self {
			// Cᵀ[n×m] = B[n×k]·Aᵀ: b is stored as Bᵀ (k×n, ld k), a as Aᵀ (k×m, ld k).
			Product::Nt => Gemm { trans_a: true, trans_b: false, m: n, n: m, k, lda: k, ldb: k, ldc: n },
			// Cᵀ = Bᵀ·Aᵀ: b as Bᵀ (n×k, ld n), a as Aᵀ (k×m, ld k).
			Product::Nn => Gemm { trans_a: false, trans_b: false, m: n, n: m, k, lda: n, ldb: k, ldc: n },
			// Cᵀ = Bᵀ·A: b as Bᵀ (n×k, ld n), a[k×m] as Aᵀ (m×k, ld m), transposed back.
			Product::Tn => Gemm { trans_a: false, trans_b: true, m: n, n: m, k, lda: n, ldb: m, ldc: n },
		}
	}
}

/// cuBLAS refused a setting or a product.
#[derive(Debug, thiserror::Error)]
pub enum BlasError {
	#[error("cuBLAS cannot be used: {0}")]
	NoLibrary(String),
	#[error("cuBLAS: {what}: {err}")]
	Cublas { what: &'static str, err: result::CublasError },
	#[error("cuBLAS workspace: {0:?}")]
	Alloc(cudarc::driver::DriverError),
	#[error("{what}: a dimension of {value} does not fit cuBLAS's int")]
	TooLarge { what: &'static str, value: usize },
	#[error("{what}: buffer of {got} elements, the product needs {want}")]
	Size { what: &'static str, got: usize, want: usize },
}

fn int(what: &'static str, value: usize) -> Result<c_int, BlasError> {
	c_int::try_from(value).map_err(|_| BlasError::TooLarge { what, value })
}

/// A cuBLAS handle configured for reproducible products.
pub struct Blas {
	blas: CudaBlas,
	stream: Arc<CudaStream>,
	_workspace: CudaSlice<u8>,
}

impl Blas {
	pub fn new(stream: Arc<CudaStream>) -> Result<Self, BlasError> {
		crate::detect::cublas_loads().map_err(BlasError::NoLibrary)?;
		let blas = CudaBlas::new(stream.clone()).map_err(|err| BlasError::Cublas { what: "create a handle", err })?;
		let mut workspace = stream.alloc_zeros::<u8>(WORKSPACE_BYTES).map_err(BlasError::Alloc)?;
		let handle = *blas.handle();
		{
			let (ptr, _written) = workspace.device_ptr_mut(&stream);
			// SAFETY: the workspace lives as long as the handle (both in `Blas`); the calls
			// only set the handle's state.
			unsafe {
				sys::cublasSetWorkspace_v2(handle, ptr as *mut c_void, WORKSPACE_BYTES)
					.result()
					.map_err(|err| BlasError::Cublas { what: "set the workspace", err })?;
				sys::cublasSetMathMode(handle, cublasMath_t::CUBLAS_PEDANTIC_MATH)
					.result()
					.map_err(|err| BlasError::Cublas { what: "set pedantic math", err })?;
				sys::cublasSetAtomicsMode(handle, cublasAtomicsMode_t::CUBLAS_ATOMICS_NOT_ALLOWED)
					.result()
					.map_err(|err| BlasError::Cublas { what: "disallow atomics", err })?;
			}
		}
		Ok(Blas { blas, stream, _workspace: workspace })
	}

	/// cuBLAS's version (`major·10000 + minor·100 + patch`), part of the class.
	pub fn version(&self) -> Result<i32, BlasError> {
		let mut v: c_int = 0;
		// SAFETY: the handle is live; cuBLAS writes one int.
		unsafe { sys::cublasGetVersion_v2(*self.blas.handle(), &mut v) }
			.result()
			.map_err(|err| BlasError::Cublas { what: "read its version", err })?;
		Ok(v)
	}

	/// `c (+)= product(a, b)` in f32 (row-major, as the engine's `Backend::matmul_*`), on
	/// slices or views of them.
	#[allow(clippy::too_many_arguments)]
	pub fn matmul<C: DevicePtrMut<f32>, AB: DevicePtr<f32>>(
		&self,
		product: Product,
		c: &mut C,
		a: &AB,
		b: &AB,
		m: usize,
		k: usize,
		n: usize,
		accumulate: bool,
	) -> Result<(), BlasError> {
		self.gemm(product, c, a, b, (m, k, n), accumulate, cudaDataType::CUDA_R_32F)
	}

	/// `c (+)= product(a, b)` with bf16 inputs and f32 accumulation and output, for the
	/// frozen weights' products. (Whether cuBLAS runs it on tensor cores under pedantic
	/// math is to be seen in a profile on a GPU.)
	#[allow(clippy::too_many_arguments)]
	pub fn matmul_bf16<C: DevicePtrMut<f32>, AB: DevicePtr<half::bf16>>(
		&self,
		product: Product,
		c: &mut C,
		a: &AB,
		b: &AB,
		m: usize,
		k: usize,
		n: usize,
		accumulate: bool,
	) -> Result<(), BlasError> {
		self.gemm(product, c, a, b, (m, k, n), accumulate, cudaDataType::CUDA_R_16BF)
	}

	#[allow(clippy::too_many_arguments)]
	fn gemm<T, C: DevicePtrMut<f32>, AB: DevicePtr<T>>(
		&self,
		product: Product,
		c: &mut C,
		a: &AB,
		b: &AB,
		(m, k, n): (usize, usize, usize),
		accumulate: bool,
		input: cudaDataType,
	) -> Result<(), BlasError> {
		for (what, got, want) in [("c", c.len(), m * n), ("a", a.len(), m * k), ("b", b.len(), k * n)] {
			if got != want {
				return Err(BlasError::Size { what, got, want });
			}
		}
		if m == 0 || n == 0 {
			return Ok(());
		}
		if k == 0 {
			// An empty sum: cuBLAS refuses the leading dimensions of 0 this would need.
			if !accumulate {
				self.stream.memset_zeros(c).map_err(BlasError::Alloc)?;
			}
			return Ok(());
		}
		let g = product.plan(m, k, n);
		let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
		let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
		let (gm, gn, gk) = (int("m", g.m)?, int("n", g.n)?, int("k", g.k)?);
		let (lda, ldb, ldc) = (int("lda", g.lda)?, int("ldb", g.ldb)?, int("ldc", g.ldc)?);
		let (a_prime, b_prime) = Gemm::operands(a, b);
		let (pa, _ra) = a_prime.device_ptr(&self.stream);
		let (pb, _rb) = b_prime.device_ptr(&self.stream);
		let (pc, _wc) = c.device_ptr_mut(&self.stream);
		// SAFETY: the pointers are live device buffers of the sizes checked above, on the
		// handle's stream; alpha and beta are host scalars (the default pointer mode).
		unsafe {
			result::gemm_ex(
				*self.blas.handle(),
				op(g.trans_a),
				op(g.trans_b),
				gm,
				gn,
				gk,
				&alpha as *const f32 as *const c_void,
				pa as *const c_void,
				input,
				lda,
				pb as *const c_void,
				input,
				ldb,
				&beta as *const f32 as *const c_void,
				pc as *mut c_void,
				cudaDataType::CUDA_R_32F,
				ldc,
				cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC,
				cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
			)
		}
		.map_err(|err| BlasError::Cublas { what: "gemm", err })
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	/// The column-major call run by hand on the host (the reference BLAS semantics:
	/// `C'[i + j·ldc] = Σ_p op(A')[i,p]·op(B')[p,j]`), against the row-major product.
	fn run(g: Gemm, a_prime: &[f32], b_prime: &[f32]) -> Vec<f32> {
		// cuBLAS's rule for the leading dimensions.
		let rows = |t: bool, r: usize, c: usize| if t { c } else { r };
		assert!(g.lda >= rows(g.trans_a, g.m, g.k).max(1) && g.ldb >= rows(g.trans_b, g.k, g.n).max(1) && g.ldc >= g.m.max(1));
		let at = |i: usize, p: usize| if g.trans_a { a_prime[p + i * g.lda] } else { a_prime[i + p * g.lda] };
		let bt = |p: usize, j: usize| if g.trans_b { b_prime[j + p * g.ldb] } else { b_prime[p + j * g.ldb] };
		let mut c = vec![0f32; g.ldc * g.n];
		for i in 0..g.m {
			for j in 0..g.n {
				c[i + j * g.ldc] = (0..g.k).map(|p| at(i, p) * bt(p, j)).sum();
			}
		}
		c
	}

	#[test]
	fn each_row_major_product_maps_to_the_column_major_call_that_computes_it() {
		let (m, k, n) = (3usize, 4usize, 5usize);
		let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
		let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.37).sin()).collect();
		// Row-major by definition.
		let nt = |i: usize, j: usize| (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum::<f32>(); // b is [n×k]
		let nn = |i: usize, j: usize| (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum::<f32>(); // b is [k×n]
		let tn = |i: usize, j: usize| (0..k).map(|p| a[p * m + i] * b[p * n + j]).sum::<f32>(); // a is [k×m]
		for (product, want) in [(Product::Nt, &nt as &dyn Fn(usize, usize) -> f32), (Product::Nn, &nn), (Product::Tn, &tn)] {
			let g = product.plan(m, k, n);
			// C' is Cᵀ column-major: element (j, i) at j + i·ldc, i.e. C row-major.
			let (a_prime, b_prime) = Gemm::operands(&a[..], &b[..]);
			let c = run(g, a_prime, b_prime);
			for i in 0..m {
				for j in 0..n {
					assert!((c[i * n + j] - want(i, j)).abs() < 1e-5, "{product:?} ({i}, {j}): {} vs {}", c[i * n + j], want(i, j));
				}
			}
		}
	}
}
