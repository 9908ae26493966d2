"""The ``@cuda.jit`` kernels of the GPU path.

No validation here: :mod:`numba_ln.gpu._launch` hands these kernels
C-contiguous ``(rows, D)`` device arrays of one dtype and preallocated outputs.

Variants
--------
The row kernels are built by :func:`_make_variant` once per entry of
:data:`TABLE`: ``(tpr, kv)``, ``tpr`` threads (the *group*) per row and ``kv``
values of the row per thread, both compile-time constants of the variant.
:func:`variant` takes, for each pass, the first variant whose capacity
``tpr * kv`` holds the row (a variant may serve the forward, the backward or
both); rows longer than the last one's are split into column windows of that
size.  Constants matter here: with the thread count a runtime value, every
one of a thread's loads had its own 64-bit address in a register (194-254
registers a thread, one block per multiprocessor, measured on an H200); with
it a constant the loads share one base address and unroll, and a variant also
holds only as many values as its rows need.  Variants that hold few bytes a
thread also prefetch the next row (see :func:`_make_variant`).

Thread layout
-------------
Blocks of ``(tpr, R)`` threads: ``R`` groups (rows) share a block.  Small rows
take a warp or less per row and ``R = MAX_THREADS / tpr`` rows a block;
larger rows take a whole block (``R = 1``, ``tpr`` a multiple of 32).  Blocks
walk the rows grid-stride, in step, so that every ``syncthreads`` is reached
by every thread of the block.

Thread ``tx`` of a group owns the columns ``tx + k * tpr``.  Those values live
in a fully unrolled local array, which NVVM keeps in registers: the row is
read from DRAM once.  The loads use a clamped column index and mask the value
(no branch per column), so all of a thread's loads are in flight at once.
The widest variant's forward loops over its rows, re-reading them from L1/L2
(it takes only rows longer than its capacity: an earlier variant of the same
capacity holds the others; a test checks this).  Few such rows may take a
backward of narrower windows instead (:data:`LONG_ROWS`).
A column is only ever read and written by the thread that owns it, and read
before it is written, so every kernel is safe in place (``y`` may be ``x``,
``dx`` may be ``dy``).
The variants of :data:`VECTOR` lay a thread's columns
out in pieces of 2-4 adjacent values instead, read and written by 16-byte
vector accesses where the arrays are aligned (:func:`_col`, ``vec`` of
:func:`_make_variant`).

Arithmetic
----------
Everything is done in the input dtype: float32 kernels contain no float64
instruction (checked on the PTX by the tests).  Constants are built with
``T = x.dtype.type``.  The statistics are a shifted two-pass: ``m1 = sum(x)/D``,
then ``d = x - m1`` gives ``dm = sum(d)/D`` and ``var = sum(d*d)/D - dm*dm``;
the mean is ``m1 + dm`` and ``y = ((x - m1) - dm) * rstd``.  ``x - m1`` is
exact when the values sit close to their mean (a large common offset), so
rows such as ``1e4 + 0.1 * noise`` keep float32 accuracy.  When a sum
overflows (finite values near the top of the range), the row is redone on
``x * 2**-100`` (``2**-600`` for float64), a power of two, so the scaling
itself is exact; a row with NaN/Inf stays non-finite.

Reductions
----------
On a GPU, groups reduce with warp shuffles (``shfl_xor``: every lane ends with
the same, order-fixed sum), then across warps through shared memory.  The
CUDA simulator has no shuffles, so with ``NUMBA_ENABLE_CUDASIM=1`` the same
kernels use a shared-memory reduction instead (chosen once, at import).

Weight and bias gradients: each thread accumulates its columns over the rows
its group visits, the groups of a block are summed through shared memory in
``ty`` order, and every block writes one row of partials; :func:`_col_sum`
then adds the partials in a fixed order (or, for a few long rows,
:func:`_bwd_cols` adds each column over the rows in row order, a thread a
column, where :mod:`numba_ln.gpu._launch` takes it).  No atomic sums
anywhere: the gradients are bitwise reproducible for a given shape.  (The kernels that wait
for other blocks, at a barrier (:func:`_blocks_barrier`) or for their tickets
(:func:`_tail_ticket`), count arrivals with atomics; that decides when and
which block adds, not what or in which order.)
"""

import math

import numpy as np
from numba import config, cuda, int64, uint32, uint64

__all__ = ["SIM", "TABLE", "DTYPES", "MAX_THREADS", "VARIANTS", "KERNELS", "KINDS"]

#: True under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
SIM = bool(config.ENABLE_CUDASIM)

#: ``(tpr, kv, blocks)`` of the row-kernel variants, by increasing capacity
#: ``tpr * kv`` (the longest row a variant holds in registers); the last one
#: also takes longer rows.  ``blocks``: ``{dtype: (forward, backward)}``, the
#: blocks a multiprocessor the kernels are compiled to fit (the launch
#: bound's second number, which caps the registers of a thread at
#: ``65536 / (threads * blocks)``), or None where the variant does not do that
#: pass (the forward and the backward of one row length may be best served
#: by different variants).  Chosen by ``ptxas -v`` for sm_90 (no or little
#: spilling; ``scripts/ptx_registers.py``) and then by timing on an H200
#: (``scripts/gpu_tune.py``, figures in ``docs/gpu_bench_h200.md``; the
#: 512x8 float32 backward at one block, about 105 registers with no
#: spills instead of 64 and spills at two: 55% -> 77% of copy at 4096x4096).
#: Also: threads per block of the warp-or-less variants (and of the column
#: sums); the largest ``kv`` whose backward holds ``dy`` and ``xhat`` in
#: registers between its two passes (wider variants re-read them, from L1);
#: the most bytes a thread holds (``kv * itemsize``) for which the kernels
#: prefetch the next row (a second set of registers; the backward only where
#: it holds its row too);
#: the window columns of a thread the backward sums through shared memory at
#: a time; the columns a thread computes before it stores them (see "Loads
#: before stores" in :func:`_make_variant`; by ``ptxas -v`` for sm_90, 4
#: spills no more than storing each column at once in all but three float64
#: kernels, 4-32 bytes more there; 8 spills more in 13, up to 260 bytes).
#: The simulator runs a Python thread per CUDA thread: there the same code
#: runs with small constants, so that small shapes reach every path (warp
#: and block groups, values held or re-read, looped rows, several windows).
if SIM:
    _ONE = {"float32": (1, 1), "float64": (1, 1)}
    _FWD = {"float32": (1, None), "float64": (1, None)}
    _BWD = {"float32": (None, 1), "float64": (None, 1)}
    TABLE = ((2, 2, _ONE), (4, 2, _ONE), (8, 2, _ONE), (8, 4, _ONE), (32, 2, _ONE),
             (64, 2, _FWD), (32, 4, _BWD), (64, 4, _ONE))
    MAX_THREADS = 64
    HOLD_MAX = 2
    PIPE_BYTES = 16
    _KC = 2
    STORE_CHUNK = 2
else:
    TABLE = (
        (4, 8, {"float32": (4, 3), "float64": (2, 2)}),
        (8, 8, {"float32": (4, 3), "float64": (2, 2)}),
        (16, 8, {"float32": (4, 3), "float64": (2, 2)}),
        (32, 8, {"float32": (4, 3), "float64": (2, 2)}),
        (32, 16, {"float32": (2, 2), "float64": (2, 2)}),
        (128, 8, {"float32": (8, 5), "float64": (4, 4)}),
        (128, 16, {"float32": (5, 4), "float64": (3, 3)}),
        (256, 16, {"float32": (2, None), "float64": (2, None)}),
        (512, 8, {"float32": (None, 1), "float64": (None, 1)}),
        (512, 16, {"float32": (1, 1), "float64": (1, 1)}),
        (256, 32, {"float32": (2, 2), "float64": (1, 1)}),
    )
    MAX_THREADS = 256
    HOLD_MAX = 8
    PIPE_BYTES = 64
    _KC = 8
    STORE_CHUNK = 4

#: ``(tpr, kv)`` of the variants whose backward prefetches its next row into
#: L2 (``l2_prefetch`` of :func:`_make_variant`).  512x16 (backward of
#: 4096 < D <= 8192): 16384x8192 float32 on an H200, 0.725 -> 0.590 ms
#: (52% -> 64% of copy bandwidth; scripts/gpu_tune.py, docs/gpu_bench_h200.md).
#: The widest variant, which loops over long rows, was slower with it (1.16 ->
#: 1.36 ms at 256x32); the others are unmeasured.  Under the simulator (no
#: caches: a no-op there), one variant that re-reads its row, for the path.
L2_PREFETCH = {(32, 4)} if SIM else {(512, 16)}

#: ``{(tpr, kv): dtypes}`` of the variants whose backward holds ``dy`` and
#: ``xhat`` of its row in registers with ``kv`` over :data:`HOLD_MAX`, and
#: so prefetches its next row into registers instead of L2 (``hold`` of
#: :func:`_make_variant`).  512x16 float32 (backward of 4096 < D <= 8192),
#: on an H200 (session 10, ``scripts/gpu_tune.py``): 16384x8192 0.587 ->
#: 0.486 ms, 64.6% -> 78.1% of copy bandwidth, for 128 registers and 60
#: bytes of spills (``ptxas -v``, sm_90); without the prefetch (16 bytes of
#: spills) 57.6%.  (float64 would spill hundreds of bytes.)  Under the
#: simulator, a variant past its HOLD_MAX, so that the path is tested.
HOLD_ROWS = {(8, 4): ("float32",)} if SIM else {(512, 16): ("float32",)}

#: Vector pieces: ``{(tpr, kv): {dtype: (forward, backward)}}``, the width
#: of the pieces of adjacent values in which a thread of that variant holds
#: its columns in each pass (``vec`` of :func:`_make_variant`; None or an
#: absent dtype: a value at a time; not the looping variants).  Their kernels
#: come in two builds of that layout: ``fwd_vec``/``bwd_vec`` read and write
#: whole pieces by vector accesses, for arrays aligned for them
#: (:func:`numba_ln.gpu._launch.vector_ok`); ``fwd``/``bwd`` a value at a
#: time, for any others.  Both give the same bits.  A backward that cannot
#: take pieces (its row not held in registers) keeps the plain layout.
#: On an H200 (``scripts/gpu_tune.py``, session 9, docs/gpu_bench_h200.md),
#: with the direct w, b reads below, 16-byte pieces of 4 floats took the
#: float32 forward from 67-77% of copy bandwidth to 83-91% in every variant
#: measured (4096x256 32x8, 4096x512 32x16, 4096x1024 128x8, 4096x2048
#: 128x16, 65536x128 16x8, 4096x4096 256x16, 16384x8192 512x16).  Pieces
#: were slower in the float32 backward (128x8: 63% -> 55%; 32x8: 43% ->
#: 42%; 512x8: 77% -> 74% at one block a multiprocessor, 55% -> 54% at two)
#: and in the float64 forward (2 doubles, 256x16: 82% -> 78%).  Session 10:
#: the 4x8 and 8x8 variants (D <= 32, <= 64), float32 forward 66% -> 86%
#: (65536x32) and 74% -> 87% (16384x64) of copy with direct w, b; the 4x8
#: backward 40% -> 44%, the 8x8 backward 41% -> 41% (so not taken).
#: Under the simulator, two variants, one with pieces in one pass of a dtype
#: only, so that the builds and their choice are tested.
VECTOR = {(8, 2): {"float32": (2, 2), "float64": (2, 2)},
          (32, 2): {"float32": (2, None), "float64": (None, 2)}} if SIM else {
    (4, 8): {"float32": (4, 4)},
    (8, 8): {"float32": (4, None)},
    (16, 8): {"float32": (4, None)},
    (32, 8): {"float32": (4, None)},
    (32, 16): {"float32": (4, None)},
    (128, 8): {"float32": (4, None)},
    (128, 16): {"float32": (4, None)},
    (256, 16): {"float32": (4, None)},
    (512, 16): {"float32": (4, None)},
}

#: ``{(tpr, kv): dtypes}`` of the variants whose forward reads ``w[j]``,
#: ``b[j]`` directly and applies them with no select (``wb_direct`` of
#: :func:`_make_variant`; not the looping variants).  They need a weight and a
#: bias of the row's length: for an absent one,
#: :func:`numba_ln.gpu._launch.forward` passes ones or ``-0.0`` (the bits
#: of no weight or bias, within a rounding with a bias: see
#: :func:`_make_variant`).  On an H200 (session 9), in the float32 forward
#: of the seven variants measured, 9-17% less time than the clamped,
#: selected reads (9-10% at D = 256, 512, 2048; 16-17% at the benchmark
#: shapes), and with vector pieces a further 1-5%; in the float64 forward
#: (256x16) 1.6% more, so not taken there.  Under the simulator, two
#: variants (a plain one and one of :data:`VECTOR`, float32 only), so that
#: the path is tested.
DIRECT_WB = {(4, 2): ("float32", "float64"), (8, 2): ("float32",)} if SIM else {
    (tpr, kv): ("float32",) for tpr, kv in VECTOR}

