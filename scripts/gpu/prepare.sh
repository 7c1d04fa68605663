#!/usr/bin/env bash
# Prepares the GPU check for a lent device machine (no Rust, no network there; at most
# 64 MiB travels): builds molting-cuda's test binaries here (x86-64), strips them into
# .gpu/ (ignored by git; name it in the device run's `carry`), with scripts/gpu/run.sh
# beside them. Then, on the device: `bash scripts/gpu/run.sh` (about a minute of GPU time;
# it finds that machine's CUDA 13 libnvrtc and libcublas itself).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$REPO"
say "building molting-cuda's tests"
cargo build --quiet --profile "$MOLTING_PROFILE" --workspace
bins=$(cargo test --profile "$MOLTING_PROFILE" -p molting-cuda --no-run --message-format=json 2>/dev/null |
	python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] != ["bin"]:
        print(m["target"]["name"], m["executable"])')
rm -rf .gpu
mkdir -p .gpu
while read -r name exe; do
	strip -o ".gpu/$name" "$exe"
done <<<"$bins"
du -sh .gpu/* | sed 's/^/  /'
say ".gpu/ is $(du -sh .gpu | cut -f1): carry it; on the device run: bash scripts/gpu/run.sh"
