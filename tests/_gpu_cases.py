"""GPU test cases shared by the simulator tests and the real-GPU tests."""

import importlib.util
import os

import numpy as np
from _reference import ln_backward_ref, ln_ref
from numba import cuda

from numba_ln.gpu import _kernels

_CANDIDATES = {}


def load_script(name):
    """``scripts/<name>.py`` as a module (a script, not a package)."""
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_tune_script():
    """``scripts/gpu_tune.py`` as a module."""
    return load_script("gpu_tune")


def _jit(fn, tpr, blocks):
    """``fn`` compiled as variant ``tpr``'s kernels are, for ``blocks`` a
    multiprocessor (no launch bound under the simulator)."""
    if _kernels.SIM:
        return cuda.jit(fn)
    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    return cuda.jit(launch_bounds=(threads, blocks) if blocks > 1 else (threads,))(fn)


def _forward_candidate(tpr, kv, pipe, blocks, opts):
    key = (tpr, kv, pipe, blocks, tuple(sorted(opts.items())))
    if key not in _CANDIDATES:
        fn = _kernels._make_variant(tpr, kv, False, pipe, **opts)["layer_norm_forward"]
        _CANDIDATES[key] = _jit(fn, tpr, blocks)
    return _CANDIDATES[key]


def check_one_reduction_statistics(tpr, kv, pipe, dtype, rng, rtol, atol, blocks=1):
    """The forward with one-reduction statistics (``chan=True``): see
    :func:`check_forward_candidate`."""
    check_forward_candidate(tpr, kv, pipe, dtype, rng, rtol, atol, blocks, chan=True)


def run_backward_builds(kernels, tpr, R, rows, d, dtype, rng, G):
    """Each of ``kernels`` (``{key: backward kernel}``, builds of one
    variant's backward) on the same random rows, ``G`` row slots: the float64
    reference ``(dx, dweight, dbias)`` and ``{key: (dx, partial sums)}`` on
    the host."""
    from numba_ln import gpu

    x = rng.standard_normal((rows, d)).astype(dtype)
    dy = rng.standard_normal((rows, d)).astype(dtype)
    w = cuda.to_device(rng.standard_normal(d).astype(dtype))
    _, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    sums = cuda.device_array((2, 1, 1), dtype)
    out = {}
    for key, k in kernels.items():
        dx = cuda.device_array((rows, d), dtype)
        part = cuda.device_array((2, G, d), dtype)
        k[G, (tpr, R)](cuda.to_device(dy), cuda.to_device(x), m, r, w,
                       np.int32(_kernels.HAS_WEIGHT), sums, dx, part)
        out[key] = (dx.copy_to_host(), part.copy_to_host())
    ref = ln_backward_ref(dy, x, w.copy_to_host(), 1, mean=m.copy_to_host(),
                          rstd=r.copy_to_host())
    return ref, out


def check_vector_backward(tpr, kv, pipe, dtype, rng, tol, blocks=1, vec=2):
    """The backward of variant ``tpr x kv`` with vector pieces of ``vec``
    (``_make_variant(..., vec=vec)``, a ``scripts/gpu_tune.py`` candidate)
    against the committed layout's: the partial sums of dweight/dbias are the
    same additions in the same order (bitwise equal), dx within rounding of
    the float64 reference (its row sums are added in another order).  With
    several groups a block or a block a row, several row slots, rows that
    leave threads wholly or partly past the end (multiples of ``vec``
    columns, as the vector loads need)."""
    R = (_kernels.MAX_THREADS if tpr <= 32 else tpr) // tpr
    kern = {v: _jit(_kernels._make_variant(tpr, kv, False, pipe, vec=v)["layer_norm_backward"],
                    tpr, blocks) for v in (1, vec)}
    cap = tpr * kv
    for d in sorted({d for d in (cap, cap - vec, tpr * vec + vec, tpr + vec, vec) if d <= cap}):
        (ref_dx, ref_dw, _), out = run_backward_builds(kern, tpr, R, 5 * R + 3, d, dtype, rng, 3)
        assert np.array_equal(out[1][1], out[vec][1]), (tpr, kv, d)
        np.testing.assert_allclose(out[vec][0], ref_dx, **tol)
        np.testing.assert_allclose(out[vec][0], out[1][0], **tol)
        np.testing.assert_allclose(out[vec][1][0].sum(0), ref_dw, rtol=1e-4, atol=1e-4)


