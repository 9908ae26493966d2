"""LayerNorm inside your own @njit code: a small MLP trained by SGD.

Run:  python examples/njit_training.py        (about 10-30 s, compile included)

The model classifies the three interleaved arms of a 2-D spiral:

    a = W1 x + c1             (c1 is per unit: LN removes only a shift common to all units)
    h = LN(a; gain, shift)    numba_ln.kernels.ln_forward_row, one case at a time
    z = tanh(h)
    logits = W2 z + c2,  softmax cross-entropy

Everything, forward and backward, runs inside one @njit function that calls
the row kernels of :mod:`numba_ln.kernels` directly:

- ``ln_forward_row(a, gain, shift, eps, h)`` writes LN(a) into ``h`` and
  returns the row's ``(mean, rstd)`` (float64), which the backward needs;
- ``ln_backward_row(dh, a, mean, rstd, gain, da, dgain, dshift)`` writes
  ``da`` and *adds* this case's contribution to the accumulators ``dgain``
  and ``dshift`` (zero them once per mini-batch).

Inference uses ``prange`` over cases: the kernels are safe to call from
parallel loops (each call only writes the rows it is given).

The script prints the loss as it falls and checks at the end that training
worked (an AssertionError otherwise), and compares the model's LayerNorm with
numba_ln.layer_norm on the same summed inputs.
"""

import math
import time

import numpy as np
from numba import njit, prange

import numba_ln
from numba_ln.kernels import ln_backward_row, ln_forward_row

EPS = 1e-5


def make_spiral(n_per_class=200, classes=3, noise=0.3, seed=0):
    """The classic spiral data set: ``classes`` arms, ``n_per_class`` points each."""
    rng = np.random.default_rng(seed)
    X = np.empty((n_per_class * classes, 2))
    Y = np.empty(n_per_class * classes, dtype=np.int64)
    for k in range(classes):
        r = np.linspace(0.1, 1.0, n_per_class)
        t = np.linspace(k * 2 * np.pi / classes, (k + 1.6) * 2 * np.pi / classes, n_per_class)
        t = t + noise * rng.standard_normal(n_per_class)
        sl = slice(k * n_per_class, (k + 1) * n_per_class)
        X[sl, 0] = r * np.sin(t)
        X[sl, 1] = r * np.cos(t)
        Y[sl] = k
    return X, Y


@njit(cache=True)
def _forward_case(x, W1, c1, gain, shift, W2, c2, a, h, z, logits):
    """One case's forward pass; returns the LayerNorm statistics (mean, rstd)."""
    H, D = W1.shape
    for j in range(H):
        s = c1[j]
        for k in range(D):
            s += W1[j, k] * x[k]
        a[j] = s
    mean, rstd = ln_forward_row(a, gain, shift, EPS, h)
    for j in range(H):
        z[j] = math.tanh(h[j])
    for c in range(W2.shape[0]):
        s = c2[c]
        for j in range(H):
            s += W2[c, j] * z[j]
        logits[c] = s
    return mean, rstd


