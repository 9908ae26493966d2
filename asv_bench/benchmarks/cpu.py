"""LayerNorm on the CPU: numba_ln beside its limits and its peers.

Every class has an ``impl`` parameter, so the HTML report and ``asv show``
put numba_ln and its baselines side by side for the same shape and dtype:

- ``numba_ln``: the public function as users call it (allocates its outputs);
- ``numba_ln_out``: the same into preallocated outputs (``out=``), the kernel
  without the cost of fresh pages;
- ``copyto`` (forward): ``np.copyto`` of the same bytes into a preallocated
  array, the memory-bandwidth limit of an operation that reads x once and
  writes y once (``copy``: ``x.copy()``, allocating, for peak memory);
- ``2r1w`` (backward): ``np.add(dy, x, out=dx)``, the limit of an operation
  that reads two arrays and writes one (``add``: ``np.add(dy, x)``);
- ``numpy``: the NumPy reference in x's dtype (how a NumPy user writes it);
- ``torch``: ``torch.nn.functional.layer_norm`` and the aten backward kernel
  autograd calls, with as many threads as numba (skipped without torch);
- ``LayerNorm`` and ``njit_kernel`` (latency only): the stateful layer, and
  a user's ``@njit`` loop over the public row kernels.

The JIT is warmed in ``setup`` (it loads from numba's on-disk cache, or
compiles once), never inside a timed method.  asv re-runs ``setup`` before
every sample; :func:`common.built` makes the re-runs free.
"""

import numpy as np

import numba_ln

from .common import (DTYPES, EPS, built, import_torch, make_case, measure_ratio,
                     numpy_backward, numpy_forward)

#: LayerNorm over every axis but the first: long rows, short rows, and two
#: normalised axes.  8M elements each: 32 MiB in float32, as large as this
#: machine's L3 (and past most), so the big cases are memory-bound.
SHAPES = ["8192x1024", "65536x128", "8192x16x64"]


def _torch_case(x, w, b, dy, nshape):
    torch = import_torch()
    xt, wt, bt, dyt = (torch.from_numpy(a) for a in (x, w, b, dy))
    return torch, xt, wt, bt, dyt, list(nshape)


def forward_call(impl, x, w, b, axis, nshape):
    """A no-argument callable running one forward pass of ``impl``."""
    if impl == "numba_ln":
        return lambda: numba_ln.layer_norm(x, w, b, axis=axis, eps=EPS)
    if impl == "numba_ln_out":
        y = np.empty_like(x)
        return lambda: numba_ln.layer_norm(x, w, b, axis=axis, eps=EPS, out=y)
    if impl == "copyto":
        y = np.empty_like(x)
        return lambda: np.copyto(y, x)
    if impl == "copy":
        return lambda: x.copy()
    if impl == "numpy":
        return lambda: numpy_forward(x, w, b, axis)
    if impl == "LayerNorm":
        layer = _layer(w, b)
        return lambda: layer.forward(x)
    if impl == "njit_kernel":
        from ._njit_user import user_forward
        x2 = x.reshape(x.shape[0], -1)
        y = np.empty_like(x2)
        mean = np.empty(x2.shape[0])
        rstd = np.empty(x2.shape[0])
        w2, b2 = w.reshape(-1), b.reshape(-1)
        return lambda: user_forward(x2, w2, b2, EPS, y, mean, rstd)
    if impl == "torch":
        torch, xt, wt, bt, _, nshape = _torch_case(x, w, b, x, nshape)
        f = torch.nn.functional.layer_norm

        def call():
            with torch.inference_mode():
                return f(xt, nshape, wt, bt, EPS)
        return call
    raise ValueError(f"unknown forward impl {impl!r}")


