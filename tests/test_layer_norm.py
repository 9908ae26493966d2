"""Forward LayerNorm on the CPU against a naive float64 NumPy reference.

Covers: axes (trailing, non-trailing, multi-axis), affine on/off, the
paper's invariances, numerics (large offsets, huge magnitudes, NaN/Inf rows,
constant rows), the mixed-dtype rule, statistics, unusual but valid input
(read-only, strided, transposed, Fortran, big-endian, lists, empty, in place,
overlapping out) and agreement with torch.nn.functional.layer_norm.
"""

import numpy as np
import pytest

import numba_ln
from numba_ln import _cpu, layer_norm, layer_norm_backward

from _reference import ln_backward_ref, ln_ref, norm_shape, stats_shape, tol

RNG = np.random.default_rng(20260501)

# (shape, axis) pairs: trailing single axis, trailing pairs, channels-first,
# a leading axis, a non-contiguous pair of axes and a 1-D input.
CASES = [
    ((7, 16), -1),
    ((5, 3, 8), -1),
    ((4, 6, 5), (-2, -1)),
    ((2, 3, 4, 5), (1, 2, 3)),
    ((3, 4, 5), 1),          # channels-first (NCHW's axis=1)
    ((2, 3, 4, 5), 1),
    ((6, 5), 0),
    ((3, 4, 5), (0, 2)),
    ((2, 3, 4, 5), (0, 3)),
    ((9,), 0),
]


def _rand(shape, dtype=np.float64, scale=1.0, offset=0.0):
    return (offset + scale * RNG.standard_normal(shape)).astype(dtype)


def _params(shape, axis, dtype, affine):
    if not affine:
        return None, None
    ns = norm_shape(shape, axis)
    return _rand(ns, dtype, 0.5, 1.0), _rand(ns, dtype, 0.5)


def _check(x, weight=None, bias=None, axis=-1, eps=1e-5, **kw):
    """layer_norm(x) against the reference, with the stats; returns y."""
    y, mean, rstd = layer_norm(x, weight, bias, axis=axis, eps=eps, return_stats=True, **kw)
    xa = np.asarray(x)
    yr, mr, rr = ln_ref(xa, weight, bias, axis, eps)
    rtol, atol = tol(y.dtype)
    assert y.shape == xa.shape
    np.testing.assert_allclose(y, yr, rtol=rtol, atol=atol)
    np.testing.assert_allclose(mean, mr, rtol=rtol, atol=atol)
    np.testing.assert_allclose(rstd, rr, rtol=rtol, atol=0)
    return y


# --------------------------------------------------------------------------
# Correctness over axes, dtypes and affine on/off
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_reference(shape, axis, dtype, affine):
    x = _rand(shape, dtype, 2.0, 0.3)
    w, b = _params(shape, axis, dtype, affine)
    y = _check(x, w, b, axis)
    assert y.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weight_only_and_bias_only(dtype):
    x = _rand((6, 10), dtype)
    w, b = _params(x.shape, -1, dtype, True)
    _check(x, w, None)
    _check(x, None, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((600, 130), -1), ((128, 32, 20), (1, 2)), ((80, 30, 50), 1)])
def test_parallel_path_matches_reference(shape, axis, dtype):
    """Arrays above the serial threshold take the prange driver."""
    assert np.prod(shape) > _cpu.SERIAL_MAX_ELEMENTS
    x = _rand(shape, dtype, 3.0, -1.0)
    w, b = _params(shape, axis, dtype, True)
    _check(x, w, b, axis)
    _check(x, axis=axis)


def test_eps_is_inside_the_square_root():
    x = _rand((4, 8))
    for eps in (0.0, 1e-5, 0.1, 10.0):
        _check(x, eps=eps)
    # A large eps visibly shrinks the output: var + eps, not var.
    xc = x - x.mean(axis=-1, keepdims=True)
    expected = xc / np.sqrt(x.var(axis=-1, keepdims=True) + 100.0)
    np.testing.assert_allclose(layer_norm(x, eps=100.0), expected, rtol=1e-12)
    assert np.abs(layer_norm(x, eps=100.0)).max() < 0.5 * np.abs(layer_norm(x)).max()


