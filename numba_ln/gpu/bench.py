"""GPU benchmark: LayerNorm forward/backward against a device copy and PyTorch.

::

    python -m numba_ln.gpu.bench --out OUTDIR [--quick] [--repeats N]

Writes ``OUTDIR/gpu_bench.json`` and ``OUTDIR/gpu_bench.md``.

For every shape and pass it measures, with CUDA events on one stream, after
warm-up, the median of ``--repeats`` runs of:

- ``kernel``: numba_ln's kernels on preallocated buffers (what the kernels
  cost; the public functions add numba's per-call allocations);
- ``api``: the public :func:`numba_ln.layer_norm` /
  :func:`numba_ln.layer_norm_backward` with fresh outputs;
- ``copy``: a device-to-device copy of the pass's minimal traffic in the same
  run (forward: read x + write y; backward: read x and dy + write dx), the
  bandwidth baseline;
- ``torch``: ``torch.nn.functional.layer_norm`` on CUDA (forward) and its
  autograd backward (dx, dweight, dbias), when torch with CUDA is importable.

Effective bandwidth is the minimal traffic divided by the time.  One failure
(a compile error on this numba-cuda, an out-of-memory) is recorded in the
results and the run goes on.  Runs under the CUDA simulator too (``--quick``;
the times are then meaningless), which is how its logic is tested.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np

FULL_SHAPES = [((4096, 1024), "float32"), ((4096, 4096), "float32"), ((16384, 8192), "float32"),
               ((65536, 128), "float32"), ((32, 65536), "float32"), ((4096, 4096), "float64")]
QUICK_SHAPES = [((16, 40), "float32"), ((2, 300), "float32"), ((4, 40), "float64")]


def _median_ms(fn, repeats, warmup, stream):
    """Median time of ``fn()`` in milliseconds, by CUDA events on ``stream``."""
    from numba import cuda

    for _ in range(warmup):
        fn()
    stream.synchronize()
    times = []
    for _ in range(repeats):
        start, end = cuda.event(), cuda.event()
        start.record(stream)
        fn()
        end.record(stream)
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _torch_median_ms(fn, repeats, warmup):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _torch():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return None
    try:
        import torch
    except Exception:
        return None
    return torch if torch.cuda.is_available() else None


def _gbps(nbytes, ms):
    return nbytes / (ms * 1e-3) / 1e9 if ms and ms > 0 else None


def bench_shape(shape, dtype_name, repeats, warmup, torch):
    """Results (a list of dicts, one per pass) for one shape and dtype."""
    from numba import cuda

    from . import _kernels as K
    from . import _launch
    import numba_ln

    rows, d = shape
    dtype = np.dtype(dtype_name)
    item = dtype.itemsize
    n = rows * d
    stream = cuda.default_stream()
    rng = np.random.default_rng(0)
    x = cuda.to_device(rng.standard_normal(shape, dtype=dtype))
    dy = cuda.to_device(rng.standard_normal(shape, dtype=dtype))
    w = cuda.to_device((1 + 0.1 * rng.standard_normal(d)).astype(dtype))
    b = cuda.to_device((0.1 * rng.standard_normal(d)).astype(dtype))
    y = cuda.device_array(shape, dtype)
    dx = cuda.device_array(shape, dtype)
    mean = cuda.device_array(rows, dtype)
    rstd = cuda.device_array(rows, dtype)
    dw = cuda.device_array(d, dtype)
    db = cuda.device_array(d, dtype)
    eps = dtype.type(1e-5)
    flags = K.HAS_WEIGHT | K.HAS_BIAS
    out = []

    # ---- forward ----
    kind, grid, block = _launch.forward_plan(rows, d, item)
    res = {"shape": list(shape), "dtype": dtype_name, "pass": "forward", "bytes": 2 * n * item,
           "plan": f"{kind} grid={grid} block={block}"}
    try:
        src = cuda.device_array(n, dtype)
        dst = cuda.device_array(n, dtype)
        res["copy_ms"] = _median_ms(lambda: dst.copy_to_device(src, stream=stream), repeats,
                                    warmup, stream)
        del src, dst
        fwork = {}
        res["kernel_ms"] = _median_ms(
            lambda: _launch.forward(x, w, b, flags, eps, y, mean, rstd, stream, work=fwork),
            repeats, warmup, stream)
        res["api_ms"] = _median_ms(lambda: numba_ln.layer_norm(x, w, b, stream=stream),
                                   repeats, warmup, stream)
        # Correctness against the CPU path on a few rows.
        k = min(rows, 8)
        ref = numba_ln.layer_norm(x[:k].copy_to_host(), w.copy_to_host(), b.copy_to_host())
        res["max_abs_err_vs_cpu"] = float(np.abs(y[:k].copy_to_host() - ref).max())
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["traceback"] = traceback.format_exc(limit=4)[-2000:]
    if torch is not None and "error" not in res:
        try:
            tx = torch.as_tensor(x, device="cuda")
            tw = torch.as_tensor(w, device="cuda")
            tb = torch.as_tensor(b, device="cuda")
            f = torch.nn.functional.layer_norm
            res["torch_ms"] = _torch_median_ms(lambda: f(tx, (d,), tw, tb, 1e-5), repeats, warmup)
        except Exception as exc:
            res["torch_error"] = f"{type(exc).__name__}: {exc}"
    out.append(res)

    # ---- backward ----
    G, nwin, block = _launch.backward_launch(rows, d)
    res = {"shape": list(shape), "dtype": dtype_name, "pass": "backward", "bytes": 3 * n * item,
           "plan": f"row slots={G} windows={nwin} block={block}"}
    try:
        m = (3 * n + 1) // 2
        src = cuda.device_array(m, dtype)
        dst = cuda.device_array(m, dtype)
        res["copy_ms"] = _median_ms(lambda: dst.copy_to_device(src, stream=stream), repeats,
                                    warmup, stream)
        del src, dst
        _launch.forward(x, w, b, flags, eps, y, mean, rstd, stream)
        work = {}
        res["kernel_ms"] = _median_ms(
            lambda: _launch.backward(dy, x, mean, rstd, w, K.HAS_WEIGHT, dx, dw, db, stream,
                                     work=work),
            repeats, warmup, stream)
        res["api_ms"] = _median_ms(
            lambda: numba_ln.layer_norm_backward(dy, x, mean, rstd, w, stream=stream),
            repeats, warmup, stream)
        first = (dw.copy_to_host(), db.copy_to_host())
        _launch.backward(dy, x, mean, rstd, w, K.HAS_WEIGHT, dx, dw, db, stream, work=work)
        res["bitwise_reproducible"] = bool(np.array_equal(first[0], dw.copy_to_host())
                                           and np.array_equal(first[1], db.copy_to_host()))
        k = min(rows, 8)
        hx = x[:k].copy_to_host()
        ref, _, _ = numba_ln.layer_norm_backward(dy[:k].copy_to_host(), hx,
                                                 mean[:k].copy_to_host(), rstd[:k].copy_to_host(),
                                                 w.copy_to_host())
        res["max_abs_err_vs_cpu"] = float(np.abs(dx[:k].copy_to_host() - ref).max())
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["traceback"] = traceback.format_exc(limit=4)[-2000:]
    if torch is not None and "error" not in res:
        try:
            tx = torch.as_tensor(x, device="cuda").detach().requires_grad_(True)
            tw = torch.as_tensor(w, device="cuda").detach().requires_grad_(True)
            tb = torch.as_tensor(b, device="cuda").detach().requires_grad_(True)
            tdy = torch.as_tensor(dy, device="cuda")
            ty = torch.nn.functional.layer_norm(tx, (d,), tw, tb, 1e-5)
            res["torch_ms"] = _torch_median_ms(
                lambda: torch.autograd.grad(ty, (tx, tw, tb), tdy, retain_graph=True),
                repeats, warmup)
        except Exception as exc:
            res["torch_error"] = f"{type(exc).__name__}: {exc}"
    out.append(res)

    for r in out:
        r["kernel_GBps"] = _gbps(r["bytes"], r.get("kernel_ms"))
        r["copy_GBps"] = _gbps(r["bytes"], r.get("copy_ms"))
        if r["kernel_GBps"] and r["copy_GBps"]:
            r["pct_of_copy"] = 100.0 * r["kernel_GBps"] / r["copy_GBps"]
        if r.get("torch_ms") and r.get("kernel_ms"):
            r["speedup_vs_torch"] = r["torch_ms"] / r["kernel_ms"]
    return out


def _environment(torch):
    env = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import numba

        env["numba"] = numba.__version__
    except Exception as exc:
        env["numba"] = repr(exc)
    try:
        from importlib.metadata import version

        env["numba_cuda"] = version("numba-cuda")
    except Exception:
        env["numba_cuda"] = None
    env["torch"] = getattr(torch, "__version__", None)
    try:
        from numba import cuda

        dev = cuda.get_current_device()
        name = dev.name
        env["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        env["compute_capability"] = list(dev.compute_capability)
    except Exception as exc:
        env["gpu"] = f"unavailable: {exc}"
    env["simulator"] = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    return env


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def markdown(data):
    env = data["environment"]
    lines = [f"GPU: {env.get('gpu')} (cc {env.get('compute_capability')}), numba "
             f"{env.get('numba')}, numba-cuda {env.get('numba_cuda')}, torch {env.get('torch')}.",
             "",
             "Median of %d runs (CUDA events). GB/s = minimal traffic / time (forward: read x, "
             "write y; backward: read x and dy, write dx); copy = device-to-device copy of the "
             "same bytes in the same run; kernel = numba_ln's kernels on preallocated buffers; "
             "api = the public function (allocates its outputs)." % data["repeats"],
             "",
             "| shape | dtype | pass | kernel ms | GB/s | % of copy | api ms | torch ms "
             "| speedup vs torch |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["results"]:
        shape = "x".join(str(s) for s in r["shape"])
        if "error" in r:
            msg = " ".join(str(r["error"]).split()).replace("|", "/")[:100]
            lines.append(f"| {shape} | {r['dtype']} | {r['pass']} | error: {msg} | | | | | |")
            continue
        lines.append(
            f"| {shape} | {r['dtype']} | {r['pass']} | {_fmt(r.get('kernel_ms'), '.4f')} | "
            f"{_fmt(r.get('kernel_GBps'), '.0f')} | {_fmt(r.get('pct_of_copy'), '.0f')} | "
            f"{_fmt(r.get('api_ms'), '.4f')} | {_fmt(r.get('torch_ms'), '.4f')} | "
            f"{_fmt(r.get('speedup_vs_torch'), '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory for gpu_bench.json and gpu_bench.md")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a logic check)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--shapes", default=None,
                   help="e.g. 4096x1024:float32,32x65536:float32 instead of the default set")
    p.add_argument("--time-limit", type=float, default=200.0,
                   help="skip the remaining shapes after this many seconds")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch = _torch()
    data = {"environment": _environment(torch), "repeats": args.repeats, "results": []}
    t0 = time.perf_counter()

    def write():
        data["seconds"] = time.perf_counter() - t0
        with open(os.path.join(args.out, "gpu_bench.json"), "w") as f:
            json.dump(data, f, indent=1, default=str)
        md = markdown(data)
        with open(os.path.join(args.out, "gpu_bench.md"), "w") as f:
            f.write(md)
        return md

    from . import is_available

    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.shapes:
        shapes = []
        for item in args.shapes.split(","):
            dims, _, dt = item.partition(":")
            shapes.append((tuple(int(v) for v in dims.split("x")), dt or "float32"))
    if not is_available():
        data["results"].append({"shape": [], "dtype": "", "pass": "all",
                                "error": "no usable CUDA GPU (numba.cuda.is_available() is False)"})
        shapes = []
    for shape, dtype in shapes:
        if time.perf_counter() - t0 > args.time_limit:
            data["results"].append({"shape": list(shape), "dtype": dtype, "pass": "all",
                                    "error": "skipped: time limit"})
            continue
        try:
            data["results"].extend(bench_shape(shape, dtype, args.repeats, args.warmup, torch))
        except Exception as exc:  # allocation of the inputs, ...
            data["results"].append({"shape": list(shape), "dtype": dtype, "pass": "all",
                                    "error": f"{type(exc).__name__}: {exc}"})
        write()  # after every shape: a timeout still leaves the results so far
        print(f"bench {shape} {dtype}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    print(write())
    return 0


if __name__ == "__main__":
    sys.exit(main())
