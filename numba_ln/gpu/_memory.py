"""Where the GPU path allocates its results: numba's memory manager (the
default), or a stream-ordered memory pool (:func:`use_memory_pool`).

numba's default manager calls ``cuMemAlloc`` for every array and frees them in
batches with ``cuMemFree``, which waits for the GPU: below ~16M elements a
call spends more time allocating than computing.  The pool allocates with
``cuMemAllocFromPoolAsync`` on the call's stream and frees with
``cuMemFreeAsync`` when the array is garbage collected (on the same stream, or
on the legacy default stream for results of a default stream; see
:func:`_freer`): no device synchronisation, and memory comes back from the
pool (kept up to its high-water mark) instead of from the driver.  One pool
per CUDA context, made with the driver's stream-ordered allocator (CUDA
11.2+, through the ``cuda.bindings`` that numba-cuda uses).

The pool's rule is CuPy's and PyTorch's: an array is freed in the order of
the stream it was allocated on, so work on *another* stream that still uses
it must finish (or be waited for) before the array is dropped.  Work on the
same stream, and anything synchronised with it, is always safe.
"""

import math
import threading
import weakref

import numpy as np
from numba import cuda

from . import _kernels as K

__all__ = ["use_memory_pool", "memory_pool_enabled", "empty"]

_STATE = {"pool": False}

#: ``{id(context): (weakref to the context, pool handle)}``
_POOLS = {}
_POOLS_LOCK = threading.Lock()


def _driver():
    from numba.cuda.cudadrv.driver import driver

    return driver


def _binding():
    from cuda.bindings import driver as binding

    return binding


def use_memory_pool(enable=True):
    """Allocate the GPU path's results from a stream-ordered memory pool
    (``enable=True``) or with numba's memory manager (``False``, the default).

    Returns the previous setting, so that ``prev = use_memory_pool(); ...;
    use_memory_pool(prev)`` restores it.  Turning the pool off also returns
    its unused memory to the GPU (``cuMemPoolTrimTo``); arrays it allocated
    stay valid and go back to it when dropped.

    With the pool, an array is freed in the order of the stream its call ran
    on (``stream=``, default the default stream): work on another stream that
    uses it must be finished, or waited for, before the last reference to it
    is dropped (as with CuPy's and PyTorch's pools).  Under the CUDA
    simulator this switch has no effect.
    """
    prev = _STATE["pool"]
    _STATE["pool"] = bool(enable)
    if prev and not enable:
        for ref, pool in list(_POOLS.values()):
            if ref() is not None:
                try:
                    _driver().cuMemPoolTrimTo(pool, 0)
                except Exception:  # a context being torn down: nothing to return
                    pass
    return prev


def memory_pool_enabled():
    """Whether :func:`use_memory_pool` is on."""
    return _STATE["pool"]


def _pool(ctx):
    """The pool of context ``ctx``, made on first use: device memory, no
    release threshold (freed memory stays in the pool for the next call)."""
    entry = _POOLS.get(id(ctx))
    if entry is not None and entry[0]() is ctx:
        return entry[1]
    with _POOLS_LOCK:
        entry = _POOLS.get(id(ctx))
        if entry is not None and entry[0]() is ctx:
            return entry[1]
        return _new_pool(ctx)


def _new_pool(ctx):
    if not getattr(ctx.device, "MEMORY_POOLS_SUPPORTED", 1):
        raise RuntimeError(
            f"numba_ln.gpu.use_memory_pool() is on but GPU {ctx.device.id} (or its driver) has "
            "no stream-ordered memory pools (CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED is 0); "
            "call numba_ln.gpu.use_memory_pool(False) to allocate with numba's memory manager")
    b = _binding()
    props = b.CUmemPoolProps()
    props.allocType = b.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
    props.handleTypes = b.CUmemAllocationHandleType.CU_MEM_HANDLE_TYPE_NONE
    props.location.type = b.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
    props.location.id = int(ctx.device.id)
    drv = _driver()
    pool = drv.cuMemPoolCreate(props)
    drv.cuMemPoolSetAttribute(pool, b.CUmemPool_attribute.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                              b.cuuint64_t(2 ** 64 - 1))
    _POOLS[id(ctx)] = (weakref.ref(ctx), pool)
    return pool


