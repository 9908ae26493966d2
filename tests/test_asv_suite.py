"""The asv suite in asv_bench/ runs: every setup and benchmark method, on tiny shapes.

``asv check`` (part of ``make test``) only imports the suite and checks the
signatures; this runs the code, so an API change that breaks a benchmark
fails here in seconds instead of as a ``failed`` cell in the next
``make bench``.  The baselines are also checked to compute the same thing as
numba_ln, so the ratios compare like with like.
"""

import os
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "asv_bench"))

from benchmarks import common, cpu, gpu, jit_compile, rnn  # noqa: E402

SMALL = ["24x40", "24x4x10"]


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _run_methods(bench, *params):
    names = [n for n in dir(bench) if n.split("_")[0] in ("time", "peakmem", "track", "mem")]
    assert names, type(bench).__name__
    out = {}
    for name in names:
        out[name] = getattr(bench, name)(*params)
    return out


@pytest.fixture(autouse=True)
def _fresh_cache():
    common._BUILT.clear()
    yield
    common._BUILT.clear()


@pytest.mark.parametrize("shape", SMALL)
@pytest.mark.parametrize("dtype", common.DTYPES)
def test_cpu_forward_backward_baselines_agree(shape, dtype):
    x, w, b, dy, axis, nshape = common.make_case(shape, dtype)
    ref_y, ref_mean, ref_rstd = common.numpy_forward(x.astype(np.float64), w, b, axis)
    ref_dx, ref_dw, ref_db = common.numpy_backward(dy.astype(np.float64), x.astype(np.float64),
                                                   ref_mean, ref_rstd, w, axis)
    tol = 1e-3 if dtype == "float32" else 1e-9
    impls = ["numba_ln", "numpy", "LayerNorm"] + (["torch"] if _has_torch() else [])
    for impl in impls:
        y = cpu.forward_call(impl, x, w, b, axis, nshape)()
        y = np.asarray(y[0] if isinstance(y, tuple) else y)
        np.testing.assert_allclose(y.reshape(x.shape), ref_y, rtol=tol, atol=tol, err_msg=impl)
        r = cpu.backward_call(impl, x, w, b, dy, axis, nshape)()
        dx = np.asarray(r[0] if isinstance(r, tuple) else r)
        np.testing.assert_allclose(dx.reshape(x.shape), ref_dx, rtol=tol, atol=tol, err_msg=impl)
    # the baselines move the right bytes
    cpu.forward_call("copyto", x, w, b, axis, nshape)()
    np.testing.assert_array_equal(cpu.forward_call("copy", x, w, b, axis, nshape)(), x)
    np.testing.assert_array_equal(cpu.backward_call("add", x, w, b, dy, axis, nshape)(), dy + x)


@pytest.mark.parametrize("impl", ["numba_ln", "numba_ln_out", "copyto", "numpy", "torch"])
def test_cpu_forward_class(impl):
    bench = cpu.Forward()
    try:
        bench.setup(SMALL[1], "float32", impl)
    except NotImplementedError:
        assert impl == "torch" and not _has_torch()
        return
    _run_methods(bench, SMALL[1], "float32", impl)


@pytest.mark.parametrize("impl", ["numba_ln", "numba_ln_out", "2r1w", "numpy", "torch"])
def test_cpu_backward_class(impl):
    bench = cpu.Backward()
    try:
        bench.setup(SMALL[0], "float64", impl)
    except NotImplementedError:
        assert impl == "torch" and not _has_torch()
        return
    _run_methods(bench, SMALL[0], "float64", impl)


