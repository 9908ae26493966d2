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


def fake_array(shape, dtype, freed=None, offset=0):
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    fin = None if freed is None else (lambda: freed.append(BASE))
    mem = MemoryPointer(CTX, binding.CUdeviceptr(BASE + offset), size, finalizer=fin)
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


@pytest.mark.parametrize("width,dtype", [(4, np.float32), (2, np.float64), (4, np.float64),
                                         (2, np.float32)])
def test_vector_ok(width, dtype):
    """The vector-access builds take rows of a multiple of the width, data
    aligned to a piece (at most 16 bytes), arrays of at least a piece."""
    from numba_ln.gpu import _kernels, _launch

    item = np.dtype(dtype).itemsize
    align = _kernels.vector_align(width, item)
    assert align == min(16, width * item)
    d = 3 * width
    x, y, w = (fake_array((5, d), dtype), fake_array((5, d), dtype), fake_array((d,), dtype))
    assert _launch.vector_ok(width, d, x, y, w)
    assert not _launch.vector_ok(width, d + 1, x, y, w)  # (rows not a multiple)
    for off in range(item, 2 * align, item):
        assert _launch.vector_ok(width, d, x, fake_array((5, d), dtype, offset=off), w) == (
            off % align == 0), off
    assert not _launch.vector_ok(width, d, x, y, fake_array((width - 1,), dtype))
    assert _launch.vector_ok(width, d, x, y, fake_array((4,), dtype))  # the weight's dummy


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


class _Recorder:
    def __init__(self):
        self.calls = []


@pytest.fixture
def fake_streams(monkeypatch):
    from numba import cuda

    rec = _Recorder()

    class External:
        def __init__(self, h):
            self.handle = binding.CUstream(h)
            rec.calls.append(("external", h))

    class Event:
        def record(self, stream):
            rec.calls.append(("record", int(stream.handle)))

        def wait(self, stream):
            rec.calls.append(("wait", stream if isinstance(stream, int) else int(stream.handle)))

    monkeypatch.setattr(cuda, "external_stream", External)
    monkeypatch.setattr(cuda, "event", lambda timing=True: rec.calls.append("event") or Event())
    return rec


class _Protocol:
    def __init__(self, h):
        self.h = h

    def __cuda_stream__(self):
        return (0, self.h)


class _TorchLike:
    def __init__(self, h):
        self.cuda_stream = h


def test_numba_stream_conversions(fake_streams):
    from numba.cuda.cudadrv.driver import Stream

    assert _api.numba_stream(None) == 0 and _api.numba_stream(0) == 0
    assert _api.numba_stream(np.int64(0)) == 0
    for default in (_Protocol(0), _TorchLike(0), Stream(binding.CUstream(0))):
        assert _api.numba_stream(default) == 0  # the default stream, as numba takes it
    own = Stream(binding.CUstream(0x77))
    assert _api.numba_stream(own) is own
    foreign = _Protocol(0x1234)
    s = _api.numba_stream(foreign)
    assert int(s.handle) == 0x1234 and s._numba_ln_owner is foreign  # kept alive
    assert int(_api.numba_stream(_TorchLike(0x99)).handle) == 0x99
    assert int(_api.numba_stream(0x55).handle) == 0x55
    assert fake_streams.calls == [("external", 0x1234), ("external", 0x99), ("external", 0x55)]


class _Produced:
    def __init__(self, stream):
        self.__cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False),
                                         "version": 3, "stream": stream}


