"""Launch configurations and drivers of the GPU kernels.

Like :mod:`numba_ln._cpu`: no validation, C-contiguous ``(rows, D)`` device
arrays of one dtype, outputs given.  Everything is launched on ``stream`` and
allocated on it; nothing here synchronises with the host.  The row kernels
are launched through :mod:`numba_ln.gpu._fastlaunch` (numba's dispatcher
costs more host time than a small LayerNorm takes on the GPU).

Also the strided copies the front end needs: :func:`gather` (any layout,
any permutation of the axes, any float dtype -> a C-contiguous array of the
permuted shape) and :func:`scatter` (the reverse).  They cost one read and
one write of the array, at the speed of an uncoalesced copy when the
permutation moves the last axis.
"""

import math

import numpy as np
from numba import cuda

from . import _kernels as K
from ._fastlaunch import launch as _go
from ._fastlaunch import launcher as _launcher
from ._memory import empty

#: Row slots of the backward kernel under the simulator (several, so that the
#: partial sums go through the column reduction).  On a GPU the backward
#: launches as many blocks as fit on it at once (:func:`resident_blocks`): one
#: wave, each block looping over its share of the rows (no partial second
#: wave that leaves multiprocessors idle; fewer partial rows to write and
#: re-read than more blocks).  Measured on an H200 against the previous rule
#: (264-1024 blocks): 1.12-1.15x faster at three of five shapes, 5-7% slower
#: at two (docs/gpu_bench_h200.md).
BWD_SIM_SLOTS = 8

#: Rows longer than the widest variant's capacity (``tpr * kv`` values) are split
#: over several blocks (statistics per window, then a combine-and-apply
#: kernel that re-reads x) when x has at most this many bytes, so that the
#: second read hits L2; larger inputs take one block per row, looping over it,
#: unless they are few (:data:`FWD_SPLIT_FEW_ROWS`).
FWD_SPLIT_MAX_BYTES = 32 << 20

#: ... and also split, whatever their size, when their row groups are at
#: most this fraction of the blocks that fit on the GPU at once (the
#: looping kernel's, :func:`resident_blocks`): a block a row would leave
#: most multiprocessors idle (4 rows of 10**7 floats: 4 busy of 132 on an
#: H100), while the split costs at most a second read of x from DRAM (1.5x
#: the minimal traffic).  On an H200, 16 x 2**21 float32 split took 0.25 ms,
#: a block a row 2.45 ms (``scripts/gpu_tune.py``, session 9); 0 turns it off.
FWD_SPLIT_FEW_ROWS = 0.5

#: The split forward in one cooperative launch (``_ln_fwd_coop``: each
#: block holds its window of a row in registers across a barrier of the
#: row's blocks, so x is read once and there is one launch, not two) where
#: it may be: one window a block, all resident at once (few long rows: at
#: 32x65536 float32, 256 blocks of the widest variant, against 264 that fit
#: on an H200 at its bound of 2 a multiprocessor), and numba_ln's own
#: launcher available (a cooperative launch).  The same bits as the split.
#: Off: on an H200 (session 11, ``scripts/gpu_tune.py``'s forward plans) it
#: took 32x65536 float32 to 36.1% of copy bandwidth against the split's
#: 37.0% (its barrier costs what the second launch did: then a barrier
#: whose waiting blocks polled with atomics; the ninth sweep's forward
#: plans measure it again with plain loads); the tests switch it on.
FWD_COOP = False

#: The split forward in one launch in thread block clusters (compute
#: capability 9.0+): the same kernel as :data:`FWD_COOP`'s, a row group's
#: ``nwin`` windows one cluster, whose blocks meet at the hardware's cluster
#: barrier (``_cluster_sync``) rather than at a counter in memory, and need
#: no cooperative launch (a cluster's blocks are scheduled together; the
#: clusters do not wait for each other).  So it also fits where the rows
#: are many: x read once where the split reads it twice and a block a row
#: re-reads it.  Rows of ``2 <= nwin <=``
#: :data:`~numba_ln.gpu._kernels.CLUSTER_MAX` windows (65536 values).
#: ``None``: off; ``"split"``: in place of the split (few or small rows,
#: 32x65536); ``"all"``: also in place of a block a row looping over it
#: (many long rows).  Off until measured (session 13 had no GPU;
#: ``scripts/gpu_tune.py``'s forward plans time both settings); the
#: simulator's tests switch it on (there it runs in two launches, as
#: :data:`FWD_COOP` does).  The same bits as the split.
FWD_CLUSTER = None

