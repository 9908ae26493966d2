"""Move GRU weights between PyTorch and numba_ln, and check both compute the same.

    python examples/gru_from_torch.py

``numba_ln.rnn.GRU`` (``layer_norm=False``) uses PyTorch's GRU equations and
parameter names/layout (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}``, gate rows r, z, n), so a ``torch.nn.GRU`` state dict loads
as it is, and ours loads back into PyTorch.  Needs torch; without it the
script says so and exits 0.
"""

import sys

import numpy as np

from numba_ln.rnn import GRU


def main():
    try:
        import torch
    except ImportError:
        print("torch is not installed, so there is nothing to load weights from.\n"
              "numba_ln.rnn.GRU uses torch.nn.GRU's parameter names and layout: with torch,\n"
              "  gru.load_state_dict({k: v.detach().numpy()\n"
              "                       for k, v in torch_gru.state_dict().items()})\n"
              "copies a trained torch.nn.GRU in.  Install it with: pip install torch")
        return 0

    torch.manual_seed(0)
    T, B, n_in, H, L = 12, 4, 8, 16, 2
    torch_gru = torch.nn.GRU(n_in, H, num_layers=L)  # float32, PyTorch's own initialisation

    # PyTorch -> numba_ln: the state dict's names are ours
    gru = GRU(n_in, H, num_layers=L)
    gru.load_state_dict({k: v.detach().numpy() for k, v in torch_gru.state_dict().items()})

    x = np.random.default_rng(0).standard_normal((T, B, n_in)).astype(np.float32)
    h0 = np.random.default_rng(1).standard_normal((L, B, H)).astype(np.float32)
    hs, h_last, cache = gru.forward(x, h0)

    xt = torch.from_numpy(x).requires_grad_()
    out, hn = torch_gru(xt, torch.from_numpy(h0))
    print(f"outputs : max |numba_ln - torch| = {np.abs(hs - out.detach().numpy()).max():.2e}")
    print(f"h_last  : max |numba_ln - torch| = {np.abs(h_last - hn.detach().numpy()).max():.2e}")

    # gradients too: the loss sum(hs * w)
    w = np.random.default_rng(2).standard_normal(hs.shape).astype(np.float32)
    dx, dh0, grads = gru.backward(w, cache)
    (out * torch.from_numpy(w)).sum().backward()
    print(f"dx      : max |numba_ln - torch| = {np.abs(dx - xt.grad.numpy()).max():.2e}")
    worst = max(np.abs(grads[k] - p.grad.numpy()).max() for k, p in torch_gru.named_parameters())
    print(f"weights : max |numba_ln - torch| over all parameter gradients = {worst:.2e}")

    # numba_ln -> PyTorch
    back = torch.nn.GRU(n_in, H, num_layers=L)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    same = all(torch.equal(back.state_dict()[k], torch_gru.state_dict()[k])
               for k in torch_gru.state_dict())
    print(f"weights copied back into a fresh torch.nn.GRU are identical: {same}")

    ok = (np.allclose(hs, out.detach().numpy(), rtol=1e-4, atol=1e-5)
          and np.allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-4) and same)
    print("match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