@pytest.mark.parametrize("producer,ours,ordered", [
    (None, 0, False),     # the producer asks for no ordering
    (1, 0, False),        # legacy default vs numba's default stream: ordered already
    (2, 0, False),        # the per-thread default stream and the legacy one: likewise
    (0x55, 0x55, False),  # the same stream
    (0x55, 0, True),      # another stream: an event, no host synchronisation
    (1, 0x66, True),
    (0x55, 0x66, True),
])
def test_foreign_arrays_are_ordered_before_the_call(fake_streams, producer, ours, ordered):
    from numba.cuda.cudadrv.driver import Stream

    stream = 0 if ours == 0 else Stream(binding.CUstream(ours))
    _api._after_producer(_Produced(producer), stream)
    if ordered:
        assert fake_streams.calls == ["event", ("external", producer), ("record", producer),
                                      ("wait", ours)]
    else:
        assert fake_streams.calls == []


def test_reshape_keeps_the_stream():
    from numba.cuda.cudadrv.driver import Stream

    s = Stream(binding.CUstream(0x77))
    mem = MemoryPointer(CTX, binding.CUdeviceptr(BASE), 96)
    a = DeviceNDArray((4, 6), (24, 4), np.float32, stream=s, gpu_data=mem)
    assert _api._reshape(a, (24,)).stream is s
    assert _api._row_view(a, 1, (6,)).stream is s


def test_numba_stream_of_an_older_cupy_stream(fake_streams, monkeypatch):
    Stream = type("Stream", (), {"ptr": 0x4242})
    Stream.__module__ = "cupy.cuda.stream"
    assert int(_api.numba_stream(Stream()).handle) == 0x4242
    Other = type("Other", (), {"ptr": 0x4242})  # not CuPy's: .ptr means nothing here
    with pytest.raises(TypeError, match="pass a numba stream"):
        _api.numba_stream(Other())


# --------------------------------------------------------------------------
# numba_ln.gpu._fastlaunch: the arguments packed as numba packs them.
# --------------------------------------------------------------------------

def _numba_params(sig_kinds_args):
    """numba-cuda's own flattening of kernel arguments (``_Kernel._prepare_args``),
    as Python numbers."""
    from numba.cuda.dispatcher import _Kernel
    from numba.cuda.typing.typeof import Purpose, typeof

    class Kernel:
        extensions = []

    params, retr = [], []
    for a in sig_kinds_args:
        _Kernel._prepare_args(Kernel, typeof(a, Purpose.argument), a, 0, retr, params)
    return [p.value if hasattr(p, "value") else p for p in params]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["layer_norm_forward", "layer_norm_forward_split_apply",
                                  "layer_norm_forward_coop", "layer_norm_backward",
                                  "layer_norm_backward_fused", "layer_norm_backward_colsum",
                                  "layer_norm_backward_cols"])
def test_fast_launch_packs_what_numba_packs(kind, dtype):
    from numba_ln.gpu import _fastlaunch, _kernels

    kinds = _fastlaunch._parse(_kernels.signatures(dtype)[kind])
    args = []
    for i, k in enumerate(kinds):
        if isinstance(k, tuple):
            shape = (5, 7, 3)[:k[0]] if i % 2 else (2, 9, 4)[:k[0]]
            args.append(fake_array(shape, k[1]))
        elif k == "i":
            args.append(np.int32(3))
        else:
            args.append(np.dtype(dtype).type(1e-5))
    fast = _fastlaunch.Launcher(None, None, kinds)
    packed = fast.pack(args)
    assert packed == _numba_params(args)
    assert len(packed) == len(fast.sizes)
    # every parameter fits its 8-byte slot, in the order the kernel takes them
    assert all(s in (4, 8) for s in fast.sizes)


