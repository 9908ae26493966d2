"""pytest set-up shared by every test file: no stale numba caches.

Numba's on-disk cache (``cache=True``) checks only the source file of each
jitted function.  A driver in ``numba_ln/_cpu_strided.py`` compiled before a
change to ``numba_ln/kernels.py`` keeps the old kernels it inlined, so in a
checkout where the package is being edited the tests can silently run stale
machine code (seen here: a fixed kernel still gave NaN through an older cached
driver).  Installed, unchanging packages never meet this.

So, before any test imports numba_ln, every cached specialization (``.nbc``)
that is older than a source it may depend on is deleted: for caches of
``numba_ln/`` the package's top-level modules (plus the subpackage's own
modules for ``numba_ln/<sub>/``), for ``examples/`` and ``tests/`` every
module of the package.  Numba recompiles it on first use (the index entry
then points at a missing file, which numba treats as a cache miss and
overwrites).  Cost: one recompile after a package edit.
"""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _newest(paths):
    return max((p.stat().st_mtime for p in paths), default=0.0)


def _drop_stale_numba_caches():
    pkg = ROOT / "numba_ln"
    if not pkg.is_dir():
        return
    # A package module may inline anything from numba_ln/*.py and from its own
    # subpackage; examples and tests may inline anything in the package.
    top = _newest(pkg.glob("*.py"))
    everything = _newest(pkg.rglob("*.py"))
    for base in (pkg, ROOT / "examples", ROOT / "tests"):
        if not base.is_dir():
            continue
        for cached in base.rglob("*.nbc"):
            src_dir = cached.parent.parent
            if base != pkg:
                newest = everything
            elif src_dir == pkg:
                newest = top
            else:
                newest = max(top, _newest(src_dir.glob("*.py")))
            try:
                if cached.stat().st_mtime < newest:
                    cached.unlink()
            except OSError:  # another process got there first
                pass


_drop_stale_numba_caches()
