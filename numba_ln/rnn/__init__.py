"""Recurrent networks without a deep-learning framework.

- :class:`GRU`: GRU and LayerNorm-GRU layer stacks with exact
  backpropagation through time (Numba time loops; every LayerNorm is one of
  numba_ln's row kernels).
- Training: output heads and losses (:mod:`~numba_ln.rnn.losses`), optimisers
  and gradient clipping (:mod:`~numba_ln.rnn.optim`), bundled tasks
  (:mod:`~numba_ln.rnn.tasks`), :class:`Model` (GRU layers plus a head) and
  :class:`Trainer` (batching, validation, progress, checkpoints).
"""

from .gru import GRU
from .losses import mean_squared_error, sequence_cross_entropy, softmax_cross_entropy
from .model import Model
from .optim import SGD, Adam, clip_grad_norm
from .tasks import TASKS, Task, load_task
from .trainer import Trainer

__all__ = ["GRU"]
__all__ += ["Model", "Trainer", "SGD", "Adam", "clip_grad_norm", "load_task", "Task", "TASKS",
            "softmax_cross_entropy", "sequence_cross_entropy", "mean_squared_error"]
