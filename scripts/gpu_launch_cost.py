"""Where the host time of a GPU call goes, on a real GPU (developer tool).

::

    python scripts/gpu_launch_cost.py OUTDIR

1. A ladder of ways to launch the same forward kernel (small rows, so that
   the GPU never holds the host back), host microseconds a launch, median of
   5 runs of 2000 launches: numba's ``kernel[grid, block, stream](...)``;
   the same with the launch configuration made once; numba's compiled
   ``_Kernel.launch`` (no dispatch); ``numba_ln.gpu._fastlaunch`` (our own
   argument packing and ``cuLaunchKernel``), alone and with the CUDA context
   kept in thread-local storage as inside a public call.
2. The public ``layer_norm`` / ``layer_norm_backward`` calls, with numba's
   allocator and with the memory pool, host microseconds a call, and a
   cProfile of each (top functions by own time).

Writes ``OUTDIR/launch_cost.txt`` (and prints it).
"""

import cProfile
import io
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

from numba_ln.gpu import _fastlaunch, _launch, layer_norm, layer_norm_backward  # noqa: E402
from numba_ln.gpu import use_memory_pool  # noqa: E402
from numba_ln.gpu._api import _on_gpu  # noqa: E402

N = 2000
REPEATS = 5


def per_call_us(fn, stream, n=N, repeats=REPEATS):
    """Median host microseconds a call of ``fn`` (``n`` calls back to back)."""
    for _ in range(50):
        fn()
    stream.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
        stream.synchronize()
    return float(np.median(times))


def profile(fn, stream, n=1000, top=28):
    """cProfile of ``n`` calls of ``fn``: the top functions by own time."""
    for _ in range(20):
        fn()
    stream.synchronize()
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(n):
        fn()
    pr.disable()
    stream.synchronize()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


def main(argv=None):
    out_dir = (argv or sys.argv[1:] or ["."])[0]
    os.makedirs(out_dir, exist_ok=True)
    lines = []

    def say(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    dev = cuda.get_current_device()
    say(f"gpu {dev.name}")
    rng = np.random.default_rng(0)
    stream = cuda.stream()

    # 1. the launch ladder: 64 x 1024 float32 (a few microseconds of GPU)
    rows, d = 64, 1024
    x = cuda.to_device(rng.standard_normal((rows, d), dtype=np.float32), stream=stream)
    w = cuda.to_device(np.ones(d, np.float32), stream=stream)
    b = cuda.to_device(np.zeros(d, np.float32), stream=stream)
    y = cuda.device_array_like(x, stream=stream)
    stats = cuda.device_array((2, rows), np.float32, stream=stream)
    flags, eps = np.int32(3), np.float32(1e-5)
    kind, grid, v, block = _launch.forward_plan(rows, d, 4, "float32")
    disp = v.fwd["float32"]
    args = (x, w, b, flags, eps, y, stats)
    disp[grid, block, stream](*args)
    stream.synchronize()
    ref = y.copy_to_host()

    say(f"\n== launch ladder: forward {rows}x{d} float32, variant {v.suffix}, grid {grid}, "
        f"block {block}; host us a launch (median of {REPEATS} x {N})")
    cfg = disp[grid, block, stream]
    kern = next(iter(disp.overloads.values()))
    from numba.cuda.cudadrv import driver
    core = driver._to_core_stream(stream)
    g3 = (grid, 1, 1)
    b3 = (block[0], block[1], 1)
    ladder = {
        "numba kernel[grid, block, stream](...)": lambda: disp[grid, block, stream](*args),
        "numba, configuration made once": lambda: cfg(*args),
        "numba _Kernel.launch (no dispatch)": lambda: kern.launch(args, g3, b3, core, 0),
    }
    fast = _fastlaunch.launcher(disp, "float32", "layer_norm_forward")
    say(f"fast launcher: {fast!r}")
    if fast is not None:
        ladder["numba_ln _fastlaunch"] = lambda: fast(grid, block, stream, args)
        ladder["numba_ln _fastlaunch, context attached"] = lambda: fast(grid, block, stream,
                                                                        args)
    zeros = np.zeros((rows, d), np.float32)
    for name, fn in ladder.items():
        y.copy_to_device(zeros, stream=stream)
        try:
            if name.endswith("context attached"):  # as inside a public call
                with _on_gpu():
                    us = per_call_us(fn, stream)
            else:
                us = per_call_us(fn, stream)
            stream.synchronize()
            ok = np.array_equal(y.copy_to_host(), ref)
            say(f"  {name:45s} {us:8.1f} us   same result: {ok}")
        except Exception as exc:  # noqa: BLE001
            say(f"  {name:45s} failed: {type(exc).__name__}: {exc}")

    # 2. the public calls, 4096 x 1024 float32 and 64 x 1024, with and without
    # the fast launch and the pool
    say("\n== public calls, host us a call (median of 3 x 500)")
    for rows in (4096, 64):
        x = cuda.to_device(rng.standard_normal((rows, d), dtype=np.float32), stream=stream)
        dy = cuda.to_device(rng.standard_normal((rows, d), dtype=np.float32), stream=stream)
        yo, mean, rstd = layer_norm(x, w, b, stream=stream, return_stats=True)
        calls = {
            "layer_norm": lambda: layer_norm(x, w, b, stream=stream),
            "layer_norm out=": lambda: layer_norm(x, w, b, stream=stream, out=yo),
            "layer_norm_backward": lambda: layer_norm_backward(dy, x, mean, rstd, w,
                                                               stream=stream),
        }
        for fast in ("1", "0"):
            os.environ["NUMBA_LN_FAST_LAUNCH"] = fast
            for pool in (False, True):
                use_memory_pool(pool)
                for name, fn in calls.items():
                    tag = f"{rows}x{d} {name:22s} fast={fast} pool={pool!s:5s}"
                    try:
                        us = per_call_us(fn, stream, n=500, repeats=3)
                        say(f"  {tag} {us:8.1f} us a call (host)")
                    except Exception as exc:  # noqa: BLE001
                        say(f"  {tag} failed: {type(exc).__name__}: {exc}")
        os.environ["NUMBA_LN_FAST_LAUNCH"] = "1"
        use_memory_pool(False)

    x = cuda.to_device(rng.standard_normal((4096, d), dtype=np.float32), stream=stream)
    dy = cuda.to_device(rng.standard_normal((4096, d), dtype=np.float32), stream=stream)
    yo, mean, rstd = layer_norm(x, w, b, stream=stream, return_stats=True)
    for pool in (False, True):
        use_memory_pool(pool)
        for name, fn in (("layer_norm", lambda: layer_norm(x, w, b, stream=stream)),
                         ("layer_norm_backward",
                          lambda: layer_norm_backward(dy, x, mean, rstd, w, stream=stream))):
            say(f"\n== cProfile: 1000 x {name} 4096x1024 float32, pool={pool}")
            try:
                say(profile(fn, stream))
            except Exception as exc:  # noqa: BLE001
                say(f"failed: {type(exc).__name__}: {exc}")
    use_memory_pool(False)
    with open(os.path.join(out_dir, "launch_cost.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
