"""The GPU kernels under the CUDA simulator: equal to the CPU path and to a
float64 reference, with device arrays in and out.

Run in its own process (``make test-sim``)::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -q -m cudasim tests/test_gpu_sim.py

Under the simulator the kernels run with small constants (64-thread blocks,
4 values a thread, see :mod:`numba_ln.gpu._kernels`), so the small shapes
below reach every path: a warp-or-less group per row (D <= 128) with several
rows per block, a block per row with the row in registers (D <= 256) or
looped (D > 256), several column windows in the backward (D > 256), several
blocks, D not a multiple of the block size.
"""

import os

import numpy as np
import pytest
from _reference import ln_backward_ref, ln_ref

pytestmark = pytest.mark.cudasim

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 (set before numba is imported); "
                "run with: NUMBA_ENABLE_CUDASIM=1 pytest -m cudasim tests/test_gpu_sim.py",
                allow_module_level=True)

from numba import cuda  # noqa: E402

import numba_ln  # noqa: E402
from numba_ln import gpu  # noqa: E402
from numba_ln.gpu import _kernels, _launch  # noqa: E402


# --------------------------------------------------------------------------
# Naive float64 reference.
# --------------------------------------------------------------------------

# The float64 references shared by every test file (positional order x, w, b, axes).
ref_forward = ln_ref
ref_backward = ln_backward_ref


def _axes(axis, ndim):
    axis = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in axis))


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-11)


def _host(a):
    return a.copy_to_host()


RNG = np.random.default_rng(20160721)

# (shape, axis): every kernel path and layout, see the module docstring.
CASES = [
    ((5, 1), -1),          # one thread a row, 64 rows a block
    ((70, 7), -1),         # 2 threads a row, several rows of a block inactive
    ((9, 100), -1),        # 32 threads a row (D not a multiple), 2 rows a block
    ((21, 33), -1),        # several blocks of warp groups
    ((3, 200), -1),        # a block per row, the widest variant (the forward loops)
    ((4, 300), -1),        # rows split over two blocks; two backward windows
    ((3, 700), -1),        # three windows
    ((2, 3, 4, 7), (2, 3)),  # two trailing axes
    ((6, 5, 3), 0),        # a leading axis: transposed on the device
    ((4, 6, 5), (0, 2)),   # non-adjacent axes
]


# float64 on a few paths only: the simulator is slow (a Python thread per
# CUDA thread) and the kernels are the same code for both dtypes.
F64_CASES = {((9, 100), -1), ((3, 200), -1), ((4, 300), -1), ((6, 5, 3), 0)}


PARAMS = ([(shape, axis, np.float32) for shape, axis in CASES]
          + [(shape, axis, np.float64) for shape, axis in CASES if (shape, axis) in F64_CASES])


@pytest.mark.parametrize("shape,axis,dtype", PARAMS)
def test_forward_backward_match_cpu_and_reference(shape, axis, dtype):
    _check_forward_backward(shape, axis, dtype)


@pytest.mark.parametrize("dtype", [np.float32])
def test_long_rows_looped_instead_of_split(dtype, monkeypatch):
    """Rows longer than a register window, one block per row, looped: when x
    is too large for its second read to hit L2, unless the rows are too few
    to fill the GPU (at most half its resident blocks: 8 under the
    simulator)."""
    monkeypatch.setattr(_launch, "FWD_SPLIT_MAX_BYTES", 0)
    assert _launch.forward_plan(5, 300, 4)[0] == "rows"
    _check_forward_backward((5, 300), -1, dtype)
    assert _launch.forward_plan(4, 300, 4)[:2] == ("split", 8)
    _check_forward_backward((4, 300), -1, dtype)
    monkeypatch.setattr(_launch, "FWD_SPLIT_FEW_ROWS", 0)
    assert _launch.forward_plan(1, 300, 4)[0] == "rows"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_long_rows_take_the_narrower_windows(dtype):
    """The backward of rows longer than the widest variant's capacity: where
    the widest variant would give each row group its own slot (8 resident
    blocks under the simulator: rows <= 4 of 2 windows), the variant of
    LONG_ROWS takes it, narrower windows in fewer slots than rows; else the
    widest.  Both against the references, the long one bitwise reproducible."""
    long, widest = _kernels.LONG, _kernels.VARIANTS[-1]
    G, nwin, v, block = _launch.backward_launch(4, 300)
    assert v is long and block == (long.tpr, long.rows_per_block)
    assert nwin == 3 and G == 2 and G * long.rows_per_block == 4
    assert _launch.backward_launch(5, 300)[2] is widest
    assert _launch.backward_launch(3, 700)[2] is widest  # 3 windows: 2 slots < 3 rows
    assert _launch.backward_launch(2, 700)[:3] == (1, 6, long)
    assert _launch.backward_launch(4, 200)[2] is widest  # one window: no partials to spare
    for shape in ((4, 300), (2, 700), (1, 1000), (5, 300)):
        _check_forward_backward(shape, -1, dtype)
    x = RNG.standard_normal((3, 300)).astype(dtype)
    dy = RNG.standard_normal(x.shape).astype(dtype)
    w = RNG.standard_normal(300).astype(dtype)
    _, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    runs = [gpu.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), m, r,
                                    cuda.to_device(w)) for _ in range(2)]
    for a, b in zip(runs[0], runs[1]):
        assert np.array_equal(_host(a), _host(b))


def _check_forward_backward(shape, axis, dtype):
    axes = _axes(axis, len(shape))
    ns = tuple(shape[a] for a in axes)
    x = (RNG.standard_normal(shape) * 2 + 0.5).astype(dtype)
    w = RNG.standard_normal(ns).astype(dtype)
    b = RNG.standard_normal(ns).astype(dtype)
    dy = RNG.standard_normal(shape).astype(dtype)

    y, mean, rstd = numba_ln.layer_norm(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b),
                                        axis=axis, return_stats=True)
    assert isinstance(y, type(cuda.to_device(x)))
    assert y.shape == x.shape and y.dtype == dtype
    assert mean.dtype == dtype and rstd.dtype == dtype
    yr, mr, rr = ref_forward(x, w, b, axes)
    np.testing.assert_allclose(_host(y), yr, **_tol(dtype))
    np.testing.assert_allclose(_host(mean), mr, **_tol(dtype))
    np.testing.assert_allclose(_host(rstd), rr, rtol=_tol(dtype)["rtol"])
    yc, mc, rc = numba_ln.layer_norm(x, w, b, axis=axis, return_stats=True)
    np.testing.assert_allclose(_host(y), yc, **_tol(dtype))
    assert mean.shape == mc.shape

    dx, dw, db = numba_ln.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), mean, rstd,
                                              cuda.to_device(w), axis=axis)
    dxr, dwr, dbr = ref_backward(dy, x, w, axes)
    np.testing.assert_allclose(_host(dx), dxr, **_tol(dtype))
    np.testing.assert_allclose(_host(dw), dwr, rtol=_tol(dtype)["rtol"] * 10,
                               atol=_tol(dtype)["atol"] * shape[0] * 10)
    np.testing.assert_allclose(_host(db), dbr, rtol=_tol(dtype)["rtol"] * 10,
                               atol=_tol(dtype)["atol"] * shape[0] * 10)
    assert dw.shape == ns and db.shape == ns
    # The CPU path's statistics work with the GPU's and vice versa.
    dxc, _, _ = numba_ln.layer_norm_backward(dy, x, _host(mean), _host(rstd), w, axis=axis)
    np.testing.assert_allclose(_host(dx), dxc, **_tol(dtype))