def test_default_output_is_normalised():
    x = _rand((20, 64), np.float64, 5.0, 3.0)
    y = layer_norm(x, eps=0.0)
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-13)
    np.testing.assert_allclose(y.var(axis=-1), 1.0, rtol=1e-12)


def test_docstring_example():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(layer_norm(x), [[-1.2247448, 0, 1.2247448]] * 2, rtol=1e-5, atol=1e-6)


def test_public_names():
    assert numba_ln.layer_norm is layer_norm
    assert callable(numba_ln.layer_norm_backward)
    assert set(numba_ln.kernels.__all__) == {"ln_row_stats", "ln_forward_row", "ln_backward_row"}


# --------------------------------------------------------------------------
# The paper's invariances (Table 1)
# --------------------------------------------------------------------------

def test_invariant_to_per_case_rescaling_and_recentring():
    a = _rand((8, 32))
    delta = np.exp(RNG.uniform(-3, 3, size=(8, 1)))   # one positive scale per case
    c = RNG.uniform(-50, 50, size=(8, 1))             # one shift per case
    base = layer_norm(a, eps=0.0)
    np.testing.assert_allclose(layer_norm(delta * a, eps=0.0), base, rtol=0, atol=1e-12)
    np.testing.assert_allclose(layer_norm(a + c, eps=0.0), base, rtol=0, atol=1e-12)
    np.testing.assert_allclose(layer_norm(delta * a + c, eps=0.0), base, rtol=0, atol=1e-12)
    # With the default eps the invariance holds up to eps's effect
    # (relative eps / (2 var) = 5e-6 here).
    np.testing.assert_allclose(layer_norm(3.0 * a + 7.0), layer_norm(a), rtol=2e-5, atol=1e-6)


def test_not_invariant_to_per_unit_scaling():
    a = _rand((8, 32))
    scale = np.ones(32)
    scale[5] = 3.0                                    # re-scale one unit only
    diff = np.abs(layer_norm(a * scale, eps=0.0) - layer_norm(a, eps=0.0))
    assert np.all(diff.max(axis=1) > 1e-3)            # every case changes
    # per-unit shifts (different for each unit) change it too
    shift = np.linspace(-1, 1, 32)
    assert np.abs(layer_norm(a + shift, eps=0.0) - layer_norm(a, eps=0.0)).max() > 1e-2


def test_weight_matrix_invariances():
    """a = W x: LN(a) is invariant to W -> delta W and W -> W + 1 gamma^T,
    to rescaling the data set, but not to rescaling one unit's weights or to
    re-centring the data set."""
    H, D, N = 16, 12, 10
    W = RNG.standard_normal((H, D))
    X = RNG.standard_normal((N, D))
    base = layer_norm(X @ W.T, eps=0.0)

    def ln_of(W_, X_):
        return layer_norm(X_ @ W_.T, eps=0.0)

    np.testing.assert_allclose(ln_of(2.5 * W, X), base, atol=1e-12)               # whole W rescaled
    gamma = RNG.standard_normal(D)
    np.testing.assert_allclose(ln_of(W + np.outer(np.ones(H), gamma), X), base, atol=1e-10)  # W re-centred
    np.testing.assert_allclose(ln_of(W, 0.1 * X), base, atol=1e-12)               # data set rescaled
    single = W.copy()
    single[3] *= 4.0                                                              # one unit's weights
    assert np.abs(ln_of(single, X) - base).max() > 1e-2
    shift = RNG.standard_normal(D)
    assert np.abs(ln_of(W, X + shift) - base).max() > 1e-2                        # data set re-centred


# --------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------