def check_backward_candidate(tpr, kv, pipe, dtype, rng, tol, blocks=1, **opts):
    """The backward of variant ``tpr x kv`` built with ``opts`` (options of
    ``_make_variant``: ``w_direct``, ``hold``, ``threads``, ``acc_smem``,
    ``scripts/gpu_tune.py`` candidates) against the committed build's and the
    float64 reference (the committed build with ``opts``' vector pieces,
    if any: the same columns a thread).

    Rows that fill the variant or leave threads partly or wholly past the
    end, two row slots (blocks walk two row groups), with a weight
    and without (ones, as :func:`numba_ln.gpu._launch.full_params` passes
    for ``w_direct``).  Where the block has as many rows as the committed
    build's, the partial sums of dweight/dbias are the same additions (the
    same bits), and so is dx but where a direct weight read lets the
    compiler fuse ``dy * w`` with an addition (with a weight, on a GPU):
    there within rounding.
    """
    threads = opts.get("threads") or (_kernels.MAX_THREADS if tpr <= 32 else tpr)
    R0 = (_kernels.MAX_THREADS if tpr <= 32 else tpr) // tpr
    R = threads // tpr

    def build(o, t):
        fn = _kernels._make_variant(tpr, kv, False, pipe, **o)["layer_norm_backward"]
        if _kernels.SIM:
            return cuda.jit(fn)
        return cuda.jit(launch_bounds=(t, blocks) if blocks > 1 else (t,))(fn)

    key = ("bwd", tpr, kv, pipe, blocks, tuple(sorted(opts.items())))
    if key not in _CANDIDATES:
        layout = {"vec": opts["vec"]} if "vec" in opts else {}  # (the same columns a thread)
        base = ("bwd", tpr, kv, pipe, blocks, tuple(layout.items()))
        if base not in _CANDIDATES:
            _CANDIDATES[base] = build(layout, R0 * tpr)
        _CANDIDATES[key] = (_CANDIDATES[base], build(opts, threads))
    k0, k1 = _CANDIDATES[key]
    from numba_ln import gpu

    for d in sorted({tpr * kv, tpr + 1}):
        rows = 3 * max(R, R0) + 1
        x = rng.standard_normal((rows, d)).astype(dtype)
        dy = rng.standard_normal((rows, d)).astype(dtype)
        _, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
        for flags in (_kernels.HAS_WEIGHT, 0):
            w = rng.standard_normal(d).astype(dtype) if flags else np.ones(d, dtype)
            got = []
            for kern, rr in ((k0, R0), (k1, R)):
                dx = cuda.device_array((rows, d), dtype)
                part = cuda.device_array((2, 2, d), dtype)
                kern[2, (tpr, rr)](cuda.to_device(dy), cuda.to_device(x), m, r,
                                   cuda.to_device(w), np.int32(flags),
                                   cuda.device_array((2, 1, 1), dtype), dx, part)
                got.append((dx.copy_to_host(), part.copy_to_host()))
            (dx0, p0), (dx1, p1) = got
            ref_dx, ref_dw, ref_db = ln_backward_ref(
                dy, x, w if flags else None, 1, mean=m.copy_to_host(), rstd=r.copy_to_host())
            np.testing.assert_allclose(dx1, ref_dx, **tol)
            np.testing.assert_allclose(p1[1].sum(0), ref_db, rtol=1e-4, atol=1e-4)
            if flags:
                np.testing.assert_allclose(p1[0].sum(0), ref_dw, rtol=1e-4, atol=1e-4)
            fused = opts.get("w_direct") and flags and not _kernels.SIM
            if R == R0:
                assert np.array_equal(p0, p1), (tpr, kv, d, flags, opts)
            if not fused:
                assert np.array_equal(dx0, dx1), (tpr, kv, d, flags, opts)


