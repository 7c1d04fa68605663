//! The kernels' CUDA C source, embedded, and their compilation by NVRTC.
//!
//! Each `.cu` file in `kernels/` includes `common.cuh` (the fixed-order block reductions
//! and the engine's counter-based random stream); the header is spliced in here, so
//! NVRTC needs no include path and the compiled source is exactly what is embedded.

use cudarc::nvrtc::Ptx;

/// One kernel file: its name, source, and the `extern "C"` entry points it defines.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
	pub file: &'static str,
	pub source: &'static str,
	pub entries: &'static [&'static str],
}

const COMMON: &str = include_str!("../kernels/common.cuh");

/// Every kernel of the CUDA backend.
pub const KERNELS: &[KernelSource] = &[
	KernelSource {
		file: "rmsnorm.cu",
		source: include_str!("../kernels/rmsnorm.cu"),
		entries: &["rmsnorm_forward", "rmsnorm_backward"],
	},
	KernelSource { file: "rope.cu", source: include_str!("../kernels/rope.cu"), entries: &["rope"] },
	KernelSource {
		file: "attention.cu",
		source: include_str!("../kernels/attention.cu"),
		entries: &[
			"attention_forward",
			"attention_cached",
			"attention_delta",
			"attention_backward_dq",
			"attention_backward_dkdv",
		],
	},
	KernelSource {
		file: "swiglu.cu",
		source: include_str!("../kernels/swiglu.cu"),
		entries: &["swiglu_forward", "swiglu_backward"],
	},
	KernelSource { file: "xent.cu", source: include_str!("../kernels/xent.cu"), entries: &["cross_entropy"] },
	KernelSource {
		file: "dropout.cu",
		source: include_str!("../kernels/dropout.cu"),
		entries: &["dropout_forward", "dropout_backward"],
	},
	KernelSource {
		file: "optim.cu",
		source: include_str!("../kernels/optim.cu"),
		entries: &["adamw", "sumsq_partials", "sum_partials"],
	},
	KernelSource {
		file: "elementwise.cu",
		source: include_str!("../kernels/elementwise.cu"),
		entries: &["add_assign", "axpy", "scale", "add_bias", "add_transposed", "gather_rows", "scatter_rows", "to_bf16"],
	},
];

/// A kernel NVRTC would not compile, or a compiler that is not there.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
	#[error("libnvrtc cannot be loaded ({0}); `scripts/fetch-nvrtc.sh` fetches it into $MOLTING_NVRTC_DIR")]
	NoCompiler(String),
	#[error("kernels/{file} does not compile for {arch} with NVRTC:\n{log}")]
	Refused { file: String, arch: String, log: String },
	#[error("kernels/{file}: NVRTC failed before it compiled anything: {message}")]
	Nvrtc { file: String, message: String },
	#[error("kernels/{file} compiled for {arch}, but its code lacks the entry point `{entry}`")]
	MissingEntry { file: String, arch: String, entry: String },
}

/// The source NVRTC compiles for `kernel`: the shared header spliced in where it is
/// included.
pub fn full_source(kernel: &KernelSource) -> String {
	let header: String = COMMON.lines().filter(|l| l.trim() != "#pragma once").collect::<Vec<_>>().join("\n");
	kernel.source.replace("#include \"common.cuh\"", &header)
}

/// The flags every kernel is compiled with for `arch`: IEEE division and square roots,
/// denormals kept, and no fused multiply-add (see the crate doc: the bits then do not
/// depend on the PTX assembler's contractions).
pub fn flags(arch: &str) -> Vec<String> {
	["--ftz=false", "--prec-div=true", "--prec-sqrt=true", "--fmad=false", "--std=c++17"]
		.iter()
		.map(|s| s.to_string())
		.chain([format!("--gpu-architecture={arch}")])
		.collect()
}

/// What [`nvrtc_compile`] reads back from the compiled program.
enum Output {
	Ptx,
	Cubin,
}

/// Compiles CUDA C `source` (named `file` in errors) for `arch` with [`flags`], and reads
/// back its PTX (a virtual architecture, `compute_90`) or its machine code (a real one,
/// `sm_90`).
fn nvrtc_compile(file: &str, source: &str, arch: &str, output: Output) -> Result<Vec<u8>, CompileError> {
	use cudarc::nvrtc::{result, sys};
	crate::detect::nvrtc_loads().map_err(CompileError::NoCompiler)?;
	let nvrtc = |message: String| CompileError::Nvrtc { file: file.into(), message };
	let text = |chars: Vec<std::ffi::c_char>| {
		let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
		String::from_utf8_lossy(&bytes).trim_end().to_string()
	};
	let src = std::ffi::CString::new(source).map_err(|e| nvrtc(format!("source: {e}")))?;
	let name = std::ffi::CString::new(file).map_err(|e| nvrtc(format!("name: {e}")))?;
	let prog = result::create_program(&src, Some(&name)).map_err(|e| nvrtc(format!("create: {e:?}")))?;
	// SAFETY: `prog` is a live program until destroyed below; NVRTC writes at most the
	// sizes it reported into buffers of those sizes.
	unsafe {
		let out = match result::compile_program(prog, &flags(arch)) {
			Err(_) => {
				let log = result::get_program_log(prog).map(text).unwrap_or_default();
				Err(CompileError::Refused { file: file.into(), arch: arch.into(), log })
			},
			Ok(()) => match output {
				Output::Ptx => result::get_ptx(prog).map(|p| text(p).into_bytes()).map_err(|e| nvrtc(format!("PTX: {e:?}"))),
				Output::Cubin => {
					let mut size = 0usize;
					sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| nvrtc(format!("CUBIN size: {e:?}"))).and_then(|()| {
						let mut cubin = vec![0u8; size];
						sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()).result().map(|()| cubin).map_err(|e| nvrtc(format!("CUBIN: {e:?}")))
					})
				},
			},
		};
		let _ = result::destroy_program(prog);
		out
	}
}

