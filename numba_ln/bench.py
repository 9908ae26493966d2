"""Speed of the CPU kernels against their limits and their peer.

Run ``python -m numba_ln.bench`` (``--help`` for options).  For float32 and
float64 at each shape it times, in one run and interleaved round by round so
that all candidates see the same machine load:

- numba_ln forward, allocating (``layer_norm(x, w, b)``) and with ``out=``;
- numba_ln backward (``layer_norm_backward``: dx, dweight, dbias);
- the NumPy reference (float64-free, same dtype) forward;
- ``torch.nn.functional.layer_norm`` forward and its autograd backward, when
  torch is installed, on as many threads as numba uses;
- the bandwidth limits: ``np.copyto`` of the same bytes (forward reads x and
  writes y) and ``np.add(x, dy, out=dx)`` (backward's minimal traffic: two
  reads, one write).

Every figure is the median over ``--repeats`` rounds of the mean time of a
batch of calls, and is reported as a ratio against a baseline of the same
run: ``torch / ours`` (above 1: we are faster) and ``limit / ours`` (the
fraction of the bandwidth limit reached).
"""

import argparse
import json
import math
import platform
import sys
import time

import numba
import numpy as np

import numba_ln

SHAPES = [((64, 256), 1), ((256, 1024), 1), ((4096, 1024), 1), ((8192, 4096), 1),
          ((65536, 128), 1), ((512, 32, 32), 2)]

#: Arrays of at least this many bytes are held to the bandwidth targets.
LARGE_BYTES = 16 * 2**20