def check_forward_candidate(tpr, kv, pipe, dtype, rng, rtol, atol, blocks=1, **opts):
    """The forward of variant ``tpr x kv`` built with ``opts`` (options of
    ``_make_variant``: ``chan=True``, ``vec=4``..., ``scripts/gpu_tune.py``
    candidates) against the float64 reference.

    Groups of a few threads and of a block, rows that fill the variant,
    leave threads partly or wholly past the end, or have one column (one
    vector piece with ``vec``; rows of a multiple of ``vec`` columns, as
    the vector loads need); rows with a large common offset, near the top
    of the float range (the scaled redo), a NaN; blocks that walk several
    rows (fewer blocks than groups); no weight (a dummy of ``vec`` values,
    as the vector loads need, or with ``wb_direct`` ones).
    """
    vec = opts.get("vec", 1)
    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    R = threads // tpr
    kernel = _forward_candidate(tpr, kv, pipe, blocks, opts)
    big = np.finfo(dtype).max / 4
    ds = {tpr * kv, tpr * kv - 1, tpr + 1, 3, 1}
    if vec > 1:
        ds = {d for d in (tpr * kv, tpr * kv - vec, tpr * vec + vec, 3 * vec, vec)
              if d <= tpr * kv}
    for d in sorted(ds):
        rows = 3 * R + 2
        x = rng.standard_normal((rows, d)).astype(dtype)
        x[0] = 1e4 + 0.1 * x[0]  # large offset: accuracy of the shift
        if d > 1:
            x[1] = big * (-1.0) ** np.arange(d)  # overflows the sums: the scaled redo
            x[2, -1] = np.nan
        w = rng.standard_normal(d).astype(dtype)
        b = rng.standard_normal(d).astype(dtype)
        flags = _kernels.HAS_WEIGHT | _kernels.HAS_BIAS
        if d == 3 * vec:  # no weight: its dummy
            flags = _kernels.HAS_BIAS
        y = cuda.device_array((rows, d), dtype)
        stats = cuda.device_array((2, rows), dtype)  # mean, rstd
        grid = max(1, -(-rows // R) // 2)  # blocks walk two or more row groups
        if flags & _kernels.HAS_WEIGHT:
            wd = w
        elif opts.get("wb_direct"):  # ones: read and multiplied by
            wd = np.ones(d, dtype)
        else:  # any values: read (up to a vector piece) and selected past
            wd = np.full(max(vec, 1), 7, dtype)
        kernel[grid, (tpr, R)](cuda.to_device(x), cuda.to_device(wd), cuda.to_device(b),
                               np.int32(flags), dtype(1e-5), y, stats)
        ry, rm, rr = ln_ref(x, w if flags & _kernels.HAS_WEIGHT else None, b, (1,))
        got = y.copy_to_host()
        gm, gr = stats.copy_to_host()
        keep = np.arange(rows) != 0
        if d > 1:
            assert np.isnan(got[2]).all() and np.isnan(gm[2]), (tpr, kv, d)
            keep &= np.arange(rows) != 2
        np.testing.assert_allclose(got[keep], ry[keep], rtol=rtol, atol=atol)
        # the mean to within rounding of the row's scale (|mean| + std): the
        # shift is the row's first value, so an error of ~eps * |x[0] - mean|
        scale = np.abs(rm) + 1 / rr
        assert (np.abs(gm - rm)[keep] <= rtol * scale[keep]).all(), (tpr, kv, d)
        np.testing.assert_allclose(gr[keep], rr[keep], rtol=rtol)
        # the offset row: the float64 reference's own mean is off by ~1e4 * eps
        loose = 2e-5 if dtype == np.float32 else 1e-9
        np.testing.assert_allclose(got[0], ry[0], rtol=0, atol=loose)
        np.testing.assert_allclose(gm[0], rm[0], rtol=loose)
        np.testing.assert_allclose(gr[0], rr[0], rtol=loose)


def misaligned(a):
    """A copy of host array ``a`` on the device, its data one value past an
    aligned address (a C-contiguous view into a larger array)."""
    big = cuda.to_device(np.concatenate([np.zeros(1, a.dtype), a.ravel()]))
    return big[1:].reshape(a.shape)


def check_direct_wb_variant(d, dtype, rng, tol):
    """The forward of rows of ``d`` through the public call, where its variant
    is of :data:`~numba_ln.gpu._kernels.DIRECT_WB` (it reads w and b at every
    column and computes ``h * w + b`` with no select; an absent one is
    passed as D ones or D times -0.0), against the same variant's kernel
    that selects (with a dummy of 4 values): without a bias, the same bits,
    -0.0 and zeros included (``h * w + -0.0`` and ``h * 1 + -0.0`` are
    ``h * w`` and ``h``); with a bias, within the rounding of one operation,
    since on a GPU ``h * w + b`` is one fused multiply-add where the
    selecting kernel's branches keep a multiply and an add, and without a
    weight that kernel fuses ``h``'s own multiply with the add of ``b``
    (seen on an H200); and the float64 reference within ``tol``."""
    from numba_ln import gpu
    from numba_ln.gpu import _launch

    name = np.dtype(dtype).name
    v = _kernels.variant(d)
    rows = 2 * v.rows_per_block + 1
    x = rng.standard_normal((rows, d)).astype(dtype)
    x[1] = 0.0  # rows of zeros: y is +0.0 or -0.0, kept as the select gives it
    x[2, : d // 2] = -1.0
    x[2, d // 2:] = 1.0
    w = rng.standard_normal(d).astype(dtype)
    b = rng.standard_normal(d).astype(dtype)
    fns = _kernels._make_variant(v.tpr, v.kv, False, v.pipe[name], vec=v.fwd_width.get(name, 1),
                                 vec_access=False)
    selecting = _jit(fns["layer_norm_forward"], v.tpr, v.blocks[name][0])
    kind, grid, _, block = _launch.forward_plan(rows, d, x.itemsize, name)
    assert kind == "rows"
    dummy = cuda.to_device(np.zeros(4, dtype))
    for ww, bb in ((w, b), (w, None), (None, b), (None, None)):
        got = gpu.layer_norm(cuda.to_device(x), None if ww is None else cuda.to_device(ww),
                             None if bb is None else cuda.to_device(bb)).copy_to_host()
        flags = (_kernels.HAS_WEIGHT if ww is not None else 0) | (
            _kernels.HAS_BIAS if bb is not None else 0)
        y = cuda.device_array_like(x)
        stats = cuda.device_array((2, rows), dtype)
        selecting[grid, block](cuda.to_device(x), dummy if ww is None else cuda.to_device(ww),
                               dummy if bb is None else cuda.to_device(bb), np.int32(flags),
                               dtype(1e-5), y, stats)
        want = y.copy_to_host()
        if bb is None:
            assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (d, ww is None)
        else:  # |h * w| <= |y| + |b|: a rounding of the product and one of the sum
            ulp = 2 * np.finfo(dtype).eps * (np.abs(want) + np.abs(b))
            assert (np.abs(got - want) <= ulp).all(), (d, ww is None, np.abs(got - want).max())
        np.testing.assert_allclose(got, ln_ref(x, ww, bb, (1,))[0], **tol)
    assert _launch.full_params(dummy, dummy, 0, d, dtype, 0)[1].copy_to_host().tobytes() == \
        np.full(d, -0.0, dtype).tobytes()


def check_vector_variant(d, dtype, rng, tol, monkeypatch):
    """The public calls on rows of ``d``, where a pass's variant is of
    :data:`~numba_ln.gpu._kernels.VECTOR`: aligned arrays go to its
    vector-access build, others (an input one value off, or D not a multiple
    of the width) to the same layout a value at a time, with the same bits,
    forward (with and without a weight: its dummy) and backward (also where
    it sums its own partial rows, :data:`~numba_ln.gpu._kernels.TAIL_COLS`);
    a pass without pieces takes its plain kernel.  Results within ``tol``
    of the float64 reference."""
    from numba_ln import gpu
    from numba_ln.gpu import _launch

    launched = []
    go = _launch._go

    def spy(kernel, *args, **kw):
        launched.append(kernel)
        return go(kernel, *args, **kw)

    monkeypatch.setattr(_launch, "_go", spy)
    name = np.dtype(dtype).name
    fv, bv = _kernels.variant(d), _kernels.variant(d, "backward")
    assert (fv.tpr, fv.kv) in _kernels.VECTOR or (bv.tpr, bv.kv) in _kernels.VECTOR
    fwidth, bwidth = fv.fwd_width.get(name, 1), bv.bwd_width.get(name, 1)
    rows = 2 * max(fv.rows_per_block, bv.rows_per_block) + 1
    x = rng.standard_normal((rows, d)).astype(dtype)
    dy = rng.standard_normal((rows, d)).astype(dtype)
    w = rng.standard_normal(d).astype(dtype)
    b = rng.standard_normal(d).astype(dtype)
    outs = {}
    for aligned in (True, False):
        place = cuda.to_device if aligned else misaligned
        launched.clear()
        y, m, r = gpu.layer_norm(place(x), place(w), place(b), return_stats=True)
        y0 = gpu.layer_norm(place(x), bias=place(b))
        dx, dw, db = gpu.layer_norm_backward(place(dy), place(x), m, r, place(w))
        fvec = fwidth > 1 and aligned and d % fwidth == 0
        bvec = bwidth > 1 and aligned and d % bwidth == 0
        assert launched[0] is (fv.fwd_vec if fvec else fv.fwd)[name]
        assert launched[1] is (fv.fwd_vec if fvec else fv.fwd)[name]
        # (a variant of TAIL_COLS: its backward that sums its own partial rows)
        tail = (bv.bwd_tail_vec if bvec else bv.bwd_tail).get(name)
        assert launched[2] is (tail or (bv.bwd_vec if bvec else bv.bwd)[name])
        assert (_kernels.col_sum[name] in launched) == (tail is None)
        outs[aligned] = [a.copy_to_host() for a in (y, m, r, y0, dx, dw, db)]
    for a, b_ in zip(outs[True], outs[False]):
        assert np.array_equal(a, b_)
    ry, rm, rr = ln_ref(x, w, b, (1,))
    np.testing.assert_allclose(outs[True][0], ry, **tol)
    np.testing.assert_allclose(outs[True][3], ln_ref(x, None, b, (1,))[0], **tol)
    rdx, rdw, rdb = ln_backward_ref(dy, x, w, 1, mean=outs[True][1], rstd=outs[True][2])
    np.testing.assert_allclose(outs[True][4], rdx, **tol)
    np.testing.assert_allclose(outs[True][5], rdw, rtol=1e-4, atol=1e-4 * max(1, rows ** 0.5))


def check_direct_w_backward_variant(d, dtype, rng, tol):
    """The backward of rows of ``d`` through the public call, where its
    variant is of :data:`~numba_ln.gpu._kernels.DIRECT_W_BWD` (it reads w at
    every column and computes ``dy * w`` with no select; an absent weight is
    passed as D ones), against the same variant's kernel that selects (with
    a dummy weight of 4 values where there is none), in the same launch:
    without a weight, dx and dbias with the same bits (``dy * 1`` is
    ``dy``); with one, dweight and dbias with the same bits (the same
    additions) and dx within a rounding (on a GPU, NVVM fuses ``dy * w``
    with the addition that follows); and the float64 reference within
    ``tol``."""
    from numba_ln import gpu
    from numba_ln.gpu import _launch

    name = np.dtype(dtype).name
    G, nwin, v, block = _launch.backward_launch(2 * 3 + 1, d, name)
    assert nwin == 1 and name in v.bwd_direct_w
    rows = 3 * G * block[1] + 1  # (blocks walk several row groups)
    G = _launch.backward_launch(rows, d, name)[0]
    x = rng.standard_normal((rows, d)).astype(dtype)
    dy = rng.standard_normal((rows, d)).astype(dtype)
    w = rng.standard_normal(d).astype(dtype)
    fns = _kernels._make_variant(v.tpr, v.kv, False, v.pipe[name], vec=v.bwd_width.get(name, 1),
                                 vec_access=False)
    selecting = _jit(fns["layer_norm_backward"], v.tpr, v.blocks[name][1])
    _, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    for ww in (w, None):
        got = gpu.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), m, r,
                                      None if ww is None else cuda.to_device(ww))
        got = [None if a is None else a.copy_to_host() for a in got]
        dx = cuda.device_array((rows, d), dtype)
        part = cuda.device_array((2, G, d), dtype)
        selecting[G, block](cuda.to_device(dy), cuda.to_device(x), m, r,
                            cuda.to_device(np.zeros(4, dtype) if ww is None else ww),
                            np.int32(0 if ww is None else _kernels.HAS_WEIGHT),
                            cuda.device_array((2, 1, 1), dtype), dx, part)
        grads = cuda.device_array((2, d), dtype)
        _kernels.col_sum[name][_launch.col_launch(G, d, 2)](part, grads)
        want_dx, (want_dw, want_db) = dx.copy_to_host(), grads.copy_to_host()
        assert np.array_equal(got[2], want_db), d
        if ww is None:
            assert got[1] is None
            assert np.array_equal(got[0], want_dx), d
        else:
            assert np.array_equal(got[1], want_dw), d
            # a rounding of each term of dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
            rs = r.copy_to_host().astype(np.float64)[:, None]
            xhat = (x - m.copy_to_host()[:, None]) * rs
            g = np.abs(dy.astype(np.float64) * w)
            terms = g + g.mean(1, keepdims=True) + np.abs(xhat) * (g * np.abs(xhat)).mean(
                1, keepdims=True)
            ulp = 4 * np.finfo(dtype).eps * (np.abs(want_dx) + rs * terms)
            assert (np.abs(got[0] - want_dx) <= ulp).all(), (d, np.abs(got[0] - want_dx).max())
        rdx = ln_backward_ref(dy, x, ww, 1, mean=m.copy_to_host(), rstd=r.copy_to_host())[0]
        np.testing.assert_allclose(got[0], rdx, **tol)


def check_one_launch_forward(shapes, dtype, rng, monkeypatch, kind="coop"):
    """The split forward in one launch, ``kind`` "coop" (a cooperative
    launch, ``FWD_COOP``) or "cluster" (in thread block clusters,
    ``FWD_CLUSTER``; under the simulator either runs as its two phases, one
    launch each) gives the two-kernel split's bits, ``y``, mean and rstd,
    with and without a weight and bias, twice (a cooperative launch's
    counters reused); rows whose windows overflow at scale 1, a NaN in one
    window.  Each shape must take the split, and fit the one launch."""
    from numba_ln import gpu
    from numba_ln.gpu import _launch

    flags = {True: dict(FWD_COOP=kind == "coop", FWD_CLUSTER="split" if kind == "cluster"
                        else None),
             False: dict(FWD_COOP=False, FWD_CLUSTER=None)}

    name = np.dtype(dtype).name
    for rows, d in shapes:
        x = rng.standard_normal((rows, d)).astype(dtype)
        x[0, : d // 3] *= np.finfo(dtype).max / 8  # the windows' sums overflow at scale 1
        if rows > 2:
            x[2, d - 1] = np.nan
        w = rng.standard_normal(d).astype(dtype)
        b = rng.standard_normal(d).astype(dtype)
        for ww, bb in ((w, b), (None, None)):
            dw = None if ww is None else cuda.to_device(ww)
            db = None if bb is None else cuda.to_device(bb)
            got = {}
            for coop in (True, False):
                for flag, value in flags[coop].items():
                    monkeypatch.setattr(_launch, flag, value)
                plan = _launch.forward_plan(rows, d, x.itemsize, name)[0]
                assert plan == (kind if coop else "split"), (rows, d, plan)
                y, m, r = gpu.layer_norm(cuda.to_device(x), dw, db, return_stats=True)
                got[coop] = [a.copy_to_host() for a in (y, m, r)]
                if coop:  # again (a cooperative launch's counters reused)
                    y, m, r = gpu.layer_norm(cuda.to_device(x), dw, db, return_stats=True)
                    for a, b_ in zip(got[coop], (y, m, r)):
                        assert a.tobytes() == b_.copy_to_host().tobytes(), (rows, d)
            for a, b_ in zip(got[True], got[False]):
                assert a.tobytes() == b_.tobytes(), (rows, d)
            ok = [i for i in range(rows) if i != 2]
            ref = ln_ref(x[ok], ww, bb, (1,))[0]
            fine = np.isfinite(ref).all(axis=1)
            tol = dict(rtol=1e-4, atol=2e-3) if dtype == np.float32 else dict(rtol=1e-9,
                                                                              atol=1e-9)
            np.testing.assert_allclose(got[True][0][ok][fine], ref[fine], **tol)
            if rows > 2:
                assert np.isnan(got[True][0][2]).all()


def check_backward_by_columns(shapes, dtype, rng, monkeypatch, exact_dx):
    """The backward of few long rows by columns (``BWD_COLS_ROWS``): dx the
    bits of the row kernels' where ``exact_dx`` (the same expression from
    the same row sums; on a GPU the compiler may fuse it otherwise: within
    rounding), dweight and dbias within rounding of theirs (another order
    of addition) and bitwise the same on a second call; with and without a
    weight (dbias alone), in place (``out=dy``); against the float64
    reference.  Each shape must have rows of several windows."""
    from numba_ln import gpu
    from numba_ln.gpu import _launch

    name = np.dtype(dtype).name
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for rows, d in shapes:
        assert _launch.backward_launch(rows, d, name)[1] > 1, (rows, d)
        x = (rng.standard_normal((rows, d)) * 2 + 1).astype(dtype)
        dy = rng.standard_normal((rows, d)).astype(dtype)
        w = rng.standard_normal(d).astype(dtype)
        m = x.mean(axis=1).astype(dtype)
        r = (1 / np.sqrt(x.var(axis=1) + 1e-5)).astype(dtype)
        dm, dr = cuda.to_device(m), cuda.to_device(r)
        for ww in (w, None):
            dw = None if ww is None else cuda.to_device(ww)
            got = {}
            for limit in (0, rows):
                monkeypatch.setattr(_launch, "BWD_COLS_ROWS", limit)
                res = gpu.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), dm, dr, dw)
                got[limit] = [None if a is None else a.copy_to_host() for a in res]
            again = gpu.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), dm, dr, dw)
            for a, b_ in zip(got[rows], again):
                assert (a is None) == (b_ is None)
                assert a is None or a.tobytes() == b_.copy_to_host().tobytes(), (rows, d)
            inplace = cuda.to_device(dy)
            gpu.layer_norm_backward(inplace, cuda.to_device(x), dm, dr, dw, out=inplace)
            assert inplace.copy_to_host().tobytes() == got[rows][0].tobytes(), (rows, d)
            if exact_dx:
                assert got[rows][0].tobytes() == got[0][0].tobytes(), (rows, d)
            for a, b_ in zip(got[rows], got[0]):
                if a is not None:
                    np.testing.assert_allclose(a, b_, **tol)
            ref = ln_backward_ref(dy, x, ww, 1, mean=m, rstd=r)
            for a, b_ in zip(got[rows], ref):
                if a is not None:
                    np.testing.assert_allclose(a, b_, rtol=tol["rtol"] * 10,
                                               atol=tol["atol"] * 10 * np.sqrt(rows))


