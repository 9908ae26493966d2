"""Optimisers (SGD with momentum, Adam) and global-norm gradient clipping.

Optimisers update a dict of NumPy parameter arrays in place from a dict of
gradients with the same keys.  The update rules are PyTorch's
(``torch.optim.SGD`` and ``torch.optim.Adam``), written out below, so results
can be compared step by step.  ``state_dict()`` returns a flat dict of NumPy
arrays (ready for ``np.savez``) and ``load_state_dict`` restores it exactly,
so a resumed run continues bitwise as if it had never stopped.

Arithmetic stays in the parameters' dtype (float32 parameters get float32
moments); the learning rate and other hyperparameters are Python floats,
which NumPy keeps at the arrays' precision.
"""

import math

import numpy as np

__all__ = ["SGD", "Adam", "clip_grad_norm", "global_norm"]


def global_norm(grads):
    """The L2 norm of all gradients together, as a float64.

    Parameters
    ----------
    grads : dict of ndarray

    Returns
    -------
    float
        ``sqrt(sum over arrays of sum(g**2))``; NaN or Inf when a gradient is.
    """
    total = 0.0
    for key in sorted(grads):
        g = np.asarray(grads[key]).ravel().astype(np.float64, copy=False)
        total += float(np.dot(g, g))
    return math.sqrt(total)


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so that their global norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: with ``norm`` the global norm, each
    gradient is multiplied by ``max_norm / (norm + 1e-6)`` when that is below 1.

    Parameters
    ----------
    grads : dict of ndarray
        Modified in place.
    max_norm : float
        Positive.

    Returns
    -------
    float
        The global norm before clipping (check it for NaN/Inf).
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, found {max_norm!r}")
    norm = global_norm(grads)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return norm


class _Optimizer:
    """Shared bookkeeping: parameter dict, step count, state (de)serialisation."""

    _slots = ()

    def __init__(self, params, lr):
        if not isinstance(params, dict) or not params:
            raise TypeError("params must be a non-empty dict of NumPy arrays, "
                            f"found {type(params).__name__}")
        for key, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"parameter {key!r} must be a float32 or float64 NumPy array, "
                                f"found {type(p).__name__} {getattr(p, 'dtype', '')}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, found {lr!r}")
        self.params = params
        self.lr = float(lr)
        self.step_count = 0
        self.state = {slot: {k: np.zeros_like(p) for k, p in params.items()}
                      for slot in self._slots}

    def _check_grads(self, grads):
        if set(grads) != set(self.params):
            missing = sorted(set(self.params) - set(grads))
            extra = sorted(set(grads) - set(self.params))
            raise KeyError(f"gradients must have the parameters' keys; missing {missing}, "
                           f"unexpected {extra}")
        for key, g in grads.items():
            if g.shape != self.params[key].shape:
                raise ValueError(f"gradient {key!r} has shape {g.shape}, parameter has "
                                 f"{self.params[key].shape}")

    def step(self, grads):
        """Apply one update to the parameters (in place) from ``grads``."""
        self._check_grads(grads)
        self.step_count += 1
        for key in sorted(self.params):
            self._update(key, self.params[key], grads[key])

    def state_dict(self):
        """Optimiser state as a flat dict of NumPy arrays (for ``np.savez``)."""
        out = {"step_count": np.array(self.step_count, np.int64),
               "lr": np.array(self.lr, np.float64)}
        for slot, arrays in self.state.items():
            for key, a in arrays.items():
                out[f"{slot}/{key}"] = a.copy()
        return out

    def load_state_dict(self, state):
        """Restore the state saved by :meth:`state_dict` (exactly)."""
        for slot, arrays in self.state.items():     # check everything, then copy
            for key, a in arrays.items():
                name = f"{slot}/{key}"
                if name not in state:
                    raise KeyError(f"optimiser state has no {name!r}: it was saved by a "
                                   f"different optimiser or model")
                if np.shape(state[name]) != a.shape:
                    raise ValueError(f"optimiser state {name!r} has shape "
                                     f"{np.shape(state[name])}, expected {a.shape}")
        self.step_count = int(state["step_count"])
        self.lr = float(state["lr"])
        for slot, arrays in self.state.items():
            for key, a in arrays.items():
                a[...] = state[f"{slot}/{key}"]


class SGD(_Optimizer):
    """Stochastic gradient descent with (optionally Nesterov) momentum.

    PyTorch's rule: ``g = grad + weight_decay * p``; ``v = momentum * v + g``
    (``v = g`` at the first step); ``p -= lr * v``, or with Nesterov
    ``p -= lr * (g + momentum * v)``.

    Parameters
    ----------
    params : dict of ndarray
        Updated in place.
    lr : float
    momentum : float, default 0.9
    nesterov : bool, default False
    weight_decay : float, default 0
    """

    _slots = ("momentum",)

    def __init__(self, params, lr, momentum=0.9, *, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), found {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def _update(self, key, p, grad):
        g = grad if self.weight_decay == 0 else grad + self.weight_decay * p
        if self.momentum == 0:
            p -= self.lr * g
            return
        v = self.state["momentum"][key]
        if self.step_count == 1:
            v[...] = g
        else:
            v *= self.momentum
            v += g
        if self.nesterov:
            p -= self.lr * (g + self.momentum * v)
        else:
            p -= self.lr * v


class Adam(_Optimizer):
    """Adam (Kingma & Ba), PyTorch's rule.

    ``m = b1 * m + (1 - b1) * g``; ``v = b2 * v + (1 - b2) * g**2``;
    ``p -= lr / (1 - b1**t) * m / (sqrt(v / (1 - b2**t)) + eps)`` at step ``t``.

    Parameters
    ----------
    params : dict of ndarray
        Updated in place.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0
        Added to the gradient (L2, as ``torch.optim.Adam``).
    """

    _slots = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, *, weight_decay=0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), found {betas!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, found {eps!r}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def _update(self, key, p, grad):
        b1, b2 = self.betas
        t = self.step_count
        g = grad if self.weight_decay == 0 else grad + self.weight_decay * p
        m = self.state["exp_avg"][key]
        v = self.state["exp_avg_sq"][key]
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        step_size = self.lr / (1.0 - b1 ** t)
        denom = np.sqrt(v) / math.sqrt(1.0 - b2 ** t)
        denom += self.eps
        p -= step_size * (m / denom)
