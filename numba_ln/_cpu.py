"""CPU drivers: LayerNorm over the rows of a C-contiguous (rows, D) array.

No validation here: :mod:`numba_ln.api` hands these contiguous arrays of one
dtype and preallocated outputs.  The block functions below do, for a range of
rows of a 2-D array, exactly what the public row kernels of
:mod:`numba_ln.kernels` do for one row, with the same helpers and the same
order of operations; they index the 2-D array directly because slicing a row
out of it costs reference counting that dominates short rows.

Each driver comes as a serial and a ``parallel=True`` version; the serial one
serves small arrays, where waking the thread pool costs more than the work.
(They are separate functions, not one function jitted twice, so that their
on-disk caches cannot collide.)

Weight and bias gradients are reduced over a fixed partition of the rows into
``n_chunks(x)`` chunks, each summed in x's precision by one thread into a
row of a partials array; the chunks are then added in order in float64.  The
partition depends only on the number of rows, so the result is bitwise
identical for any thread count.
"""

import threading

import numpy as np
from numba import njit, prange

from ._flags import JIT_OPTIONS
from .kernels import (_centre, _combine, _normalise_float64, _holds, _split,
                      _stats_float64, _tiny_var)

#: Arrays with at most this many elements run on the calling thread alone.
SERIAL_MAX_ELEMENTS = 1 << 16

#: Upper bound of the number of row chunks of the gradient reduction.
MAX_CHUNKS = 64

#: Rows a chunk takes at least: each chunk costs a partial row to zero and to
#: add, which few rows would not pay for.
MIN_CHUNK_ROWS = 16

# numba's default "workqueue" threading layer aborts the process when two
# Python threads launch parallel kernels at once; one lock makes concurrent
# callers take turns (each parallel call already uses every core).
_PARALLEL_LOCK = threading.Lock()


def is_serial(x):
    """Whether the drivers run ``x`` (rows, D) on the calling thread alone."""
    return x.size <= SERIAL_MAX_ELEMENTS