def test_njit_kernel_matches_api():
    x, w, b, dy, axis, nshape = common.make_case("16x32", "float32")
    from benchmarks._njit_user import user_backward, user_forward
    import numba_ln

    y = np.empty_like(x)
    mean = np.empty(16)
    rstd = np.empty(16)
    user_forward(x, w, b, common.EPS, y, mean, rstd)
    np.testing.assert_allclose(y, numba_ln.layer_norm(x, w, b), rtol=1e-5, atol=1e-5)
    dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    user_backward(dy, x, mean, rstd, w, dx, dw, db)
    _, m, r = numba_ln.layer_norm(x, w, b, return_stats=True)
    rdx, rdw, rdb = numba_ln.layer_norm_backward(dy, x, m, r, w)
    np.testing.assert_allclose(dx, rdx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, rdw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, rdb, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", cpu.Latency.params[1])
def test_latency_class(impl):
    bench = cpu.Latency()
    try:
        bench.setup("2x16", impl)
    except NotImplementedError:
        assert impl == "torch" and not _has_torch()
        return
    _run_methods(bench, "2x16", impl)


@pytest.mark.parametrize("cls", [cpu.PeakMemForward, cpu.PeakMemBackward])
def test_peakmem_classes(cls):
    for impl in cls.params[0]:
        bench = cls()
        bench.shape = "8x16"
        try:
            bench.setup(impl)
        except NotImplementedError:
            assert impl == "torch" and not _has_torch()
            continue
        _run_methods(bench, impl)


@pytest.mark.parametrize("cls", [cpu.Ratios, cpu.TorchRatios])
def test_ratio_tracks(cls, monkeypatch):
    def quick_ratio(a, b):
        return common.measure_ratio(a, b, pairs=1, min_time=1e-4)
    monkeypatch.setattr(cpu, "measure_ratio", quick_ratio)
    bench = cls()
    bench.shape = "64x64"
    try:
        bench.setup("float32")
    except NotImplementedError:
        assert cls is cpu.TorchRatios and not _has_torch()
        return
    for name, value in _run_methods(bench, "float32").items():
        assert isinstance(value, float) and 0 < value < np.inf, (name, value)


def test_measure_ratio():
    import time

    def slow():
        time.sleep(0.002)

    def fast():
        time.sleep(0.001)
    assert 1.2 < common.measure_ratio(slow, fast, pairs=3, min_time=0.004) < 4


def test_timeraw_code_compiles_as_asv_embeds_it():
    """asv pastes (stmt, setup) into a template string: the result must be valid Python."""
    from asv_runner.benchmarks.timeraw import _SeparateProcessTimer

    cases = [jit_compile.ImportTime().timeraw_import()]
    bench = jit_compile.FirstCall()
    for p in bench.params[0]:
        for d in bench.params[1]:
            for c in bench.params[2]:
                cases.append(bench.timeraw_first_call(p, d, c))
    for stmt, setup in cases:
        code = _SeparateProcessTimer.subprocess_tmpl.format(
            stmt=textwrap.dedent(stmt), setup=textwrap.dedent(setup), number=1)
        compile(code, "<timeraw>", "exec")
        # and the pieces as timeit sees them
        compile(setup, "<setup>", "exec")
        compile(stmt, "<stmt>", "exec")


@pytest.mark.slow
def test_timeraw_cached_backward_runs():
    """One real timeraw sample (the cheapest: serial driver, warm cache) in a subprocess."""
    from asv_runner.benchmarks.timeraw import _SeparateProcessTimer

    timer = _SeparateProcessTimer(
        lambda: jit_compile.FirstCall().timeraw_first_call("backward", "serial", "cached"))
    t = timer.timeit(1)
    assert 0 < t < 60


def test_rnn_classes(monkeypatch):
    pytest.importorskip("numba_ln.rnn")
    for name, value in (("T", 3), ("B", 2), ("INPUTS", 3), ("HIDDEN", 4),
                        ("TRAIN_SEQ", 5), ("TRAIN_BATCH", 4), ("TRAIN_HIDDEN", 4)):
        monkeypatch.setattr(rnn, name, value)
    for cls in (rnn.GRULayer, rnn.TrainStep):
        for cell in cls.params[0]:
            for impl in cls.params[1]:
                bench = cls()
                try:
                    bench.setup(cell, impl)
                except NotImplementedError:
                    assert impl == "torch"
                    continue
                _run_methods(bench, cell, impl)


def test_gpu_skips_without_a_gpu():
    try:
        from numba import cuda
        has_gpu = cuda.is_available() and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1"
    except Exception:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present: the asv run itself exercises these")
    for cls in (gpu.GPUForward, gpu.GPUBackward):
        with pytest.raises(NotImplementedError):
            cls().setup(gpu.CASES[0], "numba_ln")
