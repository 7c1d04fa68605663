//! Whether this machine can compile and run the CUDA kernels, found without panicking.
//!
//! cudarc's loaders panic when a library is missing (or too old to hold a symbol of the
//! CUDA version it was built for), and creating a context without a driver panics too. So
//! every probe runs inside `catch_unwind` (the workspace builds with `panic = "unwind"`)
//! with the panic message silenced, once per process.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detection {
	/// A driver and at least one GPU: the first one's name and compute capability.
	Gpu { devices: u32, name: String, compute_capability: (u32, u32) },
	/// No GPU to run on, and why, in one line.
	Unavailable(String),
}

impl Detection {
	/// The line `--backend auto` prints when it falls back to the CPU.
	pub fn fallback_notice(&self) -> Option<String> {
		match self {
			Detection::Gpu { .. } => None,
			Detection::Unavailable(why) => Some(format!("no CUDA GPU to train on ({why}); using the CPU backend")),
		}
	}
}

/// Runs `f`, turning a panic into `None` without printing it: cudarc's loaders panic on a
/// library that is missing or lacks a symbol, which here is an answer, not a failure.
/// The panic hook is process-wide, so every probe runs once per process (`OnceLock`s).
fn quietly<T>(f: impl FnOnce() -> T) -> Option<T> {
	let hook = std::panic::take_hook();
	std::panic::set_hook(Box::new(|_| {}));
	let r = catch_unwind(AssertUnwindSafe(f)).ok();
	std::panic::set_hook(hook);
	r
}

/// Runs a loader probe, turning its panic into `false`.
fn loads(probe: impl FnOnce() -> bool) -> bool {
	quietly(probe).unwrap_or(false)
}

/// Loads libnvrtc (and the builtins it opens while compiling) from `$MOLTING_NVRTC_DIR`
/// where that is set (`scripts/fetch-nvrtc.sh` fills it), once. The loader then hands the
/// already loaded library to cudarc's `dlopen("libnvrtc.so.13")` by its soname, so no
/// `LD_LIBRARY_PATH` is needed (which would change the environment every build sees).
fn preload_nvrtc() {
	static ONCE: std::sync::Once = std::sync::Once::new();
	ONCE.call_once(|| {
		use std::os::unix::ffi::OsStrExt;
		let Some(dir) = std::env::var_os("MOLTING_NVRTC_DIR").map(std::path::PathBuf::from) else { return };
		let Ok(entries) = std::fs::read_dir(&dir) else { return };
		let mut libs: Vec<std::path::PathBuf> = entries
			.filter_map(|e| e.ok().map(|e| e.path()))
			.filter(|p| p.file_name().is_some_and(|n| n.as_bytes().starts_with(b"libnvrtc")))
			.collect();
		// The builtins first: libnvrtc opens them by name when it compiles.
		libs.sort_by_key(|p| !p.file_name().is_some_and(|n| n.as_bytes().starts_with(b"libnvrtc-builtins")));
		for lib in libs {
			let Ok(path) = std::ffi::CString::new(lib.as_os_str().as_bytes()) else { continue };
			// SAFETY: loads a shared library by path; its initialisers are NVIDIA's. A
			// failure leaves nothing loaded and shows as libnvrtc missing.
			unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
		}
	});
}

/// `Ok` if libnvrtc (CUDA 13) can be loaded here (from `$MOLTING_NVRTC_DIR` or the
/// library path); else why not.
pub fn nvrtc_loads() -> Result<(), String> {
	// Probed once per process: the panic hook is swapped while it runs.
	static LOADS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
	let ok = *LOADS.get_or_init(|| {
		preload_nvrtc();
		// SAFETY: only opens the library and resolves its symbols; nothing is called.
		loads(|| unsafe { cudarc::nvrtc::sys::is_culib_present() })
	});
	if ok {
		Ok(())
	} else {
		Err("no libnvrtc.so.13 (or one without CUDA 13's symbols) in $MOLTING_NVRTC_DIR or on the library path".into())
	}
}

/// `Ok` if libcublas (CUDA 13) can be loaded here; else why not.
pub fn cublas_loads() -> Result<(), String> {
	static LOADS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
	// SAFETY: only opens the library and resolves its symbols; nothing is called.
	if *LOADS.get_or_init(|| loads(|| unsafe { cudarc::cublas::sys::is_culib_present() })) {
		Ok(())
	} else {
		Err("no libcublas.so.13 (or one without CUDA 13's symbols) on the library path".into())
	}
}

/// Whether a CUDA driver and a GPU are present: never panics, and asks the driver once
/// per process.
pub fn detect() -> Detection {
	static FOUND: std::sync::OnceLock<Detection> = std::sync::OnceLock::new();
	FOUND.get_or_init(|| quietly(find).unwrap_or_else(|| Detection::Unavailable("the CUDA driver failed".into()))).clone()
}

fn find() -> Detection {
	// SAFETY: only opens the library and resolves its symbols; nothing is called.
	if !unsafe { cudarc::driver::sys::is_culib_present() } {
		return Detection::Unavailable("no CUDA 13 driver: libcuda.so could not be loaded".into());
	}
	// cudarc resolves each driver function when first called: one a too old libcuda lacks
	// panics (caught by `quietly`).
	let count = match cudarc::driver::CudaContext::device_count() {
		Ok(n) => n,
		Err(e) => return Detection::Unavailable(format!("the CUDA driver reports {e:?}")),
	};
	if count <= 0 {
		return Detection::Unavailable("the CUDA driver sees no GPU".into());
	}
	let first = (|| {
		let ctx = cudarc::driver::CudaContext::new(0).map_err(|e| format!("{e:?}"))?;
		let name = ctx.name().map_err(|e| format!("{e:?}"))?;
		let (major, minor) = ctx.compute_capability().map_err(|e| format!("{e:?}"))?;
		Ok::<_, String>((name, (major.max(0) as u32, minor.max(0) as u32)))
	})();
	match first {
		Ok((name, compute_capability)) => Detection::Gpu { devices: count as u32, name, compute_capability },
		Err(e) => Detection::Unavailable(format!("GPU 0 cannot be opened: {e}")),
	}
}

#[cfg(test)]
mod tests {
	use super::*;

	#[test]
	fn detection_never_panics_and_says_why_it_falls_back() {
		let d = detect();
		match &d {
			Detection::Gpu { devices, compute_capability, .. } => {
				assert!(*devices >= 1 && compute_capability.0 >= 3, "{d:?}");
				assert_eq!(d.fallback_notice(), None);
			},
			Detection::Unavailable(why) => {
				eprintln!("no GPU here: {why}");
				let notice = d.fallback_notice().expect("a notice");
				assert!(notice.contains(why.as_str()) && notice.ends_with("using the CPU backend"), "{notice}");
				assert!(!notice.contains('\n'), "one line: {notice}");
			},
		}
	}
}