def test_fast_launch_leaves_other_layouts_and_dtypes_to_numba():
    from numba_ln.gpu import _fastlaunch, _kernels

    kinds = _fastlaunch._parse(_kernels.signatures("float32")["layer_norm_backward_colsum"])
    fast = _fastlaunch.Launcher(None, None, kinds)
    part, out = fake_array((2, 3, 8), np.float32), fake_array((2, 8), np.float32)
    assert fast.pack((part, out)) is not None
    # a strided (non-C-contiguous) view, another dtype, another rank
    strided = DeviceNDArray((2, 4), (32, 8), np.dtype(np.float32), gpu_data=out.gpu_data)
    assert fast.pack((part, strided)) is None
    assert fast.pack((part, fake_array((2, 8), np.float64))) is None
    assert fast.pack((part, fake_array((16,), np.float32))) is None
    # extents of 1 may have any stride (numpy's rule, numba's layout "C")
    one = DeviceNDArray((1, 8), (999, 4), np.dtype(np.float32), gpu_data=out.gpu_data)
    assert fast.pack((part, one)) is not None

    calls = []

    class Dispatcher:
        def __getitem__(self, config):
            return lambda *args: calls.append((config, args))

    fast = _fastlaunch.Launcher(Dispatcher(), None, kinds)
    fast((3, 2), (16, 4), 0, (part, strided))  # numba's dispatcher takes it
    assert calls == [(((3, 2), (16, 4), 0), (part, strided))]


def test_fast_launch_is_off_when_asked(monkeypatch):
    from numba_ln.gpu import _fastlaunch

    monkeypatch.setenv("NUMBA_LN_FAST_LAUNCH", "0")
    calls = []

    class Dispatcher:
        def __getitem__(self, config):
            return lambda *args: calls.append(config)

    d = Dispatcher()
    assert _fastlaunch.launcher(d, "float32", "layer_norm_backward_colsum") is None
    _fastlaunch.launch(d, "float32", "layer_norm_backward_colsum", 4, 16, 0, None, None)
    assert calls == [(4, 16, 0)]


def test_fast_launch_signatures_parse():
    from numba_ln.gpu import _fastlaunch

    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert _fastlaunch._parse("void(float32[:, ::1], float64[::1], int32, float32, "
                              "float64[:, :, ::1])") == [(2, f32, 4), (1, f64, 8), "i", "f",
                                                          (3, f64, 8)]
    with pytest.raises(ValueError, match="C-contiguous"):
        _fastlaunch._parse("void(float32[:, :])")


def test_fast_launch_parameter_buffers():
    """The parameters are packed into a per-thread buffer made once, whose
    pointer array points at each 8-byte slot in order."""
    import ctypes
    import threading

    from numba_ln.gpu import _fastlaunch, _kernels

    kinds = _fastlaunch._parse(_kernels.signatures("float32")["layer_norm_backward_colsum"])
    fast = _fastlaunch.Launcher(None, None, kinds)
    buf, params, ptrs = fast._buffers()
    assert fast._buffers()[0] is buf
    base = ctypes.addressof(buf)
    assert [ptrs[i] for i in range(len(fast.sizes))] == [base + 8 * i
                                                          for i in range(len(fast.sizes))]
    part, out = fake_array((2, 3, 8), np.float32), fake_array((2, 8), np.float32)
    vals = fast.pack((part, out))
    fast._struct.pack_into(buf, 0, *vals)
    assert list(np.frombuffer(buf.raw, dtype=np.int64)) == vals
    other = []
    t = threading.Thread(target=lambda: other.append(fast._buffers()[0]))
    t.start()
    t.join()
    assert other[0] is not buf


def _fake_driver_launcher(monkeypatch, cc90=True, **launches):
    """A colsum :class:`Launcher` whose driver is ``cuda.bindings.driver``
    with ``launches`` (name -> function) in place of its launch calls, on
    a GPU of compute capability 9.0+ (``cc90``) or older; and its arrays."""
    from cuda.bindings import driver

    from numba_ln.gpu import _fastlaunch, _kernels

    class Binding:
        def __getattr__(self, name):
            return launches.get(name) or getattr(driver, name)

    kinds = _fastlaunch._parse(_kernels.signatures("float32")["layer_norm_backward_colsum"])
    fast = _fastlaunch.Launcher(None, None, kinds)
    fast._binding = Binding()
    monkeypatch.setattr(fast, "_function", lambda: (None, "fn", cc90))
    return fast, (fake_array((2, 3, 8), np.float32), fake_array((2, 8), np.float32))


