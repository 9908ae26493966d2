"""The public LayerNorm functions: validate, reshape, allocate, dispatch.

Arrays that expose ``__cuda_array_interface__`` (numba device arrays, CuPy
arrays, PyTorch CUDA tensors) go to :mod:`numba_ln.gpu`; everything else runs
on the CPU kernels of :mod:`numba_ln._cpu`.
"""

import math

import numpy as np

from . import _cpu, _cpu_strided
from ._validate import (Layout, as_host_array, check_eps, check_param, check_shape,
                        normalize_axes)

__all__ = ["layer_norm", "layer_norm_backward"]


_NATIVE_FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


def _plain(a, dtype, shape):
    """True when ``a`` is None or already in the kernels' form (no checks needed)."""
    return a is None or (type(a) is np.ndarray and a.dtype == dtype and a.shape == shape
                         and a.flags.c_contiguous)


def _common_case(x, axis, eps, params):
    """True for the common call that needs no coercion: a native float32/64
    C-contiguous non-empty ndarray normalised over its last axis, plain
    parameters and a float eps.  Such a call passes every general check, and
    skipping them saves microseconds on small arrays."""
    if not (type(x) is np.ndarray and axis == -1 and type(eps) is float and 0.0 <= eps < math.inf
            and x.dtype in _NATIVE_FLOATS and x.ndim and x.size and x.flags.c_contiguous):
        return False
    shape = x.shape[-1:]
    for p in params:
        if not _plain(p, x.dtype, shape):
            return False
    return True


def _as_rows(a):
    """A C-contiguous array as (rows, last axis), a view."""
    return a if a.ndim == 2 else a.reshape(-1, a.shape[-1])


def _unflatten(stat, x):
    """Per-row statistics (1-D) in the shape of x's leading axes."""
    return stat if x.ndim == 2 else stat.reshape(x.shape[:-1])


def _on_device(*arrays):
    # __cuda_ndarray__: numba device arrays, including the CUDA simulator's,
    # which have no __cuda_array_interface__.
    return any(hasattr(a, "__cuda_array_interface__") or getattr(a, "__cuda_ndarray__", False)
               for a in arrays if a is not None)


def _kernel_view(a, layout):
    """``a`` as the C-contiguous array the drivers take, (rows, features) or
    (A, features, M); a copy only when ``a`` is not contiguous or its
    normalised axes are neither trailing nor one run of neighbours."""
    if not layout.direct:
        a = a.transpose(layout.perm)
    return np.ascontiguousarray(a).reshape(layout.kernel_shape)


def _forward(x, w, b, eps, y, mean, rstd):
    if x.ndim == 3:
        _cpu_strided.forward(x, w, b, eps, y, mean.reshape(x.shape[0], x.shape[2]),
                             rstd.reshape(x.shape[0], x.shape[2]))
    else:
        _cpu.forward(x, w, b, eps, y, mean, rstd)


def _backward(dy, x, mean, rstd, w, dx, dweight, dbias):
    if x.ndim == 3:
        _cpu_strided.backward(dy, x, mean.reshape(x.shape[0], x.shape[2]),
                              rstd.reshape(x.shape[0], x.shape[2]), w, dx, dweight, dbias)
    else:
        _cpu.backward(dy, x, mean, rstd, w, dx, dweight, dbias)


def _flat_param(p, dtype):
    """A weight/bias in the kernels' form: contiguous, 1-D, of ``dtype``."""
    if p is None:
        return None
    return np.ascontiguousarray(p, dtype=dtype).reshape(-1)


def _check_out(out, shape, dtype, name="out"):
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array for host input, found {type(out).__name__}")
    check_shape(name, out.shape, shape, "the result's shape")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype} but the result is {dtype}; "
                        f"pass out=np.empty({tuple(shape)}, dtype=np.{dtype.name})")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only; pass a writeable array (e.g. {name}.copy())")


def _direct_target(out, layout, reads):
    """The view of ``out`` in the drivers' shape that they may write, or None.

    None means: compute into a fresh array, then copy into ``out``.  That is
    needed when ``out`` has no such view (strided, or axes that are
    transposed) or when it overlaps an input other than by being exactly it.
    """
    if not layout.direct or not out.flags.c_contiguous:
        return None
    target = out.reshape(layout.kernel_shape)
    for r in reads:
        if r is None or not np.may_share_memory(out, r):
            continue
        same = (r.shape == target.shape and r.strides == target.strides
                and r.__array_interface__["data"][0] == target.__array_interface__["data"][0])
        if not same:
            return None
    return target


