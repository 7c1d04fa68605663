//! The CUDA side of Molting's worker: the engine's `Backend` on an NVIDIA GPU
//! ([`Cuda`], [`backend`]), the kernels of a training step and of generation as CUDA C
//! source (embedded, compiled at run time by NVRTC), the cuBLAS products, the plan by which
//! each kernel is launched, and whether this machine can run them at all.
//!
//! Nothing of CUDA is linked: `cudarc` opens `libnvrtc`, `libcuda` and `libcublas` when
//! they are first used (its `dynamic-loading`), so this crate builds and the worker runs,
//! on the CPU, on machines without a GPU, a driver or a toolkit. [`detect()`] says which
//! of those this machine has without ever panicking.
//!
//! Kept apart from the engine (`molting-engine`: no CUDA at all) so that a change here
//! rebuilds neither the engine nor the chain client.
//!
//! What the CUDA reproducibility class ([`backend::class`]) depends on: the GPU's
//! architecture (`sm_XY`), NVRTC's version (it compiles these sources; `--fmad=false`, so
//! no multiply-add is contracted), cuBLAS's version and the GPU's number of SMs (cuBLAS's
//! own condition for the same bits; its products run with a fixed workspace and pedantic
//! math on one stream: [`blas`]), the precision of the frozen products, and
//! [`KERNELS_VERSION`]. Every kernel here reduces in a fixed order that depends only on its
//! launch plan ([`launch`]), with no atomics.

pub mod backend;
pub mod blas;
pub mod detect;
pub mod kernels;
pub mod launch;

pub use backend::{Cuda, CudaError};
pub use detect::{detect, Detection};
pub use kernels::{compile, compile_all, CompileError, KernelSource, KERNELS};

/// The version of the CUDA kernels' arithmetic: bumped whenever any kernel's results may
/// change in any bit.
pub const KERNELS_VERSION: u32 = 1;