@pytest.mark.parametrize("rows,d", [(16, 256), (300, 1024)])
def test_large_offset_float32(rows, d):
    """1e4 + 0.1 * noise in float32: within 5e-3 of float64 LN of the same input."""
    x = (1e4 + 0.1 * RNG.standard_normal((rows, d))).astype(np.float32)
    y = layer_norm(x)
    yr, _, _ = ln_ref(x)
    assert y.dtype == np.float32
    assert np.abs(y - yr).max() < 5e-3
    # (E[x^2] - E[x]^2 in float32 would be all noise here.)
    assert np.abs(y.std(axis=-1, dtype=np.float64) - 1.0).max() < 1e-2


@pytest.mark.parametrize("magnitude", [1e30, 1e36, 1e38, 3e38])
def test_float32_huge_values(magnitude):
    x = (magnitude / 3.0 * np.clip(RNG.standard_normal((8, 64)), -3, 3)).astype(np.float32)
    assert np.all(np.isfinite(x))
    w, b = _params(x.shape, -1, np.float32, True)
    y = layer_norm(x, w, b)
    yr, _, _ = ln_ref(x, w, b)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, yr, rtol=1e-5, atol=1e-5)


def test_float32_huge_common_value_plus_spread():
    x = np.full((4, 32), 3e38, np.float32)
    x[:, ::2] = -3e38
    y = layer_norm(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, ln_ref(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("magnitude,eps", [(1e200, 1e-5), (1e300, 1e-5), (1e200, 0.0),
                                           (1e-150, 0.0), (1e-200, 1e-5)])
def test_float64_extreme_rows(magnitude, eps):
    x = magnitude * RNG.standard_normal((6, 40))
    x[2] *= 1e-100 if magnitude > 1 else 1.0       # rows of different magnitudes in one array
    w, b = _params(x.shape, -1, np.float64, True)
    y, mean, rstd = layer_norm(x, w, b, return_stats=True, eps=eps)
    yr, mr, rr = ln_ref(x, w, b, eps=eps)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(rstd))
    np.testing.assert_allclose(y, yr, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(mean, mr, rtol=1e-11, atol=0)
    np.testing.assert_allclose(rstd, rr, rtol=1e-11, atol=0)


@pytest.mark.parametrize("shape,axis", [((6, 64), -1), ((3, 16, 40), 1)])
@pytest.mark.parametrize("eps", [0.0, 1e-5])
@pytest.mark.parametrize("dtype,magnitude", [(np.float32, 1e-10), (np.float32, 1e-20), (np.float32, 1e-25),
                                             (np.float32, 1e-30), (np.float32, 1e-36), (np.float32, 1e-42),
                                             (np.float64, 1e-100), (np.float64, 1e-160),
                                             (np.float64, 1e-200), (np.float64, 1e-300)])
def test_tiny_values(dtype, magnitude, eps, shape, axis):
    """Tiny rows, subnormal float32 ones included: finite and correct, with
    eps=0 too (where their squares underflow), on the trailing-axis and the
    channels-first paths."""
    x = (magnitude * RNG.standard_normal(shape)).astype(dtype)
    assert np.all(np.abs(x).max(axis=axis) > 0)
    y = layer_norm(x, eps=eps, axis=axis)
    yr = ln_ref(x, eps=eps, axis=axis)[0]
    assert np.all(np.isfinite(yr))
    assert np.all(np.isfinite(y)), f"non-finite output for |x| ~ {magnitude:g}, eps={eps}"
    np.testing.assert_allclose(y, yr, rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype,magnitude", [(np.float32, 1e-25), (np.float32, 1e-36),
                                             (np.float64, 1e-200), (np.float64, 1e-300)])
@pytest.mark.parametrize("shape,axis", [((6, 64), -1), ((3, 16, 40), 1)])
def test_tiny_values_backward(dtype, magnitude, shape, axis):
    """eps=0, tiny rows whose rstd x's dtype can still hold: exact gradients.
    (Subnormal float32 rows have an rstd above the float32 range; their
    float32 statistics hold inf, so their backward is not finite.)"""
    x = (magnitude * RNG.standard_normal(shape)).astype(dtype)
    dy = _rand(shape, dtype)
    _, m, r = layer_norm(x, eps=0.0, axis=axis, return_stats=True)
    dx, _, db = layer_norm_backward(dy, x, m, r, axis=axis)
    dxr, _, dbr = ln_backward_ref(dy, x, axis=axis, eps=0.0)
    assert np.all(np.isfinite(dx))
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(dx, dxr, rtol=rtol, atol=rtol * np.abs(dxr).max())
    np.testing.assert_allclose(db, dbr, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("row", [[3e38, np.nan, 1.0, 2.0], [np.inf, -np.inf, 1.0, 2.0],
                                 [3e38, -3e38, np.inf, 0.0], [1e30, np.nan, -1e30, 0.0],
                                 [np.nan] * 4, [np.inf] * 4])
def test_mixed_non_finite_rows(dtype, row):
    """Huge finite values next to NaN/Inf: the row is non-finite, forward and
    backward; the rows around it are exact."""
    x = _rand((3, 4), dtype)
    clean_y, m, r = layer_norm(x, return_stats=True)
    dy = _rand((3, 4), dtype)
    w = np.ones(4, dtype)
    clean_dx, _, _ = layer_norm_backward(dy, x, m, r, w)
    x[1] = np.array(row, dtype=dtype)
    y, m, r = layer_norm(x, return_stats=True)
    dx, _, _ = layer_norm_backward(dy, x, m, r, w)
    assert not np.any(np.isfinite(y[1])) and not np.any(np.isfinite(dx[1]))
    np.testing.assert_array_equal(y[[0, 2]], clean_y[[0, 2]])
    np.testing.assert_array_equal(dx[[0, 2]], clean_dx[[0, 2]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [0.0, 1.0, -7.5, 1e4, 1e30])
def test_constant_rows(dtype, value):
    x = _rand((5, 16), dtype)
    x[1] = value
    x[4] = value
    w, b = _params(x.shape, -1, dtype, True)
    y, mean, rstd = layer_norm(x, w, b, return_stats=True)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[1], b)        # xhat is exactly 0: y is the bias
    np.testing.assert_array_equal(y[4], b)
    assert mean[1] == dtype(value)
    np.testing.assert_allclose(rstd[1], 1 / np.sqrt(1e-5), rtol=1e-6)
    np.testing.assert_allclose(y[[0, 2, 3]], ln_ref(x, w, b)[0][[0, 2, 3]], *tol(dtype))


def test_constant_row_with_zero_eps_is_nan_not_a_crash():
    x = np.ones((2, 4))
    y, mean, rstd = layer_norm(x, eps=0.0, return_stats=True)
    assert np.isinf(rstd).all()
    assert np.isnan(y).all()          # 0 * inf: the honest IEEE answer for 0/0


# --------------------------------------------------------------------------
# Dtypes and statistics
# --------------------------------------------------------------------------

@pytest.mark.parametrize("xdt,pdt", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_dtypes_follow_x(xdt, pdt):
    """The rule: the result and the stats have x's dtype; weight and bias are converted to it."""
    x = _rand((6, 12), xdt)
    w, b = _params(x.shape, -1, pdt, True)
    y, mean, rstd = layer_norm(x, w, b, return_stats=True)
    assert y.dtype == mean.dtype == rstd.dtype == xdt
    yc = layer_norm(x, w.astype(xdt), b.astype(xdt))
    np.testing.assert_array_equal(y, yc)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", CASES)
def test_stats_shape_and_dtype(shape, axis, dtype):
    x = _rand(shape, dtype)
    y, mean, rstd = layer_norm(x, axis=axis, return_stats=True)
    assert mean.shape == rstd.shape == stats_shape(shape, axis)
    assert mean.dtype == rstd.dtype == dtype
    assert isinstance(y, np.ndarray) and isinstance(mean, np.ndarray)


def test_return_stats_false_returns_one_array():
    y = layer_norm(_rand((3, 4)))
    assert isinstance(y, np.ndarray) and y.shape == (3, 4)


# --------------------------------------------------------------------------
# Inputs are never modified
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((5, 8), -1), ((3, 4, 5), 1), ((40, 30, 50), (0, 2))])
def test_inputs_not_modified(shape, axis):
    x = _rand(shape, np.float32)
    w, b = _params(shape, axis, np.float64, True)
    copies = [a.copy() for a in (x, w, b)]
    out = np.empty(shape, np.float32)
    layer_norm(x, w, b, axis=axis, out=out, return_stats=True)
    layer_norm(x, w, b, axis=axis)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------
# Unusual but valid input
# --------------------------------------------------------------------------

def test_read_only_input():
    x = _rand((6, 10))
    w, b = _params(x.shape, -1, np.float64, True)
    for a in (x, w, b):
        a.flags.writeable = False
    _check(x, w, b)


@pytest.mark.parametrize("axis", [-1, 0, (0, 1)])
def test_strided_transposed_fortran(axis):
    base = _rand((12, 20))
    for x in (base[::2, 1::3], base.T, np.asfortranarray(base), base[::-1, ::-1],
              np.broadcast_to(base[:1], (5, 20))):
        assert not (x.flags.c_contiguous and x.flags.owndata)
        w, b = _params(x.shape, axis, np.float64, True)
        _check(x, w, b, axis)


def test_strided_3d_over_trailing_axes():
    x = _rand((6, 8, 10))[:, ::2, 1::2]
    _check(x, axis=(-2, -1))


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_big_endian(dtype):
    x = _rand((5, 9)).astype(dtype)
    w, b = _params(x.shape, -1, np.float64, True)
    y = _check(x, w.astype(">f8"), b.astype(">f8"))
    assert y.dtype == np.dtype(dtype).newbyteorder("=")
    assert y.dtype.isnative


def test_lists():
    x = [[1.0, 2.0, 4.0], [0.5, -1.0, 3.0]]
    w = [1.0, 2.0, 0.5]
    b = [0.0, 1.0, -1.0]
    y = _check(x, w, b)
    assert y.dtype == np.float64
    _check([3.0, 1.0, 2.0], axis=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((0, 5), -1), ((0, 3, 4), (1, 2)), ((2, 0, 3), -1), ((4, 0), 0)])
