"""The default experiment: GRU vs LayerNorm-GRU on the adding problem.

``python -m numba_ln.demo`` (or ``make demo``) trains a GRU and an LN-GRU
with the same seeds, batches and hyperparameters on the adding problem
(T = 100 steps of (value, marker) pairs; the target is the sum of the two
marked values; a constant predictor scores MSE 1/6), prints the summary and
writes the curves, plot and summary to ``runs/demo`` (see
:mod:`numba_ln.experiments`).  It is the default because it shows the
paper's claim most plainly in a few minutes: within a few hundred updates
the LN-GRU solves the task while the GRU stays at the constant predictor.

``--task digits-permuted`` runs the other preset: scikit-learn's bundled 8x8
digits read one pixel per step in a fixed random order (64 steps, ten
classes), where LayerNorm needs fewer updates but, per update costing more,
not less time.  The settings were chosen by running them on a 2-core machine
so that the whole demo, compilation included, ends within about five
minutes; other settings go to ``python -m numba_ln.experiments``.  Options:
``--task``, ``--out``, ``--seeds``, ``--steps``.
"""

import argparse
import sys
import time

__all__ = ["DEFAULTS", "PRESETS", "main"]

#: The demo's experiment (keyword arguments of :func:`numba_ln.experiments.run_experiment`).
DEFAULTS = dict(task="adding", cells=("gru", "ln-gru"), seeds=3, steps=600,
                hidden_size=64, num_layers=1, batch_size=32, optimizer="adam", lr=3e-3,
                clip=1.0, eval_every=25)

#: Settings per ``--task``.
PRESETS = {"adding": DEFAULTS,
           "digits-permuted": dict(DEFAULTS, task="digits-permuted", steps=400)}


def main(argv=None):
    """Run the demo experiment and print its summary."""
    p = argparse.ArgumentParser(prog="python -m numba_ln.demo",
                                description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=tuple(PRESETS), default=DEFAULTS["task"],
                   help="the experiment (default adding)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    p.add_argument("--steps", type=int, default=None,
                   help="updates per run (default 600; 400 for digits-permuted)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal)")
    args = p.parse_args(argv)
    from .experiments import run_experiment

    settings = dict(PRESETS[args.task])
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    if args.steps is not None:
        settings["steps"] = args.steps
    print(f"numba_ln demo: {settings['task']}, {' vs '.join(settings['cells'])}, "
          f"{settings['seeds']} seeds x {settings['steps']} steps (hidden "
          f"{settings['hidden_size']}, batch {settings['batch_size']}, adam lr "
          f"{settings['lr']:g}); writing {args.out}/", flush=True)
    t0 = time.perf_counter()
    try:
        run_experiment(out=args.out, progress=args.progress, **settings)
    except (ValueError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"demo finished in {time.perf_counter() - t0:.0f} s (compilation, training and "
          f"evaluation); curves in {args.out}/curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