#: ``{(tpr, kv): dtypes}`` of the variants whose backward reads ``w[j]``
#: directly and computes ``dy * w[j]`` with no select where a thread's
#: columns are all in the row (``w_direct`` of :func:`_make_variant`; only
#: where the backward holds its row; not the looping variants).  They need
#: a weight of the row's length: for an absent one,
#: :func:`numba_ln.gpu._launch.backward` passes ones (the bits of no
#: weight; with one, dx within a rounding of the selecting kernel's: NVVM
#: fuses ``dy * w`` with an addition).  On an H200 (session 10,
#: ``scripts/gpu_tune.py``, rows that fill the variant), float32: 8x8 41.2%
#: -> 42.1% of copy bandwidth (16384x64), 16x8 75.9% -> 77.3% (65536x128),
#: 512x8 76.6% -> 77.6% (4096x4096), 128x8 62.6% -> 63.1% (4096x1024), 4x8
#: 39.8% -> 39.4%.  Adopted for 8x8, 16x8 and 512x8, then withdrawn: that
#: build called the group sums once in each branch, and the real-GPU test
#: of 512x8 at D = 4095 (a thread past the row's end beside full ones) gave
#: no result.  The kernel now calls them once; that form has not run on a
#: GPU, so none here until it has (1-2% is not worth an untried path).
#: Under the simulator, two variants (one of :data:`VECTOR`), so that the
#: path is tested.
DIRECT_W_BWD = {(4, 2): ("float32",), (8, 2): ("float32", "float64")} if SIM else {}

#: ``{(tpr, kv): cols}`` of the variants whose backward sums its partial
#: rows itself after a barrier of all its blocks, in slices of ``cols``
#: columns (``fused_cols`` of :func:`_make_variant`; a cooperative launch,
#: no column-sum kernel after it; not the looping variants nor the vector
#: builds).  None on a GPU: on an H200 (session 11, the sweep's ``fused``
#: candidates) slower everywhere: 4096x1024 56% of copy bandwidth against
#: 63%, 4096x4096 65% against 78%, 65536x128 68% against 78%.  (With the
#: barrier of then, whose waiting blocks polled with atomics; the ninth
#: sweep measures it again with :func:`_blocks_barrier`'s plain loads.)
#: Under the simulator, two variants (8 and 2 rows a block), so that the
#: path is tested.
FUSED_COLS = {(8, 4): 4, (32, 4): 16} if SIM else {}

#: The launches of a ``layer_norm_backward_fused`` kernel, each its
#: ``phase`` argument, bits of what it does: 1 the window sums (rows of
#: several windows), 2 the rows, 4 the column sums, 8 the barriers between
#: them.  On a GPU one cooperative launch of all of it; under the
#: simulator, whose blocks run one after another, one launch a part.
FUSED_PHASES = (1, 2, 4) if SIM else (15,)

#: The launches of a ``layer_norm_forward_coop`` kernel, each its ``phase``
#: argument: 2 all of it (a GPU, one cooperative launch); 0 the window
#: statistics, then 1 the rest (the simulator).
COOP_PHASES = (0, 1) if SIM else (2,)

#: ... and of the same kernel launched in clusters, a row group's windows a
#: cluster: 3 all of it, the barrier the cluster's (a GPU of compute
#: capability 9.0+); under the simulator, which has no clusters, the
#: phases of :data:`COOP_PHASES`.
CLUSTER_PHASES = (0, 1) if SIM else (3,)

#: The most blocks a cluster launch puts in a cluster: 8, the portable
#: cluster size (up to 16 on an H100 or H200 needs the kernel's
#: non-portable attribute); so rows of at most 8 of the widest variant's
#: windows (65536 values).
CLUSTER_MAX = 8

#: ``{variant suffix: (tail, cols)}`` of the variants whose backward sums
#: its partial rows by its own last blocks to finish (``tail_cols`` of
#: :func:`_make_variant`: the last ``tail`` blocks of each column window,
#: in slices of ``cols`` columns; no column-sum kernel after it, no barrier
#: of all blocks); keyed by :attr:`Variant.suffix` (``"128x16w"`` is
#: :data:`LONG`).  None on a GPU until measured (``scripts/gpu_tune.py``'s
#: ``tail`` candidates: the column-sum launch is about a quarter of the
#: backward at 4096x1024 and one of three launches at 32x65536).  Under
#: the simulator, a variant of several rows a block with vector builds
#: (three tail blocks: two launches), the widest (looping, two) and
#: :data:`LONG` (one: the ticket path in one launch), so that the paths
#: are tested.
TAIL_COLS = {"32x2": (3, 8), "64x4": (2, 16), "32x4w": (1, 16)} if SIM else {}

#: The dtypes every kernel is compiled for.
DTYPES = ("float32", "float64")

#: The column-sum block (:func:`_col_sum`; the launch:
#: :func:`numba_ln.gpu._launch.col_launch`; the kernel reads its shape, up
#: to ``COL_THREADS`` threads): ``COL_TX`` columns where there are more than
#: ``COL_FEW`` partial rows, else ``COL_TX_FEW``, by up to ``COL_TY`` rows
#: (a column's partials read ``COL_TY`` at a time).  On an H200 (session 10,
#: ``scripts/gpu_tune.py``, the column sums alone): with 132 partial rows,
#: 64 columns x 16 rows took 7.0 us at D = 8192 and 4.8 at 4096, against 9.4
#: and 6.1 for 16 x 64; with 8, 5.2 against 7.8 (D = 65536); with 396, 8
#: columns 3.9 us against 4.6 (D = 128); with 660 (D = 1024), 16 and 8
#: columns the same, 5.5 us, 64 columns 10.1.  Whatever the block, they do
#: not take under about 4 us; at D = 1024 that is a quarter of the backward
#: (the row kernel alone, Nsight Compute: 17.0 us, about 87% of copy
#: bandwidth).  Nor with a thread's loads issued 4, 8 or 16 rows at a time
#: (NVVM's unrolling issues 4 but the last 1-3 one at a time): no faster,
#: so they do not wait on dependent loads.  Under the simulator, small
#: blocks that still reach both.
COL_TX = 8
COL_TX_FEW = 16 if SIM else 64
COL_FEW = 4 if SIM else 256
COL_TY = 4 if SIM else 64
COL_THREADS = 32 if SIM else 1024

#: The backward of few long rows by columns (:func:`_bwd_cols`): threads a
#: block (a column each) and rows a thread loads at once (their loads in
#: flight together); it takes rows of several windows when there are at
#: most ``BWD_COLS_ROWS`` of them (:mod:`numba_ln.gpu._launch`), at most
#: ``COLS_THREADS``.
COLS_THREADS = 32 if SIM else 256
COLS_RB = 4 if SIM else 8

#: Bits of the ``flags`` argument.
HAS_WEIGHT = 1
HAS_BIAS = 2

_FULL_MASK = 0xFFFFFFFF


def _supports_launch_bounds():
    import inspect

    try:
        return "launch_bounds" in inspect.signature(cuda.jit).parameters
    except (TypeError, ValueError):
        return False


_HAS_BOUNDS = not SIM and _supports_launch_bounds()

#: Kernel name -> the launch bound it is compiled with (None: numba-cuda
#: without launch bounds, or the simulator); :func:`numba_ln.gpu.compile_ptx`
#: uses the same.
BOUNDS = {}


def _jit_kernel(fn, key, threads, blocks):
    """``cuda.jit`` with a launch bound of ``threads`` and the on-disk cache."""
    bounds = None
    if _HAS_BOUNDS:
        bounds = (threads, blocks) if blocks > 1 else (threads,)
    BOUNDS[key] = bounds
    if SIM:
        return cuda.jit(fn)
    if bounds is not None:
        return cuda.jit(launch_bounds=bounds, cache=True)(fn)
    return cuda.jit(cache=True)(fn)


_device = cuda.jit(device=True)

#: ``for k in _literal_unroll(tuple)``: the loop's body once for each value
#: (numba-cuda's; plain iteration under the simulator)
_literal_unroll = getattr(cuda, "literal_unroll", lambda values: values)


if SIM:
    @_device
    def _prefetch_l2(a, i):
        """(The simulator has no caches: nothing to do.)"""
        return

    # The vector accesses of :func:`_vector_access`, one element at a
    # time (the simulator has no vector loads; the same values).
    @_device
    def _vload2(a, i):
        return a[i], a[i + 1]

    @_device
    def _vload4(a, i):
        return a[i], a[i + 1], a[i + 2], a[i + 3]

    @_device
    def _vstore2(a, i, v):
        a[i] = v[0]
        a[i + 1] = v[1]

    @_device
    def _vstore4(a, i, v):
        a[i] = v[0]
        a[i + 1] = v[1]
        a[i + 2] = v[2]
        a[i + 3] = v[3]

    # (No programmatic dependent launch in the simulator: its launches run
    # one after the other.)
    @_device
    def _dep_wait():
        return

    @_device
    def _load_volatile(a, i):
        """``a[i]`` (the simulator has one copy of memory)."""
        return a[i]

    # (No clusters in the simulator: the kernel that uses it is launched
    # once per phase there instead.)
    @_device
    def _cluster_sync():
        return

