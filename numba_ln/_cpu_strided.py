"""CPU drivers for normalised axes in the middle: x viewed as (A, D, M).

When the normalised axes are one contiguous run of axes that does not reach
the end (``axis=1`` of an NCHW array: A = N, D = C, M = H*W), every "row" is
a column ``x[a, :, m]`` with stride M.  Instead of transposing x into rows
(a copy in and a copy out), these drivers walk a block of ``mb`` neighbouring
columns at once: each pass over the block reads ``mb`` contiguous elements per
feature, so the loops vectorise along m and the block stays in cache between
the passes.  The statistics are those of :mod:`numba_ln.kernels` (corrected
two-pass, centring on a float64 mean split in two, float64 fallback for
columns that overflow), computed for ``mb`` columns side by side.

Work is split into units ``(a, block of columns)``.  For the gradients, units
are grouped into a fixed number of chunks by unit index only, each chunk
summed by one thread into its own partial row, partials added in order: the
result is bitwise identical for any thread count.
"""

import numpy as np
from numba import njit, prange

from ._cpu import _PARALLEL_LOCK, _sum_chunks
from ._flags import JIT_OPTIONS
from .kernels import (_centre, _combine, _normalise_float64, _holds, _split,
                      _stats_float64, _tiny_var)

#: Bytes of one block of columns (D x mb elements), to stay in the L2 cache.
BLOCK_BYTES = 128 * 1024

#: Upper bound of the number of chunks of the gradient reduction.
MAX_CHUNKS = 64