def check_own_column_sums(kind, tpr, kv, pipe, opt, dtype, rng, tol, blocks=1, slots=3,
                          loops=False):
    """The backward of variant ``tpr x kv`` that sums its own partial rows,
    a ``scripts/gpu_tune.py`` candidate: ``kind`` "fused" (``fused_cols=opt``,
    after a barrier of all its blocks) or "tail" (``tail_cols=opt``, its last
    blocks to finish), against the same build's plain backward and the
    column-sum kernel: dx the same bits, dweight/dbias within rounding of
    theirs (another fixed order) and of the float64 reference, the same bits
    again on a second call (the counters reused; a tail leaves its tickets
    zeroed).  ``slots`` row slots, rows that fill the variant or not,
    several rows a slot; a weight and none (dbias alone); ``loops``: the
    looping build (as :data:`~numba_ln.gpu._kernels.LONG`'s), on rows of one
    window and of three (the fused one computes their windows' sums itself,
    against the row-sums kernel).  On a GPU one launch (the fused one
    cooperative); under the simulator, whose blocks run in order, its
    phases one after another where some blocks wait for others."""
    from numba_ln import gpu
    from numba_ln.gpu import _fastlaunch, _launch

    name = np.dtype(dtype).name
    key = (kind, tpr, kv, pipe, opt, blocks, loops)
    own = f"layer_norm_backward_{kind}"
    if key not in _CANDIDATES:
        fns = _kernels._make_variant(tpr, kv, loops, pipe and not loops,
                                     **{f"{kind}_cols": opt})
        _CANDIDATES[key] = tuple(_jit(fns[k], tpr, blocks) if k in fns else None for k in (
            "layer_norm_backward", own, "layer_norm_backward_rowsums"))
    plain, kern, rowsums = _CANDIDATES[key]
    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    R = threads // tpr
    cw = tpr * kv
    for d in sorted({cw, cw - 1, tpr + 1} | ({2 * cw + 3} if loops else set())):
        nwin = -(-d // cw)
        rows = R * slots * 2 + 1
        x = rng.standard_normal((rows, d)).astype(dtype)
        dy = rng.standard_normal((rows, d)).astype(dtype)
        _, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
        for flags, ngrad in ((_kernels.HAS_WEIGHT, 2), (0, 1)):
            w = rng.standard_normal(d).astype(dtype) if flags else np.ones(d, dtype)
            args = (cuda.to_device(dy), cuda.to_device(x), m, r, cuda.to_device(w),
                    np.int32(flags))
            sums = cuda.device_array((2, rows, nwin) if nwin > 1 else (2, 1, 1), dtype)
            if nwin > 1:
                rowsums[-(-rows // R) * nwin, (tpr, R)](*args, sums)
            args += (sums,)
            dx0 = cuda.device_array((rows, d), dtype)
            part0 = cuda.device_array((2, slots, d), dtype)
            plain[slots * nwin, (tpr, R)](*args, dx0, part0)
            want = cuda.device_array((ngrad, d), dtype)
            _kernels.col_sum[name][_launch.col_launch(slots, d, ngrad)](part0, want)
            got = []
            if kind == "fused":
                counters = _launch.barriers(1 + slots, 0)
                phases = _kernels.FUSED_PHASES
            else:
                counters = _launch.tickets(nwin, 0)
                phases = _kernels.tail_phases(min(opt[0], slots))
            for _ in range(2):
                dx = cuda.device_array((rows, d), dtype)
                part = cuda.device_array((2, slots, d), dtype)
                grads = cuda.device_array((ngrad, d), dtype)
                if kind == "fused":
                    args = args[:6] + (cuda.device_array_like(sums),)  # (its own window sums)
                for phase in phases:
                    _fastlaunch.launch(kern, name, own, slots * nwin, (tpr, R), 0, *args,
                                       dx, part, grads, counters, np.int32(phase),
                                       cooperative=kind == "fused" and not _kernels.SIM)
                got.append((dx.copy_to_host(), grads.copy_to_host()))
            if kind == "tail":
                assert not counters.copy_to_host().any(), (tpr, kv, d, opt)
            (dx1, g1), (dx2, g2) = got
            assert np.array_equal(dx1, dx0.copy_to_host()), (tpr, kv, d, flags)
            assert np.array_equal(dx1, dx2) and np.array_equal(g1, g2), (tpr, kv, d, flags)
            np.testing.assert_allclose(g1, want.copy_to_host(), rtol=1e-5, atol=1e-5)
            ref_dx, ref_dw, ref_db = ln_backward_ref(
                dy, x, w if flags else None, 1, mean=m.copy_to_host(), rstd=r.copy_to_host())
            np.testing.assert_allclose(dx1, ref_dx, **tol)
            np.testing.assert_allclose(g1[-1], ref_db, rtol=1e-4, atol=1e-4)
            if flags:
                np.testing.assert_allclose(g1[0], ref_dw, rtol=1e-4, atol=1e-4)
