#!/usr/bin/env bash
# What one validator's work on one result costs against the miner's training, measured in
# one run: the Keeper recipe (SmolLM2-135M, 60 steps, or STEPS) with a checkpoint every
# INTERVAL steps (default 1: S = 60 segments), then what a seat does for it: replay m = 2 segments (each a separate
# process, as each loads the model) and evaluate the base model and the adapter on the
# eval split. CPU seconds (user + system) of each process, so other load on the machine
# moves the figures little.
#
#   scripts/bench/validation-cost.sh [INTERVAL] [STEPS]
set -Eeuo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$REPO"

INTERVAL="${1:-1}"
STEPS_WANTED="${2:-}"
SEGMENTS_DRAWN=2
WORKER="$MOLTING_WORKER_BIN"
cargo build --profile "$MOLTING_PROFILE" -p molting-worker --bin molt-worker
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time; Debian: apt install time)" >&2; exit 1; }
bash scripts/fetch-models.sh >/dev/null

DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
# A failing step shows what it said before the directory goes.
trap 'echo "a step failed; its output:" >&2; cat "$DIR/log" >&2' ERR
# The recipe, with absolute data paths and the chosen checkpoint interval.
sed -e "s|\"\.\./data/|\"$REPO/worker/data/|" -e "s|^checkpoint_every = .*|checkpoint_every = $INTERVAL|" \
	worker/jobs/keeper.toml >"$DIR/recipe.toml"
[ -z "$STEPS_WANTED" ] || sed -i "s|^steps = .*|steps = $STEPS_WANTED|" "$DIR/recipe.toml"
STEPS=$(sed -n 's/^steps = //p' "$DIR/recipe.toml")
S=$(((STEPS + INTERVAL - 1) / INTERVAL)) # as the chain counts segments

# CPU seconds of a command (its output to $DIR/log).
cpu() {
	/usr/bin/time -f "%U %S" -o "$DIR/time" "$@" >>"$DIR/log" 2>&1
	awk '{printf "%.1f", $1 + $2}' "$DIR/time"
}

say "training $STEPS steps, a checkpoint every $INTERVAL (S = $S segments)"
TRAIN=$(cpu "$WORKER" train --spec "$DIR/recipe.toml" --out "$DIR/run")
# Two distinct segments, as the dev runtime draws (SegmentsPerResult = 2): the first and
# the middle one (every step costs the same).
REPLAY=0
for from in 0 $((S / 2)); do
	say "replaying segment $from (steps $((from * INTERVAL + 1))..$(((from + 1) * INTERVAL)))"
	t=$(cpu "$WORKER" replay "$DIR/run" --from "$from")
	REPLAY=$(awk -v a="$REPLAY" -v b="$t" 'BEGIN { printf "%.1f", a + b }')
done
say "evaluating the base model and the adapter on the eval split"
EVAL=$(cpu "$WORKER" eval --spec "$DIR/recipe.toml" --adapter "$DIR/run/adapter")

EVAL_N=$(wc -l <worker/data/persona/eval.jsonl)
TRAIN_N=$(wc -l <worker/data/persona/train.jsonl)
echo
printf '%-44s %10s %9s\n' "per validator and result (CPU s)" "seconds" "of train"
printf '%-44s %10s %9s\n' "miner: train $STEPS steps" "$TRAIN" "100 %"
awk -v t="$TRAIN" -v r="$REPLAY" -v e="$EVAL" -v m="$SEGMENTS_DRAWN" -v i="$INTERVAL" -v n="$EVAL_N" '
	BEGIN {
		printf "%-44s %10.1f %8.1f %%\n", "replay " m " segments of " i " step(s)", r, 100 * r / t
		printf "%-44s %10.1f %8.1f %%\n", "eval base + adapter, " n " conversations", e, 100 * e / t
		printf "%-44s %10.1f %8.1f %%\n", "validator total", r + e, 100 * (r + e) / t
	}'
echo "(train set $TRAIN_N conversations; the recipe's replay share is m / S = $SEGMENTS_DRAWN / $S before model loads)"
