#!/usr/bin/env bash
# The test command: sets up the machine (idempotent), builds the workspace, runs every
# test (Rust unit and end-to-end tests against the real node, then the @polkadot/api
# tests), and prints how long each stage took.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

declare -a STAGES=()
stage() {
	local name="$1"; shift
	say "stage: $name"
	local t0=$SECONDS
	"$@"
	STAGES+=("$(printf '%-12s %5ds' "$name" $((SECONDS - t0)))")
}
report() {
	say "stage times:"
	for s in "${STAGES[@]}"; do echo "  $s"; done
}
trap report EXIT

# No polkadot-sdk crate may be in the lock file twice: two release lines in one build fail
# in confusing ways.
check_one_sdk_line() {
	local dups
	dups=$(awk '/^name = /{n=$3} /^version = /{print n}' Cargo.lock | sort | uniq -d |
		grep -E '^"(sp-|sc-|frame-|pallet-|cumulus-|polkadot-|staging-|substrate-|xcm|parachains-|subxt)' || true)
	if [ -n "$dups" ]; then
		echo "polkadot-sdk crates in two versions in Cargo.lock:" >&2
		echo "$dups" >&2
		return 1
	fi
	echo "one version of every polkadot-sdk crate"
}

stage setup bash scripts/setup.sh
stage deps check_one_sdk_line
# `--workspace` everywhere, so that building and testing resolve the same features and
# share one build of the node.
stage build cargo build --profile "$MOLTING_PROFILE" --workspace
# The CUDA kernels must compile here (NVRTC from step 6 of the setup), not be skipped.
export MOLTING_REQUIRE_NVRTC=1
stage rust-tests cargo test --profile "$MOLTING_PROFILE" --workspace
# The pallets' benchmarks, run once each on the mock runtimes, so they cannot rot between
# weight measurements (`scripts/bench-weights.sh` runs them in the real runtime).
stage benchmarks cargo test --profile "$MOLTING_PROFILE" -p pallet-jobs -p pallet-contribution \
	--features pallet-jobs/runtime-benchmarks,pallet-contribution/runtime-benchmarks benchmarking
stage js-tests bash -c 'cd tests/js && npm test'
# llama.cpp itself loads the worker's GGUF LoRA (trains a short job first: about a minute).
stage llamacpp bash -c 'cd tests/llamacpp && npm test'
