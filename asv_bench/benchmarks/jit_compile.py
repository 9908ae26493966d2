"""What a user waits for before the first result: import and JIT compile.

Every sample of a ``timeraw_`` benchmark is a fresh Python process.  Its
(untimed) setup points ``NUMBA_CACHE_DIR`` at a new empty directory before
numba is imported, so numba's on-disk cache cannot hide the compile:

- ``cold``: nothing cached, the first call compiles (a first-ever run, or
  the first run after numba_ln or numba changed);
- ``cached``: the directory was filled by another process first, so the
  first call only loads the machine code (every later run of a program).

``serial`` and ``parallel`` are the two drivers (small arrays run on one
thread, large ones on all), each compiled on the first call that needs it.
For ``backward`` the forward pass runs in the untimed setup.
"""

import textwrap

#: x's shape for each driver: 1k elements (serial), 1M elements (parallel).
ROWS = {"serial": 4, "parallel": 4096}
FEATURES = 256

_FRESH_CACHE = """
import atexit, os, shutil, subprocess, sys, tempfile
_cache = tempfile.mkdtemp(prefix="numba_ln_asv_cache_")
atexit.register(shutil.rmtree, _cache, True)
os.environ["NUMBA_CACHE_DIR"] = _cache
"""

_CASE = """
import numpy as np
x = np.random.default_rng(0).standard_normal(({rows}, {features})).astype(np.float32)
w = np.ones({features}, np.float32)
b = np.zeros({features}, np.float32)
"""

_CALL = {
    "forward": "numba_ln.layer_norm(x, w, b)",
    "backward": "numba_ln.layer_norm_backward(y, x, mean, rstd, w)",
}


def _script(*parts):
    return "\n".join(textwrap.dedent(p).strip() for p in parts)


class ImportTime:
    """``import numba_ln`` in a fresh process (numpy already imported).

    Includes importing numba; must stay free of compilation (nothing is
    compiled at import) and of CUDA initialisation.
    """

    number = 1
    repeat = (3, 5, 20.0)
    warmup_time = 0.0
    rounds = 1

    def timeraw_import(self):
        return "import numba_ln", _script(_FRESH_CACHE, "import numpy")


class FirstCall:
    """The first ``layer_norm`` / ``layer_norm_backward`` call of a process (float32)."""

    params = [["forward", "backward"], ["serial", "parallel"], ["cold", "cached"]]
    param_names = ["pass", "driver", "cache"]
    # Compiling is the same work every time: one or two samples are enough,
    # and each costs seconds (twice that for "cached", which compiles first).
    number = 1
    repeat = (1, 2, 15.0)
    min_run_count = 1
    warmup_time = 0.0
    rounds = 1
    timeout = 600

    def timeraw_first_call(self, pass_, driver, cache):
        case = _CASE.format(rows=ROWS[driver], features=FEATURES)
        setup = [_FRESH_CACHE]
        if cache == "cached":
            # Another process compiles the same calls into the fresh cache.
            # One line, no backslashes: asv pastes setup into a string literal.
            fill = "; ".join(_script(case, "import numba_ln",
                                     "y, mean, rstd = numba_ln.layer_norm(x, w, b, return_stats=True)",
                                     _CALL[pass_]).splitlines())
            setup.append(f"subprocess.run([sys.executable, '-c', {fill!r}], check=True)")
        setup += [case, "import numba_ln"]
        if pass_ == "backward":
            setup.append("y, mean, rstd = numba_ln.layer_norm(x, w, b, return_stats=True)")
        return _CALL[pass_], _script(*setup)
