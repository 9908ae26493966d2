"""GPU test cases shared by the simulator tests and the real-GPU tests."""

import importlib.util
import os

import numpy as np
from _reference import ln_ref
from numba import cuda

from numba_ln.gpu import _kernels

_CHAN = {}


def load_tune_script():
    """``scripts/gpu_tune.py`` as a module (it is a script, not a package)."""
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "gpu_tune.py")
    spec = importlib.util.spec_from_file_location("gpu_tune", path)
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    return tune


def _chan_kernel(tpr, kv, pipe, blocks):
    key = (tpr, kv, pipe, blocks)
    if key not in _CHAN:
        fn = _kernels._make_variant(tpr, kv, False, pipe, chan=True)["layer_norm_forward"]
        threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
        if _kernels.SIM:
            _CHAN[key] = cuda.jit(fn)
        else:
            bounds = (threads, blocks) if blocks > 1 else (threads,)
            _CHAN[key] = cuda.jit(launch_bounds=bounds)(fn)
    return _CHAN[key]


def check_one_reduction_statistics(tpr, kv, pipe, dtype, rng, rtol, atol, blocks=1):
    """The forward of variant ``tpr x kv`` with one-reduction statistics
    (``_make_variant(..., chan=True)``, a ``scripts/gpu_tune.py`` candidate)
    against the float64 reference.

    Groups of a few threads and of a block, rows that fill the variant,
    leave threads partly or wholly past the end, or have one column; rows
    with a large common offset, near the top of the float range (the scaled
    redo), a NaN; blocks that walk several rows (fewer blocks than groups).
    """
    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    R = threads // tpr
    kernel = _chan_kernel(tpr, kv, pipe, blocks)
    big = np.finfo(dtype).max / 4
    for d in sorted({tpr * kv, tpr * kv - 1, tpr + 1, 3, 1}):
        rows = 3 * R + 2
        x = rng.standard_normal((rows, d)).astype(dtype)
        x[0] = 1e4 + 0.1 * x[0]  # large offset: accuracy of the shift
        if d > 1:
            x[1] = big * (-1.0) ** np.arange(d)  # overflows the sums: the scaled redo
            x[2, -1] = np.nan
        w = rng.standard_normal(d).astype(dtype)
        b = rng.standard_normal(d).astype(dtype)
        y = cuda.device_array((rows, d), dtype)
        stats = cuda.device_array((2, rows), dtype)  # mean, rstd
        grid = max(1, -(-rows // R) // 2)  # blocks walk two or more row groups
        kernel[grid, (tpr, R)](cuda.to_device(x), cuda.to_device(w), cuda.to_device(b),
                               np.int32(_kernels.HAS_WEIGHT | _kernels.HAS_BIAS),
                               dtype(1e-5), y, stats)
        ry, rm, rr = ln_ref(x, w, b, (1,))
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