@pytest.mark.parametrize("pdl, cc90, enabled, ex", [(True, True, True, True),
                                                   (True, False, True, False),
                                                   (True, True, False, False),
                                                   (False, True, True, False)])
def test_fast_launch_programmatic_dependent_launch(monkeypatch, pdl, cc90, enabled, ex):
    """``pdl=True`` launches by ``cuLaunchKernelEx`` with the programmatic
    stream serialization attribute, on the call's grid, block and stream,
    where the GPU has it (compute capability 9.0+) and it is not switched
    off; anything else by ``cuLaunchKernel``, as before."""
    from cuda.bindings import driver

    from numba_ln.gpu import _fastlaunch

    ok = (driver.CUresult.CUDA_SUCCESS,)
    calls = []

    def plain(fn, *rest):
        calls.append(("plain", fn, rest[:6], rest[7]))
        return ok

    def ex_(cfg, fn, params, extra):
        attr = cfg.attrs[0]
        calls.append(("ex", fn, (cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ, cfg.blockDimX,
                                 cfg.blockDimY, cfg.blockDimZ), int(cfg.hStream),
                      cfg.numAttrs, attr.id, attr.value.programmaticStreamSerializationAllowed,
                      params))
        return ok

    fast, arrays = _fake_driver_launcher(monkeypatch, cc90, cuLaunchKernel=plain,
                                         cuLaunchKernelEx=ex_)
    monkeypatch.setattr(_fastlaunch, "PDL", enabled)

    class Stream:
        handle = driver.CUstream(12345)

    fast((3, 2), (16, 4), Stream(), arrays, pdl)
    fast((5, 1), (8, 8), Stream(), arrays, pdl)  # (the config is reused, updated)
    _, params, _ = fast._buffers()
    if ex:
        attr_id = driver.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        assert calls == [("ex", "fn", g, 12345, 1, attr_id, 1, params)
                         for g in ((3, 2, 1, 16, 4, 1), (5, 1, 1, 8, 8, 1))]
    else:
        assert [c[:3] for c in calls] == [("plain", "fn", (3, 2, 1, 16, 4, 1)),
                                          ("plain", "fn", (5, 1, 1, 8, 8, 1))]


def test_fast_launch_falls_back_where_a_programmatic_launch_is_refused(monkeypatch):
    """A driver that refuses ``cuLaunchKernelEx`` (an error before anything
    runs) gets the plain launch instead, then and from then on."""
    from cuda.bindings import driver

    from numba_ln.gpu import _fastlaunch

    calls = []
    fast, arrays = _fake_driver_launcher(
        monkeypatch,
        cuLaunchKernel=lambda *a: calls.append("plain") or (driver.CUresult.CUDA_SUCCESS,),
        cuLaunchKernelEx=lambda *a: calls.append("ex") or (
            driver.CUresult.CUDA_ERROR_NOT_SUPPORTED,))
    monkeypatch.setattr(_fastlaunch, "PDL", True)
    fast(4, 16, 0, arrays, True)
    fast(4, 16, 0, arrays, True)
    assert calls == ["ex", "plain", "plain"]


def test_fast_launch_cooperative(monkeypatch):
    """``cooperative=True`` launches by ``cuLaunchCooperativeKernel`` on the
    call's grid, block and stream (PDL or not); arrays it cannot pack, or no
    launcher of its own, are an error rather than a launch that would not
    keep every block resident."""
    from cuda.bindings import driver

    from numba_ln.gpu import _fastlaunch

    calls = []
    fast, (part, out) = _fake_driver_launcher(
        monkeypatch, cuLaunchCooperativeKernel=lambda fn, *rest: calls.append(
            (fn, rest[:6], rest[6], rest[7])) or (driver.CUresult.CUDA_SUCCESS,))
    monkeypatch.setattr(_fastlaunch, "PDL", True)
    fast(6, (8, 4), 0, (part, out), True, True)
    assert calls == [("fn", (6, 1, 1, 8, 4, 1), 0, 0)]
    with pytest.raises(ValueError, match="cooperative"):
        fast(6, (8, 4), 0, (part, fake_array((2, 8), np.float64)), False, True)
    monkeypatch.setenv("NUMBA_LN_FAST_LAUNCH", "0")
    with pytest.raises(RuntimeError, match="cooperative launch"):
        _fastlaunch.launch(None, "float32", "layer_norm_forward_coop", 6, 8, 0, part, out,
                           cooperative=True)


