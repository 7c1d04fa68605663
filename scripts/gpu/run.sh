#!/usr/bin/env bash
# On a GPU machine, the binaries scripts/gpu/prepare.sh left in .gpu/: the kernels against
# the CPU (gpu), the CUDA backend as the engine runs it (backend: a step's loss and
# gradients, generation, a run twice to one hash and resumed, long rows, bf16), the NVRTC
# compile tests, then the persona demo where SmolLM2 is in the model cache. Finds the
# machine's own CUDA 13 libnvrtc and libcublas. Output also in $OUT/gpu-check.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
lib() { find / -xdev \( -name "$1" -o -name "$1.*" \) -print 2>/dev/null | head -1; }
nvrtc=$(lib libnvrtc.so.13)
cublas=$(lib libcublas.so.13)
echo "libnvrtc: ${nvrtc:-none}; libcublas: ${cublas:-none}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
export MOLTING_NVRTC_DIR="$(dirname "${nvrtc:-/nonexistent/x}")"
export LD_LIBRARY_PATH="$(dirname "${cublas:-/nonexistent/x}"):${LD_LIBRARY_PATH:-}"
export MOLTING_REQUIRE_NVRTC=1
log="${OUT:-/tmp}/gpu-check.log"
: >"$log"
rc=0
for t in molting_cuda nvrtc gpu backend; do
	echo "== $t" | tee -a "$log"
	".gpu/$t" --nocapture --test-threads=1 2>&1 | tee -a "$log" || rc=1
done
echo "== persona demo (ignored by default)" | tee -a "$log"
.gpu/backend --ignored --nocapture the_persona_demo 2>&1 | tee -a "$log" || rc=1
# On a machine with a GPU nothing may skip (but the demo, where SmolLM2 is not here).
if nvidia-smi -L >/dev/null 2>&1 && grep "SKIPPED" "$log" | grep -qv "scripts/fetch-models.sh"; then
	echo "gpu-check: a GPU is here, yet tests skipped:" >&2
	grep "SKIPPED" "$log" | grep -v "scripts/fetch-models.sh" | sort -u >&2
	rc=1
fi
exit $rc
