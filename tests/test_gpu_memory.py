"""The stream-ordered memory pool of the GPU path (``numba_ln.gpu.use_memory_pool``).

Runs with no GPU: the CUDA driver is replaced by a recorder of the calls the
pool makes, and the arrays are real numba device arrays over the pointers it
hands out.  The same pool on a real GPU: ``tests/test_gpu_real.py``.
"""

import gc
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("the simulator has no device memory (the pool is off there)",
                allow_module_level=True)

from numba import cuda  # noqa: E402

from numba_ln import gpu  # noqa: E402
from numba_ln.gpu import _memory  # noqa: E402


class FakeDriver:
    """Records the driver calls; hands out distinct device pointers."""

    def __init__(self):
        from cuda.bindings import driver as binding

        self.binding = binding
        self.calls = []
        self.next = 0x7F0000000000
        self.fail_free = False
        self.stack = []  # pushed contexts

    def cuMemPoolCreate(self, props):
        self.calls.append(("create", int(props.location.id), props.allocType))
        return f"pool{len([c for c in self.calls if c[0] == 'create'])}"

    def cuMemPoolSetAttribute(self, pool, attr, value):
        self.calls.append(("set", pool, attr, int(value)))

    def cuMemAllocFromPoolAsync(self, size, pool, stream):
        self.next += 1 << 20
        self.calls.append(("alloc", size, pool, int(stream)))
        return self.binding.CUdeviceptr(self.next)

    def cuMemFreeAsync(self, ptr, stream):
        if self.fail_free:
            raise RuntimeError("context destroyed")
        self.calls.append(("free", int(ptr), int(stream), self.current))

    def cuCtxPushCurrent(self, handle):
        self.stack.append(handle)

    def cuCtxPopCurrent(self):
        return self.stack.pop()

    @property
    def current(self):
        return self.stack[-1] if self.stack else None

    def cuMemPoolTrimTo(self, pool, keep):
        self.calls.append(("trim", pool, keep))

    def of(self, kind):
        return [c for c in self.calls if c[0] == kind]


class FakeDevice:
    def __init__(self, id):
        self.id = id
        self.primary_context = None


class FakeContext:
    def __init__(self, dev=0):
        self.device = FakeDevice(dev)
        self.device.primary_context = self
        self.handle = f"ctx{dev}"


S1 = 0x5100  # the handle of a stream of the caller's
LEGACY = 1  # CU_STREAM_LEGACY


class FakeStream:
    def __init__(self, handle):
        self.handle = handle  # (an int here; a CUstream in numba)

    def __int__(self):  # (numba's streams are ints for __cuda_array_interface__)
        return 0x5000


@pytest.fixture
def fake(monkeypatch):
    drv = FakeDriver()
    ctx = FakeContext(dev=1)
    monkeypatch.setattr(_memory, "_driver", lambda: drv)
    monkeypatch.setattr(_memory, "_POOLS", {})
    monkeypatch.setattr(cuda, "current_context", lambda: ctx)
    monkeypatch.setattr(cuda, "default_stream", lambda: FakeStream(0))
    monkeypatch.setattr(cuda, "device_array",
                        lambda shape, dtype, stream=0: ("numba's manager", shape, dtype))
    prev = gpu.use_memory_pool(False)
    yield drv, ctx
    gpu.use_memory_pool(prev)


def test_off_by_default_numba_allocates(fake):
    drv, _ = fake
    assert gpu.memory_pool_enabled() is False
    assert _memory.empty((4, 3), np.float32, 0) == ("numba's manager", (4, 3), np.float32)
    assert drv.calls == []


def test_pool_allocates_on_the_stream_and_frees_there_when_dropped(fake):
    drv, ctx = fake
    assert gpu.use_memory_pool() is False
    s = FakeStream(S1)
    a = _memory.empty((3, 5), np.float64, s)
    assert a.shape == (3, 5) and a.strides == (40, 8) and a.dtype == np.float64
    assert a.is_c_contiguous()
    ptr = a.__cuda_array_interface__["data"][0]
    assert drv.of("create") == [("create", 1, drv.binding.CUmemAllocationType
                                 .CU_MEM_ALLOCATION_TYPE_PINNED)]
    (_, _, attr, value), = drv.of("set")
    assert attr == drv.binding.CUmemPool_attribute.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD
    assert value == 2 ** 64 - 1  # freed memory stays in the pool
    assert drv.of("alloc") == [("alloc", 120, "pool1", S1)]

    b = _memory.empty(7, np.float32, 0)  # the default stream; one pool a context
    assert b.shape == (7,) and drv.of("alloc")[-1] == ("alloc", 28, "pool1", 0)
    assert len(drv.of("create")) == 1

    view = a.reshape(15)  # an array over the same memory keeps it alive
    del a
    gc.collect()
    assert drv.of("free") == []
    del view
    gc.collect()
    # on its stream, with its context current (the collector may run anywhere)
    assert drv.of("free") == [("free", ptr, S1, "ctx1")]
    assert drv.stack == []
    bptr = b.__cuda_array_interface__["data"][0]
    del b
    gc.collect()
    # a default-stream array: on the legacy default stream, not on whatever
    # "the default stream" means to the thread that frees it
    assert drv.of("free")[-1] == ("free", bptr, LEGACY, "ctx1")
    # so is one of a per-thread default stream (handle 2: "this thread's")
    c = _memory.empty(3, np.float32, FakeStream(2))
    cptr = c.__cuda_array_interface__["data"][0]
    assert drv.of("alloc")[-1] == ("alloc", 12, "pool1", 2)
    del c
    gc.collect()
    assert drv.of("free")[-1] == ("free", cptr, LEGACY, "ctx1")