@njit(cache=True)
def train_epoch(X, Y, W1, c1, gain, shift, W2, c2, lr, batch, order):
    """One epoch of mini-batch SGD, all in compiled code; returns the mean loss."""
    N, D = X.shape
    H = W1.shape[0]
    K = W2.shape[0]
    a = np.empty(H)
    h = np.empty(H)
    z = np.empty(H)
    logits = np.empty(K)
    p = np.empty(K)
    dz = np.empty(H)
    dh = np.empty(H)
    da = np.empty(H)
    dW1 = np.empty_like(W1)
    dc1 = np.empty_like(c1)
    dgain = np.empty_like(gain)
    dshift = np.empty_like(shift)
    dW2 = np.empty_like(W2)
    dc2 = np.empty_like(c2)
    total = 0.0
    for start in range(0, N, batch):
        stop = min(start + batch, N)
        scale = 1.0 / (stop - start)
        dW1[:] = 0.0
        dc1[:] = 0.0
        dgain[:] = 0.0          # ln_backward_row accumulates into these two
        dshift[:] = 0.0
        dW2[:] = 0.0
        dc2[:] = 0.0
        for n in range(start, stop):
            i = order[n]
            x = X[i]
            mean, rstd = _forward_case(x, W1, c1, gain, shift, W2, c2, a, h, z, logits)
            # softmax cross-entropy
            mx = logits.max()
            se = 0.0
            for c in range(K):
                p[c] = math.exp(logits[c] - mx)
                se += p[c]
            for c in range(K):
                p[c] /= se
            total += -math.log(max(p[Y[i]], 1e-300))
            # backward: dlogits = (p - onehot) / batch
            p[Y[i]] -= 1.0
            for c in range(K):
                g = p[c] * scale
                dc2[c] += g
                for j in range(H):
                    dW2[c, j] += g * z[j]
            for j in range(H):
                s = 0.0
                for c in range(K):
                    s += W2[c, j] * p[c] * scale
                dz[j] = s
                dh[j] = s * (1.0 - z[j] * z[j])          # tanh'
            # LayerNorm backward: da, and dgain/dshift accumulated over the batch
            ln_backward_row(dh, a, mean, rstd, gain, da, dgain, dshift)
            for j in range(H):
                dc1[j] += da[j]
                for k in range(D):
                    dW1[j, k] += da[j] * x[k]
        W1 -= lr * dW1
        c1 -= lr * dc1
        gain -= lr * dgain
        shift -= lr * dshift
        W2 -= lr * dW2
        c2 -= lr * dc2
    return total / N


@njit(parallel=True, cache=True)
def predict(X, W1, c1, gain, shift, W2, c2, pre_ln):
    """Class of every case, cases in parallel; also stores the summed inputs ``a``."""
    N = X.shape[0]
    H = W1.shape[0]
    K = W2.shape[0]
    out = np.empty(N, dtype=np.int64)
    for i in prange(N):
        a = np.empty(H)
        h = np.empty(H)
        z = np.empty(H)
        logits = np.empty(K)
        _forward_case(X[i], W1, c1, gain, shift, W2, c2, a, h, z, logits)
        pre_ln[i] = a
        out[i] = np.argmax(logits)
    return out


def main(epochs=60, hidden=64, lr=0.5, batch=32, seed=1):
    X, Y = make_spiral(seed=0)
    X_test, Y_test = make_spiral(seed=1)          # held out: fresh noise
    rng = np.random.default_rng(seed)
    K = int(Y.max()) + 1
    W1 = rng.standard_normal((hidden, X.shape[1]))
    c1 = rng.standard_normal(hidden)
    gain = np.ones(hidden)               # gains start at 1, shifts at 0 (the paper)
    shift = np.zeros(hidden)
    W2 = rng.standard_normal((K, hidden)) / math.sqrt(hidden)
    c2 = np.zeros(K)

    t0 = time.perf_counter()
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(X))
        losses.append(train_epoch(X, Y, W1, c1, gain, shift, W2, c2, lr, batch, order))
        if epoch % 10 == 0 or epoch == epochs - 1:
            print(f"epoch {epoch:4d}  loss {losses[-1]:.4f}")
    pre_ln = np.empty((len(X), hidden))
    pred = predict(X, W1, c1, gain, shift, W2, c2, pre_ln)
    acc = float(np.mean(pred == Y))
    test_acc = float(np.mean(predict(X_test, W1, c1, gain, shift, W2, c2, np.empty((len(X_test), hidden)))
                             == Y_test))
    print(f"accuracy: train {acc:.3f}, held-out {test_acc:.3f} (chance {1 / K:.3f}); "
          f"{time.perf_counter() - t0:.1f} s incl. compile")

    # The model's LayerNorm is numba_ln's: the same numbers as the public function.
    h_model = np.empty_like(pre_ln)
    for i in range(len(X)):
        ln_forward_row(pre_ln[i], gain, shift, EPS, h_model[i])
    h_api = numba_ln.layer_norm(pre_ln, gain, shift, eps=EPS)
    assert np.allclose(h_model, h_api, rtol=1e-12, atol=1e-12)

    assert losses[-1] < 0.5 * losses[0], "the loss should at least halve"
    assert test_acc > 0.9, f"a spiral MLP with LayerNorm should reach > 0.9 held-out accuracy, got {test_acc:.3f}"
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}: trained")
    return losses, test_acc


if __name__ == "__main__":
    main()
