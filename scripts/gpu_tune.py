"""Tuning sweep of the GPU row-kernel variants on a real GPU (developer tool).

::

    python scripts/gpu_tune.py OUTDIR [--time-limit SECONDS]

For each benchmark shape, times the forward and the backward kernels of
several ``(tpr, kv)`` variants (:func:`numba_ln.gpu._kernels._make_variant`)
compiled with several launch bounds ``(threads, blocks a multiprocessor)``,
the committed choice of :data:`numba_ln.gpu._kernels.TABLE` among them, GPU
time per call measured as ``numba_ln.gpu.bench`` does (median of repeats of
back-to-back batches, inputs cycled through >= 256 MB so they come from DRAM).
Every candidate's output is compared with the committed kernels' (max abs
difference).  First, whole passes in other settings of the library
(:func:`tune_backward_plans`, :func:`tune_forward_plans`: programmatic
dependent launches, the cooperative split forward, the split rule).  Writes
``OUTDIR/gpu_tune.json`` and ``OUTDIR/gpu_tune.md``.
Kernels here are compiled without numba's on-disk cache (its key ignores
launch bounds).
"""

import argparse
import collections
import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from numba import cuda  # noqa: E402

from numba_ln.gpu import _kernels as K  # noqa: E402
from numba_ln.gpu import _fastlaunch, _launch  # noqa: E402
from numba_ln.gpu import bench as B  # noqa: E402


#: A candidate kernel: a ``(tpr, kv)`` variant compiled for ``blocks`` a
#: multiprocessor, with the options of ``_make_variant``: ``pipe`` (prefetch
#: the next row), ``chan`` (the forward's one-reduction statistics), ``acc``
#: (the backward's accumulators in shared memory), ``ks`` (the columns a
#: thread computes before storing them), ``l2`` (the backward prefetches its
#: next row into L2), ``vec`` (vector pieces of 2 or 4 columns), ``wbd`` (the
#: forward reads w[j], b[j] unclamped and applies them with no select, the
#: backward w[j]: ``w_direct``);
#: ``loops`` (a backward over column windows of ``tpr * kv``, its rows' sums
#: first by ``layer_norm_backward_rowsums``, as the widest variant's) and
#: ``slots`` (the backward's row slots; None: one full wave, the committed
#: rule); ``hold`` (the backward keeps its row in registers; None: by
#: ``HOLD_MAX``) and ``threads`` (a block's; None: the committed rule);
#: ``fused`` (the backward sums its partial rows itself after a barrier, in
#: slices of that many columns: ``fused_cols``; None: the column-sum kernel);
#: ``tail`` (``(tail, cols)``: the backward's last blocks to finish sum
#: its partial rows: ``tail_cols``).
Cand = collections.namedtuple(
    "Cand", "tpr kv blocks pipe chan acc ks l2 vec wbd loops slots hold threads fused tail")


def C(tpr, kv, blocks, pipe, chan=False, acc=False, ks=None, l2=False, vec=1, wbd=False,
      loops=False, slots=None, hold=None, threads=None, fused=None, tail=None):
    """A :data:`Cand`, ``ks`` by default ``STORE_CHUNK``."""
    return Cand(tpr, kv, blocks, pipe, chan, acc, ks or K.STORE_CHUNK, l2, vec, wbd, loops,
                slots, hold, threads or (K.MAX_THREADS if tpr <= 32 else tpr), fused, tail)


def fused(cols):
    """A backward candidate: the committed kernel (:func:`_committed`) with
    its column sums fused into it, in slices of ``cols`` columns."""
    return lambda committed: committed._replace(fused=cols, tail=None)


def tail(blocks, cols):
    """A backward candidate: the committed kernel (:func:`_committed`) with
    its column sums done by its last ``blocks`` blocks of each column window
    to finish, in slices of ``cols`` columns (``tail_cols``)."""
    return lambda committed: committed._replace(tail=(blocks, cols), fused=None)


