"""Bundled training tasks: nothing is downloaded.

- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images),
  read one pixel per time step (T = 64, one input), scaled to [0, 1];
  ten-way classification from the last state.
- ``digits-permuted``: the same with the 64 pixels in one fixed random order
  (the permutation is a constant of the task, the same for every run), which
  puts spatially close pixels far apart in time.
- ``adding``: the adding problem (Hochreiter & Schmidhuber, 1997).  Each step
  holds a value drawn from U(0, 1) and a marker; exactly two steps are
  marked, one in each half of the sequence, and the target is the sum of the
  two marked values.  Predicting the constant 1 scores MSE 1/6 (the variance
  of a sum of two uniforms); the task metric is the MSE relative to that.
- ``charlm``: a character-level language model on a text file the user
  names; one-hot inputs, next-character targets at every step; the metric is
  bits per character.

:func:`load_task` builds a :class:`Task`: fixed train and validation arrays
(split with a fixed seed, so every run sees the same split), the kind of
head it needs and how to compute its metric.  :meth:`Task.batch` gathers a
batch by index into time-major arrays ``x`` (T, B, n_inputs) and targets.
"""

import math
import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Task", "TASKS", "load_task", "adding_problem"]

#: Task names accepted by :func:`load_task`.
TASKS = ("digits", "digits-permuted", "adding", "charlm")

#: Seed of every fixed choice a task makes (splits, permutation, data).
_TASK_SEED = 20160721


