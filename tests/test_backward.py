"""Backward LayerNorm on the CPU: central differences, the float64 reference,
numerics, unusual input and torch autograd agreement."""

import numpy as np
import pytest

from numba_ln import layer_norm, layer_norm_backward

from _reference import assert_grad_close, central_diff, ln_backward_ref, ln_ref, norm_shape, stats_shape, tol

RNG = np.random.default_rng(20260502)

# Small shapes: every element is checked by central differences.
GRAD_CASES = [
    ((3, 5), -1),
    ((2, 3, 4), (-2, -1)),
    ((3, 4, 5), 1),          # channels-first
    ((4, 3), 0),             # a leading axis
    ((2, 3, 4), (0, 2)),     # two non-adjacent axes
    ((2, 2, 3, 2), (1, 3)),
    ((6,), 0),
    ((1, 7), -1),            # a batch of one
    ((5, 2), -1),            # two features
]


def _rand(shape, dtype=np.float64, scale=1.0, offset=0.0):
    return (offset + scale * RNG.standard_normal(shape)).astype(dtype)


def _grad_check(shape, axis, with_weight, eps):
    x = _rand(shape, scale=1.5, offset=0.4)
    ns = norm_shape(shape, axis)
    w = _rand(ns, scale=0.5, offset=1.0) if with_weight else None
    b = _rand(ns, scale=0.5)
    G = _rand(shape)                       # L = sum(G * y): dL/dy = G

    def loss():
        return float(np.sum(G * layer_norm(x, w, b, axis=axis, eps=eps)))

    _, mean, rstd = layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True)
    dx, dw, db = layer_norm_backward(G, x, mean, rstd, w, axis=axis)

    assert dx.shape == shape and db.shape == ns
    assert_grad_close(dx, central_diff(loss, x))
    assert_grad_close(db, central_diff(loss, b))
    if with_weight:
        assert dw.shape == ns
        assert_grad_close(dw, central_diff(loss, w))
    else:
        assert dw is None


@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("shape,axis", GRAD_CASES)
def test_gradients_by_central_differences(shape, axis, with_weight):
    _grad_check(shape, axis, with_weight, eps=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.5])
def test_gradients_include_eps(eps):
    _grad_check((3, 6), -1, True, eps)


def test_gradient_of_the_statistics_path():
    """dx is not just rstd * dy: the mean and variance depend on x, so (with
    eps=0) dx is orthogonal to the constant vector and to xhat in every row."""
    x = _rand((4, 9))
    dy = _rand((4, 9))
    _, m, r = layer_norm(x, eps=0.0, return_stats=True)
    dx, _, _ = layer_norm_backward(dy, x, m, r)
    np.testing.assert_allclose(dx.sum(axis=-1), 0.0, atol=1e-13)
    xhat = (x - m[:, None]) * r[:, None]
    np.testing.assert_allclose((dx * xhat).sum(axis=-1), 0.0, atol=1e-13)


# --------------------------------------------------------------------------
# Against the float64 reference
# --------------------------------------------------------------------------