def backward_call(impl, x, w, b, dy, axis, nshape):
    """A no-argument callable running one backward pass of ``impl`` (statistics made here)."""
    if impl in ("numba_ln", "numba_ln_out"):
        _, mean, rstd = numba_ln.layer_norm(x, w, b, axis=axis, eps=EPS, return_stats=True)
        if impl == "numba_ln":
            return lambda: numba_ln.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
        dx = np.empty_like(x)
        return lambda: numba_ln.layer_norm_backward(dy, x, mean, rstd, w, axis=axis, out=dx)
    if impl == "2r1w":
        dx = np.empty_like(x)
        return lambda: np.add(dy, x, out=dx)
    if impl == "add":
        return lambda: np.add(dy, x)
    if impl == "numpy":
        _, mean, rstd = numpy_forward(x, w, b, axis)
        return lambda: numpy_backward(dy, x, mean, rstd, w, axis)
    if impl == "LayerNorm":
        layer = _layer(w, b)
        layer.forward(x)
        return lambda: layer.backward(dy)
    if impl == "njit_kernel":
        from ._njit_user import user_backward, user_forward
        x2, dy2 = x.reshape(x.shape[0], -1), dy.reshape(x.shape[0], -1)
        w2, b2 = w.reshape(-1), b.reshape(-1)
        mean = np.empty(x2.shape[0])
        rstd = np.empty(x2.shape[0])
        user_forward(x2, w2, b2, EPS, np.empty_like(x2), mean, rstd)
        dx = np.empty_like(x2)
        dw = np.empty_like(w2)
        db = np.empty_like(b2)
        return lambda: user_backward(dy2, x2, mean, rstd, w2, dx, dw, db)
    if impl == "torch":
        torch, xt, wt, bt, dyt, nshape = _torch_case(x, w, b, dy, nshape)
        aten = torch.ops.aten
        with torch.inference_mode():
            _, mean, rstd = aten.native_layer_norm(xt, nshape, wt, bt, EPS)

        def call():
            with torch.inference_mode():
                return aten.native_layer_norm_backward(dyt, xt, nshape, mean, rstd, wt, bt,
                                                       [True, True, True])
        return call
    raise ValueError(f"unknown backward impl {impl!r}")


def _layer(w, b):
    layer = numba_ln.LayerNorm(w.shape, dtype=w.dtype)
    layer.weight[...] = w
    layer.bias[...] = b
    return layer


def _warm(fn):
    """Run once (numba: load from the on-disk cache or compile; pages touched)."""
    fn()
    return fn


class Forward:
    """``layer_norm(x, weight, bias)`` over one or two trailing axes."""

    params = [SHAPES, DTYPES, ["numba_ln", "numba_ln_out", "copyto", "numpy", "torch"]]
    param_names = ["shape", "dtype", "impl"]
    rounds = 2
    repeat = (3, 8, 1.5)
    warmup_time = 0.05

    def setup(self, shape, dtype, impl):
        def build():
            x, w, b, _, axis, nshape = make_case(shape, dtype)
            return _warm(forward_call(impl, x, w, b, axis, nshape))
        self.fn = built(("forward", shape, dtype, impl), build)

    def time_forward(self, shape, dtype, impl):
        self.fn()


class Backward:
    """``layer_norm_backward(dy, x, mean, rstd, weight)``: dx, dweight and dbias."""

    params = [SHAPES, DTYPES, ["numba_ln", "numba_ln_out", "2r1w", "numpy", "torch"]]
    param_names = ["shape", "dtype", "impl"]
    rounds = 2
    repeat = (3, 8, 1.5)
    warmup_time = 0.05

    def setup(self, shape, dtype, impl):
        def build():
            x, w, b, dy, axis, nshape = make_case(shape, dtype)
            return _warm(backward_call(impl, x, w, b, dy, axis, nshape))
        self.fn = built(("backward", shape, dtype, impl), build)

    def time_backward(self, shape, dtype, impl):
        self.fn()


class Latency:
    """Small shapes, where the cost is per call, not per byte (float32, axis -1).

    ``LayerNorm`` is the stateful layer; ``njit_kernel`` is a user's own
    ``@njit`` loop over the public row kernels, the floor that an API call's
    validation and dispatch sit on; 64x1024 is past the serial threshold, so it
    also pays for waking the thread pool.  Each sample is one call (asv runs
    one call per sample when a benchmark has a setup), so many samples.
    """

    params = [["1x64", "16x256", "64x1024"],
              ["numba_ln", "LayerNorm", "njit_kernel", "numpy", "torch"]]
    param_names = ["shape", "impl"]
    rounds = 1
    repeat = (20, 200, 1.0)
    warmup_time = 0.05

    def setup(self, shape, impl):
        def build():
            x, w, b, dy, axis, nshape = make_case(shape, "float32")
            return (_warm(forward_call(impl, x, w, b, axis, nshape)),
                    _warm(backward_call(impl, x, w, b, dy, axis, nshape)))
        self.fwd, self.bwd = built(("latency", shape, impl), build)

    def time_forward(self, shape, impl):
        self.fwd()

    def time_backward(self, shape, impl):
        self.bwd()


