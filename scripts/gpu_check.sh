#!/usr/bin/env bash
# GPU check, for a session that holds a GPU: one call, under 8 minutes, nothing downloaded.
#
#   bash scripts/gpu_check.sh        # from any directory
#
# 1. makes this working tree importable without installing it (a temporary directory with
#    numbarnn/ linked file by file and numbarnn/kernels -> kernels/, put on PYTHONPATH;
#    fallback: pip install --no-deps --no-index --target into that directory);
# 2. checks that numbarnn's CUDA backend sees a real device (else exits 10 with the reason);
# 3. runs the real-GPU tests: NUMBA_ENABLE_CUDASIM=0 pytest -m realgpu tests/;
# 4. runs `python -m numbarnn bench` for numbarnn CPU vs numbarnn CUDA vs PyTorch CPU and
#    CUDA (cuDNN), all sizes, all cells, the machine's cores, cold and warm compile latency.
#
# Logs and JSON go to $OUT when set, else ./gpu_check_out. The benchmark JSON is rewritten
# after every group, so a run cut short by its time limit keeps what it measured.
#
# Exit status: 0 all passed; bit 1: the real-GPU tests failed or could not run; bit 2: the
# benchmark failed or timed out (so 3 = both); 10: no usable GPU (nothing run);
# 11: this tree could not be made importable.
#
# Time limits (seconds; override through the environment): TESTS_TIMEOUT=200,
# BENCH_TIMEOUT=250. Extra benchmark options: BENCH_ARGS (e.g. "--cells lstm").
# GPU_CHECK_DRY_RUN=1 goes on without a GPU (to test this script on a CPU-only machine).

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTDIR=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG="$OUTDIR/gpu_check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1

TESTS_TIMEOUT=${TESTS_TIMEOUT:-200}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-250}
START=$SECONDS

say() { printf '\n=== %s (t=%ss)\n' "$*" "$((SECONDS - START))"; }

finish() {
    local status=$1
    say "done: exit status $status"
    echo "files in $OUTDIR:"
    ls -l "$OUTDIR"
    # The log is complete only after tee has drained; give it a moment.
    sleep 1
    exit "$status"
}

# ----------------------------------------------------------------------------- python
PY=""
for candidate in ${PYTHON:-} python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import numba, numpy" 2>/dev/null; then
        PY=$(command -v "$candidate")
        break
    fi
done
if [ -z "$PY" ]; then
    echo "gpu_check: no Python with numba and numpy found (tried: ${PYTHON:-} python3 python)"
    finish 11
fi

say "machine"
date -u '+%Y-%m-%d %H:%M:%S UTC'
echo "repo: $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi 2>&1 | tee "$OUTDIR/nvidia-smi.txt" | head -20
else
    echo "nvidia-smi: not found"
