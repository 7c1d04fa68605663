//! Every kernel compiled by NVRTC, on any machine that has libnvrtc (no GPU or driver
//! needed: `scripts/fetch-nvrtc.sh`). Where libnvrtc is missing the tests say so and
//! pass, unless `MOLTING_REQUIRE_NVRTC=1` (the README's test command sets it), where they
//! fail: CI must compile the kernels, not skip them.

use molting_cuda::kernels::{compile_source, KERNELS};
use molting_cuda::{compile, CompileError};

/// `false` (after a visible line) where libnvrtc is missing and not required.
fn nvrtc_here() -> bool {
	match molting_cuda::detect::nvrtc_loads() {
		Ok(()) => true,
		Err(why) if std::env::var("MOLTING_REQUIRE_NVRTC").is_ok_and(|v| v == "1") => {
			panic!("MOLTING_REQUIRE_NVRTC=1 but {why}: run scripts/fetch-nvrtc.sh (it fills $MOLTING_NVRTC_DIR)")
		},
		Err(why) => {
			eprintln!("SKIPPED: the CUDA kernels were not compiled: {why} (scripts/fetch-nvrtc.sh)");
			false
		},
	}
}

#[test]
fn every_kernel_compiles_for_ampere_and_hopper_with_its_entry_points() {
	if !nvrtc_here() {
		return;
	}
	for arch in ["compute_80", "compute_90"] {
		for k in KERNELS {
			let ptx = compile(k, arch).unwrap_or_else(|e| panic!("{e}"));
			let text = ptx.to_src();
			assert!(text.contains(&format!(".target sm_{}", &arch["compute_".len()..])), "{} for {arch}", k.file);
		}
	}
	let entries: usize = KERNELS.iter().map(|k| k.entries.len()).sum();
	eprintln!("compiled {} kernel files ({entries} entry points) for compute_80 and compute_90", KERNELS.len());
}

#[test]
fn every_kernel_compiles_to_machine_code_for_ampere_and_hopper_and_its_errors_are_named() {
	if !nvrtc_here() {
		return;
	}
	let archs = molting_cuda::kernels::nvrtc_architectures().unwrap();
	assert!(archs.contains(&80) && archs.contains(&90), "NVRTC knows Ampere and Hopper: {archs:?}");
	// What the CUDA backend loads: a CUBIN per file for the GPU's own architecture.
	for sm in ["sm_80", "sm_90"] {
		for k in KERNELS {
			let cubin = molting_cuda::kernels::compile_cubin(k, sm).unwrap_or_else(|e| panic!("{e}"));
			assert!(cubin.starts_with(b"\x7fELF") && cubin.len() > 1000, "{} for {sm}: {} bytes", k.file, cubin.len());
		}
	}
	let broken = molting_cuda::KernelSource { file: "broken.cu", source: "extern \"C\" __global__ void broken(float* x) { x[0] = nope; }\n", entries: &["broken"] };
	match molting_cuda::kernels::compile_cubin(&broken, "sm_90") {
		Err(CompileError::Refused { file, arch, log }) => {
			assert_eq!((file.as_str(), arch.as_str()), ("broken.cu", "sm_90"));
			assert!(log.contains("nope"), "the compiler's log names the error: {log}");
		},
		other => panic!("a refused kernel: {other:?}"),
	}
	let missing = molting_cuda::KernelSource { file: "one.cu", source: "extern \"C\" __global__ void one(float* x) { x[0] = 1.0f; }\n", entries: &["one", "two"] };
	match molting_cuda::kernels::compile_cubin(&missing, "sm_90") {
		Err(CompileError::MissingEntry { entry, .. }) => assert_eq!(entry, "two"),
		other => panic!("a declared entry point missing from the machine code: {other:?}"),
	}
}

#[test]
fn a_kernel_nvrtc_refuses_is_reported_with_its_file_and_the_compilers_log() {
	if !nvrtc_here() {
		return;
	}
	let src = "extern \"C\" __global__ void broken(float* x) {\n\tx[0] = undeclared_value;\n}\n";
	let e = compile_source("broken.cu", src, "compute_90").unwrap_err();
	let CompileError::Refused { file, log, .. } = &e else { panic!("{e:?}") };
	assert_eq!(file, "broken.cu");
	assert!(log.contains("broken.cu(2)") && log.contains("undeclared_value"), "NVRTC's log names the line:\n{log}");
	assert!(e.to_string().starts_with("kernels/broken.cu does not compile for compute_90 with NVRTC:"), "{e}");
}

#[test]
fn a_kernel_missing_an_entry_point_it_declares_is_an_error() {
	if !nvrtc_here() {
		return;
	}
	let k = molting_cuda::KernelSource { file: "scale.cu", source: "extern \"C\" __global__ void scale(float* x) { x[0] *= 2.0f; }", entries: &["scale", "shift"] };
	let e = compile(&k, "compute_90").unwrap_err();
	assert!(matches!(&e, CompileError::MissingEntry { entry, .. } if entry == "shift"), "{e:?}");
}

#[test]
fn a_multiply_and_an_add_stay_two_roundings() {
	if !nvrtc_here() {
		return;
	}
	// What --fmad=false is for: `a * b + c` as mul.rn then add.rn, never one fma, so the
	// bits do not depend on a compiler's contraction.
	let src = "extern \"C\" __global__ void muladd(float* y, const float* a, const float* b, const float* c) {\n\ty[0] = a[0] * b[0] + c[0];\n}\n";
	let ours = compile_source("muladd.cu", src, "compute_90").unwrap().to_src();
	assert!(ours.contains("mul.rn.f32") && ours.contains("add.rn.f32") && !ours.contains("fma.rn.f32"), "{ours}");
	// The same source under NVRTC's default (--fmad=true) is contracted: the check above
	// can fail.
	let opts = cudarc::nvrtc::CompileOptions { fmad: Some(true), arch: Some("compute_90"), ..Default::default() };
	let fused = cudarc::nvrtc::compile_ptx_with_opts(src, opts).unwrap().to_src();
	assert!(fused.contains("fma.rn.f32"), "{fused}");
}
