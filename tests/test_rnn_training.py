"""Training half of the GRU trainer: heads, optimisers, tasks, model, trainer, experiments."""

import io
import json
import math
import os

import numpy as np
import pytest

from numba_ln.rnn.losses import mean_squared_error, sequence_cross_entropy, softmax_cross_entropy
from numba_ln.rnn.model import Model
from numba_ln.rnn.optim import SGD, Adam, clip_grad_norm, global_norm
from numba_ln.rnn.tasks import TASKS, Task, adding_problem, load_task
from numba_ln.rnn.trainer import ProgressBar, Trainer


# ---------------------------------------------------------------- references
def ref_cross_entropy(logits, labels, weights):
    """Naive float64 weighted cross-entropy, one row at a time."""
    total = 0.0
    for row, lab, w in zip(np.asarray(logits, np.float64), labels, weights):
        m = max(row)
        lse = m + math.log(sum(math.exp(v - m) for v in row))
        total += w * (lse - row[lab])
    return total


def rel_err(a, n):
    a = np.asarray(a, np.float64)
    n = np.asarray(n, np.float64)
    return np.max(np.abs(a - n) / np.maximum(1e-8, np.abs(a) + np.abs(n)))


def numeric_grad(f, arr, h=1e-6):
    """Central differences of scalar f() with respect to every element of arr (in place)."""
    g = np.zeros(arr.shape)
    it = np.nditer(arr, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = arr[i]
        arr[i] = old + h
        fp = f()
        arr[i] = old - h
        fm = f()
        arr[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


def assert_grad(analytic, f, arr, tol=1e-6):
    num = numeric_grad(f, arr)
    err = rel_err(analytic, num)
    # tiny gradients: absolute agreement suffices
    close = np.allclose(analytic, num, rtol=0, atol=1e-9)
    assert err < tol or close, f"relative error {err:.3g}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ---------------------------------------------------------------- heads
def test_softmax_cross_entropy_value_and_gradients(rng):
    B, H, C = 5, 4, 3
    h = rng.standard_normal((B, H))
    w = rng.standard_normal((C, H))
    b = rng.standard_normal(C)
    y = rng.integers(0, C, B)
    res = softmax_cross_entropy(h, w, b, y)
    assert res.output.shape == (B, C)
    assert res.loss == pytest.approx(ref_cross_entropy(h @ w.T + b, y, np.full(B, 1 / B)),
                                     rel=1e-12)

    def f():
        return softmax_cross_entropy(h, w, b, y).loss

    assert_grad(res.dh, f, h)
    assert_grad(res.dweight, f, w)
    assert_grad(res.dbias, f, b)


@pytest.mark.parametrize("masked", [False, True])
def test_sequence_cross_entropy_value_and_gradients(rng, masked):
    T, B, H, C = 4, 3, 3, 5
    hs = rng.standard_normal((T, B, H))
    w = rng.standard_normal((C, H))
    b = rng.standard_normal(C)
    y = rng.integers(0, C, (T, B))
    mask = None
    weights = np.full(T * B, 1 / (T * B))
    if masked:
        lengths = np.array([4, 2, 1])
        mask = (np.arange(T)[:, None] < lengths).astype(np.float64)
        weights = mask.ravel() / mask.sum()
    res = sequence_cross_entropy(hs, w, b, y, mask)
    ref = ref_cross_entropy((hs @ w.T + b).reshape(-1, C), y.ravel(), weights)
    assert res.loss == pytest.approx(ref, rel=1e-12)
    assert res.output.shape == (T, B, C)

    def f():
        return sequence_cross_entropy(hs, w, b, y, mask).loss

    assert_grad(res.dh, f, hs)
    assert_grad(res.dweight, f, w)
    assert_grad(res.dbias, f, b)
    if masked:
        assert np.all(res.dh[mask == 0] == 0)


@pytest.mark.parametrize("n_out", [1, 2])
def test_mean_squared_error_value_and_gradients(rng, n_out):
    B, H = 6, 4
    h = rng.standard_normal((B, H))
    w = rng.standard_normal((n_out, H))
    b = rng.standard_normal(n_out)
    t = rng.standard_normal(B) if n_out == 1 else rng.standard_normal((B, n_out))
    res = mean_squared_error(h, w, b, t)
    pred = h @ w.T + b
    ref = np.mean((pred - t.reshape(B, n_out)) ** 2)
    assert res.loss == pytest.approx(ref, rel=1e-12)
    assert res.output.shape == t.shape

    def f():
        return mean_squared_error(h, w, b, t).loss

    assert_grad(res.dh, f, h)
    assert_grad(res.dweight, f, w)
    assert_grad(res.dbias, f, b)


def test_heads_keep_float32():
    h = np.ones((2, 3), np.float32)
    w = np.ones((4, 3), np.float32)
    b = np.zeros(4, np.float32)
    res = softmax_cross_entropy(h, w, b, np.array([0, 3]))
    assert res.dh.dtype == res.dweight.dtype == res.dbias.dtype == np.float32
    assert res.loss == pytest.approx(math.log(4))


def test_heads_reject_bad_input():
    h = np.zeros((2, 3))
    w = np.zeros((4, 3))
    b = np.zeros(4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), found values in \[0, 4\]"):
        softmax_cross_entropy(h, w, b, np.array([0, 4]))
    with pytest.raises(TypeError, match="labels must be integers, found float64"):
        softmax_cross_entropy(h, w, b, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"head weight has shape \(4, 2\) but the hidden size is 3"):
        softmax_cross_entropy(h, np.zeros((4, 2)), b, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"targets have shape \(2,\) but the head has 4 outputs"):
        mean_squared_error(h, w, b, np.zeros(2))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 2\), expected \(1, 2\)"):
        sequence_cross_entropy(np.zeros((1, 2, 3)), w, b, np.zeros((1, 2), int),
                               np.ones((2, 2)))
    with pytest.raises(TypeError, match="float32 or float64, found int64"):
        softmax_cross_entropy(np.zeros((2, 3), np.int64), w, b, np.array([0, 1]))


# ---------------------------------------------------------------- optimisers
def test_sgd_momentum_hand_computed():
    p = {"w": np.array([1.0, -2.0])}
    opt = SGD(p, lr=0.1, momentum=0.5)
    opt.step({"w": np.array([1.0, 2.0])})        # v = g = [1, 2]
    np.testing.assert_array_equal(p["w"], [0.9, -2.2])
    opt.step({"w": np.array([-1.0, 0.0])})       # v = 0.5*[1, 2] + [-1, 0] = [-0.5, 1]
    np.testing.assert_allclose(p["w"], [0.95, -2.3], rtol=0, atol=1e-15)
    opt.step({"w": np.array([0.0, 0.0])})        # v = [-0.25, 0.5]
    np.testing.assert_allclose(p["w"], [0.975, -2.35], rtol=0, atol=1e-15)


def test_sgd_nesterov_and_weight_decay_hand_computed():
    p = {"w": np.array([1.0])}
    opt = SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.5)
    opt.step({"w": np.array([1.0])})   # g = 1 + 0.5 = 1.5; v = 1.5; p -= 0.1*(1.5 + 0.9*1.5)
    np.testing.assert_allclose(p["w"], [1.0 - 0.285], rtol=1e-15)
    p2 = {"w": np.array([1.0])}
    SGD(p2, lr=0.5, momentum=0.0).step({"w": np.array([2.0])})
    np.testing.assert_array_equal(p2["w"], [0.0])