def test_zero_rows(shape, axis, dtype):
    x = np.empty(shape, dtype)
    w, b = _params(shape, axis, dtype, True)
    y, mean, rstd = layer_norm(x, w, b, axis=axis, return_stats=True)
    assert y.shape == shape and y.dtype == dtype
    assert mean.shape == rstd.shape == stats_shape(shape, axis)
    assert mean.size == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((3, 0), -1), ((2, 3, 0), (1, 2)), ((0, 4), 0)])
def test_zero_features(shape, axis, dtype):
    x = np.empty(shape, dtype)
    w, b = _params(shape, axis, dtype, True)
    y, mean, rstd = layer_norm(x, w, b, axis=axis, return_stats=True)
    assert y.shape == shape and y.size == 0 and y.dtype == dtype
    assert mean.shape == rstd.shape == stats_shape(shape, axis)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((7, 16), -1), ((3, 4, 5), 1), ((250, 300), -1), ((3, 4, 5), (0, 2))])
def test_out_is_x_in_place(shape, axis, dtype):
    x = _rand(shape, dtype, 2.0, 1.0)
    w, b = _params(shape, axis, dtype, True)
    expected = layer_norm(x, w, b, axis=axis)
    ret = layer_norm(x, w, b, axis=axis, out=x)
    assert ret is x
    # Equal up to rounding: with out=x the compiled loop sees aliased arrays and
    # may contract (x - mean) * rstd * w + b into FMAs differently (<= 2 ulp).
    np.testing.assert_allclose(x, expected, rtol=8 * np.finfo(dtype).eps, atol=8 * np.finfo(dtype).eps)


