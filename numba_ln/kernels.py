"""Row kernels: LayerNorm of one row, callable from your own ``@njit`` code.

These are plain ``@njit`` functions over 1-D arrays.  They do no validation
and write into the arrays they are given, so they can be called (and inlined
by LLVM) inside any jitted function, for instance inside a recurrent cell::

    from numba import njit, prange
    from numba_ln.kernels import ln_forward_row

    @njit(parallel=True)
    def my_step(x, w, b, y, mean, rstd):
        for i in prange(x.shape[0]):
            mean[i], rstd[i] = ln_forward_row(x[i], w, b, 1e-5, y[i])

Numerics.  Statistics are taken by the corrected two-pass algorithm: a first
pass gives an approximate mean, a second pass sums the deviations ``d`` from
it and their squares, so ``mean = m1 + sum(d)/n`` and
``var = sum(d*d)/n - (sum(d)/n)**2`` (never ``E[x^2] - E[x]^2`` of the raw
values).  Deviations are taken from a float64 mean split into two numbers of
x's precision, so a large common offset costs no precision.  Arithmetic is
in x's precision (float32 stays float32 and vectorises); a row whose sums
overflow that precision (float32 values beyond ~1e18) is redone in float64,
and rescaled if even float64 squares overflow, so finite rows always give
finite, correct results.  A row holding NaN or Inf gives a non-finite
result.  The returned ``mean`` and ``rstd`` are float64.

``weight`` and ``bias`` may be ``None`` (numba compiles that branch away).
Each function is safe in place: an output may be the same array as an input.
"""

import math

import numpy as np
from numba import njit

from ._flags import FASTMATH, JIT_OPTIONS

__all__ = ["ln_row_stats", "ln_forward_row", "ln_backward_row"]

# Centring keeps ``reassoc`` out: with it LLVM may rewrite
# ``(x - hi) - lo`` as ``x - (hi + lo)``, which rounds ``lo`` away.  Fast-math
# flags are per instruction, so this survives inlining into the callers.
_NO_REASSOC = dict(JIT_OPTIONS, fastmath=set(FASTMATH) - {"reassoc"})


@njit(**_NO_REASSOC)
def _centre(v, hi, lo):
    """``v - (hi + lo)`` in v's precision, ``hi + lo`` being a float64 split in two."""
    return (v - hi) - lo


@njit(**JIT_OPTIONS)
def _split(value, like):
    """float64 ``value`` as ``hi + lo``, two numbers of ``like``'s dtype."""
    T = like.dtype.type
    hi = T(value)
    return hi, T(value - hi)


@njit(**JIT_OPTIONS)
def _finite(v):
    """``np.isfinite`` that survives fast-math: numba lowers ``np.isfinite``
    as ``v - v == v - v``, which ``reassoc`` folds to True."""
    return abs(v) < np.inf


@njit(**JIT_OPTIONS)
def _tiny_var(like):
    """Below this variance, squares of deviations in like's precision may be
    subnormal or zero: such rows are redone in float64, rescaled."""
    return 1e-30 if like.itemsize == 4 else 1e-290


@njit(**JIT_OPTIONS)
def _holds(like, v):
    """Whether the positive float64 ``v`` is a normal number of like's precision."""
    if like.itemsize == 4:
        return 1.1754943508222875e-38 <= v <= 3.4028234663852886e38
    return 2.2250738585072014e-308 <= v <= 1.7976931348623157e308


_EXACT_DIVISION = dict(JIT_OPTIONS, fastmath=set(FASTMATH) - {"reassoc", "arcp"})


@njit(**_EXACT_DIVISION)
def _rescaled_rstd(var_s, eps, scale):
    """``1 / sqrt(var + eps)`` from the variance ``var_s`` of ``x / scale``,
    without forming ``scale**2`` (which over- or underflows)."""
    if var_s == 0.0:
        return 1.0 / np.sqrt(eps)
    e = eps / scale / scale
    if e < np.inf:
        return 1.0 / (scale * np.sqrt(var_s + e))
    return 1.0 / np.sqrt(var_s * scale * scale + eps)  # tiny rows: eps dominates


@njit(**JIT_OPTIONS)
def _sums_float64(x, inv_scale):
    """Mean and biased variance of ``x * inv_scale`` by two passes in float64."""
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        s += x[i] * inv_scale
    mean = s / n
    ss = 0.0
    for i in range(n):
        d = x[i] * inv_scale - mean
        ss += d * d
    return mean, ss / n


@njit(**JIT_OPTIONS)
def _stats_float64(x, eps):
    """Mean and rstd by two passes in float64, for rows whose sums leave x's
    precision.  When even float64 squares overflow or underflow, the row is
    scaled by the power of two just above its largest |x| (an exact scaling)."""
    mean, var = _sums_float64(x, 1.0)
    if _finite(var) and var >= 1e-290:
        return mean, 1.0 / np.sqrt(var + eps)
    # NaN/Inf in the row (it stays non-finite), or huge or tiny values.
    amax = 0.0
    for i in range(x.shape[0]):
        a = abs(np.float64(x[i]))
        if not a <= amax:  # also catches NaN
            amax = a
    if not (_finite(amax) and amax > 0.0):
        return mean, 1.0 / np.sqrt(var + eps)
    scale = math.ldexp(1.0, math.frexp(amax)[1])
    mean_s, var_s = _sums_float64(x, 1.0 / scale)
    return mean_s * scale, _rescaled_rstd(var_s, eps, scale)