/// Compiles `kernel` for the virtual architecture `arch` (`compute_80`, `compute_90`)
/// and checks that every entry point it declares is in the PTX.
pub fn compile(kernel: &KernelSource, arch: &str) -> Result<Ptx, CompileError> {
	let ptx = compile_source(kernel.file, &full_source(kernel), arch)?;
	let text = ptx.to_src();
	for entry in kernel.entries {
		if !text.contains(&format!(".entry {entry}(")) {
			return Err(CompileError::MissingEntry { file: kernel.file.into(), arch: arch.into(), entry: (*entry).into() });
		}
	}
	Ok(ptx)
}

/// Compiles CUDA C `source` (named `file` in errors) to PTX with the kernels' flags.
pub fn compile_source(file: &str, source: &str, arch: &str) -> Result<Ptx, CompileError> {
	let ptx = nvrtc_compile(file, source, arch, Output::Ptx)?;
	Ok(Ptx::from_src(String::from_utf8_lossy(&ptx).into_owned()))
}

/// Compiles `kernel` to machine code (a CUBIN) for the real architecture `sm` (`sm_90`),
/// with the same flags as [`compile`], and checks its entry points. What the CUDA
/// backend loads: machine code needs no JIT by the driver, so a driver older than NVRTC
/// loads it (PTX of a newer CUDA it refuses), and the machine code is NVRTC's alone, so the
/// class need not name the driver.
pub fn compile_cubin(kernel: &KernelSource, sm: &str) -> Result<Vec<u8>, CompileError> {
	let out = nvrtc_compile(kernel.file, &full_source(kernel), sm, Output::Cubin)?;
	if !out.starts_with(b"\x7fELF") {
		return Err(CompileError::Nvrtc { file: kernel.file.into(), message: format!("NVRTC's CUBIN for {sm} is not an ELF image") });
	}
	for entry in kernel.entries {
		if !out.windows(entry.len() + 1).any(|w| &w[..entry.len()] == entry.as_bytes() && w[entry.len()] == 0) {
			return Err(CompileError::MissingEntry { file: kernel.file.into(), arch: sm.into(), entry: (*entry).into() });
		}
	}
	Ok(out)
}

/// The real architectures this NVRTC compiles machine code for (`90` for `sm_90`).
pub fn nvrtc_architectures() -> Result<Vec<i32>, CompileError> {
	use cudarc::nvrtc::sys;
	crate::detect::nvrtc_loads().map_err(CompileError::NoCompiler)?;
	let fail = |e| CompileError::Nvrtc { file: "-".into(), message: format!("its supported architectures: {e:?}") };
	let mut n = 0;
	// SAFETY: NVRTC writes one int, then that many ints into a buffer of that size.
	unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }.result().map_err(fail)?;
	let mut archs = vec![0i32; n.max(0) as usize];
	unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }.result().map_err(fail)?;
	Ok(archs)
}

/// Every kernel compiled to machine code for `sm`, in [`KERNELS`]' order.
pub fn compile_all_cubin(sm: &str) -> Result<Vec<(&'static KernelSource, Vec<u8>)>, CompileError> {
	KERNELS.iter().map(|k| compile_cubin(k, sm).map(|c| (k, c))).collect()
}

/// Every kernel compiled for `arch`, in [`KERNELS`]' order.
pub fn compile_all(arch: &str) -> Result<Vec<(&'static KernelSource, Ptx)>, CompileError> {
	KERNELS.iter().map(|k| compile(k, arch).map(|p| (k, p))).collect()
}

/// NVRTC's version `(major, minor)`: it compiles the kernels, so it is part of the class.
pub fn nvrtc_version() -> Result<(i32, i32), CompileError> {
	crate::detect::nvrtc_loads().map_err(CompileError::NoCompiler)?;
	let (mut major, mut minor) = (0, 0);
	// SAFETY: NVRTC writes two ints.
	unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
		.result()
		.map_err(|e| CompileError::Nvrtc { file: "-".into(), message: format!("nvrtcVersion: {e:?}") })?;
	Ok((major, minor))
}
