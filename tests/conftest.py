"""pytest set-up shared by every test file: no stale numba caches.

Numba's on-disk cache (``cache=True``) checks only the source file of each
jitted function.  A driver in ``numba_ln/_cpu_strided.py`` compiled before a
change to ``numba_ln/kernels.py`` keeps the old kernels it inlined, so in a
checkout where the package is being edited the tests can silently run stale
machine code (seen here: a fixed kernel still gave NaN through an older cached
driver).  Installed, unchanging packages never meet this.

So, before any test imports numba_ln, every cached specialization (``.nbc``)
under ``numba_ln/``, ``examples/`` and ``tests/`` that is older than the
newest source file of the package is deleted; numba recompiles it on first
use (the index entry then points at a missing file, which numba treats as a
cache miss and overwrites).  Cost: one recompile after each package edit.
"""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _drop_stale_numba_caches():
    pkg = ROOT / "numba_ln"
    if not pkg.is_dir():
        return
    newest = max((p.stat().st_mtime for p in pkg.rglob("*.py")), default=0.0)
    for base in (pkg, ROOT / "examples", ROOT / "tests"):
        if not base.is_dir():
            continue
        for cached in base.rglob("*.nbc"):
            try:
                if cached.stat().st_mtime < newest:
                    cached.unlink()
            except OSError:  # another process got there first
                pass


_drop_stale_numba_caches()
