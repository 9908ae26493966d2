#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (H100/H200), run from a copy
# of the working tree, with no network and no .venv: it uses the machine's
# python3 (with numba, numba-cuda and optionally torch/cupy installed).
#
#   scripts/gpu_check.sh OUTDIR
#
# Writes OUTDIR/versions.txt, OUTDIR/tests.txt, OUTDIR/gpu_bench.json,
# OUTDIR/gpu_bench.md and OUTDIR/summary.txt.  One failing step does not stop
# the others; the exit status is 0 when every step succeeded, 1 otherwise.
# Budget: tests <= 130 s, benchmark <= 140 s (under 5 minutes in all, worst case).
# PTX is compiled for sm_90 only here; make test compiles sm_80 and sm_90.
set -u
OUT="${1:?usage: scripts/gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM
status=0
summary="$OUT/summary.txt"
: > "$summary"

echo "== versions"
"$PY" - > "$OUT/versions.txt" 2>&1 <<'PYEOF'
import platform, sys
print("python", platform.python_version(), sys.executable)
for mod in ("numpy", "numba", "torch", "cupy", "pytest", "hypothesis"):
    try:
        m = __import__(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as exc:
        print(mod, "absent:", type(exc).__name__)
try:
    from importlib.metadata import version
    print("numba-cuda", version("numba-cuda"))
except Exception as exc:
    print("numba-cuda", "absent:", exc)
try:
    from numba import cuda
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    print("gpu", name, "cc", dev.compute_capability)
except Exception as exc:
    print("gpu unavailable:", exc)
try:
    import torch
    print("torch cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception:
    pass
PYEOF
cat "$OUT/versions.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 2

echo "== tests"
if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 130 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -rfEs \
        tests/test_gpu_real.py tests/test_gpu_ptx.py -k "not sm_80" > "$OUT/tests.txt" 2>&1
    rc=$?
    tail -n 40 "$OUT/tests.txt"
    echo "tests: exit $rc" | tee -a "$summary"
    [ "$rc" -eq 0 ] || status=1
else
    echo "tests: skipped, pytest is not installed for $PY" | tee -a "$summary"
    status=1
fi

echo "== benchmark"
timeout 140 "$PY" -m numba_ln.gpu.bench --out "$OUT" --time-limit 90 > "$OUT/bench.log" 2>&1
rc=$?
tail -n 25 "$OUT/bench.log"
echo "bench: exit $rc" | tee -a "$summary"
[ "$rc" -eq 0 ] || status=1
if [ -f "$OUT/gpu_bench.json" ]; then
    n_err=$(grep -c '"error"' "$OUT/gpu_bench.json" || true)
    echo "bench: $n_err result(s) with an error" | tee -a "$summary"
fi
exit "$status"
