"""Naive float64 NumPy reference of LayerNorm and helpers shared by the CPU tests.

Everything here is written for clarity, not speed, straight from PAPER.md:
biased variance, ``eps`` inside the square root, statistics over all the
normalised axes together.  The reference rescales each row by its largest
magnitude before squaring, so it stays exact for float64 rows near 1e200
(``LN(s * u) = (u - mean(u)) / sqrt(var(u) + eps / s**2)``), and for
tiny rows (1e-200, or float32 1e-30 with eps=0) too.
"""

import warnings

import numpy as np


def axes_of(axis, ndim):
    """``axis`` (int or tuple) as a sorted tuple of non-negative axes."""
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    return tuple(sorted(a % ndim for a in items))


def norm_shape(shape, axis):
    """The normalised shape: what weight and bias must have."""
    return tuple(shape[a] for a in axes_of(axis, len(shape)))


def stats_shape(shape, axis):
    """The shape of mean and rstd: the axes that are not normalised."""
    axes = axes_of(axis, len(shape))
    return tuple(n for a, n in enumerate(shape) if a not in axes)


def _param_view(p, shape, axes):
    """Weight/bias (normalised shape) reshaped to broadcast against x."""
    return np.asarray(p, np.float64).reshape([n if a in axes else 1 for a, n in enumerate(shape)])


def ln_ref(x, weight=None, bias=None, axis=-1, eps=1e-5):
    """Float64 LayerNorm: returns ``(y, mean, rstd)``; mean/rstd have the stats shape."""
    x = np.asarray(x, dtype=np.float64)
    axes = axes_of(axis, x.ndim)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # empty rows: NaN statistics
        # Every row is divided by its largest |x| before squaring, so neither
        # huge (1e200) nor tiny (1e-200) rows overflow or underflow.
        scale = np.max(np.abs(x), axis=axes, keepdims=True, initial=0.0)
        scale = np.where((scale > 0) & np.isfinite(scale), scale, 1.0)
        u = x / scale
        mu = u.mean(axis=axes, keepdims=True)
        var = ((u - mu) ** 2).mean(axis=axes, keepdims=True)
        t = eps / scale / scale               # eps in units of scale**2
        fine = np.isfinite(t)                 # else eps outweighs the row's variance entirely
        rstd_u = 1.0 / np.sqrt(var + np.where(fine, t, 0.0))
        mean = mu * scale
        rstd = np.where(fine, rstd_u / scale, 1.0 / np.sqrt(eps))
        y = np.where(fine, (u - mu) * rstd_u, (x - mean) * rstd)
    if weight is not None:
        y = y * _param_view(weight, x.shape, axes)
    if bias is not None:
        y = y + _param_view(bias, x.shape, axes)
    squeeze = stats_shape(x.shape, axes)
    return y, mean.reshape(squeeze), rstd.reshape(squeeze)


def ln_backward_ref(dy, x, weight=None, axis=-1, eps=1e-5, mean=None, rstd=None):
    """Float64 gradients ``(dx, dweight or None, dbias)`` by PAPER.md's formulas.

    ``mean``/``rstd``, when given, replace the exact statistics (e.g. the
    rounded float32 ones a forward pass returned), so the result is the
    exact gradient formula evaluated at those statistics.
    """
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    axes = axes_of(axis, x.ndim)
    kept = tuple(a for a in range(x.ndim) if a not in axes)
    _, m_exact, r_exact = ln_ref(x, axis=axes, eps=eps)
    mean = m_exact if mean is None else np.asarray(mean, np.float64)
    rstd = r_exact if rstd is None else np.asarray(rstd, np.float64)
    keep = [1 if a in axes else n for a, n in enumerate(x.shape)]
    mean = mean.reshape(keep)
    rstd = rstd.reshape(keep)
    xhat = (x - mean) * rstd
    g = dy if weight is None else dy * _param_view(weight, x.shape, axes)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # empty rows
        dx = rstd * (g - g.mean(axis=axes, keepdims=True)
                     - xhat * (g * xhat).mean(axis=axes, keepdims=True))
    nshape = norm_shape(x.shape, axes)
    dbias = dy.sum(axis=kept).reshape(nshape)
    dweight = None if weight is None else (dy * xhat).sum(axis=kept).reshape(nshape)
    return dx, dweight, dbias


def rel_err(a, b):
    """Elementwise ``|a - b| / max(1e-8, |a| + |b|)`` (STYLE.md's gradient-check metric)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))


def assert_grad_close(analytic, numeric, rtol=1e-6, atol=1e-10):
    """Every element: ``|a - n| <= rtol * (|a| + |n|) + atol``.

    ``atol`` only matters for gradients near zero, where central differences
    (error ~1e-11 with h = 1e-5 on O(1) losses) have no relative accuracy.
    """
    a = np.asarray(analytic, np.float64)
    n = np.asarray(numeric, np.float64)
    assert a.shape == n.shape
    bad = np.abs(a - n) > rtol * (np.abs(a) + np.abs(n)) + atol
    assert not bad.any(), (f"{bad.sum()} of {bad.size} gradient elements differ; "
                           f"max rel_err {rel_err(a, n).max():.3g}, max abs {np.abs(a - n).max():.3g}")


def central_diff(f, p, h=1e-5):
    """Gradient of the scalar ``f()`` with respect to every element of ``p``.

    ``p`` is perturbed in place and restored exactly after each element.
    """
    grad = np.empty(p.shape, dtype=np.float64)
    flat = p.reshape(-1)  # a view: p is contiguous
    assert np.shares_memory(flat, p)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + h
        fp = f()
        flat[i] = orig - h
        fm = f()
        flat[i] = orig
        grad.reshape(-1)[i] = (fp - fm) / (2 * h)
    return grad


def tol(dtype):
    """(rtol, atol) for comparing a result of ``dtype`` with the float64 reference."""
    return (2e-5, 2e-5) if np.dtype(dtype) == np.float32 else (1e-12, 1e-12)
