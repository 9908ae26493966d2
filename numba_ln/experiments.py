"""Run GRU vs LN-GRU learning-curve experiments and summarise them honestly.

Command line::

    python -m numba_ln.experiments --task digits-permuted --cells gru,ln-gru \\
        --seeds 3 --steps 1500 --out runs/digits

writes

- ``OUT/curves.csv``: one row per evaluation: step, wall_time (training
  seconds, evaluation excluded), cell, seed, train_loss (mean over the
  steps since the previous row), val_loss and the task's metric;
- ``OUT/curves.png``: the mean over seeds with a band from the lowest to the
  highest seed, one colour per cell (validation loss against steps and
  against seconds, and the task metric);
- ``OUT/summary.md`` and ``OUT/summary.json`` (also printed): each cell's
  final metrics, and the steps and seconds each cell needs to reach the
  baseline's (the first cell's) best validation loss: the paper's "percent
  of the time" figure, or "never reached".

Every (cell, seed) run uses the same seed for the batch order and the
initialisation, so the cells see the same batches.  Cells alternate their
order from seed to seed, and each cell's kernels are compiled before its
clock starts, so compilation and drifting machine load do not favour one.
"""

import argparse
import csv
import json
import math
import os
import sys

import numpy as np

__all__ = ["CELLS", "run_experiment", "summarize", "format_summary", "plot_curves", "main"]

#: Cell names and the GRU options they stand for.
CELLS = {"gru": dict(layer_norm=False), "ln-gru": dict(layer_norm=True)}


def _make_optimizer(name, params, lr, momentum):
    from .rnn.optim import SGD, Adam

    if name == "adam":
        return Adam(params, lr=lr)
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', found {name!r}")


def _warm_up(task, cell, hidden_size, num_layers, dtype, batch_size):
    """Compile a cell's kernels before timing it.

    The batch has the training batch size, so the same (serial or parallel)
    drivers compile as the timed steps will use.
    """
    from .rnn.model import Model

    model = Model.for_task(task, hidden_size=hidden_size, num_layers=num_layers,
                           dtype=dtype, seed=0, **CELLS[cell])
    x, y = task.batch("train", np.arange(min(batch_size, task.n_train)), model.dtype)
    model.loss_and_grads(x, y)
    model.forward(x, y)


