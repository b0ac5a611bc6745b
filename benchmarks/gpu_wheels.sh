#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh, which installs them offline on a GPU machine whose Python already has torch,
# torchvision, numpy, opencv, Pillow, pyyaml, requests, scikit-image, scipy, tensorboard and tqdm, but no basicsr and no
# network. Run here (with network), then carry .gpu_wheels/ (git-ignored) with the tree:
#
#     make gpu-wheels                          # = bash benchmarks/gpu_wheels.sh
#     PYTHON=path/to/python GPU_PY=3.12 bash benchmarks/gpu_wheels.sh
#
# PYTHON: the interpreter that builds basicsr (it needs torch: basicsr's setup.py imports it; default .venv/bin/python).
# GPU_PY: the GPU machine's Python version, for the one compiled wheel (lmdb); default 3.12. GPU_WHEELS: output folder.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=${PYTHON:-.venv/bin/python}
WHEELS=${GPU_WHEELS:-.gpu_wheels}
GPU_PY=${GPU_PY:-3.12}
LIMIT_MIB=64  # what may travel with the working tree in all

# basicsr's requirements that such an image lacks. addict, future, lmdb and yapf are not imported by
# `import basicsr.archs.basicvsr_arch` (nor by basicsr's __init__), but they are basicsr's declared requirements and
# cost little; yapf needs platformdirs. Versions: the ones this project's environment runs.
DEPS=(addict==2.4.0 future==1.0.0 lmdb==3.0.0 yapf==0.43.0 platformdirs==4.14.9)

if ! "$PY" -c 'import torch' 2> /dev/null; then
    echo "$PY cannot import torch (basicsr's setup.py needs it): set PYTHON" >&2
    exit 1
fi
mkdir -p "$WHEELS"
rm -f "$WHEELS"/*.whl "$WHEELS"/MANIFEST.txt

# basicsr 1.4.2 is an sdist. Built without BASICSR_EXT its wheel is pure Python (no compiled ops; BasicVSR needs none).
"$PY" -m pip wheel --no-deps --no-build-isolation --no-cache-dir -w "$WHEELS" basicsr==1.4.2

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "$GPU_PY" --implementation cp \
    "${platforms[@]}" -d "$WHEELS" "${DEPS[@]}"

(cd "$WHEELS" && sha256sum -- *.whl > MANIFEST.txt)
total=$(du -cb "$WHEELS"/*.whl | tail -1 | cut -f1)
echo "$(ls "$WHEELS"/*.whl | wc -l) wheels, $((total / 1024)) KiB in $WHEELS:"
ls -1 "$WHEELS"/*.whl
if (( total > LIMIT_MIB * 1024 * 1024 )); then
    echo "the wheels exceed ${LIMIT_MIB} MiB: they would not travel with the tree" >&2
    exit 1
fi
