"""numba_ln.LayerNorm: the stateful layer for hand-written training loops."""

import numpy as np
import pytest

from numba_ln import LayerNorm, layer_norm, layer_norm_backward

from _reference import assert_grad_close, central_diff, ln_backward_ref, ln_ref, tol

RNG = np.random.default_rng(20260506)


def test_defaults():
    ln = LayerNorm(8)
    assert ln.normalized_shape == (8,)
    assert ln.weight.dtype == ln.bias.dtype == np.float32
    np.testing.assert_array_equal(ln.weight, 1.0)     # gains start at 1, biases at 0
    np.testing.assert_array_equal(ln.bias, 0.0)
    assert ln.eps == 1e-5
    assert set(ln.parameters()) == {"weight", "bias"}
    assert ln.grad_weight is None and ln.grad_bias is None
    assert "LayerNorm((8,)" in repr(ln)


@pytest.mark.parametrize("kw,params", [
    (dict(elementwise_affine=False), set()),
    (dict(bias=False), {"weight"}),
    (dict(), {"weight", "bias"}),
])
def test_parameter_sets(kw, params):
    ln = LayerNorm((3, 4), dtype=np.float64, **kw)
    assert set(ln.parameters()) == params
    x = RNG.standard_normal((5, 3, 4))
    y = ln.forward(x)
    np.testing.assert_allclose(y, ln_ref(x, ln.weight, ln.bias, axis=(-2, -1))[0], rtol=1e-12, atol=1e-12)
    dy = RNG.standard_normal(y.shape)
    dx = ln.backward(dy)
    dxr, dwr, dbr = ln_backward_ref(dy, x, ln.weight, axis=(-2, -1))
    np.testing.assert_allclose(dx, dxr, rtol=1e-12, atol=1e-12)
    grads = ln.gradients()
    assert set(grads) == params
    if "weight" in params:
        np.testing.assert_allclose(grads["weight"], dwr, rtol=1e-12, atol=1e-12)
        assert grads["weight"].shape == (3, 4)
    if "bias" in params:
        np.testing.assert_allclose(grads["bias"], dbr, rtol=1e-12, atol=1e-12)
    else:
        assert ln.grad_bias is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_functional(dtype):
    ln = LayerNorm(16, dtype=dtype, eps=1e-3)
    ln.weight[:] = RNG.uniform(0.5, 1.5, 16)
    ln.bias[:] = RNG.standard_normal(16)
    x = RNG.standard_normal((2, 7, 16)).astype(dtype)
    y = ln(x)                                            # __call__ is forward
    yf, m, r = layer_norm(x, ln.weight, ln.bias, eps=1e-3, return_stats=True)
    np.testing.assert_array_equal(y, yf)
    assert y.dtype == dtype
    dy = RNG.standard_normal(x.shape).astype(dtype)
    dx = ln.backward(dy)
    dxf, dwf, dbf = layer_norm_backward(dy, x, m, r, ln.weight)
    np.testing.assert_array_equal(dx, dxf)
    np.testing.assert_array_equal(ln.grad_weight, dwf)
    np.testing.assert_array_equal(ln.grad_bias, dbf)


def test_gradients_by_central_differences():
    ln = LayerNorm((2, 3), dtype=np.float64)
    ln.weight[:] = RNG.uniform(0.5, 1.5, (2, 3))
    ln.bias[:] = RNG.standard_normal((2, 3))
    x = RNG.standard_normal((4, 2, 3))
    G = RNG.standard_normal((4, 2, 3))

    def loss():
        return float(np.sum(G * ln.forward(x)))

    ln.forward(x)
    dx = ln.backward(G)
    assert_grad_close(dx, central_diff(loss, x))
    assert_grad_close(ln.grad_weight, central_diff(loss, ln.weight))
    assert_grad_close(ln.grad_bias, central_diff(loss, ln.bias))


def test_backward_replaces_gradients_and_uses_latest_forward():
    ln = LayerNorm(5, dtype=np.float64)
    x1 = RNG.standard_normal((3, 5))
    x2 = RNG.standard_normal((6, 5))
    dy2 = RNG.standard_normal((6, 5))
    ln.forward(x1)
    ln.forward(x2)
    dx = ln.backward(dy2)
    assert dx.shape == (6, 5)
    _, dwr, dbr = ln_backward_ref(dy2, x2, ln.weight)
    np.testing.assert_allclose(ln.grad_weight, dwr, rtol=1e-12, atol=1e-12)
    ln.backward(dy2)                      # a second backward replaces, it does not add
    np.testing.assert_allclose(ln.grad_bias, dbr, rtol=1e-12, atol=1e-12)


def test_sgd_step_reduces_a_loss():
    """A few SGD steps on the gain and bias fit LN's output to a target."""
    ln = LayerNorm(10, dtype=np.float64)
    x = RNG.standard_normal((64, 10))
    target = 2.0 * ln_ref(x)[0] - 0.5
    losses = []
    for _ in range(50):
        y = ln.forward(x)
        losses.append(0.5 * np.mean(np.sum((y - target) ** 2, axis=1)))
        ln.backward((y - target) / x.shape[0])
        for name, p in ln.parameters().items():
            p -= 0.5 * ln.gradients()[name]
    assert losses[-1] < 1e-3 * losses[0]
    np.testing.assert_allclose(ln.weight, 2.0, atol=1e-2)
    np.testing.assert_allclose(ln.bias, -0.5, atol=1e-2)


def test_float32_layer_with_float64_input():
    """The mixed-dtype rule of layer_norm: the result has x's dtype."""
    ln = LayerNorm(6)                                   # float32 parameters
    x = RNG.standard_normal((3, 6))
    y = ln.forward(x)
    assert y.dtype == np.float64
    dx = ln.backward(np.ones_like(y))
    assert dx.dtype == np.float64
    np.testing.assert_allclose(y, ln_ref(x)[0], *tol(np.float64))


def test_forward_does_not_modify_input():
    ln = LayerNorm(4, dtype=np.float64)
    x = RNG.standard_normal((3, 4))
    xc = x.copy()
    y = ln.forward(x)
    ln.backward(np.ones_like(y))
    np.testing.assert_array_equal(x, xc)


def test_bad_input():
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward\(\)"):
        LayerNorm(4).backward(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"x has shape \(2, 5\), whose trailing axes should be \(4,\)"):
        LayerNorm(4).forward(np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"x has shape \(3,\), whose trailing axes should be \(2, 3\)"):
        LayerNorm((2, 3)).forward(np.ones(3, np.float32))
    for shape in ((), (4, -1), -2):
        with pytest.raises(ValueError, match=r"normalized_shape must be a non-empty tuple of sizes >= 0, found"):
            LayerNorm(shape)
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64, found int64"):
        LayerNorm(4, dtype=np.int64)
    with pytest.raises(TypeError, match=r"x must be float32 or float64, found int64"):
        LayerNorm(3).forward(np.ones((2, 3), np.int64))
    ln = LayerNorm(3)
    ln.forward(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4\) but x's shape is \(2, 3\)"):
        ln.backward(np.ones((2, 4), np.float32))
