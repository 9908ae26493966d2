"""A user's own ``@njit`` loops over numba_ln's public row kernels.

What the ``njit_kernel`` latency benchmarks call: the cost of the row
kernels themselves plus one numba dispatch, with no validation, reshaping
or allocation.  Compiled lazily (cached on disk), so importing this module
during benchmark discovery costs nothing.
"""

from numba import njit

from numba_ln.kernels import ln_backward_row, ln_forward_row


@njit(cache=True, nogil=True)
def user_forward(x, weight, bias, eps, y, mean, rstd):
    for i in range(x.shape[0]):
        mean[i], rstd[i] = ln_forward_row(x[i], weight, bias, eps, y[i])


@njit(cache=True, nogil=True)
def user_backward(dy, x, mean, rstd, weight, dx, dweight, dbias):
    dweight[:] = 0
    dbias[:] = 0
    for i in range(x.shape[0]):
        ln_backward_row(dy[i], x[i], mean[i], rstd[i], weight, dx[i], dweight, dbias)
