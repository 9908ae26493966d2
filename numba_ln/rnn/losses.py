"""Output heads and their losses, with exact gradients.

Three heads sit on top of the recurrent states:

- :func:`softmax_cross_entropy`: a linear layer and softmax cross-entropy on
  one state per sequence (sequence classification on the last state);
- :func:`sequence_cross_entropy`: the same head at every time step
  (character language model), averaged over the unmasked steps;
- :func:`mean_squared_error`: a linear regression head with mean squared
  error (``(pred - target)**2`` averaged over sequences and outputs).

Each takes the hidden states, the head's ``weight`` (C, H) and ``bias`` (C,)
and the targets, and returns a :class:`HeadResult` holding the loss (a
Python float computed in float64), the gradients of that loss with respect
to the head's weight and bias and to the hidden states, and the head's
outputs (logits or predictions) for metrics.  Gradients have the dtype of
the hidden states.  The matrix products go to BLAS; softmax and the
reductions are done in float64 and stored in the states' dtype.
"""

from typing import NamedTuple

import numpy as np

__all__ = ["HeadResult", "softmax_cross_entropy", "sequence_cross_entropy",
           "mean_squared_error"]


class HeadResult(NamedTuple):
    """What a head returns.

    Attributes
    ----------
    loss : float
        The mean loss (float64).
    dh : ndarray
        Gradient of ``loss`` with respect to the hidden states given.
    dweight, dbias : ndarray
        Gradients with respect to the head's weight (C, H) and bias (C,).
    output : ndarray
        Logits (classification heads) or predictions (regression head).
    """

    loss: float
    dh: np.ndarray
    dweight: np.ndarray
    dbias: np.ndarray
    output: np.ndarray


def _check_head(h, weight, bias, ndim):
    if not isinstance(h, np.ndarray) or h.ndim != ndim:
        shape = getattr(h, "shape", None)
        raise ValueError(f"hidden states must be a {ndim}-D NumPy array, found shape {shape}")
    if h.dtype not in (np.float32, np.float64):
        raise TypeError(f"hidden states must be float32 or float64, found {h.dtype}; "
                        f"convert with h.astype(np.float32)")
    if weight.ndim != 2 or weight.shape[1] != h.shape[-1]:
        raise ValueError(f"head weight has shape {weight.shape} but the hidden size is "
                         f"{h.shape[-1]}; expected (n_outputs, {h.shape[-1]})")
    if bias.shape != (weight.shape[0],):
        raise ValueError(f"head bias has shape {bias.shape}, expected ({weight.shape[0]},)")


def _check_labels(labels, shape, n_classes):
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"labels have shape {labels.shape}, expected {shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, found {labels.dtype}; "
                        f"convert with labels.astype(np.int64)")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), found values in "
                         f"[{labels.min()}, {labels.max()}]")
    return labels


def _log_softmax_grad(logits, labels, weights):
    """Weighted mean cross-entropy of rows of ``logits`` (N, C), in float64.

    ``weights`` (N,) sums to 1 over the rows that count.  Returns the loss
    and d loss / d logits (float64).
    """
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(z.shape[0])
    logp = z[rows, labels] - np.log(s[:, 0])
    loss = -float(np.dot(weights, logp))
    g = e / s
    g[rows, labels] -= 1.0
    g *= weights[:, None]
    return loss, g


def softmax_cross_entropy(h, weight, bias, labels):
    """Linear head and softmax cross-entropy, averaged over the batch.

    Parameters
    ----------
    h : ndarray (B, H)
        One state per sequence (for classification: the last state, which a
        masked GRU carries unchanged through padded steps).
    weight : ndarray (C, H)
    bias : ndarray (C,)
    labels : int ndarray (B,)
        Class indices in ``[0, C)``.

    Returns
    -------
    HeadResult
        ``output`` is the logits (B, C); ``dh`` has shape (B, H).
    """
    _check_head(h, weight, bias, 2)
    labels = _check_labels(labels, (h.shape[0],), weight.shape[0])
    dt = h.dtype
    logits = h @ weight.T.astype(dt, copy=False) + bias.astype(dt, copy=False)
    n = h.shape[0]
    w = np.full(n, 1.0 / max(n, 1))
    loss, g = _log_softmax_grad(logits, labels, w)
    g = g.astype(dt)
    return HeadResult(loss, g @ weight.astype(dt, copy=False), (g.T @ h).astype(weight.dtype),
                      g.sum(axis=0).astype(bias.dtype), logits)