def _numpy_layer_norm(x, w, b, axes, eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _batch_size(fn, budget):
    """Calls per timed batch so that one batch takes about ``budget`` seconds."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    return max(1, min(10_000, int(budget / max(once, 1e-7))))


def time_interleaved(fns, repeats=7, budget=0.02):
    """Median seconds per call of each function, measured round-robin."""
    batches = {k: _batch_size(f, budget) for k, f in fns.items()}
    samples = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            n = batches[k]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[k].append((time.perf_counter() - t0) / n)
    return {k: float(np.median(v)) for k, v in samples.items()}


def _torch_fns(x, w, b, dy, k):
    try:
        import torch
    except ImportError:
        return {}
    torch.set_num_threads(numba.get_num_threads())
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.from_numpy(b).requires_grad_(True)
    dyt = torch.from_numpy(dy)
    shape = tuple(x.shape[-k:])
    F = torch.nn.functional
    yt = F.layer_norm(xt, shape, wt, bt)

    def fwd():
        with torch.no_grad():
            F.layer_norm(xt, shape, wt, bt)

    def bwd():
        torch.autograd.grad(yt, (xt, wt, bt), dyt, retain_graph=True)

    return {"torch_fwd": fwd, "torch_bwd": bwd}


def bench_case(shape, k, dtype, repeats=7, budget=0.02, seed=0):
    """Times of every candidate at one shape and dtype, and their ratios."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    norm_shape = shape[-k:]
    w = (1 + 0.1 * rng.standard_normal(norm_shape)).astype(dtype)
    b = (0.1 * rng.standard_normal(norm_shape)).astype(dtype)
    axis = tuple(range(-k, 0)) if k > 1 else -1
    y = np.empty_like(x)
    scratch = np.empty_like(x)
    _, mean, rstd = numba_ln.layer_norm(x, w, b, axis=axis, return_stats=True)
    fns = {
        "copy": lambda: np.copyto(scratch, x),
        "two_read_one_write": lambda: np.add(x, dy, out=scratch),
        "ours_fwd": lambda: numba_ln.layer_norm(x, w, b, axis=axis),
        "ours_fwd_out": lambda: numba_ln.layer_norm(x, w, b, axis=axis, out=y),
        "ours_bwd": lambda: numba_ln.layer_norm_backward(dy, x, mean, rstd, w, axis=axis),
        "numpy_fwd": lambda: _numpy_layer_norm(x, w, b, tuple(range(-k, 0))),
    }
    fns.update(_torch_fns(x, w, b, dy, k))
    t = time_interleaved(fns, repeats, budget)
    r = {
        "shape": "x".join(map(str, shape)) + ("" if k == 1 else f" (last {k} axes)"),
        "dtype": np.dtype(dtype).name,
        "bytes": x.nbytes,
        "times_s": t,
        "fwd_vs_numpy": t["numpy_fwd"] / t["ours_fwd"],
        "fwd_out_copy_fraction": t["copy"] / t["ours_fwd_out"],
        "bwd_bandwidth_fraction": t["two_read_one_write"] / t["ours_bwd"],
    }
    if "torch_fwd" in t:
        r["fwd_vs_torch"] = t["torch_fwd"] / t["ours_fwd"]
        r["bwd_vs_torch"] = t["torch_bwd"] / t["ours_bwd"]
    return r


def _fmt(v, target=None, good_if_ge=True):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = f"{v:.2f}"
    if target is not None:
        s += " ✓" if (v >= target) == good_if_ge else " ✗"
    return s


def markdown_table(results):
    """The results as a markdown table, with the float32 targets marked."""
    head = ("| shape | dtype | fwd vs torch | fwd vs NumPy | fwd out= / copy | "
            "bwd vs torch | bwd / 2R1W | ours fwd | ours bwd |")
    rows = [head, "|" + "---|" * 9]
    for r in results:
        f32 = r["dtype"] == "float32"
        large = r["bytes"] >= LARGE_BYTES
        t = r["times_s"]
        rows.append("| {} | {} | {} | {} | {} | {} | {} | {:.1f} µs | {:.1f} µs |".format(
            r["shape"], r["dtype"],
            _fmt(r.get("fwd_vs_torch"), 1.0 if f32 else None),
            _fmt(r["fwd_vs_numpy"]),
            _fmt(r["fwd_out_copy_fraction"], 0.85 if f32 and large else None),
            _fmt(r.get("bwd_vs_torch"), 1.3 if f32 else None),
            _fmt(r["bwd_bandwidth_fraction"], 0.75 if f32 and large else None),
            t["ours_fwd"] * 1e6, t["ours_bwd"] * 1e6))
    return "\n".join(rows)


def machine_description():
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "threads": numba.get_num_threads(), "numba": numba.__version__,
            "numpy": np.__version__, "torch": torch_version, "python": platform.python_version(),
            "threading_layer": _threading_layer()}


def _threading_layer():
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet initialised"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m numba_ln.bench", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7, help="rounds per candidate (median taken)")
    p.add_argument("--budget", type=float, default=0.02, help="seconds per timed batch")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--quick", action="store_true", help="small shapes only, 3 repeats (a smoke run)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)

    shapes = SHAPES[:2] if args.quick else SHAPES
    repeats = 3 if args.quick else args.repeats
    results = []
    for dtype in args.dtypes.split(","):
        for shape, k in shapes:
            results.append(bench_case(shape, k, np.dtype(dtype), repeats, args.budget))
            print(f"  {results[-1]['shape']:>24} {dtype}: done", file=sys.stderr, flush=True)
    machine = machine_description()
    print(f"\nnumba_ln CPU benchmark: {machine['cpu']}, {machine['threads']} threads, "
          f"numba {machine['numba']}, numpy {machine['numpy']}, torch {machine['torch']}")
    print("Ratios > 1 mean numba_ln is faster (vs torch / NumPy); '/ copy' and '/ 2R1W' are the "
          "fraction of the bandwidth limit reached.\n✓/✗ mark the float32 targets "
          "(fwd > torch, bwd >= 1.3x torch; >= 85% copy (fwd out=) and >= 75% 2R1W (bwd) from 16 MB).\n")
    print(markdown_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
