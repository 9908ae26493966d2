"""CPU drivers: the row kernels mapped over the rows of a 2-D array.

No validation here: the public functions in :mod:`numba_ln.api` hand these
C-contiguous ``(rows, features)`` arrays of one dtype and preallocated outputs.
Each driver comes as a serial and a ``parallel=True`` version; the serial one
serves small arrays, where waking the thread pool costs more than the work.
(They are separate functions, not one function jitted twice, so that their
on-disk caches cannot collide.)

Weight and bias gradients are reduced over a fixed partition of the rows into
``n_chunks(rows)`` chunks, each summed in float64 by one thread, then the
chunks are added in order.  The partition depends only on the number of rows,
so the result is bitwise identical for any thread count.
"""

import threading

import numpy as np
from numba import njit, prange

from ._flags import JIT_OPTIONS
from .kernels import ln_backward_row, ln_forward_row

#: Arrays with at most this many elements run on the calling thread alone.
SERIAL_MAX_ELEMENTS = 1 << 15

#: Upper bound of the number of row chunks of the gradient reduction.
MAX_CHUNKS = 64

# numba's default "workqueue" threading layer aborts the process when two
# Python threads launch parallel kernels at once; one lock makes concurrent
# callers take turns (each parallel call already uses every core).
_PARALLEL_LOCK = threading.Lock()


def n_chunks(rows):
    """Number of row chunks of the gradient reduction (depends on rows only)."""
    return min(rows, MAX_CHUNKS)


@njit(**JIT_OPTIONS)
def _forward_serial(x, weight, bias, eps, y, mean, rstd):
    for i in range(x.shape[0]):
        m, r = ln_forward_row(x[i], weight, bias, eps, y[i])
        mean[i] = m
        rstd[i] = r


@njit(parallel=True, **JIT_OPTIONS)
def _forward_parallel(x, weight, bias, eps, y, mean, rstd):
    for i in prange(x.shape[0]):
        m, r = ln_forward_row(x[i], weight, bias, eps, y[i])
        mean[i] = m
        rstd[i] = r


@njit(**JIT_OPTIONS)
def _backward_chunk(c, n_chunk, dy, x, mean, rstd, weight, dx, part_w, part_b):
    rows = x.shape[0]
    start = c * rows // n_chunk
    stop = (c + 1) * rows // n_chunk
    part_b[c, :] = 0.0
    if weight is None:
        for i in range(start, stop):
            ln_backward_row(dy[i], x[i], mean[i], rstd[i], None, dx[i], None, part_b[c])
    else:
        part_w[c, :] = 0.0
        for i in range(start, stop):
            ln_backward_row(dy[i], x[i], mean[i], rstd[i], weight, dx[i], part_w[c], part_b[c])


@njit(**JIT_OPTIONS)
def _sum_chunks(part, out):
    """out[j] = sum over c of part[c, j], added in the order c = 0, 1, ..."""
    acc = np.zeros(part.shape[1])
    for c in range(part.shape[0]):
        for j in range(part.shape[1]):
            acc[j] += part[c, j]
    for j in range(part.shape[1]):
        out[j] = acc[j]


@njit(**JIT_OPTIONS)
def _backward_serial(dy, x, mean, rstd, weight, dx, dweight, dbias, part_w, part_b):
    n_chunk = part_b.shape[0]
    for c in range(n_chunk):
        _backward_chunk(c, n_chunk, dy, x, mean, rstd, weight, dx, part_w, part_b)
    _sum_chunks(part_b, dbias)
    if weight is not None:
        _sum_chunks(part_w, dweight)


@njit(parallel=True, **JIT_OPTIONS)
def _backward_parallel(dy, x, mean, rstd, weight, dx, dweight, dbias, part_w, part_b):
    n_chunk = part_b.shape[0]
    for c in prange(n_chunk):
        _backward_chunk(c, n_chunk, dy, x, mean, rstd, weight, dx, part_w, part_b)
    _sum_chunks(part_b, dbias)
    if weight is not None:
        _sum_chunks(part_w, dweight)


def forward(x, weight, bias, eps, y, mean, rstd):
    """LayerNorm of every row of ``x`` (rows, D) into ``y``, ``mean``, ``rstd``."""
    if x.size <= SERIAL_MAX_ELEMENTS:
        _forward_serial(x, weight, bias, eps, y, mean, rstd)
    else:
        with _PARALLEL_LOCK:
            _forward_parallel(x, weight, bias, eps, y, mean, rstd)


def backward(dy, x, mean, rstd, weight, dx, dweight, dbias):
    """Gradients of every row; ``dweight`` is ignored when ``weight`` is None."""
    rows, d = x.shape
    chunks = n_chunks(rows)
    part_b = np.empty((chunks, d))
    part_w = None if weight is None else np.empty((chunks, d))
    if x.size <= SERIAL_MAX_ELEMENTS:
        _backward_serial(dy, x, mean, rstd, weight, dx, dweight, dbias, part_w, part_b)
    else:
        with _PARALLEL_LOCK:
            _backward_parallel(dy, x, mean, rstd, weight, dx, dweight, dbias, part_w, part_b)
