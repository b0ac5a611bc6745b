#!/usr/bin/env bash
# One call on a GPU machine measures dense vs pruned BasicVSR at REDS size in every inference mode and writes it all
# under $OUT: the machine needs only a Python with torch (CUDA), torchvision and numpy (and basicsr's other
# requirements but addict / future / lmdb / yapf), no network: basicsr comes from the wheels in .gpu_wheels/, made
# beforehand on a machine with network by `make gpu-wheels` and carried with the working tree.
#
#     OUT=/an/empty/folder bash benchmarks/gpu_check.sh              # from the repository root; sized for < 8 min
#     GPU_CHECK_DEVICE=cpu OUT=/tmp/check bash benchmarks/gpu_check.sh   # the same path on CPU, tiny sizes, seconds
#
# Files under $OUT (7):
#   gpu_check.log    everything this script printed, install and preflight included
#   env.txt          Python, torch, CUDA, cuDNN, GPU, basicsr / ssl_plugin import, compat shims
#   nvidia-smi.txt   nvidia-smi and its query of clocks / power / memory
#   speed_cuda.log   benchmarks/speed.py's output (speed_cpu.* with GPU_CHECK_DEVICE=cpu)
#   speed_cuda.json  its rows, skipped modes with reasons and the two targets; rewritten after each group of runs
#   pytest_cuda.log  tests/core/test_engine_inference.py here (its CUDA graph test runs on a GPU), if time is left
#   summary.txt      the table and the verdict on the targets (rewritten with the JSON)
#
# Time: the speed run gets GPU_CHECK_BUDGET_S seconds (default 320: it starts no group of runs that would not fit, the
# most important first: ratio 0.5 in eager and the likely fastest modes) and is interrupted (SIGINT, then KILL) 50 s
# after that; whatever it measured is in the JSON already. Everything else takes well under a minute.
#
# Settings (environment): OUT (required); GPU_CHECK_DEVICE (cuda); GPU_CHECK_PYTHON (python3); GPU_CHECK_BUDGET_S;
# GPU_CHECK_SPEED_ARGS (extra speed.py arguments, they win over the defaults); GPU_CHECK_INSTALL (auto: install the
# wheels when basicsr is not importable; always; never); GPU_CHECK_WHEELS (.gpu_wheels); GPU_CHECK_PYTEST (1 on cuda,
# 0 on cpu); GPU_CHECK_COMMIT (recorded in env.txt when the tree has no .git).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
: "${OUT:?set OUT to an empty folder for the results}"
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${GPU_CHECK_PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.gpu_wheels}
INSTALL=${GPU_CHECK_INSTALL:-auto}
TOTAL_S=470  # the whole script stays inside 8 minutes
if [[ $DEVICE == cpu ]]; then
    BUDGET=${GPU_CHECK_BUDGET_S:-60}
    PYTEST=${GPU_CHECK_PYTEST:-0}
    TAG=cpu
    # Tiny network and clip: the same code path in seconds, not a measurement.
    DEFAULT_ARGS=(--size 40 40 --frames 2 --num-feat 8 --num-block 1 --ratios 0.5 --repeats 2 --warmup 0 --threads 1
                  --modes eager channels_last+fold graph)
else
    BUDGET=${GPU_CHECK_BUDGET_S:-320}
    PYTEST=${GPU_CHECK_PYTEST:-1}
    TAG=cuda
    # REDS-size LR clips of 15 frames, 64 channels x 30 blocks (the paper's BasicVSR); 6 timed rounds after warm-up.
    DEFAULT_ARGS=(--size 180 320 --frames 15 --ratios 0.5 0.3 0.7 --repeats 6 --warmup 2)
fi
read -r -a EXTRA_ARGS <<< "${GPU_CHECK_SPEED_ARGS:-}"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

step() { echo "== [$(date -u +%H:%M:%S), ${SECONDS} s] $*"; }
fail() { echo "GPU CHECK FAILED: $*"; exit 1; }

step "gpu_check: device $DEVICE, python $(command -v "$PY" || echo "$PY (not found)"), OUT $OUT"
command -v "$PY" > /dev/null || fail "no Python '$PY' (set GPU_CHECK_PYTHON)"