def test_adam_hand_computed():
    p = {"w": np.array([1.0, 0.0])}
    opt = Adam(p, lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    g1 = np.array([0.5, -2.0])
    opt.step({"w": g1.copy()})
    # step 1: m = 0.1 g, v = 0.01 g^2; mhat = g, vhat = g^2 -> p -= lr * g / (|g| + eps)
    np.testing.assert_allclose(p["w"], [1.0 - 0.01 * 0.5 / (0.5 + 1e-8),
                                        0.0 + 0.01 * 2.0 / (2.0 + 1e-8)], rtol=1e-14)
    g2 = np.array([1.0, 1.0])
    before = p["w"].copy()
    opt.step({"w": g2.copy()})
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.99 * 0.01 * g1 ** 2 + 0.01 * g2 ** 2
    mhat = m / (1 - 0.9 ** 2)
    vhat = v / (1 - 0.99 ** 2)
    np.testing.assert_allclose(p["w"], before - 0.01 * mhat / (np.sqrt(vhat) + 1e-8),
                               rtol=1e-13)


def test_optimisers_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    for make_np, make_t in [
        (lambda p: SGD(p, lr=0.05, momentum=0.9),
         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        (lambda p: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
         lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                   weight_decay=0.01)),
        (lambda p: Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    ]:
        p = {"w": w0.copy()}
        opt = make_np(p)
        tw = torch.tensor(w0.copy(), requires_grad=True)
        topt = make_t([tw])
        for g in grads:
            opt.step({"w": g.copy()})
            tw.grad = torch.tensor(g)
            topt.step()
        np.testing.assert_allclose(p["w"], tw.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_clip_grad_norm_hand_computed():
    g = {"a": np.array([3.0]), "b": np.array([[4.0]])}
    assert global_norm(g) == 5.0
    norm = clip_grad_norm(g, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(g["a"], [3.0 / (5.0 + 1e-6)], rtol=1e-15)
    np.testing.assert_allclose(g["b"], [[4.0 / (5.0 + 1e-6)]], rtol=1e-15)
    small = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])       # untouched below the norm
    g32 = {"a": np.full(4, 10.0, np.float32)}
    clip_grad_norm(g32, 2.0)
    assert g32["a"].dtype == np.float32
    assert math.isnan(global_norm({"a": np.array([np.nan])}))
    with pytest.raises(ValueError, match="max_norm must be > 0"):
        clip_grad_norm(g, 0.0)


def test_optimiser_state_round_trip_is_exact():
    rng = np.random.default_rng(3)
    p = {"w": rng.standard_normal(5).astype(np.float32)}
    opt = Adam(p, lr=0.01)
    for _ in range(3):
        opt.step({"w": rng.standard_normal(5).astype(np.float32)})
    state = opt.state_dict()
    p2 = {"w": p["w"].copy()}
    opt2 = Adam(p2, lr=0.5)
    opt2.load_state_dict(state)
    assert opt2.step_count == 3 and opt2.lr == 0.01
    g = rng.standard_normal(5).astype(np.float32)
    opt.step({"w": g.copy()})
    opt2.step({"w": g.copy()})
    assert np.array_equal(p["w"], p2["w"])
    with pytest.raises(KeyError, match="optimiser state has no 'momentum/w'"):
        SGD({"w": p["w"].copy()}, lr=0.1).load_state_dict(state)


def test_optimiser_rejects_bad_input():
    with pytest.raises(TypeError, match="parameter 'w' must be a float32 or float64"):
        Adam({"w": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match="lr must be > 0"):
        SGD({"w": np.zeros(3)}, lr=0.0)
    opt = SGD({"w": np.zeros(3)}, lr=0.1)
    with pytest.raises(KeyError, match=r"missing \['w'\], unexpected \['v'\]"):
        opt.step({"v": np.zeros(3)})


# ---------------------------------------------------------------- tasks
def test_digits_tasks_shapes_split_and_permutation():
    a = load_task("digits")
    p = load_task("digits-permuted")
    assert a.head == "classify" and a.n_inputs == 1 and a.n_outputs == 10 and a.seq_len == 64
    assert a.n_train + a.n_val == 1797
    assert abs(a.n_val - 0.2 * 1797) < 1
    assert a.x_train.shape == (a.n_train, 64, 1)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    # same split, pixels reordered by one fixed permutation for every image
    perm = np.array(p.info["permutation"])
    assert sorted(perm) == list(range(64)) and not np.array_equal(perm, np.arange(64))
    np.testing.assert_array_equal(p.x_train, a.x_train[:, perm])
    np.testing.assert_array_equal(p.y_val, a.y_val)
    assert load_task("digits-permuted").info["permutation"] == p.info["permutation"]
    x, y = p.batch("train", np.array([3, 1, 2]))
    assert x.shape == (64, 3, 1) and x.flags.c_contiguous and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 1, 0], p.x_train[1, :, 0])
    np.testing.assert_array_equal(y, p.y_train[[3, 1, 2]])


def test_adding_problem_and_constant_baseline():
    rng = np.random.default_rng(0)
    x, y = adding_problem(20000, 30, rng, np.float64)
    assert x.shape == (20000, 30, 2)
    markers = x[:, :, 1]
    assert np.all(markers.sum(axis=1) == 2)
    assert np.all(markers[:, :15].sum(axis=1) == 1) and np.all(markers[:, 15:].sum(axis=1) == 1)
    np.testing.assert_allclose(y, (x[:, :, 0] * markers).sum(axis=1), rtol=1e-12)
    # the constant predictor 1 scores the variance of a sum of two U(0,1): 1/6
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, rel=0.03)
    t = load_task("adding", seq_len=12, n_train=300, n_val=3000)
    assert t.head == "regress" and t.seq_len == 12 and t.n_inputs == 2 and t.n_outputs == 1
    assert t.info["constant_mse"] == 1 / 6
    assert t.info["constant_mse_val_measured"] == pytest.approx(1 / 6, rel=0.1)
    assert t.metric_value(1 / 6, None, None) == pytest.approx(1.0)
    assert load_task("adding").seq_len == 100
    xb, yb = t.batch("val", np.arange(4))
    assert xb.shape == (12, 4, 2) and yb.shape == (4,) and yb.dtype == np.float32