def n_chunks(x):
    """Number of row chunks of the gradient reduction: one for a serial call,
    else one per MIN_CHUNK_ROWS rows, at least 2 and at most MAX_CHUNKS.  It
    depends on the shape only, never on the number of threads."""
    if is_serial(x):
        return 1
    return min(x.shape[0], max(2, min(MAX_CHUNKS, x.shape[0] // MIN_CHUNK_ROWS)))


@njit(**JIT_OPTIONS)
def _forward_block(x, weight, bias, eps, y, mean, rstd, start, stop):
    """``ln_forward_row`` for rows ``start:stop`` of x."""
    n = x.shape[1]
    T = x.dtype.type
    for i in range(start, stop):
        s = T(0)
        for j in range(n):
            s += x[i, j]
        m1 = np.float64(s) / n
        hi, lo = _split(m1, x)
        sd = T(0)
        sdd = T(0)
        for j in range(n):
            d = _centre(x[i, j], hi, lo)
            sd += d
            sdd += d * d
        mu, rs, exact = _combine(m1, sd, sdd, n, eps, _tiny_var(x))
        if not exact:
            mu, rs = _stats_float64(x[i], eps)
        mean[i] = mu
        rstd[i] = rs
        if not _holds(x, rs):
            _normalise_float64(x[i], weight, bias, mu, rs, y[i])
            continue
        hi, lo = _split(mu, x)
        r = T(rs)
        if weight is None:
            if bias is None:
                for j in range(n):
                    y[i, j] = _centre(x[i, j], hi, lo) * r
            else:
                for j in range(n):
                    y[i, j] = _centre(x[i, j], hi, lo) * r + bias[j]
        else:
            if bias is None:
                for j in range(n):
                    y[i, j] = _centre(x[i, j], hi, lo) * r * weight[j]
            else:
                for j in range(n):
                    y[i, j] = _centre(x[i, j], hi, lo) * r * weight[j] + bias[j]


@njit(**JIT_OPTIONS)
def _backward_block(dy, x, mean, rstd, weight, dx, dweight, dbias, start, stop):
    """``ln_backward_row`` for rows ``start:stop``, accumulating into the
    1-D ``dweight`` (skipped when ``weight`` is None) and ``dbias``."""
    n = x.shape[1]
    T = x.dtype.type
    inv_n = T(1) / T(n)
    for i in range(start, stop):
        m = mean[i]  # of x's dtype, so no split is needed to centre exactly
        r = rstd[i]
        a = T(0)
        b = T(0)
        for j in range(n):
            xhat = (x[i, j] - m) * r
            g = dy[i, j] if weight is None else dy[i, j] * weight[j]
            a += g
            b += g * xhat
        a *= inv_n
        b *= inv_n
        for j in range(n):
            xhat = (x[i, j] - m) * r
            d = dy[i, j]
            if weight is not None:
                dweight[j] += d * xhat
            dbias[j] += d
            g = d if weight is None else d * weight[j]
            dx[i, j] = r * (g - a - xhat * b)


@njit(**JIT_OPTIONS)
def _forward_serial(x, weight, bias, eps, y, mean, rstd):
    _forward_block(x, weight, bias, eps, y, mean, rstd, 0, x.shape[0])


@njit(parallel=True, **JIT_OPTIONS)
def _forward_parallel(x, weight, bias, eps, y, mean, rstd):
    for i in prange(x.shape[0]):
        _forward_block(x, weight, bias, eps, y, mean, rstd, i, i + 1)


@njit(**JIT_OPTIONS)
def _backward_chunk(c, dy, x, mean, rstd, weight, dx, part_w, part_b):
    n_chunk = part_b.shape[0]
    rows = x.shape[0]
    part_b[c, :] = 0
    if weight is None:
        _backward_block(dy, x, mean, rstd, None, dx, None, part_b[c],
                        c * rows // n_chunk, (c + 1) * rows // n_chunk)
    else:
        part_w[c, :] = 0
        _backward_block(dy, x, mean, rstd, weight, dx, part_w[c], part_b[c],
                        c * rows // n_chunk, (c + 1) * rows // n_chunk)


@njit(**JIT_OPTIONS)
def _sum_chunks(part, out):
    """out[j] = sum over c of part[c, j] in float64, added in the order c = 0, 1, ..."""
    acc = np.zeros(part.shape[1])
    for c in range(part.shape[0]):
        for j in range(part.shape[1]):
            acc[j] += part[c, j]
    for j in range(part.shape[1]):
        out[j] = acc[j]


@njit(**JIT_OPTIONS)
def _backward_serial(dy, x, mean, rstd, weight, dx, dweight, dbias, part_w, part_b):
    for c in range(part_b.shape[0]):
        _backward_chunk(c, dy, x, mean, rstd, weight, dx, part_w, part_b)
    _sum_chunks(part_b, dbias)
    if weight is not None:
        _sum_chunks(part_w, dweight)


@njit(parallel=True, **JIT_OPTIONS)
def _backward_parallel(dy, x, mean, rstd, weight, dx, dweight, dbias, part_w, part_b):
    for c in prange(part_b.shape[0]):
        _backward_chunk(c, dy, x, mean, rstd, weight, dx, part_w, part_b)
    _sum_chunks(part_b, dbias)
    if weight is not None:
        _sum_chunks(part_w, dweight)


def forward(x, weight, bias, eps, y, mean, rstd):
    """LayerNorm of every row of ``x`` (rows, D) into ``y``, ``mean``, ``rstd``."""
    if is_serial(x):
        _forward_serial(x, weight, bias, eps, y, mean, rstd)
    else:
        with _PARALLEL_LOCK:
            _forward_parallel(x, weight, bias, eps, y, mean, rstd)


def backward(dy, x, mean, rstd, weight, dx, dweight, dbias):
    """Gradients of every row; ``dweight`` is ignored when ``weight`` is None."""
    shape = (n_chunks(x), x.shape[1])
    part_b = np.empty(shape, dtype=x.dtype)
    part_w = None if weight is None else np.empty(shape, dtype=x.dtype)
    if is_serial(x):
        _backward_serial(dy, x, mean, rstd, weight, dx, dweight, dbias, part_w, part_b)
    else:
        with _PARALLEL_LOCK:
            _backward_parallel(dy, x, mean, rstd, weight, dx, dweight, dbias, part_w, part_b)
