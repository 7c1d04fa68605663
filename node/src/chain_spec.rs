//! The chain specs built into the node: `dev` (the runtime's `development` preset) and
//! `local` (its `local_testnet` preset), both made from the embedded runtime, and spec
//! files loaded by path with errors that say what is wrong.

use molting_runtime::{
	currency::{TOKEN_DECIMALS, TOKEN_SYMBOL},
	genesis_config_presets::PARA_ID,
	WASM_BINARY,
};
use polkadot_omni_node_lib::chain_spec::{ChainSpec, Extensions, GenericChainSpec, LoadSpec};
use sc_chain_spec::{ChainType, Properties};
use sp_maybe_compressed_blob::CODE_BLOB_BOMB_LIMIT;
use std::{path::Path, sync::OnceLock};

/// The relay chain the built-in specs name (a local test relay chain).
pub const RELAY_CHAIN: &str = "rococo-local";

/// Resolves `--chain`: a built-in name, or else the path of a chain-spec JSON file.
pub struct MoltingSpecLoader;

impl LoadSpec for MoltingSpecLoader {
	fn load_spec(&self, id: &str) -> Result<Box<dyn ChainSpec>, String> {
		match id {
			"" | "dev" | "development" => Ok(Box::new(development()?)),
			"local" | "local_testnet" => Ok(Box::new(local_testnet()?)),
			path => Ok(Box::new(from_file(Path::new(path))?)),
		}
	}
}

fn properties() -> Properties {
	let mut p = Properties::new();
	p.insert("tokenSymbol".into(), TOKEN_SYMBOL.into());
	p.insert("tokenDecimals".into(), TOKEN_DECIMALS.into());
	p.insert("ss58Format".into(), 42.into());
	p
}

/// The embedded runtime, compressed. Release builds embed it compacted and compressed
/// already; debug builds embed the plain wasm, which is compressed here so chain specs stay
/// small (the executor decompresses either).
fn runtime_code() -> Result<&'static [u8], String> {
	static CODE: OnceLock<Vec<u8>> = OnceLock::new();
	let wasm = WASM_BINARY.ok_or_else(|| {
		"this node was built without the runtime's wasm (SKIP_WASM_BUILD was set); \
		 rebuild it without SKIP_WASM_BUILD"
			.to_string()
	})?;
	if wasm.starts_with(&ZSTD_PREFIX) {
		return Ok(wasm)
	}
	Ok(CODE.get_or_init(|| {
		sp_maybe_compressed_blob::compress_weakly(wasm, CODE_BLOB_BOMB_LIMIT)
			.unwrap_or_else(|| wasm.to_vec())
	}))
}

/// The prefix `sp-maybe-compressed-blob` puts before a compressed blob.
const ZSTD_PREFIX: [u8; 8] = [82, 188, 83, 118, 70, 219, 142, 5];

/// A one-collator (Alice) development chain.
pub fn development() -> Result<GenericChainSpec, String> {
	Ok(GenericChainSpec::builder(runtime_code()?, Extensions::new(RELAY_CHAIN.into(), PARA_ID))
		.with_name("Molting Development")
		.with_id("molting_dev")
		.with_chain_type(ChainType::Development)
		.with_genesis_config_preset_name(sp_genesis_builder_presets::DEV)
		.with_protocol_id("molting-dev")
		.with_properties(properties())
		.build())
}

/// A two-collator (Alice, Bob) local test network.
pub fn local_testnet() -> Result<GenericChainSpec, String> {
	Ok(GenericChainSpec::builder(runtime_code()?, Extensions::new(RELAY_CHAIN.into(), PARA_ID))
		.with_name("Molting Local Testnet")
		.with_id("molting_local_testnet")
		.with_chain_type(ChainType::Local)
		.with_genesis_config_preset_name(sp_genesis_builder_presets::LOCAL)
		.with_protocol_id("molting-local")
		.with_properties(properties())
		.build())
}

/// The preset names of `sp_genesis_builder`, spelled out to avoid one more dependency.
mod sp_genesis_builder_presets {
	pub const DEV: &str = "development";
	pub const LOCAL: &str = "local_testnet";
}

/// Loads a chain-spec file, saying which of "missing", "unreadable" or "not a chain spec"
/// went wrong.
pub fn from_file(path: &Path) -> Result<GenericChainSpec, String> {
	let shown = path.display();
	if !path.exists() {
		return Err(format!(
			"chain spec `{shown}` not found: give the path of a chain-spec JSON file, \
			 or a built-in chain: dev, local"
		));
	}
	let bytes = std::fs::read(path).map_err(|e| format!("cannot read chain spec `{shown}`: {e}"))?;
	GenericChainSpec::from_json_bytes(bytes)
		.map_err(|e| format!("chain spec `{shown}` is not a valid chain spec: {e}"))
}