#: (shape, dtype, forward candidates, backward candidates); the committed
#: variant is added to each list (a candidate may be a function of the
#: committed one: :func:`fused`).  The fourth to sixth sweeps (sessions 9
#: and 10, H200, docs/gpu_bench_h200.md) measured vector pieces, direct w/b
#: reads, narrower windows, rows held past HOLD_MAX, other threads a block,
#: other row slots and column-sum blocks; what won is committed (``VECTOR``,
#: ``DIRECT_WB``, ``HOLD_ROWS``, ``LONG_ROWS``, the column-sum blocks and
#: the 512x8 backward's launch bound in numba_ln/gpu/_kernels.py).  The
#: seventh (session 11; ``run7`` in docs/gpu_tune_h200.json): programmatic
#: dependent launches (adopted), the cooperative split forward and the
#: column sums fused into the backward (both slower), and the backward's
#: direct weight reads (``w_direct``) in the form that calls the group sums
#: once: 1-2% faster again.  The eighth: those direct reads once more, now
#: with programmatic launches, in the three variants that would take them
#: (``DIRECT_W_BWD``'s comment), with their candidate tests
#: (``CANDIDATES=1 TEST_K=backward_candidates``) in the same device call
#: (session 12 had no GPU: not run yet).  The ninth (session 12, with the
#: eighth's): the column sums by the backward's own last blocks (``tail``:
#: no column-sum launch, and only the last blocks wait) at the shapes
#: under or near the backward's target, and the fused column sums again,
#: now that the barrier's waiting blocks poll with plain loads instead of
#: atomics (``_blocks_barrier``).  At 4096x1024 the row kernel's 660
#: blocks (one wave) each write a partial row; at 32x65536 the LONG
#: backward's 256 blocks are 8 row slots of 32 windows.
PLAN = [
    ((4096, 1024), "float32", [], [tail(132, 8), tail(330, 8), tail(660, 8), tail(660, 16),
                                   tail(132, 32), fused(4)]),
    ((32, 65536), "float32", [], [tail(8, 128), tail(4, 128), tail(8, 32), tail(1, 128)]),
    ((65536, 128), "float32", [], [C(16, 8, 3, True, wbd=True), tail(132, 8), tail(396, 8)]),
    ((4096, 4096), "float32", [], [C(512, 8, 1, True, wbd=True), tail(132, 64),
                                   tail(132, 8)]),
    ((16384, 64), "float32", [], [C(8, 8, 3, True, wbd=True)]),
]


def _kind(c, kind):
    """The kind of candidate ``c``'s kernel for ``kind``: its backward may sum
    its own partial rows (``fused``, ``tail``)."""
    if kind == "layer_norm_backward" and (c.fused or c.tail):
        return kind + ("_fused" if c.fused else "_tail")
    return kind


def _compile(c, kind):
    """``(kernel, rows a block)`` of candidate ``c`` for ``kind``."""
    kind = _kind(c, kind)
    fn = K._make_variant(c.tpr, c.kv, c.loops, c.pipe, chan=c.chan, acc_smem=c.acc,
                         store_chunk=c.ks, l2_prefetch=c.l2, vec=c.vec,
                         wb_direct=c.wbd, w_direct=c.wbd, hold=c.hold,
                         threads=c.threads, fused_cols=c.fused, tail_cols=c.tail)[kind]
    bounds = (c.threads, c.blocks) if c.blocks > 1 else (c.threads,)
    if K.SIM:  # (a logic check of this script)
        return cuda.jit(fn), c.threads // c.tpr
    return cuda.jit(launch_bounds=bounds)(fn), c.threads // c.tpr


def _committed(shape, dtype, pass_):
    """The candidate (:func:`C`) of the committed kernel of a pass (the
    backward's row slots where its variant sets them: ``K.LONG_ROWS``)."""
    rows, d = shape
    slots = None
    if pass_ == "forward":
        v = K.variant(d, pass_)
    else:
        G, _, v, _ = _launch.backward_launch(rows, d, dtype)
        slots = G if v.grid else None
    blocks = v.blocks[dtype][0 if pass_ == "forward" else 1]
    l2 = pass_ == "backward" and (v.tpr, v.kv) in K.L2_PREFETCH
    vec = (v.fwd_width if pass_ == "forward" else v.bwd_width).get(dtype, 1)
    fused = (K.FUSED_COLS.get((v.tpr, v.kv)) if pass_ == "backward" and dtype in v.bwd_fused
             else None)
    tail = v.tail_cols if pass_ == "backward" and dtype in v.bwd_tail else None
    # (a backward held past HOLD_MAX: HOLD_ROWS; the seventh sweep timed 512x16 re-reading)
    hold = True if pass_ == "backward" and v.hold[dtype] and v.kv > K.HOLD_MAX else None
    return C(v.tpr, v.kv, blocks, v.pipe[dtype], l2=l2, vec=vec,
             wbd=dtype in (v.direct_wb if pass_ == "forward" else v.bwd_direct_w),
             loops=v.loops, slots=slots, fused=fused, hold=hold, tail=tail)