CASES = GRAD_CASES + [((300, 130), -1), ((64, 32, 20), (1, 2)), ((40, 30, 50), 1), ((30, 40, 50), (0, 2))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("shape,axis", CASES)
def test_matches_reference(shape, axis, with_weight, dtype):
    x = _rand(shape, dtype, 2.0, 0.5)
    dy = _rand(shape, dtype)
    ns = norm_shape(shape, axis)
    w = _rand(ns, dtype, 0.5, 1.0) if with_weight else None
    _, mean, rstd = layer_norm(x, w, axis=axis, return_stats=True)
    dx, dw, db = layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    dxr, dwr, dbr = ln_backward_ref(dy, x, w, axis)
    assert dx.dtype == db.dtype == dtype
    rows = int(np.prod(stats_shape(shape, axis)))
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(dx, dxr, rtol=rtol, atol=atol)
    # parameter gradients are sums over the rows: scale the tolerance with them
    np.testing.assert_allclose(db, dbr, rtol=rtol, atol=atol * np.sqrt(rows))
    if with_weight:
        assert dw.dtype == dtype and dw.shape == ns
        np.testing.assert_allclose(dw, dwr, rtol=rtol, atol=atol * np.sqrt(rows))
    else:
        assert dw is None


def test_dbias_is_the_sum_of_dy_without_weight():
    x = _rand((6, 5, 4))
    dy = _rand((6, 5, 4))
    _, m, r = layer_norm(x, axis=(0, 2), return_stats=True)
    _, dw, db = layer_norm_backward(dy, x, m, r, axis=(0, 2))
    assert dw is None
    np.testing.assert_allclose(db, dy.sum(axis=1), rtol=1e-13)


@pytest.mark.parametrize("xdt,odt", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_dtypes_follow_x(xdt, odt):
    """dx, dweight and dbias have x's dtype; dy, mean, rstd and weight are converted to it."""
    x = _rand((5, 12), xdt)
    w = _rand((12,), odt, 0.5, 1.0)
    _, m, r = layer_norm(x, w, return_stats=True)
    dy = _rand((5, 12), odt)
    dx, dw, db = layer_norm_backward(dy, x, m.astype(odt), r.astype(odt), w)
    assert dx.dtype == dw.dtype == db.dtype == xdt
    dx2, dw2, db2 = layer_norm_backward(dy.astype(xdt), x, m.astype(odt).astype(xdt),
                                        r.astype(odt).astype(xdt), w.astype(xdt))
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dw, dw2)
    np.testing.assert_array_equal(db, db2)


# --------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------

def test_large_offset_float32():
    x = (1e4 + 0.1 * RNG.standard_normal((16, 256))).astype(np.float32)
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    w = np.ones(256, np.float32)
    _, m, r = layer_norm(x, w, return_stats=True)
    dx, dw, db = layer_norm_backward(dy, x, m, r, w)
    dxr, dwr, dbr = ln_backward_ref(dy, x, w)
    assert np.all(np.isfinite(dx))
    # mean is returned as float32 (x's dtype), so xhat carries its rounding: ~1e-3 here.
    assert np.abs(dx - dxr).max() <= 5e-3 * np.abs(dxr).max()
    assert np.abs(dw - dwr).max() <= 5e-3 * np.abs(dwr).max()
    np.testing.assert_allclose(db, dbr, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype,magnitude", [(np.float32, 1e30), (np.float32, 1e38),
                                             (np.float64, 1e200), (np.float64, 1e300)])
def test_huge_values(dtype, magnitude):
    x = (magnitude / 3.0 * np.clip(RNG.standard_normal((6, 48)), -3, 3)).astype(dtype)
    dy = _rand(x.shape, dtype)
    w = _rand((48,), dtype, 0.5, 1.0)
    _, m, r = layer_norm(x, w, return_stats=True)
    dx, dw, db = layer_norm_backward(dy, x, m, r, w)
    dxr, dwr, dbr = ln_backward_ref(dy, x, w)
    assert np.all(np.isfinite(dw)) and np.all(np.isfinite(db)) and np.all(np.isfinite(dx))
    # dx ~ 1/magnitude: compare relative to its own scale
    scale = np.abs(dxr).max()
    assert np.abs(dx - dxr).max() <= (1e-5 if dtype == np.float32 else 1e-11) * scale
    np.testing.assert_allclose(dw, dwr, rtol=1e-5 if dtype == np.float32 else 1e-11, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("where", ["x", "dy"])
@pytest.mark.parametrize("shape", [(10, 33), (250, 300)])
def test_non_finite_row_is_isolated(dtype, bad, where, shape):
    x = _rand(shape, dtype)
    dy = _rand(shape, dtype)
    w = _rand(shape[1:], dtype, 0.5, 1.0)
    _, m, r = layer_norm(x, w, return_stats=True)
    clean, clean_dw, clean_db = layer_norm_backward(dy, x, m, r, w)
    x2, dy2 = x.copy(), dy.copy()
    (x2 if where == "x" else dy2)[4, 9] = bad
    _, m2, r2 = layer_norm(x2, w, return_stats=True)
    dx, dw, db = layer_norm_backward(dy2, x2, m2, r2, w)
    assert not np.any(np.isfinite(dx[4]))
    others = np.arange(shape[0]) != 4
    np.testing.assert_array_equal(dx[others], clean[others])
    # The parameter gradients sum over every row, the bad one included.
    if where == "x":        # xhat of the whole row is non-finite; dbias needs dy only
        assert not np.any(np.isfinite(dw))
        np.testing.assert_array_equal(db, clean_db)
    else:                   # only feature 9 sees the bad dy
        assert not np.isfinite(dw[9]) and not np.isfinite(db[9])
        keep = np.arange(shape[1]) != 9
        np.testing.assert_array_equal(dw[keep], clean_dw[keep])
        np.testing.assert_array_equal(db[keep], clean_db[keep])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_rows(dtype):
    x = _rand((4, 16), dtype)
    x[2] = 3.25
    dy = _rand((4, 16), dtype)
    w = _rand((16,), dtype, 0.5, 1.0)
    _, m, r = layer_norm(x, w, return_stats=True)
    dx, dw, db = layer_norm_backward(dy, x, m, r, w)
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(dw))
    dxr, dwr, _ = ln_backward_ref(dy, x, w)
    # A constant row has xhat = 0: dx = rstd * (g - mean(g)), with rstd = 1/sqrt(eps).
    np.testing.assert_allclose(dx, dxr, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)
    np.testing.assert_allclose(dw, dwr, *tol(dtype))


