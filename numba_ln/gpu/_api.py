"""The GPU front end: validate, reshape, allocate, launch.

Mirrors :mod:`numba_ln.api` for device arrays.  Every input must already be
on the GPU: a numba device array or any object with
``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors, ...), taken
zero-copy with :func:`numba.cuda.as_cuda_array` (which keeps its owner
alive).  Outputs are numba device arrays.
"""

import contextlib

import numpy as np
from numba import cuda

from .._validate import Layout, check_eps, check_shape, float_dtype, normalize_axes
from . import _kernels as K
from . import _launch
from ._memory import _c_strides, empty

__all__ = ["layer_norm", "layer_norm_backward", "is_available", "require_gpu"]


def is_available():
    """True when numba can use a CUDA GPU here (or the simulator is on)."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install counts as no GPU
        return False


def require_gpu():
    """RuntimeError, saying why, unless a CUDA GPU (or the simulator) is usable."""
    if K.SIM:
        return
    try:
        cuda.current_context()
        return
    except Exception as exc:  # CudaSupportError, CudaDriverError, ...
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())}".rstrip(" :.")
    raise RuntimeError(
        f"numba_ln got GPU arrays but no usable CUDA GPU: {reason}. "
        "Install numba-cuda with a CUDA toolkit (pip install 'numba-cuda[cu13]'), or pass "
        "NumPy arrays to run on the CPU.")


@contextlib.contextmanager
def _on_gpu():
    """The body of a GPU call: numba's ``ensure_context``, so that the current
    CUDA context is asked of the driver once a call and kept in thread-local
    storage for the allocations, views and launches inside it.  Otherwise
    each of them asks again (``cuCtxGetCurrent``, ``cuCtxGetDevice`` and
    numba's Python around them), five times a forward call and seven a
    backward: the largest item after the launches in a profile of the calls
    on an H200 machine (``scripts/gpu_launch_cost.py``).  Without a usable
    GPU, the error of :func:`require_gpu`."""
    if K.SIM:
        yield
        return
    try:
        from numba.cuda.cudadrv import devices

        cm = devices._runtime.ensure_context()
        cm.__enter__()
    except Exception:
        require_gpu()
        raise
    try:
        yield
    finally:
        cm.__exit__(None, None, None)


def _is_device(a):
    return getattr(a, "__cuda_ndarray__", False) or hasattr(a, "__cuda_array_interface__")


def _no_mixing(*named):
    """TypeError unless every given (name, array) is on the device."""
    on = [n for n, a in named if a is not None and _is_device(a)]
    for name, a in named:
        if a is None or _is_device(a):
            continue
        where = "a NumPy array" if isinstance(a, np.ndarray) else f"a host {type(a).__name__}"
        if not on:
            raise TypeError(f"{name} is {where}: numba_ln.gpu needs GPU arrays (numba device "
                            f"arrays, CuPy, PyTorch CUDA); call numba_ln.layer_norm / "
                            f"layer_norm_backward to run host arrays on the CPU")
        raise TypeError(
            f"{name} is {where} but {on[0]} is on the GPU: one call cannot mix host and "
            f"device arrays; move it with numba.cuda.to_device({name}) (or cupy.asarray / "
            f"tensor.cuda()), or pass host arrays only to run on the CPU")


def _as_device(name, a, stream=0):
    """``a`` as a numba device array (zero-copy), with a clear error otherwise.

    An object of another library is ordered before the work of ``stream``
    (:func:`_after_producer`)."""
    if getattr(a, "__cuda_ndarray__", False):
        arr = a
    elif hasattr(a, "__cuda_array_interface__"):
        try:
            arr = cuda.as_cuda_array(a) if K.SIM else cuda.as_cuda_array(a, sync=False)
        except Exception as exc:
            raise TypeError(f"{name} exposes __cuda_array_interface__ but numba cannot use it: "
                            f"{exc}") from None
        _after_producer(a, stream)
        if not K.SIM:
            # our own view: it carries the call's stream (not the producer's),
            # which a result written into it (out=) exports to its consumers
            arr.stream = stream
    else:
        _no_mixing((name, a))
    dtype = arr.dtype
    if dtype.byteorder not in "=|" and dtype != dtype.newbyteorder("="):
        raise TypeError(f"{name} is a non-native byte order device array ({dtype}); "
                        f"convert it to native {dtype.newbyteorder('=')} first")
    float_dtype(name, dtype)
    if any(s < 0 for s in arr.strides):
        raise ValueError(f"{name} has negative strides {tuple(arr.strides)}; pass a "
                         f"contiguous copy (e.g. cupy.ascontiguousarray({name}))")
    return arr


def numba_stream(stream):
    """The numba stream of a ``stream=`` argument, or 0 for the default stream.

    Accepted: None or 0 (the default stream); a numba stream; any stream with
    the CUDA stream protocol, ``__cuda_stream__`` (CuPy, PyTorch, cuda.core),
    or PyTorch's ``cuda_stream`` / CuPy's ``ptr`` handle attribute; a raw
    ``CUstream`` handle as an int.  Foreign streams are wrapped with
    :func:`numba.cuda.external_stream` (zero-copy; the owner keeps the
    stream alive).  Under the simulator, which runs every launch at once and
    has no external streams, they become the default stream.
    """
    is_int = isinstance(stream, (int, np.integer)) and not isinstance(stream, (bool, np.bool_))
    if stream is None or (is_int and stream == 0):
        return 0
    if _is_numba_stream(stream):
        # the default stream itself as 0, as numba's own calls take it
        return 0 if not K.SIM and int(stream.handle) == 0 else stream
    handle = None
    if is_int and stream > 0:
        handle = int(stream)
    elif hasattr(stream, "__cuda_stream__"):
        try:
            _version, handle = stream.__cuda_stream__()
            handle = int(handle)
        except Exception as exc:
            raise TypeError(f"stream is a {type(stream).__name__} whose __cuda_stream__() "
                            f"failed or did not return (version, handle): {exc}") from None
    elif isinstance(getattr(stream, "cuda_stream", None), int):  # torch.cuda.Stream
        handle = stream.cuda_stream
    elif type(stream).__module__.startswith("cupy") and isinstance(getattr(stream, "ptr", None),
                                                                    int):  # older CuPy
        handle = stream.ptr
    if handle is None:
        raise TypeError(f"stream is {type(stream).__name__} {stream!r}: pass a numba stream "
                        f"(numba.cuda.stream()), a stream with __cuda_stream__ (CuPy, PyTorch, "
                        f"cuda.core), a raw CUstream handle (int), or None for the default "
                        f"stream")
    if K.SIM:
        return cuda.default_stream()
    if handle == 0:  # a library's handle of the default stream
        return 0
    wrapped = cuda.external_stream(handle)
    wrapped._numba_ln_owner = stream  # (the foreign stream outlives our arrays' frees on it)
    return wrapped


def _is_numba_stream(stream):
    if K.SIM:
        return isinstance(stream, cuda.stream)
    from numba.cuda.cudadrv.driver import Stream

    return isinstance(stream, Stream)


_ptr = _launch.data_ptr


def _byte_range(a):
    lo = _ptr(a)
    span = sum((n - 1) * abs(s) for n, s in zip(a.shape, a.strides)) + a.dtype.itemsize
    return lo, lo + (span if a.size else 0)


def _overlaps(a, b):
    (a0, a1), (b0, b1) = _byte_range(a), _byte_range(b)
    return a0 < b1 and b0 < a1


def _same_view(a, b):
    return (_ptr(a) == _ptr(b) and tuple(a.shape) == tuple(b.shape)
            and tuple(a.strides) == tuple(b.strides))


def _is_c_contiguous(a):
    return bool(a.is_c_contiguous()) if a.size else True


def _reshape(a, shape):
    """``a.reshape(shape)``, or ``a`` itself when it has that shape already
    (a numba device array's ``reshape`` costs microseconds of Python).  The
    result keeps ``a``'s stream (numba's ``reshape`` drops it), which its
    ``__cuda_array_interface__`` exports to the next consumer."""
    if tuple(a.shape) == shape:
        return a
    r = a.reshape(shape)
    if not K.SIM:
        r.stream = a.stream
    return r


def _row_view(a, i, shape):
    """``a[i].reshape(shape)`` for a C-contiguous 2-D device array ``a``: a
    view of row ``i``'s memory, built directly (numba's ``__getitem__`` and
    ``reshape`` cost tens of microseconds of Python together)."""
    nbytes = a.shape[1] * a.dtype.itemsize
    if K.SIM or nbytes == 0:
        return a[i].reshape(shape)
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    mem = a.gpu_data.view(i * nbytes, (i + 1) * nbytes)
    return DeviceNDArray(shape, _c_strides(shape, a.dtype.itemsize), a.dtype, stream=a.stream,
                         gpu_data=mem)


def _rows(a, layout, dtype, stream):
    """``a`` as C-contiguous (rows, features) of ``dtype``: a view when it
    is already so, else a gather (transpose, compaction and/or cast)."""
    if layout.trailing and a.dtype == dtype and _is_c_contiguous(a):
        return _reshape(a, (layout.rows, layout.features))
    g = _launch.gather(a, layout.perm, dtype, stream)
    return g.reshape(layout.rows, layout.features)


def _flat(a, n, dtype, stream):
    """A 1-D C-contiguous array of ``dtype`` with the ``n`` elements of ``a``."""
    if a.dtype == dtype and _is_c_contiguous(a):
        return _reshape(a, (n,))
    return _launch.gather(a, tuple(range(a.ndim)), dtype, stream).reshape(n)


def _param(name, p, layout, dtype, stream):
    if p is None:
        return None
    p = _as_device(name, p, stream)
    check_shape(name, p.shape, layout.norm_shape, "the normalized shape")
    return _flat(p, layout.features, dtype, stream)


def _check_out(out, shape, dtype, stream, name="out"):
    out = _as_device(name, out, stream)
    check_shape(name, out.shape, shape, "the result's shape")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype} but the result is {dtype}; pass "
                        f"out=numba.cuda.device_array({tuple(shape)}, dtype=np.{dtype.name})")
    return out


def _target(out, layout, reads, stream, dtype):
    """``(y2, direct)``: the (rows, features) array the kernel writes.

    ``direct``: it is ``out`` itself (a view); else a fresh array that
    :func:`_finish` then puts into ``out`` (or returns).  A fresh one is used
    when ``out`` is strided, not in trailing layout, or overlaps an input other
    than by being exactly it.
    """
    if out is not None and layout.trailing and _is_c_contiguous(out):
        y2 = _reshape(out, (layout.rows, layout.features))
        if all(r is None or not _overlaps(y2, r) or _same_view(y2, r) for r in reads):
            return y2, True
    return empty((layout.rows, layout.features), dtype, stream=stream), False


def _finish(y2, out, layout, stream):
    if out is None:
        if layout.trailing:
            return _reshape(y2, layout.shape)
        out = empty(layout.shape, y2.dtype, stream=stream)
    _launch.scatter(y2.reshape(layout.permuted_shape), out, layout.perm, stream)
    return out


_DUMMIES = {}


def _dummy(dtype, stream):
    """A 4-element array standing in for an absent weight/bias: the kernels
    read it (without a branch; vector pieces read up to 4 values of it) but
    select past its values.  Zeros, so that the read is of initialised
    memory.

    Kept per context and dtype: an allocation per call would cost more than
    a small LayerNorm.
    """
    if K.SIM:
        return cuda.to_device(np.zeros(4, dtype), stream=stream)
    key = (id(cuda.current_context()), dtype.str)
    arr = _DUMMIES.get(key)
    if arr is None:
        arr = _DUMMIES[key] = cuda.to_device(np.zeros(4, dtype))  # once: synchronous
    return arr


#: Scratch buffers of the kernels (partial sums, and the forward's mean and
#: rstd when they are not returned), kept between calls:
#: ``{(context id, stream handle): (context, {key: buffers})}``.  Outputs are
#: always fresh arrays; only internal scratch is reused, and only on the
#: stream it was last used on (stream order makes the reuse safe).
_WORK = {}

#: Scratch buffers a stream keeps before its cache is emptied (a training
#: step of a few LayerNorm shapes needs two or three a shape).
_WORK_MAX = 16


def _after_producer(obj, stream):
    """Order ``stream`` after the stream ``obj`` was produced on.

    Version 3 of ``__cuda_array_interface__`` names that stream (``"stream"``:
    None when no ordering is needed, 1 the legacy default stream, 2 the
    per-thread one, else a handle).  numba's ``as_cuda_array`` would wait for
    it on the host; here ``stream`` waits for an event recorded on it, with
    no host synchronisation.  Nothing is needed when both are default
    streams (they are ordered with each other) or the same stream.
    """
    if K.SIM or not _cai_sync():
        return
    h = obj.__cuda_array_interface__.get("stream")
    if not h:
        return
    ours = 0 if isinstance(stream, int) else int(stream.handle)
    if h == ours or (h in (1, 2) and ours in (0, 1, 2)):
        return
    event = cuda.event(timing=False)
    event.record(cuda.external_stream(int(h)))
    event.wait(stream)


def _cai_sync():
    """numba's ``NUMBA_CUDA_ARRAY_INTERFACE_SYNC`` (default on): whether
    imported arrays are ordered after their producer's stream at all."""
    try:
        from numba.cuda.core import config
    except ImportError:  # (older numba-cuda)
        from numba.core import config
    return bool(getattr(config, "CUDA_ARRAY_INTERFACE_SYNC", 1))