def block_columns(d, m, itemsize):
    """Columns per block: a multiple of 16 (whole cache lines) or all of m."""
    mb = max(16, (BLOCK_BYTES // max(1, d * itemsize)) // 16 * 16)
    return max(1, min(m, mb))


@njit(**JIT_OPTIONS)
def _forward_unit(x, weight, bias, eps, y, mean, rstd, a, m0, m1):
    n = x.shape[1]
    w = m1 - m0
    T = x.dtype.type
    s = np.zeros(w, dtype=x.dtype)
    for d in range(n):
        for k in range(w):
            s[k] += x[a, d, m0 + k]
    approx = np.empty(w)
    hi = np.empty(w, dtype=x.dtype)
    lo = np.empty(w, dtype=x.dtype)
    for k in range(w):
        approx[k] = np.float64(s[k]) / n
        hi[k], lo[k] = _split(approx[k], x)
    sd = np.zeros(w, dtype=x.dtype)
    sdd = np.zeros(w, dtype=x.dtype)
    for d in range(n):
        for k in range(w):
            v = _centre(x[a, d, m0 + k], hi[k], lo[k])
            sd[k] += v
            sdd[k] += v * v
    r = np.empty(w, dtype=x.dtype)
    rs64 = np.empty(w)  # float64 rstd: the rstd array (x's dtype) may not hold it
    slow = False
    for k in range(w):
        mu, rs, exact = _combine(approx[k], sd[k], sdd[k], n, eps, _tiny_var(x))
        if not exact:
            mu, rs = _stats_float64(x[a, :, m0 + k], eps)
        mean[a, m0 + k] = mu
        rstd[a, m0 + k] = rs
        approx[k] = mu
        rs64[k] = rs
        hi[k], lo[k] = _split(mu, x)
        r[k] = T(rs)
        if not _holds(x, rs):
            slow = True
    for d in range(n):
        wd = T(1) if weight is None else weight[d]
        bd = T(0) if bias is None else bias[d]
        for k in range(w):
            y[a, d, m0 + k] = _centre(x[a, d, m0 + k], hi[k], lo[k]) * r[k] * wd + bd
    if slow:
        for k in range(w):
            if not _holds(x, rs64[k]):
                _normalise_float64(x[a, :, m0 + k], weight, bias, approx[k], rs64[k], y[a, :, m0 + k])


@njit(parallel=True, **JIT_OPTIONS)
def _forward(x, weight, bias, eps, y, mean, rstd, mb):
    nblk = (x.shape[2] + mb - 1) // mb
    for u in prange(x.shape[0] * nblk):
        a = u // nblk
        m0 = (u % nblk) * mb
        _forward_unit(x, weight, bias, eps, y, mean, rstd, a, m0, min(m0 + mb, x.shape[2]))


@njit(**JIT_OPTIONS)
def _backward_unit(dy, x, mean, rstd, weight, dx, pw, pb, a, m0, m1):
    n = x.shape[1]
    w = m1 - m0
    T = x.dtype.type
    inv_n = T(1) / T(n)
    hi = np.empty(w, dtype=x.dtype)
    lo = np.empty(w, dtype=x.dtype)
    r = np.empty(w, dtype=x.dtype)
    sa = np.zeros(w, dtype=x.dtype)
    sb = np.zeros(w, dtype=x.dtype)
    for k in range(w):
        hi[k], lo[k] = _split(np.float64(mean[a, m0 + k]), x)
        r[k] = T(rstd[a, m0 + k])
    for d in range(n):
        wd = T(1) if weight is None else weight[d]
        for k in range(w):
            xhat = _centre(x[a, d, m0 + k], hi[k], lo[k]) * r[k]
            g = dy[a, d, m0 + k] * wd
            sa[k] += g
            sb[k] += g * xhat
    for k in range(w):
        sa[k] *= inv_n
        sb[k] *= inv_n
    for d in range(n):
        wd = T(1) if weight is None else weight[d]
        accw = T(0)
        accb = T(0)
        for k in range(w):
            xhat = _centre(x[a, d, m0 + k], hi[k], lo[k]) * r[k]
            g = dy[a, d, m0 + k]
            accw += g * xhat
            accb += g
            dx[a, d, m0 + k] = r[k] * (g * wd - sa[k] - xhat * sb[k])
        if weight is not None:
            pw[d] += accw
        pb[d] += accb


def forward(x, weight, bias, eps, y, mean, rstd):
    """LayerNorm over axis 1 of the (A, D, M) array x, into y (A, D, M) and
    mean, rstd (A, M)."""
    mb = block_columns(x.shape[1], x.shape[2], x.itemsize)
    with _PARALLEL_LOCK:
        _forward(x, weight, bias, eps, y, mean, rstd, mb)


def n_chunks(units):
    return min(units, MAX_CHUNKS)


@njit(parallel=True, **JIT_OPTIONS)
def _backward(dy, x, mean, rstd, weight, dx, part_w, part_b, mb):
    nblk = (x.shape[2] + mb - 1) // mb
    units = x.shape[0] * nblk
    n_chunk = part_b.shape[0]
    for c in prange(n_chunk):
        part_b[c, :] = 0
        part_w[c, :] = 0
        for u in range(c * units // n_chunk, (c + 1) * units // n_chunk):
            a = u // nblk
            m0 = (u % nblk) * mb
            _backward_unit(dy, x, mean, rstd, weight, dx, part_w[c], part_b[c], a, m0,
                           min(m0 + mb, x.shape[2]))


def backward(dy, x, mean, rstd, weight, dx, dweight, dbias):
    """Gradients over axis 1 of (A, D, M) arrays; dweight ignored without weight."""
    mb = block_columns(x.shape[1], x.shape[2], x.itemsize)
    units = x.shape[0] * -(-x.shape[2] // mb) if x.shape[2] else 0
    shape = (n_chunks(units), x.shape[1])
    part_b = np.empty(shape, dtype=x.dtype)
    part_w = np.empty(shape, dtype=x.dtype)
    with _PARALLEL_LOCK:
        _backward(dy, x, mean, rstd, weight, dx, part_w, part_b, mb)
    _sum_chunks(part_b, dbias)
    if weight is not None:
        _sum_chunks(part_w, dweight)