def test_charlm_task(tmp_path):
    path = tmp_path / "text.txt"
    text = "hello world, hello numba. " * 40
    path.write_text(text)
    t = load_task("charlm", text=str(path), seq_len=10, val_fraction=0.25)
    vocab = t.info["vocab"]
    assert vocab == "".join(sorted(set(text)))
    assert t.head == "lm" and t.n_inputs == t.n_outputs == len(vocab)
    x, y = t.batch("train", np.array([0, 2]))
    assert x.shape == (10, 2, len(vocab)) and y.shape == (10, 2)
    assert np.all(x.sum(axis=2) == 1)
    decoded = "".join(vocab[i] for i in np.argmax(x[:, 1], axis=1))
    assert decoded == text[20:30]
    assert "".join(vocab[i] for i in y[:, 1]) == text[21:31]
    assert t.metric_value(math.log(2), None, None) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="needs a text file"):
        load_task("charlm")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task("charlm", text=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="unknown task 'mnist'"):
        load_task("mnist")
    assert set(TASKS) == {"digits", "digits-permuted", "adding", "charlm"}


# ---------------------------------------------------------------- model
def _tiny_task(head, T=5, n_train=16, n_in=2, n_out=3, seed=0, dtype=np.float64):
    """A small random task (8 validation sequences) for fast trainer tests."""
    rng = np.random.default_rng(seed)
    n = n_train + 8
    if head == "lm":
        codes = rng.integers(0, n_in, (n, T + 1))
        return Task("tiny-lm", "lm", n_in, n_in, T, codes[:n_train, :-1], codes[:n_train, 1:],
                    codes[n_train:, :-1], codes[n_train:, 1:], "bits_per_char", False)
    x = rng.standard_normal((n, T, n_in)).astype(dtype)
    if head == "classify":
        y = rng.integers(0, n_out, n)
        return Task("tiny", "classify", n_in, n_out, T, x[:n_train], y[:n_train], x[n_train:],
                    y[n_train:], "accuracy", True)
    y = (0.5 * x[:, :, 0].sum(axis=1)).astype(dtype)
    return Task("tiny-reg", "regress", n_in, 1, T, x[:n_train], y[:n_train], x[n_train:],
                y[n_train:], "mse_ratio", False, {"constant_mse": 1.0})


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("head", ["classify", "regress", "lm"])
def test_model_gradients_through_each_head(layer_norm, head):
    task = _tiny_task(head, T=4, n_in=3)
    model = Model.for_task(task, hidden_size=3, num_layers=2 if head == "lm" else 1,
                           layer_norm=layer_norm, dtype=np.float64, seed=5)
    idx = np.arange(3)
    x, y = task.batch("train", idx, np.float64)
    mask = None
    if head == "lm":
        mask = (np.arange(4)[:, None] < np.array([4, 2, 3])).astype(np.float64)
    loss, grads, _, dx, dh0 = model.loss_and_grads(x, y, mask, return_dh0=True)
    assert set(grads) == set(model.params)
    flat_g = model.flatten(grads)
    theta = model.flatten().copy()

    def f_flat():
        model.set_flat(theta)
        return model.forward(x, y, mask)[0]

    num = numeric_grad(f_flat, theta)
    model.set_flat(theta)
    assert rel_err(flat_g, num) < 1e-5 or np.allclose(flat_g, num, atol=1e-9)
    assert_grad(dx, lambda: model.forward(x, y, mask)[0], x, tol=1e-5)


