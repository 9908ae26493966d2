"""LayerNorm on an NVIDIA GPU (numba device arrays), beside a device copy and PyTorch.

Skipped (``NotImplementedError`` in setup) when ``numba_ln.gpu`` is absent
(an older commit), when numba sees no CUDA GPU, or under the CUDA simulator.

``case`` is the shape and dtype of x (LayerNorm over the last axis); 64x1024
is a latency case, the others move 256 MiB (float32) per array.  ``impl``:

- ``numba_ln``: the public function on device arrays, as users call it
  (numba allocates the outputs on every call);
- ``numba_ln_out``: the same into a preallocated output (``out=``);
- ``numba_ln_pool``: ``numba_ln`` with ``numba_ln.gpu.use_memory_pool()``
  on (outputs from a stream-ordered pool);
- ``copy``: a device-to-device copy of the pass's minimal traffic, the
  bandwidth limit (forward: x's bytes, read once and written once;
  backward: 1.5 times x's bytes, so that it reads and writes as much as
  reading x and dy and writing dx);
- ``torch``: ``torch.nn.functional.layer_norm`` and the aten backward kernel
  on CUDA tensors that share the same memory (skipped without a CUDA torch).

Every timed call ends with a device synchronisation, so the times are
wall-clock times of finished work.  Kernels compile (or load from numba's
cache) and pages are touched in setup.
"""

import os

import numpy as np

from .common import EPS, built, parse_shape

CASES = ["64x1024 float32", "65536x1024 float32", "4096x16384 float32", "65536x1024 float64"]
IMPLS = ["numba_ln", "numba_ln_out", "numba_ln_pool", "copy", "torch"]


def _cuda():
    """numba.cuda and numba_ln.gpu, or NotImplementedError saying why not."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise NotImplementedError("the CUDA simulator is on: GPU timings would be meaningless")
    try:
        from numba import cuda
    except ImportError as exc:
        raise NotImplementedError(f"numba.cuda is not importable: {exc}") from None
    try:
        if not cuda.is_available():
            raise NotImplementedError("no CUDA GPU")
    except NotImplementedError:
        raise
    except Exception as exc:  # a broken driver counts as no GPU
        raise NotImplementedError(f"no usable CUDA GPU: {type(exc).__name__}: {exc}") from None
    try:
        import numba_ln.gpu  # noqa: F401
    except ImportError as exc:
        raise NotImplementedError(f"numba_ln.gpu is not available: {exc}") from None
    return cuda


def _torch_cuda():
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch is not installed") from None
    if not torch.cuda.is_available():
        raise NotImplementedError("torch has no CUDA")
    return torch


def _device_case(cuda, shape, dtype):
    rows, d = shape
    rng = np.random.default_rng(0)
    x = cuda.to_device((rng.standard_normal(shape, dtype=np.float32) * 2 + 0.5).astype(dtype))
    dy = cuda.to_device(rng.standard_normal(shape, dtype=np.float32).astype(dtype))
    w = cuda.to_device((1 + 0.1 * rng.standard_normal(d)).astype(dtype))
    b = cuda.to_device((0.1 * rng.standard_normal(d)).astype(dtype))
    return x, dy, w, b


def _synced(sync, fn):
    def call():
        fn()
        sync()
    return call


def gpu_forward_call(impl, shape, dtype, cuda):
    """A no-argument callable: one forward pass of ``impl``, synchronised."""
    import numba_ln

    x, _, w, b = _device_case(cuda, shape, dtype)
    d = shape[-1]
    if impl in ("numba_ln", "numba_ln_pool"):  # (the pool: switched on in setup)
        return _synced(cuda.synchronize, lambda: numba_ln.layer_norm(x, w, b, eps=EPS))
    if impl == "numba_ln_out":
        y = cuda.device_array(shape, dtype)
        return _synced(cuda.synchronize, lambda: numba_ln.layer_norm(x, w, b, eps=EPS, out=y))
    if impl == "copy":
        y = cuda.device_array(shape, dtype)
        return _synced(cuda.synchronize, lambda: y.copy_to_device(x))
    if impl == "torch":
        torch = _torch_cuda()
        tx, tw, tb = (torch.as_tensor(a, device="cuda") for a in (x, w, b))
        f = torch.nn.functional.layer_norm
        return _synced(torch.cuda.synchronize, lambda: f(tx, (d,), tw, tb, EPS))
    raise ValueError(f"unknown impl {impl!r}")


def gpu_backward_call(impl, shape, dtype, cuda):
    """A no-argument callable: one backward pass of ``impl``, synchronised."""
    import numba_ln

    x, dy, w, b = _device_case(cuda, shape, dtype)
    d = shape[-1]
    if impl in ("numba_ln", "numba_ln_out", "numba_ln_pool"):
        _, mean, rstd = numba_ln.layer_norm(x, w, b, eps=EPS, return_stats=True)
        if impl != "numba_ln_out":
            return _synced(cuda.synchronize,
                           lambda: numba_ln.layer_norm_backward(dy, x, mean, rstd, w))
        dx = cuda.device_array(shape, dtype)
        return _synced(cuda.synchronize,
                       lambda: numba_ln.layer_norm_backward(dy, x, mean, rstd, w, out=dx))
    if impl == "copy":
        n = (3 * shape[0] * shape[1] + 1) // 2
        src = cuda.to_device(np.zeros(n, dtype))
        dst = cuda.device_array(n, dtype)
        return _synced(cuda.synchronize, lambda: dst.copy_to_device(src))
    if impl == "torch":
        torch = _torch_cuda()
        tx, tdy, tw, tb = (torch.as_tensor(a, device="cuda") for a in (x, dy, w, b))
        aten = torch.ops.aten
        with torch.inference_mode():
            _, mean, rstd = aten.native_layer_norm(tx, [d], tw, tb, EPS)

        def call():
            with torch.inference_mode():
                return aten.native_layer_norm_backward(tdy, tx, [d], mean, rstd, tw, tb,
                                                       [True, True, True])
        return _synced(torch.cuda.synchronize, call)
    raise ValueError(f"unknown impl {impl!r}")


def _parse_case(case):
    shape, dtype = case.split()
    return parse_shape(shape), np.dtype(dtype)


class _GPU:
    params = [CASES, IMPLS]
    param_names = ["case", "impl"]
    rounds = 1
    repeat = (5, 50, 2.0)
    warmup_time = 0.05

    def setup(self, case, impl):
        cuda = _cuda()
        shape, dtype = _parse_case(case)
        if impl == "numba_ln_pool":
            from numba_ln.gpu import use_memory_pool

            self._pool_was = use_memory_pool(True)

        def build():
            fn = self._call(impl, shape, dtype, cuda)
            fn()  # compile or load the kernels; first touch of the memory
            return fn
        self.fn = built((type(self).__name__, case, impl), build)

    def teardown(self, case, impl):
        if impl == "numba_ln_pool" and hasattr(self, "_pool_was"):
            from numba_ln.gpu import use_memory_pool

            use_memory_pool(self._pool_was)


class GPUForward(_GPU):
    """``numba_ln.layer_norm(x, w, b)`` on device arrays."""

    _call = staticmethod(gpu_forward_call)

    def time_forward(self, case, impl):
        self.fn()


class GPUBackward(_GPU):
    """``numba_ln.layer_norm_backward(dy, x, mean, rstd, w)`` on device arrays."""

    _call = staticmethod(gpu_backward_call)

    def time_backward(self, case, impl):
        self.fn()
