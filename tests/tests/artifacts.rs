//! The committed chain specs and metadata are what the current runtime generates; when
//! one is stale, this says which and how to regenerate it.
//!
//! A wasm build is not byte-reproducible across checkouts (symbol hashes depend on where
//! the crates are), so a spec's runtime code is compared by what identifies a runtime:
//! its `runtime_version` and `runtime_apis` sections. Everything else in the spec (the
//! genesis config, or the raw genesis storage) must match exactly.

use molting_e2e::node_binary;
use std::{path::PathBuf, process::Command};

fn repo() -> PathBuf {
	PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn node_stdout(args: &[&str]) -> Vec<u8> {
	let out = Command::new(node_binary()).args(args).output().expect("molting-node runs");
	assert!(
		out.status.success(),
		"molting-node {args:?} failed: {}",
		String::from_utf8_lossy(&out.stderr)
	);
	out.stdout
}

const REGENERATE: &str = "regenerate with scripts/gen-artifacts.sh and commit the result";

#[test]
fn chain_specs_are_fresh() {
	for (file, chain) in [("development", "dev"), ("local_testnet", "local")] {
		for raw in [false, true] {
			let path = repo()
				.join("chain-spec")
				.join(if raw { format!("{file}-raw.json") } else { format!("{file}.json") });
			let committed = std::fs::read(&path)
				.unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()));
			let mut args = vec!["export-chain-spec", "--chain", chain];
			if raw {
				args.push("--raw");
			}
			let fresh = node_stdout(&args);
			let mut committed: serde_json::Value = serde_json::from_slice(&committed).unwrap();
			let mut fresh: serde_json::Value = serde_json::from_slice(&fresh).unwrap();
			let (old_code, new_code) = (take_code(&mut committed), take_code(&mut fresh));
			assert!(
				runtime_identity(&old_code) == runtime_identity(&new_code),
				"{}: its runtime has another version or API set; {REGENERATE}",
				path.display()
			);
			assert!(committed == fresh, "{} is stale; {REGENERATE}", path.display());
		}
	}
}

/// Removes the runtime code from a plain or raw spec and returns it (hex-decoded).
fn take_code(spec: &mut serde_json::Value) -> Vec<u8> {
	let genesis = &mut spec["genesis"];
	let code = if let Some(raw) = genesis.get_mut("raw") {
		raw["top"].as_object_mut().unwrap().remove("0x3a636f6465") // ":code"
	} else {
		genesis["runtimeGenesis"].as_object_mut().unwrap().remove("code")
	};
	let hex = code.expect("the spec has runtime code");
	decode_hex(hex.as_str().unwrap())
}

fn decode_hex(s: &str) -> Vec<u8> {
	let s = s.trim_start_matches("0x");
	(0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The `runtime_version` and `runtime_apis` custom sections of a (maybe compressed) wasm.
fn runtime_identity(code: &[u8]) -> Vec<(String, Vec<u8>)> {
	let wasm = sp_maybe_compressed_blob::decompress(code, sp_maybe_compressed_blob::CODE_BLOB_BOMB_LIMIT)
		.expect("runtime code decompresses");
	assert_eq!(&wasm[..4], b"\0asm", "runtime code is wasm");
	let leb = |bytes: &[u8], at: &mut usize| -> usize {
		let (mut value, mut shift) = (0usize, 0);
		loop {
			let b = bytes[*at];
			*at += 1;
			value |= ((b & 0x7f) as usize) << shift;
			if b & 0x80 == 0 {
				return value
			}
			shift += 7;
		}
	};
	let mut sections = Vec::new();
	let mut at = 8;
	while at < wasm.len() {
		let id = wasm[at];
		at += 1;
		let size = leb(&wasm, &mut at);
		let end = at + size;
		if id == 0 {
			let mut p = at;
			let name_len = leb(&wasm, &mut p);
			let name = String::from_utf8_lossy(&wasm[p..p + name_len]).into_owned();
			let content = &wasm[p + name_len..end];
			if name == "runtime_version" {
				sections.push((name, content.to_vec()));
			} else if name == "runtime_apis" {
				// (API id: 8 bytes, version: 4 bytes) records, in an order the linker
				// picks: compare them as a set.
				let mut apis: Vec<&[u8]> = content.chunks(12).collect();
				apis.sort();
				sections.push((name, apis.concat()));
			}
		}
		at = end;
	}
	assert_eq!(sections.len(), 2, "runtime code lacks its version sections");
	// The sections' order is the linker's too.
	sections.sort();
	sections
}

#[test]
fn metadata_is_fresh() {
	let path = repo().join("tests/metadata/molting.scale");
	let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
	let fresh = node_stdout(&["export-metadata"]);
	assert!(committed == fresh, "{} is stale; {REGENERATE}", path.display());
}

#[test]
fn local_testnet_spec_has_two_collators_and_the_token() {
	let spec: serde_json::Value =
		serde_json::from_slice(&std::fs::read(repo().join("chain-spec/local_testnet.json")).unwrap())
			.unwrap();
	assert_eq!(spec["properties"]["tokenSymbol"], "MOLT");
	assert_eq!(spec["properties"]["tokenDecimals"], 12);
	let patch = &spec["genesis"]["runtimeGenesis"]["patch"];
	let invulnerables = patch["collatorSelection"]["invulnerables"].as_array().unwrap();
	assert_eq!(invulnerables.len(), 2, "local_testnet has Alice and Bob as collators");
	assert_eq!(patch["parachainInfo"]["parachainId"], 2000);
}