def tune_shape(shape, dtype_name, fwd_cands, bwd_cands, repeats, deadline, batch=20, warmup=2):
    rows, d = shape
    dtype = np.dtype(dtype_name)
    stream = cuda.default_stream()
    n = rows * d
    w, b, sets = B.buffers(shape, dtype)
    eps = dtype.type(1e-5)
    flags = np.int32(K.HAS_WEIGHT | K.HAS_BIAS)
    s0 = sets[0]
    for t in sets:
        _launch.forward(t["x"], w, b, int(flags), eps, t["y"], t["stats"], stream)
    ref_y = s0["y"].copy_to_host()
    grads = cuda.device_array((2, d), dtype)  # dweight, dbias
    _launch.backward(s0["dy"], s0["x"], s0["mean"], s0["rstd"], w, K.HAS_WEIGHT, s0["dx"], grads,
                     stream)
    ref_dx = s0["dx"].copy_to_host()
    ref_dw = grads[0].copy_to_host()
    committed_f = _committed(shape, dtype_name, "forward")
    committed_b = _committed(shape, dtype_name, "backward")
    out = []
    copy = {}
    for which, cands, committed in (("forward", fwd_cands, committed_f),
                                    ("backward", bwd_cands, committed_b)):
        cands = list(dict.fromkeys([committed] + [c(committed) if callable(c) else c
                                                  for c in cands]))
        if which == "backward":  # the committed statistics again (candidates rewrote them)
            for t in sets:
                _launch.forward(t["x"], w, b, int(flags), eps, t["y"], t["stats"], stream)
        m = n if which == "forward" else (3 * n + 1) // 2
        copy_ms = B._copy_ms(m, dtype, repeats, warmup, stream, batch, None, True)[0]
        copy[which] = copy_ms
        for c in cands:
            tpr, kv, pipe = c.tpr, c.kv, c.pipe
            res = {"shape": list(shape), "dtype": dtype_name, "pass": which, "tpr": tpr, "kv": kv,
                   "blocks": c.blocks, "pipe": pipe, "chan": c.chan, "acc_smem": c.acc,
                   "store_chunk": min(c.ks, kv), "l2_prefetch": c.l2, "vec": c.vec,
                   "wb_direct": c.wbd, "loops": c.loops, "hold": c.hold, "threads": c.threads,
                   "fused": c.fused, "tail": c.tail,
                   "committed": c == committed, "copy_ms": copy_ms}
            if time.monotonic() > deadline:
                res["error"] = "skipped: time limit"
                out.append(res)
                continue
            if tpr * kv < d and not (c.loops and which == "backward"):
                continue  # (the forward's windows: not swept)
            try:
                t0 = time.perf_counter()
                kern, R = _compile(c, "layer_norm_" + which)
                nxt = B._rotate(sets)
                kind = _kind(c, "layer_norm_" + which)
                sig = K.signatures(dtype_name)[kind]
                fits = 1 if K.SIM else kern.compile(sig).max_cooperative_grid_blocks(c.threads)
                if which == "forward":
                    grid = -(-rows // R)
                    if pipe:  # one wave of resident blocks
                        grid = min(grid, fits)
                    res["grid"] = grid
                    kern[grid, (tpr, R), stream](s0["x"], w, b, flags, eps, s0["y"],
                                                 s0["stats"])
                    res["compile_s"] = round(time.perf_counter() - t0, 2)
                    res["max_abs_diff"] = float(np.abs(s0["y"].copy_to_host() - ref_y).max())

                    def call():
                        t = nxt()
                        kern[grid, (tpr, R), stream](t["x"], w, b, flags, eps, t["y"],
                                                     t["stats"])
                else:
                    groups = -(-rows // R)
                    nwin = -(-d // (tpr * kv)) if c.loops else 1
                    # one full wave (the committed rule), or the candidate's slots
                    G = c.slots or max(1, min(groups, fits // nwin))
                    res["slots"], res["grid"] = G, G * nwin
                    sums = cuda.device_array((2, rows, nwin) if nwin > 1 else (2, 1, 1), dtype)
                    part = cuda.device_array((2, G, d), dtype)
                    cs = K.col_sum[dtype_name]
                    cgrid, cblock = _launch.col_launch(G, d, 2)
                    rowsums = (_compile(c, "layer_norm_backward_rowsums")[0]
                               if nwin > 1 and not c.fused else None)
                    hw = np.int32(K.HAS_WEIGHT)
                    bar = _launch.barriers(1 + G, stream)
                    tick = _launch.tickets(nwin, stream)

                    def call(t=None):
                        t = t or nxt()
                        args = (t["dy"], t["x"], t["mean"], t["rstd"], w, hw, sums, t["dx"],
                                part)
                        # (launched as the library launches them: its own
                        # launcher, programmatic dependent launches)
                        if rowsums is not None:
                            _fastlaunch.launch(rowsums, dtype_name,
                                               "layer_norm_backward_rowsums", groups * nwin,
                                               (tpr, R), stream, *args[:7])
                        if c.tail:  # (its last blocks sum the partial rows)
                            for phase in K.tail_phases(min(c.tail[0], G)):
                                _fastlaunch.launch(kern, dtype_name, kind, G * nwin, (tpr, R),
                                                   stream, *args, grads, tick,
                                                   np.int32(phase), pdl=nwin > 1)
                            return
                        if not c.fused:
                            _fastlaunch.launch(kern, dtype_name, kind, G * nwin, (tpr, R),
                                               stream, *args, pdl=nwin > 1)
                            _fastlaunch.launch(cs, dtype_name, "layer_norm_backward_colsum",
                                               cgrid, cblock, stream, part, grads,
                                               pdl=rows > 0)
                            return
                        for phase in K.FUSED_PHASES:  # (see fused_cols: rows' sums too)
                            _fastlaunch.launch(kern, dtype_name, kind, G * nwin, (tpr, R),
                                               stream, *args, grads, bar, np.int32(phase),
                                               cooperative=not K.SIM)
                    call(s0)
                    res["compile_s"] = round(time.perf_counter() - t0, 2)
                    res["max_abs_diff"] = float(np.abs(s0["dx"].copy_to_host() - ref_dx).max())
                    res["dweight_max_abs_diff"] = float(
                        np.abs(grads[0].copy_to_host() - ref_dw).max())
                ms, _ = B._gpu_ms(call, repeats, warmup, stream, batch)
                res["ms"] = ms
                res["pct_of_copy"] = round(100 * copy_ms / ms, 1) if ms and copy_ms else None
                try:
                    ov = next(iter(kern.overloads.values()))
                    res["regs"] = ov.regs_per_thread
                    res["local_bytes"] = getattr(ov, "local_mem_per_thread", None)
                except Exception:
                    pass
            except Exception as exc:
                res["error"] = f"{type(exc).__name__}: {exc}"
                res["traceback"] = traceback.format_exc(limit=3)[-1500:]
            out.append(res)
            keys = ("shape", "dtype", "pass", "tpr", "kv", "blocks", "pipe", "chan", "acc_smem",
                    "store_chunk", "l2_prefetch", "vec", "wb_direct", "loops", "hold",
                    "threads", "fused", "tail", "slots", "grid",
                    "ms", "pct_of_copy", "regs", "max_abs_diff", "error")
            print(json.dumps({k: res.get(k) for k in keys}), flush=True)
    out += tune_col_sums(shape, dtype_name, grads, repeats, deadline, batch, warmup)
    return out


#: ``(cols, most rows)`` of the column-sum blocks tried by
#: :func:`tune_col_sums`: the block's columns and ``ny_max`` of
#: :func:`numba_ln.gpu._launch.col_launch`.  (The sixth sweep also tried a
#: thread's loads issued 4, 8 and 16 rows at a time: no faster; ``run6``
#: in docs/gpu_tune_h200.json.)
COL_CONFIGS = ((8, 64), (16, 64), (32, 64), (64, 64), (8, 128), (16, 32))


def tune_col_sums(shape, dtype_name, grads, repeats, deadline, batch=20, warmup=2):
    """GPU time of the column sums alone over the committed backward's
    partial rows at ``shape``, in the blocks of :data:`COL_CONFIGS` (and the
    committed one), each checked against the committed kernel's sums
    (bitwise equal with as many rows a block: the same additions).  Partials
    as a real call leaves them (in L2 where they fit)."""
    rows, d = shape
    dtype = np.dtype(dtype_name)
    stream = cuda.default_stream()
    G = _launch.backward_launch(rows, d, dtype_name)[0]
    part = cuda.to_device(np.random.default_rng(0).standard_normal((2, G, d)).astype(dtype))
    ref = None
    out = []
    committed = (_launch.col_launch(G, d, 2)[1][0], K.COL_TY)
    cs = K.col_sum[dtype_name]
    for cols, ny_max in dict.fromkeys((committed,) + tuple(
            c for c in COL_CONFIGS if c[0] <= K.COL_THREADS)):
        grid, block = _launch.col_launch(G, d, 2, cols, ny_max)
        res = {"shape": list(shape), "dtype": dtype_name, "pass": "colsum", "partial_rows": G,
               "cols": cols, "ny": block[1], "committed": (cols, ny_max) == committed}
        if time.monotonic() > deadline:
            res["error"] = "skipped: time limit"
            out.append(res)
            continue
        try:
            cs[grid, block, stream](part, grads)
            got = grads.copy_to_host()
            ref = got if ref is None else ref
            res["bitwise_as_committed"] = bool(np.array_equal(got, ref))
            res["ms"], _ = B._gpu_ms(lambda: cs[grid, block, stream](part, grads), repeats,
                                     warmup, stream, batch)
        except Exception as exc:
            res["error"] = f"{type(exc).__name__}: {exc}"
        out.append(res)
        print(json.dumps(res), flush=True)
    return out


#: ``(shape, dtype)`` whose forward plans :func:`tune_forward_plans` times.
#: Session 9: 16 x 2**21 float32, split 0.25 ms, a block a row 2.45 ms.  The
#: seventh sweep: 32 x 65536 (the benchmark's few long rows, 36% of copy
#: bandwidth on an H200 as split), split against the split in one
#: cooperative launch (``FWD_COOP``), each with and without programmatic
#: dependent launches.  The tenth (session 13, no GPU: not run yet): the
#: split in one launch in thread block clusters (``FWD_CLUSTER``) at 32 x
#: 65536, and at 1024 x 65536 (256 MB: a block a row looping, committed)
#: in place of the looping kernel.
SPLIT_SHAPES = [((32, 65536), "float32"), ((1024, 65536), "float32")]

#: The settings :func:`tune_forward_plans` times, besides the committed one:
#: ``(FWD_SPLIT_FEW_ROWS, FWD_COOP, FWD_CLUSTER, PDL)``, None keeping the
#: committed value.
PLAN_SETTINGS = ((0, None, None, None), (None, True, None, None), (None, False, None, False),
                 (None, False, None, True), (None, True, None, False),
                 (None, False, "split", None), (None, False, "all", None))


def tune_forward_plans(shape, dtype_name, repeats, deadline, batch=20, warmup=2):
    """GPU time of the whole forward (``_launch.forward``) at ``shape`` as
    committed and in the settings of :data:`PLAN_SETTINGS`:
    :data:`numba_ln.gpu._launch.FWD_SPLIT_FEW_ROWS` off (rows too few to
    fill the GPU split over blocks, or a block a row looping over it),
    :data:`~numba_ln.gpu._launch.FWD_COOP` (the split in one cooperative
    launch), :data:`~numba_ln.gpu._launch.FWD_CLUSTER` (in one launch in
    thread block clusters) and :data:`numba_ln.gpu._fastlaunch.PDL` (its second kernel
    launched before the first has finished).  Each setting's ``y`` against
    the committed one's (``max_abs_diff``: 0 where the plans give the same
    bits)."""
    rows, d = shape
    if time.monotonic() > deadline:  # (before its buffers: 128 MB sets)
        return [{"shape": list(shape), "dtype": dtype_name, "pass": "forward plan",
                 "error": "skipped: time limit"}]
    dtype = np.dtype(dtype_name)
    stream = cuda.default_stream()
    w, b, sets = B.buffers(shape, dtype)
    eps = dtype.type(1e-5)
    flags = K.HAS_WEIGHT | K.HAS_BIAS
    copy_ms = B._copy_ms(rows * d, dtype, repeats, warmup, stream, batch, None, True)[0]
    def put(few, coop, cluster, pdl):
        _launch.FWD_SPLIT_FEW_ROWS, _launch.FWD_COOP = few, coop
        _launch.FWD_CLUSTER, _fastlaunch.PDL = cluster, pdl

    committed = (_launch.FWD_SPLIT_FEW_ROWS, _launch.FWD_COOP, _launch.FWD_CLUSTER,
                 _fastlaunch.PDL)
    settings = [committed] + [tuple(c if v is None else v for v, c in zip(s, committed))
                              for s in PLAN_SETTINGS]
    out = []
    ref = None
    for setting in dict.fromkeys(settings):
        put(*setting)
        few, coop, cluster, pdl = setting
        res = {"shape": list(shape), "dtype": dtype_name, "pass": "forward plan",
               "few_rows": few, "coop": coop, "cluster": cluster, "pdl": pdl,
               "committed": setting == committed, "copy_ms": copy_ms}
        try:
            res["plan"], res["grid"] = _launch.forward_plan(rows, d, dtype.itemsize,
                                                            dtype_name)[:2]

            def run(t, work):
                _launch.forward(t["x"], w, b, flags, eps, t["y"], t["stats"], stream, work)
            got = _time_whole(res, run, sets, lambda t: t["y"].copy_to_host(), deadline,
                              repeats, warmup, stream, batch)
            if got is None:
                out.append(res)
                continue
            ref = got if ref is None else ref
            res["max_abs_diff"] = float(np.abs(got - ref).max())
        except Exception as exc:
            res["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            put(*committed)
        out.append(res)
        print(json.dumps(res), flush=True)
    return out


#: ``(shape, dtype)`` whose whole backward :func:`tune_backward_plans`
#: times with and without programmatic dependent launches (the column sums,
#: and the window backward after its row sums, launched before the kernel
#: they wait on has finished): the shapes where the column sums' launch is
#: the largest share (D = 1024: about a quarter of the backward, session 10)
#: and the three-kernel backward of few long rows.
BACKWARD_PLAN_SHAPES = [((4096, 1024), "float32"), ((32, 65536), "float32"),
                        ((4096, 4096), "float32"), ((65536, 128), "float32")]


def _time_whole(res, run, sets, fetch, deadline, repeats, warmup, stream, batch):
    """``run(buffers, work)`` (a whole pass) on ``sets[0]``, then timed over
    the rotating ``sets`` into ``res`` (``ms``, ``pct_of_copy`` against its
    ``copy_ms``); returns ``fetch(sets[0])`` of the first run, or None past
    the ``deadline`` (``res["error"]`` says so)."""
    if time.monotonic() > deadline:
        res["error"] = "skipped: time limit"
        return None
    nxt = B._rotate(sets)
    work = {}

    def call(t=None):
        run(t or nxt(), work)
    call(sets[0])
    got = fetch(sets[0])
    res["ms"], _ = B._gpu_ms(call, repeats, warmup, stream, batch)
    res["pct_of_copy"] = (round(100 * res["copy_ms"] / res["ms"], 1)
                          if res["ms"] and res.get("copy_ms") else None)
    return got


def tune_backward_plans(shape, dtype_name, repeats, deadline, batch=20, warmup=2):
    """GPU time of the whole backward (``_launch.backward``: row kernels and
    column sums) at ``shape`` with :data:`numba_ln.gpu._fastlaunch.PDL` as
    committed and switched, and (rows of several windows, at most
    ``COLS_THREADS`` of them) by columns (:data:`~numba_ln.gpu._launch.BWD_COLS_ROWS`;
    the tenth sweep, session 13: not run yet); ``bitwise_as_committed``:
    dx, dweight and dbias the committed setting's bits, ``max_abs_diff``:
    how far from them."""
    rows, d = shape
    if time.monotonic() > deadline:
        return [{"shape": list(shape), "dtype": dtype_name, "pass": "backward plan",
                 "error": "skipped: time limit"}]
    dtype = np.dtype(dtype_name)
    stream = cuda.default_stream()
    w, b, sets = B.buffers(shape, dtype)
    eps = dtype.type(1e-5)
    for t in sets:
        _launch.forward(t["x"], w, b, K.HAS_WEIGHT | K.HAS_BIAS, eps, t["y"], t["stats"], stream)
    n = rows * d
    copy_ms = B._copy_ms((3 * n + 1) // 2, dtype, repeats, warmup, stream, batch, None, True)[0]
    grads = cuda.device_array((2, d), dtype)
    committed = (_fastlaunch.PDL, _launch.BWD_COLS_ROWS)
    settings = [committed, (not committed[0], committed[1])]
    nwin = _launch.backward_launch(rows, d, dtype_name)[1]
    if nwin > 1 and rows <= K.COLS_THREADS:
        settings.append((committed[0], K.COLS_THREADS))
    out = []
    ref = None
    for pdl, cols in dict.fromkeys(settings):
        _fastlaunch.PDL, _launch.BWD_COLS_ROWS = pdl, cols
        res = {"shape": list(shape), "dtype": dtype_name, "pass": "backward plan", "pdl": pdl,
               "cols_rows": cols, "by_columns": _launch.by_columns(rows, nwin),
               "committed": (pdl, cols) == committed, "copy_ms": copy_ms}
        try:
            def run(t, work):
                _launch.backward(t["dy"], t["x"], t["mean"], t["rstd"], w, K.HAS_WEIGHT,
                                 t["dx"], grads, stream, work)
            got = _time_whole(res, run, sets, lambda t: np.concatenate(
                [t["dx"].copy_to_host().ravel(), grads.copy_to_host().ravel()]), deadline,
                repeats, warmup, stream, batch)
            if got is None:
                out.append(res)
                continue
            ref = got if ref is None else ref
            res["bitwise_as_committed"] = bool(np.array_equal(got, ref))
            res["max_abs_diff"] = float(np.abs(got - ref).max())
        except Exception as exc:
            res["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            _fastlaunch.PDL, _launch.BWD_COLS_ROWS = committed
        out.append(res)
        print(json.dumps(res), flush=True)
    return out


def _shape_notes(r):
    """`` hold``, `` (256 threads)``: a candidate's ``hold`` and ``threads``
    where they are not the committed rule's."""
    notes = ""
    if r.get("hold") is not None:
        notes += " hold" if r["hold"] else " re-read"
    if r.get("threads") and r["threads"] != (K.MAX_THREADS if r["tpr"] <= 32 else r["tpr"]):
        notes += f" ({r['threads']} threads)"
    if r.get("fused"):
        notes += f" fused column sums ({r['fused']} columns)"
    if r.get("tail"):
        notes += f" column sums by the last {r['tail'][0]} blocks ({r['tail'][1]} columns)"
    return notes


def markdown(results):
    lines = ["| shape | dtype | pass | tpr x kv | blocks/SM bound | prefetch "
             "| one-reduction stats | shared accumulators | store chunk | L2 prefetch | vector "
             "| direct w, b | grid | regs | GPU ms | % of copy | committed | max abs diff |",
             "| --- | --- | --- | --- | ---: | --- | --- | --- | ---: | --- | ---: | --- | ---: "
             "| ---: | ---: | ---: | --- | ---: |"]
    cols = ["", "Column sums alone (the committed backward's partial rows; blocks of cols x ny "
            "threads):", "", "| shape | dtype | partial rows | cols | ny | GPU ms | committed "
            "| bitwise as committed |", "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    bplans = ["", "Whole backward with and without programmatic dependent launches, and by "
              "columns (few long rows):", "",
              "| shape | dtype | pdl | by columns | GPU ms | % of copy | committed "
              "| bitwise as committed | max abs diff |",
              "| --- | --- | --- | --- | ---: | ---: | --- | --- | ---: |"]
    plans = ["", "Forward plans of few long rows (split over blocks, or a block a row "
             "looping; coop: the split in one cooperative launch; cluster: in one launch in "
             "thread block clusters; pdl: programmatic dependent launches):", "",
             "| shape | dtype | plan | pdl | grid | GPU ms | % of copy | committed | max abs diff |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | --- | ---: |"]
    for r in results:
        if "ms" not in r:
            continue
        if r["pass"] == "forward plan":
            plans.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['dtype']} | {r['plan']} "
                         f"| {'yes' if r.get('pdl') else ''} "
                         f"| {r['grid']} | {r['ms']:.4f} | {r.get('pct_of_copy', '')} | "
                         f"{'yes' if r['committed'] else ''} | {r['max_abs_diff']:.2g} |")
            continue
        if r["pass"] == "backward plan":
            bplans.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['dtype']} "
                          f"| {'yes' if r['pdl'] else ''} | {'yes' if r['by_columns'] else ''} "
                          f"| {r['ms']:.4f} "
                          f"| {r.get('pct_of_copy', '')} | {'yes' if r['committed'] else ''} "
                          f"| {'yes' if r.get('bitwise_as_committed') else 'NO'} "
                          f"| {r.get('max_abs_diff', 0):.2g} |")
            continue
        if r["pass"] == "colsum":
            cols.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['dtype']} | {r['partial_rows']} "
                        f"| {r['cols']} | {r['ny']} | {r['ms']:.4f} | "
                        f"{'yes' if r['committed'] else ''} | "
                        f"{'yes' if r.get('bitwise_as_committed') else 'NO'} |")
            continue
        lines.append(f"| {r['shape'][0]}x{r['shape'][1]} | {r['dtype']} | {r['pass']} | "
                     f"{r['tpr']}x{r['kv']}{_shape_notes(r)} | {r['blocks']} | "
                     f"{'yes' if r['pipe'] else ''} | "
                     f"{'yes' if r.get('chan') else ''} | {'yes' if r.get('acc_smem') else ''} | "
                     f"{r.get('store_chunk', '')} | {'yes' if r.get('l2_prefetch') else ''} | "
                     f"{r.get('vec', 1) if r.get('vec', 1) > 1 else ''} | "
                     f"{'yes' if r.get('wb_direct') else ''} | "
                     f"{r.get('grid', '')}{' (%s slots)' % r['slots'] if r.get('slots') else ''}"
                     f"{' looped' if r.get('loops') else ''} | {r.get('regs', '')} | "
                     f"{r['ms']:.4f} | {r.get('pct_of_copy', '')} | "
                     f"{'yes' if r['committed'] else ''} | {r.get('max_abs_diff', 0):.2g} |")
    if len(cols) > 5:
        lines += cols
    if len(plans) > 5:
        lines += plans
    if len(bplans) > 5:
        lines += bplans
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--time-limit", type=float, default=150.0)
    p.add_argument("--batch", type=int, default=20, help="calls a timing runs back to back")
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    deadline = time.monotonic() + a.time_limit
    results = []
    for shape, dt in BACKWARD_PLAN_SHAPES:
        try:
            results += tune_backward_plans(shape, dt, a.repeats, deadline, a.batch, a.warmup)
        except Exception as exc:
            results.append({"shape": list(shape), "dtype": dt, "pass": "backward plan",
                            "error": f"{type(exc).__name__}: {exc}"})
    for shape, dt in SPLIT_SHAPES:
        try:
            results += tune_forward_plans(shape, dt, a.repeats, deadline, a.batch, a.warmup)
        except Exception as exc:
            results.append({"shape": list(shape), "dtype": dt, "pass": "forward plan",
                            "error": f"{type(exc).__name__}: {exc}"})
    for shape, dt, fc, bc in PLAN:
        try:
            results += tune_shape(shape, dt, fc, bc, a.repeats, deadline, a.batch, a.warmup)
        except Exception as exc:
            results.append({"shape": list(shape), "dtype": dt,
                            "error": f"{type(exc).__name__}: {exc}"})
    with open(os.path.join(a.out, "gpu_tune.json"), "w") as f:
        json.dump({"environment": B._environment(None), "results": results}, f, indent=1)
    with open(os.path.join(a.out, "gpu_tune.md"), "w") as f:
        f.write(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