def test_model_flatten_round_trip_and_shared_arrays():
    task = _tiny_task("classify")
    model = Model.for_task(task, hidden_size=4, dtype=np.float64, seed=1)
    for key in model.rnn.params:
        assert model.params[key] is model.rnn.params[key]
    v = model.flatten()
    assert v.shape == (model.n_params,)
    model.set_flat(v * 2)
    np.testing.assert_array_equal(model.flatten(), v * 2)
    assert model.params["head_weight"].shape == (3, 4)
    same = Model.for_task(task, hidden_size=4, dtype=np.float64, seed=1)
    other = Model.for_task(task, hidden_size=4, dtype=np.float64, seed=2)
    np.testing.assert_array_equal(same.flatten(), v)
    assert not np.array_equal(other.flatten(), v)
    with pytest.raises(ValueError, match="vector has shape"):
        model.set_flat(v[:-1])
    with pytest.raises(TypeError, match="x has dtype float32 but the model is float64"):
        model.forward(np.zeros((5, 2, 2), np.float32), np.zeros(2, int))
    model.rnn.load_state_dict(model.rnn.state_dict())
    with pytest.raises(RuntimeError, match="no longer the GRU's array"):
        model.forward(np.zeros((5, 2, 2)), np.zeros(2, int))


# ---------------------------------------------------------------- trainer
def _trainer(task, *, layer_norm=True, seed=0, opt="adam", eval_every=5, progress=False):
    model = Model.for_task(task, hidden_size=6, layer_norm=layer_norm, dtype=np.float32,
                           seed=seed)
    optimizer = (Adam(model.params, lr=0.01) if opt == "adam"
                 else SGD(model.params, lr=0.05, momentum=0.9))
    return Trainer(model, task, optimizer, batch_size=5, eval_every=eval_every, seed=seed,
                   progress=progress)