@pytest.mark.parametrize("d", [40, 300])
@pytest.mark.parametrize("with_w,with_b", [(False, False), (True, False), (False, True)])
def test_without_weight_or_bias(with_w, with_b, d):
    """The kernels read a 1-element dummy for a missing weight or bias and
    select past it; rows in registers (40) and split over windows (300)."""
    x = RNG.standard_normal((5, d))
    w = RNG.standard_normal(d) if with_w else None
    b = RNG.standard_normal(d) if with_b else None
    dev = (lambda a: None if a is None else cuda.to_device(a))
    y = gpu.layer_norm(dev(x), dev(w), dev(b))
    np.testing.assert_allclose(_host(y), ref_forward(x, w, b, (1,))[0], rtol=1e-12, atol=1e-12)
    _, m, r = gpu.layer_norm(dev(x), return_stats=True)
    dy = RNG.standard_normal(x.shape)
    dx, dw, db = gpu.layer_norm_backward(dev(dy), dev(x), m, r, dev(w))
    dxr, dwr, dbr = ref_backward(dy, x, w, (1,))
    np.testing.assert_allclose(_host(dx), dxr, rtol=1e-11, atol=1e-11)
    assert (dw is None) == (w is None)
    np.testing.assert_allclose(_host(db), dbr, rtol=1e-12, atol=1e-12)


def test_gradient_by_central_differences():
    """float64, every element: dx, dweight, dbias against the loss sum(y * c)."""
    shape = (2, 6)
    x = RNG.standard_normal(shape)
    w = RNG.standard_normal(6)
    b = RNG.standard_normal(6)
    c = RNG.standard_normal(shape)

    def loss(x_, w_, b_):
        y = gpu.layer_norm(cuda.to_device(x_), cuda.to_device(w_), cuda.to_device(b_))
        return float((_host(y) * c).sum())

    _, m, r = gpu.layer_norm(cuda.to_device(x), cuda.to_device(w), cuda.to_device(b),
                             return_stats=True)
    dx, dw, db = gpu.layer_norm_backward(cuda.to_device(c), cuda.to_device(x), m, r,
                                         cuda.to_device(w))
    h = 1e-6
    for name, arr, grad in (("x", x, _host(dx)), ("w", w, _host(dw)), ("b", b, _host(db))):
        for idx in np.ndindex(arr.shape):
            args = {"x": x.copy(), "w": w.copy(), "b": b.copy()}
            args[name][idx] += h
            up = loss(args["x"], args["w"], args["b"])
            args[name][idx] -= 2 * h
            down = loss(args["x"], args["w"], args["b"])
            num = (up - down) / (2 * h)
            rel = abs(grad[idx] - num) / max(1e-8, abs(grad[idx]) + abs(num))
            assert rel < 1e-5, (name, idx, grad[idx], num)


# --------------------------------------------------------------------------
# Numerics of the float32 kernels (float32 arithmetic only).
# --------------------------------------------------------------------------

@pytest.mark.parametrize("d", [100, 200, 300, 600])
def test_large_offset_float32(d):
    """1e4 + 0.1*noise: the shifted two-pass keeps float32 accuracy."""
    x = (1e4 + 0.1 * RNG.standard_normal((3, d))).astype(np.float32)
    y, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    yr, mr, rr = ref_forward(x, None, None, (1,))
    assert np.abs(_host(y) - yr).max() < 5e-3
    np.testing.assert_allclose(_host(r), rr, rtol=1e-3)