else:
    from llvmlite import ir as _ir
    from numba import types as _types

    try:  # numba-cuda has its own copies (0.30 does); older releases use numba's
        from numba.cuda import cgutils as _cgutils
        from numba.cuda.extending import intrinsic as _intrinsic
    except ImportError:
        from numba.core import cgutils as _cgutils
        from numba.core.extending import intrinsic as _intrinsic

    def _item_pointer(context, builder, sig, args):
        """The address of ``a[i]`` in the code of an intrinsic whose first
        two arguments are a 1-D array ``a`` and an integer ``i``."""
        aty, ity = sig.args[0], sig.args[1]
        ary = context.make_array(aty)(context, builder, value=args[0])
        idx = context.cast(builder, args[1], ity, _types.intp)
        return _cgutils.get_item_pointer(context, builder, aty, ary, [idx])

    @_intrinsic
    def _prefetch_l2(typingctx, a, i):
        """``prefetch.L2 [&a[i]]`` for a 1-D array ``a``: the line holding
        ``a[i]`` is fetched into L2, with no register and no wait (PTX
        ``prefetch``, generic addressing; inline assembly, as numba-cuda's
        own cache-hint loads are written)."""
        if not (isinstance(a, _types.Array) and a.ndim == 1 and isinstance(i, _types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            ptr = _item_pointer(context, builder, sig, args)
            asm = _ir.InlineAsm(_ir.FunctionType(_ir.VoidType(), [ptr.type]),
                                "prefetch.L2 [$0];", "l", side_effect=True)
            builder.call(asm, [ptr])
            return context.get_dummy_value()

        return _types.void(a, i), codegen

    @_intrinsic
    def _load_volatile(typingctx, a, i):
        """``a[i]`` of a 1-D ``uint32`` array read from memory each time it
        is called (``ld.volatile``: neither kept in a register across a
        loop nor taken from a stale L1 line), for a thread that waits on a
        counter other blocks change (:func:`_blocks_barrier`,
        :func:`_tail_wait`): a plain load, not an atomic, so that the
        waiting blocks do not queue at the counter's L2 slice with the
        arrivals they wait for (as cooperative groups' grid barrier waits)."""
        if not (isinstance(a, _types.Array) and a.ndim == 1 and a.dtype == _types.uint32
                and isinstance(i, _types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            ptr = _item_pointer(context, builder, sig, args)
            asm = _ir.InlineAsm(_ir.FunctionType(_ir.IntType(32), [ptr.type]),
                                "ld.volatile.u32 $0, [$1];", "=r,l,~{memory}",
                                side_effect=True)
            return builder.call(asm, [ptr])

        return _types.uint32(a, i), codegen

    def _sm90_asm(text, doc):
        """An intrinsic of no arguments that emits the PTX instruction
        ``text`` when the kernel is compiled for compute capability 9.0 or
        later and nothing for earlier ones: NVVM folds
        ``__nvvm_reflect("__CUDA_ARCH")`` to the target's ``major*100 +
        minor*10`` and drops the dead branch (the PTX of sm_80 has no trace
        of it; tests/test_gpu_ptx.py).  It clobbers memory: no load or store
        is moved across it (as CUDA's own wrappers of these instructions
        declare them)."""

        def codegen(context, builder, sig, args):
            mod = builder.module
            i8p = _ir.IntType(8).as_pointer()
            fn = mod.globals.get("__nvvm_reflect")
            if fn is None:
                fn = _ir.Function(mod, _ir.FunctionType(_ir.IntType(32), [i8p]),
                                  "__nvvm_reflect")
            name = "__numba_ln_cuda_arch"
            text_gv = mod.globals.get(name)
            if text_gv is None:
                key = bytearray(b"__CUDA_ARCH\x00")
                arr = _ir.ArrayType(_ir.IntType(8), len(key))
                text_gv = _ir.GlobalVariable(mod, arr, name, addrspace=4)
                text_gv.initializer = _ir.Constant(arr, key)
                text_gv.global_constant = True
                text_gv.linkage = "internal"
            zero = _ir.Constant(_ir.IntType(32), 0)
            ptr = builder.addrspacecast(builder.gep(text_gv, [zero, zero]), i8p)
            arch = builder.call(fn, [ptr])
            with builder.if_then(builder.icmp_signed(">=", arch,
                                                     _ir.Constant(_ir.IntType(32), 900))):
                asm = _ir.InlineAsm(_ir.FunctionType(_ir.VoidType(), []), text,
                                    "~{memory}", side_effect=True)
                builder.call(asm, [])
            return context.get_dummy_value()

        def typer(typingctx):
            return _types.void(), codegen

        typer.__doc__ = doc
        return _intrinsic(typer)

    #: Programmatic dependent launch (compute capability 9.0+; a no-op in a
    #: grid launched without it, and compiled to nothing before 9.0):
    #: ``_dep_wait()`` waits until the grid this one depends on has
    #: completed and its writes are visible (``griddepcontrol.wait``); a
    #: kernel launched with the attribute (``pdl=True`` of
    #: :func:`numba_ln.gpu._fastlaunch.launch`) calls it before it touches
    #: memory.  The kernels before them do not call
    #: ``griddepcontrol.launch_dependents``: the next grid then launches as
    #: their blocks exit.  (Called at their start, it made the backward
    #: slower on an H200, 63% -> 58% of copy at 4096x1024, the waiting
    #: column-sum blocks sharing the multiprocessors; without it, 63% -> 67%.)
    _dep_wait = _sm90_asm("griddepcontrol.wait;", "griddepcontrol.wait")

    #: A barrier of the thread block cluster (compute capability 9.0+): every
    #: thread of the cluster's blocks waits until all have arrived; the
    #: writes before it, global memory's too, are visible to all of them
    #: after it (``barrier.cluster.arrive`` has release semantics and
    #: ``barrier.cluster.wait`` acquire semantics at cluster scope by
    #: default; cooperative groups' ``cluster.sync()``).  The hardware's
    #: barrier, no counter in memory: the blocks of a cluster run at once on
    #: the multiprocessors of one GPC.  Compiled to nothing before 9.0,
    #: where the kernel that calls it is never launched that way
    #: (:func:`numba_ln.gpu._launch.cluster_fits`).
    _cluster_sync = _sm90_asm("barrier.cluster.arrive;\n\tbarrier.cluster.wait;",
                              "barrier.cluster.arrive; barrier.cluster.wait")

    def _vector_access(width, store):
        """An intrinsic ``load(a, i) -> (a[i], ..., a[i+width-1])`` or
        ``store(a, i, values)`` of a 1-D array: one LLVM vector load or store
        (``ld.global.v4.f32``, ``ld.global.v2.f64`` ... in the PTX; float64 x
        4 is two ``v2`` accesses) declared aligned to its size, at most 16
        bytes (:func:`vector_align`).  The caller guarantees the alignment (a
        misaligned vector access is a GPU fault, not a wrong result)."""

        def typer(typingctx, a, i, v=None):
            if not (isinstance(a, _types.Array) and a.ndim == 1
                    and isinstance(a.dtype, _types.Float) and isinstance(i, _types.Integer)):
                return None
            tup = _types.UniTuple(a.dtype, width)
            if store:
                if not (isinstance(v, _types.UniTuple) and v.count == width
                        and v.dtype == a.dtype):
                    return None
                return _types.void(a, i, v), codegen
            return tup(a, i), codegen

        def codegen(context, builder, sig, args):
            aty = sig.args[0]
            ptr = _item_pointer(context, builder, sig, args)
            elt = context.get_data_type(aty.dtype)
            vty = _ir.VectorType(elt, width)
            vptr = builder.bitcast(ptr, vty.as_pointer(ptr.type.addrspace))
            align = vector_align(width, context.get_abi_sizeof(elt))
            if store:
                vec = _ir.Constant(vty, _ir.Undefined)
                for k, val in enumerate(_cgutils.unpack_tuple(builder, args[2], width)):
                    vec = builder.insert_element(vec, val, _ir.Constant(_ir.IntType(32), k))
                builder.store(vec, vptr, align=align)
                return context.get_dummy_value()
            vec = builder.load(vptr, align=align)
            vals = [builder.extract_element(vec, _ir.Constant(_ir.IntType(32), k))
                    for k in range(width)]
            return context.make_tuple(builder, sig.return_type, vals)

        if store:
            def _st(typingctx, a, i, v):
                return typer(typingctx, a, i, v)
            return _intrinsic(_st)

        def _ld(typingctx, a, i):
            return typer(typingctx, a, i)
        return _intrinsic(_ld)

    _vload2 = _vector_access(2, False)
    _vload4 = _vector_access(4, False)
    _vstore2 = _vector_access(2, True)
    _vstore4 = _vector_access(4, True)


def vector_align(width, itemsize):
    """The alignment in bytes that vector accesses of ``width`` values of
    ``itemsize`` bytes are declared with (and need)."""
    return min(16, width * itemsize)


# --------------------------------------------------------------------------
# Group reductions.  ``red`` is a shared array (see ``RED`` in
# :func:`_make_variant`); every thread of the block must call these together
# (they may synchronise).  ``tpr`` is the variant's constant.
# --------------------------------------------------------------------------

@_device
def _group_sum_shfl(v, red, tpr):
    if tpr <= 32:
        off = tpr >> 1
        while off > 0:
            v += cuda.shfl_xor_sync(_FULL_MASK, v, off)
            off >>= 1
        return v
    # A block per row (blockDim.y == 1): warps first, then the warp sums in
    # warp order, read by every thread.
    off = 16
    while off > 0:
        v += cuda.shfl_xor_sync(_FULL_MASK, v, off)
        off >>= 1
    tid = cuda.threadIdx.x
    cuda.syncthreads()  # the previous reduction's readers are done with red
    if tid % 32 == 0:
        red[tid // 32] = v
    cuda.syncthreads()
    t = red[0]
    for i in range(1, tpr // 32):
        t += red[i]
    return t


@_device
def _group_sum_smem(v, red, tpr):
    base = cuda.threadIdx.y * tpr
    cuda.syncthreads()
    red[base + cuda.threadIdx.x] = v
    cuda.syncthreads()
    t = red[base]
    for i in range(1, tpr):
        t += red[base + i]
    return t


@_device
def _group_sum2_shfl(a, q, red, tpr):
    """Two sums at once: one shuffle tree and one shared round for both."""
    if tpr <= 32:
        off = tpr >> 1
        while off > 0:
            a += cuda.shfl_xor_sync(_FULL_MASK, a, off)
            q += cuda.shfl_xor_sync(_FULL_MASK, q, off)
            off >>= 1
        return a, q
    off = 16
    while off > 0:
        a += cuda.shfl_xor_sync(_FULL_MASK, a, off)
        q += cuda.shfl_xor_sync(_FULL_MASK, q, off)
        off >>= 1
    tid = cuda.threadIdx.x
    nw = tpr // 32
    cuda.syncthreads()
    if tid % 32 == 0:
        red[tid // 32] = a
        red[nw + tid // 32] = q
    cuda.syncthreads()
    ta = red[0]
    tq = red[nw]
    for i in range(1, nw):
        ta += red[i]
        tq += red[nw + i]
    return ta, tq


@_device
def _group_sum2_smem(a, q, red, tpr):
    base = cuda.threadIdx.y * tpr
    half = cuda.blockDim.x * cuda.blockDim.y
    cuda.syncthreads()
    red[base + cuda.threadIdx.x] = a
    red[half + base + cuda.threadIdx.x] = q
    cuda.syncthreads()
    ta = red[base]
    tq = red[half + base]
    for i in range(1, tpr):
        ta += red[base + i]
        tq += red[half + base + i]
    return ta, tq


@_device
def _any_shfl(flag, tpr):
    # Groups of a warp or less must agree for the warp's shuffles (a warp
    # vote); a block-wide group is uniform already (its flag comes from a
    # block reduction).  Groups never wait on other warps.
    if tpr <= 32:
        return cuda.any_sync(_FULL_MASK, flag) != 0
    return flag


@_device
def _any_smem(flag, tpr):
    # The simulator's reductions synchronise the whole block, so every group
    # must take the same branch: any group's flag counts for all.
    return cuda.syncthreads_or(flag) != 0


@_device
def _chan(ma, qa, na, mb, qb, nb, half):
    """Chan et al.'s pairwise update: the mean, sum of squared deviations
    and count of two sets from theirs (``a`` the lower-indexed set, so that
    both partners of a butterfly compute the same bits).  ``half``: 0.5 in
    the dtype."""
    n = na + nb
    if n == 0:
        return ma, qa, n
    d = mb - ma
    # (equal counts, every pair but the row's tail: no division)
    f = half if na == nb else nb / n
    return ma + d * f, qa + qb + d * d * na * f, n


@_device
def _group_chan_shfl(m, q, c, red, tpr):
    """:func:`_chan` over the group: every thread ends with the same triple."""
    tx = cuda.threadIdx.x
    half = red.dtype.type(0.5)
    off = (tpr if tpr <= 32 else 32) >> 1
    while off > 0:
        mo = cuda.shfl_xor_sync(_FULL_MASK, m, off)
        qo = cuda.shfl_xor_sync(_FULL_MASK, q, off)
        co = cuda.shfl_xor_sync(_FULL_MASK, c, off)
        if tx & off:
            m, q, c = _chan(mo, qo, co, m, q, c, half)
        else:
            m, q, c = _chan(m, q, c, mo, qo, co, half)
        off >>= 1
    if tpr <= 32:
        return m, q, c
    nw = tpr // 32
    cuda.syncthreads()  # the previous reduction's readers are done with red
    if tx % 32 == 0:
        red[tx // 32] = m
        red[nw + tx // 32] = q
        red[2 * nw + tx // 32] = c
    cuda.syncthreads()
    m = red[0]
    q = red[nw]
    c = red[2 * nw]
    for i in range(1, nw):
        m, q, c = _chan(m, q, c, red[i], red[nw + i], red[2 * nw + i], half)
    return m, q, c


@_device
def _group_chan_smem(m, q, c, red, tpr):
    base = cuda.threadIdx.y * tpr
    half = red.dtype.type(0.5)
    nt = cuda.blockDim.x * cuda.blockDim.y
    cuda.syncthreads()
    red[base + cuda.threadIdx.x] = m
    red[nt + base + cuda.threadIdx.x] = q
    red[2 * nt + base + cuda.threadIdx.x] = c
    cuda.syncthreads()
    m = red[base]
    q = red[nt + base]
    c = red[2 * nt + base]
    for i in range(1, tpr):
        m, q, c = _chan(m, q, c, red[base + i], red[nt + base + i], red[2 * nt + base + i],
                        half)
    return m, q, c


_group_chan = _group_chan_smem if SIM else _group_chan_shfl
_group_sum = _group_sum_smem if SIM else _group_sum_shfl
_group_sum2 = _group_sum2_smem if SIM else _group_sum2_shfl
_block_any = _any_smem if SIM else _any_shfl


# --------------------------------------------------------------------------
# Row statistics.  ``tpr``, ``kv``: the variant's constants.
# --------------------------------------------------------------------------

@_device
def _col(tx, k, tpr, vec):
    """The column of a thread's slot ``k`` (``tx`` its index in a group of
    ``tpr``): ``tx + k*tpr``, or with ``vec > 1`` (vector access, see
    :func:`_make_variant`) slot ``k`` of the thread's ``k // vec``-th piece of
    ``vec`` adjacent columns, the group's pieces side by side."""
    if vec == 1:
        return tx + k * tpr
    return (k // vec) * (tpr * vec) + tx * vec + k % vec


@_device
def _vload_into(xr, i, xv, k, vec, vacc):
    """``xv[k:k+vec] = xr[i:i+vec]``: by one vector load (:func:`_vector_access`)
    when ``vacc``, else a value at a time (the same values, for arrays that
    are not aligned for the vector load)."""
    if not vacc:
        for t in range(vec):
            xv[k + t] = xr[i + t]
    elif vec == 4:
        v = _vload4(xr, i)
        xv[k] = v[0]
        xv[k + 1] = v[1]
        xv[k + 2] = v[2]
        xv[k + 3] = v[3]
    elif vec == 2:
        v2 = _vload2(xr, i)
        xv[k] = v2[0]
        xv[k + 1] = v2[1]


@_device
def _vstore_from(yr, i, hb, k, vec, vacc):
    """``yr[i:i+vec] = hb[k:k+vec]``: by one vector store (:func:`_vector_access`)
    when ``vacc``, else a value at a time."""
    if not vacc:
        for t in range(vec):
            yr[i + t] = hb[k + t]
    elif vec == 4:
        _vstore4(yr, i, (hb[k], hb[k + 1], hb[k + 2], hb[k + 3]))
    elif vec == 2:
        _vstore2(yr, i, (hb[k], hb[k + 1]))


@_device
def _load_row(xr, xv, n, tx, tpr, kv, vec, vacc):
    """Registers ``xv[k] = xr[_col(tx, k)]`` (zero past the end); whole
    pieces by vector loads when ``vacc`` (see :func:`_vload_into`)."""
    T = xr.dtype.type
    if _col(tx, kv - 1, tpr, vec) < n:
        # Every column of the thread is in the row: unsigned offsets from
        # one base address (``[base + imm]`` loads, no per-load address).
        if vec == 1:
            t0 = uint64(tx)
            for k in range(kv):
                xv[k] = xr[t0 + uint64(k * tpr)]
        else:
            t0 = uint64(tx * vec)
            for kp in range(kv // vec):
                _vload_into(xr, t0 + uint64(kp * tpr * vec), xv, kp * vec, vec, vacc)
        return
    last = n - 1
    for k in range(kv):
        # Clamped index, masked value: no branch, so every load of the row is
        # in flight at once (a guarded load would wait for the one before).
        j = _col(tx, k, tpr, vec)
        v = xr[uint32(min(j, last))]
        xv[k] = v if j < n else T(0)


@_device
def _shifted_sums(xr, xv, in_regs, n, tx, tpr, kv, s, c, vec):
    """This thread's ``sum(x*s - c)`` and ``sum((x*s - c)**2)`` over its columns."""
    T = xr.dtype.type
    a = T(0)
    q = T(0)
    if in_regs:
        for k in range(kv):
            d = xv[k] * s - c
            d = d if _col(tx, k, tpr, vec) < n else T(0)
            a += d
            q += d * d
    else:
        # kv columns at a time into xv, their loads issued together; the
        # same additions in the same order
        for c0 in range(0, n, tpr * kv):
            _load_row(xr[c0:], xv, n - c0, tx, tpr, kv, 1, False)
            for k in range(kv):
                d = xv[k] * s - c
                d = d if c0 + tx + k * tpr < n else T(0)
                a += d
                q += d * d
    return a, q


@_device
def _redo_scale(a):
    """The exact power of two a row is redone at when its sums overflow, for
    the dtype of array ``a``: 2**-600 (float64), 2**-100 (float32)."""
    T = a.dtype.type
    if T(1e-300) > T(0):
        return T(2.0 ** -600)
    return T(2.0 ** -100)


@_device
def _two_pass(xr, xv, in_regs, n, red, tpr, kv, s, vec):
    """One attempt of :func:`_row_stats` by the shifted two-pass (two group
    reductions): ``(m1, dm, var, bad)``, ``x*s - m1`` exact near the mean."""
    T = xr.dtype.type
    tx = cuda.threadIdx.x
    nf = T(n)
    a, _q = _shifted_sums(xr, xv, in_regs, n, tx, tpr, kv, s, T(0), vec)
    m1 = _group_sum(a, red, tpr) / nf
    a, q = _shifted_sums(xr, xv, in_regs, n, tx, tpr, kv, s, m1, vec)
    sd, sq = _group_sum2(a, q, red, tpr)
    dm = sd / nf
    var = sq / nf - dm * dm
    if var < T(0):
        var = T(0)
    return m1, dm, var, not (m1 - m1 == T(0) and var - var == T(0))


@_device
def _one_reduction(xr, xv, n, red, tpr, kv, s):
    """One attempt of :func:`_row_stats` with one group reduction, for a row
    held in registers: each thread's mean and squared deviations of its
    ``x*s - c`` (two passes over its registers), combined over the group by
    Chan's update.  ``c`` is the row's first value (read by every thread), a
    shift that keeps the thread means small next to a large common offset.
    Returns ``(c, dm, var, bad)``."""
    T = xr.dtype.type
    tx = cuda.threadIdx.x
    cnt = min(kv, max(0, (n - tx + tpr - 1) // tpr))
    c = xr[0] * s
    a = T(0)
    for k in range(kv):
        d = xv[k] * s - c
        a += d if k < cnt else T(0)
    mt = a / T(cnt) if cnt > 0 else T(0)
    q = T(0)
    for k in range(kv):
        d = xv[k] * s - c - mt
        q += d * d if k < cnt else T(0)
    dm, m2, _n = _group_chan(mt, q, T(cnt), red, tpr)
    var = m2 / T(n)
    return c, dm, var, not (c - c == T(0) and dm - dm == T(0) and var - var == T(0))


@_device
def _row_stats(xr, xv, in_regs, n, red, tpr, kv, chan, vec):
    """``(s, m1, dm, var)`` of a row: its mean is ``(m1 + dm) / s`` and the
    biased variance ``var / s**2``.  By :func:`_one_reduction` when ``chan``
    (a compile-time constant of the variant; the row in registers), else by
    :func:`_two_pass`.  When a sum overflows (or the row has NaN/Inf), the
    row is redone at the scale :func:`_redo_scale`.  ``vec``: the layout of
    the thread's columns (:func:`_col`)."""
    T = xr.dtype.type
    s = T(1)
    m1 = T(0)
    dm = T(0)
    var = T(0)
    for attempt in range(2):
        if chan:
            m1, dm, var, bad = _one_reduction(xr, xv, n, red, tpr, kv, s)
        else:
            m1, dm, var, bad = _two_pass(xr, xv, in_regs, n, red, tpr, kv, s, vec)
        if attempt == 0:
            if not _block_any(bad, tpr):
                break
            if bad:
                s = _redo_scale(xr)
    return s, m1, dm, var


@_device
def _scales(xr, s, m1, dm, var, eps):
    """``(mean, rstd, mult)`` from :func:`_row_stats`' results: ``y`` is
    ``((x*s - m1) - dm) * mult``.  ``var / s**2`` may overflow where the
    scaled variance does not (a row near the top of the range): then
    ``rstd = 1/sqrt(var) * s`` (eps is negligible there)."""
    T = xr.dtype.type
    mu = (m1 + dm) / s
    v = var / s / s  # (s * s would underflow)
    if v - v == T(0) or not (var - var == T(0)):
        rs = T(1) / math.sqrt(v + eps)
        mult = rs / s
    else:
        mult = T(1) / math.sqrt(var)
        rs = mult * s
    return mu, rs, mult


@_device
def _g(dyv, w, j, has_w):
    """``dyv * w[j]``, or ``dyv`` without a weight.

    Without a branch: ``w`` is read whether real or a 1-element dummy (the
    index clamped to its length; an L1 hit), and the flag selects.  A branch
    here would let the compiler make a copy of the row loop for each
    combination of flags, each holding its own hoisted column addresses in
    registers (measured: 69 -> 128 registers and 584 spilled bytes in the
    split forward)."""
    wj = w[min(j, uint32(w.shape[0] - 1))]
    return dyv * wj if has_w else dyv


@_device
def _affine(h, w, b, j, has_w, has_b):
    """``h * w[j] + b[j]``, each where the layer has it (no branch: see :func:`_g`)."""
    h = _g(h, w, j, has_w)
    bj = b[min(j, uint32(b.shape[0] - 1))]
    return h + bj if has_b else h


@_device
def _apply_chunk(xr, xv, hb, held, c0, n, s, m1, dm, mult, w, b, has_w, has_b, yr, tpr, kv, ks,
                 vec):
    """``yr[j] = affine(((x*s - m1) - dm) * mult)`` for this thread's ``kv``
    columns ``j = c0 + _col(tx, k)`` below ``n``: ``x`` from registers ``xv``
    (``held``) or from ``xr``.  ``ks`` columns at a time, all their loads
    first (the results in ``hb``, ``ks`` registers), then their stores: a
    load placed after a store waits for it, since the compiler cannot move it
    above a store to an array that may alias it."""
    for k0 in range(0, kv, ks):
        _apply_piece(xr, xv, hb, held, k0, c0, n, s, m1, dm, mult, w, b, has_w, has_b, yr,
                     tpr, ks, vec)


@_device
def _apply_piece(xr, xv, hb, held, k0, c0, n, s, m1, dm, mult, w, b, has_w, has_b, yr, tpr, ks,
                 vec):
    """The chunk of :func:`_apply_chunk` of a thread's columns ``k0 ...
    k0 + ks - 1``."""
    tx = cuda.threadIdx.x
    last = n - 1
    for kk in range(ks):
        jc = uint32(min(c0 + _col(tx, k0 + kk, tpr, vec), last))
        xk = xv[k0 + kk] if held else xr[jc]
        hb[kk] = _affine(((xk * s - m1) - dm) * mult, w, b, jc, has_w, has_b)
    for kk in range(ks):
        j = c0 + _col(tx, k0 + kk, tpr, vec)
        if j < n:
            yr[uint32(j)] = hb[kk]


@_device
def _prefetch_rows(a, b, r, c0, n, tpr, kv):
    """Fetch this thread's ``kv`` columns ``c0 + tx + k*tpr`` of rows
    ``a[r]`` and ``b[r]`` into L2 (:func:`_prefetch_l2`)."""
    tx = cuda.threadIdx.x
    last = n - 1
    ar = a[r]
    br = b[r]
    for k in range(kv):
        jc = uint32(min(c0 + tx + k * tpr, last))
        _prefetch_l2(ar, jc)
        _prefetch_l2(br, jc)


@_device
def _sum_windows(sums, r, nwin):
    """``(sum(sums[0, r, :nwin]), sum(sums[1, r, :nwin]))`` added in window order, the
    loads 8 at a time (clamped index, masked value) so that they are in
    flight together."""
    T = sums.dtype.type
    a = T(0)
    q = T(0)
    last = nwin - 1
    for i0 in range(0, nwin, 8):
        for k in range(8):
            i = min(i0 + k, last)
            ai = sums[0, r, i]
            qi = sums[1, r, i]
            a += ai if i0 + k < nwin else T(0)
            q += qi if i0 + k < nwin else T(0)
    return a, q


@_device
def _combine_at(part, r, n, cw, nwin, red, tpr, s):
    """One attempt of :func:`_combine_windows` at scale ``s``: ``(c, lo,
    var, bad)``, the group's threads each taking every ``tpr``-th window."""
    T = part.dtype.type
    tx = cuda.threadIdx.x
    nf = T(n)
    c = part[r, 0, 1] * (s / part[r, 0, 0])
    lo = T(0)
    for i in range(tx, nwin, tpr):
        f = s / part[r, i, 0]
        nwi = T(min(cw, n - i * cw))
        lo += nwi * ((part[r, i, 1] * f - c) + part[r, i, 2] * f)
    lo = _group_sum(lo, red, tpr) / nf
    m2 = T(0)
    for i in range(tx, nwin, tpr):
        f = s / part[r, i, 0]
        nwi = T(min(cw, n - i * cw))
        d = ((part[r, i, 1] * f - c) + part[r, i, 2] * f) - lo
        m2 += part[r, i, 3] * f * f * nwi + nwi * d * d
    var = _group_sum(m2, red, tpr) / nf
    return c, lo, var, not (c - c == T(0) and lo - lo == T(0) and var - var == T(0))


@_device
def _combine_windows(part, r, n, cw, nwin, red, tpr):
    """``(s, c, lo, var)`` of row ``r`` from its windows' statistics, as
    :func:`_row_stats` gives them for the whole row.

    Chan et al.'s pairwise update, with the shift ``c`` (window 0's ``m1``) kept
    apart from the small correction ``lo``: the row's mean is
    ``(c + lo) / s`` and ``x*s - c`` stays exact near the mean.  At scale 1
    when every window is and nothing overflows; else at the small scale.
    The group's ``tpr`` threads share the windows and sum through the group
    reductions (every thread of the block calls this together), so a block
    spends ``nwin / tpr`` steps on it, not ``nwin`` (a row of 10**7 floats
    has 1221 windows, each of whose blocks combines them all).
    """
    T = part.dtype.type
    scaled = T(0)
    for i in range(cuda.threadIdx.x, nwin, tpr):
        scaled += T(0) if part[r, i, 0] == T(1) else T(1)
    s = T(1) if _group_sum(scaled, red, tpr) == T(0) else _redo_scale(part)
    c = T(0)
    lo = T(0)
    var = T(0)
    for attempt in range(2):
        c, lo, var, bad = _combine_at(part, r, n, cw, nwin, red, tpr, s)
        if attempt == 0:
            if not _block_any(bad, tpr):
                break
            if bad:
                s = _redo_scale(part)
    return s, c, lo, var


@_device
def _window_grid(nwin, cw):
    """``(win, g0, G, c0)`` of this block in a grid of ``G * nwin`` blocks
    over column windows of ``cw``: block ``i`` takes window ``win = i % nwin``
    (its first column ``c0``) of row slot ``g0 = i // nwin``."""
    win = cuda.blockIdx.x % nwin
    return win, cuda.blockIdx.x // nwin, cuda.gridDim.x // nwin, win * cw


@_device
def _window_stats(x, part, r, active, win, c0, nw, red, xv, tpr, kv):
    """The split forward's first half for row ``r``'s window ``win`` (its
    ``nw`` columns from ``c0``, held in ``xv``): ``part[r, win] = (s, m1,
    dm, var)`` as :func:`_row_stats` gives them for the window alone
    (written where the row is ``active``)."""
    xr = x[r, c0:c0 + nw]
    _load_row(xr, xv, nw, cuda.threadIdx.x, tpr, kv, 1, False)
    s, m1, dm, var = _row_stats(xr, xv, True, nw, red, tpr, kv, False, 1)
    if active and cuda.threadIdx.x == 0:
        part[r, win, 0] = s
        part[r, win, 1] = m1
        part[r, win, 2] = dm
        part[r, win, 3] = var


@_device
def _apply_window(x, w, b, flags, eps, part, y, stats, r, active, win, c0, nwin, cw, red, hb,
                  tpr, kv, ks):
    """The split forward's second half for row ``r``'s window ``win``: its
    ``nwin`` windows' statistics combined (:func:`_combine_windows`), the
    window's ``y`` (x read again), and window 0 writes ``mean``, ``rstd``
    (``stats``), where the row is ``active``."""
    n = x.shape[1]
    s, c, lo, var = _combine_windows(part, r, n, cw, nwin, red, tpr)
    mu, rs, mult = _scales(x, s, c, lo, var, eps)
    if active:
        _apply_chunk(x[r], hb, hb, False, c0, n, s, c, lo, mult, w, b,
                     (flags & HAS_WEIGHT) != 0, (flags & HAS_BIAS) != 0, y[r], tpr, kv, ks, 1)
        if win == 0 and cuda.threadIdx.x == 0:
            stats[0, r] = mu
            stats[1, r] = rs


@_device
def _blocks_barrier(bar, g, nblocks, master):
    """Every thread of the ``nblocks`` blocks that call this with the same
    ``g`` waits until all of them have called it; their global writes
    before it are visible to all of them after it.

    ``bar[g]``: a zeroed ``uint32`` counter of the group, reusable by the
    next launch.  Cooperative groups' grid barrier, for a group: each
    block's first thread adds 1 to it, but one block of the group (its
    ``master``) adds ``2**31 - (nblocks - 1)``, so that the arrivals add
    ``2**31`` in all: the counter's top bit flips when, and only when, the
    last block arrives, whatever their order, and its other bits come back
    to zero.  A block waits for the flip reading the counter with plain
    loads (:func:`_load_volatile`); one atomic a block.  The fences around
    it are cooperative groups': the block's writes are published before
    its arrival, and what the others wrote is seen after the wait.  The
    blocks must all be resident at once (a cooperative launch:
    :func:`numba_ln.gpu._fastlaunch.launch` with ``cooperative=True``), or
    the waiting ones would keep the others from a multiprocessor.  An
    atomic counter, not a sum: the results' bits do not depend on the
    order of arrival.  (Not under the simulator, which runs the blocks one
    after another: there the kernels that use it are launched once per
    phase instead.)  Before session 12 the waiting blocks polled with
    atomics, queueing behind the arrivals at the counter's L2 slice."""
    cuda.syncthreads()
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        add = uint32(0x80000000 - (nblocks - 1)) if master else uint32(1)
        cuda.threadfence()
        old = cuda.atomic.add(bar, g, add)
        while ((old ^ _load_volatile(bar, g)) & uint32(0x80000000)) == uint32(0):
            pass
        cuda.threadfence()
    cuda.syncthreads()


@_device
def _tail_ticket(tick, g, slot):
    """This block's ticket of group ``g``, once its partial sums are
    written: how many of the group's blocks took one before it (``tick[2g]``
    counts them; ``slot``: a shared ``uint32`` to hand it to the block's
    threads).  The fences are those of :func:`_blocks_barrier`: the block's
    writes published before it takes a ticket, the others' seen after."""
    cuda.syncthreads()
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        cuda.threadfence()
        slot[0] = cuda.atomic.add(tick, 2 * g, uint32(1))
        cuda.threadfence()
    cuda.syncthreads()
    return int64(slot[0])


@_device
def _tail_wait(tick, g, nblocks):
    """Wait until all ``nblocks`` blocks of group ``g`` have taken their
    ticket (:func:`_tail_ticket`): their writes are then visible."""
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        while _load_volatile(tick, 2 * g) != uint32(nblocks):
            pass
        cuda.threadfence()
    cuda.syncthreads()


@_device
def _tail_release(tick, g, ntail):
    """The ``ntail`` blocks that waited in group ``g`` are done with its
    counters: the last of them zeroes them for the next launch
    (``tick[2g + 1]`` counts them; one needs no count)."""
    if cuda.threadIdx.x == 0 and cuda.threadIdx.y == 0:
        if ntail == 1:
            cuda.atomic.exch(tick, 2 * g, uint32(0))
        elif cuda.atomic.add(tick, 2 * g + 1, uint32(1)) == uint32(ntail - 1):
            cuda.atomic.exch(tick, 2 * g + 1, uint32(0))
            cuda.atomic.exch(tick, 2 * g, uint32(0))


def tail_phases(ntail):
    """The launches of a ``layer_norm_backward_tail`` kernel whose groups
    end in ``ntail`` blocks, each its ``phase`` argument, bits of what it
    does: 2 the rows, 4 the column sums, 8 the tickets (and the wait of
    the tail blocks).  On a GPU one launch of all of it (14).  Under the
    simulator, whose blocks run one after another in order, one launch
    too where one block ends a group (its ticket is the last: no wait);
    else the rows (2), then the column sums (4), a block's row slot
    standing for its ticket."""
    return (14,) if ntail == 1 or not SIM else (2, 4)


# --------------------------------------------------------------------------
# The row kernels of one variant.
# --------------------------------------------------------------------------

class Variant:
    """The row kernels specialised on ``tpr`` threads a row and ``kv`` values
    a thread (compile-time constants; see the module docstring).

    Attributes: ``tpr``, ``kv``, ``rows_per_block`` (``R``), ``threads`` (a
    block's), ``capacity`` (``tpr * kv``, a row or column window), ``hold``
    (per dtype: the backward keeps ``dy`` and ``xhat`` in registers), ``pipe`` (per
    dtype: a block loads its next row while it works on the current one, see
    :func:`_make_variant`; launched as one wave of resident blocks),
    ``loops`` (the widest variant and :data:`LONG`: rows longer than
    ``capacity``), ``direct_wb`` (:data:`DIRECT_WB`), ``bwd_direct_w``
    (:data:`DIRECT_W_BWD`), ``bwd_fused`` (dtype -> the backward with
    fused column sums, :data:`FUSED_COLS`), ``tail_cols``, ``bwd_tail`` and
    ``bwd_tail_vec`` (:data:`TAIL_COLS`), ``blocks`` (its
    :data:`TABLE` entry's), ``grid`` (:data:`LONG_ROWS`'s, else None), and the
    kernels, each a
    dict from dtype name to the kernel compiled for it: ``fwd``, ``bwd``,
    plus, for the widest, ``fwd_part``, ``fwd_apply``, ``fwd_coop``, ``bwd_rowsums`` (for
    :data:`LONG`, ``bwd_rowsums``), and
    for the variants of :data:`VECTOR`, ``fwd_width`` and ``bwd_width``
    (dtype name -> the pieces' width in that pass), ``fwd_vec`` and
    ``bwd_vec`` (their vector-access builds).
    """

    def __init__(self, tpr, kv, blocks, loops, tag="", grid=None):
        self.tpr = tpr
        self.kv = kv
        self.blocks = blocks
        #: the blocks a backward launch aims at (row slots x windows), or
        #: None: one full wave (:func:`numba_ln.gpu._launch.backward_launch`)
        self.grid = grid
        self.threads = MAX_THREADS if tpr <= 32 else tpr
        self.rows_per_block = self.threads // tpr
        self.capacity = tpr * kv
        #: dtype name -> whether the backward holds its row in registers
        #: (``kv <= HOLD_MAX``, or :data:`HOLD_ROWS`; never a looping variant)
        self.hold = {dt: not loops and (kv <= HOLD_MAX or dt in HOLD_ROWS.get((tpr, kv), ()))
                     for dt in DTYPES}
        self.pipe = {dt: kv * np.dtype(dt).itemsize <= PIPE_BYTES and not loops for dt in DTYPES}
        self.loops = loops
        self.tag = tag
        self.suffix = f"{tpr}x{kv}{tag}"
        #: the passes this variant does: "forward", "backward"
        self.passes = tuple(p for i, p in enumerate(("forward", "backward"))
                            if blocks[DTYPES[0]][i] is not None)
        for attr in set(_ATTR.values()):
            setattr(self, attr, {})
        #: dtype name -> the width of the vector pieces of the forward, of the
        #: backward (:data:`VECTOR`), where that pass has a vector-access build
        self.fwd_width, self.bwd_width, self.fwd_vec, self.bwd_vec = {}, {}, {}, {}
        #: dtype names whose forward reads w[j], b[j] directly: w and b of D
        #: values (:data:`DIRECT_WB`; never a looping variant: the widest, or
        #: :data:`LONG`, which may share a ``(tpr, kv)`` with one of the table)
        self.direct_wb = frozenset(() if loops else DIRECT_WB.get((tpr, kv), ()))
        #: dtype names whose backward reads w[j] directly (:data:`DIRECT_W_BWD`)
        self.bwd_direct_w = frozenset(() if loops else DIRECT_W_BWD.get((tpr, kv), ()))
        #: ``(tail, cols)`` of the backward that sums its own partial rows
        #: (:data:`TAIL_COLS`; its kernels ``bwd_tail``, ``bwd_tail_vec``), or None
        self.tail_cols = TAIL_COLS.get(self.suffix)
        self.bwd_tail_vec = {}
        for dtype in DTYPES:
            widths = (None if loops else VECTOR.get((tpr, kv), {}).get(dtype)) or (None, None)
            for i, pass_ in enumerate(("forward", "backward")):
                n = blocks[dtype][i]
                if n is None:
                    continue
                args = (pass_, tpr, kv, loops, self.pipe[dtype])
                kw = dict(l2_prefetch=(tpr, kv) in L2_PREFETCH, wb_direct=dtype in self.direct_wb,
                          w_direct=dtype in self.bwd_direct_w, hold=self.hold[dtype],
                          tail_cols=self.tail_cols)
                fused = dict(fused_cols=None if loops else FUSED_COLS.get((tpr, kv)))
                width = widths[i] or 1
                builds = [("", _pass_kernels(*args, vec=width, vec_access=False, **kw, **fused))]
                if width > 1 and not builds[0][1]:  # a backward that cannot take pieces
                    width, builds = 1, [("", _pass_kernels(*args, **kw, **fused))]
                if width > 1:
                    (self.fwd_width, self.bwd_width)[i][dtype] = width
                    builds.append((f"_v{width}", _pass_kernels(*args, vec=width, **kw)))
                for tag, fns in builds:
                    for kind, fn in fns.items():
                        key = f"{kind}_{self.suffix}{tag}[{dtype}]"
                        kernel = _jit_kernel(fn, key, self.threads, n)
                        attr = _ATTR[kind] + ("_vec" if tag else "")
                        getattr(self, attr)[dtype] = KERNELS[key] = kernel
                        KINDS[key] = kind

    def __repr__(self):
        tag = f", tag={self.tag!r}" if self.tag else ""
        return f"Variant(tpr={self.tpr}, kv={self.kv}{tag})"


_ATTR = {"layer_norm_forward": "fwd", "layer_norm_forward_split_stats": "fwd_part",
         "layer_norm_forward_split_apply": "fwd_apply",
         "layer_norm_forward_coop": "fwd_coop", "layer_norm_backward_rowsums":
         "bwd_rowsums", "layer_norm_backward": "bwd", "layer_norm_backward_fused": "bwd_fused",
         "layer_norm_backward_tail": "bwd_tail"}


def _pass_kernels(pass_, *args, **kw):
    """The kernels of :func:`_make_variant` ``(*args, **kw)`` that do
    ``pass_`` ("forward" or "backward")."""
    return {kind: fn for kind, fn in _make_variant(*args, **kw).items()
            if kind.startswith("layer_norm_forward") == (pass_ == "forward")}


def _make_variant(tpr, kv, loops, pipe, chan=False, acc_smem=False, store_chunk=None,
                  l2_prefetch=False, vec=1, vec_access=True, wb_direct=False, hold=None,
                  threads=None, w_direct=False, fused_cols=None, tail_cols=None):
    """``{kind: python kernel}`` with ``TPR = tpr``, ``KV = kv`` as constants.

    ``chan``: the forward's statistics by :func:`_one_reduction` (one group
    reduction a row) instead of the shifted two-pass (two).  ``acc_smem``:
    the backward keeps its ``dweight``/``dbias`` accumulators in shared
    memory (each thread its own slots, ``2 * threads * kv`` values a block)
    instead of ``2 * kv`` registers a thread, and sums a block's groups
    from there; the same additions in the same order, so the same bits.
    ``store_chunk``: ``KS`` below (default :data:`STORE_CHUNK`).
    ``l2_prefetch``: a backward that does not prefetch its next row into
    registers (it does not hold its row, ``kv > HOLD_MAX``, or ``pipe`` is
    off) has the next row's ``dy`` and ``x`` fetched into L2 (:func:`_prefetch_l2`) while
    it works on the current one, so that DRAM is not idle through its
    reductions and second pass (the variants of :data:`L2_PREFETCH`).
    ``vec`` (2 or 4; 1: none): vector pieces.  The forward reads ``x``,
    ``w``, ``b`` and writes ``y`` in pieces of ``vec`` adjacent columns (one
    ``ld.global.v4.f32`` for four floats instead of four loads), the
    backward ``dy``, ``x`` and ``dx`` where it holds its row (else it is not
    built): thread ``tx``'s slots are the pieces ``tx, tx + tpr, ...``
    (:func:`_col`), as the fastest published LayerNorm kernels lay out their
    rows.  Not for the widest variant, nor with ``chan``.  The caller
    guarantees the alignment (:func:`vector_align`): the arrays aligned,
    ``D % vec == 0``, ``w`` and ``b`` (dummies included) at least ``vec``
    long (:func:`numba_ln.gpu._launch.vector_ok`).  A thread whose pieces
    are not all in the row reads and writes a column at a time.  Its
    columns differ from ``vec = 1``, so its sums are added in another order:
    the results agree within rounding, not bit for bit (the backward's
    dweight/dbias partials bit for bit: the same additions per column).
    ``vec_access=False`` keeps the layout of ``vec`` but reads and writes a
    value at a time (no alignment needed): the same bits as with vector
    accesses, for arrays that are not aligned.
    ``wb_direct``: where a thread's columns are all in the row, the forward
    reads ``w[j]`` and ``b[j]`` at ``j`` itself (the loads share the row's
    base address, as before commit 6c2f884) and computes ``h * w[j] +
    b[j]`` with no select: for a ``w`` and ``b`` of at least ``D`` values
    always, ones and ``-0.0`` standing in for an absent one (``h * 1 + -0.0``
    is ``h``, bit for bit).  Without it, the index is clamped to the array
    (a dummy of a few values may stand in) and the flags select.  The two
    agree bit for bit without a bias; with one, within a rounding: NVVM
    fuses ``h * w + b`` into one multiply-add, and the selecting kernel
    without a weight fuses ``h``'s own multiply with the add of ``b``
    (different bits on an H200; the simulator does no fusing).
    ``w_direct``: the backward's ``wb_direct``: where it holds its row and
    a thread's columns are all in it, it reads ``w[j]`` at ``j`` itself and
    computes ``dy * w[j]`` with no select, ones standing in for an absent
    weight (``dy * 1`` is ``dy``): the same bits as the selecting kernel
    without a weight, within a rounding with one (NVVM fuses ``dy * w - a``
    and ``a + dy * w``).  ``dweight``/``dbias`` partials: the same bits.
    ``hold``: whether the backward keeps ``dy`` and ``xhat`` of its row in
    registers between its two passes (default: ``kv <= HOLD_MAX``; not with
    ``loops``).  ``threads``: a block's threads (default ``MAX_THREADS``
    for ``tpr <= 32``, else ``tpr``: a row a block), a multiple of ``tpr``.
    ``fused_cols`` (a power of two, or None): also a backward
    ``layer_norm_backward_fused`` that sums the partial rows itself, after
    a barrier of all its blocks (:func:`_blocks_barrier`; a cooperative
    launch of one wave, as the backward is launched anyway), instead of
    the column-sum kernel after it: one launch fewer.  Each block then
    takes every ``gridDim``-th slice of ``fused_cols`` columns of a
    gradient, ``threads / fused_cols`` of its threads down each column
    (:func:`_col_phase`).  With ``loops``, rows of several windows have
    their windows' sums computed in the same launch too (the work of
    ``layer_norm_backward_rowsums``, before a barrier of each row slot's
    blocks): the whole backward in one launch.  Its ``phase`` argument:
    :data:`FUSED_PHASES`.  dx the same bits; the gradients' sums in another
    fixed order than the column-sum kernel's.  A candidate of
    ``scripts/gpu_tune.py`` (measured slower: :data:`FUSED_COLS`).
    ``tail_cols`` (``(tail, cols)``, or None): also a backward
    ``layer_norm_backward_tail`` whose last ``tail`` blocks of each column
    window (of the whole row where it does not loop) to finish their rows
    sum the window's partial rows: a block that has written its partials
    takes a ticket (an atomic count, :func:`_tail_ticket`); the first ``G -
    tail`` of the window's ``G`` exit, the others wait until all ``G`` have
    (:func:`_tail_wait`; none with ``tail = 1``, the last of all) and then
    sum a slice each, by :func:`_col_phase` (slices of ``cols`` columns).
    No column-sum kernel after it, and no barrier of all blocks: the blocks
    that wait are the last to finish anyway.  Its ``phase`` argument:
    :func:`tail_phases`.  dx the same bits; the gradients in another fixed
    order than the column-sum kernel's.  (Blocks that wait for others need
    them on the GPU too: at most ``tail`` wait, the others exit and free
    their multiprocessors, so the rest are scheduled.)
    ``chan``, ``acc_smem`` and ``store_chunk`` are candidates of
    ``scripts/gpu_tune.py``, not in :data:`TABLE` (measured slower or no
    better on an H200: docs/gpu_bench_h200.md); ``vec`` and ``wb_direct``
    are taken where they were measured faster: :data:`VECTOR`,
    :data:`DIRECT_WB`.

    ``pipe``: software
    pipelining.  A block walks its rows with the next row's loads issued
    before the current row's reductions, so that they are in flight while it
    reduces and writes (a GPU does not wait for a load until its value is
    used); launched as one wave of resident blocks, each loops over its
    share of the rows.  Without it every row waits for its loads.

    Loads before stores: numba cannot say that ``y`` (``dx``) does not alias
    ``x``, ``w`` or ``b`` (it may: ``out=x`` works in place), so the
    compiler keeps every global load after a store that precedes it in the
    code, and a load placed after a store waits for a full memory round
    trip.  Where a kernel writes a row, it therefore computes a chunk of its
    outputs into registers first (the loads of ``w``, ``b``, and of ``x``,
    ``dy`` where they are re-read, in flight together) and then stores the
    chunk: a round trip a chunk rather than one a column (before: 8-32 a
    row, seen as alternating ``ld.global``/``st.global`` in the PTX).
    """
    TPR = tpr
    KV = kv
    NT = threads or (MAX_THREADS if TPR <= 32 else TPR)
    R = NT // TPR
    assert R * TPR == NT, "whole rows a block"
    CW = TPR * KV
    LOOPS = loops
    HOLD = KV <= HOLD_MAX if hold is None else hold
    PIPE = pipe
    BPIPE = PIPE and HOLD  # the backward prefetches where it holds its row
    L2P = l2_prefetch and not BPIPE  # ... and into L2 where it does not
    KP = KV if PIPE else 1
    assert not (HOLD and LOOPS), "the widest variant re-reads (several windows)"
    assert not (PIPE and LOOPS), "a prefetched row must fit in registers"
    CHAN = chan
    assert not (CHAN and LOOPS), "one-reduction statistics need the row in registers"
    ACC = acc_smem
    VEC = vec
    VACC = vec_access and VEC > 1
    WBD = wb_direct
    BWD_W = w_direct
    assert VEC in (1, 2, 4), "vector pieces of 2 or 4 values"
    assert VEC == 1 or not (LOOPS or CHAN), "vector pieces: rows held in registers, two-pass"
    #: the shared reduction scratch: two slots per warp on a GPU (a pair of
    #: sums is reduced at once; three with ``chan``: mean, squares, count),
    #: as many per thread in the simulator
    RED = (3 if CHAN else 2) * (NT if SIM else max(1, NT // 32))
    KC = min(_KC, KV)
    #: the backward's vector pieces: only where it holds its row in registers
    #: (loaded by :func:`_load_row`), keeps its accumulators there and sums
    #: them through shared memory in chunks of whole pieces
    BVEC = VEC if HOLD and not ACC and KC % VEC == 0 else 1
    #: columns a thread writes per chunk of loads (see "Loads before stores")
    KS = min(KV, store_chunk or STORE_CHUNK)
    assert KV % KS == 0, "rows are written in chunks of KS columns"
    assert KS % VEC == 0, "chunks of whole vector pieces"
    #: the shared buffer of the block's column sums in the backward
    COLBUF = NT * KC if R > 1 and not ACC else 1
    #: the shared accumulators (``acc_smem``): thread (tx, ty)'s slot of its
    #: k-th column is ``ty * CW + k * TPR + tx`` (the weight's; the bias's
    #: ``R * CW`` further), so group ty's column c is ``ty * CW + c``
    ACCN = 2 * R * CW if ACC else 1
    HV = KV if HOLD else 1
    #: the first slots of the chunks of :func:`_apply_chunk`, for numba to unroll
    K0S = tuple(range(0, KV, KS))

    def _ln_fwd(x, w, b, flags, eps, y, stats):
        """``y = (x - mean) * rstd * w + b`` for every row; also ``mean``,
        ``rstd`` (the rows of ``stats``, ``(2, rows)``)."""
        red = cuda.shared.array(RED, x.dtype)
        xv = cuda.local.array(KV, x.dtype)
        hb = cuda.local.array(KS, x.dtype)
        xn = cuda.local.array(KP, x.dtype)
        wv = cuda.local.array(VEC, x.dtype)
        bv = cuda.local.array(VEC, x.dtype)
        rows = x.shape[0]
        n = x.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        in_regs = not LOOPS
        has_w = (flags & HAS_WEIGHT) != 0
        has_b = (flags & HAS_BIAS) != 0
        start = cuda.blockIdx.x * R
        step = cuda.gridDim.x * R
        if PIPE and start < rows:
            _load_row(x[min(start + ty, rows - 1)], xn, n, tx, TPR, KV, VEC, VACC)
        for base in range(start, rows, step):
            row = base + ty
            active = row < rows
            r = row if active else rows - 1
            xr = x[r]
            if PIPE:
                for k in range(KV):
                    xv[k] = xn[k]
                if base + step < rows:  # (the same for the whole block)
                    _load_row(x[min(base + step + ty, rows - 1)], xn, n, tx, TPR, KV, VEC, VACC)
            elif in_regs:
                _load_row(xr, xv, n, tx, TPR, KV, VEC, VACC)
            s, m1, dm, var = _row_stats(xr, xv, in_regs, n, red, TPR, KV, CHAN, VEC)
            mu, rs, mult = _scales(xr, s, m1, dm, var, eps)
            if active:
                # KS columns at a time: their loads (w, b; x where the row
                # loops), then their stores (see _make_variant).
                yr = y[r]
                if VEC > 1 and _col(tx, KV - 1, TPR, VEC) < n:
                    # vector pieces: x, w, b loaded and y stored VEC columns
                    # at a time (w, b: a dummy of >= VEC values when absent)
                    t0 = uint64(tx * VEC)
                    wl = uint64(w.shape[0] - VEC)
                    bl = uint64(b.shape[0] - VEC)
                    for k0 in range(0, KV, KS):
                        for kp in range(0, KS, VEC):
                            jj = t0 + uint64(((k0 + kp) // VEC) * TPR * VEC)
                            _vload_into(w, jj if WBD else min(jj, wl), wv, 0, VEC, VACC)
                            _vload_into(b, jj if WBD else min(jj, bl), bv, 0, VEC, VACC)
                            for i in range(VEC):
                                h = ((xv[k0 + kp + i] * s - m1) - dm) * mult
                                if WBD:
                                    hb[kp + i] = h * wv[i] + bv[i]
                                else:
                                    h = h * wv[i] if has_w else h
                                    hb[kp + i] = h + bv[i] if has_b else h
                        for kp in range(0, KS, VEC):
                            jj = t0 + uint64(((k0 + kp) // VEC) * TPR * VEC)
                            _vstore_from(yr, jj, hb, kp, VEC, VACC)
                elif VEC == 1 and in_regs and tx + (KV - 1) * TPR < n:
                    t0 = uint64(tx)
                    for k0 in range(0, KV, KS):
                        for kk in range(KS):
                            jj = t0 + uint64((k0 + kk) * TPR)
                            h = ((xv[k0 + kk] * s - m1) - dm) * mult
                            if WBD:
                                hb[kk] = h * w[jj] + b[jj]
                            else:
                                hb[kk] = _affine(h, w, b, jj, has_w, has_b)
                        for kk in range(KS):
                            yr[t0 + uint64((k0 + kk) * TPR)] = hb[kk]
                elif in_regs:
                    _apply_chunk(xr, xv, hb, True, 0, n, s, m1, dm, mult, w, b, has_w, has_b,
                                 yr, TPR, KV, KS, VEC)
                else:
                    for c0 in range(0, n, CW):
                        _apply_chunk(xr, xv, hb, False, c0, n, s, m1, dm, mult, w, b, has_w,
                                     has_b, yr, TPR, KV, KS, 1)
                if tx == 0:
                    stats[0, r] = mu
                    stats[1, r] = rs

    def _ln_fwd_part(x, part):
        """Statistics of every column window of every row.

        Grid of ``G * nwin`` blocks laid out as in ``_ln_bwd``; a window is
        ``CW`` columns, held in registers.  Writes
        ``part[r, win] = (s, m1, dm, var)`` as :func:`_row_stats` gives them for
        the window alone; ``_ln_fwd_apply`` combines them.
        """
        red = cuda.shared.array(RED, x.dtype)
        xv = cuda.local.array(KV, x.dtype)
        rows = x.shape[0]
        n = x.shape[1]
        ty = cuda.threadIdx.y
        nwin = (n + CW - 1) // CW
        win, g0, G, c0 = _window_grid(nwin, CW)
        for base in range(g0 * R, rows, G * R):
            row = base + ty
            _window_stats(x, part, min(row, rows - 1), row < rows, win, c0, min(CW, n - c0),
                          red, xv, TPR, KV)

    def _ln_fwd_apply(x, w, b, flags, eps, part, y, stats):
        """``y`` of every column window from the combined window statistics
        (same grid as ``_ln_fwd_part``); window 0 writes ``mean``, ``rstd``
        (``stats``)."""
        _dep_wait()  # (launched after _ln_fwd_part: its statistics)
        red = cuda.shared.array(RED, x.dtype)
        hb = cuda.local.array(KS, x.dtype)
        rows = x.shape[0]
        n = x.shape[1]
        ty = cuda.threadIdx.y
        nwin = (n + CW - 1) // CW
        win, g0, G, c0 = _window_grid(nwin, CW)
        for base in range(g0 * R, rows, G * R):
            row = base + ty
            _apply_window(x, w, b, flags, eps, part, y, stats, min(row, rows - 1), row < rows,
                          win, c0, nwin, CW, red, hb, TPR, KV, KS)

    def _ln_fwd_coop(x, w, b, flags, eps, part, bar, phase, y, stats):
        """The split forward in one launch: ``_ln_fwd_part``, then
        ``_ln_fwd_apply`` on the window it holds in registers, with a
        barrier of the row group's ``nwin`` blocks between them (one launch
        instead of two, x read once).

        A block a window of one row group: a grid of ``groups * nwin``
        blocks.  ``phase`` (:data:`COOP_PHASES`, :data:`CLUSTER_PHASES`):
        2 all of it, the barrier :func:`_blocks_barrier` (``bar``: a zeroed
        ``uint32`` per row group; all blocks resident: a cooperative
        launch); 3 all of it, the barrier the cluster's
        (:func:`_cluster_sync`; a launch in clusters of ``nwin`` blocks,
        compute capability 9.0+); 0 the window statistics only, 1 the rest,
        the window loaded again (the simulator, whose blocks run one after
        another).  The same bits as the two kernels.
        """
        red = cuda.shared.array(RED, x.dtype)
        xv = cuda.local.array(KV, x.dtype)
        hb = cuda.local.array(KS, x.dtype)
        rows = x.shape[0]
        n = x.shape[1]
        nwin = (n + CW - 1) // CW
        win, g0, G, c0 = _window_grid(nwin, CW)
        row = g0 * R + cuda.threadIdx.y
        r = min(row, rows - 1)
        nw = min(CW, n - c0)
        if phase != 1:  # (the window loaded into xv)
            _window_stats(x, part, r, row < rows, win, c0, nw, red, xv, TPR, KV)
        else:  # (the simulator's second launch: the window again)
            _load_row(x[r, c0:c0 + nw], xv, nw, cuda.threadIdx.x, TPR, KV, 1, False)
        if phase == 2:
            _blocks_barrier(bar, g0, nwin, win == 0)
        elif phase == 3:
            _cluster_sync()
        if phase != 0:
            s, c, lo, var = _combine_windows(part, r, n, CW, nwin, red, TPR)
            mu, rs, mult = _scales(x, s, c, lo, var, eps)
            if row < rows:
                # from the registers that hold the window: the chunks unrolled
                # by numba (with a loop, NVVM kept xv in local memory)
                for k0 in _literal_unroll(K0S):
                    _apply_piece(x[r], xv, hb, True, k0, c0, n, s, c, lo, mult, w, b,
                                 (flags & HAS_WEIGHT) != 0, (flags & HAS_BIAS) != 0, y[r],
                                 TPR, KS, 1)
                if win == 0 and cuda.threadIdx.x == 0:
                    stats[0, r] = mu
                    stats[1, r] = rs

    def _ln_bwd_rowsums(dy, x, mean, rstd, w, flags, sums):
        """Per column window: ``sums[0, r, win] = sum(g)``, ``sums[1, r, win] = sum(g*xhat)``
        (``g = w*dy``) over the window's columns of row ``r``.

        Only for rows wider than one window of ``_ln_bwd`` (same windows, same
        grid layout), which adds the windows' sums in window order.
        """
        T = x.dtype.type
        red = cuda.shared.array(RED, x.dtype)
        rows = x.shape[0]
        n = x.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        nwin = (n + CW - 1) // CW
        win, g0, G, c0 = _window_grid(nwin, CW)
        has_w = (flags & HAS_WEIGHT) != 0
        last = n - 1
        for base in range(g0 * R, rows, G * R):
            row = base + ty
            active = row < rows
            r = row if active else rows - 1
            m = mean[r]
            rs = rstd[r]
            dyr = dy[r]
            xr = x[r]
            a = T(0)
            q = T(0)
            for k in range(KV):
                j = c0 + tx + k * TPR
                jc = uint32(min(j, last))
                g = _g(dyr[jc], w, jc, has_w)
                g = g if j < n else T(0)
                a += g
                q += g * ((xr[jc] - m) * rs)
            a, q = _group_sum2(a, q, red, TPR)
            if active and tx == 0:
                sums[0, r, win] = a
                sums[1, r, win] = q

    def _ln_bwd(dy, x, mean, rstd, w, flags, sums, dx, part):
        """``dx`` of every row and per-block partial sums of ``dy*xhat`` and ``dy``.

        The grid is ``G * nwin`` blocks: block ``i`` handles the column window
        ``i % nwin`` (``CW`` columns) of the rows ``g*R + ty + t*G*R`` with
        ``g = i // nwin``, and writes ``part[0, g, window]`` (``dweight``'s) and
        ``part[1, g, window]`` (``dbias``'s).  With one window the row means of ``g`` and
        ``g*xhat`` are computed here (``sums`` unused); otherwise they
        come from ``_ln_bwd_rowsums``.
        """
        _dep_wait()  # (launched after _ln_bwd_rowsums: its sums)
        T = x.dtype.type
        red = cuda.shared.array(RED, x.dtype)
        colbuf = cuda.shared.array(COLBUF, x.dtype)
        accs = cuda.shared.array(ACCN, x.dtype)
        accw = cuda.local.array(1 if ACC else KV, x.dtype)
        accb = cuda.local.array(1 if ACC else KV, x.dtype)
        dyv = cuda.local.array(HV, x.dtype)
        xhv = cuda.local.array(HV, x.dtype)
        dyn = cuda.local.array(KP if BPIPE else 1, x.dtype)
        xn = cuda.local.array(KP if BPIPE else 1, x.dtype)
        vb = cuda.local.array(KS, x.dtype)
        rows = x.shape[0]
        n = x.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        nwin = (n + CW - 1) // CW if LOOPS else 1
        win, g0, G, c0 = _window_grid(nwin, CW)
        has_w = (flags & HAS_WEIGHT) != 0
        nf = T(n)
        last = n - 1
        for k in range(KV):
            if ACC:
                accs[ty * CW + k * TPR + tx] = T(0)
                accs[(R + ty) * CW + k * TPR + tx] = T(0)
            else:
                accw[k] = T(0)
                accb[k] = T(0)
        start = g0 * R
        step = G * R
        mn = T(0)
        rsn = T(0)
        if BPIPE and start < rows:
            rn = min(start + ty, rows - 1)
            _load_row(dy[rn], dyn, n, tx, TPR, KV, BVEC, VACC)
            _load_row(x[rn], xn, n, tx, TPR, KV, BVEC, VACC)
            mn = mean[rn]
            rsn = rstd[rn]
        # direct w reads (w_direct): where the row is held and all this
        # thread's columns are in it (one window: c0 is 0)
        wfull = BWD_W and HOLD and _col(tx, KV - 1, TPR, BVEC) < n
        for base in range(start, rows, step):
            row = base + ty
            active = row < rows
            r = row if active else rows - 1
            dyr = dy[r]
            xr = x[r]
            if BPIPE:
                m = mn
                rs = rsn
                for k in range(KV):
                    dyv[k] = dyn[k]
                    xhv[k] = xn[k]
                if base + step < rows:  # (the same for the whole block)
                    rn = min(base + step + ty, rows - 1)
                    _load_row(dy[rn], dyn, n, tx, TPR, KV, BVEC, VACC)
                    _load_row(x[rn], xn, n, tx, TPR, KV, BVEC, VACC)
                    mn = mean[rn]
                    rsn = rstd[rn]
            else:
                m = mean[r]
                rs = rstd[r]
            if nwin == 1:
                a = T(0)
                q = T(0)
                if wfull:  # (held, every column in the row: w read directly)
                    for k in range(KV):
                        jj = uint64(_col(tx, k, TPR, BVEC))
                        if BPIPE:
                            d = dyv[k]
                            xhat = (xhv[k] - m) * rs
                        else:
                            d = dyr[jj]
                            xhat = (xr[jj] - m) * rs
                        dyv[k] = d
                        xhv[k] = xhat
                        g = d * w[jj]
                        a += g
                        q += g * xhat
                else:
                    for k in range(KV):
                        j = _col(tx, k, TPR, BVEC)
                        jc = uint32(min(j, last))
                        if BPIPE:
                            d = dyv[k]
                            xhat = (xhv[k] - m) * rs
                        else:
                            d = dyr[jc]
                            xhat = (xr[jc] - m) * rs
                        if HOLD:
                            dyv[k] = d
                            xhv[k] = xhat
                        g = _g(d, w, jc, has_w)
                        g = g if j < n else T(0)
                        a += g
                        q += g * xhat
                if L2P and base + step < rows:  # (after this row's loads)
                    _prefetch_rows(dy, x, min(base + step + ty, rows - 1), c0, n, TPR, KV)
                # (one call for both branches: its barriers and shuffles must be
                # the same instructions for every thread of the group.  With a
                # call in each branch, the real-GPU test of the 512x8 backward
                # at D = 4095, where one thread's columns end past the row and
                # the others' do not, gave no result in 200 s on an H200.)
                a, q = _group_sum2(a, q, red, TPR)
                a = a / nf
                q = q / nf
            else:
                if L2P and base + step < rows:
                    _prefetch_rows(dy, x, min(base + step + ty, rows - 1), c0, n, TPR, KV)
                a, q = _sum_windows(sums, r, nwin)
                a = a / nf
                q = q / nf
            if active:
                # KS columns at a time: their loads (w; dy and x where not
                # held), then their stores (see _make_variant).
                dxr = dx[r]
                full = _col(tx, KV - 1, TPR, BVEC) < n  # (BVEC > 1: one window)
                for kc in range(KV // KS):
                    for kk in range(KS):
                        k = kc * KS + kk
                        if wfull:  # (held, every column in the row)
                            jj = uint64(_col(tx, k, TPR, BVEC))
                            d = dyv[k]
                            xhat = xhv[k]
                            vb[kk] = rs * (d * w[jj] - a - xhat * q)
                            if ACC:
                                accs[ty * CW + k * TPR + tx] += d * xhat
                                accs[(R + ty) * CW + k * TPR + tx] += d
                            else:
                                accw[k] += d * xhat
                                accb[k] += d
                            continue
                        j = c0 + _col(tx, k, TPR, BVEC)
                        jc = uint32(min(j, last))
                        if HOLD:
                            d = dyv[k]
                            xhat = xhv[k]
                        else:
                            d = dyr[jc]
                            xhat = (xr[jc] - m) * rs
                        vb[kk] = rs * (_g(d, w, jc, has_w) - a - xhat * q)
                        d = d if j < n else T(0)
                        if ACC:
                            accs[ty * CW + k * TPR + tx] += d * xhat
                            accs[(R + ty) * CW + k * TPR + tx] += d
                        else:
                            accw[k] += d * xhat
                            accb[k] += d
                    if BVEC > 1 and full:  # whole vector pieces
                        for kp in range(0, KS, BVEC):
                            jj = uint64(_col(tx, kc * KS + kp, TPR, BVEC))
                            _vstore_from(dxr, jj, vb, kp, BVEC, VACC)
                    elif wfull:
                        for kk in range(KS):
                            dxr[uint64(_col(tx, kc * KS + kk, TPR, BVEC))] = vb[kk]
                    else:
                        for kk in range(KS):
                            j = c0 + _col(tx, kc * KS + kk, TPR, BVEC)
                            if j < n:
                                dxr[uint32(j)] = vb[kk]
        if R == 1:  # a block per row: the thread's sums are the block's
            for k in range(KV):
                j = c0 + _col(tx, k, TPR, BVEC)
                if j < n:
                    if ACC:
                        part[0, g0, j] = accs[k * TPR + tx]
                        part[1, g0, j] = accs[CW + k * TPR + tx]
                    else:
                        part[0, g0, j] = accw[k]
                        part[1, g0, j] = accb[k]
            return
        tid = ty * TPR + tx
        if ACC:  # the R groups' sums of a column, in ty order, from shared memory
            cuda.syncthreads()
            for c in range(tid, CW, NT):
                j = c0 + c
                if j < n:
                    tw = accs[c]
                    tb = accs[R * CW + c]
                    for i in range(1, R):
                        tw += accs[i * CW + c]
                        tb += accs[(R + i) * CW + c]
                    part[0, g0, j] = tw
                    part[1, g0, j] = tb
            return
        # Sum the R groups of the block in ty order, KC window columns of a
        # thread at a time (bounded shared memory: the chunk's columns are
        # kc*cc ... kc*cc + cc - 1 with vector pieces too), one column per thread.
        cc = TPR * KC
        for which in range(2):
            for kc in range(KV // KC):
                cuda.syncthreads()
                for kk in range(KC):
                    slot = ty * cc + _col(tx, kc * KC + kk, TPR, BVEC) - kc * cc
                    if which == 0:
                        colbuf[slot] = accw[kc * KC + kk]
                    else:
                        colbuf[slot] = accb[kc * KC + kk]
                cuda.syncthreads()
                for c in range(tid, cc, NT):
                    j = c0 + kc * cc + c
                    if j < n:
                        t = colbuf[c]
                        for i in range(1, R):
                            t += colbuf[i * cc + c]
                        if which == 0:
                            part[0, g0, j] = t
                        else:
                            part[1, g0, j] = t

    kernels = {"layer_norm_forward": _ln_fwd, "layer_norm_backward": _ln_bwd}
    # (the row work of the backwards that then sum their own partial rows)
    _ln_bwd_rows = (cuda.jit(device=True)(_ln_bwd)
                    if fused_cols is not None or tail_cols is not None else None)
    if fused_cols is not None:
        FCX = fused_cols
        assert NT % FCX == 0 and (NT // FCX) & (NT // FCX - 1) == 0, "a power of two down"
        _ln_bwd_sums = cuda.jit(device=True)(_ln_bwd_rowsums) if LOOPS else None

        def _ln_bwd_fused(dy, x, mean, rstd, w, flags, sums, dx, part, grads, bar, phase):
            """``_ln_bwd_rowsums`` where a row has several windows and a
            barrier of the row slot's blocks, ``_ln_bwd``, a barrier of all
            blocks, then the column sums of ``part`` into ``grads`` (see
            ``fused_cols``; ``phase``: :data:`FUSED_PHASES`)."""
            buf = cuda.shared.array(NT, x.dtype)
            if LOOPS:
                nwin = (x.shape[1] + CW - 1) // CW
                if nwin > 1:
                    if phase & 1:
                        _ln_bwd_sums(dy, x, mean, rstd, w, flags, sums)
                    if phase & 8:
                        _blocks_barrier(bar, 1 + cuda.blockIdx.x // nwin, nwin,
                                        cuda.blockIdx.x % nwin == 0)
            if phase & 2:
                _ln_bwd_rows(dy, x, mean, rstd, w, flags, sums, dx, part)
            if phase & 8:
                _blocks_barrier(bar, 0, cuda.gridDim.x, cuda.blockIdx.x == 0)
            if phase & 4:
                _col_phase(part, grads, FCX, buf, 0, x.shape[1], cuda.blockIdx.x,
                           cuda.gridDim.x)

        kernels["layer_norm_backward_fused"] = _ln_bwd_fused
    if tail_cols is not None:
        TS, TCX = tail_cols
        assert TS >= 1 and NT % TCX == 0 and (NT // TCX) & (NT // TCX - 1) == 0, \
            "tail blocks, and slices of columns a power of two of rows down"

        def _ln_bwd_tail(dy, x, mean, rstd, w, flags, sums, dx, part, grads, tick, phase):
            """``_ln_bwd``, then the column sums of the partial rows of each
            column window by the last blocks of its row slots to finish
            (``tail_cols``; ``phase``: :func:`tail_phases`)."""
            buf = cuda.shared.array(NT, x.dtype)
            slot = cuda.shared.array(1, uint32)
            if phase & 2:
                _ln_bwd_rows(dy, x, mean, rstd, w, flags, sums, dx, part)
            # (after it: nothing of the tail's own live across the row work)
            n = x.shape[1]
            nwin = (n + CW - 1) // CW if LOOPS else 1
            win, g0, G, c0 = _window_grid(nwin, CW)
            ntail = min(TS, G)
            t = g0  # (the simulator's column-sum launch: the row slot for the ticket)
            if phase & 8:
                t = _tail_ticket(tick, win, slot)
            if phase & 4 and t >= G - ntail:
                if phase & 8 and ntail > 1:
                    _tail_wait(tick, win, G)
                _col_phase(part, grads, TCX, buf, c0, min(CW, n - c0), t - (G - ntail), ntail)
                if phase & 8:
                    _tail_release(tick, win, ntail)

        kernels["layer_norm_backward_tail"] = _ln_bwd_tail
    if BVEC != VEC:  # (no backward with vector pieces here: rather none than a scalar one)
        del kernels["layer_norm_backward"]
        kernels.pop("layer_norm_backward_fused", None)
        kernels.pop("layer_norm_backward_tail", None)
    if LOOPS:
        kernels.update({"layer_norm_forward_split_stats": _ln_fwd_part,
                        "layer_norm_forward_split_apply": _ln_fwd_apply,
                        "layer_norm_forward_coop": _ln_fwd_coop,
                        "layer_norm_backward_rowsums": _ln_bwd_rowsums})
    return kernels


@_device
def _col_phase(part, out, cx, buf, c0, nc, first, step):
    """The column sums of :func:`_col_sum` of the ``nc`` columns from
    ``c0`` done by the blocks of another kernel (``layer_norm_backward_fused``,
    ``layer_norm_backward_tail``), each its share: the virtual blocks ``i =
    first, first + step, ...`` of ``cx`` columns of ``out``'s row ``i //
    ceil(nc / cx)``, the block's threads ``cx`` columns by ``threads / cx``
    (a power of two) rows, each summing the partial rows ``ty, ty + threads
    / cx, ...`` of its column, then a shared-memory tree (``buf``: a value
    per thread) in a fixed pairing.  The order depends on the partial rows
    and the block shape only: the same bits every call.  A thread's loads
    are issued 8 rows at a time (clamped row, masked value: the same
    additions in the same order), so that they are in flight together:
    here a few blocks may sum all the partial rows (a ``tail`` of one
    block a window), not a grid of a thousand threads a column slice."""
    T = part.dtype.type
    nx = cuda.blockDim.x
    nt = nx * cuda.blockDim.y
    tid = cuda.threadIdx.y * nx + cuda.threadIdx.x
    cy = nt // cx
    tx = tid % cx
    ty = tid // cx
    kout = out.shape[0]
    koff = part.shape[0] - kout
    P = part.shape[1]
    ncb = (nc + cx - 1) // cx
    for vb in range(first, ncb * kout, step):
        k = vb // ncb
        jw = (vb % ncb) * cx + tx
        j = c0 + jw
        t = T(0)
        if jw < nc:
            for p0 in range(ty, P, 8 * cy):
                for i in range(8):
                    p = p0 + i * cy
                    v = part[k + koff, min(p, P - 1), j]
                    t += v if p < P else T(0)
        cuda.syncthreads()  # (buf read by the previous slice)
        buf[tid] = t
        half = cy >> 1
        while half > 0:
            cuda.syncthreads()
            if ty < half:
                buf[tid] += buf[tid + half * cx]
            half >>= 1
        if ty == 0 and jw < nc:
            out[k, j] = buf[tx]


def _col_sum(part, out):
    """``out[k, j] = sum(part[k + K - k_out, :, j])`` in a fixed order (no
    atomics), ``k_out`` the rows of ``out``.

    ``part``: ``(K, P, D)``, ``K`` arrays of ``P`` partial rows (the weight
    and bias partials of the backward), summed in one launch into the last
    ``k_out`` of them (both, or only the bias's): block ``(bx, k)`` takes
    columns ``bx*cols ...`` of ``out``'s row ``k``.
    Blocks of ``(cols, ny)`` threads, ``ny`` a power of two, at most
    ``COL_THREADS`` in all (:func:`numba_ln.gpu._launch.col_launch`: ``cols``
    by the count of partial rows, see ``COL_TX``): ``ty`` sums the rows
    ``ty, ty+ny, ...`` of its column (``ny`` loads of a column in flight,
    each a 32-byte sector or more of a row), then a shared-memory tree adds
    the ``ny`` sums in a fixed pairing.
    """
    _dep_wait()  # (launched after the backward's row kernel: its partials)
    T = part.dtype.type
    buf = cuda.shared.array(COL_THREADS, part.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    nx = cuda.blockDim.x
    ny = cuda.blockDim.y
    k = cuda.blockIdx.y
    kp = k + part.shape[0] - out.shape[0]
    j = cuda.blockIdx.x * nx + tx
    P = part.shape[1]
    n = part.shape[2]
    t = T(0)
    if j < n:
        for p in range(ty, P, ny):
            t += part[kp, p, j]
    buf[ty * nx + tx] = t
    half = ny >> 1
    while half > 0:
        cuda.syncthreads()
        if ty < half:
            buf[ty * nx + tx] += buf[(ty + half) * nx + tx]
        half >>= 1
    if ty == 0 and j < n:
        out[k, j] = buf[tx]


def _bwd_cols(dy, x, mean, rstd, w, flags, sums, dx, grads):
    """The backward of few long rows by columns, after
    ``layer_norm_backward_rowsums`` (its window sums of each row in
    ``sums``, ``(2, rows, nwin)``): a thread a column ``j`` of every row,
    ``dx[:, j]``, and ``dweight[j]``, ``dbias[j]`` summed over the rows in
    row order and written to ``grads`` (``(2, D)``, or ``(1, D)`` for
    ``dbias`` alone) themselves: no partial rows, no column-sum kernel.

    Where the rows are few (32 x 65536: 8 row slots of the ``LONG``
    backward's 32 windows write 8 partial rows that a third kernel sums),
    a block of ``COLS_THREADS`` columns takes all the rows, ``COLS_RB`` at
    a time (their ``dy`` and ``x`` loads in flight together, each warp's a
    128-byte line of a row).  The row means of ``g`` and ``g * xhat`` are
    added in window order (:func:`_sum_windows`) by the block's first
    ``rows`` threads into shared memory: at most ``COLS_THREADS`` rows.
    ``dx`` is computed as ``layer_norm_backward`` computes it, from the same
    sums; the gradients are added in another fixed order.
    """
    _dep_wait()  # (launched after layer_norm_backward_rowsums: its sums)
    T = x.dtype.type
    tot = cuda.shared.array((2, COLS_THREADS), x.dtype)
    dv = cuda.local.array(COLS_RB, x.dtype)
    xv = cuda.local.array(COLS_RB, x.dtype)
    rows = x.shape[0]
    n = x.shape[1]
    tx = cuda.threadIdx.x
    nf = T(n)
    if tx < rows:
        a, q = _sum_windows(sums, tx, sums.shape[2])
        tot[0, tx] = a / nf
        tot[1, tx] = q / nf
    cuda.syncthreads()
    j = cuda.blockIdx.x * cuda.blockDim.x + tx
    jc = uint32(min(j, n - 1))
    has_w = (flags & HAS_WEIGHT) != 0
    accw = T(0)
    accb = T(0)
    for r0 in range(0, rows, COLS_RB):
        for k in range(COLS_RB):  # (the loads first: in flight together)
            r = min(r0 + k, rows - 1)
            dv[k] = dy[r, jc]
            xv[k] = x[r, jc]
        for k in range(COLS_RB):
            r = min(r0 + k, rows - 1)
            rs = rstd[r]
            d = dv[k]
            xhat = (xv[k] - mean[r]) * rs
            v = rs * (_g(d, w, jc, has_w) - tot[0, r] - xhat * tot[1, r])
            if r0 + k < rows:
                if j < n:
                    dx[r, jc] = v
                accw += d * xhat
                accb += d
    if j < n:
        if grads.shape[0] == 2:
            grads[0, jc] = accw
        grads[grads.shape[0] - 1, jc] = accb


#: ``"name[dtype]"`` -> kernel compiled for that dtype, and -> its kind (the
#: key of :func:`numba_ln.gpu.signatures`): the keys of
#: :func:`numba_ln.gpu.compile_ptx`, ``"layer_norm_forward_32x8[float32]"``
#: etc. (the variant's ``tpr`` x ``kv``) and
#: ``"layer_norm_backward_colsum[float32]"``.
KERNELS = {}
KINDS = {}

#: ``{dtype: kernel}`` of the column sums.
col_sum = {}
for _dt in DTYPES:
    _key = f"layer_norm_backward_colsum[{_dt}]"
    col_sum[_dt] = KERNELS[_key] = _jit_kernel(_col_sum, _key, COL_THREADS, 1)
    KINDS[_key] = "layer_norm_backward_colsum"

#: ``{dtype: kernel}`` of the backward of few long rows by columns.
bwd_cols = {}
for _dt in DTYPES:
    _key = f"layer_norm_backward_cols[{_dt}]"
    bwd_cols[_dt] = KERNELS[_key] = _jit_kernel(_bwd_cols, _key, COLS_THREADS, 2)
    KINDS[_key] = "layer_norm_backward_cols"

#: The variants of :data:`TABLE`, in its order.
VARIANTS = tuple(Variant(*entry, loops=i == len(TABLE) - 1) for i, entry in enumerate(TABLE))

#: The backward of few rows longer than the widest variant's capacity: None
#: (the widest variant's), or ``(tpr, kv, blocks, grid)``: a variant of
#: narrower column windows (``kv > HOLD_MAX``: it re-reads its row) compiled
#: for ``blocks[dtype]`` blocks a multiprocessor and launched in about
#: ``grid`` blocks, ``grid // nwin`` row slots over its ``nwin`` windows.
#: It takes the backward where the widest variant's launch would give every
#: row group a row slot of its own (:func:`numba_ln.gpu._launch.backward_launch`):
#: then its blocks do one row each and write as many partial rows as there
#: are rows (at 32x65536 float32, 16 MB of partial sums written and read
#: again, twice the input; the backward reached 15% of copy bandwidth on an
#: H200).  Narrower windows fill the GPU with a few row slots: 128x16 in 8
#: slots (32 windows of 2048 values, 256 blocks; 4 MB of partials) took the
#: float32 backward at 32x65536 from 15.5% to 22.8% of copy bandwidth
#: (``scripts/gpu_tune.py``, session 9; 64x16 in 4 slots and the widest in 4
#: were no faster).  float64 at 3 blocks a multiprocessor (``ptxas -v``,
#: sm_90: 168 registers, no spills; at 4, 408 bytes): 13.7% -> 29.1% at
#: 32x65536.  Under the simulator a small one, so that the path is tested.
#: Its kernels are named with a ``w`` (``layer_norm_backward_128x16w[float32]``).
LONG_ROWS = (32, 4, {"float32": (None, 1), "float64": (None, 1)}, 16) if SIM else (
    128, 16, {"float32": (None, 4), "float64": (None, 3)}, 256)

#: The :class:`Variant` of :data:`LONG_ROWS`, or None.
LONG = None if LONG_ROWS is None else Variant(*LONG_ROWS[:3], loops=True, tag="w",
                                              grid=LONG_ROWS[3])

#: Every variant whose kernels are in :data:`KERNELS`: :data:`VARIANTS` and :data:`LONG`.
ALL_VARIANTS = VARIANTS + (() if LONG is None else (LONG,))


def variant(d, pass_="forward"):
    """The variant for the ``pass_`` ("forward" or "backward") of rows of
    ``d`` columns: the first that holds them, else the widest (which splits
    them into windows or loops)."""
    for v in VARIANTS:
        if d <= v.capacity and pass_ in v.passes:
            return v
    return VARIANTS[-1]


def signatures(dtype):
    """``{kernel kind: numba signature string}`` for one dtype name (a kernel's
    kind: :data:`numba_ln.gpu._kernels.KINDS`)."""
    t = {"float32": "float32", "float64": "float64"}[dtype]
    m, v, p = f"{t}[:, ::1]", f"{t}[::1]", f"{t}[:, :, ::1]"
    return {
        "layer_norm_forward": f"void({m}, {v}, {v}, int32, {t}, {m}, {m})",
        "layer_norm_forward_split_stats": f"void({m}, {p})",
        "layer_norm_forward_split_apply": f"void({m}, {v}, {v}, int32, {t}, {p}, {m}, {m})",
        "layer_norm_forward_coop":
            f"void({m}, {v}, {v}, int32, {t}, {p}, uint32[::1], int32, {m}, {m})",
        "layer_norm_backward_rowsums": f"void({m}, {m}, {v}, {v}, {v}, int32, {p})",
        "layer_norm_backward": f"void({m}, {m}, {v}, {v}, {v}, int32, {p}, {m}, {p})",
        "layer_norm_backward_fused":
            f"void({m}, {m}, {v}, {v}, {v}, int32, {p}, {m}, {p}, {m}, uint32[::1], int32)",
        "layer_norm_backward_tail":
            f"void({m}, {m}, {v}, {v}, {v}, int32, {p}, {m}, {p}, {m}, uint32[::1], int32)",
        "layer_norm_backward_colsum": f"void({p}, {m})",
        "layer_norm_backward_cols": f"void({m}, {m}, {v}, {v}, {v}, int32, {p}, {m}, {m})",
    }


def launch_bounds(key):
    """The launch bound kernel ``key`` (a :data:`KERNELS` key) is compiled with."""
    return BOUNDS[key]
