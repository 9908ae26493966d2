"""Train a LayerNorm-GRU classifier from plain NumPy arrays, no framework.

The data: scikit-learn's bundled 8x8 digits, read one pixel per time step
(64 steps, one input per step).  Any (T, B, n_inputs) float32 array works
the same way.  Runs in well under a minute on two cores.

    python examples/train_ln_gru.py
"""

import numpy as np
from sklearn.datasets import load_digits

from numba_ln.rnn import GRU, Adam, Model, clip_grad_norm

digits = load_digits()
X = (digits.images.reshape(-1, 64) / 16).astype(np.float32)    # (N, 64)
y = digits.target
train, val = np.arange(0, 1400), np.arange(1400, len(y))

# An LN-GRU with 64 units and a 10-way softmax head on its last state.
model = Model(GRU(1, 64, layer_norm=True, seed=0), 10, head="classify", seed=0)
opt = Adam(model.params, lr=3e-3)
rng = np.random.default_rng(0)

for step in range(1, 301):
    idx = rng.choice(train, 32, replace=False)
    x = np.ascontiguousarray(X[idx].T[:, :, None])          # time-major (T, B, 1)
    loss, grads, _ = model.loss_and_grads(x, y[idx])         # forward + exact BPTT
    clip_grad_norm(grads, 1.0)
    opt.step(grads)                                          # updates model.params in place
    if step % 50 == 0:
        xv = np.ascontiguousarray(X[val].T[:, :, None])
        val_loss, logits = model.forward(xv, y[val])
        acc = np.mean(np.argmax(logits, axis=1) == y[val])
        print(f"step {step:4d}  train loss {loss:.3f}  val loss {val_loss:.3f}  "
              f"val accuracy {acc:.3f}")