class _PeakMem:
    """Peak resident memory of one call on 64 MiB of float32.

    The figure is the whole process's (Python, numba, the inputs made in
    setup; torch's libraries for ``torch``): read it as a difference from
    ``copy``, which allocates just its one output.  numba_ln should sit one
    output (plus small statistics) above the inputs; the NumPy reference makes
    several temporaries of x's size.  Setup warms up with exactly the measured
    call, so it sets no higher peak.
    """

    param_names = ["impl"]
    shape = "16384x1024"

    def setup(self, impl):
        x, w, b, dy, axis, nshape = make_case(self.shape, "float32")
        self.fn = _warm(self._call(impl, x, w, b, dy, axis, nshape))

    def peakmem_call(self, impl):
        self.fn()


class PeakMemForward(_PeakMem):
    """Forward: ``layer_norm(x, weight, bias)``; ``copy`` is ``x.copy()``."""

    params = [["numba_ln", "copy", "numpy", "torch"]]

    @staticmethod
    def _call(impl, x, w, b, dy, axis, nshape):
        return forward_call(impl, x, w, b, axis, nshape)


class PeakMemBackward(_PeakMem):
    """Backward from saved statistics; ``add`` is ``np.add(dy, x)``."""

    params = [["numba_ln", "add", "numpy", "torch"]]

    @staticmethod
    def _call(impl, x, w, b, dy, axis, nshape):
        return backward_call(impl, x, w, b, dy, axis, nshape)


class Ratios:
    """Commit-by-commit ratios on 8192x1024, measured interleaved in one process.

    ``track_*_bandwidth_fraction``: time of the bandwidth baseline (``copyto``
    forward, ``2r1w`` backward) over the time of numba_ln into preallocated
    outputs: 1.0 = as fast as moving the bytes once.
    ``track_*_speedup_vs_numpy``: NumPy reference time over numba_ln's (both
    allocating).  Higher is better for all of them.
    """

    params = [DTYPES]
    param_names = ["dtype"]
    unit = "ratio"
    rounds = 1
    shape = "8192x1024"

    def setup(self, dtype):
        x, w, b, dy, axis, nshape = make_case(self.shape, dtype)
        fwd = {i: _warm(forward_call(i, x, w, b, axis, nshape))
               for i in ("numba_ln", "numba_ln_out", "copyto", "numpy")}
        bwd = {i: _warm(backward_call(i, x, w, b, dy, axis, nshape))
               for i in ("numba_ln", "numba_ln_out", "2r1w", "numpy")}
        self.fwd, self.bwd = fwd, bwd

    def track_forward_bandwidth_fraction(self, dtype):
        return measure_ratio(self.fwd["copyto"], self.fwd["numba_ln_out"])

    def track_backward_bandwidth_fraction(self, dtype):
        return measure_ratio(self.bwd["2r1w"], self.bwd["numba_ln_out"])

    def track_forward_speedup_vs_numpy(self, dtype):
        return measure_ratio(self.fwd["numpy"], self.fwd["numba_ln"])

    def track_backward_speedup_vs_numpy(self, dtype):
        return measure_ratio(self.bwd["numpy"], self.bwd["numba_ln"])


class TorchRatios:
    """PyTorch time over numba_ln's on 8192x1024 (both allocating); > 1: numba_ln faster."""

    params = [DTYPES]
    param_names = ["dtype"]
    unit = "ratio"
    rounds = 1
    shape = "8192x1024"

    def setup(self, dtype):
        import_torch()
        x, w, b, dy, axis, nshape = make_case(self.shape, dtype)
        self.fwd = {i: _warm(forward_call(i, x, w, b, axis, nshape)) for i in ("numba_ln", "torch")}
        self.bwd = {i: _warm(backward_call(i, x, w, b, dy, axis, nshape))
                    for i in ("numba_ln", "torch")}

    def track_forward_speedup_vs_torch(self, dtype):
        return measure_ratio(self.fwd["torch"], self.fwd["numba_ln"])

    def track_backward_speedup_vs_torch(self, dtype):
        return measure_ratio(self.bwd["torch"], self.bwd["numba_ln"])