def _strip_time(history):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in history]


def _same_history(a, b):
    a, b = _strip_time(a), _strip_time(b)
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert ra[k] == rb[k] or (math.isnan(ra[k]) and math.isnan(rb[k])), (k, ra, rb)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_same_seed_is_bitwise_reproducible(layer_norm):
    task = _tiny_task("classify", dtype=np.float32)
    a = _trainer(task, layer_norm=layer_norm, seed=3)
    b = _trainer(task, layer_norm=layer_norm, seed=3)
    ha = a.train(13)
    hb = b.train(13)
    for k in a.model.params:
        assert np.array_equal(a.model.params[k], b.model.params[k]), k
    _same_history(ha, hb)
    assert [r["step"] for r in ha] == [0, 5, 10]
    c = _trainer(task, layer_norm=layer_norm, seed=4)
    c.train(13)
    assert not np.array_equal(c.model.params["head_weight"], a.model.params["head_weight"])


@pytest.mark.parametrize("opt", ["adam", "sgd"])
@pytest.mark.parametrize("head", ["classify", "regress", "lm"])
def test_checkpoint_resume_is_bitwise_the_uninterrupted_run(tmp_path, opt, head):
    task = _tiny_task(head, dtype=np.float32)
    straight = _trainer(task, opt=opt, seed=1)
    straight.train(17)
    path = str(tmp_path / "ckpt.npz")
    first = _trainer(task, opt=opt, seed=1)
    first.train(7, checkpoint=path, checkpoint_every=7)   # stops mid-epoch, between evaluations
    first.train_step()                                    # progress that is NOT saved
    resumed = _trainer(task, opt=opt, seed=99)            # different seed: all state comes from the file
    resumed.load_checkpoint(path)
    assert resumed.step == 7
    resumed.train(17)
    for k in straight.model.params:
        assert np.array_equal(straight.model.params[k], resumed.model.params[k]), k
    s1, s2 = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for k in s1:
        assert np.array_equal(s1[k], s2[k]), k
    assert straight.rng.bit_generator.state == resumed.rng.bit_generator.state
    _same_history(straight.history, resumed.history)


