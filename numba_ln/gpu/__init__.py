"""GPU LayerNorm: ``numba.cuda`` kernels behind the same API as the CPU path.

:func:`numba_ln.layer_norm` and :func:`numba_ln.layer_norm_backward` call
:func:`layer_norm` / :func:`layer_norm_backward` here when an argument is a
GPU array (a numba device array, or any object with
``__cuda_array_interface__``: CuPy arrays, PyTorch CUDA tensors, used
zero-copy).  Importing :mod:`numba_ln` never imports this module; importing
it imports :mod:`numba.cuda` but does not create a CUDA context.

Kernels (see :mod:`numba_ln.gpu._kernels` for the design), in variants
specialised on threads a row x values a thread (``_32x8`` etc.):

- ``layer_norm_forward_*``: rows of ``D <= 512`` take a group of 4-32
  threads, many rows a block; longer rows a block of 128-512 threads.  The
  row stays in registers while it fits (``D <= 8192``) so it is read from
  DRAM once; small variants prefetch the next row.
- Longer rows: ``layer_norm_forward_split_stats_*`` computes the statistics
  of every 8192-column window of every row in its own block and
  ``layer_norm_forward_split_apply_*`` combines them (Chan's update) and
  writes ``y``, re-reading x (from L2: this path is taken while x fits in
  32 MiB); larger inputs with long rows take the widest forward variant,
  looping over the row (a block per row, re-reading it from L1/L2).
  ``layer_norm_forward_coop_*`` is the split in one launch, each block
  holding its window across a barrier of its row's blocks (a cooperative
  launch, or thread block clusters on compute capability 9.0+); off until
  measured faster (``FWD_COOP``, ``FWD_CLUSTER`` in ``_launch.py``).
- ``layer_norm_backward_*``: fused ``dx`` and per-block partial
  ``dweight``/``dbias``; ``layer_norm_backward_rowsums_*`` first when a row
  spans several column windows (``D > 8192``); ``layer_norm_backward_colsum``
  adds the partials of both gradients, in one launch and a fixed order.  No
  atomics: the gradients are bitwise reproducible on a given GPU model.
  ``layer_norm_backward_cols`` does, for a few long rows, the row kernel's
  and the column sums' work after the row sums, a thread a column of every
  row (off until measured faster: ``BWD_COLS_ROWS`` in ``_launch.py``).

:func:`compile_ptx` compiles every kernel for every dtype to PTX with no GPU.
:func:`use_memory_pool` makes the results come from a stream-ordered memory
pool instead of numba's memory manager (which calls ``cuMemAlloc`` and
``cuMemFree`` per array).
"""

import contextlib
import types

from . import _kernels
from ._kernels import signatures
from ._api import is_available, layer_norm, layer_norm_backward, require_gpu
from ._memory import memory_pool_enabled, use_memory_pool

__all__ = ["layer_norm", "layer_norm_backward", "compile_ptx", "signatures", "is_available",
           "require_gpu", "use_memory_pool", "memory_pool_enabled", "DTYPES"]

#: The dtypes every kernel is compiled for.
DTYPES = _kernels.DTYPES


def compile_ptx(cc=(9, 0)):
    """PTX of every GPU kernel in every dtype, compiled with no GPU present.

    Parameters
    ----------
    cc : tuple of int, default (9, 0)
        The compute capability to compile for (``(8, 0)`` for A100,
        ``(9, 0)`` for H100/H200).

    Returns
    -------
    dict
        ``{"layer_norm_forward_32x8[float32]": ptx_text, ...}``: every name
        of :data:`numba_ln.gpu._kernels.KERNELS` (a kernel kind and, for the
        row kernels, the variant's threads a row x values a thread) with every
        dtype of :data:`DTYPES`.

    Needs numba-cuda's NVVM (``pip install "numba-cuda[cu13]"``); not
    available under the CUDA simulator (which has no compiler).
    """
    if _kernels.SIM:
        raise RuntimeError("compile_ptx needs NVVM; it does not run under the CUDA simulator "
                           "(unset NUMBA_ENABLE_CUDASIM)")
    from numba import cuda

    out = {}
    with _assume_device(cc):
        for key, kernel in _kernels.KERNELS.items():
            dtype = key[key.index("[") + 1:-1]
            sig = signatures(dtype)[_kernels.KINDS[key]]
            bounds = _kernels.launch_bounds(key)
            if bounds is not None:
                ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=tuple(cc), launch_bounds=bounds)
            else:  # numba-cuda without launch_bounds
                ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=tuple(cc))
            out[key] = ptx
    return out


@contextlib.contextmanager
def _assume_device(cc):
    """Let device functions compile with no GPU present.

    numba-cuda compiles a ``cuda.jit(device=True)`` function called from a
    kernel by asking the current GPU for its compute capability, even inside
    ``compile_ptx(cc=...)``.  With no usable GPU, answer with ``cc`` for the
    duration of the call (device functions are linked as LLVM IR and compiled
    with the kernel, for the kernel's ``cc``).  With a GPU, change nothing.
    """
    import numba.cuda.dispatcher as dispatcher

    original = getattr(dispatcher, "get_current_device", None)
    if original is None or is_available():
        yield
        return
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=tuple(cc))
    try:
        yield
    finally:
        dispatcher.get_current_device = original
