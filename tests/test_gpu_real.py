"""The GPU path on a real GPU (skipped where there is none, and under the
simulator): the real kernels with their real constants (warp shuffles,
256-thread blocks, 32 values a thread in registers).

Run by ``scripts/gpu_check.sh`` on a GPU machine::

    PYTHONPATH=. python -m pytest -q tests/test_gpu_real.py
"""

import os

import numpy as np
import pytest
from _reference import ln_backward_ref, ln_ref

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("real-GPU tests; the simulator runs tests/test_gpu_sim.py", allow_module_level=True)

from numba import cuda  # noqa: E402

if not cuda.is_available():
    pytest.skip("no CUDA GPU here (numba.cuda.is_available() is False)", allow_module_level=True)

import numba_ln  # noqa: E402
from numba_ln import gpu  # noqa: E402
from numba_ln.gpu import _kernels, _launch  # noqa: E402


# The float64 references shared by every test file (positional order x, w, b, axes).
ref_forward = ln_ref
ref_backward = ln_backward_ref


RNG = np.random.default_rng(1607)

# The tests of scripts/gpu_tune.py's candidate kernels (not the library's):
# scripts/gpu_check.sh runs them with CANDIDATES=1 only.
candidate = pytest.mark.candidate

# Every geometry: warp-or-less groups (D <= 1024), block rows in registers
# (D <= 8192), looped rows, several backward windows (D > 8192), D > 65536.
SHAPES = [(1, 1), (7, 3), (1000, 32), (513, 100), (4096, 1024), (300, 1000), (100, 1025),
          (64, 4096), (17, 8192), (9, 8193), (5, 20000), (3, 65537), (2, 100000)]


def _tol(dtype, d):
    if dtype == np.float32:
        return dict(rtol=1e-4, atol=1e-4 * max(1.0, np.sqrt(d) / 30))
    return dict(rtol=1e-10, atol=1e-10)


@pytest.fixture(params=["split", "loop"])
def fwd_split(request, monkeypatch):
    """Rows longer than a register window: split over blocks, or looped."""
    if request.param == "loop":
        monkeypatch.setattr(_launch, "FWD_SPLIT_MAX_BYTES", 0)
        monkeypatch.setattr(_launch, "FWD_SPLIT_FEW_ROWS", 0)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_cpu_path(shape, dtype, fwd_split):
    if fwd_split == "loop" and shape[1] <= 8192:
        pytest.skip("one register window: no split")
    rows, d = shape
    x = (RNG.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = RNG.standard_normal(d).astype(dtype)
    b = RNG.standard_normal(d).astype(dtype)
    dy = RNG.standard_normal(shape).astype(dtype)
    y, m, r = numba_ln.layer_norm(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b),
                                  return_stats=True)
    yc, mc, rc = numba_ln.layer_norm(x, w, b, return_stats=True)
    tol = _tol(dtype, d)
    np.testing.assert_allclose(y.copy_to_host(), yc, **tol)
    np.testing.assert_allclose(m.copy_to_host(), mc, **tol)
    np.testing.assert_allclose(r.copy_to_host(), rc, rtol=tol["rtol"])
    dx, dw, db = numba_ln.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), m, r,
                                              cuda.to_device(w))
    dxc, dwc, dbc = numba_ln.layer_norm_backward(dy, x, mc, rc, w)
    np.testing.assert_allclose(dx.copy_to_host(), dxc, **tol)
    red = dict(rtol=tol["rtol"] * 10, atol=tol["atol"] * max(1.0, np.sqrt(rows)) * 10)
    np.testing.assert_allclose(dw.copy_to_host(), dwc, **red)
    np.testing.assert_allclose(db.copy_to_host(), dbc, **red)


_EDGES = sorted({c + o for c in (v.capacity for v in _kernels.VARIANTS) for o in (-1, 0, 1)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", _EDGES)
def test_every_variant_at_its_capacity_edges(d, dtype):
    """Rows that just fill a kernel variant, and one column more or less
    (the next variant, or threads whose columns are partly past the end),
    with several blocks of rows."""
    rows = 3 * max(_kernels.variant(d, p).rows_per_block for p in ("forward", "backward")) + 1
    x = (RNG.standard_normal((rows, d)) * 2 + 0.5).astype(dtype)
    w = RNG.standard_normal(d).astype(dtype)
    b = RNG.standard_normal(d).astype(dtype)
    dy = RNG.standard_normal((rows, d)).astype(dtype)
    y, m, r = numba_ln.layer_norm(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b),
                                  return_stats=True)
    yr, mr, rr = ref_forward(x, w, b, (1,))
    tol = _tol(dtype, d)
    np.testing.assert_allclose(y.copy_to_host(), yr, **tol)
    np.testing.assert_allclose(r.copy_to_host(), rr, rtol=tol["rtol"])
    dx, dw, db = numba_ln.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), m, r,
                                              cuda.to_device(w))
    dxr, dwr, dbr = ref_backward(dy, x, w, (1,))
    np.testing.assert_allclose(dx.copy_to_host(), dxr, **tol)
    red = dict(rtol=tol["rtol"] * 10, atol=tol["atol"] * max(1.0, np.sqrt(rows)) * 10)
    np.testing.assert_allclose(dw.copy_to_host(), dwr, **red)
    np.testing.assert_allclose(db.copy_to_host(), dbr, **red)


