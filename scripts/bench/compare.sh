#!/usr/bin/env bash
# The worker against PyTorch on the same LoRA training steps, in one go, on this machine:
# `molt-worker bench` (fp32 and bf16) on the persona demo's real batches (packed Keeper
# conversations; LoRA r=16 on q,k,v,o,gate,up,down; batch 4 x 256), then
# scripts/bench/torch_reference.py (fp32, and bf16 autocast) on exactly those batches.
# Prints a markdown table: tokens/s, trained (assistant) tokens/s, step time, peak
# memory, useful GFLOP/s and its share of the best GEMM rate each side measured here.
# Extra arguments (--spec, --steps, --warmup) go to the worker.
#
#   compare.sh --gpu [ARGS...]   the GPU path: `molt-worker --backend cuda bench` (fp32 and
#                                bf16) beside PyTorch on the same GPU, fp32 (TF32 off) and bf16
#                                autocast. Peak memory: the worker's host RSS, PyTorch's
#                                device allocation.
set -euo pipefail
gpu=0
if [ "${1:-}" = "--gpu" ]; then
	gpu=1
	shift
fi
source "$(dirname "$0")/../lib.sh"
cd "$REPO"
say "building molt-worker"
# --workspace: the features every other build here resolves (a `-p` build would rebuild much)
cargo build --quiet --workspace
WORKER="$CARGO_TARGET_DIR/debug/molt-worker"
"$REPO/scripts/fetch-models.sh" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The same four runs on either device: the worker's two classes, then PyTorch's two on the
# worker's batches.
if [ "$gpu" = 1 ]; then
	backend=(--backend cuda) device=cuda where="on the GPU" place="one GPU" memory="the worker's host RSS, PyTorch's GPU allocation"
else
	backend=() device=cpu where="" place="" memory=""
fi
say "worker fp32 $where"
w32=$("$WORKER" "${backend[@]}" bench --json --precision fp32 --batches-out "$tmp/batches.json" "$@")
say "worker bf16 $where"
w16=$("$WORKER" "${backend[@]}" bench --json --precision bf16 "$@")
say "PyTorch fp32 $where"
t32=$("$REPO/scripts/reference/run.sh" bench --batches "$tmp/batches.json" --json --dtype fp32 --device "$device" 2>/dev/null | tail -1)
say "PyTorch bf16 autocast $where"
t16=$("$REPO/scripts/reference/run.sh" bench --batches "$tmp/batches.json" --json --dtype bf16 --device "$device" 2>/dev/null | tail -1)
python3 - "$w32" "$w16" "$t32" "$t16" "$place" "$memory" <<'PY'
import json, sys
w32, w16, t32, t16 = (json.loads(a) for a in sys.argv[1:5])
place = sys.argv[5] or f"{w32['threads']} threads"
print(f"\nbatch {w32['batch']} x seq {w32['seq']} x accum {w32['grad_accum']}, LoRA r={w32['rank']} on "
      f"{','.join(w32['targets'])}, the same {w32['steps']} timed steps of Keeper data on each side (median), "
      f"{place}\n")
print("| implementation | tokens/s | trained tokens/s | step time (s) | peak memory (MiB) | useful GFLOP/s | % of best GEMM | worker fp32 / bf16 speed ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
rows = [(f"molt-worker fp32 ({w32['backend']})", w32, w32), (f"molt-worker bf16 ({w16['backend']})", w16, w16),
        (t32["impl"], t32, w32), (t16["impl"] + " autocast", t16, w16)]
for name, r, mine in rows:
    ratio = mine["tokens_per_second"] / r["tokens_per_second"]
    print(f"| {name} | {r['tokens_per_second']:.1f} | {r['trained_tokens_per_second']:.1f} | {r['step_seconds']:.2f} | "
          f"{r['peak_rss_mib']:.0f} | {r['useful_gflops_per_second']:.1f} | {100 * r['share_of_best_gemm']:.0f}% | {ratio:.2f}x |")
print(f"\nuseful work: {w32['useful_gflops_per_step']:.0f} GFLOP per step. Best GEMM rates measured in this run: "
      f"worker fp32 {w32['best_gemm_gflops']:.0f}, worker bf16 {w16['best_gemm_gflops']:.0f}, "
      f"torch.mm fp32 {t32['best_gemm_gflops']:.0f}, bf16 {t16['best_gemm_gflops']:.0f} GFLOP/s. "
      f"The ratio column is the matching worker row's tokens/s over this row's (fp32 to fp32, bf16 to bf16)."
      + (f" Peak memory: {sys.argv[6]}." if sys.argv[6] else ""))
PY
