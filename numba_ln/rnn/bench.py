"""Benchmark of the GRU / LN-GRU layers against PyTorch (issue 4's targets).

Run ``python -m numba_ln.rnn.bench`` (needs torch, CPU build is enough).
It times forward plus backward through time of one layer at T=64, B=64,
input 32, hidden 256, float32 (by default) for

- ``numba GRU``       : :class:`numba_ln.rnn.GRU`
- ``numba LN-GRU``    : :class:`numba_ln.rnn.GRU` with ``layer_norm=True``
- ``torch nn.GRU``    : PyTorch's fused GRU (no LayerNorm)
- ``torch LN-GRU``    : :class:`TorchLNGRU`, an eager PyTorch LN-GRU with the
  same equations (``F.layer_norm`` + autograd; it also projects all inputs
  and normalises them before the time loop, as ours does)

and reports the median of repeats (runs interleaved round-robin, so that
load from other processes hits every contender alike) and the ratios the
issue asks for: the LN-GRU at least 3x faster than the eager PyTorch LN-GRU,
and both of ours no slower than ``torch.nn.GRU``.  Times are only ever
compared as ratios measured in the same run.

``--out PATH`` writes ``PATH.json`` and ``PATH.md``.
"""

import argparse
import json
import os
import platform
import time

import numpy as np

from . import GRU

__all__ = ["TorchLNGRU", "run", "main"]


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _make_torch_lngru():
    torch = _torch()
    if torch is None:
        return None
    F = torch.nn.functional

    class TorchLNGRU(torch.nn.Module):
        """The LN-GRU of :class:`numba_ln.rnn.GRU` in eager PyTorch (autograd).

        Same equations, same parameter names and shapes, so
        ``load_numpy(gru.params)`` makes the two compute the same function.
        """

        def __init__(self, input_size, hidden_size, num_layers=1, dtype=None, eps=1e-5):
            super().__init__()
            self.hidden_size = hidden_size
            self.num_layers = num_layers
            self.eps = eps
            # the same names, shapes and initialisation as numba_ln's LN-GRU
            init = GRU(input_size, hidden_size, num_layers=num_layers, layer_norm=True,
                       dtype=np.float64, seed=0).params
            for name, value in init.items():
                self.register_parameter(name, torch.nn.Parameter(torch.tensor(value, dtype=dtype)))
            self._H = hidden_size

        def load_numpy(self, params):
            with torch.no_grad():
                for name, p in self.named_parameters():
                    p.copy_(torch.from_numpy(np.asarray(params[name])))

        def forward(self, x, h0=None, mask=None):
            T, B, _ = x.shape
            H = self._H
            if h0 is None:
                h0 = x.new_zeros((self.num_layers, B, H))
            inp = x
            last = []
            for k in range(self.num_layers):
                p = {n: getattr(self, f"{n}_l{k}") for n in (
                    "weight_ih", "weight_hh", "ln_ih_gates_weight", "ln_ih_gates_bias",
                    "ln_hh_gates_weight", "ln_hh_gates_bias", "ln_ih_cand_weight",
                    "ln_ih_cand_bias", "ln_hh_cand_weight", "ln_hh_cand_bias")}
                gi = (inp.reshape(T * B, -1) @ p["weight_ih"].t()).reshape(T, B, 3 * H)
                lig = F.layer_norm(gi[..., :2 * H], (2 * H,), p["ln_ih_gates_weight"],
                                   p["ln_ih_gates_bias"], self.eps)
                lic = F.layer_norm(gi[..., 2 * H:], (H,), p["ln_ih_cand_weight"],
                                   p["ln_ih_cand_bias"], self.eps)
                h = h0[k]
                outs = []
                for t in range(T):
                    gh = h @ p["weight_hh"].t()
                    rz = torch.sigmoid(lig[t] + F.layer_norm(
                        gh[:, :2 * H], (2 * H,), p["ln_hh_gates_weight"], p["ln_hh_gates_bias"],
                        self.eps))
                    r, z = rz[:, :H], rz[:, H:]
                    n = torch.tanh(lic[t] + r * F.layer_norm(
                        gh[:, 2 * H:], (H,), p["ln_hh_cand_weight"], p["ln_hh_cand_bias"],
                        self.eps))
                    hnew = (1 - z) * n + z * h
                    if mask is not None:
                        m = mask[t].to(hnew.dtype)[:, None]
                        hnew = m * hnew + (1 - m) * h
                    h = hnew
                    outs.append(h)
                inp = torch.stack(outs)
                last.append(h)
            return inp, torch.stack(last)

    return TorchLNGRU


TorchLNGRU = _make_torch_lngru()


def _median_times(fns, repeats, warmup, prepare):
    """Median seconds of each of ``fns`` (a dict), runs interleaved round-robin.

    ``prepare[name]()``, when given, runs untimed before each run of ``name``
    (it sets PyTorch's thread count)."""
    none = lambda: None  # noqa: E731
    for _ in range(warmup):
        for name, fn in fns.items():
            prepare.get(name, none)()
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            prepare.get(name, none)()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}, times