# Rows that fill a variant of VECTOR or DIRECT_WB (the committed tables), and
# one column fewer (D not a multiple of the pieces; threads partly past the end).
_VEC_D = sorted({tpr * kv - o for tpr, kv in {*_kernels.VECTOR, *_kernels.DIRECT_WB}
                 for o in (0, 1)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", _VEC_D)
def test_committed_vector_variants_give_the_same_bits_aligned_or_not(d, dtype, monkeypatch):
    """The committed variants with vector pieces through the public calls:
    aligned arrays take the vector-access build, others the same layout a
    value at a time, with the same bits (see check_vector_variant)."""
    from _gpu_cases import check_vector_variant

    check_vector_variant(d, dtype, RNG, _tol(dtype, d), monkeypatch)


@pytest.mark.parametrize("d", [d for d in _VEC_D if "float32" in _kernels.variant(d).direct_wb])
def test_committed_direct_wb_variants_match_the_selecting_kernel(d):
    """The committed forward that reads w, b directly (float32) against the
    kernel that selects: the same bits without a bias, within rounding with
    one (see check_direct_wb_variant)."""
    from _gpu_cases import check_direct_wb_variant

    check_direct_wb_variant(d, np.float32, RNG, _tol(np.float32, d))


@pytest.mark.parametrize("d", sorted({tpr * kv - o for tpr, kv in _kernels.DIRECT_W_BWD
                                      for o in (0, 1)}))
def test_committed_direct_w_backward_variants_match_the_selecting_kernel(d):
    """The committed backward that reads w directly (float32) against the
    kernel that selects: dx the same bits without a weight, within rounding
    with one; the gradients the same bits (see
    check_direct_w_backward_variant)."""
    from _gpu_cases import check_direct_w_backward_variant

    check_direct_w_backward_variant(d, np.float32, RNG, _tol(np.float32, d))


@pytest.mark.parametrize("shape,axis", [((6, 50, 7), 1), ((4, 30, 40), (0, 2)),
                                        ((3, 5, 7, 11), (1, 2, 3)), ((2000, 3), 0)])
def test_non_trailing_and_multiple_axes(shape, axis):
    axes = tuple(sorted(a % len(shape) for a in (axis if isinstance(axis, tuple) else (axis,))))
    ns = tuple(shape[a] for a in axes)
    x = RNG.standard_normal(shape)
    w = RNG.standard_normal(ns)
    dy = RNG.standard_normal(shape)
    y, m, r = numba_ln.layer_norm(cuda.to_device(x), cuda.to_device(w), axis=axis,
                                  return_stats=True)
    np.testing.assert_allclose(y.copy_to_host(), ref_forward(x, w, None, axes)[0], rtol=1e-10,
                               atol=1e-10)
    dx, dw, db = numba_ln.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), m, r,
                                              cuda.to_device(w), axis=axis)
    dxr, dwr, dbr = ref_backward(dy, x, w, axes)
    np.testing.assert_allclose(dx.copy_to_host(), dxr, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dw.copy_to_host(), dwr, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(db.copy_to_host(), dbr, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("d", [100, 1000, 4000, 20000])
def test_float32_numerics(d, fwd_split):
    x = (1e4 + 0.1 * RNG.standard_normal((4, d))).astype(np.float32)
    y = gpu.layer_norm(cuda.to_device(x)).copy_to_host()
    assert np.abs(y - ref_forward(x, None, None, (1,))[0]).max() < 5e-3
    h = (RNG.standard_normal((4, d)) * 1e30).astype(np.float32)
    h[3] = np.float32(1e38)
    y, m, r = gpu.layer_norm(cuda.to_device(h), return_stats=True)
    y = y.copy_to_host()
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[:3], ref_forward(h[:3], None, None, (1,))[0], rtol=1e-3,
                               atol=1e-3)
    np.testing.assert_array_equal(y[3], 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_huge_rows_split(dtype, monkeypatch):
    """Rows of 3 million values, too few to fill the GPU: split over blocks
    even where x is "too large for L2" (the limit set to 0 here), their 367
    windows' statistics combined by each block's threads together."""
    monkeypatch.setattr(_launch, "FWD_SPLIT_MAX_BYTES", 0)
    d = 3_000_001
    assert _launch.forward_plan(3, d, np.dtype(dtype).itemsize)[0] == "split"
    x = (RNG.standard_normal((3, d)) + 100.0).astype(dtype)
    x[1, 2_000_000:] *= 1e3  # windows of very different spread
    w = RNG.standard_normal(d).astype(dtype)
    b = RNG.standard_normal(d).astype(dtype)
    y, m, r = gpu.layer_norm(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b),
                             return_stats=True)
    yr, mr, rr = ref_forward(x, w, b, (1,))
    np.testing.assert_allclose(y.copy_to_host(), yr, **_tol(dtype, d))
    np.testing.assert_allclose(m.copy_to_host(), mr, rtol=_tol(dtype, d)["rtol"])
    np.testing.assert_allclose(r.copy_to_host(), rr, rtol=_tol(dtype, d)["rtol"])


def test_huge_row_among_warp_rows():
    """One rescaled row in a warp shared by 8 rows of 4 threads."""
    x = RNG.standard_normal((64, 16)).astype(np.float32)
    x[5] *= np.float32(1e30)
    y = gpu.layer_norm(cuda.to_device(x)).copy_to_host()
    np.testing.assert_allclose(y, ref_forward(x, None, None, (1,))[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(4096, 1024), (1000, 100), (40, 20000), (4000, 37)])
def test_gradients_bitwise_reproducible(shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    dy = RNG.standard_normal(shape).astype(np.float32)
    w = RNG.standard_normal(shape[1]).astype(np.float32)
    dx_, dx, dw = cuda.to_device(dy), cuda.to_device(x), cuda.to_device(w)
    _, m, r = gpu.layer_norm(dx, return_stats=True)
    first = [a.copy_to_host() for a in gpu.layer_norm_backward(dx_, dx, m, r, dw)]
    for _ in range(3):
        again = [a.copy_to_host() for a in gpu.layer_norm_backward(dx_, dx, m, r, dw)]
        for a, b in zip(first, again):
            assert np.array_equal(a, b)


def test_out_in_place_and_stream():
    x = RNG.standard_normal((300, 700)).astype(np.float32)
    yr = ref_forward(x, None, None, (1,))[0]
    s = cuda.stream()
    d = cuda.to_device(x, stream=s)
    assert numba_ln.layer_norm(d, out=d, stream=s) is d
    np.testing.assert_allclose(d.copy_to_host(stream=s), yr, rtol=1e-4, atol=1e-4)
    out = cuda.device_array((300, 1400), np.float32)[:, ::2]
    numba_ln.layer_norm(cuda.to_device(x), out=out)
    np.testing.assert_allclose(out.copy_to_host(), yr, rtol=1e-4, atol=1e-4)


def test_cupy_zero_copy_in_place():
    cp = pytest.importorskip("cupy")
    x = cp.asarray(RNG.standard_normal((64, 256)).astype(np.float32))
    ref = ref_forward(cp.asnumpy(x), None, None, (1,))[0]
    ptr = x.data.ptr
    numba_ln.layer_norm(x, out=x)
    cp.cuda.Device().synchronize()
    assert x.data.ptr == ptr
    np.testing.assert_allclose(cp.asnumpy(x), ref, rtol=1e-4, atol=1e-4)
    w = cp.ones(256, cp.float32)
    y = numba_ln.layer_norm(cp.asarray(ref.astype(np.float32)), w)
    assert y.shape == (64, 256)


def test_torch_cuda_tensor_zero_copy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    t = torch.randn(128, 512, device="cuda", dtype=torch.float32)
    w = torch.randn(512, device="cuda")
    b = torch.randn(512, device="cuda")
    expect = torch.nn.functional.layer_norm(t, (512,), w, b, 1e-5)
    y = numba_ln.layer_norm(t, w, b)
    got = torch.as_tensor(y, device="cuda")
    torch.testing.assert_close(got, expect, rtol=1e-4, atol=1e-4)
    numba_ln.layer_norm(t, w, b, out=t)  # in place into the tensor's memory
    torch.cuda.synchronize()
    torch.testing.assert_close(t, expect, rtol=1e-4, atol=1e-4)
    # Backward against autograd.
    x = torch.randn(64, 300, device="cuda", dtype=torch.float64, requires_grad=True)
    wt = torch.randn(300, device="cuda", dtype=torch.float64, requires_grad=True)
    bt = torch.randn(300, device="cuda", dtype=torch.float64, requires_grad=True)
    dy = torch.randn(64, 300, device="cuda", dtype=torch.float64)
    torch.nn.functional.layer_norm(x, (300,), wt, bt, 1e-5).backward(dy)
    xd = x.detach()
    _, m, r = numba_ln.layer_norm(xd, wt.detach(), bt.detach(), return_stats=True)
    dx, dw, db = numba_ln.layer_norm_backward(dy, xd, m, r, wt.detach())
    torch.testing.assert_close(torch.as_tensor(dx, device="cuda"), x.grad)
    torch.testing.assert_close(torch.as_tensor(dw, device="cuda"), wt.grad)
    torch.testing.assert_close(torch.as_tensor(db, device="cuda"), bt.grad)


def test_layernorm_module_on_device():
    x = RNG.standard_normal((32, 4, 64)).astype(np.float32)
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    cpu = numba_ln.LayerNorm((4, 64))
    dev = numba_ln.LayerNorm((4, 64)).to_device()
    np.testing.assert_allclose(dev.forward(cuda.to_device(x)).copy_to_host(), cpu.forward(x),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dev.backward(cuda.to_device(dy)).copy_to_host(), cpu.backward(dy),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dev.grad_weight.copy_to_host(), cpu.grad_weight, rtol=1e-3,
                               atol=1e-3)


def test_mixing_is_an_error():
    with pytest.raises(TypeError, match="weight is a NumPy array but x is on the GPU"):
        numba_ln.layer_norm(cuda.to_device(np.ones((2, 3))), np.ones(3))


def test_launch_geometry():
    def plan(rows, d):
        kind, grid, v, block = _launch.forward_plan(rows, d, 4)
        return kind, grid, (v.tpr, v.kv), block

    def fits(d):  # a pipelined variant: one wave of resident blocks
        return _launch.resident_blocks(_kernels.variant(d), "float32", "layer_norm_forward")

    assert plan(4096, 1024) == ("rows", min(4096, fits(1024)), (128, 8), (128, 1))
    assert plan(65536, 128) == ("rows", min(4096, fits(128)), (16, 8), (16, 16))
    assert plan(16384, 8192) == ("rows", min(16384, fits(8192)), (512, 16), (512, 1))
    assert plan(16384, 8193) == ("rows", 16384, (256, 32), (256, 1))  # looped, 2 windows
    assert _launch.row_geometry(4096, "backward")[1] == (512, 1)
    assert plan(32, 65536) == ("split", 256, (256, 32), (256, 1))
    # too large to re-read from L2 but too few rows to fill the GPU: split
    assert plan(4, 10 ** 7)[:2] == ("split", 4 * -(-10 ** 7 // 8192))
    half = fits(10 ** 6) // 2
    assert plan(half, 10 ** 6)[0] == "split" and plan(half + 1, 10 ** 6)[0] == "rows"
    G, nwin, v, _ = _launch.backward_launch(32, 65536)
    widest = _kernels.VARIANTS[-1]
    if _kernels.LONG is None or 32 > _launch.resident_blocks(widest, "float32") // 8:
        assert nwin == 8 and v is widest
        assert G == min(32, _launch.resident_blocks(v, "float32") // 8)
    else:  # few long rows: the narrower windows of LONG_ROWS, about its grid of blocks
        assert v is _kernels.LONG and nwin == -(-65536 // v.capacity)
        assert G == max(1, min(-(-32 // v.rows_per_block), v.grid // nwin))
    # one wave of blocks: as many as fit on the GPU at once
    G, nwin, v, _ = _launch.backward_launch(65536, 128)
    fits = _launch.resident_blocks(v, "float32")
    assert G == fits and fits % cuda.get_current_device().MULTIPROCESSOR_COUNT == 0


def test_all_axes_normalised():
    x = RNG.standard_normal((3, 40))
    y, m, r = numba_ln.layer_norm(cuda.to_device(x), axis=(0, 1), return_stats=True)
    yc, mc, rc = numba_ln.layer_norm(x, axis=(0, 1), return_stats=True)
    assert tuple(m.shape) == np.shape(mc)
    np.testing.assert_allclose(y.copy_to_host(), yc, rtol=1e-12, atol=1e-12)
    dx, _, _ = numba_ln.layer_norm_backward(cuda.to_device(x), cuda.to_device(x), m, r,
                                            axis=(0, 1))
    np.testing.assert_allclose(dx.copy_to_host(), ref_backward(x, x, None, (0, 1))[0], atol=1e-12)


@candidate
@pytest.mark.parametrize("tpr,kv,pipe,blocks,dtype", [
    (4, 8, True, 4, np.float32), (32, 8, True, 4, np.float32), (128, 8, True, 6, np.float32),
    (512, 16, True, 1, np.float32), (128, 8, True, 4, np.float64)])
def test_one_reduction_statistics(tpr, kv, pipe, blocks, dtype):
    """The shuffle reduction of the one-reduction statistics (a
    scripts/gpu_tune.py candidate; the simulator runs the shared-memory one)."""
    from _gpu_cases import check_one_reduction_statistics

    tol = _tol(dtype, tpr * kv)
    check_one_reduction_statistics(tpr, kv, pipe, dtype, RNG, tol["rtol"], tol["atol"], blocks)


@candidate
@pytest.mark.parametrize("tpr,kv,dtype", [(512, 16, np.float32), (128, 16, np.float32),
                                          (32, 16, np.float64)])
def test_l2_prefetch_gives_the_same_bits(tpr, kv, dtype):
    """The backward that prefetches its next row into L2 (a
    scripts/gpu_tune.py candidate; inline ``prefetch.L2``, which the
    simulator cannot run) computes exactly what the same variant without it
    does, over several rows a block."""
    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    R = threads // tpr
    # with the launch bound of the library's kernels: 512 threads of more than
    # 128 registers do not launch (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES)
    jit = cuda.jit(launch_bounds=(threads, 1)) if _kernels._HAS_BOUNDS else cuda.jit
    kern = {pf: jit(_kernels._make_variant(tpr, kv, False, True, l2_prefetch=pf)
                    ["layer_norm_backward"]) for pf in (False, True)}
    from _gpu_cases import run_backward_builds

    for d in (tpr * kv, tpr * kv - 3):
        (ref_dx, _, _), out = run_backward_builds(kern, tpr, R, 7 * R + 3, d, dtype, RNG, 2)
        assert np.array_equal(out[False][0], out[True][0])
        assert np.array_equal(out[False][1], out[True][1])
        np.testing.assert_allclose(out[True][0], ref_dx, **_tol(dtype, d))


@candidate
@pytest.mark.parametrize("tpr,kv,blocks,cols,loops", [
    (128, 8, 5, 4, False), (128, 8, 5, 2, False), (512, 8, 1, 8, False), (16, 8, 3, 8, False),
    (512, 16, 1, 8, False), (128, 16, 4, 64, True)])
def test_fused_column_sums(tpr, kv, blocks, cols, loops):
    """scripts/gpu_tune.py's backwards with their column sums fused in, each
    a cooperative launch whose blocks wait at a barrier of all of them: dx
    the plain build's bits, the gradients within rounding of the column-sum
    kernel's and the same bits on a second call."""
    from _gpu_cases import check_own_column_sums

    check_own_column_sums("fused", tpr, kv, True, cols, np.float32, RNG,
                          _tol(np.float32, tpr * kv), blocks, slots=5, loops=loops)


@candidate
@pytest.mark.parametrize("tpr,kv,blocks,tail,loops,slots", [
    (128, 8, 5, (3, 8), False, 5), (128, 8, 5, (5, 16), False, 5), (128, 8, 5, (1, 32), False, 5),
    (128, 8, 5, (330, 8), False, 660), (512, 8, 1, (132, 64), False, 132),
    (16, 8, 3, (396, 8), False, 396), (128, 16, 4, (8, 128), True, 8),
    (128, 16, 4, (1, 128), True, 8), (128, 16, 4, (4, 32), True, 8)])
def test_tail_column_sums(tpr, kv, blocks, tail, loops, slots):
    """scripts/gpu_tune.py's backwards whose last blocks to finish sum the
    partial rows (the others exit, those wait for the rest: one launch, not
    cooperative), at the sweep's slot counts: dx the plain build's bits, the
    gradients within rounding of the column-sum kernel's, the same bits on a
    second call, the tickets left zeroed."""
    from _gpu_cases import check_own_column_sums

    check_own_column_sums("tail", tpr, kv, True, tail, np.float32, RNG,
                          _tol(np.float32, tpr * kv), blocks, slots=slots, loops=loops)


@candidate
@pytest.mark.parametrize("tpr,kv,pipe,blocks,dtype,vec", [
    (16, 8, True, 4, np.float32, 4), (128, 8, True, 8, np.float32, 4),
    (128, 8, True, 8, np.float32, 2), (256, 16, True, 2, np.float32, 4),
    (512, 16, True, 1, np.float32, 4), (256, 16, False, 2, np.float64, 2),
    (256, 16, False, 2, np.float64, 4)])
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")  # (the overflowing row)
def test_vector_pieces_forward(tpr, kv, pipe, blocks, dtype, vec):
    """The forward with vector pieces (a scripts/gpu_tune.py candidate: real
    16-byte loads and stores, which the simulator does one value at a time)."""
    from _gpu_cases import check_forward_candidate

    tol = _tol(dtype, tpr * kv)
    check_forward_candidate(tpr, kv, pipe, dtype, RNG, tol["rtol"], tol["atol"], blocks, vec=vec)


@candidate
@pytest.mark.parametrize("tpr,kv,pipe,blocks,dtype,vec", [
    (128, 8, True, 8, np.float32, 1), (512, 16, True, 1, np.float32, 1),
    (512, 16, True, 1, np.float32, 4), (256, 16, False, 2, np.float64, 1)])
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")  # (the overflowing row)
def test_direct_weight_and_bias(tpr, kv, pipe, blocks, dtype, vec):
    """The forward reading w[j], b[j] unclamped with no select (``wb_direct``,
    a scripts/gpu_tune.py candidate), alone and with vector pieces."""
    from _gpu_cases import check_forward_candidate

    tol = _tol(dtype, tpr * kv)
    check_forward_candidate(tpr, kv, pipe, dtype, RNG, tol["rtol"], tol["atol"], blocks, vec=vec,
                            wb_direct=True)


@candidate
@pytest.mark.parametrize("tpr,kv,pipe,blocks,dtype,vec", [
    (16, 8, True, 3, np.float32, 4), (128, 8, True, 5, np.float32, 4),
    (512, 8, True, 2, np.float32, 4), (512, 8, True, 1, np.float64, 2)])
def test_vector_pieces_backward(tpr, kv, pipe, blocks, dtype, vec):
    """The backward with vector pieces (a scripts/gpu_tune.py candidate)."""
    from _gpu_cases import check_vector_backward

    check_vector_backward(tpr, kv, pipe, dtype, RNG, _tol(dtype, tpr * kv), blocks, vec)


@candidate
@pytest.mark.parametrize("tpr,kv,pipe,blocks,opts", [
    (128, 8, True, 5, {"w_direct": True}), (128, 8, True, 2, {"threads": 256}),
    (128, 8, True, 2, {"threads": 256, "w_direct": True}), (16, 8, True, 3, {"w_direct": True}),
    (512, 16, True, 1, {"hold": True}),
    (512, 16, False, 1, {"hold": True}), (1024, 8, True, 1, {"w_direct": True}),
    (512, 8, True, 1, {"w_direct": True})])
def test_backward_candidates(tpr, kv, pipe, blocks, opts):
    """The sixth sweep's backward candidates (scripts/gpu_tune.py): direct
    weight reads, rows held past HOLD_MAX, other threads a block (see
    check_backward_candidate), float32."""
    from _gpu_cases import check_backward_candidate

    check_backward_candidate(tpr, kv, pipe, np.float32, RNG, _tol(np.float32, tpr * kv),
                             blocks, **opts)


@candidate
@pytest.mark.parametrize("tpr,kv,pipe,blocks,dtype,vec", [
    (16, 8, True, 4, np.float32, 4), (128, 8, True, 8, np.float32, 4),
    (512, 16, True, 1, np.float32, 4), (512, 8, True, 1, np.float64, 2)])
def test_vector_access_gives_the_same_bits(tpr, kv, pipe, blocks, dtype, vec):
    """A VECTOR variant's two builds (vector accesses for aligned arrays, the
    same layout a value at a time for others) give the same bits, forward
    and backward (where the backward takes pieces), rows that fill the
    variant or leave threads partly past the end."""
    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    R = threads // tpr
    jit = cuda.jit(launch_bounds=(threads, blocks) if blocks > 1 else (threads,))
    fns = {a: _kernels._make_variant(tpr, kv, False, pipe, vec=vec, vec_access=a)
           for a in (False, True)}
    for d in (tpr * kv, tpr * kv - vec, tpr + vec):
        rows = 3 * R + 2
        x = cuda.to_device(RNG.standard_normal((rows, d)).astype(dtype))
        dy = cuda.to_device(RNG.standard_normal((rows, d)).astype(dtype))
        w = cuda.to_device(RNG.standard_normal(d).astype(dtype))
        b = cuda.to_device(RNG.standard_normal(d).astype(dtype))
        out = {}
        for a, fn in fns.items():
            y = cuda.device_array((rows, d), dtype)
            stats = cuda.device_array((2, rows), dtype)
            jit(fn["layer_norm_forward"])[2, (tpr, R)](
                x, w, b, np.int32(_kernels.HAS_WEIGHT | _kernels.HAS_BIAS), dtype(1e-5), y, stats)
            got = [y.copy_to_host(), stats.copy_to_host()]
            if "layer_norm_backward" in fn:
                dx = cuda.device_array((rows, d), dtype)
                part = cuda.device_array((2, 2, d), dtype)
                jit(fn["layer_norm_backward"])[2, (tpr, R)](
                    dy, x, stats[0], stats[1], w, np.int32(_kernels.HAS_WEIGHT),
                    cuda.device_array((2, 1, 1), dtype), dx, part)
                got += [dx.copy_to_host(), part.copy_to_host()]
            out[a] = got
        assert len(out[True]) == len(out[False])
        for u, v in zip(out[True], out[False]):
            assert np.array_equal(u, v, equal_nan=True), (tpr, kv, d)


@pytest.fixture
def memory_pool():
    prev = gpu.use_memory_pool(True)
    yield
    gpu.use_memory_pool(prev)


@pytest.mark.parametrize("shape,axis", [((300, 1000), -1), ((9, 20000), -1), ((6, 40, 50), 0)])
def test_memory_pool_gives_the_same_bits(shape, axis, memory_pool):
    """Results allocated from the stream-ordered pool (on a stream and on
    the default one): the same bits as with numba's allocator, through the
    row kernels, the split forward, the windowed backward and the strided
    copies of a non-trailing axis."""
    x = RNG.standard_normal(shape)
    dy = RNG.standard_normal(shape)
    wshape = (shape[0],) if axis == 0 else (shape[-1],)
    w = RNG.standard_normal(wshape)
    s = cuda.stream()
    for stream in (s, None):
        dx_, dw_, dy_ = (cuda.to_device(a) for a in (x, w, dy))
        y, mean, rstd = numba_ln.layer_norm(dx_, dw_, axis=axis, return_stats=True, stream=stream)
        grads = numba_ln.layer_norm_backward(dy_, dx_, mean, rstd, dw_, axis=axis, stream=stream)
        got = [a.copy_to_host(stream=stream or 0) for a in (y, mean, rstd, *grads)]
        s.synchronize()
        gpu.use_memory_pool(False)
        y0, m0, r0 = numba_ln.layer_norm(dx_, dw_, axis=axis, return_stats=True)
        want = [a.copy_to_host() for a in (y0, m0, r0, *numba_ln.layer_norm_backward(
            dy_, dx_, m0, r0, dw_, axis=axis))]
        gpu.use_memory_pool(True)
        for g, e in zip(got, want):
            assert np.array_equal(g, e)


def test_memory_pool_reuses_freed_memory(memory_pool):
    """Dropped results go back to the pool: many calls of one shape on one
    stream do not grow the memory the pool holds beyond what the first
    ones needed (no cuMemAlloc after them)."""
    import gc

    from cuda.bindings import driver as binding

    from numba_ln.gpu import _memory

    s = cuda.stream()
    x = cuda.to_device(RNG.standard_normal((256, 512)).astype(np.float32), stream=s)
    first = numba_ln.layer_norm(x, stream=s).copy_to_host(stream=s)
    pool = _memory._pool(cuda.current_context())

    def reserved():
        attr = binding.CUmemPool_attribute.CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT
        return int(_memory._driver().cuMemPoolGetAttribute(pool, attr))

    for _ in range(3):
        numba_ln.layer_norm(x, stream=s)
    gc.collect()
    before = reserved()
    assert before > 0
    for _ in range(50):
        y = numba_ln.layer_norm(x, stream=s)
        del y
        gc.collect()
    assert reserved() == before
    assert np.array_equal(numba_ln.layer_norm(x, stream=s).copy_to_host(stream=s), first)


def test_torch_and_cupy_streams():
    """A PyTorch or CuPy stream object as stream= (wrapped with
    numba.cuda.external_stream): the work runs on it, and the result is
    the same as on the default stream."""
    x = RNG.standard_normal((512, 300)).astype(np.float32)
    want = numba_ln.layer_norm(cuda.to_device(x)).copy_to_host()
    streams = []
    try:
        import torch

        if torch.cuda.is_available():
            streams.append(("torch", torch.cuda.Stream(), lambda s: s.synchronize()))
    except ImportError:
        pass
    try:
        import cupy

        streams.append(("cupy", cupy.cuda.Stream(non_blocking=True), lambda s: s.synchronize()))
    except ImportError:
        pass
    if not streams:
        pytest.skip("neither torch with CUDA nor cupy")
    for name, s, sync in streams:
        y = numba_ln.layer_norm(cuda.to_device(x), stream=s)
        sync(s)
        assert np.array_equal(y.copy_to_host(), want), name
        layer = numba_ln.LayerNorm(300).to_device(stream=s)
        got = layer.forward(cuda.to_device(x))
        sync(s)
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4096, 1024), (1000, 100), (40, 20000), (9, 8193), (3, 65537)],
                         ids=lambda s: "x".join(map(str, s)))
def test_fast_launch_gives_numba_launch_bits(shape, dtype, monkeypatch):
    """numba_ln.gpu._fastlaunch (its own argument packing and cuLaunchKernel)
    is what launches the kernels, and gives the same bits as numba's
    dispatcher (NUMBA_LN_FAST_LAUNCH=0) for every kernel kind: row forward,
    split forward, window row sums, backward, column sums."""
    from numba_ln.gpu import _fastlaunch

    x = cuda.to_device(RNG.standard_normal(shape).astype(dtype))
    dy = cuda.to_device(RNG.standard_normal(shape).astype(dtype))
    w = cuda.to_device(RNG.standard_normal(shape[1]).astype(dtype))
    b = cuda.to_device(RNG.standard_normal(shape[1]).astype(dtype))
    out = {}
    for fast in ("1", "0"):
        monkeypatch.setenv("NUMBA_LN_FAST_LAUNCH", fast)
        stream = cuda.stream()
        y, m, r = gpu.layer_norm(x, w, b, return_stats=True, stream=stream)
        dx, dw, db = gpu.layer_norm_backward(dy, x, m, r, w, stream=stream)
        out[fast] = [a.copy_to_host(stream=stream) for a in (y, m, r, dx, dw, db)]
        stream.synchronize()
    for a, b_ in zip(out["1"], out["0"]):
        assert np.array_equal(a, b_)
    monkeypatch.setenv("NUMBA_LN_FAST_LAUNCH", "1")
    name = np.dtype(dtype).name
    v = _kernels.variant(shape[1], "backward")
    assert _fastlaunch.launcher(v.bwd[name], name, "layer_norm_backward") is not None
    assert _fastlaunch.launcher(_kernels.col_sum[name], name,
                                "layer_norm_backward_colsum") is not None
    v = _kernels.variant(shape[1])
    assert _fastlaunch.launcher(v.fwd[name], name, "layer_norm_forward") is not None
    ref = ref_forward(x.copy_to_host(), w.copy_to_host(), b.copy_to_host())
    np.testing.assert_allclose(out["1"][0], ref[0], **_tol(dtype, shape[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4096, 1024), (40, 20000), (32, 65536), (3, 65537)],
                         ids=lambda s: "x".join(map(str, s)))
def test_programmatic_dependent_launch_gives_the_same_bits(shape, dtype, monkeypatch):
    """The dependent kernels launched early (numba_ln.gpu._fastlaunch's
    ``pdl``: the column sums, the split forward's second kernel, the
    backward after its row sums) wait for their inputs: several calls on
    new inputs back to back on one stream, with no host synchronisation,
    give the bits of launches without it, and on a GPU of compute
    capability 9.0+ they do go through ``cuLaunchKernelEx``."""
    from numba_ln.gpu import _fastlaunch

    ex = []
    config = _fastlaunch.Launcher._config

    def counted(self, *args):
        ex.append(1)
        return config(self, *args)

    monkeypatch.setattr(_fastlaunch.Launcher, "_config", counted)
    inputs = [[cuda.to_device(RNG.standard_normal(n).astype(dtype))
               for n in (shape, shape, shape[1], shape[1])] for _ in range(4)]
    out = {}
    for pdl in (True, False):
        monkeypatch.setattr(_fastlaunch, "PDL", pdl)
        stream = cuda.stream()
        res = []
        for x, dy, w, b in inputs:
            y, m, r = gpu.layer_norm(x, w, b, return_stats=True, stream=stream)
            dx, dw, db = gpu.layer_norm_backward(dy, x, m, r, w, stream=stream)
            res.append((y, m, r, dx, dw, db))
        out[pdl] = [[a.copy_to_host(stream=stream) for a in t] for t in res]
        stream.synchronize()
        if pdl and cuda.get_current_device().compute_capability >= (9, 0):
            assert ex, "no programmatic dependent launch"
    for t1, t0 in zip(out[True], out[False]):
        for a, b_ in zip(t1, t0):
            assert np.array_equal(a, b_)
    x, dy, w, _ = (a.copy_to_host() for a in inputs[-1])
    ref_dx, ref_dw, _ = ref_backward(dy, x, w)
    np.testing.assert_allclose(out[True][-1][3], ref_dx, **_tol(dtype, shape[1]))
    np.testing.assert_allclose(out[True][-1][4], ref_dw, rtol=1e-3, atol=1e-3 * np.sqrt(shape[0]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cooperative_forward_gives_the_split_bits(dtype, monkeypatch):
    """The split forward in one cooperative launch (``FWD_COOP``, its blocks
    waiting for their row's others at a barrier): the bits of the two
    kernels, where its blocks fit on the GPU at once; where they do not, the
    two kernels."""
    from _gpu_cases import check_one_launch_forward

    shapes = [(3, 65537), (40, 20000), (1, 8193)]
    if dtype == np.float32:  # (float64's widest variant fits 1 block a multiprocessor)
        shapes.append((32, 65536))
    check_one_launch_forward(shapes, dtype, RNG, monkeypatch)
    monkeypatch.setattr(_launch, "FWD_COOP", True)
    v = _kernels.variant(65536)
    fits = _launch.resident_blocks(v, np.dtype(dtype).name, "layer_norm_forward_coop")
    rows = fits // 8 + 1  # (8 windows a row)
    assert _launch.forward_plan(rows, 65536, np.dtype(dtype).itemsize)[0] == "split"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cluster_forward_gives_the_split_bits(dtype, monkeypatch):
    """The split forward in one launch in thread block clusters
    (``FWD_CLUSTER``: a row group's windows one cluster, meeting at the
    cluster's barrier) gives the bits of the two kernels, on a GPU of
    compute capability 9.0+, rows of 2 to ``CLUSTER_MAX`` windows; longer
    rows keep the split.  With "all", many long rows too (in place of a
    block a row looping over it): the split's bits, and the looping
    kernel's results within rounding."""
    from _gpu_cases import check_one_launch_forward

    if cuda.get_current_device().compute_capability < (9, 0):
        pytest.skip("thread block clusters need compute capability 9.0")
    check_one_launch_forward([(40, 20000), (1, 8193), (32, 65536), (5, 65536)], dtype, RNG,
                             monkeypatch, "cluster")
    item = np.dtype(dtype).itemsize
    monkeypatch.setattr(_launch, "FWD_CLUSTER", "split")
    assert _launch.forward_plan(3, 65537, item)[0] == "split"
    rows, d = 600, 16384  # (over 32 MB, more rows than half a wave: a looping block)
    x = cuda.to_device(RNG.standard_normal((rows, d)).astype(dtype) + 3)
    w = cuda.to_device(RNG.standard_normal(d).astype(dtype))
    b = cuda.to_device(RNG.standard_normal(d).astype(dtype))
    got = {}
    for setting, max_bytes, plan in ((None, None, "rows"), ("all", None, "cluster"),
                                     (None, 1 << 40, "split")):
        monkeypatch.setattr(_launch, "FWD_CLUSTER", setting)
        if max_bytes:
            monkeypatch.setattr(_launch, "FWD_SPLIT_MAX_BYTES", max_bytes)
        assert _launch.forward_plan(rows, d, item)[0] == plan
        got[plan] = [a.copy_to_host() for a in gpu.layer_norm(x, w, b, return_stats=True)]
    for a, b_ in zip(got["cluster"], got["split"]):
        assert a.tobytes() == b_.tobytes()
    for a, b_ in zip(got["cluster"], got["rows"]):
        np.testing.assert_allclose(a, b_, **_tol(dtype, d))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_by_columns(dtype, monkeypatch):
    """The backward of few long rows by columns (``BWD_COLS_ROWS``): see
    check_backward_by_columns (dx within rounding of the row kernels' here:
    NVVM may contract its expression otherwise in another kernel); the
    benchmark's 32x65536, rows of 2 windows and a ragged last block, 256
    rows (a block's worth), one row."""
    from _gpu_cases import check_backward_by_columns

    shapes = [(32, 65536), (3, 8193), (_kernels.COLS_THREADS, 20000), (1, 100003)]
    check_backward_by_columns(shapes, dtype, RNG, monkeypatch, exact_dx=False)


def test_forward_keeps_unreturned_statistics_as_scratch():
    """Without return_stats, mean and rstd go to a scratch buffer kept for
    the stream's next call (no allocation); returned statistics are always
    fresh arrays, never that buffer."""
    from numba_ln.gpu import _api

    stream = cuda.stream()
    x = RNG.standard_normal((300, 700)).astype(np.float32)
    dx = cuda.to_device(x, stream=stream)
    y1 = gpu.layer_norm(dx, stream=stream)
    work = _api._workspace(stream)
    scratch = work[("stats", 300, "f")]
    y2 = gpu.layer_norm(dx, stream=stream)
    assert work[("stats", 300, "f")] is scratch
    y3, m, r = gpu.layer_norm(dx, stream=stream, return_stats=True)
    ptr = scratch.__cuda_array_interface__["data"][0]
    assert m.__cuda_array_interface__["data"][0] != ptr
    assert r.__cuda_array_interface__["data"][0] != ptr
    host = [a.copy_to_host(stream=stream) for a in (y1, y2, y3, m, r)]
    stream.synchronize()
    ref_y, ref_m, ref_r = ref_forward(x)
    for y in host[:3]:
        np.testing.assert_allclose(y, ref_y, **_tol(np.float32, 700))
    np.testing.assert_allclose(host[3], ref_m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host[4], ref_r, rtol=1e-5, atol=1e-6)
