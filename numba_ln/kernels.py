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

Arithmetic: statistics (sums, mean, variance, ``rstd``) are accumulated in
float64 whatever the input dtype, by two passes over the row (never
``E[x^2] - E[x]^2``), so large common offsets and float32 values anywhere
in the float32 range give exact, finite statistics.  Results are stored in
the dtype of the output array.  ``weight`` and ``bias`` may be ``None``
(numba compiles that branch away).  Each function is safe in place: an
output may be the same array as an input.
"""

import numpy as np
from numba import njit

from ._flags import JIT_OPTIONS

__all__ = ["ln_row_stats", "ln_forward_row", "ln_backward_row"]


@njit(**JIT_OPTIONS)
def _two_pass(x, scale):
    """Sum, then centred sum of squares, of ``x / scale`` in float64."""
    n = x.shape[0]
    s = 0.0
    for i in range(n):
        s += x[i] / scale
    mean = s / n
    ss = 0.0
    for i in range(n):
        d = x[i] / scale - mean
        ss += d * d
    return mean, ss / n


@njit(**JIT_OPTIONS)
def ln_row_stats(x, eps):
    """Mean and reciprocal standard deviation of one row, as float64.

    ``rstd = 1 / sqrt(var + eps)`` with the biased variance.  A row holding
    NaN or Inf gives non-finite statistics; a row of finite values gives
    finite ones even when its squares would overflow (it is rescaled).
    An empty row gives NaN.
    """
    mean, var = _two_pass(x, 1.0)
    if not np.isfinite(var):
        # Either the row holds NaN/Inf (leave it non-finite) or the squares
        # of huge finite values overflowed: rescale by the largest |x|.
        amax = 0.0
        for i in range(x.shape[0]):
            a = abs(np.float64(x[i]))
            if not a <= amax:  # also catches NaN
                amax = a
        if np.isfinite(amax) and amax > 0.0:
            mean_s, var_s = _two_pass(x, amax)
            mean = mean_s * amax
            return mean, 1.0 / (amax * np.sqrt(var_s + eps / amax / amax))
    return mean, 1.0 / np.sqrt(var + eps)


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
    n = x.shape[0]
    if weight is None:
        if bias is None:
            for i in range(n):
                y[i] = (x[i] - mean) * rstd
        else:
            for i in range(n):
                y[i] = (x[i] - mean) * rstd + bias[i]
    else:
        if bias is None:
            for i in range(n):
                y[i] = (x[i] - mean) * rstd * weight[i]
        else:
            for i in range(n):
                y[i] = (x[i] - mean) * rstd * weight[i] + bias[i]
    return mean, rstd


@njit(**JIT_OPTIONS)
def ln_backward_row(dy, x, mean, rstd, weight, dx, dweight, dbias):
    """Gradient of LayerNorm for one row.

    Writes ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`` with
    ``g = weight * dy`` and ``xhat = (x - mean) * rstd``, and *adds*
    ``dy * xhat`` to ``dweight`` and ``dy`` to ``dbias`` (accumulators, so
    a caller sums a batch by calling this once per row).

    Parameters
    ----------
    dy, x : 1-D float arrays
    mean, rstd : float, the row's statistics from the forward pass
    weight : 1-D float array or None (then ``g = dy``)
    dx : 1-D float array (may be ``dy`` or ``x``)
    dweight, dbias : 1-D accumulator arrays or None (skipped)
    """
    n = x.shape[0]
    m = np.float64(mean)
    r = np.float64(rstd)
    a = 0.0
    b = 0.0
    for i in range(n):
        xhat = (x[i] - m) * r
        if weight is None:
            g = np.float64(dy[i])
        else:
            g = np.float64(dy[i]) * weight[i]
        a += g
        b += g * xhat
    a /= n
    b /= n
    for i in range(n):
        xhat = (x[i] - m) * r
        d = np.float64(dy[i])
        if dweight is not None:
            dweight[i] += d * xhat
        if dbias is not None:
            dbias[i] += d
        if weight is None:
            g = d
        else:
            g = d * weight[i]
        dx[i] = r * (g - a - xhat * b)
