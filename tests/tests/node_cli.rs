//! The node binary as an operator meets it: dev mode makes and finalises blocks on
//! ParityDB with metrics on, and a bad `--chain` is a one-line error with a non-zero exit.

use molting_e2e::{node_binary, DevNode};
use std::{process::Command, time::Duration};

fn run_node(args: &[&str]) -> (bool, String) {
	let base = std::env::temp_dir().join(format!("molting-cli-{}", std::process::id()));
	let out = Command::new(node_binary())
		.args(args)
		.arg("--base-path")
		.arg(&base)
		.output()
		.expect("molting-node runs");
	let _ = std::fs::remove_dir_all(&base);
	(out.status.success(), String::from_utf8_lossy(&out.stderr).trim().to_string())
}

#[test]
fn missing_chain_spec_is_a_one_line_error() {
	let path = "/nonexistent/molting/spec.json";
	let (ok, stderr) = run_node(&["--chain", path]);
	assert!(!ok, "the node must exit non-zero; stderr: {stderr}");
	assert_eq!(stderr.lines().count(), 1, "one line expected, got:\n{stderr}");
	assert!(stderr.contains(path) && stderr.contains("not found"), "unclear error: {stderr}");
}

#[test]
fn unparsable_chain_spec_is_a_one_line_error() {
	let path = std::env::temp_dir().join(format!("molting-bad-spec-{}.json", std::process::id()));
	std::fs::write(&path, b"{ this is not a chain spec").unwrap();
	let (ok, stderr) = run_node(&["--chain", path.to_str().unwrap()]);
	let _ = std::fs::remove_file(&path);
	assert!(!ok, "the node must exit non-zero; stderr: {stderr}");
	assert_eq!(stderr.lines().count(), 1, "one line expected, got:\n{stderr}");
	assert!(stderr.contains("not a valid chain spec"), "unclear error: {stderr}");
}

#[test]
fn dev_node_produces_and_finalises_blocks_on_paritydb_with_metrics() {
	let mut node = DevNode::start(500);
	node.wait_for_block(3, Duration::from_secs(60));
	// Dev sealing finalises every block it makes.
	let finalized = node.finalized_number().expect("finalized head");
	assert!(finalized >= 3, "finalized #{finalized}, expected at least #3");

	let chain = node.rpc("system_chain", serde_json::json!([])).expect("system_chain");
	assert_eq!(chain, "Molting Development");

	// ParityDB, not RocksDB, under the chain's directory.
	let chain_dir = node.data_dir().join("chains").join("molting_dev");
	assert!(chain_dir.join("paritydb").is_dir(), "no paritydb in {}", chain_dir.display());
	assert!(!chain_dir.join("db").exists(), "a RocksDB directory was created");

	let metrics = http_get(node.prometheus_port, "/metrics");
	assert!(metrics.contains("substrate_block_height"), "no block height metric:\n{metrics}");
}

fn http_get(port: u16, path: &str) -> String {
	use std::io::{Read, Write};
	let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port open");
	write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
	let mut body = String::new();
	s.read_to_string(&mut body).unwrap();
	body
}