def run(T=64, B=64, input_size=32, hidden_size=256, dtype="float32", repeats=15, warmup=3,
        seed=0):
    """Time forward + BPTT of every contender; returns a result dict."""
    torch = _torch()
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, input_size)).astype(dt)
    dhs = rng.standard_normal((T, B, hidden_size)).astype(dt)

    ours = {}
    for ln in (False, True):
        gru = GRU(input_size, hidden_size, layer_norm=ln, dtype=dt, seed=seed)

        def step(gru=gru):
            hs, h_last, cache = gru.forward(x)
            gru.backward(dhs, cache)

        ours["numba LN-GRU" if ln else "numba GRU"] = step

    fns = dict(ours)
    prepare = {}
    if torch is not None:
        tdt = getattr(torch, dt.name)
        xt = torch.from_numpy(x).requires_grad_()
        dhst = torch.from_numpy(dhs)
        fused = torch.nn.GRU(input_size, hidden_size, dtype=tdt)
        eager = TorchLNGRU(input_size, hidden_size, dtype=tdt)

        def torch_step(model):
            def step():
                model.zero_grad(set_to_none=True)
                xt.grad = None
                out, _ = model(xt)
                out.backward(dhst)
            return step

        # PyTorch with one thread and with its default thread count: the
        # ratios use whichever is faster (on a small shared machine one
        # thread often wins, as it does for numba_ln's layers)
        default_threads = torch.get_num_threads()
        for n in sorted({1, default_threads}):
            def set_threads(n=n):
                torch.set_num_threads(n)
            for label, model in (("torch nn.GRU", fused), ("torch LN-GRU", eager)):
                name = f"{label} ({n} thread{'s' if n > 1 else ''})"
                fns[name] = torch_step(model)
                prepare[name] = set_threads

    try:
        medians, samples = _median_times(fns, repeats, warmup, prepare)
    finally:
        if torch is not None:
            torch.set_num_threads(default_threads)
    ratios = {}
    if torch is not None:
        def best(label):
            return min(t for name, t in medians.items() if name.startswith(label))
        ratios = {
            "best torch LN-GRU / numba LN-GRU (target >= 3)":
                best("torch LN-GRU") / medians["numba LN-GRU"],
            "best torch nn.GRU / numba GRU (target >= 1)":
                best("torch nn.GRU") / medians["numba GRU"],
            "best torch nn.GRU / numba LN-GRU (target >= 1)":
                best("torch nn.GRU") / medians["numba LN-GRU"],
        }
    import numba

    info = {
        "shape": {"T": T, "B": B, "input_size": input_size, "hidden_size": hidden_size},
        "dtype": dt.name, "repeats": repeats, "warmup": warmup,
        "cpu_count": os.cpu_count(), "numba_threads": numba.get_num_threads(),
        "numba": numba.__version__, "numpy": np.__version__,
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "numba_ln_blas_threads": GRU.blas_threads,
        "machine": platform.processor() or platform.machine(),
    }
    return {"info": info, "median_s": medians, "ratios": ratios,
            "samples_s": {k: [float(t) for t in v] for k, v in samples.items()}}


def to_markdown(result):
    info = result["info"]
    s = info["shape"]
    lines = [
        f"Forward + backward through time, T={s['T']}, B={s['B']}, input {s['input_size']}, "
        f"hidden {s['hidden_size']}, {info['dtype']}, one layer; median of {info['repeats']} "
        f"interleaved repeats on {info['cpu_count']} cores (numba {info['numba_threads']} "
        f"threads, BLAS {info['numba_ln_blas_threads']} thread(s) inside numba_ln's layers; "
        f"torch timed with 1 and with its default {info['torch_threads']} threads).",
        "",
        "| implementation | median ms |",
        "| --- | ---: |",
    ]
    for name, t in result["median_s"].items():
        lines.append(f"| {name} | {t * 1e3:.1f} |")
    if result["ratios"]:
        lines += ["", "| ratio (higher is better for numba_ln) | value |", "| --- | ---: |"]
        for name, r in result["ratios"].items():
            lines.append(f"| {name} | {r:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m numba_ln.rnn.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--B", type=int, default=64)
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--hidden-size", type=int, default=256)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if _torch() is None:
        print("torch is not installed: timing numba_ln alone (no ratios). "
              "pip install torch to compare.")
    result = run(args.T, args.B, args.input_size, args.hidden_size, args.dtype, args.repeats,
                 args.warmup)
    md = to_markdown(result)
    print(md)
    if args.out:
        base = args.out[:-5] if args.out.endswith(".json") else args.out
        with open(base + ".json", "w") as f:
            json.dump(result, f, indent=2)
        with open(base + ".md", "w") as f:
            f.write(md)
        print(f"wrote {base}.json and {base}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
