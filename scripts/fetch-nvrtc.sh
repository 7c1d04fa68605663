#!/usr/bin/env bash
# Puts NVIDIA's runtime compiler (libnvrtc, CUDA 13.5) into $MOLTING_NVRTC_DIR, so that the
# tests compile every CUDA kernel of the worker (worker/cuda) with NVRTC on machines with
# no GPU, driver or CUDA toolkit. Idempotent. The library ships in the PyPI wheel
# `nvidia-cuda-nvrtc` (a zip, 58 MB); nothing is installed, the wheel is checked by its
# SHA-256 and only its two libraries are kept.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VERSION=13.5.37
WHEEL=nvidia_cuda_nvrtc-$VERSION-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl
SHA256=86b4d68058807988b7d9af5b44917a0601e9c337f35ccd657bfb3c759ff8d8bc
DEST="$MOLTING_NVRTC_DIR"

if [ -f "$DEST/libnvrtc.so.13" ] && [ "$(cat "$DEST/VERSION" 2>/dev/null)" = "$VERSION" ]; then
	say "libnvrtc $VERSION: present ($DEST)"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say "downloading nvidia-cuda-nvrtc==$VERSION from PyPI (about 58 MB)"
if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
	--platform manylinux_2_12_x86_64 "nvidia-cuda-nvrtc==$VERSION" -d "$tmp" 2>/dev/null; then
	# No pip: find the wheel in PyPI's simple index and fetch it with curl.
	url=$(curl -fsSL "https://pypi.org/simple/nvidia-cuda-nvrtc/" | grep -o "href=\"[^\"]*$WHEEL" | head -1 | cut -d'"' -f2)
	curl -fsSL -o "$tmp/$WHEEL" "$url"
fi
if [ "$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)" != "$SHA256" ]; then
	echo "fetch-nvrtc: $WHEEL has the wrong SHA-256 (expected $SHA256)" >&2
	exit 1
fi
mkdir -p "$DEST"
python3 - "$tmp/$WHEEL" "$DEST" <<'PY'
import os, sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("libnvrtc.so.13", "libnvrtc-builtins.so.13.5"):
        with z.open("nvidia/cu13/lib/" + name) as src, open(os.path.join(sys.argv[2], name), "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
echo "$VERSION" >"$DEST/VERSION"
say "libnvrtc $VERSION: stored in $DEST"