@pytest.mark.parametrize("shape,axis", [((7, 16), -1), ((3, 4, 5), 1)])
def test_out_preallocated(shape, axis):
    x = _rand(shape)
    out = np.full(shape, np.nan)
    ret = layer_norm(x, axis=axis, out=out)
    assert ret is out
    np.testing.assert_allclose(out, ln_ref(x, axis=axis)[0], rtol=1e-12, atol=1e-12)


def test_out_strided_and_fortran():
    x = _rand((6, 10))
    expected = ln_ref(x)[0]
    big = np.zeros((6, 20))
    out = big[:, ::2]
    assert layer_norm(x, out=out) is out
    np.testing.assert_allclose(big[:, ::2], expected, rtol=1e-12, atol=1e-12)
    assert np.all(big[:, 1::2] == 0.0)               # nothing written between the strides
    outf = np.empty((6, 10), order="F")
    layer_norm(x, out=outf)
    np.testing.assert_allclose(outf, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shift", [1, 5, -5, 17])
@pytest.mark.parametrize("rows,d", [(8, 10), (250, 300)])
def test_out_partially_overlapping_x(shift, rows, d):
    """out and x share a buffer, offset by ``shift`` elements: still correct."""
    n = rows * d
    buf = RNG.standard_normal(n + abs(shift))
    xs = slice(0, n) if shift > 0 else slice(-shift, n - shift)
    os_ = slice(shift, n + shift) if shift > 0 else slice(0, n)
    x = buf[xs].reshape(rows, d)
    out = buf[os_].reshape(rows, d)
    assert np.shares_memory(x, out)
    expected = ln_ref(x.copy())[0]
    layer_norm(x, out=out)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_out_overlapping_weight():
    """out aliasing the weight array (odd but legal) still gives the right result."""
    x = _rand((1, 8))
    w = _rand((8,))
    expected = ln_ref(x, w)[0]
    out = w.reshape(1, 8)
    layer_norm(x, w, out=out)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# torch.nn.functional.layer_norm agreement
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k", [((8, 32), 1), ((4, 6, 10), 2), ((300, 200), 1)])
@pytest.mark.parametrize("affine", [False, True])
def test_agrees_with_torch(shape, k, dtype, affine):
    torch = pytest.importorskip("torch")
    x = _rand(shape, dtype, 2.0, 0.5)
    axis = tuple(range(-k, 0))
    w, b = _params(shape, axis, dtype, affine)
    y = layer_norm(x, w, b, axis=axis, eps=1e-5)
    yt = torch.nn.functional.layer_norm(
        torch.from_numpy(x), shape[-k:],
        None if w is None else torch.from_numpy(w),
        None if b is None else torch.from_numpy(b), eps=1e-5).numpy()
    rtol, atol = (1e-5, 1e-5) if dtype == np.float32 else (1e-12, 1e-12)
    np.testing.assert_allclose(y, yt, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------
# The common call (C-contiguous native float array, axis=-1, plain
# parameters) may take a shortcut past the general checks: same results
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(9,), (7, 16), (3, 4, 10), (300, 130)])
@pytest.mark.parametrize("affine", ["none", "weight", "both"])
def test_common_call_equals_general_path(shape, dtype, affine):
    x = _rand(shape, dtype, 2.0, 1.0)
    d = shape[-1]
    w = _rand((d,), dtype, 0.5, 1.0) if affine != "none" else None
    b = _rand((d,), dtype) if affine == "both" else None
    general_axis = (len(shape) - 1,)               # same axes, spelled as a tuple
    fast = layer_norm(x, w, b, return_stats=True)
    general = layer_norm(x, w, b, axis=general_axis, return_stats=True)
    for u, v in zip(fast, general):
        np.testing.assert_array_equal(u, v, strict=True)
    dy = _rand(shape, dtype)
    _, m, r = fast
    fast_b = layer_norm_backward(dy, x, m, r, w)
    general_b = layer_norm_backward(dy, x, m, r, w, axis=general_axis)
    for u, v in zip(fast_b, general_b):
        if u is None:
            assert v is None
        else:
            np.testing.assert_array_equal(u, v, strict=True)
    np.testing.assert_allclose(fast[0], ln_ref(x, w, b)[0], *tol(dtype))
