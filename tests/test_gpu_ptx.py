"""The GPU kernels compile to PTX with no GPU present, and float32 kernels do
float32 arithmetic only; importing numba_ln and running on the CPU never
touches CUDA.

Runs in the normal (non-simulator) test process; the PTX tests skip when
numba-cuda's NVVM is not installed (``pip install "numba-cuda[cu13]"``).
"""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _nvvm_missing():
    if SIM:
        return "the CUDA simulator has no compiler (unset NUMBA_ENABLE_CUDASIM)"
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as exc:  # ImportError, NvvmSupportError, ...
        return f"numba-cuda's NVVM is not available: {exc}"
    return None


needs_nvvm = pytest.mark.skipif(_nvvm_missing() is not None, reason=str(_nvvm_missing()))

CCS = [(8, 0), (9, 0)]

# A float64 instruction: any PTX opcode with a .f64 type (add.f64, fma.rn.f64,
# cvt.f64.f32, ld.global.f64, setp.gt.f64, ...).
F64 = re.compile(r"^\s*(?:@!?%p\d+\s+)?[a-z]+(?:\.[a-z0-9]+)*\.f64\b", re.M)

ATOMIC = re.compile(r"^\s*(?:@!?%p\d+\s+)?(?:atom|red)\.", re.M)


def _parts(key):
    """``(kind, variant suffix, vector tag, dtype)`` of a kernel's name:
    ``layer_norm_forward_128x8_v4[float32]`` gives ``("layer_norm_forward",
    "128x8", "_v4", "float32")``, the column sums' ``""`` for the suffix."""
    from numba_ln.gpu import _kernels

    kind = _kernels.KINDS[key]
    base, dt = key[:-1].split("[")
    assert base.startswith(kind), key
    suffix, v, width = base[len(kind) + 1:].partition("_v")
    return kind, suffix, v + width, dt


