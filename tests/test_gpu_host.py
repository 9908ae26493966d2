"""Host-side helpers of the GPU front end, with no GPU: real numba device
arrays over fake memory (no driver call is made).  The views these helpers
build replace numba's ``__getitem__``/``reshape`` on the hot path, so they
must describe exactly the memory numba's own would."""

import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("real numba device arrays (the simulator's are NumPy arrays)",
                allow_module_level=True)

from cuda.bindings import driver as binding  # noqa: E402
from numba.cuda.cudadrv.devicearray import DeviceNDArray  # noqa: E402
from numba.cuda.cudadrv.driver import MemoryPointer  # noqa: E402

from numba_ln.gpu import _api  # noqa: E402

BASE = 0x7E0000000000


class FakeContext:
    pass


CTX = FakeContext()


def fake_array(shape, dtype, freed=None):
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    fin = None if freed is None else (lambda: freed.append(BASE))
    mem = MemoryPointer(CTX, binding.CUdeviceptr(BASE), size, finalizer=fin)
    return DeviceNDArray(shape, _api._c_strides(shape, dtype.itemsize), dtype, gpu_data=mem)


def ptr(a):
    return a.__cuda_array_interface__["data"][0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 1, 4)])
def test_row_view_is_the_row(shape, dtype):
    n = int(np.prod(shape))
    a = fake_array((2, n), dtype)
    for i in (0, 1):
        v = _api._row_view(a, i, shape)
        assert isinstance(v, DeviceNDArray)
        assert v.shape == shape and v.dtype == np.dtype(dtype) and v.is_c_contiguous()
        assert v.strides == _api._c_strides(shape, np.dtype(dtype).itemsize)
        assert ptr(v) == BASE + i * n * np.dtype(dtype).itemsize
        assert v.alloc_size == n * np.dtype(dtype).itemsize


def test_row_view_scalar_shape():
    a = fake_array((2, 1), np.float32)
    v = _api._row_view(a, 1, ())
    assert v.shape == () and ptr(v) == BASE + 4


def test_row_view_keeps_the_allocation_alive():
    import gc

    freed = []
    a = fake_array((2, 8), np.float32, freed)
    v = _api._row_view(a, 1, (8,))
    del a
    gc.collect()
    assert freed == []
    del v
    gc.collect()
    assert freed == [BASE]


def test_c_strides():
    assert _api._c_strides((3, 4, 5), 4) == (80, 20, 4)
    assert _api._c_strides((5,), 8) == (8,)
    assert _api._c_strides((), 4) == ()


def test_reshape_skips_a_no_op():
    a = fake_array((4, 6), np.float32)
    assert _api._reshape(a, (4, 6)) is a
    b = _api._reshape(a, (24,))
    assert b.shape == (24,) and ptr(b) == BASE
