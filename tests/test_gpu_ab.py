"""scripts/gpu_ab.py's comparison, with no GPU (a GPU runs the benchmarks it
compares; the simulator would take minutes a run)."""

import pytest


@pytest.fixture(scope="module")
def ab():
    from _gpu_cases import load_script

    return load_script("gpu_ab")


def _res(shape, pass_, ms, copy=0.01, dtype="float32", **kw):
    return {"shape": list(shape), "dtype": dtype, "pass": pass_, "kernel_ms": ms,
            "copy_ms": copy, **kw}


def test_compare_takes_medians_and_ratios(ab):
    runs = {"A": [[_res((4, 8), "forward", 0.30), _res((4, 8), "backward", 0.5)],
                  [_res((4, 8), "forward", 0.32), _res((4, 8), "backward", 0.5)],
                  [_res((4, 8), "forward", 0.31, copy=0.02),
                   _res((4, 8), "backward", 0.1, error="boom")]],
            "B": [[_res((4, 8), "forward", 0.20)], [_res((4, 8), "forward", 0.22)],
                  [_res((4, 8), "forward", 0.21)]]}
    rows = {(r["shape"], r["pass"]): r for r in ab.compare(runs)}
    fwd = rows[("4x8", "forward")]
    assert fwd["ms_A"] == 0.31 and fwd["ms_B"] == 0.21
    assert fwd["speed_B_over_A"] == round(0.31 / 0.21, 3)
    assert fwd["spread_A_pct"] == round(100 * 0.02 / 0.31, 1)
    assert fwd["copy_ms_A"] == 0.01
    bwd = rows[("4x8", "backward")]
    assert bwd["rounds_A"] == [0.5, 0.5]  # the failed result left out
    assert "ms_B" not in bwd and "speed_B_over_A" not in bwd
    md = ab.markdown(ab.compare(runs), "old", ".")
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(lines) == 4 and len({line.count("|") for line in lines}) == 1
    assert "| 4x8 | float32 | forward | 0.3100 | 0.2100 | 1.476 |" in md


def test_a_tree_without_the_package_is_an_error(ab, tmp_path):
    # (not the installed numba_ln instead)
    res = ab.run_bench(str(tmp_path), str(tmp_path / "out"), None, 1, 5)
    assert "not a numba_ln tree" in res["error"]


def _fake_tree(root, bench):
    """A numba_ln tree whose ``numba_ln/gpu/bench.py`` is ``bench``."""
    pkg = root / "numba_ln" / "gpu"
    pkg.mkdir(parents=True)
    for d in (root / "numba_ln", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "bench.py").write_text(bench)
    return str(root)


def _one_result(ms):
    """A benchmark that writes one forward result of ``ms`` at once."""
    return ("import json, os, sys\n"
            "out = sys.argv[sys.argv.index('--out') + 1]\n"
            f"r = {{'shape': [4, 8], 'dtype': 'float32', 'pass': 'forward', 'kernel_ms': {ms},"
            " 'copy_ms': 0.01}\n"
            "json.dump({'results': [r]}, open(os.path.join(out, 'gpu_bench.json'), 'w'))\n")


def test_a_failing_run_is_an_error(ab, tmp_path):
    tree = _fake_tree(tmp_path, "raise SystemExit(3)\n")
    res = ab.run_bench(tree, str(tmp_path / "out"), None, 1, 5)
    assert "exit 3, no gpu_bench.json" in res["error"]


def test_main_alternates_the_trees_and_writes_the_table(ab, tmp_path):
    a = _fake_tree(tmp_path / "a", _one_result(0.3))
    b = _fake_tree(tmp_path / "b", _one_result(0.2))
    out = tmp_path / "out"
    assert ab.main([str(out), a, b, "--rounds", "2"]) == 0
    import json

    data = json.loads((out / "gpu_ab.json").read_text())
    assert [(r["round"], r["tree"]) for r in data["runs"]] == [(0, "A"), (0, "B"), (1, "A"),
                                                               (1, "B")]
    (row,) = data["rows"]
    assert row["rounds_A"] == [0.3, 0.3] and row["speed_B_over_A"] == 1.5
    md = (out / "gpu_ab.md").read_text()
    assert "| 4x8 | float32 | forward | 0.3000 | 0.2000 | 1.500 |" in md
