"""``GRU``: a (LayerNorm-)GRU layer stack with exact backpropagation through time.

No deep-learning framework: the time loops are Numba-compiled
(:mod:`numba_ln.rnn._gru_kernels`), the LayerNorms are numba_ln's own row
kernels, and the big matrix products are NumPy/BLAS.
"""

import math
import operator
import threading

import numba
import numpy as np

try:  # numba's np.dot inside the compiled time loops calls SciPy's BLAS
    import scipy.linalg.cython_blas  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("numba_ln.rnn needs SciPy: the recurrent products inside the compiled "
                      "time loops are numba np.dot calls, which use SciPy's BLAS; "
                      "install it with pip install scipy") from exc

from .._cpu import _PARALLEL_LOCK
from .._validate import as_host_array, float_dtype
from . import _gru_kernels as _k

__all__ = ["GRU"]

#: LayerNorm epsilon of the LN-GRU (as in the paper's code and PyTorch).
LN_EPS = 1e-5

#: The products over all T * B rows before and after the time loop (input
#: projections and their LayerNorms, weight and input gradients) are cut into
#: one piece per this many rows (at least one, at most ``MAX_PIECES``); the
#: pieces run in parallel above ``SERIAL_MAX_ELEMENTS`` elements (T * B * H).
#: Results depend bitwise on the number of pieces (a function of the shapes
#: only), never on the thread count.
PIECE_ROWS = 2048
MAX_PIECES = 16
SERIAL_MAX_ELEMENTS = 1 << 15