def _stream_key(stream):
    if isinstance(stream, int):
        return stream
    h = getattr(stream, "handle", None)
    for get in (lambda: int(h), lambda: int(h.value or 0)):
        try:
            return get()
        except Exception:
            pass
    return ("id", id(stream))


def _workspace(stream):
    """The scratch cache of ``stream`` in the current context (None in the
    simulator, where allocations are free)."""
    if K.SIM:
        return None
    ctx = cuda.current_context()
    key = (id(ctx), _stream_key(stream))
    entry = _WORK.get(key)
    if entry is None or entry[0] is not ctx:
        entry = _WORK[key] = (ctx, {})
    work = entry[1]
    if len(work) >= _WORK_MAX:
        work.clear()
    return work


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None,
               return_stats=False, stream=None):
    """Layer normalisation of a GPU array over ``axis``, on the GPU.

    The GPU twin of :func:`numba_ln.layer_norm` (which calls this for GPU
    input), with the same arguments, results and errors.

    Parameters
    ----------
    x : device array, float32 or float64
        A numba device array or any object with ``__cuda_array_interface__``
        (CuPy array, PyTorch CUDA tensor), used zero-copy.  Any strides >= 0.
    weight, bias : device arrays or None
        Of the normalised shape; converted to x's dtype on the device.
    axis : int or tuple of ints, default -1
        Axes to normalise over.  Trailing axes of a C-contiguous ``x`` are
        the fast path; any other layout costs a strided copy of ``x`` to
        ``(rows, features)`` (and of the result back).
    eps : float, default 1e-5
    out : device array, optional
        Receives ``y`` (``out=x`` normalises in place).
    return_stats : bool, default False
        Also return ``mean`` and ``rstd`` (device arrays of x's dtype, of the
        shape of the axes that are not normalised).
    stream : stream, optional
        Every kernel and allocation goes on it; default: the default stream.
        A numba stream, or any stream with ``__cuda_stream__`` (CuPy,
        PyTorch, cuda.core) or a raw ``CUstream`` handle (see
        :func:`numba_stream`).
        Nothing synchronises with the host.

    Returns
    -------
    y : numba device array
        Or ``(y, mean, rstd)``.
    """
    _no_mixing(("x", x), ("weight", weight), ("bias", bias), ("out", out))
    with _on_gpu():
        stream = numba_stream(stream)
        x = _as_device("x", x, stream)
        layout = Layout(tuple(x.shape), normalize_axes(axis, x.ndim))
        eps = check_eps(eps)
        dtype = float_dtype("x", x.dtype)
        w = _param("weight", weight, layout, dtype, stream)
        b = _param("bias", bias, layout, dtype, stream)
        if out is not None:
            out = _check_out(out, layout.shape, dtype, stream)

        x2 = _rows(x, layout, dtype, stream)
        y2, direct = _target(out, layout, (x2, w, b), stream, dtype)
        # mean and rstd: the rows of one allocation (one cuMemAlloc, not two);
        # when they are not returned, a scratch buffer kept for the next call
        work = _workspace(stream)

        def new_stats():
            return empty((2, layout.rows), dtype, stream=stream)
        stats = (new_stats() if return_stats
                 else _launch.scratch(work, ("stats", layout.rows, dtype.char), new_stats))
        if layout.features == 0 and layout.rows > 0 and return_stats:
            stats.copy_to_device(np.full((2, layout.rows), np.nan, dtype), stream=stream)
        flags = (K.HAS_WEIGHT if w is not None else 0) | (K.HAS_BIAS if b is not None else 0)
        dummy = _dummy(dtype, stream) if w is None or b is None else None
        _launch.forward(x2, dummy if w is None else w, dummy if b is None else b, flags,
                        dtype.type(eps), y2, stats, stream, work=work)

        y = out if direct else _finish(y2, out, layout, stream)
        if return_stats:
            return (y, _row_view(stats, 0, layout.stats_shape),
                    _row_view(stats, 1, layout.stats_shape))
        return y


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1, out=None, stream=None):
    """Gradients of :func:`layer_norm` on the GPU.

    The GPU twin of :func:`numba_ln.layer_norm_backward`: returns
    ``(dx, dweight or None, dbias)`` as device arrays.  ``dweight`` and
    ``dbias`` are summed in x's dtype, per block and then over the blocks in a
    fixed order (no atomics): bitwise identical run to run for one shape.
    ``out`` receives ``dx`` (may be ``dy`` or ``x``).  ``stream`` as in
    :func:`layer_norm`.
    """
    _no_mixing(("dy", dy), ("x", x), ("mean", mean), ("rstd", rstd), ("weight", weight),
               ("out", out))
    with _on_gpu():
        stream = numba_stream(stream)
        x = _as_device("x", x, stream)
        layout = Layout(tuple(x.shape), normalize_axes(axis, x.ndim))
        dtype = float_dtype("x", x.dtype)
        dy = _as_device("dy", dy, stream)
        check_shape("dy", dy.shape, x.shape, "x's shape")
        stats = []
        for name, s in (("mean", mean), ("rstd", rstd)):
            s = _as_device(name, s, stream)
            expected = layout.stats_shape
            if not (tuple(s.shape) == expected or (not expected and tuple(s.shape) in ((), (1,)))):
                check_shape(name, s.shape, expected,
                            f"the shape of x's axes that are not normalised (axis={axis!r})")
            stats.append(_flat(s, layout.rows, dtype, stream))
        m, r = stats
        w = _param("weight", weight, layout, dtype, stream)
        if out is not None:
            out = _check_out(out, layout.shape, dtype, stream)

        x2 = _rows(x, layout, dtype, stream)
        dy2 = _rows(dy, layout, dtype, stream)
        dx2, direct = _target(out, layout, (x2, dy2, w), stream, dtype)
        # dweight and dbias: the rows of one allocation (one cuMemAlloc, not two)
        grads = empty((1 if w is None else 2, layout.features), dtype, stream=stream)
        flags = K.HAS_WEIGHT if w is not None else 0
        _launch.backward(dy2, x2, m, r, _dummy(dtype, stream) if w is None else w, flags,
                         dx2, grads, stream, work=_workspace(stream))

        dx = out if direct else _finish(dx2, out, layout, stream)
        dweight = None if w is None else _row_view(grads, 0, layout.norm_shape)
        return dx, dweight, _row_view(grads, grads.shape[0] - 1, layout.norm_shape)