def run_experiment(task="digits-permuted", cells=("gru", "ln-gru"), seeds=3, steps=1000,
                   out=None, *, hidden_size=64, num_layers=1, batch_size=32,
                   optimizer="adam", lr=3e-3, momentum=0.9, clip=1.0, eval_every=50,
                   seq_len=None, text=None, dtype=np.float32, progress=None, log=print):
    """Train every cell with every seed on one task; write curves, plot and summary.

    Parameters
    ----------
    task : str
        A name from :data:`numba_ln.rnn.tasks.TASKS`.
    cells : sequence of str
        From :data:`CELLS`; the first is the baseline of the summary.
    seeds : int
        Seeds ``0 .. seeds-1``.
    steps : int
        Updates per run.
    out : str, optional
        Output folder (created); None writes nothing.
    hidden_size, num_layers, batch_size, optimizer, lr, momentum, clip, eval_every
        Model and training settings, the same for every cell.
    seq_len, text
        Task options (``adding`` length; ``charlm`` window and text file).
    dtype : float32 or float64
    progress : bool, optional
        Progress bars on stderr (default: when stderr is a terminal).
    log : callable or None
        Where the summary and one line per finished run go.

    Returns
    -------
    dict
        The summary (see :func:`summarize`), with ``rows`` (the curves).
    """
    from .rnn.model import Model
    from .rnn.tasks import load_task
    from .rnn.trainer import Trainer

    cells = list(cells)
    unknown = [c for c in cells if c not in CELLS]
    if unknown or not cells:
        raise ValueError(f"unknown cells {unknown}; choose from {', '.join(CELLS)}")
    if int(seeds) < 1 or int(steps) < 1:
        raise ValueError(f"seeds and steps must be >= 1, found seeds={seeds}, steps={steps}")
    if int(steps) % int(eval_every):
        raise ValueError(f"steps ({steps}) must be a multiple of eval_every ({eval_every}) so "
                         f"that every run ends with an evaluation")
    dtype = np.dtype(dtype)
    the_task = load_task(task, seq_len=seq_len, text=text, dtype=dtype)
    settings = dict(task=task, cells=cells, seeds=int(seeds), steps=int(steps),
                    hidden_size=int(hidden_size), num_layers=int(num_layers),
                    batch_size=int(batch_size), optimizer=optimizer, lr=float(lr),
                    clip=clip, eval_every=int(eval_every), seq_len=the_task.seq_len,
                    dtype=dtype.name, n_train=the_task.n_train, n_val=the_task.n_val,
                    metric=the_task.metric)
    if optimizer == "sgd":
        settings["momentum"] = momentum
    for cell in cells:
        _warm_up(the_task, cell, hidden_size, num_layers, dtype, int(batch_size))
    rows = []
    for seed in range(int(seeds)):
        order = cells if seed % 2 == 0 else cells[::-1]
        for cell in order:
            model = Model.for_task(the_task, hidden_size=hidden_size, num_layers=num_layers,
                                   dtype=dtype, seed=seed, **CELLS[cell])
            opt = _make_optimizer(optimizer, model.params, lr, momentum)
            trainer = Trainer(model, the_task, opt, batch_size=batch_size, clip=clip,
                              eval_every=eval_every, seed=seed, progress=progress,
                              label=f"{cell:>6} seed {seed} ")
            history = trainer.train(steps)
            for rec in history:
                rows.append({"step": rec["step"], "wall_time": rec["wall_time"], "cell": cell,
                             "seed": seed, "train_loss": rec["train_loss"],
                             "val_loss": rec["val_loss"],
                             the_task.metric: rec[the_task.metric]})
            if log is not None:
                last = history[-1]
                log(f"{cell} seed {seed}: val_loss {last['val_loss']:.4f} "
                    f"{the_task.metric} {last[the_task.metric]:.4f} "
                    f"({last['wall_time']:.1f} s training)")
    summary = summarize(rows, settings, the_task.metric, the_task.higher_is_better,
                        info=the_task.info)
    if out is not None:
        os.makedirs(out, exist_ok=True)
        write_csv(rows, os.path.join(out, "curves.csv"), the_task.metric)
        plot_curves(rows, os.path.join(out, "curves.png"), cells, the_task.metric,
                    title=f"{task}: {', '.join(cells)}, {seeds} seeds, hidden "
                          f"{hidden_size}, batch {batch_size}, {optimizer} lr {lr:g}")
        text_md = format_summary(summary)
        with open(os.path.join(out, "summary.md"), "w") as f:
            f.write(text_md)
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=_json_default)
    if log is not None:
        log(format_summary(summary))
    summary["rows"] = rows
    return summary


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o).__name__)


def write_csv(rows, path, metric):
    """Write the curve rows to ``path``."""
    fields = ["step", "wall_time", "cell", "seed", "train_loss", "val_loss", metric]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                        for k in fields})


def _curves(rows, cell, key):
    """(steps, matrix seeds x steps) of ``key`` for one cell."""
    seeds = sorted({r["seed"] for r in rows if r["cell"] == cell})
    by_seed = {s: sorted((r for r in rows if r["cell"] == cell and r["seed"] == s),
                         key=lambda r: r["step"]) for s in seeds}
    steps = [r["step"] for r in by_seed[seeds[0]]]
    mat = np.array([[r[key] for r in by_seed[s]] for s in seeds], dtype=np.float64)
    return np.array(steps), mat


