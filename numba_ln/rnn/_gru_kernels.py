"""Compiled time loops of the GRU and the LayerNorm-GRU (forward and BPTT).

No validation here: :mod:`numba_ln.rnn.gru` hands these functions
C-contiguous arrays of one float dtype (statistics in float64) and
preallocated outputs.  Shapes: ``T`` steps, ``B`` sequences, ``H`` hidden
units; gate blocks are laid out as PyTorch does, rows ``r, z, n``.

The input projections of all steps (``x @ W_ih.T``) are done before the
loop, cut into pieces of rows (one ``prange`` region per call); the weight
and input gradients after the loop likewise.  The time loop runs the batch
in blocks of sequences (``chunk`` rows), one ``prange`` iteration a block:
each block runs all its steps on one thread, with one recurrent product a
step (``np.dot`` on its rows; numba calls BLAS for it: SciPy's
``cython_blas``, one thread) and then the elementwise and LayerNorm work of
its sequences.  Every LayerNorm is numba_ln's own row kernel
(:func:`numba_ln.kernels.ln_forward_row` /
:func:`numba_ln.kernels.ln_backward_row`) called on one row of one step.

The LN-GRU keeps only ``gi``, ``gh`` and the states for the backward: its
backward step recomputes the four LayerNorms and the gates of the step from
``gi`` and ``gh`` with the forward's own code.  Outside the recurrent
products the time loops are bound by memory traffic, not arithmetic (a
LayerNorm backward over rows that are in cache ran 5x faster than over the
real ones), so recomputing is cheaper than writing the normalised inputs,
gates and statistics in the forward and reading them back.

Three layers, as in the rest of numba_ln: per-sequence step kernels
(``_gru_step`` ...), block drivers that run the time loop over a block of
sequences (``_gru_forward_chunk`` ...), and the whole-batch loops the layer
calls (``_gru_forward`` and ``_gru_forward_parallel`` ...).

Why blocks of whole time loops: there is no barrier inside the time loop, so
on this shared 2-core machine a thread that the OS deschedules delays only
its own block.  A ``prange`` over the batch inside the loop (a parallel
region per step) and BLAS's own threads for the recurrent products (a
barrier per product, and OpenBLAS threads spin between calls) were both
measured far slower at T=64, B=64, H=256.

Parameter gradients of the per-step LayerNorms are accumulated by
``ln_backward_row`` into one float64 partial row per block (steps in
reverse order, the block's sequences in order within a step) and the
blocks' rows are summed in a fixed order afterwards, so results never
depend on a thread count.  One row per block stays in cache; one row per
sequence (12 H float64 each) did not: the backward step work of T=64, B=64,
H=256 on one thread went from 17.0 to 14.4 ms.

Arithmetic follows the input dtype (constants are made with
``dtype.type``), except LayerNorm statistics, which are float64.
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .._cpu import _sum_chunks
from .._flags import JIT_OPTIONS
from ..kernels import ln_backward_row, ln_forward_row

__all__ = []


# --------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------

@njit(**JIT_OPTIONS)
def _tanh_f32(x):
    """float32 tanh as a [13/6] rational function on [-7.9053, 7.9053]
    (Eigen's ``generic_fast_tanh_float``): pure arithmetic, so LLVM
    vectorises it (numba has no SVML here, and libm's ``tanhf`` costs ~50 ns
    a call).  Absolute and relative error below 3e-7 (measured against
    float64 ``np.tanh`` over [-12, 12]); NaN stays NaN."""
    c = np.float32(7.90531110763549805)
    x = min(max(x, -c), c)
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return p * x / q


def _tanh(a):
    """tanh in the precision of ``a`` (compiled only; see the overload)."""
    return np.tanh(a)


def _sigmoid(a):
    """logistic sigmoid in the precision of ``a`` (compiled only)."""
    return 1.0 / (1.0 + np.exp(-a))


@overload(_tanh, jit_options=JIT_OPTIONS)
def _tanh_overload(a):
    """float32: :func:`_tanh_f32`; float64: ``np.tanh``, exact to the last
    bit, for the gradient checks and the equality with PyTorch."""
    if isinstance(a, types.Float) and a.bitwidth == 32:
        return lambda a: _tanh_f32(a)
    return lambda a: np.tanh(a)


@overload(_sigmoid, jit_options=JIT_OPTIONS)
def _sigmoid_overload(a):
    """float32: ``0.5 + 0.5 * tanh(a / 2)`` with :func:`_tanh_f32` (absolute
    error below 2e-7, vectorised); float64: ``1 / (1 + exp(-a))``."""
    if isinstance(a, types.Float) and a.bitwidth == 32:
        def impl(a):
            half = np.float32(0.5)
            return half + half * _tanh_f32(half * a)
        return impl

    def impl64(a):
        return 1.0 / (1.0 + np.exp(-a))
    return impl64


# --------------------------------------------------------------------------
# Recurrent products
# --------------------------------------------------------------------------

@njit(**JIT_OPTIONS)
def _mm_nt(a, bt, out):
    """``out = a @ bt.T`` for ``a`` (M, K) and ``bt`` (N, K), both with
    contiguous rows: blocks of 4 x 4 outputs, each a sum over ``k`` that
    ``reassoc`` lets LLVM vectorise (sixteen vector accumulators).  Plain
    loops for the rows and columns past the last full block.  Every output
    element's order of summation depends on its position only, not on the
    thread that runs it."""
    M, K = a.shape
    N = bt.shape[0]
    z = a.dtype.type(0)
    M4 = M - M % 4
    N4 = N - N % 4
    for i0 in range(0, M4, 4):
        a0 = a[i0]
        a1 = a[i0 + 1]
        a2 = a[i0 + 2]
        a3 = a[i0 + 3]
        for j0 in range(0, N4, 4):
            b0 = bt[j0]
            b1 = bt[j0 + 1]
            b2 = bt[j0 + 2]
            b3 = bt[j0 + 3]
            s00 = z; s01 = z; s02 = z; s03 = z  # noqa: E702
            s10 = z; s11 = z; s12 = z; s13 = z  # noqa: E702
            s20 = z; s21 = z; s22 = z; s23 = z  # noqa: E702
            s30 = z; s31 = z; s32 = z; s33 = z  # noqa: E702
            for k in range(K):
                y0 = b0[k]
                y1 = b1[k]
                y2 = b2[k]
                y3 = b3[k]
                x = a0[k]
                s00 += x * y0; s01 += x * y1; s02 += x * y2; s03 += x * y3  # noqa: E702
                x = a1[k]
                s10 += x * y0; s11 += x * y1; s12 += x * y2; s13 += x * y3  # noqa: E702
                x = a2[k]
                s20 += x * y0; s21 += x * y1; s22 += x * y2; s23 += x * y3  # noqa: E702
                x = a3[k]
                s30 += x * y0; s31 += x * y1; s32 += x * y2; s33 += x * y3  # noqa: E702
            o = out[i0]
            o[j0] = s00; o[j0 + 1] = s01; o[j0 + 2] = s02; o[j0 + 3] = s03  # noqa: E702
            o = out[i0 + 1]
            o[j0] = s10; o[j0 + 1] = s11; o[j0 + 2] = s12; o[j0 + 3] = s13  # noqa: E702
            o = out[i0 + 2]
            o[j0] = s20; o[j0 + 1] = s21; o[j0 + 2] = s22; o[j0 + 3] = s23  # noqa: E702
            o = out[i0 + 3]
            o[j0] = s30; o[j0 + 1] = s31; o[j0 + 2] = s32; o[j0 + 3] = s33  # noqa: E702
        for j in range(N4, N):
            _dot_rows(a, bt, out, i0, j)
            _dot_rows(a, bt, out, i0 + 1, j)
            _dot_rows(a, bt, out, i0 + 2, j)
            _dot_rows(a, bt, out, i0 + 3, j)
    for i in range(M4, M):
        for j in range(N):
            _dot_rows(a, bt, out, i, j)


@njit(**JIT_OPTIONS)
def _dot_rows(a, bt, out, i, j):
    """``out[i, j] = a[i] . bt[j]``."""
    ai = a[i]
    bj = bt[j]
    s = a.dtype.type(0)
    for k in range(ai.shape[0]):
        s += ai[k] * bj[k]
    out[i, j] = s


def _rec(a, wt, out):
    """``out = a @ wt.T`` (compiled only; see the overload)."""
    np.dot(a, wt.T, out)


@overload(_rec, jit_options=JIT_OPTIONS)
def _rec_overload(a, wt, out):
    """float32: :func:`_mm_nt` (one-thread BLAS sgemm, which packs the
    weight again on every call, ran these 32-row products 20-40% slower);
    float64: ``np.dot`` (BLAS), for the gradient checks and the equality
    with PyTorch."""
    if isinstance(a.dtype, types.Float) and a.dtype.bitwidth == 32:
        return lambda a, wt, out: _mm_nt(a, wt, out)

    def impl64(a, wt, out):
        np.dot(a, wt.T, out)
    return impl64


# --------------------------------------------------------------------------
# One sequence, one step: the bodies the time loops map over the batch.
# Their loops index 1-D views of the rows with ``j`` alone: an index such as
# ``H + j`` into a 3-D array gets numba's negative-index wraparound, which
# kept LLVM from vectorising (measured: the LN-GRU's backward step without
# its LayerNorms, 6.1 -> 3.9 ms for T=64, B=64, H=256 on one thread).
# --------------------------------------------------------------------------

@njit(**JIT_OPTIONS)
def _thirds(row, H):
    """The r, z, n blocks of a gate row (1-D views)."""
    return row[:H], row[H:2 * H], row[2 * H:3 * H]


@njit(**JIT_OPTIONS)
def _gru_step(t, b, gi, gh, b_hh, mask, states, gates, hn):
    """Forward GRU step ``t`` of sequence ``b`` (``gh`` holds ``h W_hh^T`` of this step)."""
    H = hn.shape[2]
    one = gi.dtype.type(1)
    m = mask[t, b]
    gi_r, gi_z, gi_n = _thirds(gi[t, b], H)
    gh_r, gh_z, gh_n = _thirds(gh[b], H)
    b_r, b_z, b_n = _thirds(b_hh, H)
    g_r, g_z, g_n = _thirds(gates[t, b], H)
    h_prev = states[t, b]
    h_next = states[t + 1, b]
    hn_ = hn[t, b]
    for j in range(H):
        r = _sigmoid(gi_r[j] + gh_r[j] + b_r[j])
        z = _sigmoid(gi_z[j] + gh_z[j] + b_z[j])
        ghn = gh_n[j] + b_n[j]
        n = _tanh(gi_n[j] + r * ghn)
        hp = h_prev[j]
        hnew = n + z * (hp - n)
        h_next[j] = m * hnew + (one - m) * hp
        g_r[j] = r
        g_z[j] = z
        g_n[j] = n
        hn_[j] = ghn


@njit(**JIT_OPTIONS)
def _gru_step_backward(t, b, dhs, mask, states, gates, hn, dgi, dgh, carry, tmp):
    """BPTT through step ``t`` of sequence ``b``.

    On entry ``carry[b] + tmp[b]`` is the gradient reaching h_t from later
    steps; on exit ``carry[b]`` holds the part of the gradient w.r.t. h_{t-1}
    that does not go through ``W_hh`` (the caller adds ``dgh[t] @ W_hh``).
    """
    H = dhs.shape[2]
    one = dhs.dtype.type(1)
    m = mask[t, b]
    c_, tmp_, dh = carry[b], tmp[b], dhs[t, b]
    g_r, g_z, g_n = _thirds(gates[t, b], H)
    h_prev = states[t, b]
    hn_ = hn[t, b]
    di_r, di_z, di_n = _thirds(dgi[t, b], H)
    dh_r, dh_z, dh_n = _thirds(dgh[t, b], H)
    for j in range(H):
        g = c_[j] + tmp_[j] + dh[j]
        r = g_r[j]
        z = g_z[j]
        n = g_n[j]
        hp = h_prev[j]
        dnew = m * g
        dn = dnew * (one - z)
        dz = dnew * (hp - n)
        dan = dn * (one - n * n)
        dr = dan * hn_[j]
        dar = dr * r * (one - r)
        daz = dz * z * (one - z)
        di_r[j] = dar
        di_z[j] = daz
        di_n[j] = dan
        dh_r[j] = dar
        dh_z[j] = daz
        dh_n[j] = dan * r
        c_[j] = dnew * z + (one - m) * g


@njit(**JIT_OPTIONS)
def _lngru_norms(t, b, gi, gh, lnp, eps, lni, lnh):
    """The four LayerNorms of step ``t`` of sequence ``b``: ``lni[b]`` and
    ``lnh[b]`` receive the normalised ``gi[t, b]`` and ``gh[t, b]`` (gates
    block, candidate block); returns their eight statistics.  The forward
    and the backward both call this, so they see the same values."""
    H = lni.shape[1] // 3
    w_ig, b_ig, w_ic, b_ic, w_hg, b_hg, w_hc, b_hc = lnp
    m_ig, r_ig = ln_forward_row(gi[t, b, :2 * H], w_ig, b_ig, eps, lni[b, :2 * H])
    m_ic, r_ic = ln_forward_row(gi[t, b, 2 * H:], w_ic, b_ic, eps, lni[b, 2 * H:])
    m_hg, r_hg = ln_forward_row(gh[t, b, :2 * H], w_hg, b_hg, eps, lnh[b, :2 * H])
    m_hc, r_hc = ln_forward_row(gh[t, b, 2 * H:], w_hc, b_hc, eps, lnh[b, 2 * H:])
    return m_ig, r_ig, m_ic, r_ic, m_hg, r_hg, m_hc, r_hc


@njit(**JIT_OPTIONS)
def _lngru_step(t, b, gi, gh, lnp, eps, mask, states, lni, lnh):
    """Forward LN-GRU step ``t`` of sequence ``b`` (``gh[t]`` holds ``h W_hh^T``).

    Stores nothing but the new state: ``lni``/``lnh`` are per-sequence
    scratch rows, and the backward recomputes the LayerNorms and gates from
    ``gi`` and ``gh`` (cheaper than the memory traffic of storing them)."""
    H = states.shape[2]
    one = gi.dtype.type(1)
    _lngru_norms(t, b, gi, gh, lnp, eps, lni, lnh)
    m = mask[t, b]
    li_r, li_z, li_n = _thirds(lni[b], H)
    lh_r, lh_z, lh_n = _thirds(lnh[b], H)
    h_prev = states[t, b]
    h_next = states[t + 1, b]
    for j in range(H):
        r = _sigmoid(li_r[j] + lh_r[j])
        z = _sigmoid(li_z[j] + lh_z[j])
        n = _tanh(li_n[j] + r * lh_n[j])
        hp = h_prev[j]
        hnew = n + z * (hp - n)
        h_next[j] = m * hnew + (one - m) * hp


@njit(**JIT_OPTIONS)
def _lngru_step_backward(t, b, c, dhs, mask, states, gi, gh, lnp, eps, dgi, dgh, carry, tmp,
                         lni, lnh, dln, pw, pb):
    """BPTT through step ``t`` of sequence ``b`` of the LN-GRU, its four
    LayerNorms included (their gain/bias gradients are added to row ``c`` of
    ``pw``/``pb``, the partial sums of the block).  The LayerNorms and gates
    are recomputed from ``gi`` and ``gh`` as the forward computed them.
    ``carry``/``tmp`` as in :func:`_gru_step_backward`."""
    H = dhs.shape[2]
    one = dhs.dtype.type(1)
    m_ig, r_ig, m_ic, r_ic, m_hg, r_hg, m_hc, r_hc = _lngru_norms(t, b, gi, gh, lnp, eps, lni,
                                                                  lnh)
    m = mask[t, b]
    c_, tmp_, dh = carry[b], tmp[b], dhs[t, b]
    li_r, li_z, li_n = _thirds(lni[b], H)
    lh_r, lh_z, lh_n = _thirds(lnh[b], H)
    h_prev = states[t, b]
    dl = dln[b]
    d_r, d_z, d_in, d_hn = dl[:H], dl[H:2 * H], dl[2 * H:3 * H], dl[3 * H:]
    for j in range(H):
        r = _sigmoid(li_r[j] + lh_r[j])
        z = _sigmoid(li_z[j] + lh_z[j])
        cj = lh_n[j]
        n = _tanh(li_n[j] + r * cj)
        g = c_[j] + tmp_[j] + dh[j]
        hp = h_prev[j]
        dnew = m * g
        dn = dnew * (one - z)
        dz = dnew * (hp - n)
        dan = dn * (one - n * n)
        dr = dan * cj
        d_r[j] = dr * r * (one - r)          # d pre-sigmoid r (both LN outputs)
        d_z[j] = dz * z * (one - z)          # d pre-sigmoid z (both LN outputs)
        d_in[j] = dan                        # d LN(gi cand)
        d_hn[j] = dan * r                    # d LN(gh cand)
        c_[j] = dnew * z + (one - m) * g
    w_ig, _, w_ic, _, w_hg, _, w_hc, _ = lnp
    ln_backward_row(dl[:2 * H], gh[t, b, :2 * H], m_hg, r_hg, w_hg, dgh[t, b, :2 * H],
                    pw[c, 3 * H:5 * H], pb[c, 3 * H:5 * H])
    ln_backward_row(dl[3 * H:], gh[t, b, 2 * H:], m_hc, r_hc, w_hc, dgh[t, b, 2 * H:],
                    pw[c, 5 * H:], pb[c, 5 * H:])
    ln_backward_row(dl[:2 * H], gi[t, b, :2 * H], m_ig, r_ig, w_ig, dgi[t, b, :2 * H],
                    pw[c, :2 * H], pb[c, :2 * H])
    ln_backward_row(dl[2 * H:3 * H], gi[t, b, 2 * H:], m_ic, r_ic, w_ic, dgi[t, b, 2 * H:],
                    pw[c, 2 * H:3 * H], pb[c, 2 * H:3 * H])


@njit(**JIT_OPTIONS)
def _seed_row(b, dh_last, carry, tmp):
    """Start of BPTT for sequence ``b``: carry = dh_last, tmp = 0."""
    for j in range(carry.shape[1]):
        carry[b, j] = dh_last[b, j]
        tmp[b, j] = 0


@njit(**JIT_OPTIONS)
def _finish_row(b, carry, tmp, dh0):
    for j in range(carry.shape[1]):
        dh0[b, j] = carry[b, j] + tmp[b, j]


# --------------------------------------------------------------------------
# Time loops.  The batch is cut into blocks of ``chunk`` sequences, each of
# which runs all steps on its own (its recurrent products are ``np.dot`` on
# its rows, one-thread BLAS).
# --------------------------------------------------------------------------

@njit(**JIT_OPTIONS)
def _gru_forward_chunk(c, chunk, gi, w_hh, b_hh, mask, states, gates, hn, gh):
    T, B, _ = gi.shape
    b0 = c * chunk
    b1 = min(B, b0 + chunk)
    for t in range(T):
        _rec(states[t, b0:b1], w_hh, gh[b0:b1])
        for b in range(b0, b1):
            _gru_step(t, b, gi, gh, b_hh, mask, states, gates, hn)


@njit(**JIT_OPTIONS)
def _gru_backward_chunk(c, chunk, dhs, dh_last, w_hh_t, mask, states, gates, hn, dgi, dgh, carry,
                        tmp, dh0):
    T, B, _ = dhs.shape
    b0 = c * chunk
    b1 = min(B, b0 + chunk)
    for b in range(b0, b1):
        _seed_row(b, dh_last, carry, tmp)
    for s in range(T):
        t = T - 1 - s
        for b in range(b0, b1):
            _gru_step_backward(t, b, dhs, mask, states, gates, hn, dgi, dgh, carry, tmp)
        _rec(dgh[t, b0:b1], w_hh_t, tmp[b0:b1])
    for b in range(b0, b1):
        _finish_row(b, carry, tmp, dh0)


@njit(**JIT_OPTIONS)
def _lngru_forward_chunk(c, chunk, gi, w_hh, lnp, eps, mask, states, gh, lni, lnh):
    T, B, _ = gi.shape
    b0 = c * chunk
    b1 = min(B, b0 + chunk)
    for t in range(T):
        _rec(states[t, b0:b1], w_hh, gh[t, b0:b1])
        for b in range(b0, b1):
            _lngru_step(t, b, gi, gh, lnp, eps, mask, states, lni, lnh)


@njit(**JIT_OPTIONS)
def _lngru_backward_chunk(c, chunk, dhs, dh_last, w_hh_t, mask, states, gi, gh, lnp, eps, dgi, dgh,
                          carry, tmp, lni, lnh, dln, pw, pb, dh0):
    T, B, _ = dhs.shape
    b0 = c * chunk
    b1 = min(B, b0 + chunk)
    for b in range(b0, b1):
        _seed_row(b, dh_last, carry, tmp)
    for j in range(pw.shape[1]):
        pw[c, j] = 0.0
        pb[c, j] = 0.0
    for s in range(T):
        t = T - 1 - s
        for b in range(b0, b1):
            _lngru_step_backward(t, b, c, dhs, mask, states, gi, gh, lnp, eps, dgi, dgh, carry,
                                 tmp, lni, lnh, dln, pw, pb)
        _rec(dgh[t, b0:b1], w_hh_t, tmp[b0:b1])
    for b in range(b0, b1):
        _finish_row(b, carry, tmp, dh0)


@njit(**JIT_OPTIONS)
def _n_chunks(B, chunk):
    return (B + chunk - 1) // chunk


# Whole-batch loops: serial drivers (the blocks one after another) and
# parallel ones (one ``prange`` region per call, one block per iteration and no
# barrier inside the time loop; each block's recurrent products are
# one-thread BLAS calls).  Blocks never share a row, and a block's arithmetic
# is the same whichever thread runs it, so both give bitwise the same results.
# Separate functions so that their on-disk caches cannot collide.

@njit(**JIT_OPTIONS)
def _gru_forward(chunk, gi, w_hh, b_hh, mask, states, gates, hn, gh):
    for c in range(_n_chunks(gi.shape[1], chunk)):
        _gru_forward_chunk(c, chunk, gi, w_hh, b_hh, mask, states, gates, hn, gh)


@njit(parallel=True, **JIT_OPTIONS)
def _gru_forward_parallel(chunk, gi, w_hh, b_hh, mask, states, gates, hn, gh):
    for c in prange(_n_chunks(gi.shape[1], chunk)):
        _gru_forward_chunk(c, chunk, gi, w_hh, b_hh, mask, states, gates, hn, gh)


@njit(**JIT_OPTIONS)
def _gru_backward(chunk, dhs, dh_last, w_hh_t, mask, states, gates, hn, dgi, dgh, carry, tmp,
                  dh0):
    for c in range(_n_chunks(dhs.shape[1], chunk)):
        _gru_backward_chunk(c, chunk, dhs, dh_last, w_hh_t, mask, states, gates, hn, dgi, dgh,
                            carry, tmp, dh0)


@njit(parallel=True, **JIT_OPTIONS)
def _gru_backward_parallel(chunk, dhs, dh_last, w_hh_t, mask, states, gates, hn, dgi, dgh, carry,
                           tmp, dh0):
    for c in prange(_n_chunks(dhs.shape[1], chunk)):
        _gru_backward_chunk(c, chunk, dhs, dh_last, w_hh_t, mask, states, gates, hn, dgi, dgh,
                            carry, tmp, dh0)


@njit(**JIT_OPTIONS)
def _lngru_forward(chunk, gi, w_hh, lnp, eps, mask, states, gh, lni, lnh):
    for c in range(_n_chunks(gi.shape[1], chunk)):
        _lngru_forward_chunk(c, chunk, gi, w_hh, lnp, eps, mask, states, gh, lni, lnh)


@njit(parallel=True, **JIT_OPTIONS)
def _lngru_forward_parallel(chunk, gi, w_hh, lnp, eps, mask, states, gh, lni, lnh):
    for c in prange(_n_chunks(gi.shape[1], chunk)):
        _lngru_forward_chunk(c, chunk, gi, w_hh, lnp, eps, mask, states, gh, lni, lnh)


@njit(**JIT_OPTIONS)
def _lngru_backward(chunk, dhs, dh_last, w_hh_t, mask, states, gi, gh, lnp, eps, dgi, dgh, carry,
                    tmp, lni, lnh, dln, pw, pb, dh0):
    for c in range(_n_chunks(dhs.shape[1], chunk)):
        _lngru_backward_chunk(c, chunk, dhs, dh_last, w_hh_t, mask, states, gi, gh, lnp, eps, dgi,
                              dgh, carry, tmp, lni, lnh, dln, pw, pb, dh0)


@njit(parallel=True, **JIT_OPTIONS)
def _lngru_backward_parallel(chunk, dhs, dh_last, w_hh_t, mask, states, gi, gh, lnp, eps, dgi, dgh,
                             carry, tmp, lni, lnh, dln, pw, pb, dh0):
    for c in prange(_n_chunks(dhs.shape[1], chunk)):
        _lngru_backward_chunk(c, chunk, dhs, dh_last, w_hh_t, mask, states, gi, gh, lnp, eps, dgi,
                              dgh, carry, tmp, lni, lnh, dln, pw, pb, dh0)


# The products over all T * B rows (before the loop: the input projections
# and, for the LN-GRU, their LayerNorms; after it: the weight gradients and
# the input gradient) are cut into ``pieces`` blocks of rows, a number that
# depends on the shapes only.  A piece's products are one-thread BLAS calls
# on its rows; the weight gradients of the pieces are added afterwards in
# the order p = 0, 1, ... (float64, then rounded once), so the results do
# not depend on the thread count.  Serial and parallel drivers of the same
# pieces (separate functions so that their on-disk caches cannot collide).

@njit(**JIT_OPTIONS)
def _piece_rows(p, pieces, n):
    return p * n // pieces, (p + 1) * n // pieces


@njit(**JIT_OPTIONS)
def _input_piece(p, pieces, x, w_ih, b_ih, gi):
    """Rows of piece ``p``: ``gi = x @ w_ih.T`` (``+ b_ih`` when not None)."""
    r0, r1 = _piece_rows(p, pieces, x.shape[0])
    np.dot(x[r0:r1], w_ih.T, gi[r0:r1])
    if b_ih is not None:
        for i in range(r0, r1):
            for j in range(gi.shape[1]):
                gi[i, j] += b_ih[j]


@njit(**JIT_OPTIONS)
def _input_serial(pieces, x, w_ih, b_ih, gi):
    for p in range(pieces):
        _input_piece(p, pieces, x, w_ih, b_ih, gi)


@njit(parallel=True, **JIT_OPTIONS)
def _input_parallel(pieces, x, w_ih, b_ih, gi):
    for p in prange(pieces):
        _input_piece(p, pieces, x, w_ih, b_ih, gi)


@njit(**JIT_OPTIONS)
def _col_sums(a, r0, r1, out):
    """``out[j] = sum_{r0 <= i < r1} a[i, j]`` in float64, rows in order."""
    for j in range(out.shape[0]):
        out[j] = 0.0
    for i in range(r0, r1):
        for j in range(out.shape[0]):
            out[j] += a[i, j]


@njit(**JIT_OPTIONS)
def _grad_piece(p, pieces, dgi, dgh, x, s, w_ih, dx, part_ih, part_hh, part_bi, part_bh):
    """Rows of piece ``p``: ``dx = dgi @ w_ih``, and its terms of the weight
    gradients ``dgi^T x``, ``dgh^T s`` (and of the bias gradients, the
    column sums of ``dgi`` and ``dgh``, when ``part_bi`` is not None)."""
    r0, r1 = _piece_rows(p, pieces, dgi.shape[0])
    np.dot(dgh[r0:r1].T, s[r0:r1], part_hh[p])
    np.dot(dgi[r0:r1].T, x[r0:r1], part_ih[p])
    np.dot(dgi[r0:r1], w_ih, dx[r0:r1])
    if part_bi is not None:
        _col_sums(dgi, r0, r1, part_bi[p])
        _col_sums(dgh, r0, r1, part_bh[p])


@njit(**JIT_OPTIONS)
def _grads_serial(pieces, dgi, dgh, x, s, w_ih, dx, part_ih, part_hh, part_bi, part_bh):
    for p in range(pieces):
        _grad_piece(p, pieces, dgi, dgh, x, s, w_ih, dx, part_ih, part_hh, part_bi, part_bh)


@njit(parallel=True, **JIT_OPTIONS)
def _grads_parallel(pieces, dgi, dgh, x, s, w_ih, dx, part_ih, part_hh, part_bi, part_bh):
    for p in prange(pieces):
        _grad_piece(p, pieces, dgi, dgh, x, s, w_ih, dx, part_ih, part_hh, part_bi, part_bh)


@njit(**JIT_OPTIONS)
def _sum_parts(part, out):
    """``out = sum_p part[p]`` (2-D), added in float64 in the order p = 0, 1, ..."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            acc = np.float64(part[0, i, j])
            for p in range(1, part.shape[0]):
                acc += part[p, i, j]
            out[i, j] = acc


# ``out[j] = sum_b part[b, j]`` in float64, added in the order b = 0, 1, ...
_sum_rows = _sum_chunks