def test_checkpoint_from_another_setup_is_refused(tmp_path):
    task = _tiny_task("classify", dtype=np.float32)
    t = _trainer(task)
    t.train(2)
    path = str(tmp_path / "c.npz")
    t.save_checkpoint(path)
    other = _trainer(task, opt="sgd")
    with pytest.raises(ValueError, match="saved with optimizer='Adam', this trainer has "
                                         "optimizer='SGD'"):
        other.load_checkpoint(path)
    model = Model.for_task(task, hidden_size=7, layer_norm=True, dtype=np.float32, seed=0)
    bigger = Trainer(model, task, Adam(model.params), batch_size=5)
    before = model.flatten().copy()
    with pytest.raises(ValueError, match=r"saved 'weight_ih_l0' has shape \(18, 2\), the "
                                         r"model has \(21, 2\)"):
        bigger.load_checkpoint(path)
    np.testing.assert_array_equal(model.flatten(), before)       # nothing half-loaded
    plain = _trainer(task, layer_norm=False)
    with pytest.raises(KeyError, match=r"missing \['bias_hh_l0'"):
        plain.load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_loss_error_names_the_step():
    task = _tiny_task("classify", dtype=np.float32)
    t = _trainer(task)
    t.train(3)
    t.model.params["head_bias"][0] = np.nan
    with pytest.raises(FloatingPointError, match=r"training loss became nan at step 4\b"):
        t.train(10)
    t2 = _trainer(_tiny_task("regress", dtype=np.float32))
    t2.train(2)
    t2.task.x_train[:] = np.inf
    with pytest.raises(FloatingPointError, match=r"at step 3\b"):
        t2.train(5)


def test_trainer_learns_and_reports_metrics():
    task = _tiny_task("regress", dtype=np.float32, n_train=200)
    t = _trainer(task, eval_every=40)
    h = t.train(120)
    assert h[-1]["val_loss"] < 0.5 * h[0]["val_loss"]
    assert h[-1]["mse_ratio"] == pytest.approx(h[-1]["val_loss"])   # constant_mse 1.0 here
    assert h[-1]["wall_time"] > 0 and math.isnan(h[0]["train_loss"])


def test_trainer_rejects_bad_setup():
    task = _tiny_task("classify", dtype=np.float32)
    model = Model.for_task(task, hidden_size=4, seed=0)
    with pytest.raises(ValueError, match="batch_size must be in"):
        Trainer(model, task, Adam(model.params), batch_size=100)
    with pytest.raises(ValueError, match="is not the model's array: build the optimiser on "
                                         "model.params"):
        Trainer(model, task, Adam({k: v.copy() for k, v in model.params.items()}))
    reg = _tiny_task("regress", dtype=np.float32)
    with pytest.raises(ValueError, match="the model's head is 'classify' but task"):
        Trainer(model, reg, Adam(model.params))
    t = Trainer(model, task, Adam(model.params), batch_size=4)
    t.train(3)
    with pytest.raises(ValueError, match="below the trainer's current step 3"):
        t.train(2)


