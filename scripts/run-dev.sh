#!/usr/bin/env bash
# The main job on the embedded default: sets up the machine (idempotent), builds the node
# and runs a one-node development chain (no relay chain) with RPC on 127.0.0.1:9944.
# Extra arguments go to the node, e.g. `scripts/run-dev.sh --dev-block-time 1000`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

bash scripts/setup.sh
say "building ($MOLTING_PROFILE profile)"
cargo build --profile "$MOLTING_PROFILE" --workspace
say "starting molting-node --dev (Ctrl-C stops it; state is kept in a temporary directory)"
exec "$MOLTING_NODE_BIN" --dev --rpc-port 9944 "$@"