# --------------------------------------------------------------------------
# Inputs never modified; unusual but valid input
# --------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((5, 8), -1), ((3, 4, 5), 1), ((40, 30, 50), (0, 2))])
def test_inputs_not_modified(shape, axis):
    x = _rand(shape, np.float32)
    dy = _rand(shape, np.float64)
    w = _rand(norm_shape(shape, axis), np.float64)
    _, m, r = layer_norm(x, w, axis=axis, return_stats=True)
    copies = [a.copy() for a in (dy, x, m, r, w)]
    layer_norm_backward(dy, x, m, r, w, axis=axis)
    layer_norm_backward(dy, x, m, r, w, axis=axis, out=np.empty(shape, np.float32))
    for a, c in zip((dy, x, m, r, w), copies):
        np.testing.assert_array_equal(a, c)


def _setup(shape, axis=-1, dtype=np.float64):
    x = _rand(shape, dtype, 1.5, 0.3)
    dy = _rand(shape, dtype)
    w = _rand(norm_shape(shape, axis), dtype, 0.5, 1.0)
    _, m, r = layer_norm(x, w, axis=axis, return_stats=True)
    return dy, x, m, r, w, ln_backward_ref(dy, x, w, axis)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((7, 16), -1), ((3, 4, 5), 1), ((250, 300), -1), ((4, 5, 6), (0, 2))])
@pytest.mark.parametrize("target", ["dy", "x"])
def test_out_is_dy_or_x_in_place(shape, axis, dtype, target):
    dy, x, m, r, w, (dxr, dwr, dbr) = _setup(shape, axis, dtype)
    out = dy if target == "dy" else x
    dx, dw, db = layer_norm_backward(dy, x, m, r, w, axis=axis, out=out)
    assert dx is out
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(dx, dxr, rtol=rtol, atol=atol)
    rows = int(np.prod(stats_shape(shape, axis)))
    np.testing.assert_allclose(dw, dwr, rtol=rtol, atol=atol * np.sqrt(rows))
    np.testing.assert_allclose(db, dbr, rtol=rtol, atol=atol * np.sqrt(rows))


