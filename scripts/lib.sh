# Shared by the scripts: where things are. Source it, don't run it.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# One Cargo target directory outside the clone, shared by every clone, CI and the
# scripts, so builds are incremental across them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/molting/target}"
# The cargo profile the scripts build and test with (`dev` -> target/debug).
MOLTING_PROFILE="${MOLTING_PROFILE:-dev}"
if [ "$MOLTING_PROFILE" = "dev" ]; then PROFILE_DIR=debug; else PROFILE_DIR="$MOLTING_PROFILE"; fi
export MOLTING_NODE_BIN="${MOLTING_NODE_BIN:-$CARGO_TARGET_DIR/$PROFILE_DIR/molting-node}"
export MOLTING_WORKER_BIN="${MOLTING_WORKER_BIN:-$CARGO_TARGET_DIR/$PROFILE_DIR/molt-worker}"
# Where models live (scripts/fetch-models.sh fills it; the worker's tests read it).
export MOLTING_MODELS="${MOLTING_MODELS:-$HOME/.cache/molting/models}"
say() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0" .sh)" "$*"; }
# NVIDIA's runtime compiler for the CUDA kernels' compile test (scripts/fetch-nvrtc.sh).
export MOLTING_NVRTC_DIR="${MOLTING_NVRTC_DIR:-$HOME/.cache/molting/nvrtc}"