fi
"$PY" - <<'EOF'
import importlib
for name in ("numpy", "scipy", "numba", "numba_cuda", "cupy", "torch", "pytest", "threadpoolctl"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:<14} {getattr(module, '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name:<14} -- ({type(exc).__name__}: {exc})")
EOF

# ----------------------------------------------------------------------------- import
# Python commands run from a scratch directory: run from $REPO, `python -m` would put the
# repository root first on sys.path, where numbarnn/ has no kernels/ subpackage.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/numbarnn-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
say "making $REPO importable from $WORK"
mkdir -p "$WORK/site/numbarnn"
for entry in "$REPO"/numbarnn/*; do
    [ "$(basename "$entry")" = "__pycache__" ] && continue
    ln -s "$entry" "$WORK/site/numbarnn/$(basename "$entry")"
done
ln -s "$REPO/kernels" "$WORK/site/numbarnn/kernels"
export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_ENABLE_CUDASIM=0

check_import() {
    (cd "$WORK" && "$PY" - "$REPO" <<'EOF'
import os, sys
import numbarnn
from numbarnn.kernels import cpu
repo = os.path.realpath(sys.argv[1])
for module in (numbarnn, cpu):
    path = os.path.realpath(module.__file__)
    print(f"  {module.__name__}: {module.__file__} -> {path}")
    if not path.startswith(repo + os.sep):
        sys.exit(f"{module.__name__} comes from {path}, not from {repo}")
EOF
    )
}

if ! check_import; then
    echo "symlinked layout failed; trying pip install --no-deps --no-index --target"
    rm -rf "$WORK/site"
    if ! (cd "$WORK" && "$PY" -m pip install -q --no-deps --no-index --no-build-isolation \
            --target "$WORK/site" "$REPO") || ! check_import; then
        echo "gpu_check: cannot import numbarnn from $REPO"
        finish 11
    fi
fi

# ----------------------------------------------------------------------------- GPU?
say "CUDA"
(cd "$WORK" && "$PY" - <<'EOF'
import numbarnn
usable, reason = numbarnn.cuda_status()
print(f"  numbarnn.cuda_status(): usable={usable}, reason={reason!r}")
try:
    import torch
    print(f"  torch.cuda.is_available(): {torch.cuda.is_available()}", end="")
    print(f" ({torch.cuda.get_device_name(0)}, cuDNN {torch.backends.cudnn.version()})"
          if torch.cuda.is_available() else "")
except ImportError:
    print("  torch: not installed")
raise SystemExit(0 if usable and reason == "device" else 1)
EOF
)
gpu_rc=$?
if [ $gpu_rc -ne 0 ] && [ "${GPU_CHECK_DRY_RUN:-0}" = 1 ]; then
    echo "gpu_check: no usable GPU; GPU_CHECK_DRY_RUN=1: going on anyway (testing this script)"
elif [ $gpu_rc -ne 0 ]; then
    echo
    echo "gpu_check: NO USABLE GPU here -- numbarnn's CUDA backend cannot run (reason above)."
    echo "gpu_check: nothing was tested or timed. Run this script on the machine with the GPU."
    finish 10
fi

STATUS=0

# ----------------------------------------------------------------------------- tests
say "real-GPU tests (NUMBA_ENABLE_CUDASIM=0 pytest -m realgpu, limit ${TESTS_TIMEOUT}s)"
if (cd "$WORK" && "$PY" -c "import pytest" 2>/dev/null); then
    (cd "$WORK" && timeout --kill-after=10 "$TESTS_TIMEOUT" "$PY" -m pytest \
        -c "$REPO/pyproject.toml" --rootdir "$REPO" -p no:cacheprovider \
        -m realgpu -q -rsfE --junitxml="$OUTDIR/realgpu-junit.xml" "$REPO/tests" \
        2>&1 | tee "$OUTDIR/realgpu-tests.log")
    rc=$?
    case $rc in
        0) echo "real-GPU tests: passed" ;;
        124|137) echo "real-GPU tests: TIMED OUT after ${TESTS_TIMEOUT}s"; STATUS=$((STATUS | 1)) ;;
        *) echo "real-GPU tests: FAILED (pytest exit status $rc)"; STATUS=$((STATUS | 1)) ;;
    esac
else
    echo "real-GPU tests: NOT RUN, pytest is not installed (the benchmark still compares"
    echo "numbarnn-cuda's forward output with PyTorch's: see max_abs_diff in bench.json)"
    STATUS=$((STATUS | 1))
fi

# ----------------------------------------------------------------------------- benchmark
NCORES=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")
say "benchmark: numbarnn cpu/cuda vs torch cpu/cuda, $NCORES threads (limit ${BENCH_TIMEOUT}s)"
# shellcheck disable=SC2086  # BENCH_ARGS is split on purpose
(cd "$WORK" && timeout --kill-after=10 "$BENCH_TIMEOUT" "$PY" -m numbarnn bench \
    --backends cpu cuda --threads "$NCORES" --repeat 5 --compile-latency cold \
    --json "$OUTDIR/bench.json" --plot "$OUTDIR/bench.png" ${BENCH_ARGS:-} \
    2>&1 | tee "$OUTDIR/bench.log")
rc=$?
case $rc in
    0) echo "benchmark: done" ;;
    124|137) echo "benchmark: TIMED OUT after ${BENCH_TIMEOUT}s (bench.json holds the groups that finished)"
             STATUS=$((STATUS | 2)) ;;
    *) echo "benchmark: FAILED (exit status $rc)"; STATUS=$((STATUS | 2)) ;;
esac

finish "$STATUS"
