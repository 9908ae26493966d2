"""Checks and coercions shared by the CPU and GPU front ends.

Every function here raises a ``TypeError`` or ``ValueError`` that says what
was found and how to fix it.  None of them modifies its input.
"""

import math
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def dtype_error(name, dtype):
    """The TypeError for an array whose dtype the kernels do not take."""
    if dtype.kind == "c":
        hint = f"take the real part or magnitude first, e.g. np.abs({name}).astype(np.float64)"
    elif dtype.kind == "f" and dtype.itemsize < 4:
        hint = f"convert with {name}.astype(np.float32)"
    elif dtype.kind == "f":
        hint = f"convert with {name}.astype(np.float64)"
    else:
        hint = f"convert with {name}.astype(np.float32) or {name}.astype(np.float64)"
    return TypeError(f"{name} must be float32 or float64, found {dtype}; {hint}")


def float_dtype(name, dtype):
    """The native-byte-order float32/float64 dtype for ``dtype``, or TypeError."""
    dtype = np.dtype(dtype)
    native = dtype.newbyteorder("=")
    if native not in FLOAT_DTYPES:
        raise dtype_error(name, dtype)
    return native


def as_host_array(name, a):
    """``a`` as a NumPy float array of native byte order (a view when possible)."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} must be an array of floats, found {type(a).__name__}: {exc}") from None
    dtype = float_dtype(name, a.dtype)
    if a.dtype != dtype:  # big-endian input: a native copy
        a = a.astype(dtype)
    return a


def normalize_axes(axis, ndim, name="axis"):
    """``axis`` (int or tuple of ints) as a sorted tuple of non-negative axes."""
    if ndim == 0:
        raise ValueError("x is 0-d (a scalar); LayerNorm needs at least one axis to normalise over, "
                         "e.g. pass np.atleast_1d(x)")
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    if len(items) == 0:
        raise ValueError(f"{name}=() names no axis; pass e.g. axis=-1 to normalise over the last axis")
    axes = []
    for a in items:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"{name} must be an int or a tuple of ints, found {type(a).__name__}") from None
        if not -ndim <= a < ndim:
            raise ValueError(f"{name}={a} is out of range for an array with {ndim} dimensions "
                             f"(valid: {-ndim} to {ndim - 1})")
        axes.append(a % ndim)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}={axis!r} names an axis twice")
    return tuple(sorted(axes))


def check_eps(eps):
    """``eps`` as a finite, non-negative Python float."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise TypeError(f"eps must be a number, found {type(eps).__name__}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"eps must be a finite number >= 0, found {eps!r}; the usual value is 1e-5")
    return value


def check_shape(name, shape, expected, what):
    """ValueError unless ``shape == expected``."""
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(shape)} but {what} is {tuple(expected)}")


class Layout:
    """How an array's axes split into rows and features.

    ``axes`` are the normalised axes.  ``perm`` puts the other axes first (in
    order) and the normalised axes last; ``trailing`` says that ``perm`` is the
    identity, the fast path where the array reshapes to ``(rows, features)``.
    ``middle`` says that the normalised axes are one run of neighbouring axes
    that does not reach the end (channels-first, e.g. axis=1 of NCHW): the
    array then reshapes to ``(A, features, M)`` with no copy.  Either way the
    kernels work in x's own layout (``direct``); other sets of axes are
    transposed into rows first.  ``kernel_shape`` is the shape the CPU drivers
    take.
    """

    def __init__(self, shape, axes):
        ndim = len(shape)
        self.shape = tuple(shape)
        self.axes = axes
        kept = tuple(a for a in range(ndim) if a not in axes)
        self.perm = kept + axes
        self.trailing = self.perm == tuple(range(ndim))
        self.norm_shape = tuple(shape[a] for a in axes)
        self.stats_shape = tuple(shape[a] for a in kept)
        self.rows = math.prod(self.stats_shape)
        self.features = math.prod(self.norm_shape)
        first, last = axes[0], axes[-1] + 1
        self.middle = axes == tuple(range(first, last)) and last < ndim
        self.direct = self.trailing or self.middle
        if self.middle:
            self.kernel_shape = (math.prod(shape[:first]), self.features, math.prod(shape[last:]))
        else:
            self.kernel_shape = (self.rows, self.features)

    @property
    def permuted_shape(self):
        return self.stats_shape + self.norm_shape


def check_param(name, p, layout, dtype, as_array=as_host_array):
    """weight/bias: None, or an array of exactly the normalised shape, cast to ``dtype``."""
    if p is None:
        return None
    p = as_array(name, p)
    check_shape(name, p.shape, layout.norm_shape, "the normalized shape")
    return p