#: The backward of rows of several windows by columns
#: (:func:`~numba_ln.gpu._kernels._bwd_cols`: after the windows' row sums, a
#: thread a column of every row, its dweight and dbias summed over the rows
#: itself; no partial rows, no column-sum kernel) where there are at most
#: this many rows (at most ``COLS_THREADS``); 0: never.  For the few long
#: rows whose backward is three launches, the second at 12% of warps active
#: (32x65536 float32: 27% of copy bandwidth on an H200).  Off until
#: measured (session 13 had no GPU; ``scripts/gpu_tune.py``'s backward
#: plans time it); the tests switch it on.
BWD_COLS_ROWS = 0

#: Threads per block of the strided copies.
_COPY_THREADS = 256


def row_geometry(d, pass_="forward"):
    """``(variant, (tpr, R))``: the kernel variant for the ``pass_`` of rows
    of ``d`` and its block shape, ``tpr`` threads a row and ``R`` rows a block
    (see :data:`numba_ln.gpu._kernels.TABLE`)."""
    v = K.variant(d, pass_)
    return v, (v.tpr, v.rows_per_block)


#: ``{(context id, kernel key): blocks}`` of :func:`resident_blocks`.
_RESIDENT = {}


def resident_blocks(v, dtype, kind="layer_norm_backward"):
    """Blocks of variant ``v``'s ``kind`` kernel for ``dtype`` (a name) that
    fit on the current GPU at once: blocks a multiprocessor (the CUDA
    occupancy calculator, for its registers and shared memory) times the
    multiprocessors.  Compiles the kernel if needed; cached per context."""
    if K.SIM:
        return BWD_SIM_SLOTS
    ctx = cuda.current_context()
    key = (id(ctx), v.suffix, dtype, kind)
    n = _RESIDENT.get(key)
    if n is None:
        kernel = getattr(v, K._ATTR[kind])[dtype].compile(K.signatures(dtype)[kind])
        n = _RESIDENT[key] = max(1, int(kernel.max_cooperative_grid_blocks(v.threads)))
    return n


