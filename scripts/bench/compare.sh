#!/usr/bin/env bash
# The worker against PyTorch on the same LoRA training steps, in one go, on this machine:
# `molt-worker bench` and scripts/bench/torch_reference.py (fp32, and bf16 autocast) on
# SmolLM2-135M-Instruct, batch 4 x seq 256, LoRA r=16 on q,k,v,o by default. Prints a
# markdown table (tokens/s, step time, peak memory, ratio). Extra arguments (--batch,
# --seq, --rank, --steps, --warmup) go to both sides.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$REPO"
say "building molt-worker"
cargo build --quiet -p molting-worker --bin molt-worker
WORKER="$CARGO_TARGET_DIR/debug/molt-worker"
"$REPO/scripts/fetch-models.sh" >/dev/null
say "worker"
w=$("$WORKER" bench --json "$@")
say "PyTorch fp32"
t32=$("$REPO/scripts/reference/run.sh" bench --json --dtype fp32 "$@" 2>/dev/null | tail -1)
say "PyTorch bf16 autocast"
t16=$("$REPO/scripts/reference/run.sh" bench --json --dtype bf16 "$@" 2>/dev/null | tail -1)
python3 - "$w" "$t32" "$t16" <<'PY'
import json, sys
w, t32, t16 = (json.loads(a) for a in sys.argv[1:])
print(f"\nbatch {w['batch']} x seq {w['seq']}, LoRA r={w['rank']} on q,k,v,o, {w['steps']} timed steps, {w['threads']} threads\n")
print("| implementation | tokens/s | step time (s) | peak memory (MiB) | worker speed ratio |")
print("|---|---:|---:|---:|---:|")
rows = [(f"molt-worker ({w['backend']}, fp32)", w), (t32["impl"], t32), (t16["impl"] + " autocast", t16)]
for name, r in rows:
    ratio = w["tokens_per_second"] / r["tokens_per_second"]
    print(f"| {name} | {r['tokens_per_second']:.1f} | {r['step_seconds']:.2f} | {r['peak_rss_mib']:.0f} | {ratio:.2f}x |")
print(f"\nworker: {w['gflops_per_step']:.0f} GFLOP per step, {w['achieved_gflops']:.1f} GFLOP/s achieved")
PY