@dataclass
class Task:
    """A data set split into training and validation parts.

    Attributes
    ----------
    name : str
    head : {"classify", "regress", "lm"}
        Which loss head the model needs: softmax cross-entropy on the last
        state, MSE regression on the last state, or per-step cross-entropy.
    n_inputs, n_outputs : int
    seq_len : int
    x_train, y_train, x_val, y_val : ndarray
        Inputs are stored batch-major (N, T, n_inputs) in the task's dtype
        (``charlm`` stores character codes (N, T + 1) and one-hot encodes on
        the fly); targets are (N,) class indices, (N,) floats or (N, T)
        character indices.
    metric : str
        Name of the task metric (``accuracy``, ``mse_ratio``, ``bits_per_char``).
    higher_is_better : bool
        For the metric.
    info : dict
        Extra facts to report (e.g. the constant predictor's MSE).
    """

    name: str
    head: str
    n_inputs: int
    n_outputs: int
    seq_len: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    metric: str
    higher_is_better: bool
    info: dict = field(default_factory=dict)

    @property
    def n_train(self):
        """Number of training sequences."""
        return int(self.y_train.shape[0])

    @property
    def n_val(self):
        """Number of validation sequences."""
        return int(self.y_val.shape[0])

    def batch(self, split, index, dtype=np.float32):
        """Gather sequences ``index`` of ``split`` as time-major arrays.

        Parameters
        ----------
        split : {"train", "val"}
        index : int ndarray (B,)
        dtype : float32 or float64
            The dtype of ``x`` (and of regression targets).

        Returns
        -------
        x : ndarray (T, B, n_inputs), C-contiguous
        y : ndarray: (B,) labels or targets, or (T, B) next characters
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', found {split!r}")
        xs = self.x_train if split == "train" else self.x_val
        ys = self.y_train if split == "train" else self.y_val
        if self.head == "lm":
            codes = xs[index]                                   # (B, T)
            x = np.zeros((codes.shape[1], codes.shape[0], self.n_inputs), dtype)
            t_idx, b_idx = np.meshgrid(np.arange(codes.shape[1]), np.arange(codes.shape[0]),
                                       indexing="ij")
            x[t_idx, b_idx, codes.T] = 1
            return x, np.ascontiguousarray(ys[index].T)
        x = np.ascontiguousarray(xs[index].transpose(1, 0, 2), dtype=dtype)
        y = ys[index]
        if self.head == "regress":
            y = y.astype(dtype)
        return x, y

    def metric_value(self, loss, output, target):
        """The task metric of one evaluation pass.

        Parameters
        ----------
        loss : float
            Mean loss over the evaluated sequences.
        output : ndarray
            Logits (N, C) for classification; otherwise unused.
        target : ndarray
            Labels (N,) for classification; otherwise unused.
        """
        if self.head == "classify":
            return float(np.mean(np.argmax(output, axis=1) == target))
        if self.head == "regress":
            return float(loss / self.info["constant_mse"])
        return float(loss / math.log(2.0))


def _split(n, val_fraction, rng):
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), found {val_fraction!r}")
    order = rng.permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _digits(permuted, val_fraction, dtype):
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the digits tasks need scikit-learn (bundled data, no download): "
                          "pip install scikit-learn, or pip install 'numba_ln[experiments]'"
                          ) from exc
    data = load_digits()
    x = (data.images.reshape(-1, 64) / 16.0).astype(dtype)
    y = data.target.astype(np.int64)
    info = {"n_images": int(x.shape[0])}
    rng = np.random.default_rng(_TASK_SEED)
    perm = rng.permutation(64)
    if permuted:
        x = x[:, perm]
        info["permutation"] = perm.tolist()
    tr, va = _split(x.shape[0], val_fraction, rng)
    x = x[:, :, None]
    name = "digits-permuted" if permuted else "digits"
    return Task(name, "classify", 1, 10, 64, x[tr], y[tr], x[va], y[va],
                "accuracy", True, info)


def adding_problem(n, seq_len, rng, dtype=np.float32):
    """Draw ``n`` sequences of the adding problem.

    Parameters
    ----------
    n, seq_len : int
        ``seq_len >= 2``.
    rng : numpy.random.Generator
    dtype : float dtype

    Returns
    -------
    x : ndarray (n, seq_len, 2)
        Channel 0: values from U(0, 1); channel 1: the two markers.
    y : ndarray (n,)
        The sum of the two marked values.
    """
    if seq_len < 2:
        raise ValueError(f"the adding problem needs seq_len >= 2, found {seq_len}")
    values = rng.random((n, seq_len))
    half = seq_len // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, seq_len, n)
    rows = np.arange(n)
    markers = np.zeros((n, seq_len))
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=2).astype(dtype)
    y = (values[rows, first] + values[rows, second]).astype(dtype)
    return x, y


def _adding(seq_len, n_train, n_val, dtype):
    rng = np.random.default_rng(_TASK_SEED + seq_len)
    x_tr, y_tr = adding_problem(n_train, seq_len, rng, dtype)
    x_va, y_va = adding_problem(n_val, seq_len, rng, dtype)
    info = {"constant_mse": 1.0 / 6.0,
            "constant_mse_val_measured": float(np.mean((y_va.astype(np.float64) - 1.0) ** 2))}
    return Task("adding", "regress", 2, 1, seq_len, x_tr, y_tr, x_va, y_va,
                "mse_ratio", False, info)


def _charlm(path, seq_len, val_fraction):
    if path is None:
        raise ValueError("the charlm task needs a text file: pass text=PATH "
                         "(or --text PATH on the command line)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"charlm text file {path!r} does not exist")
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), found {val_fraction!r}")
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((lookup[c] for c in text), np.int64, len(text))
    n_val_chars = int(len(ids) * val_fraction)
    parts = ids[:len(ids) - n_val_chars], ids[len(ids) - n_val_chars:]
    windows = []
    for part in parts:
        n_seq = (len(part) - 1) // seq_len
        if n_seq < 1:
            raise ValueError(f"text {path!r} has {len(ids)} characters: too short for "
                             f"sequences of {seq_len} with a {val_fraction:.0%} validation "
                             f"part; use a longer text or a smaller seq_len")
        idx = np.arange(n_seq)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
        windows.append(part[idx])
    (w_tr, w_va) = windows
    info = {"vocab": "".join(vocab), "n_chars": int(len(ids)),
            "uniform_bits_per_char": math.log2(len(vocab))}
    return Task("charlm", "lm", len(vocab), len(vocab), seq_len,
                w_tr[:, :-1], w_tr[:, 1:], w_va[:, :-1], w_va[:, 1:],
                "bits_per_char", False, info)


def load_task(name, *, seq_len=None, val_fraction=0.2, n_train=10000, n_val=2000,
              text=None, dtype=np.float32):
    """Build one of the bundled tasks.

    Parameters
    ----------
    name : {"digits", "digits-permuted", "adding", "charlm"}
    seq_len : int, optional
        ``adding``: the sequence length (default 100); ``charlm``: the
        training window (default 100).  The digits tasks are always 64 steps.
    val_fraction : float, default 0.2
        Fraction held out for validation (digits, charlm).
    n_train, n_val : int
        Sizes of the adding problem's fixed training and validation sets.
    text : str, optional
        Path of the ``charlm`` text file (UTF-8).
    dtype : float32 or float64
        Dtype of the stored inputs.

    Returns
    -------
    Task
    """
    if name in ("digits", "digits-permuted"):
        if seq_len not in (None, 64):
            raise ValueError(f"the {name} task has 64 steps (one per pixel), found "
                             f"seq_len={seq_len}")
        return _digits(name == "digits-permuted", val_fraction, dtype)
    if name == "adding":
        return _adding(100 if seq_len is None else int(seq_len), int(n_train), int(n_val), dtype)
    if name == "charlm":
        return _charlm(text, 100 if seq_len is None else int(seq_len), val_fraction)
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
