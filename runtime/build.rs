//! Builds the runtime to wasm (the on-chain code); the native build embeds it as
//! `WASM_BINARY` so the node and the chain-spec tooling can use it.
//!
//! Panic locations embed source paths: the repository and the target directory are
//! remapped to fixed names, so no local path ends up in the on-chain code.

#[cfg(feature = "std")]
fn main() {
	use std::path::PathBuf;
	let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
	let repo = manifest_dir.parent().expect("the runtime lives in the repository");
	// OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out; the wasm project lives in
	// <target>/<profile>/wbuild.
	let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
	let wbuild = out_dir.ancestors().nth(3).expect("OUT_DIR is nested").join("wbuild");
	substrate_wasm_builder::WasmBuilder::init_with_defaults()
		.append_to_rust_flags(format!("--remap-path-prefix={}=/molting", repo.display()))
		.append_to_rust_flags(format!("--remap-path-prefix={}=/wbuild", wbuild.display()))
		.build();
}

#[cfg(not(feature = "std"))]
fn main() {}