# -- install basicsr (offline) --------------------------------------------------------------------------------------
SITE=""
has_basicsr() { "$PY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("basicsr") is None)'; }
if [[ $INSTALL == always ]] || { [[ $INSTALL == auto ]] && ! has_basicsr; }; then
    shopt -s nullglob
    wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    (( ${#wheels[@]} )) || fail "basicsr is not importable and $WHEELS holds no wheels: run 'make gpu-wheels' on a \
machine with network and carry .gpu_wheels with the tree"
    if [[ -f $WHEELS/MANIFEST.txt ]] && command -v sha256sum > /dev/null; then
        (cd "$WHEELS" && sha256sum --quiet -c MANIFEST.txt) || fail "wheels in $WHEELS do not match MANIFEST.txt"
    fi
    SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_site.XXXXXX")
    step "installing ${#wheels[@]} wheels into $SITE (no index, no deps)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target "$SITE" "${wheels[@]}" || fail "pip install of the wheels failed"
elif [[ $INSTALL != auto && $INSTALL != never ]]; then
    fail "GPU_CHECK_INSTALL must be auto, always or never, got '$INSTALL'"
else
    step "basicsr already importable: nothing to install"
fi
export PYTHONPATH="$REPO${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"

# -- preflight: imports, CUDA -----------------------------------------------------------------------------------------
# basicsr 1.4.2's arch_util imports distutils, which Python 3.12 dropped: setuptools provides it (through its .pth at
# start-up, or when imported). If only an explicit import works, every Python below imports setuptools first.
PRELOAD=""
if ! "$PY" -c 'import distutils.version' 2> /dev/null; then
    if "$PY" -c 'import setuptools, distutils.version' 2> /dev/null; then
        PRELOAD="import setuptools; "
        echo "distutils only after 'import setuptools': preloading it"
    else
        echo "warning: no distutils (Python >= 3.12 without setuptools): basicsr's arch_util will not import"
    fi
fi
step "preflight"
GPU_CHECK_COMMIT=${GPU_CHECK_COMMIT:-$(git -C "$REPO" rev-parse HEAD 2> /dev/null || echo unknown)} \
"$PY" - "$DEVICE" > "$OUT/env.txt" 2>&1 <<EOF
${PRELOAD}
import os, platform, sys
device = sys.argv[1]
print('commit', os.environ.get('GPU_CHECK_COMMIT'))
print('python', sys.version.replace('\n', ' '), sys.executable)
print('platform', platform.platform(), 'cpus', os.cpu_count())
import numpy, torch, torchvision
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__,
      'numpy', numpy.__version__)
print('cudnn', torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
      'allow_tf32 (cudnn)', torch.backends.cudnn.allow_tf32, 'matmul precision', torch.get_float32_matmul_precision())
import ssl_plugin
import basicsr
import basicsr.archs.basicvsr_arch
from basicsr.utils.registry import ARCH_REGISTRY
print('ssl_plugin', ssl_plugin.__file__, 'compat shims', sorted(ssl_plugin.compat.applied))
print('basicsr', getattr(basicsr, '__version__', '?'), basicsr.__file__, 'BasicVSR' in ARCH_REGISTRY)
import distutils
print('distutils', distutils.__file__)
try:
    import triton
    print('triton', triton.__version__)
except ImportError:
    print('triton not installed (torch.compile on CUDA needs it)')
if device.startswith('cuda'):
    if not torch.cuda.is_available():
        sys.exit('torch.cuda.is_available() is False')
    print('gpu', torch.cuda.get_device_name(), 'capability', torch.cuda.get_device_capability(),
          'memory GiB', round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    x = torch.randn(256, 256, device=device)
    print('cuda matmul', bool(torch.isfinite(x @ x).all()))
EOF
rc=$?
cat "$OUT/env.txt"
(( rc == 0 )) || fail "preflight (see env.txt)"

if command -v nvidia-smi > /dev/null; then
    { nvidia-smi; echo; nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm,clocks.sm,\
power.limit,temperature.gpu --format=csv; } > "$OUT/nvidia-smi.txt" 2>&1
else
    echo "nvidia-smi not found" > "$OUT/nvidia-smi.txt"
fi

# -- the measurement --------------------------------------------------------------------------------------------------
JSON="$OUT/speed_$TAG.json"
step "speed.py --device $DEVICE, budget ${BUDGET} s"
timeout -s INT -k 30 $((BUDGET + 50)) "$PY" -c "${PRELOAD}import runpy, sys; sys.argv[0] = 'benchmarks/speed.py'; \
runpy.run_path('benchmarks/speed.py', run_name='__main__')" --device "$DEVICE" "${DEFAULT_ARGS[@]}" \
    --budget-s "$BUDGET" --json "$JSON" --summary "$OUT/summary.txt" "${EXTRA_ARGS[@]}" 2>&1 \
    | tee "$OUT/speed_$TAG.log"
speed_rc=${PIPESTATUS[0]}
step "speed.py exit status $speed_rc"

if [[ $PYTEST == 1 ]] && (( SECONDS + 80 < TOTAL_S )); then
    step "pytest tests/core/test_engine_inference.py"
    timeout -k 10 $((TOTAL_S - SECONDS - 20)) "$PY" -m pytest -q -p no:cacheprovider \
        tests/core/test_engine_inference.py > "$OUT/pytest_$TAG.log" 2>&1
    echo "pytest exit status $? ($(tail -1 "$OUT/pytest_$TAG.log"))"
elif [[ $PYTEST == 1 ]]; then
    echo "no time left for pytest" > "$OUT/pytest_$TAG.log"
fi

[[ -f $JSON ]] || fail "speed.py wrote no JSON (exit status $speed_rc; see speed_$TAG.log)"
echo "-- summary.txt"
cat "$OUT/summary.txt"
step "gpu_check done in ${SECONDS} s"
[[ -n $SITE ]] && rm -rf "$SITE"
exit 0