def _freer(drv, ptr, ctx, stream):
    """The finalizer of one pool allocation: ``cuMemFreeAsync`` on its
    stream (a numba stream, which it keeps alive; None: the legacy default
    stream, which is ordered after the work of every blocking stream), with
    the allocation's context made current for the call (the garbage collector
    may run it on any thread).  Nothing is done once the context has been
    reset (``cuda.close()``): its memory and its pool went with it."""
    ref = weakref.ref(ctx)

    def free():
        c = ref()
        try:
            if c is None or c.device.primary_context is not c:
                return
            drv.cuCtxPushCurrent(c.handle)
        except Exception:  # (a context being torn down, interpreter exit)
            return
        try:
            handle = _legacy_stream() if stream is None else stream.handle
            drv.cuMemFreeAsync(ptr, handle)
        except Exception:
            pass
        finally:
            try:
                drv.cuCtxPopCurrent()
            except Exception:
                pass
    return free


def _legacy_stream():
    b = _binding()
    return b.CUstream(b.CU_STREAM_LEGACY)


def _alloc(drv, ctx, size, pool, handle):
    """``cuMemAllocFromPoolAsync``; when the GPU is out of memory, first
    flush numba's pending frees (its memory manager's queue), wait for the
    device (so that the pool's pending frees on every stream complete) and
    return the pool's unused memory, then try once more (as numba's own
    allocator does)."""
    try:
        return drv.cuMemAllocFromPoolAsync(size, pool, handle)
    except Exception as exc:
        if getattr(exc, "code", None) != _binding().CUresult.CUDA_ERROR_OUT_OF_MEMORY:
            raise
    deallocs = getattr(getattr(ctx, "memory_manager", None), "deallocations", None)
    if deallocs is not None:
        deallocs.clear()
    drv.cuCtxSynchronize()
    drv.cuMemPoolTrimTo(pool, 0)
    return drv.cuMemAllocFromPoolAsync(size, pool, handle)


def _c_strides(shape, item):
    """The byte strides of a C-contiguous array of ``shape`` and itemsize ``item``."""
    strides = []
    for n in reversed(shape):
        strides.append(item)
        item *= n
    return tuple(reversed(strides))


def empty(shape, dtype, stream):
    """An uninitialised C-contiguous device array, from the pool when it is
    on (and the array not empty), else ``numba.cuda.device_array``.
    ``stream``: a numba stream, or 0 for the default stream."""
    if not _STATE["pool"] or K.SIM:
        return cuda.device_array(shape, dtype, stream=stream)
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.cudadrv.driver import MemoryPointer

    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    if size == 0:
        return cuda.device_array(shape, dtype, stream=stream)
    ctx = cuda.current_context()
    if stream is None or isinstance(stream, int):  # 0: numba's default stream
        handle = cuda.default_stream().handle
    else:
        handle = stream.handle
    # A default stream (0 or 1 legacy, 2 per-thread) means "this thread's" to
    # the driver: its results are freed on the legacy default stream, which
    # is ordered after the work of every blocking stream (per-thread ones
    # too), whatever thread the garbage collector frees them on.
    default = int(handle) in (0, 1, 2)
    drv = _driver()
    ptr = _alloc(drv, ctx, size, _pool(ctx), handle)
    mem = MemoryPointer(weakref.proxy(ctx), ptr, size,
                        finalizer=_freer(drv, ptr, ctx, None if default else stream))
    return DeviceNDArray(shape, _c_strides(shape, dtype.itemsize), dtype, stream=stream,
                         gpu_data=mem)