def summarize(rows, settings, metric, higher_is_better, info=None):
    """Final metrics of each cell and the time each needs to reach the baseline.

    The baseline is the first cell.  Its target is the lowest value of its
    validation-loss curve averaged over seeds.  A cell reaches the target at
    the first evaluation where its own seed-averaged validation loss is at
    or below it; the seconds are the seed-averaged training seconds at that
    step.  ``seeds_reached`` counts seeds whose own curve gets there.

    Returns
    -------
    dict (JSON-ready)
    """
    cells = settings["cells"]
    base = cells[0]
    b_steps, b_val = _curves(rows, base, "val_loss")
    b_mean = b_val.mean(axis=0)
    target = float(b_mean.min())
    b_best_step = int(b_steps[int(np.argmin(b_mean))])
    out = {"settings": settings, "metric": metric, "higher_is_better": higher_is_better,
           "baseline": base, "target_val_loss": target, "baseline_best_step": b_best_step,
           "task_info": {k: v for k, v in (info or {}).items() if k != "permutation"},
           "cells": {}}
    for cell in cells:
        steps, val = _curves(rows, cell, "val_loss")
        _, met = _curves(rows, cell, metric)
        _, wall = _curves(rows, cell, "wall_time")
        mean_val = val.mean(axis=0)
        hit = np.nonzero(mean_val <= target)[0]
        per_seed = [bool(np.any(v <= target)) for v in val]
        total_steps = int(steps[-1])
        total_sec = float(wall[:, -1].mean())
        rec = {
            "final_val_loss": float(mean_val[-1]),
            "final_val_loss_std": float(val[:, -1].std()),
            f"final_{metric}": float(met[:, -1].mean()),
            f"final_{metric}_std": float(met[:, -1].std()),
            "best_val_loss": float(mean_val.min()),
            f"best_{metric}": float(met.mean(axis=0).max() if higher_is_better
                                    else met.mean(axis=0).min()),
            "seconds_per_step": total_sec / total_steps if total_steps else math.nan,
            "seeds": int(val.shape[0]),
            "seeds_reached": int(sum(per_seed)),
        }
        if hit.size:
            i = int(hit[0])
            rec["steps_to_target"] = int(steps[i])
            rec["seconds_to_target"] = float(wall[:, i].mean())
        else:
            rec["steps_to_target"] = None
            rec["seconds_to_target"] = None
        out["cells"][cell] = rec
    b = out["cells"][base]
    for cell, rec in out["cells"].items():
        if rec["steps_to_target"] is None or not b["steps_to_target"]:
            rec["percent_steps"] = None
            rec["percent_time"] = None
        else:
            rec["percent_steps"] = 100.0 * rec["steps_to_target"] / b["steps_to_target"]
            rec["percent_time"] = (100.0 * rec["seconds_to_target"] / b["seconds_to_target"]
                                   if b["seconds_to_target"] else None)
    return out


def _fmt(v, spec=".4f"):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _pct(v):
    return "n/a" if v is None else f"{v:.0f}%"


