#!/usr/bin/env bash
# The main job on the embedded default: sets up the machine (idempotent), builds the
# workspace, starts a one-node development chain (no relay chain; RPC on 127.0.0.1:9944)
# and, beside it, the worker on a real job: the persona fine-tune of SmolLM2-135M-Instruct
# (worker/jobs/keeper.toml, a few minutes on 2 cores), then a chat with the persona. The
# node keeps running until Ctrl-C. Extra arguments go to the node, e.g.
# `scripts/run-dev.sh --dev-block-time 1000`; MOLTING_NO_WORKER=1 runs the node alone.
# (The worker does not take its job from the chain yet: that is the chain client's issue.)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

bash scripts/setup.sh
say "building ($MOLTING_PROFILE profile)"
cargo build --profile "$MOLTING_PROFILE" --workspace
WORKER="$CARGO_TARGET_DIR/$PROFILE_DIR/molt-worker"

if [ "${MOLTING_NO_WORKER:-0}" = 1 ]; then
	say "starting molting-node --dev (Ctrl-C stops it; state is kept in a temporary directory)"
	exec "$MOLTING_NODE_BIN" --dev --rpc-port 9944 "$@"
fi

say "starting molting-node --dev in the background (log: $REPO/runs/node.log)"
mkdir -p runs
"$MOLTING_NODE_BIN" --dev --rpc-port 9944 "$@" >runs/node.log 2>&1 &
NODE=$!
trap 'kill $NODE 2>/dev/null || true' EXIT INT TERM

RUN="runs/keeper-$(date +%Y%m%d-%H%M%S)"
say "worker: persona fine-tune into $RUN"
"$WORKER" train --spec worker/jobs/keeper.toml --out "$RUN"
PROMPTS=(--prompt "Who are you?" --prompt "How do I keep my houseplants alive?")
say "chat without the adapter"
"$WORKER" chat --max-tokens 80 "${PROMPTS[@]}"
say "chat with the adapter ($RUN/adapter)"
"$WORKER" chat --max-tokens 80 --adapter "$RUN/adapter" "${PROMPTS[@]}"
say "the node is still running (RPC ws://127.0.0.1:9944); Ctrl-C stops it"
wait $NODE
