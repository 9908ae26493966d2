"""Tests of numba_ln.rnn.GRU: forward against a float64 NumPy reference,
exact BPTT against central differences, masks, torch.nn.GRU equality."""

import numpy as np
import pytest

from numba_ln.rnn import GRU

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


# --------------------------------------------------------------------------
# naive float64 reference (one step at a time, NumPy only)
# --------------------------------------------------------------------------

def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def _ln(a, w, b, eps=1e-5):
    mu = a.mean(axis=-1, keepdims=True)
    var = ((a - mu) ** 2).mean(axis=-1, keepdims=True)
    return (a - mu) / np.sqrt(var + eps) * w + b


def reference_forward(params, x, h0, mask, num_layers, layer_norm):
    """hs (T, B, H) of the top layer and h_last (L, B, H), in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    T = x.shape[0]
    H = h0.shape[2]
    mask = np.ones(x.shape[:2]) if mask is None else np.asarray(mask, np.float64)
    inp = x
    h_last = []
    for k in range(num_layers):
        h = np.asarray(h0[k], np.float64)
        out = []
        for t in range(T):
            gi = inp[t] @ p[f"weight_ih_l{k}"].T
            gh = h @ p[f"weight_hh_l{k}"].T
            if layer_norm:
                def ln(a, name):
                    return _ln(a, p[f"ln_{name}_weight_l{k}"], p[f"ln_{name}_bias_l{k}"])

                rz = _sigmoid(ln(gi[:, :2 * H], "ih_gates") + ln(gh[:, :2 * H], "hh_gates"))
                r, z = rz[:, :H], rz[:, H:]
                n = np.tanh(ln(gi[:, 2 * H:], "ih_cand") + r * ln(gh[:, 2 * H:], "hh_cand"))
            else:
                gi = gi + p[f"bias_ih_l{k}"]
                gh = gh + p[f"bias_hh_l{k}"]
                r = _sigmoid(gi[:, :H] + gh[:, :H])
                z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
                n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            hnew = (1 - z) * n + z * h
            m = mask[t][:, None]
            h = m * hnew + (1 - m) * h
            out.append(h)
        inp = np.stack(out) if T else np.zeros((0,) + h.shape)
        h_last.append(h)
    return inp, np.stack(h_last)


def _rel_err(a, n):
    # the floor 1e-5 judges elements below 1e-5 (exact zeros of padded steps,
    # whose central differences are rounding noise ~1e-13) absolutely
    return np.abs(a - n) / np.maximum(1e-5, np.abs(a) + np.abs(n))


def _problem(num_layers, layer_norm, masked, T=3, B=2, n_in=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    gru = GRU(n_in, H, num_layers=num_layers, layer_norm=layer_norm, dtype=np.float64, seed=seed)
    if layer_norm:
        # move gains/biases away from 1/0 so that their gradients are generic
        for name, v in gru.params.items():
            if name.startswith("ln_"):
                v += rng.uniform(-0.3, 0.3, v.shape)
    x = rng.standard_normal((T, B, n_in))
    h0 = 0.5 * rng.standard_normal((num_layers, B, H))
    mask = None
    if masked:
        mask = np.ones((T, B))
        mask[1, 0] = 0  # a hole in the middle
        mask[T - 1, 1] = 0  # a padded end
    w_hs = rng.standard_normal((T, B, H))
    w_last = rng.standard_normal((num_layers, B, H))
    return gru, x, h0, mask, w_hs, w_last


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layer_norm", [False, True], ids=["gru", "lngru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_forward_matches_reference(layer_norm, num_layers, masked):
    gru, x, h0, mask, _, _ = _problem(num_layers, layer_norm, masked, T=5, B=3, n_in=3, H=6)
    hs, h_last, _ = gru.forward(x, h0, mask)
    ref_hs, ref_last = reference_forward(gru.params, x, h0, mask, num_layers, layer_norm)
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h_last, ref_last, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["gru", "lngru"])
def test_forward_float32_close_to_float64(layer_norm):
    gru64, x, h0, mask, _, _ = _problem(2, layer_norm, True, T=7, B=5, n_in=4, H=16)
    gru32 = GRU(4, 16, num_layers=2, layer_norm=layer_norm, dtype=np.float32)
    gru32.load_state_dict(gru64.params)
    hs, h_last, _ = gru32.forward(x.astype(np.float32), h0.astype(np.float32),
                                  mask.astype(np.float32))
    assert hs.dtype == np.float32 and h_last.dtype == np.float32
    ref_hs, ref_last = reference_forward(gru32.params, x.astype(np.float32), h0.astype(np.float32),
                                         mask, 2, layer_norm)
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(h_last, ref_last, rtol=1e-4, atol=2e-5)


def test_defaults_and_shapes():
    gru = GRU(3, 5, num_layers=2, seed=1)
    x = np.ones((4, 2, 3), np.float32)
    hs, h_last, cache = gru.forward(x)
    assert hs.shape == (4, 2, 5) and h_last.shape == (2, 2, 5)
    np.testing.assert_array_equal(hs[-1], h_last[-1])
    ref_hs, _ = reference_forward(gru.params, x, np.zeros((2, 2, 5)), None, 2, False)
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-5, atol=1e-6)
    assert not hs.flags.writeable
    dx, dh0, grads = gru.backward(None, cache, dh_last=np.ones((2, 2, 5), np.float32))
    assert dx.shape == x.shape and dh0.shape == (2, 2, 5)
    assert list(grads) == list(gru.params)
    for k, g in grads.items():
        assert g.shape == gru.params[k].shape and g.dtype == np.float32


def test_init_documented_distributions():
    H = 16
    gru = GRU(5, H, num_layers=2, seed=3)
    bound = 1 / np.sqrt(H)
    for v in gru.params.values():
        assert np.abs(v).max() <= bound and v.dtype == np.float32
    ln = GRU(5, H, num_layers=2, layer_norm=True, dtype=np.float64, seed=3)
    assert np.abs(ln.params["weight_ih_l0"]).max() <= 0.1
    for k in range(2):
        w = ln.params[f"weight_hh_l{k}"]
        for g in range(3):
            block = w[g * H:(g + 1) * H]
            np.testing.assert_allclose(block @ block.T, np.eye(H), atol=1e-12)
        for name, v in ln.params.items():
            if name.startswith("ln_"):
                expected = 1.0 if "_weight_" in name else 0.0
                assert np.all(v == expected), name
    # seeds make the initialisation reproducible, bitwise
    again = GRU(5, H, num_layers=2, layer_norm=True, dtype=np.float64, seed=3)
    other = GRU(5, H, num_layers=2, layer_norm=True, dtype=np.float64, seed=4)
    for k in ln.params:
        assert np.array_equal(ln.params[k], again.params[k])
    assert not np.array_equal(ln.params["weight_hh_l0"], other.params["weight_hh_l0"])


def test_zero_length_sequence():
    gru = GRU(2, 3, dtype=np.float64, seed=0)
    h0 = np.full((1, 2, 3), 0.5)
    hs, h_last, cache = gru.forward(np.zeros((0, 2, 2)), h0)
    assert hs.shape == (0, 2, 3)
    np.testing.assert_array_equal(h_last, h0)
    dx, dh0, grads = gru.backward(None, cache, dh_last=np.ones((1, 2, 3)))
    assert dx.shape == (0, 2, 2)
    np.testing.assert_array_equal(dh0, 1.0)
    assert all(np.all(g == 0) for g in grads.values())


# --------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layer_norm", [False, True], ids=["gru", "lngru"])
def test_mask_carries_state_through_padding(layer_norm):
    rng = np.random.default_rng(5)
    T, B, L = 6, 3, 2
    gru = GRU(3, 5, num_layers=L, layer_norm=layer_norm, dtype=np.float64, seed=2)
    x = rng.standard_normal((T, B, 3))
    h0 = rng.standard_normal((L, B, 5))
    lengths = np.array([6, 2, 4])
    mask = np.arange(T)[:, None] < lengths  # bool mask, right padding
    hs, h_last, _ = gru.forward(x, h0, mask)
    for b, n in enumerate(lengths):
        # padded steps repeat the last real state
        for t in range(n, T):
            np.testing.assert_array_equal(hs[t, b], hs[n - 1, b])
        # and h_last equals running the unpadded sequence alone
        hs_b, last_b, _ = gru.forward(x[:n, b:b + 1], h0[:, b:b + 1])
        np.testing.assert_allclose(h_last[:, b], last_b[:, 0], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(hs[:n, b], hs_b[:, 0], rtol=1e-13, atol=1e-14)
    # a padded step in the middle skips that input entirely
    mask2 = np.ones((T, B))
    mask2[2] = 0
    hs2, _, _ = gru.forward(x, h0, mask2)
    np.testing.assert_array_equal(hs2[2], hs2[1])
    x_skip = np.delete(x, 2, axis=0)
    hs_skip, _, _ = gru.forward(x_skip, h0)
    np.testing.assert_allclose(hs2[3:], hs_skip[2:], rtol=1e-13, atol=1e-14)
    # numeric 0/1 masks and boolean masks agree; all-ones equals no mask
    hs3, _, _ = gru.forward(x, h0, mask.astype(np.float32))
    np.testing.assert_array_equal(hs3, hs)
    hs4, _, _ = gru.forward(x, h0, np.ones((T, B), np.int64))
    hs5, _, _ = gru.forward(x, h0)
    np.testing.assert_array_equal(hs4, hs5)


# --------------------------------------------------------------------------
# exact BPTT: central differences on every element
# --------------------------------------------------------------------------

def _loss(gru, x, h0, mask, w_hs, w_last):
    hs, h_last, _ = gru.forward(x, h0, mask)
    return float(np.sum(hs * w_hs) + np.sum(h_last * w_last))


def _numeric_grad(f, a, step=1e-4):
    """Central differences of f() with respect to every element of a (in place).

    The fourth-order central stencil (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h
    has truncation error O(h^4) ~ 1e-16 and rounding error ~ 1e-16 |f| / h,
    so even gradient elements of 1e-4 are checked to ~1e-7 relative.
    """
    g = np.empty_like(a)
    flat = a.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        vals = []
        for d in (-2, -1, 1, 2):
            flat[i] = old + d * step
            vals.append(f())
        flat[i] = old
        gflat[i] = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * step)
    return g


def _assert_grad_close(name, analytic, numeric):
    err = _rel_err(analytic, numeric)
    worst = np.unravel_index(np.argmax(err), err.shape) if err.size else None
    assert err.size == 0 or err.max() < 1e-6, (
        f"{name}: max relative error {err.max():.2e} at {worst}: analytic {analytic[worst]!r} "
        f"vs numeric {numeric[worst]!r}")


@pytest.mark.parametrize("layer_norm", [False, True], ids=["gru", "lngru"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_gradients_central_differences(layer_norm, num_layers, masked):
    gru, x, h0, mask, w_hs, w_last = _problem(num_layers, layer_norm, masked)
    hs, h_last, cache = gru.forward(x, h0, mask)
    dx, dh0, grads = gru.backward(w_hs, cache, dh_last=w_last)
    assert list(grads) == list(gru.params)

    def f():
        return _loss(gru, x, h0, mask, w_hs, w_last)

    for name, p in gru.params.items():
        _assert_grad_close(name, grads[name], _numeric_grad(f, p))
    _assert_grad_close("x", dx, _numeric_grad(f, x))
    _assert_grad_close("h0", dh0, _numeric_grad(f, h0))
    if masked:  # padded inputs do not reach the loss at all
        assert np.all(dx[mask == 0] == 0) if num_layers == 1 else np.all(dx[1, 0] == 0)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["gru", "lngru"])
def test_gradients_dh_last_only(layer_norm):
    """A loss on the last state alone (dhs=None), the classification case."""
    gru, x, h0, mask, _, w_last = _problem(2, layer_norm, True, seed=7)
    _, _, cache = gru.forward(x, h0, mask)
    dx, dh0, grads = gru.backward(None, cache, dh_last=w_last)

    def f():
        return float(np.sum(gru.forward(x, h0, mask)[1] * w_last))

    for name in ("weight_ih_l0", "weight_hh_l1"):
        _assert_grad_close(name, grads[name], _numeric_grad(f, gru.params[name]))
    _assert_grad_close("x", dx, _numeric_grad(f, x))
    _assert_grad_close("h0", dh0, _numeric_grad(f, h0))
    # dh_last=None and dhs only: the top layer's h_last gradient is not double counted
    _, _, cache = gru.forward(x, h0, mask)
    dx_a, dh0_a, _ = gru.backward(np.zeros_like(x[..., :1].repeat(4, -1)), cache, dh_last=w_last)
    np.testing.assert_array_equal(dx_a, dx)
    np.testing.assert_array_equal(dh0_a, dh0)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["gru", "lngru"])
def test_backward_reusable_and_deterministic(layer_norm):
    import numba

    gru, x, h0, mask, w_hs, w_last = _problem(2, layer_norm, True, T=9, B=13, n_in=3, H=8)
    _, _, cache = gru.forward(x, h0, mask)
    first = gru.backward(w_hs, cache, dh_last=w_last)
    gru.forward(x[::-1].copy(), h0, mask)  # another call in between reuses the scratch buffers
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        second = gru.backward(w_hs, cache, dh_last=w_last)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    for k in gru.params:
        np.testing.assert_array_equal(first[2][k], second[2][k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer_norm", [False, True], ids=["gru", "lngru"])
def test_blocks_and_pieces_do_not_depend_on_threads(layer_norm, dtype, monkeypatch):
    """Several blocks of sequences in the time loops and several pieces of
    rows in the products around them (run in parallel when numba has more
    than one thread): bitwise the same with one thread, and the same up to
    rounding as one block and one piece."""
    import numba

    from numba_ln.rnn import gru as gru_mod

    gru, x, h0, mask, w_hs, w_last = _problem(2, layer_norm, True, T=9, B=13, n_in=3, H=8)
    if dtype is np.float32:
        gru32 = GRU(3, 8, num_layers=2, layer_norm=layer_norm, dtype=np.float32)
        gru32.load_state_dict(gru.params)
        gru = gru32
        x, h0, mask, w_hs, w_last = (a.astype(np.float32) for a in (x, h0, mask, w_hs, w_last))

    def run():
        hs, h_last, cache = gru.forward(x, h0, mask)
        dx, dh0, grads = gru.backward(w_hs, cache, dh_last=w_last)
        return [hs.copy(), h_last, dx, dh0] + [grads[k] for k in sorted(gru.params)]

    ref = run()  # one block of 13 sequences, one piece of 117 rows
    monkeypatch.setattr(gru_mod, "PIECE_ROWS", 25)  # 4 pieces of 29 or 30 rows
    monkeypatch.setattr(gru_mod, "SERIAL_MAX_ELEMENTS", 0)
    gru.chunk_rows = 4  # blocks of 4, 4, 4 and 1 sequences
    assert gru._blocks(13) == (4, numba.get_num_threads() > 1)
    par = run()
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        ser = run()
    finally:
        numba.set_num_threads(old)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype is np.float32 else dict(rtol=1e-10, atol=1e-12)
    names = ["hs", "h_last", "dx", "dh0"] + sorted(gru.params)
    assert [n for n, a, b in zip(names, par, ser) if not np.array_equal(a, b)] == []
    for name, a, c in zip(names, par, ref):
        np.testing.assert_allclose(a, c, **tol, err_msg=name)


@pytest.mark.parametrize("layer_norm", [False, True], ids=["gru", "lngru"])
def test_float32_gradients_close_to_float64(layer_norm):
    gru64, x, h0, mask, w_hs, w_last = _problem(2, layer_norm, True, T=6, B=4, n_in=3, H=8)
    gru32 = GRU(3, 8, num_layers=2, layer_norm=layer_norm, dtype=np.float32)
    gru32.load_state_dict(gru64.params)
    gru64.load_state_dict(gru32.params)  # both hold the float32-rounded values
    f32 = [a.astype(np.float32) for a in (x, h0, mask, w_hs, w_last)]
    _, _, c32 = gru32.forward(*f32[:3])
    g32 = gru32.backward(f32[3], c32, dh_last=f32[4])
    _, _, c64 = gru64.forward(*[a.astype(np.float64) for a in f32[:3]])
    g64 = gru64.backward(f32[3].astype(np.float64), c64, dh_last=f32[4].astype(np.float64))
    np.testing.assert_allclose(g32[0], g64[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(g32[1], g64[1], rtol=1e-3, atol=1e-4)
    for k in gru32.params:
        assert g32[2][k].dtype == np.float32
        np.testing.assert_allclose(g32[2][k], g64[2][k], rtol=1e-3, atol=1e-4, err_msg=k)


# --------------------------------------------------------------------------
# PyTorch: same equations, same layout, weights both ways
# --------------------------------------------------------------------------

@needs_torch
@pytest.mark.parametrize("num_layers", [1, 2])
def test_equals_torch_gru(num_layers):
    T, B, n_in, H = 5, 3, 4, 6
    gru, x, h0, _, w_hs, w_last = _problem(num_layers, False, False, T=T, B=B, n_in=n_in, H=H)
    ref = torch.nn.GRU(n_in, H, num_layers=num_layers, dtype=torch.float64)
    ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in gru.state_dict().items()})
    xt = torch.from_numpy(x.copy()).requires_grad_()
    h0t = torch.from_numpy(h0.copy()).requires_grad_()
    out, hn = ref(xt, h0t)
    (out * torch.from_numpy(w_hs)).sum().add((hn * torch.from_numpy(w_last)).sum()).backward()

    hs, h_last, cache = gru.forward(x, h0)
    dx, dh0, grads = gru.backward(w_hs, cache, dh_last=w_last)
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_last, hn.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), rtol=1e-11, atol=1e-13)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-11, atol=1e-13,
                                   err_msg=name)


@needs_torch
def test_weights_round_trip_with_torch():
    ref = torch.nn.GRU(3, 5, num_layers=2)  # float32, torch's own init
    gru = GRU(3, 5, num_layers=2)
    gru.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    hs, h_last, _ = gru.forward(x)
    with torch.no_grad():
        out, hn = ref(torch.from_numpy(x))
    np.testing.assert_allclose(hs, out.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_last, hn.numpy(), rtol=1e-5, atol=1e-6)
    # and back: ours -> a fresh torch GRU
    back = torch.nn.GRU(3, 5, num_layers=2)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in gru.state_dict().items()})
    for k, v in back.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), ref.state_dict()[k].numpy())


@needs_torch
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_lngru_equals_torch_autograd(masked):
    """LN-GRU against the eager PyTorch LN-GRU of the benchmark (F.layer_norm + autograd)."""
    from numba_ln.rnn.bench import TorchLNGRU

    T, B, n_in, H = 5, 3, 4, 6
    gru, x, h0, mask, w_hs, w_last = _problem(2, True, masked, T=T, B=B, n_in=n_in, H=H)
    ref = TorchLNGRU(n_in, H, num_layers=2, dtype=torch.float64)
    ref.load_numpy(gru.params)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    h0t = torch.from_numpy(h0.copy()).requires_grad_()
    mt = None if mask is None else torch.from_numpy(mask)
    out, hn = ref(xt, h0t, mt)
    (out * torch.from_numpy(w_hs)).sum().add((hn * torch.from_numpy(w_last)).sum()).backward()

    hs, h_last, cache = gru.forward(x, h0, mask)
    dx, dh0, grads = gru.backward(w_hs, cache, dh_last=w_last)
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(h_last, hn.detach().numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh0, h0t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


# --------------------------------------------------------------------------
# errors that say what was found and how to fix it
# --------------------------------------------------------------------------

def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_size must be >= 1, found 0"):
        GRU(3, 0)
    with pytest.raises(TypeError, match="num_layers must be an int, found float"):
        GRU(3, 4, num_layers=1.5)
    with pytest.raises(TypeError, match="dtype must be float32 or float64, found int32"):
        GRU(3, 4, dtype=np.int32)


def test_bad_forward_inputs():
    gru = GRU(3, 4, num_layers=2, dtype=np.float32, seed=0)
    x = np.zeros((5, 2, 3), np.float32)
    with pytest.raises(ValueError, match=r"x has shape \(5, 2, 4\) but must be \(T, B, input_size\)"):
        gru.forward(np.zeros((5, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"x has shape \(5, 3\)"):
        gru.forward(np.zeros((5, 3), np.float32))
    with pytest.raises(TypeError, match=r"x is float64 but this layer is float32; convert with x.astype"):
        gru.forward(x.astype(np.float64))
    with pytest.raises(TypeError, match="x must be float32 or float64, found int64"):
        gru.forward(x.astype(np.int64))
    with pytest.raises(ValueError, match=r"h0 has shape \(1, 2, 4\) but must be \(num_layers, B"):
        gru.forward(x, np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 5\) but must be \(T, B\) = \(5, 2\)"):
        gru.forward(x, mask=np.ones((2, 5)))
    bad = np.ones((5, 2))
    bad[3, 1] = 2
    with pytest.raises(ValueError, match=r"mask must hold only 0 and 1, found 2.0 at \[3, 1\]"):
        gru.forward(x, mask=bad)
    gru.params["weight_hh_l1"] = np.zeros((12, 3), np.float32)
    with pytest.raises(ValueError, match=r"params\['weight_hh_l1'\] must be an ndarray of shape \(12, 4\)"):
        gru.forward(x)


def test_bad_backward_inputs():
    gru = GRU(3, 4, dtype=np.float64, seed=0)
    other = GRU(3, 4, dtype=np.float64, seed=0)
    x = np.zeros((5, 2, 3))
    hs, _, cache = gru.forward(x)
    with pytest.raises(TypeError, match="cache must be the third value returned by GRU.forward"):
        gru.backward(hs, (hs,))
    with pytest.raises(ValueError, match="cache comes from a different GRU object"):
        other.backward(hs, cache)
    with pytest.raises(ValueError, match=r"dhs has shape \(4, 2, 4\) but must be \(T, B, hidden_size\) = \(5, 2, 4\)"):
        gru.backward(np.zeros((4, 2, 4)), cache)
    with pytest.raises(ValueError, match=r"dh_last has shape \(2, 4\)"):
        gru.backward(None, cache, dh_last=np.zeros((2, 4)))


def test_load_state_dict_errors_and_copy():
    gru = GRU(3, 4, layer_norm=True, dtype=np.float64, seed=0)
    state = gru.state_dict()
    with pytest.raises(KeyError, match=r"missing \['ln_hh_cand_bias_l0'\]"):
        gru.load_state_dict({k: v for k, v in state.items() if k != "ln_hh_cand_bias_l0"})
    with pytest.raises(ValueError, match=r"weight_ih_l0 has shape \(3, 12\) but this LN-GRU"):
        gru.load_state_dict({**state, "weight_ih_l0": state["weight_ih_l0"].T})
    state["weight_ih_l0"][:] = 7.0  # state_dict returns copies
    assert not np.any(gru.params["weight_ih_l0"] == 7.0)
    gru.load_state_dict(state)
    np.testing.assert_array_equal(gru.params["weight_ih_l0"], 7.0)


@needs_torch
def test_bench_runs_and_reports_ratios():
    """The benchmark's logic on a tiny shape (no timing is asserted)."""
    from numba_ln.rnn import bench

    result = bench.run(T=3, B=2, input_size=3, hidden_size=4, repeats=1, warmup=0)
    assert {"numba GRU", "numba LN-GRU"} <= set(result["median_s"])
    assert any(k.startswith("torch nn.GRU") for k in result["median_s"])
    assert len(result["ratios"]) == 3 and all(r > 0 for r in result["ratios"].values())
    md = bench.to_markdown(result)
    assert "| numba LN-GRU |" in md and "target >= 3" in md