def format_summary(summary):
    """The summary as Markdown: settings, a table, and plain sentences."""
    s = summary["settings"]
    metric = summary["metric"]
    base = summary["baseline"]
    lines = [f"# {s['task']}: {' vs '.join(s['cells'])}", "",
             f"{s['seeds']} seeds x {s['steps']} steps; hidden {s['hidden_size']}, "
             f"{s['num_layers']} layer(s), batch {s['batch_size']}, {s['optimizer']} "
             f"lr {s['lr']:g}, clip {s['clip']}, {s['dtype']}; T = {s['seq_len']}; "
             f"{s['n_train']} training / {s['n_val']} validation sequences; "
             f"evaluation every {s['eval_every']} steps.", ""]
    if "constant_mse" in summary["task_info"]:
        lines += [f"Constant predictor (always 1): MSE {summary['task_info']['constant_mse']:.4f}"
                  f" (1/6); `mse_ratio` is the MSE divided by it (below 1 beats it).", ""]
    if "uniform_bits_per_char" in summary["task_info"]:
        lines += [f"A uniform guess over the {len(summary['task_info']['vocab'])} characters "
                  f"scores {summary['task_info']['uniform_bits_per_char']:.3f} bits per "
                  f"character.", ""]
    lines += [f"Target: the baseline ({base})'s best validation loss, "
              f"{summary['target_val_loss']:.4f} (mean over seeds, at step "
              f"{summary['baseline_best_step']}).", "",
              f"| cell | final val loss | final {metric} | best val loss | ms/step | "
              f"steps to target | seconds to target | % of baseline steps | "
              f"% of baseline time | seeds reaching |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for cell, r in summary["cells"].items():
        reached = r["steps_to_target"] is not None
        lines.append(
            f"| {cell} | {_fmt(r['final_val_loss'])} ± {_fmt(r['final_val_loss_std'], '.3f')} "
            f"| {_fmt(r[f'final_{metric}'])} ± {_fmt(r[f'final_{metric}_std'], '.3f')} "
            f"| {_fmt(r['best_val_loss'])} | {_fmt(1e3 * r['seconds_per_step'], '.1f')} "
            f"| {r['steps_to_target'] if reached else 'never reached'} "
            f"| {_fmt(r['seconds_to_target'], '.1f') if reached else 'never reached'} "
            f"| {_pct(r['percent_steps']) if reached else '-'} "
            f"| {_pct(r['percent_time']) if reached else '-'} "
            f"| {r['seeds_reached']}/{r['seeds']} |")
    lines.append("")
    b = summary["cells"][base]
    for cell, r in summary["cells"].items():
        if cell == base:
            continue
        if r["steps_to_target"] is None:
            lines.append(f"- {cell} never reached {base}'s best validation loss in "
                         f"{s['steps']} steps ({r['seeds_reached']} of {r['seeds']} seeds did "
                         f"on their own).")
        else:
            lines.append(f"- {cell} reached {base}'s best validation loss in "
                         f"{r['steps_to_target']} steps ({_pct(r['percent_steps'])} "
                         f"of {base}'s {b['steps_to_target']}) and "
                         f"{_fmt(r['seconds_to_target'], '.1f')} s "
                         f"({_pct(r['percent_time'])} of {base}'s time).")
        better = r["final_val_loss"] < b["final_val_loss"]
        lines.append(f"- Final validation loss: {cell} {_fmt(r['final_val_loss'])} vs {base} "
                     f"{_fmt(b['final_val_loss'])} ({'lower' if better else 'NOT lower'}); "
                     f"final {metric}: {_fmt(r[f'final_{metric}'])} vs "
                     f"{_fmt(b[f'final_{metric}'])}.")
        ratio = r["seconds_per_step"] / b["seconds_per_step"] if b["seconds_per_step"] else None
        lines.append(f"- Cost per step: {cell} takes {_fmt(ratio, '.2f')}x {base}'s time "
                     f"per update (training seconds on this machine, measured in the same "
                     f"run; noisy when other work shares the cores).")
    lines.append("")
    return "\n".join(lines)


def plot_curves(rows, path, cells, metric, title=""):
    """Mean curves over seeds with a min-max band, one colour per cell (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, cell in enumerate(cells):
        c = colors[i % len(colors)]
        steps, val = _curves(rows, cell, "val_loss")
        _, wall = _curves(rows, cell, "wall_time")
        _, met = _curves(rows, cell, metric)
        n = val.shape[0]
        for ax, xs, mat in ((axes[0], steps, val), (axes[1], wall.mean(axis=0), val),
                            (axes[2], steps, met)):
            ax.plot(xs, mat.mean(axis=0), color=c, label=f"{cell} (mean of {n})")
            ax.fill_between(xs, mat.min(axis=0), mat.max(axis=0), color=c, alpha=0.2,
                            linewidth=0)
    axes[0].set(xlabel="step", ylabel="validation loss")
    axes[1].set(xlabel="training seconds", ylabel="validation loss")
    axes[2].set(xlabel="step", ylabel=f"validation {metric}")
    # Losses spanning more than a decade (e.g. the adding problem) on a log scale.
    for ax, key in ((axes[0], "val_loss"), (axes[1], "val_loss"), (axes[2], metric)):
        vals = np.array([r[key] for r in rows], dtype=np.float64)
        if key != "accuracy" and np.all(vals > 0) and vals.max() > 20 * vals.min():
            ax.set_yscale("log")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m numba_ln.experiments",
        description="Train GRU and LN-GRU cells on a bundled task and compare learning curves.")
    p.add_argument("--task", default="digits-permuted",
                   help="digits, digits-permuted, adding or charlm (default digits-permuted)")
    p.add_argument("--cells", default="gru,ln-gru",
                   help="comma-separated cells; the first is the baseline (default gru,ln-gru)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--steps", type=int, default=1000, help="updates per run (default 1000)")
    p.add_argument("--out", default=None, help="output folder (curves.csv, curves.png, "
                   "summary.md, summary.json)")
    p.add_argument("--hidden", type=int, default=64, help="hidden size (default 64)")
    p.add_argument("--layers", type=int, default=1, help="GRU layers (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate (default 3e-3)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--clip", type=float, default=1.0,
                   help="global gradient-norm clip, 0 for none (default 1.0)")
    p.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
    p.add_argument("--seq-len", type=int, default=None,
                   help="adding: sequence length (default 100); charlm: window (default 100)")
    p.add_argument("--text", default=None, help="charlm: the text file to model")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal)")
    return p


def main(argv=None):
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    try:
        run_experiment(args.task, cells, args.seeds, args.steps, args.out,
                       hidden_size=args.hidden, num_layers=args.layers,
                       batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                       momentum=args.momentum, clip=args.clip or None,
                       eval_every=args.eval_every, seq_len=args.seq_len, text=args.text,
                       dtype=args.dtype, progress=args.progress)
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        print(f"wrote {os.path.join(args.out, 'curves.csv')}, curves.png, summary.md, "
              f"summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
