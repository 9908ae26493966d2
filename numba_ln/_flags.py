"""Compiler settings shared by every CPU kernel.

One place defines the fast-math flags.  ``reassoc`` lets LLVM vectorise the
row reductions; ``nnan`` and ``ninf`` stay out so that NaN and Inf propagate
exactly as IEEE arithmetic says (a non-finite row gives a non-finite result).
"""

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: Keyword arguments of every ``@njit`` in the package.
#: ``error_model="numpy"``: a division by zero gives inf/nan instead of raising,
#: which is what the statistics of an empty or constant row need.
JIT_OPTIONS = dict(fastmath=set(FASTMATH), error_model="numpy", cache=True, nogil=True)
