"""Host (Python) cost of the GPU calls, measured with no GPU (developer tool).

::

    python scripts/gpu_host_overhead.py [--rows 4096] [--d 1024] [--profile CASE]

Runs ``numba_ln.gpu.layer_norm`` / ``layer_norm_backward`` on real numba
device arrays whose memory is fake, with numba's kernel dispatch, the CUDA
context and allocation stubbed out: what remains is numba_ln's own front end
and launch logic (validation, reshapes, views, launch geometry) and numba's
device-array objects.  numba's launch path and the driver's allocation cost
come on top on a GPU (``host us`` and ``alloc ms`` of ``numba_ln.gpu.bench``).
Of numba's launch path, the part that needs no GPU is measured too: typing
the forward kernel's arguments and preparing them as kernel parameters
(numba-cuda internals; skipped if they have moved).
Prints microseconds a call, the median of 7 runs of 1000 calls.
"""

import argparse
import contextlib
import cProfile
import os
import pstats
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402


def _stub_gpu():
    """Fake context and memory; kernel launches that do nothing."""
    from cuda.bindings import driver as binding
    from numba import cuda
    from numba.cuda.cudadrv import devices
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.cudadrv.driver import MemoryPointer

    from numba_ln.gpu import _api, _kernels, _launch
    from numba_ln.gpu._memory import _c_strides

    class Device:
        id = 0

    class Context:
        device = Device()

    ctx = Context()
    nxt = [1 << 40]

    def device_array(shape, dtype, stream=0):
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        dtype = np.dtype(dtype)
        size = int(np.prod(shape)) * dtype.itemsize
        ptr = nxt[0]
        nxt[0] += (size + 4095) // 4096 * 4096 + 4096  # disjoint allocations
        mem = MemoryPointer(ctx, binding.CUdeviceptr(ptr), size)
        return DeviceNDArray(shape, _c_strides(shape, dtype.itemsize), dtype, stream=stream,
                             gpu_data=mem)

    @contextlib.contextmanager
    def ensure_context():
        yield

    class NoLaunch:
        def __getitem__(self, config):
            return lambda *args: None

    cuda.current_context = lambda: ctx
    cuda.device_array = device_array
    cuda.to_device = lambda a, stream=0: device_array(np.shape(a), np.asarray(a).dtype)
    devices._runtime.ensure_context = ensure_context
    _api.require_gpu = lambda: None
    _launch.resident_blocks = lambda v, dtype, kind="layer_norm_backward": 660
    work = {}
    _api._workspace = lambda stream: work
    for v in _kernels.ALL_VARIANTS:
        for attr in ("fwd", "bwd", "fwd_part", "fwd_apply", "bwd_rowsums", "fwd_vec", "bwd_vec"):
            table = getattr(v, attr)
            for k in table:
                table[k] = NoLaunch()
    for k in _kernels.col_sum:
        _kernels.col_sum[k] = NoLaunch()
    return device_array


def _us_per_call(fn, n=1000, runs=7):
    for _ in range(30):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(times)[runs // 2]


def _numba_dispatch(x, w, b, y, device_array):
    """numba's per-launch Python work before the driver call, for the
    forward kernel's arguments: ``typeof`` of each, then ``_prepare_args``."""
    try:
        from numba.core.typing.typeof import Purpose, typeof
        from numba.cuda.dispatcher import _Kernel

        stats = device_array((2, x.shape[0]), x.dtype)
        args = (x, w, b, np.int32(3), x.dtype.type(1e-5), y, stats)
        types = tuple(typeof(a, Purpose.argument) for a in args)

        class Kernel:
            extensions = []

        def prepare():
            params, retr = [], []
            for t, v in zip(types, args):
                _Kernel._prepare_args(Kernel, t, v, 0, retr, params)
            return params
        n = len(prepare())
    except Exception as exc:  # numba-cuda internals moved
        print(f"  numba dispatch: not measured ({type(exc).__name__}: {exc})")
        return
    print("numba's launch path before the driver, forward kernel (7 arguments, "
          f"{n} parameters):")
    print(f"  {'typeof':22s} "
          f"{_us_per_call(lambda: [typeof(a, Purpose.argument) for a in args]):7.1f} us")
    print(f"  {'_prepare_args':22s} {_us_per_call(prepare):7.1f} us")
    from numba_ln.gpu import _fastlaunch, _kernels

    fast = _fastlaunch.Launcher(None, None, _fastlaunch._parse(
        _kernels.signatures("float32")["layer_norm_forward"]))

    def pack():  # what numba_ln.gpu._fastlaunch does before cuLaunchKernel
        vals = fast.pack(args)
        buf, params, _ = fast._buffers()
        fast._struct.pack_into(buf, 0, *vals)
        return params
    print("numba_ln's own launch path (numba_ln.gpu._fastlaunch) before the driver:")
    print(f"  {'pack the parameters':22s} {_us_per_call(pack):7.1f} us")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--d", type=int, default=1024)
    p.add_argument("--profile", default=None, help="cProfile one case, e.g. backward")
    a = p.parse_args(argv)
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    device_array = _stub_gpu()
    from numba_ln import gpu

    f32 = np.float32
    x, dy, y = (device_array((a.rows, a.d), f32) for _ in range(3))
    w, b = device_array(a.d, f32), device_array(a.d, f32)
    _, mean, rstd = gpu.layer_norm(x, w, b, return_stats=True)
    cases = {
        "forward": lambda: gpu.layer_norm(x, w, b),
        "forward return_stats": lambda: gpu.layer_norm(x, w, b, return_stats=True),
        "forward out=": lambda: gpu.layer_norm(x, w, b, out=y),
        "backward": lambda: gpu.layer_norm_backward(dy, x, mean, rstd, w),
        "backward no weight": lambda: gpu.layer_norm_backward(dy, x, mean, rstd),
    }
    print(f"{a.rows}x{a.d} float32, numba_ln's host cost a call (no kernel dispatch, "
          f"no driver calls):")
    for name, fn in cases.items():
        print(f"  {name:22s} {_us_per_call(fn):7.1f} us")
    _numba_dispatch(x, w, b, y, device_array)
    if a.profile:
        prof = cProfile.Profile()
        prof.runcall(lambda: [cases[a.profile]() for _ in range(2000)])
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