def _pieces(rows):
    return max(1, min(MAX_PIECES, rows // PIECE_ROWS))


class _BlasThreads:
    """Set the BLAS thread count for the duration of a forward or backward.

    The layer's parallelism is numba's: blocks of sequences and pieces of
    rows run on numba's threads, each calling BLAS on its own part, so BLAS
    must not start threads of its own.  Measured on this shared 2-core
    machine at T=64, B=64, H=256 (float32, forward + backward): with BLAS's
    default two threads inside a one-block time loop (numba's ``np.dot``
    calls SciPy's OpenBLAS) the GRU took 152 ms instead of 86 ms (OpenBLAS
    threads spin between calls and fight the loop for the cores).  Hence
    :attr:`GRU.blas_threads` = 1 by default; set it to None to leave BLAS as
    configured.  Uses threadpoolctl (installed with scikit-learn); without
    it BLAS is left as is.
    """

    _libs = None

    def __init__(self, n):
        self.n = n

    @classmethod
    def _find(cls):
        if cls._libs is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # pragma: no cover - optional
                cls._libs = []
            else:
                cls._libs = [lib for lib in ThreadpoolController().lib_controllers
                             if lib.user_api == "blas"]
        return cls._libs

    def __enter__(self):
        self._old = []
        if self.n is not None:
            for lib in self._find():
                old = lib.num_threads
                if old != self.n:
                    lib.set_num_threads(self.n)
                    self._old.append((lib, old))
        return self

    def __exit__(self, *exc):
        for lib, old in self._old:
            lib.set_num_threads(old)
        return False


def _positive_int(name, value):
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, found {type(value).__name__}") from None
    if v < 1:
        raise ValueError(f"{name} must be >= 1, found {v}")
    return v


def _orthogonal(rng, n):
    """A uniformly random n x n orthogonal matrix (QR of a Gaussian, signs fixed)."""
    a = rng.standard_normal((n, n))
    q, r = np.linalg.qr(a)
    return q * np.sign(np.diag(r))


class _Cache:
    """What :meth:`GRU.backward` needs from one :meth:`GRU.forward` call."""

    __slots__ = ("owner", "shape", "layers", "mask")

    def __init__(self, owner, shape, layers, mask):
        self.owner = owner
        self.shape = shape  # (T, B)
        self.layers = layers  # one dict per layer
        self.mask = mask

    def __repr__(self):
        T, B = self.shape
        return f"<GRU cache: T={T}, B={B}, {len(self.layers)} layer(s)>"


class GRU:
    """A stack of GRU or LayerNorm-GRU layers over whole sequences.

    ``forward`` runs all ``T`` steps of every layer and returns what
    ``backward`` needs; ``backward`` is exact backpropagation through time and
    returns the gradients of the inputs, of the initial state and of every
    parameter.  There is no autograd: the caller chains gradients by hand.

    Parameters
    ----------
    input_size : int
        Features of each step of ``x``.
    hidden_size : int
        ``H``, units of each layer's state.
    num_layers : int, default 1
        Stacked layers; layer ``k > 0`` reads the states of layer ``k - 1``.
    layer_norm : bool, default False
        ``False``: PyTorch's GRU.  ``True``: the paper's LayerNorm-GRU.
    dtype : float32 or float64, default float32
        Dtype of the parameters; inputs must have the same dtype.
    seed : int, numpy Generator or None
        Seeds the weight initialisation (``np.random.default_rng(seed)``);
        the same seed gives bitwise the same parameters.

    Attributes
    ----------
    params : dict of str to ndarray
        The parameters, in layer order.  Arrays may be updated in place or
        replaced by arrays of the same shape and dtype (an optimiser's step),
        but not between a ``forward`` and its ``backward``.

    Notes
    -----
    **Plain GRU** (``layer_norm=False``): PyTorch's equations and layout,
    so that ``torch.nn.GRU(...).load_state_dict`` of these arrays reproduces
    the layer (and weights move both ways, see :meth:`load_state_dict`).
    Per layer ``k``: ``weight_ih_l{k}`` (3H, in), ``weight_hh_l{k}`` (3H, H),
    ``bias_ih_l{k}`` (3H,), ``bias_hh_l{k}`` (3H,), rows in the order r, z, n::

        r  = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
        z  = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
        n  = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
        h' = (1 - z) * n + z * h

    Initialisation as PyTorch: every parameter uniform in ``+-1/sqrt(H)``.

    **LayerNorm-GRU** (``layer_norm=True``): the paper's four LayerNorms per
    step (eps 1e-5), PyTorch's gate order and update convention, no additive
    biases (the LayerNorm biases take their place).  With ``gi = x W_ih^T``
    and ``gh = h W_hh^T``::

        rz = sigmoid(LN(gi[:, :2H]; ln_ih_gates) + LN(gh[:, :2H]; ln_hh_gates))
        r, z = rz[:, :H], rz[:, H:]
        n  = tanh(LN(gi[:, 2H:]; ln_ih_cand) + r * LN(gh[:, 2H:]; ln_hh_cand))
        h' = (1 - z) * n + z * h

    Per layer ``k``: ``weight_ih_l{k}`` (3H, in), ``weight_hh_l{k}`` (3H, H),
    ``ln_ih_gates_weight_l{k}``, ``ln_ih_gates_bias_l{k}``,
    ``ln_hh_gates_weight_l{k}``, ``ln_hh_gates_bias_l{k}`` (2H each) and
    ``ln_ih_cand_weight_l{k}``, ``ln_ih_cand_bias_l{k}``,
    ``ln_hh_cand_weight_l{k}``, ``ln_hh_cand_bias_l{k}`` (H each).
    Initialisation as the paper's authors did: input weights uniform in
    ``+-0.1``; recurrent weights orthogonal, one independent random
    orthogonal H x H matrix for each of the three gate blocks; LayerNorm gains
    1 and biases 0.

    **Masks.**  ``mask[t, b] = 0`` marks step ``t`` of sequence ``b`` as
    padding: the state is carried unchanged, ``h_t = m * h' + (1 - m) * h_{t-1}``,
    so ``h_last`` is the state after each sequence's last real step.

    **Speed.**  The input projections of all steps are matrix products
    before the loop, cut into pieces of ``PIECE_ROWS`` rows that run in
    parallel; the batch is
    cut into blocks of :attr:`chunk_rows` sequences, each of which runs the
    whole time loop (its recurrent products: BLAS called from compiled code,
    and its LayerNorms) on one thread, the blocks in parallel; backward does
    the weight and input gradients as large matrix products after the loop,
    in parallel pieces again.  The LN-GRU stores only the projections and
    the states; its backward recomputes each step's LayerNorms and gates
    (less memory traffic).  Results depend on ``chunk_rows`` and on the
    shapes, never on the thread count.  Scratch buffers are kept between
    calls (keyed by shape), so one ``GRU`` object must not run two calls at
    once from different threads (a lock makes them wait).  During each call
    BLAS runs :attr:`blas_threads` threads (default 1: the parallelism is
    numba's; None leaves BLAS alone).  The matrix products use SciPy's BLAS,
    which numba's ``np.dot`` needs.

    float32 computes ``tanh`` as ``2 / (1 + exp(-2a)) - 1`` (absolute error
    below 2e-7, five times faster than libm's ``tanhf``); float64 uses
    ``np.tanh``.

    Examples
    --------
    >>> gru = GRU(3, 8, layer_norm=True, seed=0)
    >>> x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    >>> hs, h_last, cache = gru.forward(x)
    >>> hs.shape, h_last.shape
    ((5, 2, 8), (1, 2, 8))
    >>> dx, dh0, grads = gru.backward(np.ones_like(hs), cache)
    >>> sorted(grads) == sorted(gru.params)
    True
    """

    #: BLAS threads during forward and backward (None: leave BLAS alone).
    #: One is fastest on a small shared machine; see ``_BlasThreads``.
    blas_threads = 1

    #: Sequences per block of the time loops.  Each block runs all its steps
    #: on one thread (its recurrent products are one-thread BLAS calls on its
    #: rows), the blocks in parallel.  Results depend bitwise on this value
    #: (the shapes of the BLAS calls do) but never on the thread count.
    chunk_rows = 32

    def __init__(self, input_size, hidden_size, *, num_layers=1, layer_norm=False,
                 dtype=np.float32, seed=None):
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.layer_norm = bool(layer_norm)
        self.dtype = float_dtype("dtype", dtype)
        self.eps = LN_EPS
        self._work = {}
        self._lock = threading.Lock()
        self._shapes = self.param_shapes()
        self.params = self._init_params(np.random.default_rng(seed))

    # ------------------------------------------------------------------
    # parameters
    # ------------------------------------------------------------------
    def param_shapes(self):
        """``{name: shape}`` of every parameter, in layer order."""
        H = self.hidden_size
        shapes = {}
        for k in range(self.num_layers):
            n_in = self.input_size if k == 0 else H
            shapes[f"weight_ih_l{k}"] = (3 * H, n_in)
            shapes[f"weight_hh_l{k}"] = (3 * H, H)
            if self.layer_norm:
                for side in ("ih", "hh"):
                    shapes[f"ln_{side}_gates_weight_l{k}"] = (2 * H,)
                    shapes[f"ln_{side}_gates_bias_l{k}"] = (2 * H,)
                for side in ("ih", "hh"):
                    shapes[f"ln_{side}_cand_weight_l{k}"] = (H,)
                    shapes[f"ln_{side}_cand_bias_l{k}"] = (H,)
            else:
                shapes[f"bias_ih_l{k}"] = (3 * H,)
                shapes[f"bias_hh_l{k}"] = (3 * H,)
        return shapes

    def _init_params(self, rng):
        H = self.hidden_size
        params = {}
        for name, shape in self.param_shapes().items():
            if not self.layer_norm:
                bound = 1.0 / math.sqrt(H)
                value = rng.uniform(-bound, bound, shape)
            elif name.startswith("weight_ih"):
                value = rng.uniform(-0.1, 0.1, shape)
            elif name.startswith("weight_hh"):
                value = np.concatenate([_orthogonal(rng, H) for _ in range(3)], axis=0)
            elif "_weight_" in name:
                value = np.ones(shape)
            else:
                value = np.zeros(shape)
            params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        return params

    def state_dict(self):
        """A copy of :attr:`params` (``{name: ndarray}``).

        For a plain GRU, ``torch.nn.GRU(input_size, hidden_size, num_layers)
        .load_state_dict({k: torch.from_numpy(v) for k, v in
        gru.state_dict().items()})`` gives the same layer in PyTorch.
        """
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, state):
        """Copy parameters in from ``state`` (``{name: array-like}``).

        Takes NumPy arrays or anything ``np.asarray`` reads, e.g. a PyTorch
        ``state_dict()`` after ``{k: v.detach().cpu().numpy() ...}``.  Names
        and shapes must match :attr:`params` exactly; values are cast to the
        layer's dtype.
        """
        expected = self.param_shapes()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise KeyError(f"state does not match this {self._describe()}: missing {missing}, "
                           f"unexpected {unexpected}")
        new = {}
        for name, shape in expected.items():
            value = np.asarray(state[name])
            if value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape} but this {self._describe()} "
                                 f"needs {shape}")
            if value.dtype.kind not in "fiu":
                raise TypeError(f"{name} must hold real numbers, found dtype {value.dtype}")
            new[name] = np.array(value, dtype=self.dtype, order="C", copy=True)
        self.params = new

    def _describe(self):
        kind = "LN-GRU" if self.layer_norm else "GRU"
        return (f"{kind}(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"num_layers={self.num_layers})")

    def __repr__(self):
        return f"{self._describe()[:-1]}, dtype={self.dtype.name})"

    def _param(self, name):
        p = self.params.get(name)
        if p is None:
            raise KeyError(f"params has no {name!r}; it must keep every key of param_shapes()")
        shape = self._shapes[name]
        if not isinstance(p, np.ndarray) or p.shape != shape or p.dtype != self.dtype:
            found = (f"{type(p).__name__}" if not isinstance(p, np.ndarray)
                     else f"shape {p.shape}, dtype {p.dtype}")
            raise ValueError(f"params[{name!r}] must be an ndarray of shape {shape} and dtype "
                             f"{self.dtype}, found {found}")
        return np.ascontiguousarray(p)

    def _blocks(self, B):
        """Rows a block of the time loops takes, and whether the blocks run in parallel."""
        chunk = max(1, min(B, _positive_int("chunk_rows", self.chunk_rows)))
        return chunk, B > chunk and numba.get_num_threads() > 1

    # ------------------------------------------------------------------
    # scratch buffers
    # ------------------------------------------------------------------
    def _scratch(self, key, shape, dtype=None):
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        a = self._work.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = np.empty(shape, dtype)
            self._work[key] = a
        return a

    # ------------------------------------------------------------------
    # validation
    # ------------------------------------------------------------------
    def _check_array(self, name, a, shape, what):
        a = as_host_array(name, a)
        if a.ndim != len(shape) or any(e is not None and s != e for s, e in zip(a.shape, shape)):
            want = tuple("?" if e is None else e for e in shape)
            raise ValueError(f"{name} has shape {a.shape} but must be {what} {want}")
        if a.dtype != self.dtype:
            raise TypeError(f"{name} is {a.dtype} but this layer is {self.dtype}; convert with "
                            f"{name}.astype(np.{self.dtype.name}) or build the GRU with "
                            f"dtype=np.{a.dtype.name}")
        return np.ascontiguousarray(a)

    def _check_mask(self, mask, T, B):
        mask = np.asarray(mask)
        if mask.shape != (T, B):
            raise ValueError(f"mask has shape {mask.shape} but must be (T, B) = {(T, B)}, "
                             f"one 0/1 entry per step and sequence")
        if mask.dtype.kind not in "biuf":
            raise TypeError(f"mask must be boolean or numeric 0/1, found dtype {mask.dtype}")
        if mask.dtype.kind != "b":
            bad = ~((mask == 0) | (mask == 1))
            if bad.any():
                t, b = np.argwhere(bad)[0]
                raise ValueError(f"mask must hold only 0 and 1, found {mask[t, b].item()!r} at "
                                 f"[{t}, {b}]; build it e.g. as "
                                 f"(np.arange(T)[:, None] < lengths).astype(np.float32)")
        return np.ascontiguousarray(mask, dtype=self.dtype)

    # ------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------
    def forward(self, x, h0=None, mask=None):
        """Run every layer over all steps.

        Parameters
        ----------
        x : ndarray (T, B, input_size)
            The inputs, of the layer's dtype.
        h0 : ndarray (num_layers, B, hidden_size), optional
            Initial states (zeros by default).
        mask : ndarray (T, B) of 0/1 (bool or numeric), optional
            0 marks padded steps, through which each layer carries its state
            unchanged.

        Returns
        -------
        hs : ndarray (T, B, hidden_size)
            The top layer's state after every step (read-only: it is the
            same memory that ``backward`` reads).
        h_last : ndarray (num_layers, B, hidden_size)
            Every layer's state after the last step.
        cache : object
            Pass it to :meth:`backward`.
        """
        x = self._check_array("x", x, (None, None, self.input_size), "(T, B, input_size) =")
        T, B, _ = x.shape
        L, H = self.num_layers, self.hidden_size
        if h0 is None:
            h0 = np.zeros((L, B, H), self.dtype)
        else:
            h0 = self._check_array("h0", h0, (L, B, H), "(num_layers, B, hidden_size) =")
        if mask is None:
            mask_arr = np.ones((T, B), self.dtype)
        else:
            mask_arr = self._check_mask(mask, T, B)
        h_last = np.empty((L, B, H), self.dtype)
        layers = []
        inp = x
        with self._lock, _PARALLEL_LOCK, _BlasThreads(self.blas_threads):
            for k in range(L):
                states = np.empty((T + 1, B, H), self.dtype)
                states[0] = h0[k]
                if self.layer_norm:
                    layer = self._forward_ln(k, inp, mask_arr, states)
                else:
                    layer = self._forward_plain(k, inp, mask_arr, states)
                layer["x"] = inp
                layer["states"] = states
                layers.append(layer)
                h_last[k] = states[T]
                inp = states[1:]
        hs = inp.view()
        hs.flags.writeable = False
        return hs, h_last, _Cache(self, (T, B), layers, mask_arr)

    def _input(self, x, w_ih, b_ih=None):
        """``x.reshape(T*B, in) @ w_ih.T (+ b_ih)`` as a new (T, B, 3H) array."""
        T, B, n_in = x.shape
        G = w_ih.shape[0]
        gi = np.empty((T, B, G), self.dtype)
        pieces = _pieces(T * B)
        if pieces > 1 and T * B * self.hidden_size > SERIAL_MAX_ELEMENTS \
                and numba.get_num_threads() > 1:
            run = _k._input_parallel
        else:
            run = _k._input_serial
        run(pieces, x.reshape(T * B, n_in), w_ih, b_ih, gi.reshape(T * B, G))
        return gi

    def _forward_plain(self, k, x, mask, states):
        T, B, _ = x.shape
        H = self.hidden_size
        w_ih = self._param(f"weight_ih_l{k}")
        w_hh = self._param(f"weight_hh_l{k}")
        b_ih = self._param(f"bias_ih_l{k}")
        b_hh = self._param(f"bias_hh_l{k}")
        gi = self._input(x, w_ih, b_ih)
        gates = np.empty((T, B, 3 * H), self.dtype)
        hn = np.empty((T, B, H), self.dtype)
        gh = self._scratch("gh", (B, 3 * H))
        chunk, par = self._blocks(B)
        (_k._gru_forward_parallel if par else _k._gru_forward)(
            chunk, gi, w_hh, b_hh, mask, states, gates, hn, gh)
        return {"w_ih": w_ih, "w_hh": w_hh, "gates": gates, "hn": hn}

    def _forward_ln(self, k, x, mask, states):
        T, B, _ = x.shape
        H = self.hidden_size
        p = {name: self._param(f"{name}_l{k}") for name in (
            "weight_ih", "weight_hh",
            "ln_ih_gates_weight", "ln_ih_gates_bias", "ln_ih_cand_weight", "ln_ih_cand_bias",
            "ln_hh_gates_weight", "ln_hh_gates_bias", "ln_hh_cand_weight", "ln_hh_cand_bias")}
        gi = self._input(x, p["weight_ih"])
        gh = np.empty((T, B, 3 * H), self.dtype)
        chunk, par = self._blocks(B)
        (_k._lngru_forward_parallel if par else _k._lngru_forward)(
                chunk, gi, p["weight_hh"], self._ln_params(p), self.eps, mask, states, gh,
                self._scratch("lni", (B, 3 * H)), self._scratch("lnh", (B, 3 * H)))
        return {"p": p, "w_ih": p["weight_ih"], "w_hh": p["weight_hh"], "gi": gi, "gh": gh}

    @staticmethod
    def _ln_params(p):
        """The LN-GRU's eight LayerNorm parameters in the kernels' order."""
        return tuple(p[f"ln_{side}_{part}_{kind}"] for side in ("ih", "hh")
                     for part in ("gates", "cand") for kind in ("weight", "bias"))

    __call__ = forward

    # ------------------------------------------------------------------
    # backward
    # ------------------------------------------------------------------
    def backward(self, dhs, cache, dh_last=None):
        """Backpropagation through time.

        Parameters
        ----------
        dhs : ndarray (T, B, hidden_size) or None
            Gradient of the loss with respect to ``hs`` (None: zeros, e.g.
            when the loss reads only the last state).
        cache : object
            From :meth:`forward` of this layer.  It can be used any number
            of times; do not change :attr:`params` in place between
            ``forward`` and ``backward``.
        dh_last : ndarray (num_layers, B, hidden_size), optional
            Gradient with respect to ``h_last``.

        Returns
        -------
        dx : ndarray (T, B, input_size)
        dh0 : ndarray (num_layers, B, hidden_size)
        grads : dict of str to ndarray
            Gradients of the parameters, keyed exactly like :attr:`params`.
        """
        if not isinstance(cache, _Cache):
            raise TypeError(f"cache must be the third value returned by GRU.forward, "
                            f"found {type(cache).__name__}")
        if cache.owner is not self:
            raise ValueError("cache comes from a different GRU object; pass the cache returned "
                             "by this layer's forward")
        T, B = cache.shape
        L, H = self.num_layers, self.hidden_size
        if dhs is None:
            dhs = np.zeros((T, B, H), self.dtype)
        else:
            dhs = self._check_array("dhs", dhs, (T, B, H), "(T, B, hidden_size) =")
        if dh_last is None:
            dh_last = np.zeros((L, B, H), self.dtype)
        else:
            dh_last = self._check_array("dh_last", dh_last, (L, B, H),
                                        "(num_layers, B, hidden_size) =")
        grads = {}
        dh0 = np.empty((L, B, H), self.dtype)
        dcur = dhs
        with self._lock, _PARALLEL_LOCK, _BlasThreads(self.blas_threads):
            for k in reversed(range(L)):
                layer = cache.layers[k]
                if self.layer_norm:
                    dgi, dgh = self._backward_ln(k, layer, dcur, dh_last[k], cache.mask, dh0[k],
                                                 grads)
                else:
                    dgi, dgh = self._backward_plain(k, layer, dcur, dh_last[k], cache.mask,
                                                    dh0[k], grads)
                x = layer["x"]
                n_in = x.shape[2]
                rows = T * B
                pieces = _pieces(rows)
                part_ih = np.empty((pieces, 3 * H, n_in), self.dtype)
                part_hh = np.empty((pieces, 3 * H, H), self.dtype)
                if self.layer_norm:
                    part_bi = part_bh = None
                else:
                    part_bi = np.empty((pieces, 3 * H))
                    part_bh = np.empty((pieces, 3 * H))
                dx = np.empty((T, B, n_in), self.dtype)
                if pieces > 1 and rows * H > SERIAL_MAX_ELEMENTS and numba.get_num_threads() > 1:
                    run = _k._grads_parallel
                else:
                    run = _k._grads_serial
                run(pieces, dgi.reshape(rows, 3 * H), dgh.reshape(rows, 3 * H),
                    x.reshape(rows, n_in), layer["states"][:T].reshape(rows, H), layer["w_ih"],
                    dx.reshape(rows, n_in), part_ih, part_hh, part_bi, part_bh)
                grads[f"weight_ih_l{k}"] = np.empty((3 * H, n_in), self.dtype)
                grads[f"weight_hh_l{k}"] = np.empty((3 * H, H), self.dtype)
                _k._sum_parts(part_ih, grads[f"weight_ih_l{k}"])
                _k._sum_parts(part_hh, grads[f"weight_hh_l{k}"])
                if not self.layer_norm:
                    grads[f"bias_ih_l{k}"] = np.empty(3 * H, self.dtype)
                    grads[f"bias_hh_l{k}"] = np.empty(3 * H, self.dtype)
                    _k._sum_rows(part_bi, grads[f"bias_ih_l{k}"])
                    _k._sum_rows(part_bh, grads[f"bias_hh_l{k}"])
                dcur = dx
        return dcur, dh0, {name: grads[name] for name in self.params}

    def _backward_plain(self, k, layer, dhs, dh_last, mask, dh0, grads):
        T, B, H = dhs.shape
        dgi = self._scratch("dgi", (T, B, 3 * H))
        dgh = self._scratch("dgh", (T, B, 3 * H))
        carry = self._scratch("carry", (B, H))
        tmp = self._scratch("tmp", (B, H))
        chunk, par = self._blocks(B)
        w_hh_t = np.ascontiguousarray(layer["w_hh"].T)   # rows of W_hh^T: see _k._rec
        (_k._gru_backward_parallel if par else _k._gru_backward)(
                chunk, dhs, dh_last, w_hh_t, mask, layer["states"], layer["gates"],
                layer["hn"], dgi, dgh, carry, tmp, dh0)
        return dgi, dgh

    def _backward_ln(self, k, layer, dhs, dh_last, mask, dh0, grads):
        T, B, H = dhs.shape
        p = layer["p"]
        dgi = self._scratch("dgi", (T, B, 3 * H))
        dgh = self._scratch("dgh", (T, B, 3 * H))
        carry = self._scratch("carry", (B, H))
        tmp = self._scratch("tmp", (B, H))
        dln = self._scratch("dln", (B, 4 * H))
        chunk, par = self._blocks(B)
        n_blocks = -(-B // chunk)
        pw = self._scratch("pw", (n_blocks, 6 * H), np.float64)
        pb = self._scratch("pb", (n_blocks, 6 * H), np.float64)
        w_hh_t = np.ascontiguousarray(p["weight_hh"].T)   # rows of W_hh^T: see _k._rec
        (_k._lngru_backward_parallel if par else _k._lngru_backward)(
                chunk, dhs, dh_last, w_hh_t, mask, layer["states"], layer["gi"],
                layer["gh"], self._ln_params(p), self.eps, dgi, dgh, carry, tmp,
                self._scratch("lni", (B, 3 * H)), self._scratch("lnh", (B, 3 * H)), dln, pw, pb,
                dh0)
        dw = np.empty(6 * H, self.dtype)
        db = np.empty(6 * H, self.dtype)
        _k._sum_rows(pw, dw)
        _k._sum_rows(pb, db)
        cols = {"ih_gates": (0, 2 * H), "ih_cand": (2 * H, 3 * H),
                "hh_gates": (3 * H, 5 * H), "hh_cand": (5 * H, 6 * H)}
        for part, (a, b) in cols.items():
            grads[f"ln_{part}_weight_l{k}"] = dw[a:b].copy()
            grads[f"ln_{part}_bias_l{k}"] = db[a:b].copy()
        return dgi, dgh
