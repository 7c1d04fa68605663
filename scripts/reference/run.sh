#!/usr/bin/env bash
# Runs the Python reference scripts in their own virtual environment (PyTorch,
# transformers, PEFT, gguf), made on first use under ~/.cache/molting/py. CI never needs it:
# what these scripts produce is committed (fixtures) or quoted in the README.
#
#   run.sh golden            regenerate worker/engine/tests/fixtures/smollm2_golden.json
#   run.sh peft RUN_DIR      check a run's adapter in PEFT against the worker's eval loss
#   run.sh bench ARGS...     scripts/bench/torch_reference.py ARGS...
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
VENV="${MOLTING_PY:-$HOME/.cache/molting/py}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch, transformers, peft, gguf" 2>/dev/null; then
	say "making the Python reference environment in $VENV (torch, transformers, peft, gguf)"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install --quiet --disable-pip-version-check torch transformers peft gguf numpy safetensors
fi
"$REPO/scripts/fetch-models.sh" >/dev/null
GGUF="$MOLTING_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
cmd="${1:?usage: run.sh golden | peft RUN_DIR | bench ARGS...}"
shift
case "$cmd" in
golden) exec "$VENV/bin/python" "$REPO/scripts/reference/golden_smollm2.py" "$GGUF" ;;
peft) exec "$VENV/bin/python" "$REPO/scripts/reference/peft_eval.py" "$@" ;;
bench) exec "$VENV/bin/python" "$REPO/scripts/bench/torch_reference.py" "$GGUF" "$@" ;;
*) echo "unknown command $cmd" >&2; exit 2 ;;
esac
