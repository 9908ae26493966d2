"""The row kernels called from a user's own ``@njit`` code (serial and prange).

The user functions here are deliberately not ``cache=True``: numba's cache
only checks the file of the cached function, so a cached copy could keep
stale inlined kernels after numba_ln changes.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit, prange

from numba_ln import layer_norm, layer_norm_backward
from numba_ln.kernels import ln_backward_row, ln_forward_row, ln_row_stats

from _reference import ln_backward_ref, ln_ref, tol

RNG = np.random.default_rng(20260504)


@njit
def user_forward(x, weight, bias, eps, y, mean, rstd):
    for i in range(x.shape[0]):
        mean[i], rstd[i] = ln_forward_row(x[i], weight, bias, eps, y[i])


@njit(parallel=True)
def user_forward_parallel(x, weight, bias, eps, y, mean, rstd):
    for i in prange(x.shape[0]):
        m, r = ln_forward_row(x[i], weight, bias, eps, y[i])
        mean[i] = m
        rstd[i] = r


@njit
def user_stats(x, eps):
    mean = np.empty(x.shape[0])
    rstd = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        mean[i], rstd[i] = ln_row_stats(x[i], eps)
    return mean, rstd


@njit
def user_backward(dy, x, mean, rstd, weight, dx, dweight, dbias):
    for i in range(x.shape[0]):
        ln_backward_row(dy[i], x[i], mean[i], rstd[i], weight, dx[i], dweight, dbias)


@njit(parallel=True)
def user_backward_parallel_dx_only(dy, x, mean, rstd, weight, dx):
    """Rows in parallel; parameter gradients skipped (None accumulators)."""
    for i in prange(x.shape[0]):
        ln_backward_row(dy[i], x[i], mean[i], rstd[i], weight, dx[i], None, None)


@njit
def user_mlp_layer(inp, W, gain, shift, out):
    """A user's layer: out = tanh(LN(inp @ W.T) * gain + shift), one case at a time."""
    n, h = inp.shape[0], W.shape[0]
    a = np.empty(h, dtype=inp.dtype)
    for i in range(n):
        for j in range(h):
            s = 0.0
            for k in range(W.shape[1]):
                s += W[j, k] * inp[i, k]
            a[j] = s
        ln_forward_row(a, gain, shift, 1e-5, a)   # in place on a scratch row
        for j in range(h):
            out[i, j] = np.tanh(a[j])


@njit
def user_columns(x, y):
    """Normalise each column (a strided 1-D view) of a C-ordered array."""
    for j in range(x.shape[1]):
        ln_forward_row(x[:, j], None, None, 1e-5, y[:, j])


