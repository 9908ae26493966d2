"""Helpers shared by the benchmark modules (no benchmarks in here).

Kept import-light on purpose: every asv sample runs in a fresh process that
imports the benchmark module, so torch and numba.cuda are only imported by
the ``setup`` of the benchmarks that use them.
"""

import math
import time

import numpy as np

#: The dtypes the kernels take, as asv parameter values (strings show well in the HTML).
DTYPES = ["float32", "float64"]

EPS = 1e-5


def parse_shape(text):
    """``"8192x1024"`` -> ``(8192, 1024)``."""
    return tuple(int(n) for n in text.split("x"))


def make_case(shape, dtype, seed=0):
    """Inputs of one forward/backward case; LayerNorm over every axis but the first.

    ``shape`` is a string such as ``"8192x1024"`` (normalise over the last
    axis) or ``"8192x16x64"`` (over the last two).  Returns
    ``(x, weight, bias, dy, axis, normalized_shape)``, all C-contiguous of
    ``dtype``; weight and bias have the normalised shape.
    """
    full = parse_shape(shape)
    axis = -1 if len(full) == 2 else tuple(range(-len(full) + 1, 0))
    normalized_shape = full[1:]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(full, dtype=np.float32) * 2.0 + 0.5).astype(dtype)
    dy = rng.standard_normal(full, dtype=np.float32).astype(dtype)
    weight = (1.0 + 0.1 * rng.standard_normal(normalized_shape)).astype(dtype)
    bias = (0.1 * rng.standard_normal(normalized_shape)).astype(dtype)
    return x, weight, bias, dy, axis, normalized_shape


def norm_axes(axis):
    return axis if isinstance(axis, tuple) else (axis,)


# --- the NumPy reference: how a NumPy user writes LayerNorm, in x's dtype -------

def numpy_forward(x, weight, bias, axis, eps=EPS):
    """``(y, mean, rstd)`` with keepdims statistics."""
    axes = norm_axes(axis)
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + x.dtype.type(eps))
    y = xc * rstd * weight + bias
    return y, mean, rstd


def numpy_backward(dy, x, mean, rstd, weight, axis):
    """``(dx, dweight, dbias)`` from keepdims statistics."""
    axes = norm_axes(axis)
    lead = tuple(range(x.ndim - len(axes)))
    xhat = (x - mean) * rstd
    g = dy * weight
    a = g.mean(axis=axes, keepdims=True)
    b = np.mean(g * xhat, axis=axes, keepdims=True)
    dx = rstd * (g - a - xhat * b)
    dweight = np.sum(dy * xhat, axis=lead)
    dbias = np.sum(dy, axis=lead)
    return dx, dweight, dbias


# --- PyTorch, the peer (skipped when it is not installed) ----------------------

def import_torch():
    """torch, with as many intra-op threads as numba uses; NotImplementedError if absent."""
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    import numba
    torch.set_num_threads(numba.get_num_threads())
    return torch


# --- ratio measurement for track_ benchmarks -----------------------------------

def best_time(fn, number):
    """Best of three runs of ``number`` calls of ``fn``, seconds per call."""
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def measure_ratio(numerator, denominator, pairs=7, min_time=0.02):
    """Median over ``pairs`` interleaved measurements of t(numerator) / t(denominator).

    Interleaving makes both sides see the same machine load, so the ratio is
    much steadier than either time on a busy machine.
    """
    numerator()
    denominator()
    t0 = time.perf_counter()
    denominator()
    once = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(min_time / once))
    ratios = []
    for _ in range(pairs):
        a = best_time(numerator, number)
        b = best_time(denominator, number)
        ratios.append(a / b)
    return float(np.median(ratios))


# --- setup that survives asv's per-sample re-runs -------------------------------

_BUILT = {}


def built(key, build):
    """``build()`` once per process for ``key``, then the same object.

    asv (asv_runner >= 0.3) re-runs ``setup`` before every sample.  Our
    benchmarks never modify their inputs, so building the arrays and warming
    the JIT once per process is enough; re-runs of ``setup`` then cost a
    dictionary look-up instead of new random arrays and a warm-up call.
    """
    try:
        return _BUILT[key]
    except KeyError:
        obj = _BUILT[key] = build()
        return obj