def sequence_cross_entropy(hs, weight, bias, targets, mask=None):
    """Per-step linear head and softmax cross-entropy (a language model).

    The loss is the mean over all counted (time step, sequence) pairs of
    ``-log p(target)``; divide by ``log(2)`` for bits per character.

    Parameters
    ----------
    hs : ndarray (T, B, H)
    weight : ndarray (C, H)
    bias : ndarray (C,)
    targets : int ndarray (T, B)
    mask : ndarray (T, B) of 0/1, optional
        Steps with mask 0 do not count (and get zero gradient).

    Returns
    -------
    HeadResult
        ``output`` is the logits (T, B, C); ``dh`` has shape (T, B, H).
    """
    _check_head(hs, weight, bias, 3)
    T, B, H = hs.shape
    targets = _check_labels(targets, (T, B), weight.shape[0])
    dt = hs.dtype
    flat = hs.reshape(T * B, H)
    logits = flat @ weight.T.astype(dt, copy=False) + bias.astype(dt, copy=False)
    if mask is None:
        w = np.full(T * B, 1.0 / max(T * B, 1))
    else:
        mask = np.asarray(mask)
        if mask.shape != (T, B):
            raise ValueError(f"mask has shape {mask.shape}, expected {(T, B)}")
        w = (mask.reshape(-1) != 0).astype(np.float64)
        w /= max(w.sum(), 1.0)
    loss, g = _log_softmax_grad(logits, targets.reshape(-1), w)
    g = g.astype(dt)
    dh = (g @ weight.astype(dt, copy=False)).reshape(T, B, H)
    return HeadResult(loss, dh, (g.T @ flat).astype(weight.dtype),
                      g.sum(axis=0).astype(bias.dtype), logits.reshape(T, B, -1))


def mean_squared_error(h, weight, bias, targets):
    """Linear regression head with mean squared error.

    ``loss = mean((h @ weight.T + bias - targets)**2)`` over the batch and
    the outputs.

    Parameters
    ----------
    h : ndarray (B, H)
    weight : ndarray (C, H)
    bias : ndarray (C,)
    targets : ndarray (B, C) or (B,) when C == 1

    Returns
    -------
    HeadResult
        ``output`` is the predictions with the shape of ``targets``.
    """
    _check_head(h, weight, bias, 2)
    dt = h.dtype
    B, C = h.shape[0], weight.shape[0]
    targets = np.asarray(targets)
    squeeze = targets.ndim == 1
    if squeeze:
        if C != 1:
            raise ValueError(f"targets have shape {targets.shape} but the head has {C} "
                             f"outputs; give targets of shape ({B}, {C})")
        targets = targets[:, None]
    if targets.shape != (B, C):
        raise ValueError(f"targets have shape {targets.shape}, expected ({B}, {C})")
    pred = h @ weight.T.astype(dt, copy=False) + bias.astype(dt, copy=False)
    diff = pred.astype(np.float64) - targets
    n = max(diff.size, 1)
    loss = float(np.dot(diff.ravel(), diff.ravel()) / n)
    g = (diff * (2.0 / n)).astype(dt)
    out = pred[:, 0] if squeeze else pred
    return HeadResult(loss, g @ weight.astype(dt, copy=False), (g.T @ h).astype(weight.dtype),
                      g.sum(axis=0).astype(bias.dtype), out)
