#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine to build and test Molting. Idempotent: each step
# checks whether its result is already there and skips itself if so.
#
#   1. system packages (clang/bindgen, protoc, lld, Debian's Rust 1.96 with the std sources)
#   2. the `wasm32v1-none` target for Debian's Rust, built from source once
#      (rustup cannot download targets on our machines; see shared/notes/toolchain.md)
#   3. Debian's Rust registered with rustup as the `debian-web` toolchain, which the
#      workspace's `.cargo/config.toml` names as WASM_BUILD_TOOLCHAIN
#   4. the Node.js packages the JS tests use (`npm ci`, committed lock files): @polkadot/api
#      for the end-to-end tests, node-llama-cpp (its prebuilt linux-x64 llama.cpp only) for
#      the check of the worker's GGUF adapters
#   5. SmolLM2-135M-Instruct (GGUF) in the model cache (scripts/fetch-models.sh)
#   6. libnvrtc (CUDA 13.5, from the PyPI wheel nvidia-cuda-nvrtc) in $MOLTING_NVRTC_DIR,
#      so the tests compile every CUDA kernel without a GPU (scripts/fetch-nvrtc.sh)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- 1. system packages ---------------------------------------------------------------
PACKAGES=(rustc-web cargo-web rust-web-src lld-19 clang libclang-dev protobuf-compiler
	make pkg-config curl ca-certificates python3)
missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing system packages: ${missing[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
	say "system packages: already installed"
fi

# --- 2. wasm linker and the wasm32v1-none target for Debian's rustc -------------------
HOST_BIN=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin
if [ ! -e "$HOST_BIN/rust-lld" ]; then
	say "linking rust-lld -> lld-19 in Debian's rustc sysroot"
	$SUDO mkdir -p "$HOST_BIN"
	$SUDO ln -sf /usr/lib/llvm-19/bin/lld "$HOST_BIN/rust-lld"
else
	say "rust-lld: already linked"
fi

WASM_LIB=/usr/lib/rustlib/wasm32v1-none/lib
if ! ls "$WASM_LIB"/libcore-*.rlib >/dev/null 2>&1; then
	say "building the wasm32v1-none standard library from source (about 30 s)"
	tmp="$(mktemp -d)"
	mkdir -p "$tmp/src"
	cat >"$tmp/Cargo.toml" <<-'EOF'
		[package]
		name = "wasm-sysroot"
		version = "0.0.0"
		edition = "2021"
		[lib]
		crate-type = ["rlib"]
		[profile.release]
		panic = "abort"
	EOF
	echo '#![no_std]' >"$tmp/src/lib.rs"
	# Embedded bitcode: the runtime's wasm is linked with LTO.
	(cd "$tmp" && RUSTFLAGS=-Cembed-bitcode=yes RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
		CARGO_TARGET_DIR="$tmp/target" /usr/bin/cargo build -q --release --target wasm32v1-none \
		-Zbuild-std=core,alloc -Zbuild-std-features=compiler-builtins-mem)
	$SUDO mkdir -p "$WASM_LIB"
	deps="$tmp/target/wasm32v1-none/release/deps"
	for lib in core alloc compiler_builtins; do
		n=$(ls "$deps"/lib${lib}-*.rlib | wc -l)
		[ "$n" -eq 1 ] || { echo "expected one lib${lib} rlib, found $n" >&2; exit 1; }
		$SUDO cp "$deps"/lib${lib}-*.rlib "$WASM_LIB/"
	done
	rm -rf "$tmp"
else
	say "wasm32v1-none target: already installed"
fi

# --- 3. rustup toolchain pointing at Debian's Rust -------------------------------------
if ! rustup run debian-web rustc --version >/dev/null 2>&1; then
	say "registering Debian's Rust as rustup toolchain 'debian-web'"
	rustup toolchain link debian-web /usr
else
	say "rustup toolchain debian-web: $(rustup run debian-web rustc --version)"
fi

# --- 4. Node.js packages for the JS tests ----------------------------------------------
# Each directory's committed lock file pins every version. node-llama-cpp is installed
# without its optional packages (CUDA, Vulkan, other platforms: 640 MB) and without
# install scripts (they would try to fetch or build llama.cpp); its linux-x64 prebuilt
# binaries are a direct dependency instead. Its lock file cannot list the other platforms'
# packages (our registry does not serve them), so `npm ci` would refuse it as incomplete:
# `npm install` with the lock installs the same pinned versions and leaves it unchanged.
npm_install() {
	local dir="$1"; shift
	if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
		say "installing Node.js test packages in ${dir#"$REPO"/} (npm $1)"
		(cd "$dir" && npm "$@" --no-audit --no-fund --loglevel=error)
	else
		say "Node.js test packages in ${dir#"$REPO"/}: already installed"
	fi
}
npm_install "$REPO/tests/js" ci
npm_install "$REPO/examples/js" ci
npm_install "$REPO/tests/llamacpp" install --omit=optional --ignore-scripts

# --- 5. Models: SmolLM2-135M-Instruct for the worker's tests and demo --------------------
"$REPO/scripts/fetch-models.sh"

# --- 6. NVIDIA's runtime compiler, for the test that compiles every CUDA kernel ----------
"$REPO/scripts/fetch-nvrtc.sh"

say "done"
