"""GRU and LayerNorm-GRU: a layer's forward and backward through time, and a training step.

``impl``: ``numba_ln`` is :class:`numba_ln.rnn.GRU` (and its ``Model``,
``Adam`` and ``Trainer`` for the training step); ``torch`` is PyTorch on the
CPU with as many threads as numba: the fused ``torch.nn.GRU`` for the GRU,
and for the LN-GRU the eager model with the same equations in
``numba_ln.rnn.bench.TorchLNGRU`` (``F.layer_norm`` and autograd).  Skipped
without torch, and the whole module is skipped if ``numba_ln.rnn`` is absent
(an older commit).
"""

import numpy as np

from .common import built, import_torch

#: One layer, the sizes of issue 4's comparison: T=64 steps, batch 64,
#: 32 inputs, 256 hidden units, float32.
T, B, INPUTS, HIDDEN = 64, 64, 32, 256

#: The training step: the adding problem over 64 steps, batch 64, 128 units.
TRAIN_SEQ, TRAIN_BATCH, TRAIN_HIDDEN = 64, 64, 128


def _rnn():
    try:
        from numba_ln import rnn
    except ImportError as exc:
        raise NotImplementedError(f"numba_ln.rnn is not available: {exc}") from None
    return rnn


def _torch_lngru_class():
    try:
        from numba_ln.rnn.bench import TorchLNGRU
    except ImportError as exc:
        raise NotImplementedError(f"numba_ln.rnn.bench.TorchLNGRU is not available: {exc}") from None
    if TorchLNGRU is None:
        raise NotImplementedError("torch is not installed")
    return TorchLNGRU


def _torch_model(torch, kind, input_size, hidden_size):
    if kind == "GRU":
        return torch.nn.GRU(input_size, hidden_size, dtype=torch.float32)
    return _torch_lngru_class()(input_size, hidden_size, dtype=torch.float32)


class GRULayer:
    """One layer over a whole sequence: ``forward``, and ``forward`` + ``backward`` (BPTT)."""

    params = [["GRU", "LN-GRU"], ["numba_ln", "torch"]]
    param_names = ["cell", "impl"]
    rounds = 1
    repeat = (3, 6, 2.0)
    warmup_time = 0.1

    def setup(self, cell, impl):
        self.fwd, self.step = built(("gru", cell, impl), lambda: self._build(cell, impl))

    @staticmethod
    def _build(cell, impl):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, B, INPUTS)).astype(np.float32)
        dhs = rng.standard_normal((T, B, HIDDEN)).astype(np.float32)
        if impl == "numba_ln":
            gru = _rnn().GRU(INPUTS, HIDDEN, layer_norm=cell == "LN-GRU", dtype=np.float32,
                             seed=0)

            def fwd():
                return gru.forward(x)

            def step():
                _, _, cache = gru.forward(x)
                return gru.backward(dhs, cache)
        elif impl == "torch":
            torch = import_torch()
            model = _torch_model(torch, cell, INPUTS, HIDDEN)
            xt = torch.from_numpy(x).requires_grad_()
            dhst = torch.from_numpy(dhs)

            def fwd():
                with torch.no_grad():
                    return model(xt)

            def step():
                model.zero_grad(set_to_none=True)
                xt.grad = None
                out, _ = model(xt)
                out.backward(dhst)
        else:
            raise ValueError(impl)
        fwd()
        step()
        return fwd, step

    def time_forward(self, cell, impl):
        self.fwd()

    def time_forward_backward(self, cell, impl):
        self.step()


class TrainStep:
    """One full update: batch gather, forward, loss head, BPTT, clipping, Adam.

    ``numba_ln``: ``Trainer.train_step`` of a ``Model`` (GRU + linear head,
    mean squared error) with ``Adam`` and global-norm clipping at 1.
    ``torch``: the same model, loss, clipping and optimiser in PyTorch.
    """

    params = [["GRU", "LN-GRU"], ["numba_ln", "torch"]]
    param_names = ["cell", "impl"]
    rounds = 1
    repeat = (3, 6, 2.0)
    warmup_time = 0.1

    def setup(self, cell, impl):
        self.fn = built(("train", cell, impl), lambda: self._build(cell, impl))

    @staticmethod
    def _build(cell, impl):
        rnn = _rnn()
        task = rnn.load_task("adding", seq_len=TRAIN_SEQ, n_train=16 * TRAIN_BATCH, n_val=64)
        ln = cell == "LN-GRU"
        if impl == "numba_ln":
            model = rnn.Model.for_task(task, hidden_size=TRAIN_HIDDEN, layer_norm=ln, seed=0)
            trainer = rnn.Trainer(model, task, rnn.Adam(model.params, lr=1e-3),
                                  batch_size=TRAIN_BATCH, clip=1.0, eval_every=10 ** 9,
                                  progress=False, seed=0)
            fn = trainer.train_step
        elif impl == "torch":
            torch = import_torch()
            net = _torch_model(torch, cell, task.n_inputs, TRAIN_HIDDEN)
            head = torch.nn.Linear(TRAIN_HIDDEN, task.n_outputs)
            params = list(net.parameters()) + list(head.parameters())
            opt = torch.optim.Adam(params, lr=1e-3)
            batch_rng = np.random.default_rng(0)

            def fn():
                idx = batch_rng.integers(0, task.n_train, TRAIN_BATCH)
                x, y = task.batch("train", idx, np.float32)
                xt, yt = torch.from_numpy(x), torch.from_numpy(y).reshape(TRAIN_BATCH, -1)
                opt.zero_grad(set_to_none=True)
                hs, _ = net(xt)
                loss = torch.nn.functional.mse_loss(head(hs[-1]), yt)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                return loss.item()
        else:
            raise ValueError(impl)
        fn()
        return fn

    def time_train_step(self, cell, impl):
        self.fn()
