#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU (H100/H200), run from a copy
# of the working tree, with no network and no .venv: it uses the machine's
# python3 (with numba, numba-cuda and optionally torch/cupy installed).
#
#   scripts/gpu_check.sh OUTDIR
#
# Writes OUTDIR/versions.txt, OUTDIR/tests.txt, OUTDIR/gpu_bench.json,
# OUTDIR/gpu_bench.md and OUTDIR/summary.txt (and, with TUNE=1, the variant
# sweep of scripts/gpu_tune.py: OUTDIR/gpu_tune.json, OUTDIR/gpu_tune.md; with
# LAUNCH=1, scripts/gpu_launch_cost.py: OUTDIR/launch_cost.txt; with AB=TREE,
# scripts/gpu_ab.py of another checkout TREE (A) against this tree (B):
# OUTDIR/ab/gpu_ab.md, e.g. after `git archive 40927eb | tar -x -C ab/40927eb`
# here, with ab/ carried to the machine).
# One failing step does not stop the others; the exit status is 0 when every
# step succeeded, 1 otherwise.  TEST_K: a pytest -k expression that picks
# among the real-GPU tests; CANDIDATES=1 adds the tests of the sweep's
# candidate kernels (marked ``candidate``); TEST_STALL (90 s): a test running
# longer has its stacks dumped into tests.txt.  TESTS=0 / BENCH=0 skip those
# steps (e.g. a second device call for TUNE=1 NCU=1 alone: one call may run
# 10 minutes).
# Budget: tests <= 240 s (about 190 s on an H200 in session 9, most of it
# compiling the kernel variants; about a minute more with CANDIDATES=1; in
# session 10 a test that hung took the rest of its limit: see
# docs/gpu_bench_h200.md),
# benchmark <= 160 s (about 35 s), sweep <= TUNE_LIMIT + 50 s (170 s),
# Nsight Compute <= 120 s (under 7 minutes without the sweep and NCU, worst case).
# The PTX tests (tests/test_gpu_ptx.py) need no GPU and run in `make test`
# with the same numba-cuda; PTX=1 runs them here too (sm_90 only; about a
# minute of compiling that the device time otherwise saves).
set -u
OUT="${1:?usage: scripts/gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset NUMBA_ENABLE_CUDASIM

# Environment workaround, not part of the library: numba-cuda 0.30 calls
# numpy.row_stack, which NumPy 2.5 removed.  Where it is missing, a
# sitecustomize.py in a temporary directory (first on PYTHONPATH) puts it back
# as numpy.vstack (what row_stack always was) for this script's processes.
if ! "${PYTHON:-python3}" -c "import numpy; numpy.row_stack" 2>/dev/null; then
    SHIM="$(mktemp -d)"
    cat > "$SHIM/sitecustomize.py" <<'PYEOF'
import numpy
if not hasattr(numpy, "row_stack"):
    numpy.row_stack = numpy.vstack
PYEOF
    export PYTHONPATH="$SHIM:$PYTHONPATH"
    echo "numpy.row_stack missing: shim in $SHIM (environment workaround)"
fi
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

if [ "${TESTS:-1}" = "0" ]; then
    echo "tests: skipped (TESTS=0)" | tee -a "$summary"
elif "$PY" -c "import pytest" 2>/dev/null; then
    echo "== tests"
    TEST_FILES="tests/test_gpu_real.py"
    [ "${PTX:-0}" = "1" ] && TEST_FILES="$TEST_FILES tests/test_gpu_ptx.py"
    # the sweep candidates' own tests (compiling them takes a minute) with CANDIDATES=1
    MARK="not candidate"
    [ "${CANDIDATES:-0}" = "1" ] && MARK=""
    # shellcheck disable=SC2086
    # -v: a test a line, so that a run cut by the timeout shows where it stopped;
    # faulthandler_timeout: a test still running after TEST_STALL seconds has
    # every thread's stack written to tests.txt (a kernel that never returns)
    timeout "${TEST_TIMEOUT:-240}" "$PY" -m pytest -v -p no:cacheprovider -o addopts="" -rfEs \
        -o faulthandler_timeout="${TEST_STALL:-90}" \
        $TEST_FILES -m "$MARK" -k "not sm_80${TEST_K:+ and ($TEST_K)}" > "$OUT/tests.txt" 2>&1
    rc=$?
    tail -n 40 "$OUT/tests.txt"
    echo "tests: exit $rc" | tee -a "$summary"
    [ "$rc" -eq 0 ] || status=1
else
    echo "tests: skipped, pytest is not installed for $PY" | tee -a "$summary"
    status=1
fi