@pytest.fixture(scope="module", params=CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def ptx(request):
    from numba_ln import gpu

    return request.param, gpu.compile_ptx(cc=request.param)


@needs_nvvm
def test_every_kernel_in_every_dtype(ptx):
    from numba_ln import gpu
    from numba_ln.gpu import _kernels

    cc, table = ptx
    assert set(table) == set(_kernels.KERNELS)
    # every kind of kernel in every dtype, every variant's row kernels
    kinds = set(gpu.signatures("float32"))
    if not _kernels.FUSED_COLS:  # (no variant has that kind of kernel)
        kinds.discard("layer_norm_backward_fused")
    if not _kernels.TAIL_COLS:
        kinds.discard("layer_norm_backward_tail")
    assert {_parts(k)[::3] for k in table} == {(kind, dt) for kind in kinds for dt in gpu.DTYPES}
    for v in _kernels.VARIANTS:
        assert v.passes
        for dt in gpu.DTYPES:
            for p in v.passes:
                assert f"layer_norm_{p}_{v.suffix}[{dt}]" in table
    for name, text in table.items():
        assert f".target sm_{cc[0]}{cc[1]}" in text, name
        assert ".entry" in text, name


@needs_nvvm
def test_programmatic_dependent_launch_instructions(ptx):
    """For sm_90, the kernels launched as programmatic dependents (the column
    sums, the split forward's second kernel, the backward after its row
    sums) wait for the previous grid before anything else (and no kernel
    lets the next launch before its blocks exit: that was slower); for
    sm_80 (no such launches) none of it is compiled."""
    cc, table = ptx
    waits = {"layer_norm_backward_colsum", "layer_norm_backward_cols",
             "layer_norm_forward_split_apply",
             "layer_norm_backward", "layer_norm_backward_fused", "layer_norm_backward_tail"}
    for name, text in table.items():
        kind = _parts(name)[0]
        body = text[text.index(".entry"):]
        wait = body.count("griddepcontrol.wait")
        launch = body.count("griddepcontrol.launch_dependents")
        if cc < (9, 0):
            assert wait == launch == 0, name
            continue
        assert wait == (kind in waits), name
        assert launch == 0, name
        if wait:  # before the kernel's first load of an array
            assert body.index("griddepcontrol.wait") < body.index("ld.global"), name


@needs_nvvm
def test_cluster_barrier(ptx):
    """The one-launch split forward has the cluster's barrier for sm_90 (its
    launch in clusters, ``FWD_CLUSTER``): one arrive and one wait, with
    their default release and acquire semantics (no ``.relaxed``), reached
    by every thread; for sm_80, none (that launch needs 9.0).  No other
    kernel has one."""
    from numba_ln.gpu import _kernels

    cc, table = ptx
    for key, text in table.items():
        body = text[text.index(".entry"):]
        arrive = re.findall(r"barrier\.cluster\.arrive[.a-z]*;", body)
        wait = re.findall(r"barrier\.cluster\.wait[.a-z]*;", body)
        if _kernels.KINDS[key] == "layer_norm_forward_coop" and cc >= (9, 0):
            assert arrive == ["barrier.cluster.arrive;"], (key, arrive)
            assert wait == ["barrier.cluster.wait;"], (key, wait)
            assert body.index("barrier.cluster.arrive") < body.index("barrier.cluster.wait")
        else:
            assert not arrive and not wait, key


@needs_nvvm
def test_float32_kernels_have_no_float64_arithmetic(ptx):
    _, table = ptx
    for name, text in table.items():
        f64 = F64.findall(text)
        if name.endswith("[float32]"):
            assert not f64, f"{name} has float64 instructions: {sorted(set(f64))[:10]}"
            assert ".f64" not in text, name
        else:
            assert f64, f"{name} should compute in float64"


@needs_nvvm
def test_row_kernels_use_shuffles_and_registers(ptx):
    """On a GPU the reductions are warp shuffles; the row values and the
    gradient accumulators live in registers (no local-memory arrays); the
    variant's row is read with loads from one base address where the
    thread's columns are all in the row (``[%rd + imm]``)."""
    from numba_ln.gpu import _kernels

    _, table = ptx
    for key, text in table.items():
        if _kernels.KINDS[key] in ("layer_norm_backward_colsum", "layer_norm_backward_cols"):
            assert not ATOMIC.search(text) and ".local" not in text, key
            continue  # (no reductions across threads)
        assert "shfl.sync.bfly" in text or _kernels.KINDS[key] == \
            "layer_norm_forward_split_apply", key
        assert ".local" not in text, f"{key} spills an array to local memory"
        if _kernels.KINDS[key] in ("layer_norm_forward_coop", "layer_norm_backward_fused",
                                   "layer_norm_backward_tail"):
            # (their barrier's or tickets' counters only)
            ops = re.findall(r"^\s*(?:@!?%p\d+\s+)?(atom\.[a-z0-9.]+)", text, re.M)
            assert ATOMIC.findall(text) and len(ops) == len(ATOMIC.findall(text)), key
            assert set(ops) <= {"atom.global.add.u32", "atom.global.exch.b32"}, (key, ops)
            if _kernels.KINDS[key] == "layer_norm_forward_coop":  # one atomic, plain polls
                assert set(ops) == {"atom.global.add.u32"}, (key, ops)
                assert "ld.volatile.u32" in text and "nanosleep" not in text, key
        else:
            assert not ATOMIC.search(text), f"{key} uses atomics"
        if _kernels.KINDS[key] == "layer_norm_forward":
            assert re.search(r"ld\.global(\.v[24])?\.f(32|64)\s+(%fd?\d+|\{[^}]+\}), "
                             r"\[%rd\d+\+\d+\]", text), key


@needs_nvvm
def test_vector_builds_use_vector_accesses(ptx):
    """The vector-access builds of the variants of VECTOR read and write
    pieces (16 bytes: 4 floats or 2 doubles) with vector loads and stores;
    their value-at-a-time builds (for unaligned arrays) and every other
    kernel, none."""
    from numba_ln.gpu import _kernels

    _, table = ptx
    vector = {key for key in table if _parts(key)[2]}
    assert len(vector) == sum(len(v.fwd_vec) + len(v.bwd_vec) for v in _kernels.ALL_VARIANTS)
    for key, text in table.items():
        n = len(re.findall(r"(ld|st)\.global\.v[24]\.f(32|64)", text))
        assert (n > 0) == (key in vector), (key, n)


@needs_nvvm
def test_rows_are_stored_after_their_loads(ptx):
    """Loads before stores (``_make_variant``'s docstring): the compiler
    cannot move a global load above a global store (the arrays may alias),
    so a row kernel computes ``KS`` columns before it stores them.  In the
    PTX a store is followed by a load at most a few times a chunk of
    columns; storing each column as it is computed gave 2 to 5 times a
    column (for example 30 in the 128x8 forward, now 4)."""
    from numba_ln.gpu import _kernels

    _, table = ptx
    by_suffix = {v.suffix: v for v in _kernels.ALL_VARIANTS}
    for key, text in table.items():
        if _kernels.KINDS[key] not in ("layer_norm_forward", "layer_norm_backward",
                                       "layer_norm_forward_split_apply"):
            continue
        v = by_suffix[_parts(key)[1]]
        seq = re.findall(r"^\s*(?:@!?%p\d+\s+)?(ld|st)\.global", text, re.M)
        back = sum(1 for a, b in zip(seq, seq[1:]) if (a, b) == ("st", "ld"))
        assert back <= 3 * v.kv // _kernels.STORE_CHUNK, (key, back)


def test_the_widest_variant_takes_only_rows_no_other_holds():
    """The widest variant's forward always loops over its row (re-reading
    it): every row it could hold in registers has an earlier variant."""
    from numba_ln.gpu import _kernels

    widest = _kernels.VARIANTS[-1]
    assert widest.loops
    for p in ("forward", "backward"):
        assert _kernels.variant(widest.capacity, p) is not widest
        assert _kernels.variant(widest.capacity + 1, p) is widest


@needs_nvvm
def test_launch_bounds_are_in_the_ptx(ptx):
    """Every kernel is compiled for its launch bound: its variant's threads a
    block and the blocks a multiprocessor of numba_ln.gpu._kernels.TABLE."""
    from numba_ln import gpu
    from numba_ln.gpu import _kernels

    _, table = ptx
    for key, text in table.items():
        bounds = _kernels.launch_bounds(key)
        if bounds is None:  # numba-cuda without launch bounds
            continue
        assert re.search(rf"\.maxntid\s+{bounds[0]}\b", text), key
        if len(bounds) > 1:
            assert re.search(rf"\.minnctapersm\s+{bounds[1]}\b", text), key
        else:
            assert ".minnctapersm" not in text, key
    if _kernels.BOUNDS:
        for v, (tpr, kv, blocks) in zip(_kernels.VARIANTS, _kernels.TABLE):
            for dt in gpu.DTYPES:
                for p, n in zip(("forward", "backward"), blocks[dt]):
                    if n is None:
                        assert f"layer_norm_{p}_{v.suffix}[{dt}]" not in table
                        continue
                    assert _kernels.launch_bounds(f"layer_norm_{p}_{v.suffix}[{dt}]") in (
                        None, (v.threads, n) if n > 1 else (v.threads,))


@needs_nvvm
@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_one_reduction_statistics_candidates_compile(cc):
    """The forward with one-reduction statistics (a scripts/gpu_tune.py
    candidate, not in the kernel table) compiles, for groups of a warp or
    less and of a block, with one shuffle tree and half the barriers of the
    two-pass, and float32 arithmetic only in float32."""
    from numba import cuda

    from numba_ln import gpu
    from numba_ln.gpu import _kernels

    for tpr, kv, pipe in ((16, 8, True), (128, 8, True), (512, 16, False)):
        threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
        for dt in gpu.DTYPES:
            sig = gpu.signatures(dt)["layer_norm_forward"]
            texts = {}
            for chan in (False, True):
                fn = _kernels._make_variant(tpr, kv, False, pipe, chan=chan)["layer_norm_forward"]
                with gpu._assume_device(cc):
                    texts[chan], _ = cuda.compile_ptx(fn, sig, cc=cc, launch_bounds=(threads,))
            text = texts[True]
            assert "shfl.sync.bfly" in text and ".local" not in text, (tpr, kv, dt)
            assert text.count("bar.sync") <= texts[False].count("bar.sync") // 2, (tpr, kv, dt)
            if dt == "float32":
                assert not F64.findall(text), (tpr, kv)


@needs_nvvm
@pytest.mark.parametrize("tpr,kv", [(16, 8), (128, 8), (512, 8)])
def test_vector_builds_compile(tpr, kv):
    """Both builds of a variant with vector pieces (what VECTOR in _kernels.py
    compiles, in both dtypes and passes): the vector-access one with
    vector loads and stores, the value-at-a-time one with none, float32
    arithmetic only in float32, forward and backward."""
    from numba import cuda

    from numba_ln import gpu
    from numba_ln.gpu import _kernels

    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    for dt in gpu.DTYPES:
        vec = 4 if dt == "float32" else 2
        for access in (True, False):
            fns = _kernels._make_variant(tpr, kv, False, True, vec=vec, vec_access=access)
            for kind in ("layer_norm_forward", "layer_norm_backward"):
                with gpu._assume_device((9, 0)):
                    text, _ = cuda.compile_ptx(fns[kind], gpu.signatures(dt)[kind], cc=(9, 0),
                                               launch_bounds=(threads,))
                vector = len(re.findall(r"(ld|st)\.global\.v[24]\.", text))
                assert (vector > 0) == access, (tpr, kv, dt, kind, access, vector)
                if dt == "float32":
                    assert not F64.findall(text), (tpr, kv, kind, access)


@needs_nvvm
@pytest.mark.parametrize("kind", ["fused", "tail"])
def test_column_sum_candidates_compile(kind):
    """Backwards that sum their own partial rows (``scripts/gpu_tune.py``'s
    ``fused`` candidates of the committed kernel of each shape, the seventh
    sweep's, and its ``tail`` candidates, the ninth's) compile for sm_90
    with their row in registers (no local memory), at most 48 KiB of static
    shared memory, float32 arithmetic only in float32, and atomics only on
    the counters of their barriers or tickets (no atomic sums: the same
    bits every call), which the waiting blocks read with plain volatile
    loads, not atomics."""
    from _gpu_cases import load_tune_script
    from numba import cuda

    from numba_ln import gpu
    from numba_ln.gpu import _kernels

    tune = load_tune_script()
    n = 0
    dt = "float32"
    name = f"layer_norm_backward_{kind}"
    cases = (((1024, 4), (4096, 8), (128, 8), (8192, 8), (65536, 64)) if kind == "fused" else
             ((1024, (132, 8)), (1024, (1, 32)), (4096, (66, 8)), (128, (132, 8)),
              (65536, (1, 64)), (65536, (2, 16))))
    for d, cols in cases:
        make = tune.fused(cols) if kind == "fused" else tune.tail(*cols)
        v = _kernels.variant(d, "backward")
        if d > v.capacity and _kernels.LONG is not None:  # (few long rows, as in the plan)
            v = _kernels.LONG
        base = tune.C(v.tpr, v.kv, v.blocks[dt][1], v.pipe[dt],
                      l2=(v.tpr, v.kv) in _kernels.L2_PREFETCH, vec=v.bwd_width.get(dt, 1),
                      loops=v.loops)
        c = make(base)
        fn = _kernels._make_variant(c.tpr, c.kv, c.loops, c.pipe, l2_prefetch=c.l2,
                                    vec=c.vec, hold=v.hold[dt], threads=c.threads,
                                    fused_cols=c.fused, tail_cols=c.tail)[name]
        bounds = (c.threads, c.blocks) if c.blocks > 1 else (c.threads,)
        with gpu._assume_device((9, 0)):
            text, _ = cuda.compile_ptx(fn, gpu.signatures(dt)[name], cc=(9, 0),
                                       launch_bounds=bounds)
        assert ".local" not in text, c
        smem = sum(int(k) for k in re.findall(r"\.shared .*\[(\d+)\];", text))
        assert smem <= 48 * 1024, (c, smem)
        ops = re.findall(r"^\s*(?:@!?%p\d+\s+)?(atom\.[a-z0-9.]+)", text, re.M)
        assert ops and set(ops) <= {"atom.global.add.u32", "atom.global.exch.b32"}, c
        assert len(ops) == len(ATOMIC.findall(text)), c
        if kind == "fused" or c.tail[0] > 1:  # (blocks that wait: on plain loads)
            assert "ld.volatile.u32" in text and "nanosleep" not in text, c
        if dt == "float32":
            assert not F64.findall(text), c
        n += 1
    assert n >= 5


@needs_nvvm
def test_tune_candidates_compile_within_static_shared_memory():
    """Every candidate of scripts/gpu_tune.py's plan compiles for sm_90 and
    declares at most 48 KiB of static shared memory (a block's limit without
    an opt-in; shared accumulators take 2 * threads * kv values), with no
    float64 instruction in float32, the L2 prefetches it asks for, and, with
    vector pieces, 16-byte loads and stores of x, w, b and y."""
    from _gpu_cases import load_tune_script
    from numba import cuda

    from numba_ln import gpu
    from numba_ln.gpu import _kernels

    tune = load_tune_script()
    for _shape, dt, fwd, bwd in tune.PLAN:
        for kind, cands in (("layer_norm_forward", fwd), ("layer_norm_backward", bwd)):
            for c in cands:
                if callable(c):  # (of the committed kernel: the next test)
                    continue
                fns = _kernels._make_variant(c.tpr, c.kv, c.loops, c.pipe, chan=c.chan,
                                             acc_smem=c.acc, store_chunk=c.ks, l2_prefetch=c.l2,
                                             vec=c.vec, wb_direct=c.wbd, w_direct=c.wbd,
                                             hold=c.hold, threads=c.threads)
                fn = fns[kind]
                bounds = (c.threads, c.blocks) if c.blocks > 1 else (c.threads,)
                if c.loops:  # the window backward's row sums, launched before it
                    rs = "layer_norm_backward_rowsums"
                    with gpu._assume_device((9, 0)):
                        text, _ = cuda.compile_ptx(fns[rs], gpu.signatures(dt)[rs], cc=(9, 0),
                                                   launch_bounds=bounds)
                    assert dt != "float32" or not F64.findall(text), c
                with gpu._assume_device((9, 0)):
                    text, _ = cuda.compile_ptx(fn, gpu.signatures(dt)[kind], cc=(9, 0),
                                               launch_bounds=bounds)
                smem = sum(int(n) for n in re.findall(r"\.shared .*\[(\d+)\];", text))
                assert smem <= 48 * 1024, (kind, c, dt, smem)
                # the L2 prefetch: two a column (dy and x), where the next row is
                # not prefetched into registers (the row held, with ``pipe``)
                held = c.kv <= _kernels.HOLD_MAX if c.hold is None else c.hold
                want = 2 * c.kv if c.l2 and not (held and c.pipe) and "backward" in kind else 0
                assert text.count("prefetch.L2") == want, (kind, c, dt)
                if dt == "float32":
                    assert not F64.findall(text), (kind, c)
                # vector pieces: x, w, b read and y written a piece at a time
                # (up to 16 bytes an access: float64 x 4 is two a piece)
                width = min(c.vec, 16 // np.dtype(dt).itemsize) if c.vec > 1 else 1
                suffix = {"float32": "f32", "float64": "f64"}[dt]
                vload = len(re.findall(rf"ld\.global\.v{width}\.{suffix}", text))
                vstore = len(re.findall(rf"st\.global\.v{width}\.{suffix}", text))
                if width > 1:
                    # a store a piece of y (dx); the forward's loads: x a piece
                    # (twice with the next row's prefetch: before the row loop and
                    # in it), w and b one each a piece; the backward's: dy and x a
                    # piece, twice (it holds its row only with the prefetch)
                    per = c.vec // width
                    pieces = c.kv // c.vec
                    loads = 3 + c.pipe if "forward" in kind else 4 * c.pipe
                    assert vstore == pieces * per, (kind, c, dt, vstore)
                    assert vload == loads * pieces * per, (kind, c, dt, vload)
                else:
                    assert vload == vstore == 0, (c, dt)


@needs_nvvm
def test_signatures_match_the_launchers():
    from numba_ln import gpu
    from numba_ln.gpu import _kernels

    for dt in gpu.DTYPES:
        sigs = gpu.signatures(dt)
        assert all(s.startswith("void(") for s in sigs.values())
        assert all(dt in s for s in sigs.values())
        kinds = set(_kernels.KINDS.values())
        if not _kernels.FUSED_COLS:  # (a kind of the sweep's candidates only)
            kinds.add("layer_norm_backward_fused")
        if not _kernels.TAIL_COLS:
            kinds.add("layer_norm_backward_tail")
        assert set(sigs) == kinds


def test_import_and_cpu_calls_do_not_touch_cuda():
    """In a fresh process: import numba_ln, run every CPU entry point; no
    numba.cuda module is imported (so no CUDA context can exist)."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import numba_ln
        x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
        y, m, r = numba_ln.layer_norm(x, np.ones(8, np.float32), return_stats=True)
        numba_ln.layer_norm(x, axis=0)
        numba_ln.layer_norm_backward(np.ones_like(x), x, m, r, np.ones(8, np.float32))
        ln = numba_ln.LayerNorm(8)
        ln.backward(ln.forward(x))
        loaded = sorted(m for m in sys.modules
                        if m == "numba.cuda" or m.startswith(("numba.cuda.", "numba_cuda",
                                                              "cuda.bindings", "numba_ln.gpu")))
        print(loaded)
        assert not loaded, loaded
    """)
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gpu_call_without_a_gpu_says_why():
    """An array that claims to be on the GPU, on a machine with no usable GPU:
    a RuntimeError naming the reason, not a crash."""
    if SIM:
        pytest.skip("the simulator always has a 'GPU'")
    from numba import cuda

    if cuda.is_available():
        pytest.skip("a GPU is present")
    import numba_ln

    class FakeDeviceArray:
        __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False),
                                    "version": 3, "strides": None}

    with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
        numba_ln.layer_norm(FakeDeviceArray())


