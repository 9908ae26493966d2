"""Training loop: batching, validation, progress, checkpoints, reproducibility.

:class:`Trainer` trains a :class:`~numba_ln.rnn.model.Model` on a
:class:`~numba_ln.rnn.tasks.Task` with an optimiser from
:mod:`numba_ln.rnn.optim`:

- batches are drawn epoch by epoch from a permutation of the training set
  made by the trainer's own ``numpy.random.Generator`` (seeded by ``seed``),
  the last incomplete batch of an epoch dropped;
- at step 0 and every ``eval_every`` steps it evaluates the whole
  validation set and appends a record to ``history``
  (step, training seconds, mean training loss since the previous record,
  validation loss, the task metric);
- ``progress=True`` draws a one-line progress bar on stderr with the loss
  and speed;
- :meth:`Trainer.save_checkpoint` writes parameters, optimiser state, the
  generator's state, the epoch order and position, the step and the history
  to one ``.npz``; :meth:`Trainer.load_checkpoint` restores them exactly, so
  a resumed run is bitwise the run that never stopped;
- a non-finite loss or gradient norm raises :class:`FloatingPointError`
  naming the step.

Reproducibility: with the same seed, data, model, optimiser and thread
count the run is bitwise the same (no reduction here depends on timing).
``wall_time`` counts training seconds only: evaluation and checkpointing
are left out.
"""

import json
import math
import os
import sys
import time

import numpy as np

from .optim import clip_grad_norm, global_norm

__all__ = ["Trainer", "ProgressBar"]


