//! Subcommands Molting adds to the omni-node's own.

use clap::Subcommand;
use polkadot_omni_node_lib::{extra_subcommand::ExtraSubcommand, RunConfig};
use sc_cli::ExportChainSpecCmd;
use std::{io::Write, path::PathBuf};

/// The metadata version clients (subxt codegen, polkadot.js) are given.
pub const METADATA_VERSION: u32 = 16;

#[derive(Debug, Subcommand)]
pub enum MoltingSubcommand {
	/// Export a chain spec (built-in `dev`/`local`, or a file) to JSON.
	ExportChainSpec(ExportChainSpecCmd),
	/// Write the embedded runtime's metadata (SCALE-encoded, version 16): what client code
	/// generators such as subxt read.
	ExportMetadata(ExportMetadataCmd),
}

#[derive(Debug, clap::Args)]
pub struct ExportMetadataCmd {
	/// Output file; standard output if omitted.
	#[arg(long)]
	pub output: Option<PathBuf>,
}

impl ExtraSubcommand for MoltingSubcommand {
	fn handle(self, cfg: &RunConfig) -> sc_cli::Result<()> {
		match self {
			MoltingSubcommand::ExportChainSpec(cmd) => {
				let spec = cfg.chain_spec_loader.load_spec(&cmd.chain)?;
				cmd.run(spec)
			},
			MoltingSubcommand::ExportMetadata(cmd) => {
				// Building the metadata reads a little storage (pallet versions): give it an
				// empty state to read.
				let metadata = sp_io::TestExternalities::new_empty()
					.execute_with(|| molting_runtime::Runtime::metadata_at_version(METADATA_VERSION))
					.ok_or_else(|| format!("the runtime has no metadata v{METADATA_VERSION}"))?;
				match cmd.output {
					Some(path) => std::fs::write(&path, &*metadata)?,
					None => std::io::stdout().write_all(&metadata)?,
				}
				Ok(())
			},
		}
	}
}
