"""A/B of the GPU kernels of two source trees in one run (developer tool).

::

    python scripts/gpu_ab.py OUTDIR TREE_A TREE_B [--rounds 3] [--repeats 10]
                             [--shapes 4096x1024:float32,...] [--time-limit SECONDS]

``TREE_A`` and ``TREE_B`` are checkouts of numba_ln (e.g. an old commit,
``git archive 40927eb | tar -x -C ab/old``, against ``.``).  In each round,
each tree's own benchmark (``python -m numba_ln.gpu.bench``, run in a fresh
process with the tree first on ``PYTHONPATH``) measures the kernels' GPU time
at the shapes, A and B alternating, so that both see the same GPU in the
same state; the copy baseline each run measures shows whether the machine
changed between them.  The table gives, for every shape and pass, the median
over the rounds of each tree's kernel time, B's speed against A's (``A / B``:
above 1, B is faster) and the spread of the rounds.  Writes
``OUTDIR/gpu_ab.json`` and ``OUTDIR/gpu_ab.md`` (and each run's own results
under ``OUTDIR/runs/``).

Differences of a few percent between two instances of the same kind of GPU
are common; only an A/B on one machine says whether a kernel change made
code faster or slower.  The first round of a tree also compiles its kernels
(numba's on-disk cache keeps them for the next rounds).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def run_bench(tree, out, shapes, repeats, time_limit, extra=(), python=sys.executable):
    """One benchmark run of ``tree`` into ``out``: ``{"results": [...], ...}``,
    or ``{"error": ...}``.  ``extra``: more arguments of the benchmark."""
    if not os.path.exists(os.path.join(tree, "numba_ln", "gpu", "bench.py")):
        return {"error": f"{tree} has no numba_ln/gpu/bench.py (not a numba_ln tree)"}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(tree) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [python, "-m", "numba_ln.gpu.bench", "--out", out, "--repeats", str(repeats),
           "--time-limit", str(time_limit)]
    if shapes:
        cmd += ["--shapes", shapes]
    cmd += list(extra)
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    with open(os.path.join(out, "bench.log"), "w") as log:
        try:
            proc = subprocess.run(cmd, cwd=os.path.abspath(tree), env=env, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=time_limit + 120)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {time_limit + 120:.0f} s",
                    "seconds": time.perf_counter() - t0}
    seconds = time.perf_counter() - t0
    path = os.path.join(out, "gpu_bench.json")
    if not os.path.exists(path):
        return {"error": f"exit {proc.returncode}, no gpu_bench.json (see {out}/bench.log)",
                "seconds": seconds}
    with open(path) as f:
        data = json.load(f)
    return {"results": data.get("results", []), "returncode": proc.returncode,
            "seconds": seconds}


def _key(r):
    return f"{r['shape'][0]}x{r['shape'][1]}", r["dtype"], r["pass"]


def compare(runs):
    """``runs``: ``{"A": [results of round 0, ...], "B": [...]}`` -> one row a
    (shape, dtype, pass) with the medians, the ratio and the spreads."""
    table = {}
    for label, rounds in runs.items():
        for results in rounds:
            for r in results:
                if "kernel_ms" not in r or r.get("error"):
                    continue
                row = table.setdefault(_key(r), {"A": [], "B": [], "copy_A": [], "copy_B": []})
                row[label].append(r["kernel_ms"])
                if r.get("copy_ms"):
                    row["copy_" + label].append(r["copy_ms"])
    out = []
    for (shape, dtype, pass_), row in table.items():
        res = {"shape": shape, "dtype": dtype, "pass": pass_,
               "rounds_A": row["A"], "rounds_B": row["B"]}
        for label in ("A", "B"):
            vals = row[label]
            if vals:
                med = statistics.median(vals)
                res[f"ms_{label}"] = med
                res[f"spread_{label}_pct"] = round(100 * (max(vals) - min(vals)) / med, 1)
            if row["copy_" + label]:
                res[f"copy_ms_{label}"] = statistics.median(row["copy_" + label])
        if res.get("ms_A") and res.get("ms_B"):
            res["speed_B_over_A"] = round(res["ms_A"] / res["ms_B"], 3)
        out.append(res)
    return out


def markdown(rows, tree_a, tree_b):
    lines = [f"A = `{tree_a}`, B = `{tree_b}`; GPU ms a call, median of the rounds "
             "(spread: (max - min) / median over the rounds).", "",
             "| shape | dtype | pass | A ms | B ms | A / B | spread A % | spread B % "
             "| copy ms (A runs) | copy ms (B runs) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else ""

    for r in rows:
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['pass']} | {f(r.get('ms_A'), '.4f')} | "
                     f"{f(r.get('ms_B'), '.4f')} | {f(r.get('speed_B_over_A'), '.3f')} | "
                     f"{f(r.get('spread_A_pct'), '.1f')} | {f(r.get('spread_B_pct'), '.1f')} | "
                     f"{f(r.get('copy_ms_A'), '.4f')} | {f(r.get('copy_ms_B'), '.4f')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("tree_a")
    p.add_argument("tree_b")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3, help="the benchmark's --warmup")
    p.add_argument("--batch", type=int, default=20, help="the benchmark's --batch")
    p.add_argument("--shapes", default=None, help="as the benchmark's --shapes (default: its set)")
    p.add_argument("--time-limit", type=float, default=240.0,
                   help="no new run after this many seconds")
    p.add_argument("--run-limit", type=float, default=60.0,
                   help="each benchmark run's own --time-limit (it skips its remaining shapes)")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.perf_counter()
    runs = {"A": [], "B": []}
    log = []

    def write():  # after every run: a timeout still leaves the rounds so far
        rows = compare(runs)
        with open(os.path.join(a.out, "gpu_ab.json"), "w") as f:
            json.dump({"tree_a": a.tree_a, "tree_b": a.tree_b, "runs": log, "rows": rows}, f,
                      indent=1)
        md = markdown(rows, a.tree_a, a.tree_b)
        with open(os.path.join(a.out, "gpu_ab.md"), "w") as f:
            f.write(md)
        return rows, md

    for i in range(a.rounds):
        for label, tree in (("A", a.tree_a), ("B", a.tree_b)):
            if time.perf_counter() - t0 > a.time_limit:
                log.append({"round": i, "tree": label, "error": "skipped: time limit"})
                continue
            res = run_bench(tree, os.path.join(a.out, "runs", f"{label}{i}"), a.shapes,
                            a.repeats, a.run_limit,
                            ["--warmup", str(a.warmup), "--batch", str(a.batch)])
            log.append({"round": i, "tree": label,
                        **{k: v for k, v in res.items() if k != "results"}})
            print(json.dumps(log[-1]), flush=True)
            if "results" in res:
                runs[label].append(res["results"])
            write()
    rows, md = write()
    print(md)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
