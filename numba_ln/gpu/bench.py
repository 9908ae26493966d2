"""GPU benchmark: LayerNorm forward/backward against a device copy and PyTorch.

::

    python -m numba_ln.gpu.bench --out OUTDIR [--quick] [--repeats N]

Writes ``OUTDIR/gpu_bench.json`` and ``OUTDIR/gpu_bench.md``.

For every shape and pass it measures, after warm-up, the median of
``--repeats`` runs of:

- ``kernel``: numba_ln's kernels on preallocated buffers, GPU time per call.
  numba's Python launch path costs tens of microseconds a kernel, more than a
  small LayerNorm takes on the GPU, so GPU time is measured with the queue
  kept full: a spin kernel holds the GPU while ``--batch`` calls are enqueued,
  and CUDA events bracket the batch, which then runs back to back.  The host
  time of one call (enqueueing its launches, with the CUDA context looked up
  once for the batch, as a public call does once for its kernels) is
  reported apart (``kernel_host_us``);
- ``api``: the public :func:`numba_ln.layer_norm` /
  :func:`numba_ln.layer_norm_backward` (which allocate their outputs), wall
  time per call of back-to-back calls, the host's and the GPU's work together;
  ``alloc``: the same calls' allocations alone (numba's memory manager), the
  share of ``api`` that ``out=`` or a pooling allocator would save;
  ``api pool``: ``api`` with :func:`numba_ln.gpu.use_memory_pool` on, and
  ``api_host_us`` the host time to enqueue such a call (which then never
  waits for the GPU);
- ``copy``: a device-to-device copy of the pass's minimal traffic in the same
  run (forward: read x + write y; backward: read x and dy + write dx), GPU
  time measured like ``kernel``; the best of ``cuMemcpyDtoDAsync``, a numba
  copy kernel and ``torch`` ``Tensor.copy_`` (the one used is named);
- ``torch``: ``torch.nn.functional.layer_norm`` on CUDA (forward) and its
  autograd backward (dx, dweight, dbias), GPU time measured like ``kernel``,
  when torch with CUDA is importable.

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


_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
_SPIN = None
_SPIN_NS = [None]  # measured nanoseconds of one spin iteration


def _spin_kernel():
    global _SPIN
    if _SPIN is None:
        from numba import cuda

        @cuda.jit
        def spin(n):
            # One thread sleeps n microseconds (about): holds the GPU while the
            # host enqueues the work to be timed.
            if cuda.grid(1) == 0:
                for _ in range(n):
                    cuda.nanosleep(1000)

        _SPIN = spin
    return _SPIN


def _spin(ms, stream):
    """Enqueue a kernel that keeps the GPU busy for about ``ms`` ms."""
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return  # the simulator runs every launch to completion when it is made
    spin = _spin_kernel()
    if _SPIN_NS[0] is None:  # calibrate once
        spin[1, 1, stream](10)
        stream.synchronize()
        a, b = cuda.event(), cuda.event()
        a.record(stream)
        spin[1, 1, stream](2000)
        b.record(stream)
        b.synchronize()
        _SPIN_NS[0] = max(100.0, a.elapsed_time(b) * 1e6 / 2000)
    spin[1, 1, stream](max(1, int(ms * 1e6 / _SPIN_NS[0])))


def _gpu_ms(fn, repeats, warmup, stream, batch, record=None):
    """``(gpu_ms, host_us)``: median GPU time of one call of ``fn`` and the
    median host time to enqueue it.

    Each repeat: a spin kernel holds the GPU, an event, ``batch`` calls of
    ``fn``, an event; the GPU then runs the calls back to back, and the time
    between the events is the GPU's alone, provided the host finished
    enqueueing before the spin ended (the spin is made 3x the enqueue time of
    the previous repeat, and a repeat where it was not long enough is redone).
    ``record(stream)`` returns an event recorded on the stream of ``fn``'s
    work (torch's events for torch), default numba's.
    """
    from numba import cuda

    if record is None:
        def record(s):
            e = cuda.event()
            e.record(s)
            return e

    for _ in range(warmup):
        fn()
    stream.synchronize()
    t0 = time.perf_counter()
    for _ in range(batch):
        fn()
    enqueue_ms = (time.perf_counter() - t0) * 1e3
    stream.synchronize()
    gpu, host = [], []
    tries = 0
    while len(gpu) < repeats and tries < 3 * repeats:
        tries += 1
        spin_ms = max(1.0, 3.0 * enqueue_ms)
        _spin(spin_ms, stream)
        start = record(stream)
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        enqueue_ms = (time.perf_counter() - t0) * 1e3
        end = record(stream)
        end.synchronize()
        if enqueue_ms > 0.8 * spin_ms and not _SIM:  # the queue ran dry: not GPU time
            continue
        gpu.append(start.elapsed_time(end) / batch)
        host.append(enqueue_ms * 1e3 / batch)
    if not gpu:
        return None, None
    return statistics.median(gpu), statistics.median(host)


def _wall_ms(fn, repeats, warmup, stream, sync):
    """Wall time per call: ``repeats`` back-to-back calls, synced at the end, / ``repeats``."""
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) * 1e3 / repeats


def _alloc_ms(shapes, dtype, repeats, warmup, stream):
    """Wall time per call of allocating the arrays a public call allocates
    (``shapes``, with numba's memory manager, on ``stream``) and dropping
    them, back to back: the allocation share of ``api_ms``."""
    from numba import cuda

    def alloc():
        return [cuda.device_array(s, dtype, stream=stream) for s in shapes]
    return _wall_ms(alloc, repeats, warmup, stream, stream.synchronize)


def _with_pool(fn):
    """``fn()`` with :func:`numba_ln.gpu.use_memory_pool` on."""
    from . import use_memory_pool

    prev = use_memory_pool(True)
    try:
        return fn()
    finally:
        use_memory_pool(prev)


_COPY = None


def _copy_kernel():
    global _COPY
    if _COPY is None:
        from numba import cuda

        @cuda.jit
        def copy(src, dst):
            # 4 elements a thread a step, each of them coalesced over the warp.
            n = src.shape[0]
            i = cuda.blockIdx.x * cuda.blockDim.x * 4 + cuda.threadIdx.x
            step = cuda.gridDim.x * cuda.blockDim.x * 4
            bd = cuda.blockDim.x
            while i < n:
                for k in range(4):
                    j = i + k * bd
                    if j < n:
                        dst[j] = src[j]
                i += step

        _COPY = copy
    return _COPY


def _copy_ms(m, dtype, repeats, warmup, stream, batch, torch, cold=True):
    """``(ms, how, all)``: the fastest device-to-device copy of ``m`` elements
    (cycling through buffer pairs like the kernels, see :data:`COLD_BYTES`)."""
    from numba import cuda

    pairs = []
    zeros = np.zeros(m, dtype)
    for _ in range(_sets_for(2 * m * np.dtype(dtype).itemsize, cold)):
        src = cuda.device_array(m, dtype)
        src.copy_to_device(zeros, stream=stream)
        pairs.append((src, cuda.device_array(m, dtype)))
    found = {}
    try:
        nxt = _rotate(pairs)

        def memcpy():
            src, dst = nxt()
            dst.copy_to_device(src, stream=stream)
        found["cuMemcpyDtoDAsync"] = _gpu_ms(memcpy, repeats, warmup, stream, batch)[0]
    except Exception:
        pass
    try:
        kernel = _copy_kernel()
        blocks = max(1, min(-(-m // 1024), 132 * 16))
        nxt = _rotate(pairs)

        def kcopy():
            src, dst = nxt()
            kernel[blocks, 256, stream](src, dst)
        found["numba copy kernel"] = _gpu_ms(kcopy, repeats, warmup, stream, batch)[0]
    except Exception:
        pass
    if torch is not None:
        try:
            nxt = _rotate([(torch.as_tensor(a, device="cuda"), torch.as_tensor(c, device="cuda"))
                           for a, c in pairs])

            def tcopy():
                ts, td = nxt()
                td.copy_(ts)
            found["torch copy_"] = _gpu_ms(tcopy, repeats, warmup, stream, batch,
                                           record=_torch_record(torch))[0]
        except Exception:
            pass
    found = {k: v for k, v in found.items() if v}
    if not found:
        return None, None, found
    how = min(found, key=found.get)
    return found[how], how, found


def _torch_record(torch):
    def record(_stream):
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e
    return record


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


#: Bytes that successive timed calls cycle through (several buffer sets):
#: several times the L2 cache (50-60 MB on H100/H200), so that every call
#: reads its inputs from DRAM, as the first call of a real step would.
COLD_BYTES = 256 << 20


def _sets_for(nbytes, cold):
    """How many buffer sets a call touching ``nbytes`` cycles through."""
    return max(1, min(16, -(-COLD_BYTES // max(1, nbytes)))) if cold else 1


def _rotate(items):
    """A function returning the next of ``items`` at each call, cyclically."""
    state = [0]

    def nxt():
        i = state[0]
        state[0] = (i + 1) % len(items)
        return items[i]
    return nxt


def buffers(shape, dtype, cold=True):
    """``(w, b, sets)`` on the GPU for rows x D ``shape``: weight and bias, and
    buffer sets ``{"x", "dy", "y", "dx", "stats", "mean", "rstd"}`` (the same seeded
    x and dy in each; ``mean`` and ``rstd`` the rows of ``stats``, where the
    forward writes them), enough of them (:func:`_sets_for`) that cycling
    through them reads every call's inputs from DRAM when ``cold``."""
    from numba import cuda

    rows, d = shape
    rng = np.random.default_rng(0)
    hx = rng.standard_normal(shape, dtype=dtype)
    hdy = rng.standard_normal(shape, dtype=dtype)
    w = cuda.to_device((1 + 0.1 * rng.standard_normal(d)).astype(dtype))
    b = cuda.to_device((0.1 * rng.standard_normal(d)).astype(dtype))
    sets = [{"x": cuda.to_device(hx), "dy": cuda.to_device(hdy),
             "y": cuda.device_array(shape, dtype), "dx": cuda.device_array(shape, dtype),
             "stats": cuda.device_array((2, rows), dtype)}
            for _ in range(_sets_for(2 * rows * d * dtype.itemsize, cold))]
    for t in sets:
        t["mean"], t["rstd"] = t["stats"][0], t["stats"][1]
    return w, b, sets


def bench_shape(shape, dtype_name, repeats, warmup, torch, batch=20, cold=True):
    """Results (a list of dicts, one per pass) for one shape and dtype."""
    from numba import cuda

    from . import _kernels as K
    from . import _launch
    from ._api import _on_gpu
    import numba_ln

    rows, d = shape
    dtype = np.dtype(dtype_name)
    item = dtype.itemsize
    n = rows * d
    stream = cuda.default_stream()
    w, b, sets = buffers(shape, dtype, cold)
    nsets = len(sets)
    s0 = sets[0]
    x, dy, y, dx, stats, mean, rstd = (s0[k] for k in ("x", "dy", "y", "dx", "stats", "mean",
                                                      "rstd"))
    grads = cuda.device_array((2, d), dtype)  # dweight, dbias
    eps = dtype.type(1e-5)
    flags = K.HAS_WEIGHT | K.HAS_BIAS
    out = []

    # ---- forward ----
    kind, grid, v, block = _launch.forward_plan(rows, d, item, dtype_name)
    res = {"shape": list(shape), "dtype": dtype_name, "pass": "forward", "bytes": 2 * n * item,
           "plan": f"{kind} variant={v.suffix} grid={grid} block={block}", "buffer_sets": nsets}
    try:
        res["copy_ms"], res["copy_how"], res["copy_all_ms"] = _copy_ms(
            n, dtype, repeats, warmup, stream, batch, torch, cold)
        fwork = {}
        nxt = _rotate(sets)

        def fwd():
            t = nxt()
            _launch.forward(t["x"], w, b, flags, eps, t["y"], t["stats"], stream,
                            work=fwork)
        with _on_gpu():  # the context looked up once, as inside a public call
            res["kernel_ms"], res["kernel_host_us"] = _gpu_ms(fwd, repeats, warmup, stream,
                                                              batch)
        nxt_api = _rotate(sets)

        def fwd_api():
            return numba_ln.layer_norm(nxt_api()["x"], w, b, stream=stream)
        res["api_ms"] = _wall_ms(fwd_api, repeats, warmup, stream, stream.synchronize)

        def fwd_api_out():  # y preallocated (mean and rstd go to the stream's scratch)
            t = nxt_api()
            return numba_ln.layer_norm(t["x"], w, b, out=t["y"], stream=stream)
        res["api_out_ms"] = _wall_ms(fwd_api_out, repeats, warmup, stream, stream.synchronize)
        res["alloc_ms"] = _alloc_ms([(rows, d)], dtype, repeats, warmup, stream)
        res["api_pool_ms"] = _with_pool(lambda: _wall_ms(fwd_api, repeats, warmup, stream,
                                                          stream.synchronize))
        # with the pool a call never waits for the GPU: its host time alone
        _, res["api_host_us"] = _with_pool(lambda: _gpu_ms(fwd_api, repeats, warmup, stream,
                                                           batch))
        # Correctness against the CPU path on a few rows.
        _launch.forward(x, w, b, flags, eps, y, stats, stream)
        k = min(rows, 8)
        ref = numba_ln.layer_norm(x[:k].copy_to_host(), w.copy_to_host(), b.copy_to_host())
        res["max_abs_err_vs_cpu"] = float(np.abs(y[:k].copy_to_host() - ref).max())
    except Exception as exc:
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["traceback"] = traceback.format_exc(limit=4)[-2000:]
    if torch is not None and "error" not in res:
        try:
            txs = _rotate([torch.as_tensor(t["x"], device="cuda") for t in sets])
            tw = torch.as_tensor(w, device="cuda")
            tb = torch.as_tensor(b, device="cuda")
            f = torch.nn.functional.layer_norm
            res["torch_ms"], res["torch_host_us"] = _gpu_ms(
                lambda: f(txs(), (d,), tw, tb, 1e-5), repeats, warmup, stream, batch,
                record=_torch_record(torch))
            res["torch_api_ms"] = _wall_ms(lambda: f(txs(), (d,), tw, tb, 1e-5), repeats,
                                           warmup, stream, torch.cuda.synchronize)
        except Exception as exc:
            res["torch_error"] = f"{type(exc).__name__}: {exc}"
    out.append(res)

    # ---- backward ----
    G, nwin, v, block = _launch.backward_launch(rows, d, dtype_name)
    by_cols = _launch.by_columns(rows, nwin)
    res = {"shape": list(shape), "dtype": dtype_name, "pass": "backward", "bytes": 3 * n * item,
           "plan": f"variant={v.suffix} row slots={G} windows={nwin} block={block}"
                   + (" by columns" if by_cols else ""),
           "buffer_sets": nsets}
    try:
        res["copy_ms"], res["copy_how"], res["copy_all_ms"] = _copy_ms(
            (3 * n + 1) // 2, dtype, repeats, warmup, stream, batch, torch, cold)
        for t in sets:
            _launch.forward(t["x"], w, b, flags, eps, t["y"], t["stats"], stream)
        work = {}
        nxt = _rotate(sets)

        def bwd():
            t = nxt()
            _launch.backward(t["dy"], t["x"], t["mean"], t["rstd"], w, K.HAS_WEIGHT, t["dx"],
                             grads, stream, work=work)
        with _on_gpu():
            res["kernel_ms"], res["kernel_host_us"] = _gpu_ms(bwd, repeats, warmup, stream,
                                                              batch)
        # the column sums alone (their share of kernel_ms; partials in L2 as in a real
        # call), where there are any (not by columns: _launch.BWD_COLS_ROWS)
        part = work[("bwd", rows, d, dtype_name, by_cols)][1]
        cgrid, cblock = _launch.col_launch(G, d, 2)
        res["colsum_ms"] = None if by_cols else _gpu_ms(
            lambda: K.col_sum[dtype_name][cgrid, cblock, stream](part, grads),
            repeats, warmup, stream, batch)[0]
        nxt_api = _rotate(sets)

        def bwd_api():
            t = nxt_api()
            return numba_ln.layer_norm_backward(t["dy"], t["x"], t["mean"], t["rstd"], w,
                                                stream=stream)
        res["api_ms"] = _wall_ms(bwd_api, repeats, warmup, stream, stream.synchronize)

        def bwd_api_out():  # dx preallocated: the call still allocates dweight and dbias
            t = nxt_api()
            return numba_ln.layer_norm_backward(t["dy"], t["x"], t["mean"], t["rstd"], w,
                                                out=t["dx"], stream=stream)
        res["api_out_ms"] = _wall_ms(bwd_api_out, repeats, warmup, stream, stream.synchronize)
        res["alloc_ms"] = _alloc_ms([(rows, d), (2, d)], dtype, repeats, warmup, stream)
        res["api_pool_ms"] = _with_pool(lambda: _wall_ms(bwd_api, repeats, warmup, stream,
                                                          stream.synchronize))
        _, res["api_host_us"] = _with_pool(lambda: _gpu_ms(bwd_api, repeats, warmup, stream,
                                                           batch))
        _launch.backward(dy, x, mean, rstd, w, K.HAS_WEIGHT, dx, grads, stream, work=work)
        first = grads.copy_to_host()
        _launch.backward(dy, x, mean, rstd, w, K.HAS_WEIGHT, dx, grads, stream, work=work)
        res["bitwise_reproducible"] = bool(np.array_equal(first, grads.copy_to_host()))
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
            tw = torch.as_tensor(w, device="cuda").detach().requires_grad_(True)
            tb = torch.as_tensor(b, device="cuda").detach().requires_grad_(True)
            graphs = []
            for t in sets:
                tx = torch.as_tensor(t["x"], device="cuda").detach().requires_grad_(True)
                ty = torch.nn.functional.layer_norm(tx, (d,), tw, tb, 1e-5)
                graphs.append((ty, tx, torch.as_tensor(t["dy"], device="cuda")))
            tg = _rotate(graphs)

            def tb_fn():
                ty, tx, tdy = tg()
                return torch.autograd.grad(ty, (tx, tw, tb), tdy, retain_graph=True)
            res["torch_ms"], res["torch_host_us"] = _gpu_ms(
                tb_fn, repeats, warmup, stream, batch, record=_torch_record(torch))
            res["torch_api_ms"] = _wall_ms(tb_fn, repeats, warmup, stream,
                                           torch.cuda.synchronize)
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
        if r.get("torch_api_ms") and r.get("api_ms"):
            r["api_speedup_vs_torch"] = r["torch_api_ms"] / r["api_ms"]
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


def _kernel_info():
    """``{kernel[dtype]: "regs/local bytes"}`` of the kernels compiled so far."""
    from . import _kernels as K

    info = {}
    for key, k in K.KERNELS.items():
        try:
            for ov in k.overloads.values():
                info[key] = (f"{ov.regs_per_thread}/"
                             f"{getattr(ov, 'local_mem_per_thread', '?')}")
        except Exception:
            pass
    return info


def _fmt(v, spec):
    return "" if v is None else format(v, spec)


def markdown(data):
    env = data["environment"]
    lines = [f"GPU: {env.get('gpu')} (cc {env.get('compute_capability')}), numba "
             f"{env.get('numba')}, numba-cuda {env.get('numba_cuda')}, torch {env.get('torch')}.",
             "",
             "Median of %d repeats. GPU ms: CUDA events around a batch of %d calls that the "
             "GPU runs back to back (a spin kernel holds it while Python enqueues them), per "
             "call, so numba's Python launch overhead is excluded; host us: the Python time to "
             "enqueue one call (reported apart). GB/s = minimal traffic / GPU time (forward: "
             "read x, write y; backward: read x and dy, write dx). copy: the fastest "
             "device-to-device copy of the same bytes in the same run (named in the JSON). "
             "api ms: wall time per call of the public function (allocates its outputs) "
             "back to back, host and GPU together; torch api likewise; api out=: with the "
             "result array (y or dx) passed as out= (the rest still allocated); alloc ms: "
             "allocating and dropping those outputs alone, back to back; api pool: api with "
             "numba_ln.gpu.use_memory_pool() on; api host us: the host time to enqueue one "
             "such call (compare torch host us in the JSON). col sums: "
             "the backward's column-sum kernel alone (part of its GPU ms). %s"
             % (data["repeats"], data.get("batch", 0),
                "Successive calls cycle through buffer sets of together >= 256 MB (several "
                "times L2), so every call reads from DRAM." if data.get("cold") else
                "Hot: one buffer set, inputs that fit stay in L2."),
             "",
             "| shape | dtype | pass | GPU ms | GB/s | copy GB/s | % of copy | torch GPU ms "
             "| vs torch | host us | api ms | api out= ms | alloc ms | api pool ms | api host us "
             "| torch api ms | col sums ms |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
             "| ---: | ---: | ---: | ---: | ---: |"]
    for r in data["results"]:
        shape = "x".join(str(s) for s in r["shape"])
        if "error" in r:
            msg = " ".join(str(r["error"]).split()).replace("|", "/")[:100]
            lines.append(f"| {shape} | {r['dtype']} | {r['pass']} | error: {msg} "
                         "| | | | | | | | | | | | | |")
            continue
        lines.append(
            f"| {shape} | {r['dtype']} | {r['pass']} | {_fmt(r.get('kernel_ms'), '.4f')} | "
            f"{_fmt(r.get('kernel_GBps'), '.0f')} | {_fmt(r.get('copy_GBps'), '.0f')} | "
            f"{_fmt(r.get('pct_of_copy'), '.0f')} | {_fmt(r.get('torch_ms'), '.4f')} | "
            f"{_fmt(r.get('speedup_vs_torch'), '.2f')} | {_fmt(r.get('kernel_host_us'), '.0f')} | "
            f"{_fmt(r.get('api_ms'), '.4f')} | {_fmt(r.get('api_out_ms'), '.4f')} | "
            f"{_fmt(r.get('alloc_ms'), '.4f')} | {_fmt(r.get('api_pool_ms'), '.4f')} | "
            f"{_fmt(r.get('api_host_us'), '.0f')} | "
            f"{_fmt(r.get('torch_api_ms'), '.4f')} | {_fmt(r.get('colsum_ms'), '.4f')} |")
    kinfo = data.get("kernels")
    if kinfo:
        lines += ["", "Kernels (registers per thread / local bytes per thread): " + "; ".join(
            f"{k}: {v}" for k, v in sorted(kinfo.items()))]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="directory for gpu_bench.json and gpu_bench.md")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a logic check)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--hot", action="store_true",
                   help="reuse one buffer set (inputs that fit stay in L2) instead of cycling")
    p.add_argument("--batch", type=int, default=20,
                   help="calls a GPU-time measurement runs back to back")
    p.add_argument("--shapes", default=None,
                   help="e.g. 4096x1024:float32,32x65536:float32 instead of the default set")
    p.add_argument("--time-limit", type=float, default=200.0,
                   help="skip the remaining shapes after this many seconds")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch = _torch()
    data = {"environment": _environment(torch), "repeats": args.repeats,
            "batch": args.batch, "cold": not args.hot, "results": []}
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
            data["results"].extend(bench_shape(shape, dtype, args.repeats, args.warmup, torch,
                                               args.batch, not args.hot))
            data["kernels"] = _kernel_info()
        except Exception as exc:  # allocation of the inputs, ...
            data["results"].append({"shape": list(shape), "dtype": dtype, "pass": "all",
                                    "error": f"{type(exc).__name__}: {exc}"})
        write()  # after every shape: a timeout still leaves the results so far
        print(f"bench {shape} {dtype}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    print(write())
    return 0


if __name__ == "__main__":
    sys.exit(main())
