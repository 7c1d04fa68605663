#!/usr/bin/env bash
# Regenerates what is derived from the runtime and committed: the chain specs in
# chain-spec/ (plain and raw, `development` and `local_testnet`) and the metadata the
# subxt tests generate their code from. Never edit those files by hand; the tests fail
# when they are stale.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

say "building molting-node ($MOLTING_PROFILE profile)"
cargo build --profile "$MOLTING_PROFILE" --workspace

for pair in development:dev local_testnet:local; do
	name="${pair%%:*}"; chain="${pair##*:}"
	say "chain-spec/$name.json, chain-spec/$name-raw.json"
	"$MOLTING_NODE_BIN" export-chain-spec --chain "$chain" --output "chain-spec/$name.json" >/dev/null
	"$MOLTING_NODE_BIN" export-chain-spec --chain "$chain" --raw --output "chain-spec/$name-raw.json" >/dev/null
done

say "tests/metadata/molting.scale"
mkdir -p tests/metadata
"$MOLTING_NODE_BIN" export-metadata --output tests/metadata/molting.scale
