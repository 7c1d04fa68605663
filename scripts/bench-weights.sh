#!/usr/bin/env bash
# Generates pallets/<name>/src/weights.rs from the pallet's frame-benchmarking benchmarks,
# run by `molting-node benchmark pallet` on a runtime built with `runtime-benchmarks`.
#
#   scripts/bench-weights.sh [pallet_jobs ...]     (default: every Molting pallet)
#
# The benchmark runtime is built under its own cargo profile (`bench-runtime`), so its wasm
# never replaces the one the node embeds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

PALLETS=("$@")
[ ${#PALLETS[@]} -gt 0 ] || PALLETS=(pallet_jobs)

say "building molting-node and the runtime with runtime-benchmarks"
cargo build --profile "$MOLTING_PROFILE" --workspace
cargo build --profile bench-runtime -p molting-runtime --features runtime-benchmarks
WASM="$CARGO_TARGET_DIR/bench-runtime/wbuild/molting-runtime/molting_runtime.compact.compressed.wasm"

for pallet in "${PALLETS[@]}"; do
	dir="pallets/${pallet#pallet_}"
	say "benchmarking $pallet -> $dir/src/weights.rs"
	"$MOLTING_NODE_BIN" benchmark pallet \
		--runtime "$WASM" --genesis-builder runtime --genesis-builder-preset development \
		--pallet "$pallet" --extrinsic '*' \
		--steps "${BENCH_STEPS:-20}" --repeat "${BENCH_REPEAT:-10}" \
		--template scripts/bench/pallet-weights.hbs --output "$dir/src/weights.rs"
done