def test_progress_bar_shows_loss_and_speed():
    buf = io.StringIO()
    bar = ProgressBar(10, label="ln-gru ", stream=buf, min_interval=0.0)
    bar.update(5, 20.0, loss=0.5, val=float("nan"))
    bar.update(10, 25.0, loss=0.25, val=0.3)
    bar.close()
    out = buf.getvalue()
    assert "ln-gru      5/10" in out and "loss 0.5 " in out and "20.0 it/s" in out
    assert "val 0.3" in out and out.endswith("\n") and "nan" not in out


# ---------------------------------------------------------------- experiments
def test_summary_percent_of_time_and_never_reached():
    from numba_ln.experiments import format_summary, summarize

    rows = []
    curves = {"gru": [2.0, 1.0, 0.8, 0.7], "ln-gru": [2.0, 0.75, 0.6, 0.5],
              "slow": [2.0, 1.5, 1.2, 1.1]}
    for cell, vals in curves.items():
        for seed in (0, 1):
            for i, v in enumerate(vals):
                rows.append({"step": 10 * i, "wall_time": 2.0 * i * (1 + (cell == "ln-gru")),
                             "cell": cell, "seed": seed, "train_loss": v, "val_loss": v,
                             "accuracy": 1 - v / 2})
    settings = dict(task="t", cells=["gru", "ln-gru", "slow"], seeds=2, steps=30,
                    hidden_size=4, num_layers=1, batch_size=2, optimizer="adam", lr=0.1,
                    clip=1.0, eval_every=10, seq_len=3, dtype="float32", n_train=4, n_val=2)
    s = summarize(rows, settings, "accuracy", True)
    assert s["target_val_loss"] == 0.7 and s["baseline_best_step"] == 30
    ln = s["cells"]["ln-gru"]
    assert ln["steps_to_target"] == 20 and ln["seconds_to_target"] == 8.0
    assert ln["percent_steps"] == pytest.approx(200 / 3)
    assert ln["percent_time"] == pytest.approx(800 / 6)     # fewer steps, but slower steps
    assert ln["final_accuracy"] == 0.75 and ln["seeds_reached"] == 2
    slow = s["cells"]["slow"]
    assert slow["steps_to_target"] is None and slow["percent_time"] is None
    text = format_summary(s)
    assert "slow never reached gru's best validation loss" in text
    assert "| slow |" in text and "never reached |" in text
    assert "ln-gru reached gru's best validation loss in 20 steps (67% of gru's 30)" in text


def test_run_experiment_writes_curves_plot_and_summary(tmp_path):
    from numba_ln.experiments import main

    out = tmp_path / "run"
    rc = main(["--task", "adding", "--seq-len", "6", "--seeds", "2", "--steps", "6",
               "--eval-every", "3", "--hidden", "4", "--batch-size", "8", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    lines = (out / "curves.csv").read_text().splitlines()
    assert lines[0] == "step,wall_time,cell,seed,train_loss,val_loss,mse_ratio"
    assert len(lines) == 1 + 2 * 2 * 3          # cells x seeds x (steps 0, 3, 6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"] == "gru" and set(summary["cells"]) == {"gru", "ln-gru"}
    assert "Constant predictor" in (out / "summary.md").read_text()
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    assert main(["--task", "nope", "--out", str(tmp_path / "x")]) == 2
    assert not os.path.exists(tmp_path / "x")


def test_demo_presets_are_valid_experiments():
    from numba_ln.demo import DEFAULTS, PRESETS
    from numba_ln.experiments import CELLS

    assert PRESETS["adding"] is DEFAULTS
    for name, p in PRESETS.items():
        assert p["task"] == name in TASKS and set(p["cells"]) <= set(CELLS)
        assert p["cells"][0] == "gru"                  # the baseline of the summary
        assert p["steps"] % p["eval_every"] == 0 and p["seeds"] >= 3