def _outputs(x):
    return np.empty_like(x), np.empty(x.shape[0]), np.empty(x.shape[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("fn", [user_forward, user_forward_parallel], ids=["njit", "prange"])
def test_forward_from_user_code(fn, affine, dtype):
    x = (1.5 * RNG.standard_normal((33, 20)) + 2.0).astype(dtype)
    w = RNG.standard_normal(20).astype(dtype) if affine else None
    b = RNG.standard_normal(20).astype(dtype) if affine else None
    y, mean, rstd = _outputs(x)
    fn(x, w, b, 1e-5, y, mean, rstd)
    yr, mr, rr = ln_ref(x, w, b)
    np.testing.assert_allclose(y, yr, *tol(dtype))
    srtol = 1e-6 if dtype == np.float32 else 1e-12   # float64 statistics of float32 sums
    np.testing.assert_allclose(mean, mr, rtol=srtol)
    np.testing.assert_allclose(rstd, rr, rtol=srtol)
    # the same kernel as the public function (inlined: FMA contraction may differ by an ulp)
    np.testing.assert_allclose(y, layer_norm(x, w, b), rtol=4 * np.finfo(dtype).eps,
                               atol=4 * np.finfo(dtype).eps)


def test_weight_only_and_bias_only_from_user_code():
    x = RNG.standard_normal((5, 9))
    w = RNG.standard_normal(9)
    for wb in ((w, None), (None, w)):
        y, mean, rstd = _outputs(x)
        user_forward(x, wb[0], wb[1], 1e-5, y, mean, rstd)
        np.testing.assert_allclose(y, ln_ref(x, *wb)[0], rtol=1e-12, atol=1e-12)


def test_row_stats_from_user_code_and_python():
    x = RNG.standard_normal((7, 15)) * 3 + 1
    mean, rstd = user_stats(x, 1e-5)
    _, mr, rr = ln_ref(x)
    np.testing.assert_allclose(mean, mr, rtol=1e-12)
    np.testing.assert_allclose(rstd, rr, rtol=1e-12)
    # the kernels are ordinary dispatchers: callable from Python too
    m0, r0 = ln_row_stats(x[0], 1e-5)
    assert isinstance(m0, float) and m0 == mean[0] and r0 == rstd[0]
    # float32 rows give float64 statistics; huge float32 rows stay finite
    big = np.float32(3e38) * np.array([1, -1] * 4, np.float32)
    m32, r32 = ln_row_stats(big, 0.0)
    assert isinstance(m32, float) and isinstance(r32, float)
    assert m32 == 0.0 and np.isclose(r32, 1 / np.float64(np.float32(3e38)), rtol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_weight", [False, True])
def test_backward_from_user_code(with_weight, dtype):
    x = (RNG.standard_normal((12, 10)) * 2).astype(dtype)
    dy = RNG.standard_normal((12, 10)).astype(dtype)
    w = RNG.standard_normal(10).astype(dtype) if with_weight else None
    y, mean, rstd = _outputs(x)
    user_forward(x, w, None, 1e-5, y, mean, rstd)
    dx = np.empty_like(x)
    dweight = np.zeros(10)             # accumulators: float64, zeroed by the caller
    dbias = np.zeros(10)
    user_backward(dy, x, mean, rstd, w, dx, dweight if with_weight else None, dbias)
    dxr, dwr, dbr = ln_backward_ref(dy, x, w)
    np.testing.assert_allclose(dx, dxr, *tol(dtype))
    np.testing.assert_allclose(dbias, dbr, rtol=1e-12, atol=1e-12)
    if with_weight:
        np.testing.assert_allclose(dweight, dwr, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)
    else:
        assert np.all(dweight == 0)   # untouched: None was passed
    # accumulation: a second call adds the same amounts again
    db1 = dbias.copy()
    user_backward(dy, x, mean, rstd, w, dx, None, dbias)
    np.testing.assert_allclose(dbias, 2 * db1, rtol=1e-12)
    # prange over rows, parameter gradients skipped
    dx2 = np.empty_like(x)
    user_backward_parallel_dx_only(dy, x, mean, rstd, w, dx2)
    np.testing.assert_array_equal(dx2, dx)


def test_backward_row_in_place_on_dy():
    x = RNG.standard_normal((4, 6))
    dy = RNG.standard_normal((4, 6))
    _, m, r = layer_norm(x, return_stats=True)
    expected, _, _ = layer_norm_backward(dy, x, m, r)
    buf = dy.copy()
    for i in range(4):
        ln_backward_row(buf[i], x[i], m[i], r[i], None, buf[i], None, None)
    np.testing.assert_allclose(buf, expected, rtol=1e-13, atol=1e-13)


def test_inside_a_users_layer():
    inp = RNG.standard_normal((6, 5))
    W = RNG.standard_normal((8, 5))
    gain = RNG.uniform(0.5, 1.5, 8)
    shift = RNG.standard_normal(8)
    out = np.empty((6, 8))
    user_mlp_layer(inp, W, gain, shift, out)
    expected = np.tanh(ln_ref(inp @ W.T, gain, shift)[0])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_strided_rows_in_user_code():
    x = RNG.standard_normal((9, 4))
    y = np.empty_like(x)
    user_columns(x, y)
    np.testing.assert_allclose(y, ln_ref(x, axis=0)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y, layer_norm(x, axis=0), rtol=1e-13, atol=1e-13)


# --------------------------------------------------------------------------
# The examples run and check themselves
# --------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["quickstart.py", "njit_training.py"])
def test_example_runs(script):
    path = EXAMPLES / script
    if not path.exists():
        pytest.skip(f"{path} not present")
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "passed" in proc.stdout or "trained" in proc.stdout