def _finish(result, out, layout):
    """Put the drivers' result into ``out`` (or a new array) in x's layout."""
    if layout.direct:
        result = result.reshape(layout.shape)
        if out is None:
            return result
        np.copyto(out, result)
        return out
    permuted = result.reshape(layout.permuted_shape)
    if out is None:
        out = np.empty(layout.shape, dtype=result.dtype)
    np.copyto(out.transpose(layout.perm), permuted)
    return out


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None,
               return_stats=False, stream=None):
    """Layer normalisation over ``axis``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the mean and the
    biased variance taken over the axes in ``axis`` for every index of the
    other axes (the definition of ``torch.nn.functional.layer_norm``).

    Parameters
    ----------
    x : array_like, float32 or float64
        Input.  Any layout, byte order or writeability; never modified
        (unless ``out=x``).  A GPU array runs on the GPU (see
        :mod:`numba_ln.gpu`).
    weight, bias : array_like or None
        Per-element gain and shift, of exactly the normalised shape
        (``tuple(x.shape[a] for a in axes)``).  They are converted to x's
        dtype: the result always has x's dtype.
    axis : int or tuple of ints, default -1
        The axes to normalise over.  The last k axes are the fast path.  A
        run of neighbouring axes in the middle (channels-first, e.g.
        ``axis=1`` of an NCHW array) runs in place on x's own layout, with
        no copy.  Any other set works by transposing x into rows first,
        which costs a copy in and a copy out.
    eps : float, default 1e-5
        Added to the variance inside the square root; finite and >= 0.
    out : ndarray, optional
        Receives ``y``; same shape and dtype as the result.  ``out=x``
        normalises in place.
    return_stats : bool, default False
        Also return ``mean`` and ``rstd = 1/sqrt(var + eps)``, of the shape
        of the axes that are not normalised and of x's dtype: what
        :func:`layer_norm_backward` needs.
    stream : stream, optional
        GPU input only: the stream the kernels run on; a numba stream or any
        stream with ``__cuda_stream__`` (CuPy, PyTorch, cuda.core).

    Returns
    -------
    y : ndarray
        Or ``(y, mean, rstd)`` with ``return_stats=True``.

    Examples
    --------
    >>> import numpy as np, numba_ln
    >>> x = np.arange(6, dtype=np.float32).reshape(2, 3)
    >>> numba_ln.layer_norm(x).round(4)
    array([[-1.2247,  0.    ,  1.2247],
           [-1.2247,  0.    ,  1.2247]], dtype=float32)
    """
    if _on_device(x, weight, bias, out):
        from . import gpu
        return gpu.layer_norm(x, weight, bias, axis=axis, eps=eps, out=out,
                              return_stats=return_stats, stream=stream)
    if stream is not None:
        raise ValueError("stream= applies to GPU arrays only, but x is a host array; "
                         "pass a device array (numba.cuda.to_device(x)) or drop stream=")
    if out is None and _common_case(x, axis, eps, (weight, bias)):
        x2 = _as_rows(x)
        y = np.empty_like(x)
        mean = np.empty(x2.shape[0], dtype=x.dtype)
        rstd = np.empty(x2.shape[0], dtype=x.dtype)
        _cpu.forward(x2, weight, bias, eps, _as_rows(y), mean, rstd)
        return (y, _unflatten(mean, x), _unflatten(rstd, x)) if return_stats else y

    x = as_host_array("x", x)
    layout = Layout(x.shape, normalize_axes(axis, x.ndim))
    eps = check_eps(eps)
    dtype = x.dtype
    weight = check_param("weight", weight, layout, dtype)
    bias = check_param("bias", bias, layout, dtype)
    if out is not None:
        _check_out(out, x.shape, dtype)

    x2 = _kernel_view(x, layout)
    w = _flat_param(weight, dtype)
    b = _flat_param(bias, dtype)
    y2 = None if out is None else _direct_target(out, layout, (x2, w, b))
    direct = y2 is not None
    if not direct:
        y2 = np.empty(layout.kernel_shape, dtype=dtype)
    mean = np.empty(layout.rows, dtype=dtype)
    rstd = np.empty(layout.rows, dtype=dtype)
    _forward(x2, w, b, eps, y2, mean, rstd)

    y = out if direct else _finish(y2, out, layout)
    if return_stats:
        return y, mean.reshape(layout.stats_shape), rstd.reshape(layout.stats_shape)
    return y


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1, out=None, stream=None):
    """Gradients of :func:`layer_norm`.

    Parameters
    ----------
    dy : array_like
        Gradient of the loss with respect to ``y``; the shape of ``x``.
    x : array_like, float32 or float64
        The forward input.
    mean, rstd : array_like
        The statistics returned by ``layer_norm(..., return_stats=True)``,
        of the shape of the axes that are not normalised.
    weight : array_like or None
        The forward weight (None if the forward had none).
    axis : int or tuple of ints
        The same axes as in the forward call.
    out : ndarray, optional
        Receives ``dx`` (may be ``dy`` or ``x``, in place).
    stream : stream, optional
        GPU input only (as in :func:`layer_norm`).

    Returns
    -------
    dx : ndarray
        Of x's shape and dtype.
    dweight : ndarray or None
        ``sum(dy * xhat)`` over the rows, of the normalised shape; None when
        ``weight`` is None.
    dbias : ndarray
        ``sum(dy)`` over the rows: the gradient a bias would get.

    dy, mean, rstd and weight are converted to x's dtype.  The weight and
    bias gradients are summed in float64 over a fixed partition of the rows,
    so they are bitwise identical run to run and for any thread count.
    """
    if _on_device(dy, x, mean, rstd, weight, out):
        from . import gpu
        return gpu.layer_norm_backward(dy, x, mean, rstd, weight, axis=axis, out=out, stream=stream)
    if stream is not None:
        raise ValueError("stream= applies to GPU arrays only, but the inputs are host arrays")
    if out is None and _common_case(x, axis, 0.0, (weight,)):
        stats = x.shape[:-1]
        if (dy is not None and _plain(dy, x.dtype, x.shape) and mean is not None
                and _plain(mean, x.dtype, stats) and rstd is not None and _plain(rstd, x.dtype, stats)):
            d = x.shape[-1]
            dx = np.empty_like(x)
            dweight = None if weight is None else np.empty(d, dtype=x.dtype)
            dbias = np.empty(d, dtype=x.dtype)
            _cpu.backward(_as_rows(dy), _as_rows(x), mean.reshape(-1), rstd.reshape(-1),
                          weight, _as_rows(dx), dweight, dbias)
            return dx, dweight, dbias

    x = as_host_array("x", x)
    layout = Layout(x.shape, normalize_axes(axis, x.ndim))
    dtype = x.dtype
    dy = as_host_array("dy", dy)
    check_shape("dy", dy.shape, x.shape, "x's shape")
    mean = as_host_array("mean", mean)
    rstd = as_host_array("rstd", rstd)
    for name, s in (("mean", mean), ("rstd", rstd)):
        check_shape(name, s.shape, layout.stats_shape,
                    f"the shape of x's axes that are not normalised (axis={axis!r})")
    weight = check_param("weight", weight, layout, dtype)
    if out is not None:
        _check_out(out, x.shape, dtype)

    x2 = _kernel_view(x, layout)
    dy2 = _kernel_view(dy.astype(dtype, copy=False), layout)
    m = np.ascontiguousarray(mean, dtype=dtype).reshape(-1)
    r = np.ascontiguousarray(rstd, dtype=dtype).reshape(-1)
    w = _flat_param(weight, dtype)
    dx2 = None if out is None else _direct_target(out, layout, (x2, dy2, w, m, r))
    direct = dx2 is not None
    if not direct:
        dx2 = np.empty(layout.kernel_shape, dtype=dtype)
    dweight = None if w is None else np.empty(layout.features, dtype=dtype)
    dbias = np.empty(layout.features, dtype=dtype)
    _backward(dy2, x2, m, r, w, dx2, dweight, dbias)

    dx = out if direct else _finish(dx2, out, layout)
    if dweight is not None:
        dweight = dweight.reshape(layout.norm_shape)
    return dx, dweight, dbias.reshape(layout.norm_shape)