@pytest.mark.parametrize("pdl", [False, True])
def test_fast_launch_in_clusters(monkeypatch, pdl):
    """``cluster=n`` launches by ``cuLaunchKernelEx`` with the cluster
    dimension attribute ``(n, 1, 1)`` (and the programmatic one where
    ``pdl``), on the call's grid, block and stream.  Never a plain launch
    instead (the kernel's cluster barrier would then hold a block alone):
    a refusal, a GPU older than 9.0, arrays it cannot pack or no launcher
    of its own are errors.  ``max_active_clusters`` asks the driver with
    the same attribute."""
    from cuda.bindings import driver
    from numba.cuda.cudadrv.driver import CudaAPIError

    from numba_ln.gpu import _fastlaunch

    ids = driver.CUlaunchAttributeID
    calls = []
    result = [driver.CUresult.CUDA_SUCCESS]

    def ex_(cfg, fn, params, extra):
        attrs = {a.id: a for a in cfg.attrs[:cfg.numAttrs]}
        dim = attrs[ids.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION].value.clusterDim
        calls.append((fn, (cfg.gridDimX, cfg.blockDimX, cfg.blockDimY), (dim.x, dim.y, dim.z),
                      ids.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION in attrs))
        return (result[0],)

    def occupancy(fn, cfg):
        dim = cfg.attrs[0].value.clusterDim
        calls.append(("occupancy", cfg.gridDimX, cfg.blockDimX, dim.x, cfg.numAttrs))
        return driver.CUresult.CUDA_SUCCESS, 16

    fast, (part, out) = _fake_driver_launcher(
        monkeypatch, cuLaunchKernelEx=ex_, cuOccupancyMaxActiveClusters=occupancy,
        cuLaunchKernel=lambda *a: calls.append("plain") or (driver.CUresult.CUDA_SUCCESS,))
    monkeypatch.setattr(_fastlaunch, "PDL", True)
    fast(64, (256, 1), 0, (part, out), pdl, False, 8)
    fast(16, (128, 1), 0, (part, out), pdl, False, 4)
    assert calls == [("fn", (64, 256, 1), (8, 1, 1), pdl), ("fn", (16, 128, 1), (4, 1, 1), pdl)]
    assert fast.max_active_clusters(8, 256) == 16
    assert calls[-1] == ("occupancy", 8, 256, 8, 1)
    result[0] = driver.CUresult.CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
    with pytest.raises(CudaAPIError):
        fast(64, (256, 1), 0, (part, out), pdl, False, 8)
    assert "plain" not in calls
    with pytest.raises(ValueError, match="clusters"):
        fast(6, (8, 4), 0, (part, fake_array((2, 8), np.float64)), False, False, 2)
    monkeypatch.setattr(fast, "_function", lambda: (None, "fn", False))  # (before 9.0)
    with pytest.raises(ValueError, match="9.0"):
        fast(64, (256, 1), 0, (part, out), pdl, False, 8)
    assert fast.max_active_clusters(8, 256) == 0
    monkeypatch.setenv("NUMBA_LN_FAST_LAUNCH", "0")
    with pytest.raises(RuntimeError, match="launch in clusters"):
        _fastlaunch.launch(None, "float32", "layer_norm_forward_coop", 6, 8, 0, part, out,
                           cluster=2)
