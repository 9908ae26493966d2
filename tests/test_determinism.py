"""Bitwise reproducibility (run to run, any numba thread count, any address) and
concurrent calls from several Python threads."""

import threading

import numba
import numpy as np
import pytest

from numba_ln import _cpu, layer_norm, layer_norm_backward

from _reference import ln_backward_ref, ln_ref, tol

RNG = np.random.default_rng(20260505)

# All above the serial threshold, so the prange drivers run.  Row counts below,
# at and above the number of reduction chunks, and not multiples of anything.
SHAPES = [((1000, 67), -1), ((80, 1001), -1), ((129, 17, 31), (1, 2)), ((74, 45, 23), 1)]


def _problem(shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    ns = tuple(shape[a] for a in ((axis,) if isinstance(axis, int) else axis))
    w = (rng.standard_normal(ns) * 0.5 + 1).astype(dtype)
    b = rng.standard_normal(ns).astype(dtype)
    return x, dy, w, b


def _run(x, dy, w, b, axis):
    y, m, r = layer_norm(x, w, b, axis=axis, return_stats=True)
    dx, dw, db = layer_norm_backward(dy, x, m, r, w, axis=axis)
    dx0, dw0, db0 = layer_norm_backward(dy, x, m, r, None, axis=axis)
    return y, m, r, dx, dw, db, dx0, db0


def _assert_bitwise(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v, strict=True)


def _max_threads():
    return numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", SHAPES)
def test_thread_count_does_not_change_results(shape, axis, dtype):
    if _max_threads() < 2:
        pytest.skip("numba has a single thread here (NUMBA_NUM_THREADS=1)")
    x, dy, w, b = _problem(shape, axis, dtype)
    assert x.size > _cpu.SERIAL_MAX_ELEMENTS
    before = numba.get_num_threads()
    results = {}
    try:
        for n in sorted({1, 2, _max_threads()}):
            numba.set_num_threads(n)
            assert numba.get_num_threads() == n
            results[n] = _run(x, dy, w, b, axis)
    finally:
        numba.set_num_threads(before)
    assert numba.get_num_threads() == before
    ref = results[1]
    for n, res in results.items():
        _assert_bitwise(res, ref)          # dweight/dbias included: bitwise equal
    # and they are right
    dxr, dwr, dbr = ln_backward_ref(dy, x, w, axis)
    rows = x.size // w.size
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(ref[4], dwr, rtol=rtol, atol=atol * np.sqrt(rows))
    np.testing.assert_allclose(ref[5], dbr, rtol=rtol, atol=atol * np.sqrt(rows))


def _at_offset(a, offset):
    """A copy of ``a`` whose data starts ``offset`` bytes past a 64-byte boundary."""
    raw = np.empty(a.nbytes + 64 + offset, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 64 == offset
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((700, 96), -1), ((3, 1024), -1), *SHAPES[2:]])
def test_results_do_not_depend_on_the_address(shape, axis, dtype):
    """The same data at other addresses gives the same bits: the kernels'
    sums depend on the values and the shape only, never on where a row starts
    relative to a cache line (so a copy of x, or a NumPy array aligned to 16
    bytes rather than 64, rounds exactly alike).  A kernel that peeled the
    first columns of a row to reach alignment would break this."""
    x, dy, w, b = _problem(shape, axis, dtype, seed=5)
    first = _run(_at_offset(x, 0), _at_offset(dy, 0), w, b, axis)
    for offset in range(x.itemsize, 64, x.itemsize):
        _assert_bitwise(_run(_at_offset(x, offset), _at_offset(dy, offset), w, b, axis), first)
    _assert_bitwise(_run(_at_offset(x, 16), _at_offset(dy, 40), _at_offset(w, 8), b, axis), first)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_run_to_run(dtype):
    x, dy, w, b = _problem((700, 96), -1, dtype, seed=3)
    first = _run(x, dy, w, b, -1)
    for _ in range(4):
        _assert_bitwise(_run(x, dy, w, b, -1), first)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [70, 1000])
def test_serial_and_parallel_drivers_agree(monkeypatch, rows, dtype):
    """The same data through both drivers.  Which driver runs depends on the
    size only, so each is deterministic by itself; their reduction partitions
    may differ, so they agree to rounding, not bitwise."""
    if not hasattr(_cpu, "SERIAL_MAX_ELEMENTS"):
        pytest.skip("no serial/parallel switch in numba_ln._cpu")
    x, dy, w, b = _problem((rows, 50), -1, dtype, seed=4)
    monkeypatch.setattr(_cpu, "SERIAL_MAX_ELEMENTS", 10 ** 12)
    serial = _run(x, dy, w, b, -1)
    _assert_bitwise(_run(x, dy, w, b, -1), serial)
    monkeypatch.setattr(_cpu, "SERIAL_MAX_ELEMENTS", 0)
    parallel = _run(x, dy, w, b, -1)
    _assert_bitwise(_run(x, dy, w, b, -1), parallel)
    rtol, atol = tol(dtype)
    for s, p in zip(serial, parallel):
        np.testing.assert_allclose(s, p, rtol=rtol, atol=atol * np.sqrt(rows))


# --------------------------------------------------------------------------
# Several Python threads at once
# --------------------------------------------------------------------------

def _worker(jobs, expected, errors, barrier, repeats):
    try:
        barrier.wait()
        for _ in range(repeats):
            for (x, dy, w, b, axis), exp in zip(jobs, expected):
                got = _run(x, dy, w, b, axis)
                _assert_bitwise(got, exp)
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


@pytest.mark.parametrize("n_threads", [2, 4])
def test_concurrent_python_threads(n_threads):
    """Python threads calling layer_norm/backward at once on parallel-sized
    arrays (and small serial ones) all get correct, bitwise-stable results."""
    jobs_per_thread = []
    expected = []
    for t in range(n_threads):
        dtype = (np.float32, np.float64)[t % 2]
        jobs = [
            (*_problem((600, 129), -1, dtype, seed=10 + t), -1),        # parallel driver
            (*_problem((20, 16, 3), (1, 2), dtype, seed=20 + t), (1, 2)),  # serial driver
            (*_problem((40, 30, 40), 1, dtype, seed=30 + t), 1),         # permuted, parallel
        ]
        jobs_per_thread.append(jobs)
        expected.append([_run(*job) for job in jobs])
    # the sequential results are right, too
    x, dy, w, b, axis = jobs_per_thread[0][0]
    np.testing.assert_allclose(expected[0][0][0], ln_ref(x, w, b, axis)[0], *tol(x.dtype))

    errors = []
    barrier = threading.Barrier(n_threads)
    threads = [threading.Thread(target=_worker, args=(jobs_per_thread[t], expected[t], errors, barrier, 3))
               for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_concurrent_in_place_calls_on_separate_arrays():
    n = 4
    xs = [np.random.default_rng(40 + i).standard_normal((256, 200)) for i in range(n)]
    expected = [layer_norm(x) for x in xs]
    errors = []
    barrier = threading.Barrier(n)

    def work(i):
        try:
            barrier.wait()
            layer_norm(xs[i], out=xs[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    if errors:
        raise errors[0]
    for x, e in zip(xs, expected):
        np.testing.assert_allclose(x, e, rtol=1e-15, atol=1e-15)
