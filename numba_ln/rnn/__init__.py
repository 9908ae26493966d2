"""Recurrent networks without a deep-learning framework.

- :class:`GRU`: GRU and LayerNorm-GRU layer stacks with exact
  backpropagation through time (Numba time loops; every LayerNorm is one of
  numba_ln's row kernels).
"""

from .gru import GRU

__all__ = ["GRU"]