@pytest.mark.parametrize("d", [5, 100, 300, 600])
def test_huge_values_float32_do_not_overflow(d):
    """|x| ~ 1e30: the squares overflow float32, the row is redone scaled."""
    x = (RNG.standard_normal((3, d)) * 1e30).astype(np.float32)
    x[1] = np.float32(3e38) * np.sign(RNG.standard_normal(d)).astype(np.float32)
    x[2] = np.float32(1e38)  # constant huge row: the sum overflows, var = 0
    y, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    y = _host(y)
    assert np.isfinite(y).all() and np.isfinite(_host(m)).all() and np.isfinite(_host(r)).all()
    yr, mr, rr = ref_forward(x, None, None, (1,))
    np.testing.assert_allclose(y[:2], yr[:2], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(y[2], 0)
    np.testing.assert_allclose(_host(m), mr, rtol=1e-5)
    np.testing.assert_allclose(_host(r), rr, rtol=1e-4)
    np.testing.assert_allclose(_host(r)[2], 1 / np.sqrt(np.float32(1e-5)), rtol=1e-6)


def test_split_rows_combine_their_windows_safely():
    """The split forward's combination of window statistics (three windows of
    at most 256 under the simulator), shared by a block's threads: windows
    at scale 1 whose combination overflows (means of +-2e18: redone at the
    small scale), one window redone scaled among ordinary ones, a NaN or an
    Inf in one window only (the whole row non-finite), and ordinary rows."""
    d = 700
    assert _launch.forward_plan(6, d, 4)[0] == "split"
    x = RNG.standard_normal((6, d)).astype(np.float32)
    x[0] = np.float32(2e18) * np.where(np.arange(d) // 256 == 1, -1, 1) + x[0] * 1e12
    x[1, 300:400] = np.float32(3e38) * np.sign(RNG.standard_normal(100))
    x[2, 600] = np.nan
    x[3, 10] = np.inf
    x[5] += 1e4  # a large common offset
    y, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    y, m, r = _host(y), _host(m), _host(r)
    yr, mr, rr = ref_forward(x, None, None, (1,))
    ok = [0, 1, 4, 5]
    assert np.isfinite(y[ok]).all()
    np.testing.assert_allclose(y[ok], yr[ok], rtol=1e-4, atol=2e-3)
    # (the mean within rounding of the row's largest values: row 1's +-3e38
    # may cancel to an exact mean of almost 0, by the draw of their signs)
    scale = np.abs(x[ok].astype(np.float64)).max(axis=1)
    assert (np.abs(m[ok] - mr[ok]) <= 1e-5 * np.abs(mr[ok]) + 1e-6 * scale).all()
    np.testing.assert_allclose(r[ok], rr[ok], rtol=1e-4)
    assert np.isnan(y[2]).all() and not np.isfinite(y[3]).any()


@pytest.mark.parametrize("kind", ["coop", "cluster"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_launch_forward_gives_the_split_bits(dtype, kind, monkeypatch):
    """The split forward in one launch, cooperative (``FWD_COOP``) or in
    clusters (``FWD_CLUSTER``), its phases launched one after another
    here: the bits of the two kernels."""
    from _gpu_cases import check_one_launch_forward

    check_one_launch_forward([(3, 700), (1, 257)], dtype, RNG, monkeypatch, kind)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_by_columns(dtype, monkeypatch):
    """The backward of few long rows by columns (``BWD_COLS_ROWS``): see
    check_backward_by_columns; rows longer than the widest variant's
    capacity (several windows), fewer rows than a thread loads at once,
    more, and a block's worth."""
    from _gpu_cases import check_backward_by_columns

    cap = _kernels.VARIANTS[-1].capacity
    shapes = [(3, cap + 27), (_kernels.COLS_RB + 1, 3 * cap), (_kernels.COLS_THREADS, 2 * cap)]
    check_backward_by_columns(shapes, dtype, RNG, monkeypatch, exact_dx=True)


def test_cluster_forward_plan(monkeypatch):
    """``FWD_CLUSTER``: "split" takes the rows the split would take, "all"
    also those a looping block would, both only for 2 to ``CLUSTER_MAX``
    windows a row; None leaves the plans alone."""
    cap = _kernels.VARIANTS[-1].capacity

    def plan(rows, nwin):
        return _launch.forward_plan(rows, nwin * cap, 4)[:2]

    most = _kernels.CLUSTER_MAX
    for setting in (None, "split", "all"):
        monkeypatch.setattr(_launch, "FWD_CLUSTER", setting)
        one = "split" if setting is None else "cluster"
        assert plan(3, 2) == (one, 6) and plan(1, most) == (one, most)
        assert plan(3, most + 1)[0] == "split" and plan(4, 1)[0] == "rows"
        monkeypatch.setattr(_launch, "FWD_SPLIT_MAX_BYTES", 0)  # (many rows: a block a row)
        assert plan(100, 2) == (("cluster", 200) if setting == "all" else ("rows", 100))
        monkeypatch.undo()


@pytest.mark.parametrize("tpr,kv,pipe,cols,loops", [(8, 4, True, 4, False),
                                                   (32, 2, True, 8, False),
                                                   (64, 4, False, 16, False),
                                                   (32, 4, False, 32, True)])
def test_fused_column_sums(tpr, kv, pipe, cols, loops):
    """The backward with its column sums fused in (a sweep candidate), its
    phases launched one after the other here: dx the plain build's bits,
    the gradients within rounding of the column-sum kernel's."""
    from _gpu_cases import check_own_column_sums

    check_own_column_sums("fused", tpr, kv, pipe, cols, np.float32, RNG,
                          dict(rtol=1e-4, atol=1e-4), loops=loops)


@pytest.mark.parametrize("tpr,kv,pipe,tail,loops", [(8, 4, True, (1, 4), False),
                                                    (8, 4, True, (2, 8), False),
                                                    (32, 2, True, (3, 16), False),
                                                    (64, 4, False, (3, 64), False),
                                                    (32, 4, False, (1, 32), True),
                                                    (32, 4, False, (2, 8), True)])
def test_tail_column_sums(tpr, kv, pipe, tail, loops):
    """The backward whose last blocks to finish sum its partial rows (a
    sweep candidate; one launch where one block ends each window, its
    ticket path, else its phases one after the other): dx the plain
    build's bits, the gradients within rounding of the column-sum kernel's,
    the tickets left zeroed."""
    from _gpu_cases import check_own_column_sums

    check_own_column_sums("tail", tpr, kv, pipe, tail, np.float32, RNG,
                          dict(rtol=1e-4, atol=1e-4), loops=loops)


def test_huge_and_normal_rows_share_a_block():
    """A row that needs rescaling does not disturb its block's other rows."""
    x = RNG.standard_normal((8, 20)).astype(np.float32) * 1e-20
    x[3] = RNG.standard_normal(20).astype(np.float32) * 1e30
    y = _host(gpu.layer_norm(cuda.to_device(x)))
    np.testing.assert_allclose(y, ref_forward(x, None, None, (1,))[0], rtol=1e-4, atol=1e-4)


def test_non_finite_rows_stay_non_finite():
    x = RNG.standard_normal((4, 30))
    x[1, 3] = np.nan
    x[2, 5] = np.inf
    y, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    y = _host(y)
    assert np.isnan(y[1]).all() and not np.isfinite(y[2]).any()
    np.testing.assert_allclose(y[[0, 3]], ref_forward(x[[0, 3]], None, None, (1,))[0],
                               rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------
# Outputs, layouts, streams.
# --------------------------------------------------------------------------

def test_out_direct_in_place_and_strided():
    x = RNG.standard_normal((6, 50)).astype(np.float32)
    yr = ref_forward(x, None, None, (1,))[0]
    out = cuda.device_array_like(x)
    y = numba_ln.layer_norm(cuda.to_device(x), out=out)
    assert y is out
    np.testing.assert_allclose(_host(out), yr, rtol=1e-5, atol=1e-5)
    # In place.
    dx = cuda.to_device(x)
    assert numba_ln.layer_norm(dx, out=dx) is dx
    np.testing.assert_allclose(_host(dx), yr, rtol=1e-5, atol=1e-5)
    # A strided out (every other column of a wider array).
    wide = cuda.to_device(np.full((6, 100), 7, np.float32))
    view = wide[:, ::2]
    numba_ln.layer_norm(cuda.to_device(x), out=view)
    host = _host(wide)
    np.testing.assert_allclose(host[:, ::2], yr, rtol=1e-5, atol=1e-5)
    assert (host[:, 1::2] == 7).all()
    # out overlapping x other than exactly: computed aside, then copied.
    both = cuda.to_device(np.concatenate([x, x], axis=1))
    numba_ln.layer_norm(both[:, :50], out=both[:, 1:51])
    np.testing.assert_allclose(_host(both)[:, 1:51], yr, rtol=1e-5, atol=1e-5)
    # Backward in place into dy.
    _, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    ddy = cuda.to_device(dy)
    dxo, _, _ = gpu.layer_norm_backward(ddy, cuda.to_device(x), m, r, out=ddy)
    assert dxo is ddy
    np.testing.assert_allclose(_host(ddy), ref_backward(dy, x, None, (1,))[0], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("d,split", [(200, True), (300, True), (300, False)])
def test_in_place_on_rows_read_twice(d, split, monkeypatch):
    """``out=x`` and the backward's ``out=dy`` on rows a kernel reads again
    after its statistics (the widest forward's loop, the split forward's
    second kernel, the backward's windows): a thread loads a chunk of its
    columns, then stores it, never storing a column it has yet to read."""
    if not split:
        monkeypatch.setattr(_launch, "FWD_SPLIT_MAX_BYTES", 0)
        monkeypatch.setattr(_launch, "FWD_SPLIT_FEW_ROWS", 0)
    x = (RNG.standard_normal((3, d)) + 3).astype(np.float32)
    w = RNG.standard_normal(d).astype(np.float32)
    b = RNG.standard_normal(d).astype(np.float32)
    dx_ = cuda.to_device(x)
    assert numba_ln.layer_norm(dx_, cuda.to_device(w), cuda.to_device(b), out=dx_) is dx_
    np.testing.assert_allclose(_host(dx_), ref_forward(x, w, b, (1,))[0], rtol=1e-5, atol=1e-5)
    _, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    ddy = cuda.to_device(dy)
    dxo, dw, _ = gpu.layer_norm_backward(ddy, cuda.to_device(x), m, r, cuda.to_device(w),
                                         out=ddy)
    assert dxo is ddy
    dxr, dwr, _ = ref_backward(dy, x, w, (1,))
    np.testing.assert_allclose(_host(ddy), dxr, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_host(dw), dwr, rtol=1e-4, atol=1e-4)


def test_out_with_leading_axis():
    x = RNG.standard_normal((7, 3, 4))
    out = cuda.device_array(x.shape, np.float64)
    numba_ln.layer_norm(cuda.to_device(x), axis=0, out=out)
    np.testing.assert_allclose(_host(out), ref_forward(x, None, None, (0,))[0], rtol=1e-12,
                               atol=1e-12)


def test_strided_input_and_params():
    base = RNG.standard_normal((5, 80))
    wb = RNG.standard_normal(80)
    x = cuda.to_device(base)[:, ::2]
    w = cuda.to_device(wb)[::2]
    y = numba_ln.layer_norm(x, w)
    np.testing.assert_allclose(_host(y), ref_forward(base[:, ::2], wb[::2], None, (1,))[0],
                               rtol=1e-12, atol=1e-12)


def test_params_and_stats_are_cast_to_x_dtype():
    x = RNG.standard_normal((4, 30)).astype(np.float32)
    w = RNG.standard_normal(30)  # float64
    y, m, r = numba_ln.layer_norm(cuda.to_device(x), cuda.to_device(w), return_stats=True)
    assert y.dtype == np.float32
    np.testing.assert_allclose(_host(y), ref_forward(x, w, None, (1,))[0], rtol=1e-5, atol=1e-5)
    m64 = cuda.to_device(_host(m).astype(np.float64))
    dx, dw, db = numba_ln.layer_norm_backward(cuda.to_device(np.ones_like(x)), cuda.to_device(x),
                                              m64, r, cuda.to_device(w))
    assert dx.dtype == dw.dtype == db.dtype == np.float32


def test_stream_is_honoured():
    s = cuda.stream()
    x = RNG.standard_normal((9, 40)).astype(np.float32)
    dx = cuda.to_device(x, stream=s)
    y, m, r = numba_ln.layer_norm(dx, axis=-1, return_stats=True, stream=s)
    g, _, _ = numba_ln.layer_norm_backward(cuda.to_device(x, stream=s), dx, m, r, stream=s)
    s.synchronize()
    np.testing.assert_allclose(y.copy_to_host(stream=s), ref_forward(x, None, None, (1,))[0],
                               rtol=1e-5, atol=1e-5)


class _ProtocolStream:
    """A foreign stream: the CUDA stream protocol only (as CuPy's, PyTorch's)."""

    def __cuda_stream__(self):
        return (0, 0x1234)


class _TorchLikeStream:
    cuda_stream = 0x5678


@pytest.mark.parametrize("stream", [_ProtocolStream(), _TorchLikeStream(), 0x9ABC, np.int64(5),
                                    0, None], ids=["protocol", "cuda_stream", "int", "np.int64",
                                                   "zero", "none"])
def test_foreign_streams_are_accepted(stream):
    """Streams of other libraries (the simulator runs them as the default
    stream; on a GPU they are wrapped with numba.cuda.external_stream)."""
    x = RNG.standard_normal((9, 40)).astype(np.float32)
    y, m, r = numba_ln.layer_norm(cuda.to_device(x), return_stats=True, stream=stream)
    dx, dw, db = numba_ln.layer_norm_backward(cuda.to_device(x), cuda.to_device(x), m, r,
                                              stream=stream)
    np.testing.assert_allclose(_host(y), ref_forward(x, None, None, (1,))[0], rtol=1e-5,
                               atol=1e-5)
    layer = numba_ln.LayerNorm(40).to_device(stream=stream)
    np.testing.assert_allclose(_host(layer.forward(cuda.to_device(x))), _host(y), rtol=1e-6,
                               atol=1e-6)
    layer.to_host()


class _BrokenStream:
    def __cuda_stream__(self):
        raise RuntimeError("stream destroyed")


@pytest.mark.parametrize("stream,match", [
    ("s1", r"stream is str 's1': pass a numba stream"),
    (True, r"stream is bool True"),
    (-3, r"stream is int -3"),
    (2.5, r"stream is float"),
    (_BrokenStream(), r"__cuda_stream__\(\) failed.*stream destroyed"),
])
def test_bad_streams_say_what_to_pass(stream, match):
    x = cuda.to_device(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match=match):
        numba_ln.layer_norm(x, stream=stream)
    with pytest.raises(TypeError, match=match):
        numba_ln.layer_norm_backward(x, x, cuda.to_device(np.zeros(2, np.float32)),
                                     cuda.to_device(np.ones(2, np.float32)), stream=stream)


def test_gradients_are_bitwise_reproducible():
    x = RNG.standard_normal((100, 33)).astype(np.float32)  # several row slots
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    w = RNG.standard_normal(33).astype(np.float32)
    _, m, r = gpu.layer_norm(cuda.to_device(x), return_stats=True)
    runs = [gpu.layer_norm_backward(cuda.to_device(dy), cuda.to_device(x), m, r,
                                    cuda.to_device(w)) for _ in range(2)]
    for a, b in zip(runs[0], runs[1]):
        assert np.array_equal(_host(a), _host(b))
    G, nwin, _, (tpr, R) = _launch.backward_launch(100, 33)
    assert G > 1  # the partials really go through the column reduction


@pytest.mark.parametrize("P", [1, 3, 8, 16, 37])
@pytest.mark.parametrize("ngrad", [1, 2])
def test_column_sums(P, ngrad):
    """The column-sum kernel alone: both gradients (or the bias's alone, the
    last of the two partial arrays) in one launch, partial-row counts that
    give blocks of 1, 2 and COL_TY rows, a row that is not a multiple of the
    column tile.  Integer-valued partials, so the sums are exact in any order."""
    d = 2 * _kernels.COL_TX + 3
    part = RNG.integers(-50, 50, size=(2, P, d)).astype(np.float32)
    want = part[2 - ngrad:].sum(axis=1)
    out = cuda.device_array((ngrad, d), np.float32)
    grid, block = _launch.col_launch(P, d, ngrad)
    assert block[1] == (1 if P < 8 else min(_kernels.COL_TY, 2 ** int(np.log2(P // 4))))
    assert block[0] == (_kernels.COL_TX_FEW if P <= _kernels.COL_FEW else _kernels.COL_TX)
    _kernels.col_sum["float32"][grid, block](cuda.to_device(part), out)
    np.testing.assert_array_equal(_host(out), want)
    # other column counts a block (a sweep's), as wide as the thread limit allows
    for cols in (_kernels.COL_TX // 2, 2 * _kernels.COL_TX, 4 * _kernels.COL_TX):
        out = cuda.device_array((ngrad, d), np.float32)
        grid, block = _launch.col_launch(P, d, ngrad, cols)
        assert block[0] == cols and block[0] * block[1] <= _kernels.COL_THREADS
        _kernels.col_sum["float32"][grid, block](cuda.to_device(part), out)
        np.testing.assert_array_equal(_host(out), want)
    # the most rows a block (the tree over COL_TY sums)
    _kernels.col_sum["float32"][(-(-d // _kernels.COL_TX), ngrad),
                                (_kernels.COL_TX, _kernels.COL_TY)](cuda.to_device(part), out)
    np.testing.assert_array_equal(_host(out), want)


def test_empty_shapes():
    y, m, r = gpu.layer_norm(cuda.to_device(np.zeros((0, 5), np.float32)), return_stats=True)
    assert y.shape == (0, 5) and m.shape == (0,)
    y, m, r = gpu.layer_norm(cuda.to_device(np.zeros((3, 0))), return_stats=True)
    assert y.shape == (3, 0) and np.isnan(_host(m)).all()
    dx, dw, db = gpu.layer_norm_backward(cuda.to_device(np.zeros((0, 4))),
                                         cuda.to_device(np.zeros((0, 4))),
                                         cuda.to_device(np.zeros(0)), cuda.to_device(np.zeros(0)),
                                         cuda.to_device(np.ones(4)))
    assert dx.shape == (0, 4)
    np.testing.assert_array_equal(_host(dw), 0)
    np.testing.assert_array_equal(_host(db), 0)


def test_all_axes():
    x = RNG.standard_normal((3, 4))
    y, m, r = numba_ln.layer_norm(cuda.to_device(x), axis=(0, 1), return_stats=True)
    yc, mc, rc = numba_ln.layer_norm(x, axis=(0, 1), return_stats=True)
    assert m.shape == np.shape(mc)
    np.testing.assert_allclose(_host(y), yc, rtol=1e-12, atol=1e-12)
    dx, _, _ = numba_ln.layer_norm_backward(cuda.to_device(x), cuda.to_device(x), m, r,
                                            axis=(0, 1))
    np.testing.assert_allclose(_host(dx), ref_backward(x, x, None, (0, 1))[0], atol=1e-12)


# --------------------------------------------------------------------------
# Errors.
# --------------------------------------------------------------------------

def test_mixing_host_and_device_is_a_clear_error():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="weight is a NumPy array but x is on the GPU"):
        numba_ln.layer_norm(cuda.to_device(x), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="x is a NumPy array but weight is on the GPU"):
        numba_ln.layer_norm(x, cuda.to_device(np.ones(4, np.float32)))
    with pytest.raises(TypeError, match="out is a NumPy array but x is on the GPU"):
        numba_ln.layer_norm(cuda.to_device(x), out=np.empty_like(x))
    _, m, r = numba_ln.layer_norm(x, return_stats=True)
    with pytest.raises(TypeError, match="mean is a NumPy array but dy is on the GPU"):
        numba_ln.layer_norm_backward(cuda.to_device(x), cuda.to_device(x), m, r)


def test_bad_input_errors():
    dx = cuda.to_device(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="x must be float32 or float64, found int64"):
        gpu.layer_norm(cuda.to_device(np.ones((3, 4), np.int64)))
    with pytest.raises(ValueError, match=r"weight has shape \(5,\) but the normalized shape is"):
        gpu.layer_norm(dx, cuda.to_device(np.ones(5, np.float32)))
    with pytest.raises(ValueError, match="eps must be a finite number"):
        gpu.layer_norm(dx, eps=-1.0)
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        gpu.layer_norm(dx, axis=2)
    with pytest.raises(TypeError, match="out has dtype float64 but the result is float32"):
        gpu.layer_norm(dx, out=cuda.device_array((3, 4), np.float64))
    with pytest.raises(ValueError, match=r"out has shape \(4, 3\)"):
        gpu.layer_norm(dx, out=cuda.device_array((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"mean has shape \(4,\)"):
        gpu.layer_norm_backward(dx, dx, cuda.to_device(np.ones(4, np.float32)),
                                cuda.to_device(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match=r"dy has shape"):
        gpu.layer_norm_backward(cuda.to_device(np.ones((3, 5), np.float32)), dx,
                                cuda.to_device(np.ones(3, np.float32)),
                                cuda.to_device(np.ones(3, np.float32)))


def test_inputs_are_not_modified():
    x = RNG.standard_normal((4, 10))
    w = RNG.standard_normal(10)
    dxa, dwa = cuda.to_device(x), cuda.to_device(w)
    numba_ln.layer_norm(dxa, dwa, axis=-1)
    numba_ln.layer_norm(dxa, axis=0)
    assert np.array_equal(_host(dxa), x) and np.array_equal(_host(dwa), w)


# --------------------------------------------------------------------------
# LayerNorm on the device; the benchmark script's logic.
# --------------------------------------------------------------------------

def test_layernorm_module_on_device():
    x = RNG.standard_normal((6, 2, 5)).astype(np.float32)
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    cpu = numba_ln.LayerNorm((2, 5))
    cpu.weight[:] = RNG.standard_normal((2, 5))
    dev = numba_ln.LayerNorm((2, 5))
    dev.weight[:] = cpu.weight
    dev.to_device()
    assert dev.on_device and not cpu.on_device
    yc = cpu.forward(x)
    dxc = cpu.backward(dy)
    yd = dev.forward(cuda.to_device(x))
    dxd = dev.backward(cuda.to_device(dy))
    np.testing.assert_allclose(_host(yd), yc, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_host(dxd), dxc, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_host(dev.grad_weight), cpu.grad_weight, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="x is a NumPy array but weight is on the GPU"):
        dev.forward(x)
    dev.to_host()
    assert isinstance(dev.weight, np.ndarray) and isinstance(dev.grad_bias, np.ndarray)
    np.testing.assert_allclose(dev.forward(x), yc, rtol=1e-6, atol=1e-6)


def test_bench_quick_runs(tmp_path):
    from numba_ln.gpu import bench

    # (no time limit: the simulator takes minutes, more on a busy machine)
    rc = bench.main(["--quick", "--out", str(tmp_path), "--repeats", "1", "--warmup", "1",
                     "--batch", "2", "--time-limit", "1e9"])
    assert rc == 0
    import json

    data = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert data["results"] and all("error" not in r for r in data["results"]), data
    assert all(r["alloc_ms"] > 0 and r["api_out_ms"] > 0 and r["api_pool_ms"] > 0
               and r["api_host_us"] > 0
               for r in data["results"])
    md = (tmp_path / "gpu_bench.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in rows}) == 1, "every table row has every column"
    assert len(rows) == 2 + len(data["results"])


def test_tune_script_runs(tmp_path, monkeypatch):
    """scripts/gpu_tune.py's logic on tiny shapes (a GPU runs its real plan):
    every candidate kind runs, its output matches the committed kernels'."""
    import json

    from _gpu_cases import load_tune_script

    from numba_ln.gpu import bench

    tune = load_tune_script()
    monkeypatch.setattr(bench, "_sets_for", lambda *a, **k: 2)
    C = tune.C
    monkeypatch.setattr(tune, "PLAN", [
        ((9, 30), "float32", [C(8, 4, 1, True, True), C(8, 4, 1, True, ks=1),
                              C(8, 4, 1, True, vec=2)],
         [C(8, 4, 1, True, acc=True), C(8, 4, 1, True, ks=1), C(8, 4, 1, True, l2=True),
          C(8, 4, 1, True, hold=True, acc=True), tune.fused(2), tune.tail(2, 8)]),
        ((5, 64), "float64", [C(32, 2, 1, True, True), C(32, 2, 1, True, vec=2, wbd=True)],
         [C(32, 2, 1, True, acc=True), C(32, 2, 1, True, vec=2, wbd=True),
          C(32, 2, 1, True, threads=32)]),
        # a backward over 4 column windows of 32, in 2 row slots
        ((5, 100), "float32", [], [C(8, 4, 1, False, loops=True, slots=2)]),
        # few long rows: the committed backward is LONG_ROWS's, in its row slots
        ((2, 300), "float32", [], []),
        # a variant of DIRECT_WB (and VECTOR): the committed forward reads w, b directly
        ((3, 12), "float32", [], [])])
    monkeypatch.setattr(tune, "SPLIT_SHAPES", [((3, 300), "float32")])
    monkeypatch.setattr(tune, "BACKWARD_PLAN_SHAPES", [((3, 300), "float32")])  # (3 windows)
    tune.main([str(tmp_path), "--repeats", "1", "--batch", "1", "--warmup", "0",
               "--time-limit", "1000"])
    results = json.loads((tmp_path / "gpu_tune.json").read_text())["results"]
    assert not [r for r in results if "error" in r]
    rows = [r for r in results if r["pass"] not in ("colsum", "forward plan", "backward plan")]
    assert len(rows) == 24
    # the committed backward with its column sums fused in (a function of it)
    # (the committed one too: FUSED_COLS under the simulator)
    b930 = [r for r in rows if r["shape"] == [9, 30] and r["pass"] == "backward"]
    assert (b930[0]["fused"], b930[0]["committed"]) == (4, True)
    assert [r["fused"] for r in b930].count(2) == 1
    # ... and with its column sums by its last blocks (TAIL_COLS takes the
    # committed 32x2 float64 and LONG backwards under the simulator)
    assert [r["tail"] for r in b930] == [None] * 6 + [[2, 8]]
    assert b930[-1]["dweight_max_abs_diff"] < 1e-4
    assert [(r["shape"], r["tail"]) for r in rows if r["tail"] and r["committed"]] == [
        ([5, 64], [3, 8]), ([2, 300], [1, 16])]
    # the whole backward with and without programmatic launches (none here: the same
    # bits), and by columns (dx the same bits, the gradients within rounding)
    bplans = [r for r in results if r["pass"] == "backward plan"]
    assert [(r["pdl"], r["by_columns"], r["committed"]) for r in bplans] == [
        (True, False, True), (False, False, False), (True, True, False)]
    assert bplans[1]["bitwise_as_committed"]
    assert max(r["max_abs_diff"] for r in results if r["pass"] == "backward plan") < 1e-5
    # the forward plans of few long rows (both split here: x fits in "L2")
    # (and the split in one cooperative launch, the split with programmatic launches,
    # in one launch in clusters in place of the split, and of the split or a looping block)
    assert [(r["plan"], r["committed"]) for r in results if r["pass"] == "forward plan"] == [
        ("split", True), ("split", False), ("coop", False), ("split", False), ("coop", False),
        ("cluster", False), ("cluster", False)]
    long = _kernels.LONG
    assert [(r["tpr"], r["kv"], r["slots"], r["grid"]) for r in rows if r["shape"] == [2, 300]] \
        == [(long.tpr, long.kv, 1, 3)]
    assert {r["store_chunk"] for r in rows} == {1, 2}
    # vector pieces: a candidate at D = 30; at D = 64, a VECTOR variant under the
    # simulator, the committed float64 backward (not its forward) and the
    # direct w, b candidate; at D = 12 both committed passes
    assert sum(r["vec"] == 2 for r in rows) == 6
    assert {(tuple(r["shape"]), r["pass"]): r["vec"] for r in rows if r["committed"]
            and r["shape"] in ([5, 64], [3, 12])} == {
        ((5, 64), "forward"): 1, ((5, 64), "backward"): 2,
        ((3, 12), "forward"): 2, ((3, 12), "backward"): 2}
    assert sum(r["wb_direct"] for r in rows) == 4
    # at D = 12 (a variant of DIRECT_WB and DIRECT_W_BWD) both committed passes
    assert [r["pass"] for r in rows if r["wb_direct"] and r["committed"]] == [
        "forward", "backward"]
    looped = [r for r in rows if r["loops"] and not r["committed"]]
    assert [(r["slots"], r["grid"]) for r in looped] == [(2, 8)]
    assert looped[0]["dweight_max_abs_diff"] < 1e-4
    # (the committed 8x4 float32 backward holds its row: HOLD_ROWS under the
    # simulator; so do the fused and tail candidates made from it)
    assert [(r["shape"], r["hold"], r["threads"], r["committed"], r["acc_smem"], r["fused"])
            for r in rows if r["hold"] or r["threads"] == 32] == [
        ([9, 30], True, 64, True, False, 4), ([9, 30], True, 64, False, True, None),
        ([9, 30], True, 64, False, False, 2), ([9, 30], True, 64, False, False, None),
        ([5, 64], None, 32, False, False, None)]
    # the column sums alone, in the blocks of COL_CONFIGS that fit, the committed
    # block first (its columns by the count of partial rows)
    cols = [r for r in results if r["pass"] == "colsum"]
    configs = [c[0] for c in tune.COL_CONFIGS if c[0] <= _kernels.COL_THREADS]
    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in cols))
    assert len(shapes) == 5
    for shape in shapes:
        got = [r for r in cols if tuple(r["shape"]) == shape]
        committed = _launch.col_launch(got[0]["partial_rows"], shape[1], 2)[1][0]
        assert got[0]["committed"] and not any(r["committed"] for r in got[1:])
        assert [r["cols"] for r in got] == [committed] + configs
    # (a batch of loads changes no bits; other rows a block would)
    ny = {tuple(r["shape"]): r["ny"] for r in cols if r["committed"]}
    assert all(r["bitwise_as_committed"] for r in cols if r["ny"] == ny[tuple(r["shape"])])
    committed_vec = {(tuple(r["shape"]), r["pass"]): r["vec"] for r in rows if r["committed"]}
    for r in rows:
        tol = 1e-5 if r["dtype"] == "float32" else 1e-13
        # the backward's dx: the same bits in the committed layout of columns
        exact = (r["pass"] == "backward" and not r["loops"]
                 and r["vec"] == committed_vec[tuple(r["shape"]), "backward"])
        assert r["max_abs_diff"] <= (0 if exact else tol), r
    md = (tmp_path / "gpu_tune.md").read_text()
    assert md.count("yes") >= 6 + 2 * 3 and "Column sums alone" in md
    assert "Whole backward with and without" in md


def test_tune_forward_plans(monkeypatch):
    """scripts/gpu_tune.py's comparison of the forward plans of few long
    rows: split (committed), looped, the split in one cooperative launch,
    with programmatic launches, and in one launch in clusters (in place of
    the split, and also of the looping block); the same results within
    rounding, the committed settings restored after."""
    from _gpu_cases import load_tune_script

    from numba_ln.gpu import bench

    tune = load_tune_script()
    monkeypatch.setattr(bench, "_sets_for", lambda *a, **k: 2)
    monkeypatch.setattr(_launch, "FWD_SPLIT_MAX_BYTES", 0)  # (x "too large for L2")
    few = _launch.FWD_SPLIT_FEW_ROWS
    assert 4 <= few * _launch.BWD_SIM_SLOTS < 5  # (4 rows split, 5 looped)
    res = tune.tune_forward_plans((4, 300), "float32", 1, float("inf"), batch=1, warmup=0)
    assert [(r["plan"], r["grid"], r["committed"], r["pdl"]) for r in res] == [
        ("split", 8, True, True), ("rows", 4, False, True), ("coop", 8, False, True),
        ("split", 8, False, False), ("coop", 8, False, False), ("cluster", 8, False, True),
        ("cluster", 8, False, True)]
    assert [r["cluster"] for r in res] == [None] * 5 + ["split", "all"]
    assert all("ms" in r and r["max_abs_diff"] < 1e-5 for r in res)  # (ms: -1 here)
    assert all(r["max_abs_diff"] == 0 for r in res[2:])  # (the split's bits)
    assert _launch.FWD_SPLIT_FEW_ROWS == few and not _launch.FWD_COOP
    assert _launch.FWD_CLUSTER is None
    md = tune.markdown(res)
    assert "Forward plans" in md and md.count("| 4x300 | float32 |") == 7


@pytest.mark.parametrize("d", [6, 7, 12, 15])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_weight_and_bias_variants_match_the_selecting_kernel(d, dtype):
    """The variants of DIRECT_WB, here (4, 2) for 4 < D <= 8 and, in float32,
    (8, 2), also of VECTOR, for 8 < D <= 16 (in float64 the (8, 2) forward
    selects: the same bits, by the same comparison): see
    check_direct_wb_variant."""
    from _gpu_cases import check_direct_wb_variant

    v = _kernels.variant(d)
    assert np.dtype(dtype).name in v.direct_wb or (d > 8 and dtype == np.float64)
    check_direct_wb_variant(d, dtype, RNG, _tol(dtype))


@pytest.mark.parametrize("d,dtype", [(7, np.float32), (16, np.float32), (13, np.float64)])
def test_direct_weight_backward_variants_match_the_selecting_kernel(d, dtype):
    """The variants of DIRECT_W_BWD, here (4, 2) in float32 for 4 < D <= 8,
    (8, 2), also of VECTOR, for 8 < D <= 16: see
    check_direct_w_backward_variant."""
    from _gpu_cases import check_direct_w_backward_variant

    check_direct_w_backward_variant(d, dtype, RNG, _tol(dtype))


@pytest.mark.parametrize("d", [12, 16, 13, 40, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_variants_give_the_same_bits_aligned_or_not(d, dtype, monkeypatch):
    """The variants of VECTOR, here (8, 2) for 8 < D <= 16, both passes, and
    (32, 2) for 32 < D <= 64, the float32 forward and the float64 backward:
    see check_vector_variant."""
    from _gpu_cases import check_vector_variant

    check_vector_variant(d, dtype, RNG, _tol(dtype), monkeypatch)


def test_kernel_table_is_complete():
    kinds = set(_kernels.KINDS.values())
    assert kinds == set(gpu.signatures("float32")) == set(gpu.signatures("float64"))
    for v in _kernels.VARIANTS:
        for dt in gpu.DTYPES:
            if "forward" in v.passes:
                assert v.fwd[dt] is _kernels.KERNELS[f"layer_norm_forward_{v.suffix}[{dt}]"]
            if "backward" in v.passes:
                assert v.bwd[dt] is _kernels.KERNELS[f"layer_norm_backward_{v.suffix}[{dt}]"]
    # a forward-only and a backward-only variant: each pass has its own choice
    assert any(v.passes == ("forward",) for v in _kernels.VARIANTS)
    assert any(v.passes == ("backward",) for v in _kernels.VARIANTS)
    for d in range(1, 2 * _kernels.VARIANTS[-1].capacity):
        for p in ("forward", "backward"):
            v = _kernels.variant(d, p)
            assert p in v.passes and (d <= v.capacity or v is _kernels.VARIANTS[-1])
    assert [v.loops for v in _kernels.VARIANTS] == [False] * (len(_kernels.VARIANTS) - 1) + [True]
    # the variants of VECTOR: a vector-access build of a pass with pieces
    # beside the plain one (a backward takes pieces only where it holds its row)
    for v in _kernels.VARIANTS:
        for dt in gpu.DTYPES:
            fw, bw = _kernels.VECTOR.get((v.tpr, v.kv), {}).get(dt) or (None, None)
            bw = bw if v.hold[dt] else None
            assert v.fwd_width.get(dt) == fw and v.bwd_width.get(dt) == bw
            for p, width, builds in (("forward", fw, v.fwd_vec), ("backward", bw, v.bwd_vec)):
                assert (dt in builds) == (width is not None)
                if width is not None:
                    assert builds[dt] is _kernels.KERNELS[
                        f"layer_norm_{p}_{v.suffix}_v{width}[{dt}]"]
    assert set(_kernels.VECTOR) <= {(v.tpr, v.kv) for v in _kernels.VARIANTS[:-1]}
    # one pass of one dtype with pieces, the other without (as on a GPU)
    assert any(None in widths for entry in _kernels.VECTOR.values() for widths in entry.values())
    assert {(v.tpr, v.kv): v.direct_wb for v in _kernels.VARIANTS if v.direct_wb} == {
        k: frozenset(dts) for k, dts in _kernels.DIRECT_WB.items()}
    assert {(v.tpr, v.kv): v.bwd_direct_w for v in _kernels.VARIANTS if v.bwd_direct_w} == {
        k: frozenset(dts) for k, dts in _kernels.DIRECT_W_BWD.items()}
    # (a backward that reads w directly holds its row: else it does not read it so)
    assert all(v.hold[dt] for v in _kernels.VARIANTS for dt in v.bwd_direct_w)
    # rows held past HOLD_MAX: the variants of HOLD_ROWS, in its dtypes only
    assert {(v.tpr, v.kv): {dt for dt, h in v.hold.items() if h} for v in _kernels.VARIANTS
            if v.kv > _kernels.HOLD_MAX and any(v.hold.values())} == {
        k: set(dts) for k, dts in _kernels.HOLD_ROWS.items()}
    # the variant of few long rows: a backward over column windows, its own names
    long = _kernels.LONG
    assert long.passes == ("backward",) and long.loops and not any(long.hold.values())
    assert long.capacity < _kernels.VARIANTS[-1].capacity and long.suffix.endswith("w")
    for dt in gpu.DTYPES:
        for kind, table in (("backward", long.bwd), ("backward_rowsums", long.bwd_rowsums)):
            assert table[dt] is _kernels.KERNELS[f"layer_norm_{kind}_{long.suffix}[{dt}]"]
    caps = [v.capacity for v in _kernels.VARIANTS]
    assert caps == sorted(caps)


@pytest.mark.parametrize("d", sorted({c + o for v in _kernels.VARIANTS
                                       for c in (v.capacity,) for o in (-1, 0, 1)} - {0, 1}))
def test_every_variant_at_its_capacity_edges(d):
    """Rows that just fill a variant, and one column more or less (the next
    variant, or a thread whose columns are partly past the end)."""
    assert _launch.row_geometry(d)[0] is _kernels.variant(d)
    assert _launch.row_geometry(d, "backward")[0] is _kernels.variant(d, "backward")
    rows = 2 * max(_kernels.variant(d, p).rows_per_block for p in ("forward", "backward")) + 1
    _check_forward_backward((rows, d), -1, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_prefetching_blocks_loop_over_their_rows(dtype):
    """A variant that prefetches launches one wave of resident blocks (8
    under the simulator), each walking many rows with the next row's loads
    ahead; one that does not (float64 here) takes a block per row group."""
    d = 30
    v = _kernels.variant(d)
    rows = 40 * v.rows_per_block + 3
    kind, grid, _, _ = _launch.forward_plan(rows, d, np.dtype(dtype).itemsize)
    groups = -(-rows // v.rows_per_block)
    if v.pipe[np.dtype(dtype).name]:
        assert grid == _launch.BWD_SIM_SLOTS < groups
    else:
        assert dtype == np.float64 and grid == groups
    _check_forward_backward((rows, d), -1, dtype)


# One-reduction statistics (Chan's update): a candidate of scripts/gpu_tune.py,
# built here as the sweep builds it (the shared-memory reduction of the
# simulator; tests/test_gpu_real.py runs the shuffle one).
@pytest.mark.parametrize("tpr,kv,pipe", [(4, 2, True), (8, 4, False), (32, 2, True),
                                         (64, 2, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")  # (the overflowing row)
def test_one_reduction_statistics(tpr, kv, pipe, dtype):
    from _gpu_cases import check_one_reduction_statistics

    check_one_reduction_statistics(tpr, kv, pipe, dtype, RNG, _tol(dtype)["rtol"],
                                   _tol(dtype)["atol"])


@pytest.mark.parametrize("tpr,kv,pipe,vec,ks", [(4, 2, True, 2, 2), (8, 4, False, 2, 2),
                                                 (8, 4, True, 4, 4), (32, 2, True, 2, 2),
                                                 (64, 4, False, 4, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")  # (the overflowing row)
def test_vector_pieces(tpr, kv, pipe, vec, ks, dtype):
    """The forward with vector pieces (``vec``, a scripts/gpu_tune.py
    candidate; one element at a time here, the simulator has no vector
    loads): the layout of the thread's columns, the pieces' tail, the dummy
    weight."""
    from _gpu_cases import check_forward_candidate

    check_forward_candidate(tpr, kv, pipe, dtype, RNG, _tol(dtype)["rtol"], _tol(dtype)["atol"],
                            vec=vec, store_chunk=ks)


@pytest.mark.parametrize("tpr,kv,pipe", [(8, 2, True), (8, 2, False), (64, 2, True),
                                         (32, 2, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_pieces_backward(tpr, kv, pipe, dtype):
    """The backward with vector pieces of 2 (a scripts/gpu_tune.py
    candidate; see check_vector_backward)."""
    from _gpu_cases import check_vector_backward

    check_vector_backward(tpr, kv, pipe, dtype, RNG, _tol(dtype), vec=2)


def test_vector_pieces_need_a_held_row():
    """No backward kernel with vector pieces where it cannot take them (its
    row not held in registers, shared accumulators): none rather than a
    scalar one under the candidate's name."""
    assert "layer_norm_backward" in _kernels._make_variant(8, 2, False, True, vec=2)
    assert "layer_norm_backward" not in _kernels._make_variant(8, 4, False, True, vec=4,
                                                               store_chunk=4)
    assert "layer_norm_backward" not in _kernels._make_variant(8, 2, False, True, vec=2,
                                                               acc_smem=True)
    assert "layer_norm_backward" not in _kernels._make_variant(16, 4, False, False, vec=2)


@pytest.mark.parametrize("tpr,kv,pipe,vec,ks", [(8, 4, True, 1, 2), (64, 2, False, 1, 2),
                                                 (8, 4, True, 4, 4), (32, 2, True, 2, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")  # (the overflowing row)
def test_direct_weight_and_bias(tpr, kv, pipe, vec, ks, dtype):
    """The forward that reads w[j], b[j] unclamped and applies them without a
    select (``wb_direct``, a scripts/gpu_tune.py candidate; full-length
    arrays, ones for an absent weight), alone and with vector pieces."""
    from _gpu_cases import check_forward_candidate

    check_forward_candidate(tpr, kv, pipe, dtype, RNG, _tol(dtype)["rtol"], _tol(dtype)["atol"],
                            vec=vec, store_chunk=ks, wb_direct=True)


@pytest.mark.parametrize("tpr,kv,pipe", [(8, 4, True), (8, 4, False), (64, 2, True),
                                         (64, 2, False), (32, 2, True)])
def test_shared_memory_accumulators_give_the_same_bits(tpr, kv, pipe):
    """The backward with its weight/bias accumulators in shared memory (a
    scripts/gpu_tune.py candidate) does the same additions in the same order
    as the committed kernel: dx and the partial sums are bitwise equal, with
    several groups a block or a block a row, several row slots, rows that
    leave threads past the end."""
    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    R = threads // tpr
    kern = {acc: cuda.jit(_kernels._make_variant(tpr, kv, False, pipe, acc_smem=acc)
                          ["layer_norm_backward"]) for acc in (False, True)}
    from _gpu_cases import run_backward_builds

    for d in sorted({tpr * kv, tpr * kv - 1, tpr + 1, 2}):
        (ref_dx, ref_dw, ref_db), out = run_backward_builds(kern, tpr, R, 5 * R + 3, d,
                                                            np.float32, RNG, 3)
        assert np.array_equal(out[False][0], out[True][0])
        assert np.array_equal(out[False][1], out[True][1])
        np.testing.assert_allclose(out[True][0], ref_dx, **_tol(np.float32))
        np.testing.assert_allclose(out[True][1][0].sum(0), ref_dw, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out[True][1][1].sum(0), ref_db, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tpr,kv,pipe,opts,dtype", [
    (8, 2, True, {"w_direct": True}, np.float64),  # held, prefetched, groups of a block
    (8, 2, True, {"w_direct": True}, np.float32),
    (64, 2, False, {"w_direct": True}, np.float32),  # held, a block a row, no prefetch
    (8, 2, True, {"w_direct": True, "vec": 2}, np.float32),  # with vector pieces
    (8, 4, True, {"hold": True}, np.float32),  # held beyond HOLD_MAX, prefetched
    (8, 4, False, {"hold": True, "acc_smem": True, "w_direct": True}, np.float32),
    (8, 4, True, {"w_direct": True}, np.float32),  # re-read: w_direct changes nothing
    (64, 2, True, {"threads": 128}, np.float32),  # two rows a block of tpr > 32
    (32, 2, True, {"threads": 32, "w_direct": True}, np.float32),  # a row a block, tpr <= 32
])
def test_backward_candidates(tpr, kv, pipe, opts, dtype):
    """The backward's direct weight reads (``w_direct``), rows held past
    HOLD_MAX (``hold``) and other threads a block (``threads``): the
    scripts/gpu_tune.py candidates of the sixth sweep (see
    check_backward_candidate)."""
    from _gpu_cases import check_backward_candidate

    check_backward_candidate(tpr, kv, pipe, dtype, RNG, _tol(dtype), **opts)
