"""numba_ln: Layer Normalization (Ba, Kiros & Hinton, 2016) as Numba kernels.

- :func:`layer_norm` and :func:`layer_norm_backward`: NumPy-first functions
  over any axes, on the CPU (parallel ``@njit`` kernels) or, for GPU arrays,
  on the GPU (``numba.cuda`` kernels in :mod:`numba_ln.gpu`).
- :class:`LayerNorm`: a stateful layer for hand-written training loops.
- :mod:`numba_ln.kernels`: the row kernels, callable from your own ``@njit``
  code.

Importing numba_ln never initialises CUDA.
"""

from . import kernels
from .api import layer_norm, layer_norm_backward
from .module import LayerNorm

__version__ = "0.1.0"

__all__ = ["layer_norm", "layer_norm_backward", "LayerNorm", "kernels", "__version__"]