def backward_launch(rows, d, dtype="float32"):
    """``(G, nwin, variant, (tpr, R))`` of the backward: G row slots, nwin windows.

    ``G * nwin`` blocks fill the GPU once (:func:`resident_blocks`), or fewer
    when there are fewer row groups.  Where that leaves every row group its
    own slot over several windows (few long rows), the variant of
    :data:`~numba_ln.gpu._kernels.LONG_ROWS` takes them if there is one, in
    about its ``grid`` blocks.  ``G`` depends on the shape and the GPU
    model, so the gradients' summation order does too: bitwise reproducible
    on one kind of GPU.
    """
    v, block = row_geometry(d, "backward")
    nwin = -(-d // v.capacity)
    groups = -(-rows // v.rows_per_block)
    # (from the value-at-a-time build: a vector-access build has the same
    # launch bound, so as many blocks fit, and must sum the same partial rows)
    G = max(1, min(groups, resident_blocks(v, dtype) // nwin))
    if K.LONG is not None and nwin > 1 and G == groups:
        v = K.LONG
        block = (v.tpr, v.rows_per_block)
        nwin = -(-d // v.capacity)
        G = max(1, min(-(-rows // v.rows_per_block), v.grid // nwin))
    return G, nwin, v, block


def forward_plan(rows, d, itemsize, dtype=None):
    """``("rows" | "split" | "coop" | "cluster", grid, variant, block)`` of
    the forward.

    A prefetching variant (``variant.pipe[dtype]``) takes one wave of
    resident blocks, others a block per row group; rows split over blocks
    take one launch in clusters where :data:`FWD_CLUSTER` allows, else one
    cooperative launch where :data:`FWD_COOP` does.  ``dtype``: the dtype's
    name (default: the float of ``itemsize`` bytes)."""
    v, block = row_geometry(d)
    nwin = -(-d // v.capacity)
    groups = -(-rows // v.rows_per_block)
    dtype = dtype or {4: "float32", 8: "float64"}[itemsize]
    split = nwin > 1 and (rows * d * itemsize <= FWD_SPLIT_MAX_BYTES
                          or groups <= FWD_SPLIT_FEW_ROWS
                          * resident_blocks(v, dtype, "layer_norm_forward"))
    if (FWD_CLUSTER == "all" and nwin > 1 or FWD_CLUSTER == "split" and split) \
            and cluster_fits(v, dtype, nwin):
        return "cluster", groups * nwin, v, block
    if split:
        if FWD_COOP and coop_fits(v, dtype, "layer_norm_forward_coop", groups * nwin):
            return "coop", groups * nwin, v, block
        return "split", groups * nwin, v, block
    if v.pipe[dtype] and groups > 0:
        return "rows", min(groups, resident_blocks(v, dtype, "layer_norm_forward")), v, block
    return "rows", groups, v, block


def coop_fits(v, dtype, kind, grid):
    """Whether ``grid`` blocks of variant ``v``'s cooperative kernel
    ``kind`` fit on the GPU at once and numba_ln's launcher can launch it
    cooperatively (under the simulator: always; its phases are launched one
    after another)."""
    if K.SIM:
        return True
    kernel = getattr(v, K._ATTR[kind])[dtype]
    return (_launcher(kernel, dtype, kind) is not None
            and grid <= resident_blocks(v, dtype, kind))


#: ``{(context id, variant suffix, dtype, nwin): bool}`` of :func:`cluster_fits`.
_CLUSTERS = {}


def cluster_fits(v, dtype, nwin):
    """Whether variant ``v``'s one-launch split forward may run in clusters
    of ``nwin`` blocks here: ``2 <= nwin <=``
    :data:`~numba_ln.gpu._kernels.CLUSTER_MAX`, and (not under the
    simulator, where its phases are launched one after another) numba_ln's
    launcher, a GPU of compute capability 9.0+, and room for one such
    cluster (``cuOccupancyMaxActiveClusters``; cached per context)."""
    if not 2 <= nwin <= K.CLUSTER_MAX:
        return False
    if K.SIM:
        return True
    key = (id(cuda.current_context()), v.suffix, dtype, nwin)
    fits = _CLUSTERS.get(key)
    if fits is None:
        fast = _launcher(v.fwd_coop[dtype], dtype, "layer_norm_forward_coop")
        fits = _CLUSTERS[key] = (fast is not None
                                 and fast.max_active_clusters(nwin, v.threads) >= 1)
    return fits


def scratch(work, key, make):
    """``work[key]``, made by ``make()`` on first use; a fresh ``make()``
    each call when ``work`` is None (no scratch cache: the simulator)."""
    if work is None:
        return make()
    buf = work.get(key)
    if buf is None:
        buf = work[key] = make()
    return buf


#: dtype.char -> dtype name (``np.dtype.name`` is a slow Python property)
_NAME = {"f": "float32", "d": "float64"}


def forward(x, w, b, flags, eps, y, stats, stream, work=None):
    """LayerNorm of every row of ``x`` (rows, D) into ``y``; ``stats``
    (2, rows) receives ``mean`` and ``rstd``.

    ``w`` and ``b`` are 1-D arrays (a dummy of a few values when absent;
    ``flags`` says which are real; :func:`full_params` replaces it where
    the variant needs D values); ``eps`` a scalar of x's dtype.  ``work``:
    as in :func:`backward`.
    """
    rows, d = x.shape
    if rows == 0 or d == 0:
        return
    name = _NAME[x.dtype.char]
    kind, grid, v, block = forward_plan(rows, d, x.dtype.itemsize, name)
    if kind == "rows":
        if name in v.direct_wb and flags != K.HAS_WEIGHT | K.HAS_BIAS:
            w, b = full_params(w, b, flags, d, x.dtype, stream, work)
        kernel = v.fwd[name]
        if name in v.fwd_vec and vector_ok(v.fwd_width[name], d, x, y, w, b):
            kernel = v.fwd_vec[name]
        _go(kernel, name, "layer_norm_forward", grid, block, stream,
            x, w, b, np.int32(flags), eps, y, stats)
        return
    nwin = -(-d // v.capacity)
    part = scratch(work, ("fwd", rows, d, name),
                   lambda: empty((rows, nwin, 4), x.dtype, stream=stream))
    if kind in ("coop", "cluster"):  # one kernel: a cooperative launch, or clusters
        coop = kind == "coop"
        bar = barriers(grid // nwin if coop else 1, stream, work)  # (clusters: unused)
        for phase in K.COOP_PHASES if coop else K.CLUSTER_PHASES:
            _go(v.fwd_coop[name], name, "layer_norm_forward_coop", grid, block, stream,
                x, w, b, np.int32(flags), eps, part, bar, np.int32(phase), y, stats,
                cooperative=coop and not K.SIM, cluster=0 if coop or K.SIM else nwin)
        return
    _go(v.fwd_part[name], name, "layer_norm_forward_split_stats", grid, block, stream, x, part)
    _go(v.fwd_apply[name], name, "layer_norm_forward_split_apply", grid, block, stream,
        x, w, b, np.int32(flags), eps, part, y, stats, pdl=True)


def full_params(w, b, flags, d, dtype, stream, work=None):
    """``(w, b)`` with an absent one (``flags``) replaced by ``d`` ones (the
    weight) or ``d`` times ``-0.0`` (the bias), for the forward of the
    variants of :data:`~numba_ln.gpu._kernels.DIRECT_WB`, which read both at
    every column and compute ``h * w + b`` with no select: ``h * 1 + -0.0``
    is ``h`` bit for bit (``-0.0 + -0.0`` is ``-0.0``), so the result is
    that of no weight or bias (with a bias, within the rounding of the
    fused multiply-add: see ``_make_variant``).  Kept in ``work`` (see
    :func:`scratch`)."""
    name = _NAME[np.dtype(dtype).char]
    if not flags & K.HAS_WEIGHT:
        w = ones(d, dtype, stream, work)
    if not flags & K.HAS_BIAS:
        b = scratch(work, ("-zeros", d, name),
                    lambda: cuda.to_device(np.full(d, -0.0, dtype), stream=stream))
    return w, b


def barriers(groups, stream, work=None):
    """Zeroed counters of :func:`~numba_ln.gpu._kernels._blocks_barrier`
    for ``groups`` groups of blocks, kept in ``work`` (see :func:`scratch`;
    a barrier leaves their low bits zero, so one stream's launches share
    them: they run one after another)."""
    return scratch(work, ("barriers", groups),
                   lambda: cuda.to_device(np.zeros(groups, np.uint32), stream=stream))


def tickets(groups, stream, work=None):
    """Zeroed counters of the tail column sums
    (:func:`~numba_ln.gpu._kernels._tail_ticket`), two for each of
    ``groups`` column windows, kept in ``work`` like :func:`barriers` (the
    kernel leaves them zeroed)."""
    return scratch(work, ("tickets", groups),
                   lambda: cuda.to_device(np.zeros(2 * groups, np.uint32), stream=stream))


def ones(d, dtype, stream, work=None):
    """``d`` ones of ``dtype`` on the device, kept in ``work`` (see
    :func:`scratch`): the weight of a layer that has none, for the kernels
    that read it at every column (:func:`full_params`, and the backward of
    :data:`~numba_ln.gpu._kernels.DIRECT_W_BWD`'s variants)."""
    name = _NAME[np.dtype(dtype).char]
    return scratch(work, ("ones", d, name),
                   lambda: cuda.to_device(np.ones(d, dtype), stream=stream))


def by_columns(rows, nwin):
    """Whether the backward of ``rows`` rows of ``nwin`` windows
    (:func:`backward_launch`) is done by columns after the row sums
    (:data:`BWD_COLS_ROWS`)."""
    return nwin > 1 and 0 < rows <= min(BWD_COLS_ROWS, K.COLS_THREADS)


def backward(dy, x, mean, rstd, w, flags, dx, grads, stream, work=None):
    """``dx`` of every row and the column sums ``grads``: ``(2, D)`` for
    ``(dweight, dbias)``, or ``(1, D)`` for ``dbias`` alone.

    Launches the variant's ``bwd_rowsums`` when a row spans several windows
    (the windows' sums of each row into ``sums``), then its ``bwd`` (which
    writes ``G`` partial rows of each gradient into ``part``), then one
    :func:`~numba_ln.gpu._kernels._col_sum` for both gradients; each after
    the first as a programmatic dependent launch (see
    :mod:`numba_ln.gpu._fastlaunch`).  The variants of
    :data:`~numba_ln.gpu._kernels.TAIL_COLS` have the row kernel's last
    blocks sum the partial rows instead (no column-sum kernel).  The variants of
    :data:`~numba_ln.gpu._kernels.FUSED_COLS` sum the partial rows (and
    the windows of rows of several) in the row kernel's own launch instead,
    where its blocks fit at once (:func:`coop_fits`).  Rows of several
    windows, at most :data:`BWD_COLS_ROWS` of them, take the backward by
    columns after the row sums instead of the row and column-sum kernels.  ``work``: a
    dict in which to keep the scratch buffers for the next call with the same
    shape (on the same stream), else they are allocated per call.
    """
    rows, d = x.shape
    if d == 0:
        return
    dtype = x.dtype
    name = _NAME[dtype.char]
    G, nwin, v, block = backward_launch(rows, d, name)
    by_cols = by_columns(rows, nwin)  # (no partial rows; a looping variant has no fused build)
    sums, part = scratch(work, ("bwd", rows, d, name, by_cols), lambda: (
        empty((2, rows, nwin) if nwin > 1 else (2, 1, 1), dtype, stream=stream),
        empty((2, 1, 1) if by_cols else (2, G, d), dtype, stream=stream)))  # weight's, bias's
    vec = rows > 0 and name in v.bwd_vec and vector_ok(v.bwd_width[name], d, dy, x, dx)
    tail = (v.bwd_tail_vec if vec else v.bwd_tail).get(name) if rows > 0 else None
    fused = (rows > 0 and name in v.bwd_fused and not vec and tail is None
             and coop_fits(v, name, "layer_norm_backward_fused", G * nwin))
    if nwin > 1 and rows > 0 and not fused:
        grid = -(-rows // block[1]) * nwin
        _go(v.bwd_rowsums[name], name, "layer_norm_backward_rowsums", grid, block, stream,
            dy, x, mean, rstd, w, np.int32(flags), sums)
        if by_cols:  # (then by columns: all of it)
            _go(K.bwd_cols[name], name, "layer_norm_backward_cols", -(-d // K.COLS_THREADS),
                K.COLS_THREADS, stream, dy, x, mean, rstd, w, np.int32(flags), sums, dx, grads,
                pdl=True)
            return
    if rows > 0:
        if name in v.bwd_direct_w and not flags & K.HAS_WEIGHT:
            w = ones(d, dtype, stream, work)  # (read and multiplied by: dy * 1 is dy)
        if fused:  # the row sums and the column sums in the same launch (barriers between)
            bar = barriers(1 + G, stream, work)
            for phase in K.FUSED_PHASES:
                _go(v.bwd_fused[name], name, "layer_norm_backward_fused", G * nwin, block,
                    stream, dy, x, mean, rstd, w, np.int32(flags), sums, dx, part, grads, bar,
                    np.int32(phase), cooperative=not K.SIM)
            return
        if tail is not None:  # the column sums by its last blocks (no kernel after it)
            tick = tickets(nwin, stream, work)
            for phase in K.tail_phases(min(v.tail_cols[0], G)):
                _go(tail, name, "layer_norm_backward_tail", G * nwin, block, stream,
                    dy, x, mean, rstd, w, np.int32(flags), sums, dx, part, grads, tick,
                    np.int32(phase), pdl=nwin > 1)
            return
        kernel = v.bwd_vec[name] if vec else v.bwd[name]
        _go(kernel, name, "layer_norm_backward", G * nwin, block, stream,
            dy, x, mean, rstd, w, np.int32(flags), sums, dx, part, pdl=nwin > 1)
    else:  # no rows: the sums are zero
        part.copy_to_device(np.zeros((2, G, d), dtype), stream=stream)
    # dweight and dbias, or dbias alone (the last rows of part: see _col_sum)
    _go(K.col_sum[name], name, "layer_norm_backward_colsum", *col_launch(G, d, grads.shape[0]),
        stream, part, grads, pdl=rows > 0)


def data_ptr(a):
    """The address of device array ``a``'s first value."""
    if K.SIM:
        return a._ary.__array_interface__["data"][0]
    mem = a.gpu_data
    return 0 if mem is None else int(mem.device_pointer)


def vector_ok(width, d, *arrays):
    """Whether the vector-access build of a :data:`~numba_ln.gpu._kernels.VECTOR`
    variant may take these arrays: C-contiguous rows of ``d`` columns (the
    kernels' arrays) of a multiple of ``width`` values, every array's data
    aligned for a piece (:func:`~numba_ln.gpu._kernels.vector_align`) and at
    least ``width`` long (the weight and bias dummies included).  Else the
    same layout a value at a time (the same bits)."""
    if d % width:
        return False
    align = K.vector_align(width, arrays[0].dtype.itemsize)
    for a in arrays:
        if a.size < width or data_ptr(a) % align:
            return False
    return True


def col_launch(P, d, ngrad, cols=None, ny_max=None):
    """``(grid, block)`` of :func:`~numba_ln.gpu._kernels._col_sum` over
    ``P`` partial rows of ``d`` columns for ``ngrad`` gradients.  Blocks of
    ``cols`` columns (default: ``COL_TX``, or ``COL_TX_FEW`` for at most
    ``COL_FEW`` partial rows) x the largest power of two up to
    ``ny_max`` (default ``COL_TY``; and ``COL_THREADS`` threads in all) that
    leaves a thread at least 4 rows (1 for ``P < 8``), so that a few partial
    rows do not launch many mostly idle threads.  (``cols`` and ``ny_max``
    other than the defaults: the sweeps of ``scripts/gpu_tune.py``.)"""
    cols = cols or (K.COL_TX_FEW if P <= K.COL_FEW else K.COL_TX)
    if not 0 < cols <= K.COL_THREADS:
        raise ValueError(f"column-sum blocks of {cols} columns: 1 to {K.COL_THREADS}")
    ny = 1
    while ny * 2 <= min(ny_max or K.COL_TY, K.COL_THREADS // cols, P // 4):
        ny *= 2
    return (-(-d // cols), ngrad), (cols, ny)


# --------------------------------------------------------------------------
# Strided copies between any device array and a C-contiguous one.
# --------------------------------------------------------------------------

@cuda.jit(device=True)
def _strided_offset(i, base, shape, strides):
    """``base + sum(idx_k * strides[k])`` with ``idx`` the C-order
    multi-index of ``i`` over ``shape``."""
    off = base
    for k in range(shape.shape[0] - 1, -1, -1):
        off += (i % shape[k]) * strides[k]
        i //= shape[k]
    return off


@cuda.jit
def _gather_kernel(src, base, shape, strides, dst):
    """``dst[i] = src[offset(i)]`` (see :func:`_strided_offset`); casts to dst's dtype."""
    T = dst.dtype.type
    i = cuda.grid(1)
    while i < dst.shape[0]:
        dst[i] = T(src[_strided_offset(i, base, shape, strides)])
        i += cuda.gridsize(1)


@cuda.jit
def _scatter_kernel(src, dst, base, shape, strides):
    """The reverse of :func:`_gather_kernel`."""
    T = dst.dtype.type
    i = cuda.grid(1)
    while i < src.shape[0]:
        dst[_strided_offset(i, base, shape, strides)] = T(src[i])
        i += cuda.gridsize(1)


def flat_view(a):
    """``(flat, base, strides)``: a 1-D view of the memory of device array
    ``a`` and the element offset/strides of ``a`` in it.

    Negative strides are not supported (the caller reports them).
    """
    item = a.dtype.itemsize
    strides = tuple(int(s) // item for s in a.strides)
    extent = 1 + sum((n - 1) * s for n, s in zip(a.shape, strides)) if a.size else 0
    if K.SIM:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        host = np.lib.stride_tricks.as_strided(a._ary, shape=(extent,), strides=(item,))
        return FakeCUDAArray(host), 0, strides
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    flat = DeviceNDArray(shape=(extent,), strides=(item,), dtype=a.dtype,
                         gpu_data=a.gpu_data, stream=a.stream)
    return flat, 0, strides


def _copy_launch(n, stream):
    blocks = max(1, min(-(-n // _COPY_THREADS), 65536))
    return blocks, _COPY_THREADS, stream


def _index_arrays(shape, strides, stream):
    return (cuda.to_device(np.asarray(shape, dtype=np.int64), stream=stream),
            cuda.to_device(np.asarray(strides, dtype=np.int64), stream=stream))


def gather(a, perm, dtype, stream):
    """A new C-contiguous device array of dtype ``dtype`` holding
    ``a.transpose(perm)`` (a cast where the dtypes differ)."""
    shape = tuple(a.shape[p] for p in perm)
    out = empty(shape, dtype, stream=stream)
    n = math.prod(shape)
    if n == 0:
        return out
    flat, base, strides = flat_view(a)
    pstrides = tuple(strides[p] for p in perm)
    sh, st = _index_arrays(shape, pstrides, stream)
    _gather_kernel[_copy_launch(n, stream)](flat, base, sh, st, out.reshape(n))
    return out


def scatter(src, dst, perm, stream):
    """``dst.transpose(perm)[...] = src`` for C-contiguous ``src`` of the
    permuted shape and ``dst`` of any layout (a cast where dtypes differ)."""
    n = src.size
    if n == 0:
        return
    flat, base, strides = flat_view(dst)
    shape = tuple(dst.shape[p] for p in perm)
    pstrides = tuple(strides[p] for p in perm)
    sh, st = _index_arrays(shape, pstrides, stream)
    _scatter_kernel[_copy_launch(n, stream)](src.reshape(n), flat, base, sh, st)