def test_a_new_context_gets_its_own_pool(fake, monkeypatch):
    drv, _ = fake
    gpu.use_memory_pool(True)
    keep = [_memory.empty(2, np.float32, 0)]
    other = FakeContext(dev=0)
    monkeypatch.setattr(cuda, "current_context", lambda: other)
    keep.append(_memory.empty(2, np.float32, 0))
    assert [c[1] for c in drv.of("create")] == [1, 0]
    assert [c[2] for c in drv.of("alloc")] == ["pool1", "pool2"]


def test_empty_arrays_and_switching_off(fake):
    drv, _ = fake
    gpu.use_memory_pool(True)
    assert _memory.empty((0, 4), np.float32, 0)[0] == "numba's manager"
    keep = _memory.empty(5, np.float32, 0)
    assert gpu.use_memory_pool(False) is True
    assert drv.of("trim") == [("trim", "pool1", 0)]  # unused memory back to the GPU
    assert _memory.empty(5, np.float32, 0)[0] == "numba's manager"
    del keep
    gc.collect()
    assert len(drv.of("free")) == 1  # the pool's arrays still go back to it


def test_a_free_that_fails_is_quiet(fake):
    drv, _ = fake
    gpu.use_memory_pool(True)
    a = _memory.empty(3, np.float32, 0)
    drv.fail_free = True
    del a
    gc.collect()  # no exception escapes the finalizer
    assert drv.of("free") == [] and drv.stack == []


def test_no_free_once_the_context_was_reset(fake):
    """After cuda.close() the context's memory and pool are gone (and the
    address may belong to a new context): nothing is freed."""
    drv, ctx = fake
    gpu.use_memory_pool(True)
    a = _memory.empty(3, np.float32, 0)
    ctx.device.primary_context = None  # what cuda.close() leaves
    del a
    gc.collect()
    assert drv.of("free") == [] and drv.stack == []


def test_out_of_memory_flushes_and_retries_once(fake):
    from numba.cuda.cudadrv.driver import CudaAPIError

    drv, ctx = fake
    oom = drv.binding.CUresult.CUDA_ERROR_OUT_OF_MEMORY
    flushed = []
    # numba's pending frees: its memory manager's queue (not the context's)
    ctx.memory_manager = type("M", (), {})()
    ctx.memory_manager.deallocations = type("D", (), {"clear": lambda self: flushed.append(1)})()
    real = drv.cuMemAllocFromPoolAsync
    fails = [2]

    def alloc(size, pool, stream):
        if fails[0]:
            fails[0] -= 1
            raise CudaAPIError(oom, "out of memory")
        return real(size, pool, stream)
    drv.cuMemAllocFromPoolAsync = alloc
    drv.cuCtxSynchronize = lambda: drv.calls.append(("sync",))
    gpu.use_memory_pool(True)
    with pytest.raises(CudaAPIError):  # out of memory twice: the error
        _memory.empty(3, np.float32, 0)
    assert flushed == [1] and drv.of("sync") == [("sync",)]
    assert drv.of("trim")[-1] == ("trim", "pool1", 0)
    fails[0] = 1
    a = _memory.empty(3, np.float32, 0)  # once: flushed, trimmed, retried
    assert a.shape == (3,) and flushed == [1, 1]


def test_a_gpu_without_memory_pools_is_a_clear_error(fake, monkeypatch):
    drv, ctx = fake
    ctx.device.MEMORY_POOLS_SUPPORTED = 0
    gpu.use_memory_pool(True)
    with pytest.raises(RuntimeError, match=r"no stream-ordered memory pools.*"
                                           r"use_memory_pool\(False\)"):
        _memory.empty(4, np.float32, 0)
    assert drv.of("create") == []