@njit(**JIT_OPTIONS)
def _combine(m1, sd, sdd, n, eps, tiny):
    """Mean, rstd and whether they are exact, from the approximate mean ``m1``
    and the sums of the deviations from it (``sd``) and of their squares
    (``sdd``) over ``n`` values.  Not exact (False) when the sums overflowed,
    met NaN/Inf or the variance is below ``tiny`` (squares may have
    underflowed): the caller then uses ``_stats_float64``."""
    c = np.float64(sd) / n
    var = np.float64(sdd) / n - c * c
    return m1 + c, 1.0 / np.sqrt(max(var, 0.0) + eps), _finite(var) and var >= tiny


@njit(**JIT_OPTIONS)
def ln_row_stats(x, eps):
    """Mean and reciprocal standard deviation of one row, as float64.

    ``rstd = 1 / sqrt(var + eps)`` with the biased variance; an empty row
    gives NaN.  See the module docstring for the numerics.
    """
    n = x.shape[0]
    s = x.dtype.type(0)
    for i in range(n):
        s += x[i]
    m1 = np.float64(s) / n
    hi, lo = _split(m1, x)
    sd = x.dtype.type(0)
    sdd = x.dtype.type(0)
    for i in range(n):
        d = _centre(x[i], hi, lo)
        sd += d
        sdd += d * d
    mean, rstd, exact = _combine(m1, sd, sdd, n, eps, _tiny_var(x))
    if exact:
        return mean, rstd
    return _stats_float64(x, eps)


@njit(**JIT_OPTIONS)
def _normalise_float64(x, weight, bias, mean, rstd, y):
    """The output pass in float64, for rows whose rstd x's precision cannot
    hold (rows near the top or the bottom of the float range)."""
    for i in range(x.shape[0]):
        v = (np.float64(x[i]) - mean) * rstd
        if weight is not None:
            v *= weight[i]
        if bias is not None:
            v += bias[i]
        y[i] = v


@njit(**JIT_OPTIONS)
def ln_forward_row(x, weight, bias, eps, y):
    """Normalise one row: ``y = (x - mean) * rstd * weight + bias``.

    Parameters
    ----------
    x : 1-D float array
    weight, bias : 1-D float arrays of the same length, or None
    eps : float
    y : 1-D float array of the same length (may be ``x``)

    Returns
    -------
    mean, rstd : float64
    """
    mean, rstd = ln_row_stats(x, eps)
    if not _holds(x, rstd):
        _normalise_float64(x, weight, bias, mean, rstd, y)
        return mean, rstd
    n = x.shape[0]
    hi, lo = _split(mean, x)
    r = x.dtype.type(rstd)
    if weight is None:
        if bias is None:
            for i in range(n):
                y[i] = _centre(x[i], hi, lo) * r
        else:
            for i in range(n):
                y[i] = _centre(x[i], hi, lo) * r + bias[i]
    else:
        if bias is None:
            for i in range(n):
                y[i] = _centre(x[i], hi, lo) * r * weight[i]
        else:
            for i in range(n):
                y[i] = _centre(x[i], hi, lo) * r * weight[i] + bias[i]
    return mean, rstd


@njit(**JIT_OPTIONS)
def ln_backward_row(dy, x, mean, rstd, weight, dx, dweight, dbias):
    """Gradient of LayerNorm for one row.

    Writes ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` with
    ``g = weight * dy`` and ``xhat = (x - mean) * rstd``, and *adds*
    ``dy * xhat`` to ``dweight`` and ``dy`` to ``dbias`` (accumulators, so
    a caller sums a batch by calling this once per row).  Arithmetic is in
    x's precision.

    Parameters
    ----------
    dy, x : 1-D float arrays
    mean, rstd : float, the row's statistics from the forward pass
    weight : 1-D float array or None (then ``g = dy``)
    dx : 1-D float array (may be ``dy`` or ``x``)
    dweight, dbias : 1-D accumulator arrays or None (skipped)
    """
    n = x.shape[0]
    hi, lo = _split(np.float64(mean), x)
    r = x.dtype.type(rstd)
    a = x.dtype.type(0)
    b = x.dtype.type(0)
    for i in range(n):
        xhat = _centre(x[i], hi, lo) * r
        g = dy[i] if weight is None else dy[i] * weight[i]
        a += g
        b += g * xhat
    inv_n = x.dtype.type(1) / x.dtype.type(n)
    a *= inv_n
    b *= inv_n
    for i in range(n):
        xhat = _centre(x[i], hi, lo) * r
        d = dy[i]
        if dweight is not None:
            dweight[i] += d * xhat
        if dbias is not None:
            dbias[i] += d
        g = d if weight is None else d * weight[i]
        dx[i] = r * (g - a - xhat * b)
