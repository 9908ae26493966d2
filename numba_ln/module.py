"""``LayerNorm``: a small stateful layer for hand-written training loops."""

import numpy as np

from .api import layer_norm, layer_norm_backward
from ._validate import float_dtype

__all__ = ["LayerNorm"]


class LayerNorm:
    """LayerNorm over the trailing ``normalized_shape`` axes, with its parameters.

    ``forward(x)`` normalises and keeps what the backward pass needs;
    ``backward(dy)`` returns ``dx`` and stores the parameter gradients in
    ``grad_weight`` and ``grad_bias`` (replacing earlier ones).

    Parameters
    ----------
    normalized_shape : int or tuple of ints
        The shape of the trailing axes to normalise over.
    eps : float, default 1e-5
    elementwise_affine : bool, default True
        Learnable ``weight`` (init 1) and ``bias`` (init 0), as in the paper.
    bias : bool, default True
        With ``elementwise_affine``, whether there is a bias.
    dtype : float32 or float64, default float32
        The parameters' dtype.

    Notes
    -----
    On a GPU: :meth:`to_device` moves the parameters to the device; then
    ``forward`` takes device arrays (numba, CuPy, PyTorch CUDA) and the
    gradients are device arrays.  :meth:`to_host` moves them back.

    ``forward`` keeps a reference to ``x`` (no copy): do not modify ``x`` in
    place between ``forward`` and ``backward``.

    Examples
    --------
    >>> ln = LayerNorm(8)
    >>> y = ln.forward(np.random.rand(4, 8).astype(np.float32))
    >>> dx = ln.backward(np.ones_like(y))
    >>> ln.grad_weight.shape
    (8,)
    """

    def __init__(self, normalized_shape, *, eps=1e-5, elementwise_affine=True, bias=True,
                 dtype=np.float32):
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(int(n) for n in normalized_shape)
        if not self.normalized_shape or any(n < 0 for n in self.normalized_shape):
            raise ValueError(f"normalized_shape must be a non-empty tuple of sizes >= 0, "
                             f"found {normalized_shape!r}")
        self.eps = eps
        dtype = float_dtype("dtype", dtype)
        self.weight = np.ones(self.normalized_shape, dtype) if elementwise_affine else None
        self.bias = np.zeros(self.normalized_shape, dtype) if elementwise_affine and bias else None
        self.grad_weight = None
        self.grad_bias = None
        self._saved = None
        self._stream = None

    @property
    def axis(self):
        """The normalised axes as ``layer_norm`` takes them (-1 for one axis:
        that spelling takes the API's shortcut for the common call)."""
        k = len(self.normalized_shape)
        return -1 if k == 1 else tuple(range(-k, 0))

    def parameters(self):
        """``{"weight": ..., "bias": ...}`` for the parameters that exist."""
        return {k: v for k, v in (("weight", self.weight), ("bias", self.bias)) if v is not None}

    def gradients(self):
        """``{"weight": ..., "bias": ...}``, keyed like :meth:`parameters`."""
        grads = {"weight": self.grad_weight, "bias": self.grad_bias}
        return {k: grads[k] for k in self.parameters()}

    @property
    def on_device(self):
        """True after :meth:`to_device` (until :meth:`to_host`)."""
        return any(hasattr(p, "__cuda_array_interface__") or getattr(p, "__cuda_ndarray__", False)
                   for p in self.parameters().values())

    def to_device(self, stream=None):
        """Move the parameters (and gradients) to the GPU; returns ``self``.

        ``stream``: the stream the copies and every later forward/backward
        use (default: the default stream); a numba stream or any stream with
        ``__cuda_stream__`` (CuPy, PyTorch, cuda.core).  Needs numba-cuda and
        a GPU (or the CUDA simulator).
        """
        from numba import cuda

        from .gpu import require_gpu
        from .gpu._api import numba_stream

        require_gpu()
        s = numba_stream(stream)
        stream = None if isinstance(s, int) else s
        for name in ("weight", "bias", "grad_weight", "grad_bias"):
            v = getattr(self, name)
            if isinstance(v, np.ndarray):
                setattr(self, name, cuda.to_device(np.ascontiguousarray(v), stream=s))
        self._stream = stream
        self._saved = None
        return self

    def to_host(self):
        """Move the parameters (and gradients) back to NumPy arrays; returns ``self``."""
        for name in ("weight", "bias", "grad_weight", "grad_bias"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, np.ndarray):
                setattr(self, name, v.copy_to_host(stream=0 if self._stream is None else self._stream))
        if self._stream is not None:
            self._stream.synchronize()
        self._stream = None
        self._saved = None
        return self

    def _stream_kw(self):
        return {"stream": self._stream} if self._stream is not None else {}

    def forward(self, x):
        shape = getattr(x, "shape", None) or np.shape(x)
        k = len(self.normalized_shape)
        if tuple(shape[len(shape) - k:]) != self.normalized_shape or len(shape) < k:
            raise ValueError(f"x has shape {tuple(shape)}, whose trailing axes should be "
                             f"{self.normalized_shape}")
        y, mean, rstd = layer_norm(x, self.weight, self.bias, axis=self.axis, eps=self.eps,
                                   return_stats=True, **self._stream_kw())
        self._saved = (x, mean, rstd)
        return y

    __call__ = forward

    def backward(self, dy):
        if self._saved is None:
            raise RuntimeError("backward() called before forward(); call forward(x) first")
        x, mean, rstd = self._saved
        dx, dweight, dbias = layer_norm_backward(dy, x, mean, rstd, self.weight, axis=self.axis,
                                                 **self._stream_kw())
        if self.weight is not None:
            self.grad_weight = dweight
        if self.bias is not None:
            self.grad_bias = dbias
        return dx

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.weight is not None}, bias={self.bias is not None})")