class ProgressBar:
    """A one-line progress bar on a text stream (stderr by default).

    Redrawn at most ``min_interval`` seconds apart, with ``\\r``; shows the
    step, a bar, the latest loss values and the speed in steps per second.
    """

    def __init__(self, total, *, label="", stream=None, width=24, min_interval=0.2):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.min_interval = min_interval
        self._last = -math.inf
        self._shown = False

    def update(self, step, speed, **values):
        """Redraw (throttled) at ``step`` with ``speed`` steps/s and named values."""
        now = time.perf_counter()
        if step < self.total and now - self._last < self.min_interval:
            return
        self._last = now
        frac = min(step / self.total, 1.0)
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        vals = " ".join(f"{k} {v:.4g}" for k, v in values.items()
                        if v is not None and not (isinstance(v, float) and math.isnan(v)))
        eta = (self.total - step) / speed if speed > 0 else math.inf
        eta_s = f"{eta:5.0f}s" if math.isfinite(eta) else "    ?"
        line = (f"\r{self.label}{step:>6}/{self.total} [{bar}] {vals} "
                f"| {speed:6.1f} it/s eta {eta_s}")
        self.stream.write(line.ljust(100))
        self.stream.flush()
        self._shown = True

    def close(self):
        """End the line."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


class Trainer:
    """Train a model on a task.

    Parameters
    ----------
    model : numba_ln.rnn.Model
    task : numba_ln.rnn.tasks.Task
    optimizer : SGD or Adam
        Built on ``model.params``.
    batch_size : int, default 32
    clip : float or None, default 1.0
        Global-norm gradient clipping threshold (None: no clipping).
    eval_every : int, default 100
        Evaluate the validation set every this many steps.
    eval_batch_size : int, default 256
    seed : int, default 0
        Seeds the batch order.  (The model's initialisation has its own seed.)
    progress : bool, optional
        Draw a progress bar on stderr; default: when stderr is a terminal.
    label : str, default ""
        Shown in front of the progress bar.

    Attributes
    ----------
    step : int
        Updates done so far.
    history : list of dict
        One record per evaluation: ``step``, ``wall_time``, ``train_loss``,
        ``val_loss`` and the task's metric under its name (``accuracy``,
        ``mse_ratio`` or ``bits_per_char``).

    Examples
    --------
    >>> from numba_ln.rnn import Adam, Model, Trainer, load_task
    >>> task = load_task("digits-permuted")
    >>> model = Model.for_task(task, hidden_size=64, layer_norm=True, seed=0)
    >>> trainer = Trainer(model, task, Adam(model.params, lr=3e-3), seed=0)
    >>> history = trainer.train(500)
    """

    def __init__(self, model, task, optimizer, *, batch_size=32, clip=1.0, eval_every=100,
                 eval_batch_size=256, seed=0, progress=None, label=""):
        if set(optimizer.params) != set(model.params):
            raise ValueError("the optimiser must be built on model.params (its keys differ)")
        for key, p in model.params.items():
            if optimizer.params[key] is not p:
                raise ValueError(f"the optimiser's {key!r} is not the model's array: build the "
                                 f"optimiser on model.params")
        if model.head != task.head:
            raise ValueError(f"the model's head is {model.head!r} but task {task.name!r} needs "
                             f"{task.head!r}; build it with Model.for_task(task, ...)")
        if model.input_size != task.n_inputs:
            raise ValueError(f"the model takes {model.input_size} inputs per step, task "
                             f"{task.name!r} gives {task.n_inputs}")
        batch_size = int(batch_size)
        if not 1 <= batch_size <= task.n_train:
            raise ValueError(f"batch_size must be in [1, {task.n_train}] (the training set "
                             f"size), found {batch_size}")
        if int(eval_every) < 1:
            raise ValueError(f"eval_every must be >= 1, found {eval_every}")
        if clip is not None and not clip > 0:
            raise ValueError(f"clip must be > 0 or None, found {clip!r}")
        self.model = model
        self.task = task
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.clip = None if clip is None else float(clip)
        self.eval_every = int(eval_every)
        self.eval_batch_size = int(eval_batch_size)
        self.seed = int(seed)
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.label = label
        self.rng = np.random.default_rng(self.seed)
        self.step = 0
        self.wall_time = 0.0
        self.history = []
        self._order = np.zeros(0, np.int64)
        self._pos = 0
        self._loss_sum = 0.0
        self._loss_count = 0

    # ---------------------------------------------------------------- batches
    def _next_index(self):
        """Indices of the next training batch (a new permutation each epoch)."""
        if self._pos + self.batch_size > self._order.shape[0]:
            self._order = self.rng.permutation(self.task.n_train)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    # --------------------------------------------------------------- evaluate
    def evaluate(self, split="val"):
        """Mean loss and the task metric over a whole split.

        Returns
        -------
        dict
            ``{"loss": float, METRIC: float}``.
        """
        n = self.task.n_val if split == "val" else self.task.n_train
        total = 0.0
        outputs = []
        for start in range(0, n, self.eval_batch_size):
            idx = np.arange(start, min(start + self.eval_batch_size, n))
            x, y = self.task.batch(split, idx, self.model.dtype)
            loss, out = self.model.forward(x, y)
            total += loss * idx.shape[0]
            if self.task.head == "classify":
                outputs.append(out)
        loss = total / n
        ys = self.task.y_val if split == "val" else self.task.y_train
        out = np.concatenate(outputs) if outputs else None
        return {"loss": loss, self.task.metric: self.task.metric_value(loss, out, ys)}

    def _record(self):
        res = self.evaluate("val")
        if not math.isfinite(res["loss"]):
            raise FloatingPointError(f"validation loss is {res['loss']} after step {self.step}; "
                                     f"lower the learning rate or clip gradients")
        train_loss = self._loss_sum / self._loss_count if self._loss_count else math.nan
        rec = {"step": self.step, "wall_time": self.wall_time, "train_loss": train_loss,
               "val_loss": res["loss"], self.task.metric: res[self.task.metric]}
        self.history.append(rec)
        self._loss_sum = 0.0
        self._loss_count = 0
        return rec

    # ------------------------------------------------------------------ train
    def train_step(self):
        """One update on the next batch; returns the batch loss (before the update)."""
        step = self.step + 1
        x, y = self.task.batch("train", self._next_index(), self.model.dtype)
        loss, grads, _ = self.model.loss_and_grads(x, y)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss} at step {step}: the run diverged; lower the "
                f"learning rate (now {self.optimizer.lr:g}), clip gradients (clip="
                f"{self.clip}), or resume from an earlier checkpoint")
        norm = clip_grad_norm(grads, self.clip) if self.clip is not None else global_norm(grads)
        if not math.isfinite(norm):
            raise FloatingPointError(
                f"gradient norm became {norm} at step {step} (loss {loss:.6g}); lower the "
                f"learning rate or clip gradients")
        self.optimizer.step(grads)
        self.step = step
        self._loss_sum += loss
        self._loss_count += 1
        return loss

    def train(self, steps, *, checkpoint=None, checkpoint_every=None, on_record=None):
        """Train until ``self.step == steps``.

        Parameters
        ----------
        steps : int
            The total number of updates (a resumed trainer continues from
            its saved step up to this number).  Evaluations happen at the
            multiples of ``eval_every`` only, so that where a run was
            stopped and resumed never changes its history: choose ``steps``
            a multiple of ``eval_every`` to end with an evaluation.
        checkpoint : str, optional
            Path of a checkpoint file written every ``checkpoint_every``
            steps and at the end.
        checkpoint_every : int, optional
            Defaults to ``eval_every``.
        on_record : callable, optional
            Called with each new history record.

        Returns
        -------
        list of dict
            ``self.history``.
        """
        steps = int(steps)
        if steps < self.step:
            raise ValueError(f"steps={steps} is below the trainer's current step {self.step}")
        if checkpoint is not None and checkpoint_every is None:
            checkpoint_every = self.eval_every
        bar = ProgressBar(steps, label=self.label) if self.progress else None
        last = self.history[-1] if self.history else None
        try:
            if not self.history:
                last = self._record()
                if on_record is not None:
                    on_record(last)
            while self.step < steps:
                t0 = time.perf_counter()
                loss = self.train_step()
                self.wall_time += time.perf_counter() - t0
                if self.step % self.eval_every == 0:
                    last = self._record()
                    if on_record is not None:
                        on_record(last)
                if checkpoint is not None and (self.step % checkpoint_every == 0
                                               or self.step == steps):
                    self.save_checkpoint(checkpoint)
                if bar is not None:
                    speed = self.step / self.wall_time if self.wall_time > 0 else 0.0
                    bar.update(self.step, speed, loss=loss,
                               val=last["val_loss"] if last else None)
        finally:
            if bar is not None:
                bar.close()
        return self.history

    # ------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path):
        """Write the whole training state to ``path`` (``.npz``, atomically)."""
        arrays = {f"param/{k}": v for k, v in self.model.state_dict().items()}
        arrays.update({f"optim/{k}": v for k, v in self.optimizer.state_dict().items()})
        meta = {"step": self.step, "wall_time": self.wall_time, "pos": self._pos,
                "loss_sum": self._loss_sum, "loss_count": self._loss_count,
                "seed": self.seed, "batch_size": self.batch_size, "task": self.task.name,
                "optimizer": type(self.optimizer).__name__,
                "rng": self.rng.bit_generator.state, "history": self.history}
        arrays["order"] = self._order
        arrays["meta"] = np.array(json.dumps(meta))
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)

    def load_checkpoint(self, path):
        """Restore the state written by :meth:`save_checkpoint` (exactly).

        The trainer must have been built like the one that saved it (same
        model shapes, optimiser type, task and batch size).
        """
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            for key in ("task", "batch_size", "optimizer"):
                mine = {"task": self.task.name, "batch_size": self.batch_size,
                        "optimizer": type(self.optimizer).__name__}[key]
                if meta[key] != mine:
                    raise ValueError(f"checkpoint {path!r} was saved with {key}={meta[key]!r}, "
                                     f"this trainer has {key}={mine!r}")
            self.model.load_state_dict({k[6:]: f[k] for k in f.files if k.startswith("param/")})
            self.optimizer.load_state_dict({k[6:]: f[k] for k in f.files
                                            if k.startswith("optim/")})
            self._order = f["order"].astype(np.int64)
        self.step = int(meta["step"])
        self.wall_time = float(meta["wall_time"])
        self._pos = int(meta["pos"])
        self._loss_sum = float(meta["loss_sum"])
        self._loss_count = int(meta["loss_count"])
        self.seed = int(meta["seed"])
        self.rng.bit_generator.state = meta["rng"]
        self.history = [dict(r) for r in meta["history"]]
        return self
