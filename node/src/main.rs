//! `molting-node`: the Molting parachain node.
//!
//! A thin binary over `polkadot-omni-node-lib` with the Molting runtime embedded:
//! - `molting-node --dev` runs a one-node chain from the built-in development spec, with no
//!   relay chain, sealing a block every few seconds (`--dev-block-time MS` to change it);
//! - `molting-node --chain SPEC -- <relay chain args>` runs a collator of a relay chain.
//!
//! The database defaults to ParityDB (`--database` still picks another one).

mod chain_spec;

mod extra;

use polkadot_omni_node_lib::{
	run_with_custom_cli, runtime::DefaultRuntimeResolver, CliConfig as CliConfigT, RunConfig,
};
use std::ffi::OsString;

struct CliConfig;

impl CliConfigT for CliConfig {
	fn impl_version() -> String {
		env!("CARGO_PKG_VERSION").into()
	}

	fn author() -> String {
		env!("CARGO_PKG_AUTHORS").into()
	}

	fn support_url() -> String {
		"https://github.com/molting/molting/issues".into()
	}

	fn copyright_start_year() -> u16 {
		2026
	}
}

/// Subcommands that open the node's database and so take `--database`.
const DATABASE_SUBCOMMANDS: &[&str] =
	&["check-block", "export-blocks", "export-state", "import-blocks", "purge-chain", "revert"];
/// Subcommands that do not take `--database`.
const OTHER_SUBCOMMANDS: &[&str] = &[
	"benchmark",
	"build-spec",
	"chain-spec-builder",
	"export-genesis-head",
	"export-genesis-state",
	"export-genesis-wasm",
	"export-chain-spec",
	"export-metadata",
	"help",
	"key",
];

/// The arguments with `--database paritydb` added where the user chose no database and the
/// command opens one. The omni-node library reads its arguments from the process itself,
/// so a changed argument list means running this binary again with it.
fn with_paritydb_default(args: &[OsString]) -> Option<Vec<OsString>> {
	// Only the parachain's own arguments: those after `--` belong to the relay chain.
	let own_end = args.iter().position(|a| a == "--").unwrap_or(args.len());
	let own = &args[1..own_end];
	let chose_db = own.iter().any(|a| {
		let a = a.to_string_lossy();
		a == "--database" || a == "--db" || a.starts_with("--database=") || a.starts_with("--db=")
	});
	let help_or_version = own.iter().any(|a| {
		matches!(a.to_str(), Some("-h" | "--help" | "-V" | "--version"))
	});
	let subcommand = own.iter().find_map(|a| {
		let a = a.to_str()?;
		(DATABASE_SUBCOMMANDS.contains(&a) || OTHER_SUBCOMMANDS.contains(&a)).then_some(a)
	});
	let opens_db = match subcommand {
		None => true,
		Some(s) => DATABASE_SUBCOMMANDS.contains(&s),
	};
	if chose_db || help_or_version || !opens_db {
		return None;
	}
	let mut out = args[..own_end].to_vec();
	out.push("--database".into());
	out.push("paritydb".into());
	out.extend_from_slice(&args[own_end..]);
	Some(out)
}

fn main() {
	let args: Vec<OsString> = std::env::args_os().collect();
	if let Some(new_args) = with_paritydb_default(&args) {
		use std::os::unix::process::CommandExt;
		let exe = std::env::current_exe().unwrap_or_else(|_| args[0].clone().into());
		let err = std::process::Command::new(exe).arg0(&args[0]).args(&new_args[1..]).exec();
		eprintln!("error: cannot re-run molting-node with `--database paritydb`: {err}");
		std::process::exit(1);
	}

	let config = RunConfig::new(
		Box::new(DefaultRuntimeResolver),
		Box::new(chain_spec::MoltingSpecLoader),
	);
	if let Err(e) = run_with_custom_cli::<CliConfig, extra::MoltingSubcommand>(config) {
		// One line, no Debug dump: this is what an operator sees.
		eprintln!("Error: {e}");
		std::process::exit(1);
	}
}

#[cfg(test)]
mod tests {
	use super::with_paritydb_default;
	use std::ffi::OsString;

	fn args(s: &str) -> Vec<OsString> {
		s.split_whitespace().map(OsString::from).collect()
	}

	#[test]
	fn adds_paritydb_to_a_plain_run() {
		assert_eq!(
			with_paritydb_default(&args("node --dev --tmp")),
			Some(args("node --dev --tmp --database paritydb"))
		);
	}

	#[test]
	fn adds_it_before_the_relay_chain_arguments() {
		assert_eq!(
			with_paritydb_default(&args("node --chain x.json -- --chain rococo")),
			Some(args("node --chain x.json --database paritydb -- --chain rococo"))
		);
	}

	#[test]
	fn keeps_an_explicit_choice_and_commands_without_a_database() {
		assert_eq!(with_paritydb_default(&args("node --dev --database rocksdb")), None);
		assert_eq!(with_paritydb_default(&args("node --dev --db=auto")), None);
		assert_eq!(with_paritydb_default(&args("node build-spec --chain dev")), None);
		assert_eq!(with_paritydb_default(&args("node key generate")), None);
		assert_eq!(with_paritydb_default(&args("node --help")), None);
		assert_eq!(
			with_paritydb_default(&args("node purge-chain --dev -y")),
			Some(args("node purge-chain --dev -y --database paritydb"))
		);
	}
}
