//! The committed chain specs and metadata are what the current runtime generates; when
//! one is stale, this says which and how to regenerate it.

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
			let committed: serde_json::Value = serde_json::from_slice(&committed).unwrap();
			let fresh: serde_json::Value = serde_json::from_slice(&fresh).unwrap();
			assert!(committed == fresh, "{} is stale; {REGENERATE}", path.display());
		}
	}
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
