#!/usr/bin/env bash
# The main job on the embedded default: a real fine-tuning job travelling through a real
# chain. Sets up the machine (idempotent), builds the workspace, then starts on loopback
#   - a one-node development chain (no relay chain; RPC on ws://127.0.0.1:9944),
#   - the blob store (molt-worker store serve, http://127.0.0.1:8700),
#   - a miner: Bob (molt-worker mine),
#   - three validators: Charlie, Dave and Eve (molt-worker validate),
# posts the Keeper persona job (worker/jobs/keeper.toml, SmolLM2-135M-Instruct) as Alice
# with a hidden eval set (only its commitment goes on chain), shows the miner train it and
# its attestation land, reveals the eval set as Alice, shows the committee replay, score,
# commit and reveal its reports and the chain settle the job, fetches and verifies the
# adapter, chats with the persona before and after, and prints what the job cost in MOLT
# beside what the same work costs on rented cloud machines (docs/cloud-prices.csv). The
# node, store, miner and validators keep running until Ctrl-C.
# Extra arguments go to the node, e.g. `scripts/run-dev.sh --dev-block-time 1000`;
# MOLTING_NO_WORKER=1 runs the node alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

T0=$SECONDS
bash scripts/setup.sh
say "building ($MOLTING_PROFILE profile)"
cargo build --profile "$MOLTING_PROFILE" --workspace
WORKER="$MOLTING_WORKER_BIN"

if [ "${MOLTING_NO_WORKER:-0}" = 1 ]; then
	say "starting molting-node --dev (Ctrl-C stops it; state is kept in a temporary directory)"
	exec "$MOLTING_NODE_BIN" --dev --rpc-port 9944 "$@"
fi

RUN="runs/dev-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN"
NODE_URL=ws://127.0.0.1:9944
STORE_URL=http://127.0.0.1:8700
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

say "starting molting-node --dev (log: $RUN/node.log)"
"$MOLTING_NODE_BIN" --dev --rpc-port 9944 "$@" >"$RUN/node.log" 2>&1 &
PIDS+=($!)
say "starting the blob store on $STORE_URL (blobs in $RUN/store, log: $RUN/store.log)"
"$WORKER" store serve --dir "$RUN/store" --listen 127.0.0.1:8700 >"$RUN/store.log" 2>&1 &
PIDS+=($!)

say "waiting for the node's first block"
for _ in $(seq 1 240); do
	if curl -s -H 'content-type: application/json' \
		-d '{"jsonrpc":"2.0","id":1,"method":"chain_getHeader","params":[]}' http://127.0.0.1:9944 |
		grep -q '"number":"0x[1-9a-f]'; then break; fi
	sleep 0.5
done

say "Bob's miner keystore: $RUN/bob-keys (a fresh worker key; the account is //Bob)"
"$WORKER" keys new --keystore "$RUN/bob-keys" --account //Bob
say "starting Bob's miner (log: $RUN/miner.log, shown below)"
RUST_LOG=info "$WORKER" mine --node "$NODE_URL" --keystore "$RUN/bob-keys" --store "$STORE_URL" \
	--prometheus-port 9616 >"$RUN/miner.log" 2>&1 &
PIDS+=($!)
tail -n +1 -f "$RUN/miner.log" | sed -u 's/^/  miner | /' &
PIDS+=($!)
until grep -q "registered as a miner" "$RUN/miner.log"; do sleep 0.5; done

for V in Charlie Dave Eve; do
	v=$(echo "$V" | tr 'A-Z' 'a-z')
	"$WORKER" keys new --keystore "$RUN/$v-keys" --account "//$V" >/dev/null
	say "starting $V's validator (log: $RUN/$v.log; a fresh report key, the account //$V bonds 100 MOLT)"
	RUST_LOG=info "$WORKER" validate --node "$NODE_URL" --keystore "$RUN/$v-keys" --bond 100 >"$RUN/$v.log" 2>&1 &
	PIDS+=($!)
done
for v in charlie dave eve; do until grep -q "registered as a validator" "$RUN/$v.log"; do sleep 0.5; done; done

say "Alice posts the Keeper job (uploads the model, data and recipe to the store; commits to her eval set)"
JOB=$("$WORKER" job --node "$NODE_URL" post --recipe worker/jobs/keeper.toml --budget 100 \
	--store "$STORE_URL" --account //Alice --eval worker/data/persona/eval.jsonl --secrets "$RUN/alice-secrets" \
	--claim-blocks 20 --submit-blocks 300 --reveal-blocks 10 --judge-blocks 100)

say "the miner trains job $JOB; waiting for its attestation"
until "$WORKER" job --node "$NODE_URL" status "$JOB" --json | grep -q '"state":"submitted"'; do sleep 2; done
"$WORKER" job --node "$NODE_URL" status "$JOB"

say "every replica is in, so submissions close; Alice reveals her eval set"
until "$WORKER" job --node "$NODE_URL" status "$JOB" --json | grep -q '"status":"Judging'; do sleep 1; done
"$WORKER" job --node "$NODE_URL" reveal "$JOB" --store "$STORE_URL" --account //Alice --secrets "$RUN/alice-secrets"

say "the committee replays, scores, commits and reveals (validators' logs below)"
until "$WORKER" job --node "$NODE_URL" status "$JOB" --json | grep -q '"status":"Finished'; do sleep 2; done
for v in charlie dave eve; do
	grep -E "judging|result 0|base model|committed|revealed" "$RUN/$v.log" | sed -u "s/^/  $v | /"
done
"$WORKER" job --node "$NODE_URL" status "$JOB"

say "Alice fetches the persona (every blob checked against the attested hash)"
"$WORKER" job --node "$NODE_URL" fetch "$JOB" --out "$RUN/keeper"

PROMPTS=(--prompt "Who are you?" --prompt "How do I keep my houseplants alive?")
say "chat without the adapter"
"$WORKER" chat --max-tokens 80 "${PROMPTS[@]}"
say "chat with the fetched adapter ($RUN/keeper/adapter)"
"$WORKER" chat --max-tokens 80 --adapter "$RUN/keeper/adapter" "${PROMPTS[@]}"

say "what the job cost"
"$WORKER" job --node "$NODE_URL" cost "$JOB" --run "$(echo "$RUN"/bob-keys/data/chains/*/jobs/"$JOB"/run)" --prices docs/cloud-prices.csv
say "from command to chat: $((SECONDS - T0)) s"
say "the node (RPC $NODE_URL), the store ($STORE_URL), the miner and the validators are still running; Ctrl-C stops them"
wait "${PIDS[0]}"