if [ "${BENCH:-1}" = "0" ]; then
    echo "bench: skipped (BENCH=0)" | tee -a "$summary"
else
    echo "== benchmark"
    timeout 160 "$PY" -m numba_ln.gpu.bench --out "$OUT" --time-limit 110 > "$OUT/bench.log" 2>&1
    rc=$?
    tail -n 25 "$OUT/bench.log"
    echo "bench: exit $rc" | tee -a "$summary"
    [ "$rc" -eq 0 ] || status=1
    if [ -f "$OUT/gpu_bench.json" ]; then
        n_err=$(grep -c '"error"' "$OUT/gpu_bench.json" || true)
        echo "bench: $n_err result(s) with an error" | tee -a "$summary"
    fi
fi

# Optional (TUNE=1): the launch-configuration sweep of the row kernels.
if [ "${TUNE:-0}" = "1" ]; then
    echo "== tune"
    timeout $(( ${TUNE_LIMIT:-120} + 50 )) "$PY" scripts/gpu_tune.py "$OUT" \
        --time-limit "${TUNE_LIMIT:-120}" > "$OUT/tune.log" 2>&1
    echo "tune: exit $?" | tee -a "$summary"
    tail -n 60 "$OUT/gpu_tune.md" 2>/dev/null
fi

# Optional (AB=TREE): the kernels of another checkout against these, on this
# GPU, benchmark runs alternating (AB_ROUNDS rounds, AB_SHAPES the
# benchmark's --shapes; the first run of each tree compiles its kernels).
if [ -n "${AB:-}" ]; then
    echo "== A/B: $AB against ."
    # shellcheck disable=SC2086
    timeout "${AB_TIMEOUT:-300}" "$PY" scripts/gpu_ab.py "$OUT/ab" "$AB" . \
        --rounds "${AB_ROUNDS:-2}" --time-limit "${AB_LIMIT:-200}" \
        ${AB_SHAPES:+--shapes "$AB_SHAPES"} > "$OUT/ab.log" 2>&1
    rc=$?
    echo "ab: exit $rc" | tee -a "$summary"
    cat "$OUT/ab/gpu_ab.md" 2>/dev/null
fi

# Optional (LAUNCH=1): where a call's host time goes (scripts/gpu_launch_cost.py,
# about 30 s once the kernels are compiled): OUTDIR/launch_cost.txt.
if [ "${LAUNCH:-0}" = "1" ]; then
    echo "== launch cost"
    timeout 90 "$PY" scripts/gpu_launch_cost.py "$OUT" > "$OUT/launch_cost.log" 2>&1
    echo "launch cost: exit $?" | tee -a "$summary"
fi

# Optional (NCU=1): Nsight Compute counters of the main kernels, one forward
# and one backward per shape, clocks left alone, with the warp-state section
# (why warps stall: memory, barriers, ...).
if [ "${NCU:-0}" = "1" ] && command -v ncu >/dev/null 2>&1; then
    echo "== ncu"
    timeout "${NCU_TIMEOUT:-120}" ncu --clock-control none --csv \
        -k 'regex:_ln_|_col_sum' --section WarpStateStats \
        --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,dram__bytes_write.sum,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__occupancy_limit_registers,launch__grid_size,launch__block_size,sm__throughput.avg.pct_of_peak_sustained_elapsed \
        "$PY" - > "$OUT/ncu.csv" 2> "$OUT/ncu.err" <<'PYEOF'
import numpy as np
from numba import cuda
from numba_ln.gpu import _kernels as K, _launch
for (rows, d), dt in [((16384, 8192), np.float32), ((4096, 1024), np.float32),
                      ((65536, 128), np.float32), ((4096, 4096), np.float32),
                      ((32, 65536), np.float32)]:
    rng = np.random.default_rng(0)
    x = cuda.to_device(rng.standard_normal((rows, d), dtype=dt))
    dy = cuda.to_device(rng.standard_normal((rows, d), dtype=dt))
    w = cuda.to_device(np.ones(d, dt)); b = cuda.to_device(np.zeros(d, dt))
    y = cuda.device_array_like(x); dx = cuda.device_array_like(x)
    stats = cuda.device_array((2, rows), dt); m, r = stats[0], stats[1]
    grads = cuda.device_array((2, d), dt)  # dweight, dbias
    s = cuda.default_stream()
    _launch.forward(x, w, b, 3, dt(1e-5), y, stats, s)
    _launch.backward(dy, x, m, r, w, 1, dx, grads, s)
    s.synchronize()
PYEOF
    echo "ncu: exit $? ($(grep -c gpu__time_duration "$OUT/ncu.csv" 2>/dev/null) rows)" | tee -a "$summary"
fi
exit "$status"
