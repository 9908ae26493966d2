"""A trainable model: a GRU stack (plain or layer-normalised) and an output head.

:class:`Model` joins a :class:`numba_ln.rnn.GRU` with one of the heads of
:mod:`numba_ln.rnn.losses` and exposes what an optimiser and a trainer need:
one ``params`` dict holding every array (the GRU's own arrays, shared, plus
``head_weight`` and ``head_bias``), :meth:`Model.loss_and_grads` (forward,
loss and backpropagation through time in one call, gradients keyed like
``params``) and flattening of parameters and gradients into one vector.
"""

import numpy as np

from .losses import mean_squared_error, sequence_cross_entropy, softmax_cross_entropy

__all__ = ["Model", "HEADS"]

#: Head names: classification on the last state, regression on the last
#: state, per-step language model.
HEADS = ("classify", "regress", "lm")


def _derive_seed(seed, index):
    """An int seed for component ``index``, derived from ``seed`` (None: fresh entropy)."""
    child = np.random.SeedSequence(seed).spawn(index + 1)[index]
    return int(child.generate_state(1, np.uint32)[0])


class Model:
    """GRU layers and a linear output head with its loss.

    Parameters
    ----------
    rnn : numba_ln.rnn.GRU
        The recurrent layers (plain or ``layer_norm=True``).  Its parameter
        arrays are shared, not copied: updating ``model.params`` in place
        updates the GRU.
    n_outputs : int
        Number of classes (``classify``, ``lm``) or of regression outputs.
    head : {"classify", "regress", "lm"}, default "classify"
        ``classify``: softmax cross-entropy on the last state; ``regress``:
        mean squared error on the last state; ``lm``: softmax cross-entropy
        at every step.
    seed : int, optional
        Seeds the head's initialisation: weight uniform in
        ``+-1/sqrt(hidden_size)`` (PyTorch's ``nn.Linear``), bias zero.

    Attributes
    ----------
    params : dict of ndarray
        The GRU's parameters followed by ``head_weight`` (n_outputs, H) and
        ``head_bias`` (n_outputs,).  The GRU's entries are the GRU's own
        arrays: change them in place (optimisers, :meth:`load_state_dict`
        do); replacing ``rnn.params`` afterwards is reported as an error.
    hidden_size, input_size, num_layers : int
    dtype : numpy.dtype

    Examples
    --------
    >>> from numba_ln.rnn import GRU, Model
    >>> model = Model(GRU(1, 32, layer_norm=True, seed=0), 10, head="classify", seed=0)
    >>> x = np.random.default_rng(0).random((64, 8, 1), dtype=np.float32)  # (T, B, in)
    >>> labels = np.arange(8)
    >>> loss, grads, logits = model.loss_and_grads(x, labels)
    >>> sorted(grads) == sorted(model.params)
    True
    """

    def __init__(self, rnn, n_outputs, *, head="classify", seed=None):
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, found {head!r}")
        params = getattr(rnn, "params", None)
        if not isinstance(params, dict) or "weight_hh_l0" not in params:
            raise TypeError(f"rnn must be a numba_ln.rnn.GRU (with params['weight_hh_l0']), "
                            f"found {type(rnn).__name__}")
        n_outputs = int(n_outputs)
        if n_outputs < 1:
            raise ValueError(f"n_outputs must be >= 1, found {n_outputs}")
        self.rnn = rnn
        self.head = head
        w_hh = params["weight_hh_l0"]
        self.hidden_size = int(w_hh.shape[1])
        self.input_size = int(params["weight_ih_l0"].shape[1])
        self.num_layers = sum(1 for k in params if k.startswith("weight_hh_l"))
        self.dtype = w_hh.dtype
        self.n_outputs = n_outputs
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self.params = dict(params)
        self._rnn_keys = tuple(params)
        for name in ("head_weight", "head_bias"):
            if name in self.params:
                raise ValueError(f"the GRU already has a parameter named {name!r}")
        self.params["head_weight"] = rng.uniform(-bound, bound, (n_outputs, self.hidden_size)
                                                 ).astype(self.dtype)
        self.params["head_bias"] = np.zeros(n_outputs, self.dtype)

    @classmethod
    def for_task(cls, task, *, hidden_size=64, num_layers=1, layer_norm=False,
                 dtype=np.float32, seed=None):
        """Build a GRU or LN-GRU model sized for a :class:`~numba_ln.rnn.tasks.Task`.

        ``seed`` seeds both the GRU and the head (through independent
        streams derived from it), so equal seeds give equal models.
        """
        from .gru import GRU

        rnn = GRU(task.n_inputs, int(hidden_size), num_layers=int(num_layers),
                  layer_norm=bool(layer_norm), dtype=dtype,
                  seed=None if seed is None else _derive_seed(seed, 0))
        return cls(rnn, task.n_outputs, head=task.head,
                   seed=None if seed is None else _derive_seed(seed, 1))

    # ------------------------------------------------------------------ passes
    def _check_shared(self):
        rp = self.rnn.params
        for key in self._rnn_keys:
            if rp.get(key) is not self.params[key]:
                raise RuntimeError(
                    f"model.params[{key!r}] is no longer the GRU's array (rnn.params was "
                    f"replaced, e.g. by rnn.load_state_dict); load weights with "
                    f"Model.load_state_dict, which copies in place, and rebuild the optimiser")

    def _check_x(self, x):
        self._check_shared()
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must be a NumPy array (T, B, {self.input_size}), found "
                             f"{type(x).__name__} {getattr(x, 'shape', '')}")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the model is {self.dtype}; "
                            f"convert with x.astype(np.{self.dtype.name})")

    def _head(self, hs, y, mask):
        w, b = self.params["head_weight"], self.params["head_bias"]
        if self.head == "lm":
            return sequence_cross_entropy(hs, w, b, y, mask)
        if self.head == "classify":
            return softmax_cross_entropy(hs[-1], w, b, y)
        return mean_squared_error(hs[-1], w, b, y)

    def forward(self, x, y, mask=None, h0=None):
        """Loss and head outputs without gradients.

        Parameters
        ----------
        x : ndarray (T, B, input_size) of the model's dtype
        y : targets: (B,) labels, (B,) or (B, C) regression targets, or
            (T, B) next-step labels for ``lm``
        mask : ndarray (T, B) of 0/1, optional
            Padded steps (0) carry the state unchanged; for ``lm`` they also
            do not count in the loss.
        h0 : ndarray (num_layers, B, hidden_size), optional

        Returns
        -------
        loss : float
        output : ndarray (logits or predictions)
        """
        self._check_x(x)
        hs, _, _ = self.rnn.forward(x, h0=h0, mask=mask)
        res = self._head(hs, y, mask)
        return res.loss, res.output

    def loss_and_grads(self, x, y, mask=None, h0=None, *, return_dh0=False):
        """Loss, and its gradient for every parameter (backpropagation through time).

        Parameters are as in :meth:`forward`.

        Returns
        -------
        loss : float
        grads : dict of ndarray
            Keyed exactly like :attr:`params`.
        output : ndarray
            The head's logits or predictions.
        dx, dh0 : ndarray
            Only with ``return_dh0=True``: gradients for ``x`` and ``h0``.
        """
        self._check_x(x)
        hs, _, cache = self.rnn.forward(x, h0=h0, mask=mask)
        res = self._head(hs, y, mask)
        if self.head == "lm":
            dhs = res.dh
        else:
            dhs = np.zeros_like(hs)
            dhs[-1] = res.dh
        dx, dh0, grads = self.rnn.backward(dhs, cache)
        grads = dict(grads)
        grads["head_weight"] = res.dweight
        grads["head_bias"] = res.dbias
        if return_dh0:
            return res.loss, grads, res.output, dx, dh0
        return res.loss, grads, res.output

    # ------------------------------------------------------------- flattening
    @property
    def n_params(self):
        """Total number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    def flatten(self, arrays=None):
        """Concatenate ``arrays`` (default: the parameters) into one 1-D vector.

        The order is that of :attr:`params`; ``arrays`` (e.g. the gradients)
        must have the same keys and shapes.
        """
        arrays = self.params if arrays is None else arrays
        parts = []
        for key, p in self.params.items():
            a = np.asarray(arrays[key])
            if a.shape != p.shape:
                raise ValueError(f"{key!r} has shape {a.shape}, the parameter has {p.shape}")
            parts.append(a.ravel())
        return np.concatenate(parts)

    def set_flat(self, vector):
        """Write a vector made by :meth:`flatten` back into the parameters (in place)."""
        vector = np.asarray(vector)
        if vector.shape != (self.n_params,):
            raise ValueError(f"vector has shape {vector.shape}, the model has "
                             f"{self.n_params} parameters")
        i = 0
        for p in self.params.values():
            p[...] = vector[i:i + p.size].reshape(p.shape)
            i += p.size

    def state_dict(self):
        """Copies of the parameter arrays."""
        return {k: p.copy() for k, p in self.params.items()}

    def load_state_dict(self, state):
        """Copy saved arrays into the parameters (in place, exact).

        Keys and shapes must match :attr:`params`; everything is checked
        before anything is copied.
        """
        missing = sorted(set(self.params) - set(state))
        unexpected = sorted(set(state) - set(self.params))
        if missing or unexpected:
            raise KeyError(f"saved parameters do not match this model: missing {missing}, "
                           f"unexpected {unexpected} (hidden size, layers or layer_norm "
                           f"differ)")
        for key, p in self.params.items():
            shape = np.shape(state[key])
            if shape != p.shape:
                raise ValueError(f"saved {key!r} has shape {shape}, the model has {p.shape}")
        for key, p in self.params.items():
            p[...] = state[key]