_PARAM_BYTES = {"u64": 8, "b64": 8, "s64": 8, "f64": 8, "u32": 4, "b32": 4, "s32": 4, "f32": 4}


@needs_nvvm
def test_fast_launch_packs_every_kernel_parameter(ptx):
    """numba_ln.gpu._fastlaunch packs each kernel's arguments into the
    parameters the compiled kernel takes (the same count and sizes as the
    PTX entry's ``.param`` list; on a GPU it checks the loaded kernel's too)."""
    from numba_ln.gpu import _fastlaunch, _kernels

    _, table = ptx
    for name, text in table.items():
        dtype = name[name.index("[") + 1:-1]
        sig = _kernels.signatures(dtype)[_kernels.KINDS[name]]
        entry = text[text.index(".entry"):]
        entry = entry[:entry.index(")")]
        types = re.findall(r"\.param\s+\.(\w+)", entry)
        sizes = tuple(_PARAM_BYTES[t] for t in types)
        assert sizes == _fastlaunch.Launcher(None, None, _fastlaunch._parse(sig)).sizes, name


@needs_nvvm
@pytest.mark.parametrize("tpr,kv,blocks", [(8, 8, 3), (16, 8, 3), (512, 8, 1)])
def test_direct_weight_backward_keeps_one_set_of_barriers(tpr, kv, blocks):
    """The backward's direct weight reads (``w_direct``) add no barrier or
    shuffle to the selecting build: threads whose columns are all in the row
    (direct reads) and the others (clamped, selected) call the group sums
    at one place.  A barrier or ``shfl.sync`` must be the same instruction
    for every thread of the group: with a call in each branch, the real-GPU
    test of 512x8 at D = 4095 gave no result on an H200 (session 10)."""
    from numba import cuda

    from numba_ln import gpu
    from numba_ln.gpu import _kernels

    threads = _kernels.MAX_THREADS if tpr <= 32 else tpr
    bounds = (threads, blocks) if blocks > 1 else (threads,)
    counts = {}
    for direct in (False, True):
        fn = _kernels._make_variant(tpr, kv, False, True, w_direct=direct)["layer_norm_backward"]
        with gpu._assume_device((9, 0)):
            text, _ = cuda.compile_ptx(fn, gpu.signatures("float32")["layer_norm_backward"],
                                       cc=(9, 0), launch_bounds=bounds)
        counts[direct] = (len(re.findall(r"\bbar(?:rier)?\.sync", text)), text.count("shfl.sync"))
    assert counts[True] == counts[False], counts
    assert counts[False][1] > 0  # (the group sums' shuffles are there to count)
