"""Registers and spills of every GPU kernel, with no GPU (developer tool).

::

    python scripts/ptx_registers.py [--cc 90] [--filter TEXT]

Compiles every kernel of :func:`numba_ln.gpu.compile_ptx` for ``sm_<cc>`` and
runs ``ptxas -v`` (from a CUDA toolkit, on PATH) on each, printing the launch
bound, registers a thread and spill bytes: what a variant's launch bound in
``numba_ln/gpu/_kernels.py`` is chosen from.  NVVM may write a newer PTX
``.version`` than the installed ptxas accepts; it is lowered to the ptxas
one's (the register allocation does not depend on it).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _ptxas_version(ptxas):
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    # CUDA 12.x -> PTX ISA 8.x, 13.x -> 9.x (the minor version as the toolkit's)
    return f"{int(m.group(1)) - 4}.{m.group(2)}" if m else None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cc", default="90", help="compute capability, e.g. 80 or 90")
    p.add_argument("--filter", default="", help="only kernels whose name contains this")
    a = p.parse_args(argv)
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        sys.exit("ptxas not found: put a CUDA toolkit's bin/ on PATH")
    from numba_ln import gpu
    from numba_ln.gpu import _kernels as K

    cc = (int(a.cc[:-1]), int(a.cc[-1]))
    version = _ptxas_version(ptxas)
    table = gpu.compile_ptx(cc)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        for key, ptx in table.items():
            if a.filter not in key:
                continue
            if version:
                ptx = re.sub(r"\.version \d+\.\d+", f".version {version}", ptx, count=1)
            with open(path, "w") as f:
                f.write(ptx)
            out = subprocess.run([ptxas, f"-arch=sm_{a.cc}", "-v", path, "-o", os.devnull],
                                 capture_output=True, text=True).stderr
            regs = re.search(r"Used (\d+) registers", out)
            spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
            if regs is None:
                print(f"{key:48s} ptxas failed: {out.strip().splitlines()[-1:]}")
                continue
            print(f"{key:48s} bound {str(K.launch_bounds(key)):10s} {regs.group(1):>4s} regs"
                  f"  spill {spill.group(1)}/{spill.group(2)} B")


if __name__ == "__main__":
    main()
