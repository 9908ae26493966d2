"""Hypothesis property tests over shapes, axes, dtypes, layouts and affine on/off.

Examples stay small (the serial driver; a few hundred elements) and few
(numba compiles each new type combination once; the on-disk cache keeps
later runs fast).  ``deadline=None``: the first call of a signature compiles.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from numba_ln import layer_norm, layer_norm_backward

from _reference import ln_backward_ref, ln_ref, norm_shape, stats_shape

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def problems(draw, min_side=1):
    """(x, weight, bias, axis, eps) with x of any layout and axis any non-empty axis set."""
    dtype = draw(DTYPES)
    ndim = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(min_side, 6), min_size=ndim, max_size=ndim).map(tuple))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    # spell the axes as a user might: negative or positive, int or tuple, any order
    spelled = [a - ndim if draw(st.booleans()) else a for a in axes]
    axis = spelled[0] if len(spelled) == 1 and draw(st.booleans()) else tuple(spelled)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    offset = draw(st.sampled_from([0.0, 1.0, -100.0]))
    elems = st.floats(-1, 1, width=32)
    base = draw(hnp.arrays(np.float64, shape, elements=elems))
    x = (offset + scale * base).astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "reversed", "big-endian"]))
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "reversed":
        x = x[tuple(slice(None, None, -1) for _ in shape)]
    elif layout == "big-endian":
        x = x.astype(x.dtype.newbyteorder(">"))
    ns = norm_shape(shape, axis)
    affine = draw(st.sampled_from(["none", "weight", "bias", "both"]))
    pelems = st.floats(-2, 2, width=32)
    pdtype = draw(DTYPES)                     # may differ from x's: converted to x's dtype
    weight = draw(hnp.arrays(pdtype, ns, elements=pelems)) if affine in ("weight", "both") else None
    bias = draw(hnp.arrays(pdtype, ns, elements=pelems)) if affine in ("bias", "both") else None
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    return x, weight, bias, axis, eps


def _axes(axis, ndim):
    return tuple(sorted(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,))))


def _conditioned(x, axis, eps, limit=1e6):
    """Mask (x's shape) of the rows whose LayerNorm is well conditioned in float64.

    A float64 row whose spread is within ~1e-16 * limit of its magnitude
    (``max|x| * rstd`` above ``limit``) has a mean that float64 cannot round
    finely enough: any float64 algorithm is off by ``max|x| * rstd * 1e-16``
    there (e.g. [1, 1 + 2**-52] normalises to [0, 2] instead of [-1, 1]).
    Float32 rows carry their mean in two float32 halves and need no mask.
    """
    axes = _axes(axis, x.ndim)
    xa = np.asarray(x, np.float64)
    _, _, rstd = ln_ref(xa, axis=axis, eps=eps)
    keep = [1 if a in axes else n for a, n in enumerate(x.shape)]
    cond = np.max(np.abs(xa), axis=axes, keepdims=True) * rstd.reshape(keep)
    if np.dtype(x.dtype) != np.float64:
        cond = np.zeros_like(cond)
    return np.broadcast_to(cond <= limit, x.shape)


def _close(a, b, dtype, scale=1.0):
    # float32: a few ulps of the O(1) outputs, plus the reference's sensitivity
    # to the input's own rounding near eps-dominated (almost constant) rows.
    rtol, atol = (1e-4, 1e-4 * scale) if np.dtype(dtype) == np.float32 else (1e-9, 1e-9 * scale)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@SETTINGS
@given(problems())
def test_forward_matches_reference(problem):
    x, w, b, axis, eps = problem
    xc = x.copy()
    y, mean, rstd = layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True)
    dtype = x.dtype.newbyteorder("=")
    assert y.shape == x.shape and y.dtype == dtype
    assert mean.shape == rstd.shape == stats_shape(x.shape, axis)
    assert mean.dtype == rstd.dtype == dtype
    yr, mr, rr = ln_ref(x, w, b, axis, eps)
    ok = _conditioned(x, axis, eps)
    _close(y[ok], yr[ok], dtype)
    _close(mean, mr, dtype, scale=np.abs(mr).max(initial=1.0))
    np.testing.assert_allclose(rstd, rr, rtol=1e-4 if dtype == np.float32 else 1e-9)
    np.testing.assert_array_equal(x, xc)                  # input untouched


@SETTINGS
@given(problems())
def test_backward_matches_reference(problem):
    x, w, _, axis, eps = problem
    dy = np.cos(np.arange(x.size, dtype=np.float64)).reshape(x.shape).astype(x.dtype)
    _, mean, rstd = layer_norm(x, w, axis=axis, eps=eps, return_stats=True)
    dx, dw, db = layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    dtype = x.dtype.newbyteorder("=")
    assert dx.shape == x.shape and dx.dtype == dtype
    ns = norm_shape(x.shape, axis)
    assert db.shape == ns and db.dtype == dtype
    assert (dw is None) == (w is None)
    # The exact formula at the statistics the forward returned: in float32
    # they are rounded to float32, which matters for rows with a large offset
    # (see test_backward.py::test_large_offset_float32 for that error).
    dxr, dwr, dbr = ln_backward_ref(dy, x, w, axis, eps, mean=mean, rstd=rstd)
    dxscale = np.abs(dxr).max(initial=1.0)
    rows = int(np.prod(stats_shape(x.shape, axis)))
    ok = _conditioned(x, axis, eps)
    _close(dx[ok], dxr[ok], dtype, scale=dxscale)
    _close(db, dbr, dtype, scale=np.sqrt(rows))
    if w is not None:
        assert dw.shape == ns and dw.dtype == dtype
        if ok.all():        # dweight sums xhat over every row
            _close(dw, dwr, dtype, scale=np.sqrt(rows))


@SETTINGS
@given(problems(), st.floats(0.01, 100.0), st.floats(-100.0, 100.0))
def test_per_case_affine_invariance(problem, delta, shift):
    x, _, _, axis, _ = problem
    x = x.astype(np.float64)
    xm = delta * x + shift
    base = layer_norm(x, axis=axis, eps=0.0)
    moved = layer_norm(xm, axis=axis, eps=0.0)
    # constant rows are 0/0 either way; rows whose spread is lost in rounding are excluded
    with np.errstate(all="ignore"):
        ok = _conditioned(x, axis, 0.0) & _conditioned(xm, axis, 0.0)
    ok = ok & np.isfinite(base) & np.isfinite(moved)
    np.testing.assert_allclose(moved[ok], base[ok], rtol=1e-6, atol=1e-6)


@SETTINGS
@given(problems())
def test_output_rows_are_normalised(problem):
    x, _, _, axis, _ = problem
    x = x.astype(np.float64)
    y = layer_norm(x, axis=axis, eps=0.0)
    axes = _axes(axis, x.ndim)
    std = x.std(axis=axes)
    spread = std > 1e-6 * np.abs(x).max(axis=axes)     # well conditioned, not constant
    m = y.mean(axis=axes)[spread]
    v = y.var(axis=axes)[spread]
    np.testing.assert_allclose(m, 0.0, atol=1e-9)
    np.testing.assert_allclose(v, 1.0, rtol=1e-6)


@SETTINGS
@given(problems(), st.booleans())
def test_in_place_equals_out_of_place(problem, backward):
    x, w, b, axis, eps = problem
    x = np.array(x, dtype=x.dtype.newbyteorder("="), order="C")
    if not backward:
        expected = layer_norm(x, w, b, axis=axis, eps=eps)
        layer_norm(x, w, b, axis=axis, eps=eps, out=x)
        got = x
    else:
        dy = np.sin(np.arange(x.size)).reshape(x.shape).astype(x.dtype)
        _, m, r = layer_norm(x, w, axis=axis, eps=eps, return_stats=True)
        expected, _, _ = layer_norm_backward(dy, x, m, r, w, axis=axis)
        layer_norm_backward(dy, x, m, r, w, axis=axis, out=dy)
        got = dy
    tiny = 8 * np.finfo(x.dtype).eps * max(1.0, np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(got, expected, rtol=tiny, atol=tiny)


@settings(max_examples=15, deadline=None)
@given(problems(min_side=0))
def test_empty_arrays(problem):
    x, w, b, axis, eps = problem
    y, mean, rstd = layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True)
    assert y.shape == x.shape
    assert mean.shape == stats_shape(x.shape, axis)
    if x.size:
        assert np.all(np.isfinite(y))
