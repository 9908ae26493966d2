"""numba_ln quick start: LayerNorm on NumPy arrays.

Run:  python examples/quickstart.py

Every step checks itself against a few lines of plain NumPy, so the script
doubles as a smoke test (it exits with an AssertionError if anything is off).
"""

import numpy as np

import numba_ln
from numba_ln import LayerNorm, layer_norm, layer_norm_backward


def numpy_layer_norm(x, weight=None, bias=None, axis=-1, eps=1e-5):
    """The definition (biased variance, eps inside the square root), in float64."""
    x = x.astype(np.float64)
    mean = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def main():
    rng = np.random.default_rng(0)

    # 1. The basic call: normalise every row of a (batch, features) array.
    x = rng.standard_normal((4, 8)).astype(np.float32) * 3 + 5
    y = layer_norm(x)
    print("1. y = layer_norm(x): dtype", y.dtype, "| row means", y.mean(axis=1).round(6),
          "| row stds", y.std(axis=1).round(4))
    assert np.allclose(y, numpy_layer_norm(x), atol=1e-5)

    # 2. A learnable gain and bias of the normalised shape.
    weight = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    y = layer_norm(x, weight, bias, eps=1e-5)
    assert np.allclose(y, numpy_layer_norm(x, weight, bias), atol=1e-5)
    print("2. with weight and bias: max |y - numpy| =",
          np.abs(y - numpy_layer_norm(x, weight, bias)).max())

    # 3. Several axes at once: normalise each (H, W) image of a (N, H, W) batch.
    imgs = rng.standard_normal((2, 5, 6))
    y = layer_norm(imgs, axis=(-2, -1))
    assert np.allclose(y, numpy_layer_norm(imgs, axis=(-2, -1)), atol=1e-12)
    print("3. axis=(-2, -1) on", imgs.shape, "-> per-image means", y.mean(axis=(1, 2)).round(12))

    # 4. Channels-first: axis=1 of an NCHW array (statistics over C for each
    #    pixel).  Any axes work; non-trailing ones cost about one extra copy.
    nchw = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = layer_norm(nchw, axis=1)
    assert np.allclose(y, numpy_layer_norm(nchw, axis=1), atol=1e-5)
    print("4. axis=1 of NCHW", nchw.shape, "-> y", y.shape)

    # 5. The backward pass: keep the statistics of the forward pass.
    y, mean, rstd = layer_norm(x, weight, bias, return_stats=True)
    print("5. stats: mean", mean.shape, mean.dtype, "| rstd", rstd.shape, rstd.dtype)
    dy = rng.standard_normal(x.shape).astype(np.float32)       # dLoss/dy from the next layer
    dx, dweight, dbias = layer_norm_backward(dy, x, mean, rstd, weight)
    #    check dx against a central difference of sum(dy * y) in float64
    x64 = x.astype(np.float64)
    h, (i, j) = 1e-6, (2, 3)
    xp, xm = x64.copy(), x64.copy()
    xp[i, j] += h
    xm[i, j] -= h
    numeric = (np.sum(dy * numpy_layer_norm(xp, weight, bias)) -
               np.sum(dy * numpy_layer_norm(xm, weight, bias))) / (2 * h)
    assert abs(dx[i, j] - numeric) < 1e-3 * max(1.0, abs(numeric))
    assert np.allclose(dbias, dy.sum(axis=0), atol=1e-5)
    print(f"   dx[{i},{j}] = {dx[i, j]:.6f}, central difference {numeric:.6f}; "
          f"dweight {dweight.shape}, dbias = sum(dy) {dbias.shape}")

    # 6. In place and into a preallocated output.
    out = np.empty_like(x)
    layer_norm(x, weight, bias, out=out)
    z = x.copy()
    layer_norm(z, weight, bias, out=z)                           # out=x: in place
    assert np.allclose(out, z, atol=1e-6)
    print("6. out= and in place agree")

    # 7. The dtype rule: the result has x's dtype; weight, bias, dy are converted.
    y64 = layer_norm(x.astype(np.float64), weight, bias)         # float32 parameters
    print("7. float64 x with float32 weight ->", y64.dtype, "| float32 x ->", layer_norm(x).dtype)
    try:
        layer_norm(np.arange(6).reshape(2, 3))                   # ints are refused ...
    except TypeError as err:
        print("   TypeError:", err)                              # ... with the fix in the message

    # 8. Numerics: a large common offset in float32 costs no accuracy.
    big = (1e4 + 0.1 * rng.standard_normal((3, 256))).astype(np.float32)
    err = np.abs(layer_norm(big) - numpy_layer_norm(big)).max()
    assert err < 5e-3
    print(f"8. 1e4 + 0.1*noise in float32: max error vs float64 = {err:.2e}")

    # 9. A stateful layer for hand-written training loops.
    ln = LayerNorm(8, dtype=np.float32)
    y = ln.forward(x)
    dx = ln.backward(dy)
    ln.weight -= 0.1 * ln.grad_weight                            # one SGD step
    ln.bias -= 0.1 * ln.grad_bias
    print("9.", ln, "-> grads", {k: v.shape for k, v in ln.gradients().items()})

    print("numba_ln", numba_ln.__version__, "quick start: all checks passed")


if __name__ == "__main__":
    main()
