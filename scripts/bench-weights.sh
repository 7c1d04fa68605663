#!/usr/bin/env bash
# Generates pallets/<name>/src/weights.rs from the pallet's frame-benchmarking benchmarks,
# run by `molting-node benchmark pallet` on a runtime built with `runtime-benchmarks`.
#
#   scripts/bench-weights.sh [pallet_jobs ...]     (default: every Molting pallet)
#
# The wasm builder writes every feature set of the runtime to one place, so the benchmark
# runtime's wasm is copied away at once; the next normal build puts the normal one back.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

PALLETS=("$@")
[ ${#PALLETS[@]} -gt 0 ] || PALLETS=(pallet_jobs pallet_contribution)

say "building molting-node and the runtime with runtime-benchmarks"
cargo build --profile "$MOLTING_PROFILE" --workspace
cargo build --profile "$MOLTING_PROFILE" -p molting-runtime --features runtime-benchmarks
WBUILD="$CARGO_TARGET_DIR/$PROFILE_DIR/wbuild/molting-runtime"
WASM="$(mktemp -d)/molting_runtime_benchmarks.wasm"
if [ -f "$WBUILD/molting_runtime.compact.compressed.wasm" ]; then
	cp "$WBUILD/molting_runtime.compact.compressed.wasm" "$WASM"
else
	cp "$WBUILD/molting_runtime.wasm" "$WASM"
fi

for pallet in "${PALLETS[@]}"; do
	dir="pallets/${pallet#pallet_}"
	say "benchmarking $pallet -> $dir/src/weights.rs"
	"$MOLTING_NODE_BIN" benchmark pallet \
		--runtime "$WASM" --genesis-builder runtime --genesis-builder-preset development \
		--pallet "$pallet" --extrinsic '*' \
		--steps "${BENCH_STEPS:-20}" --repeat "${BENCH_REPEAT:-10}" \
		--template scripts/bench/pallet-weights.hbs --output "$dir/src/weights.rs"
done
rm -f "$WASM"