@pytest.mark.parametrize("shift", [1, -3, 16])
@pytest.mark.parametrize("rows,d", [(6, 10), (250, 300)])
def test_out_partially_overlapping(shift, rows, d):
    n = rows * d
    buf = RNG.standard_normal(n + abs(shift))
    xs = slice(0, n) if shift > 0 else slice(-shift, n - shift)
    os_ = slice(shift, n + shift) if shift > 0 else slice(0, n)
    x = buf[xs].reshape(rows, d)
    out = buf[os_].reshape(rows, d)
    dy = _rand((rows, d))
    _, m, r = layer_norm(x, return_stats=True)
    dxr, _, dbr = ln_backward_ref(dy, x.copy())
    dx, dw, db = layer_norm_backward(dy, x, m, r, out=out)
    assert dx is out and dw is None
    np.testing.assert_allclose(out, dxr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dbr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stat", ["mean", "rstd"])
@pytest.mark.parametrize("rows,d", [(6, 5), (300, 200)])
def test_out_overlapping_the_statistics(stat, rows, d):
    """out sharing memory with mean or rstd: every statistic is read before
    it is overwritten (or the kernel writes elsewhere first)."""
    x = _rand((rows, d))
    dy = _rand((rows, d))
    _, m, r = layer_norm(x, return_stats=True)
    dxr, _, dbr = ln_backward_ref(dy, x)
    buf = np.zeros(rows * d + rows)
    view = buf[:rows]
    view[:] = m if stat == "mean" else r
    out = buf[rows - 3:rows - 3 + rows * d].reshape(rows, d)
    args = (view, r) if stat == "mean" else (m, view)
    dx, _, db = layer_norm_backward(dy, x, *args, out=out)
    assert dx is out
    np.testing.assert_allclose(out, dxr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dbr, rtol=1e-12, atol=1e-12)


def test_out_strided():
    dy, x, m, r, w, (dxr, _, _) = _setup((6, 10))
    big = np.zeros((6, 20))
    out = big[:, 1::2]
    dx, _, _ = layer_norm_backward(dy, x, m, r, w, out=out)
    assert dx is out
    np.testing.assert_allclose(big[:, 1::2], dxr, rtol=1e-12, atol=1e-12)
    assert np.all(big[:, ::2] == 0.0)


def test_read_only_strided_fortran_big_endian_and_lists():
    dy, x, m, r, w, (dxr, dwr, dbr) = _setup((8, 12))
    variants = [
        tuple(np.array(a) for a in (dy, x, m, r, w)),
        tuple(np.asfortranarray(a) for a in (dy, x, m, r, w)),
        tuple(a.astype(a.dtype.newbyteorder(">")) for a in (dy, x, m, r, w)),
        tuple(a.tolist() for a in (dy, x, m, r, w)),
    ]
    ro = tuple(a.copy() for a in (dy, x, m, r, w))
    for a in ro:
        a.flags.writeable = False
    variants.append(ro)
    for args in variants:
        dx, dw, db = layer_norm_backward(*args)
        np.testing.assert_allclose(dx, dxr, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dw, dwr, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(db, dbr, rtol=1e-12, atol=1e-12)
    # transposed / strided views of bigger arrays
    bigx = np.zeros((12, 16))
    bigx[:, ::2] = x.T
    dx, dw, db = layer_norm_backward(dy.T.copy().T, bigx[:, ::2].T, m, r, w)
    np.testing.assert_allclose(dx, dxr, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_weight", [True, False])
@pytest.mark.parametrize("shape,axis", [((0, 5), -1), ((0, 3, 4), (1, 2)), ((4, 0), 0)])
def test_zero_rows(shape, axis, dtype, with_weight):
    x = np.empty(shape, dtype)
    ns = norm_shape(shape, axis)
    w = np.ones(ns, dtype) if with_weight else None
    ss = stats_shape(shape, axis)
    dx, dw, db = layer_norm_backward(np.empty(shape, dtype), x, np.empty(ss, dtype),
                                     np.empty(ss, dtype), w, axis=axis)
    assert dx.shape == shape and dx.dtype == dtype
    assert db.shape == ns and np.all(db == 0)          # an empty sum is zero
    if with_weight:
        assert dw.shape == ns and np.all(dw == 0)
    else:
        assert dw is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((3, 0), -1), ((2, 3, 0), (1, 2)), ((0, 4), 0)])
def test_zero_features(shape, axis, dtype):
    x = np.empty(shape, dtype)
    ns = norm_shape(shape, axis)
    _, m, r = layer_norm(x, axis=axis, return_stats=True)
    dx, dw, db = layer_norm_backward(np.empty(shape, dtype), x, m, r, np.ones(ns, dtype), axis=axis)
    assert dx.shape == shape and dx.size == 0
    assert dw.shape == db.shape == ns and db.size == 0


# --------------------------------------------------------------------------
# torch autograd agreement
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k", [((8, 32), 1), ((4, 6, 10), 2), ((300, 200), 1)])
@pytest.mark.parametrize("affine", [False, True])
def test_agrees_with_torch_autograd(shape, k, dtype, affine):
    torch = pytest.importorskip("torch")
    x = _rand(shape, dtype, 2.0, 0.5)
    dy = _rand(shape, dtype)
    axis = tuple(range(-k, 0))
    ns = shape[-k:]
    w = _rand(ns, dtype, 0.5, 1.0) if affine else None
    b = _rand(ns, dtype, 0.5) if affine else None

    xt = torch.from_numpy(x).requires_grad_(True)
    wt = None if w is None else torch.from_numpy(w).requires_grad_(True)
    bt = None if b is None else torch.from_numpy(b).requires_grad_(True)
    yt = torch.nn.functional.layer_norm(xt, ns, wt, bt, eps=1e-5)
    yt.backward(torch.from_numpy(dy))

    _, m, r = layer_norm(x, w, b, axis=axis, return_stats=True)
    dx, dw, db = layer_norm_backward(dy, x, m, r, w, axis=axis)
    rows = int(np.prod(shape[:-k]))
    rtol, atol = (2e-4, 2e-5) if dtype == np.float32 else (1e-10, 1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=rtol, atol=atol)
    if affine:
        np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=rtol, atol=atol * np.sqrt(rows))
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=rtol, atol=atol * np.sqrt(rows))
    else:
        assert dw is None
        np.testing.assert_allclose(db, dy.reshape(rows, -1).sum(0).reshape(ns), rtol=rtol,
                                   atol=atol * np.sqrt(rows))


# --------------------------------------------------------------------------
# Channels-first and other middle axes, forward and backward, edge shapes
# and layouts (the drivers walk x's own layout for a run of middle axes)
# --------------------------------------------------------------------------

MIDDLE_CASES = [
    ((4, 5, 1), 1), ((1, 5, 7), 1), ((3, 1, 4), 1), ((0, 3, 4), 1), ((2, 0, 4), 1), ((2, 3, 0), 1),
    ((2, 3, 4, 5), (1, 2)), ((5, 7, 3, 2), (-3, -2)), ((3, 4, 5, 6), 2),
    ((64, 96, 40), 1), ((8, 16, 33, 65), 1), ((8, 16, 33, 65), (1, 2)), ((2, 300, 2), 1), ((2, 3, 20000), 1),
]


def _close_to(a, ref, dtype, rows=1, scale=1.0):
    """Close relative to the reference's own scale (float32 or float64)."""
    scale = max(scale, float(np.abs(ref).max(initial=0.0)))
    rtol = 1e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(a, ref, rtol=rtol, atol=rtol * scale * np.sqrt(rows))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", ["C", "F", "strided", "in place", "overlap"])
@pytest.mark.parametrize("shape,axis", MIDDLE_CASES)
def test_middle_axes(shape, axis, variant, dtype):
    x = _rand(shape, dtype, 2.0, 1.0)
    ns = norm_shape(shape, axis)
    w = _rand(ns, dtype, 0.5, 1.0)
    b = _rand(ns, dtype)
    dy = _rand(shape, dtype)
    if variant == "F":
        x = np.asfortranarray(x)
        dy = np.asfortranarray(dy)
    elif variant == "strided":
        big = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        big[..., ::2] = x
        x = big[..., ::2]
    yr = ln_ref(x, w, b, axis)[0]
    dxr, dwr, dbr = ln_backward_ref(dy, x, w, axis)
    _, m, r = layer_norm(x, w, b, axis=axis, return_stats=True)
    if variant == "in place":
        y = x.copy()
        assert layer_norm(y, w, b, axis=axis, out=y) is y
        dx = dy.copy()
        _, dw, db = layer_norm_backward(dx, x, m, r, w, axis=axis, out=dx)
    elif variant == "overlap":
        n = x.size
        buf = np.zeros(n + 3, dtype)
        xv = buf[3:].reshape(shape)
        xv[...] = x
        y = layer_norm(xv, w, b, axis=axis, out=buf[:n].reshape(shape))
        buf2 = np.zeros(n + 3, dtype)
        dyv = buf2[3:].reshape(shape)
        dyv[...] = dy
        dx, dw, db = layer_norm_backward(dyv, x, m, r, w, axis=axis, out=buf2[:n].reshape(shape))
    else:
        xc = x.copy()
        y = layer_norm(x, w, b, axis=axis)
        dx, dw, db = layer_norm_backward(dy, x, m, r, w, axis=axis)
        np.testing.assert_array_equal(x, xc)
    assert y.shape == dx.shape == shape and y.dtype == dx.dtype == dtype
    assert dw.shape == db.shape == ns
    rows = max(1, int(np.prod(stats_shape(shape, axis))))
    _close_to(y, yr, dtype)
    # dx's rounding is relative to rstd * |dy * w| (dx itself may be ~0: one feature)
    _close_to(dx, dxr, dtype, scale=float(np.max(r, initial=1.0)) * float(np.abs(dy).max(initial=0.0))
              * float(np.abs(w).max(initial=1.0)))
    _close_to(dw, dwr, dtype, rows)
    _close_to(db, dbr, dtype, rows)
