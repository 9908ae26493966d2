"""Bad input: a TypeError/ValueError that says what was found and how to fix it,
never a crash and never a modified input."""

import re

import numpy as np
import pytest

from numba_ln import layer_norm, layer_norm_backward

RNG = np.random.default_rng(20260503)


def _x(shape=(4, 8), dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def _stats(x, axis=-1):
    _, m, r = layer_norm(x, axis=axis, return_stats=True)
    return m, r


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------

BAD_DTYPES = [np.int8, np.int32, np.int64, np.uint16, np.bool_, np.float16,
              np.complex64, np.complex128, object, "U3", "datetime64[s]"]
if hasattr(np, "longdouble") and np.dtype(np.longdouble).itemsize > 8:
    BAD_DTYPES.append(np.longdouble)


def _array_of(dtype, shape=(3, 4)):
    if np.dtype(dtype).kind == "U":
        return np.full(shape, "abc", dtype=dtype)
    if np.dtype(dtype).kind == "M":
        return np.zeros(shape, dtype=dtype)
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_x_bad_dtype(dtype):
    x = _array_of(dtype)
    before = x.copy()
    found = np.dtype(dtype).name if np.dtype(dtype).kind not in "UM" else ""
    with pytest.raises(TypeError, match=r"x must be float32 or float64, found " + re.escape(found)) as err:
        layer_norm(x)
    assert "astype" in str(err.value) or "np.abs" in str(err.value)   # says how to convert
    np.testing.assert_array_equal(x, before)


def test_float16_hint_names_float32():
    with pytest.raises(TypeError, match=r"found float16; convert with x\.astype\(np\.float32\)"):
        layer_norm(np.ones((2, 3), np.float16))


def test_complex_hint():
    with pytest.raises(TypeError, match=r"found complex128; take the real part or magnitude"):
        layer_norm(np.ones((2, 3), complex))


def test_int_list_hint():
    """A list of Python ints becomes int64: a TypeError that says how to convert."""
    with pytest.raises(TypeError, match=r"found int64; convert with x\.astype\(np\.float32\)"):
        layer_norm([[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("bad", ["abc", [[1.0, 2.0], [3.0]], {"a": 1}, None])
def test_x_not_array_like(bad):
    with pytest.raises(TypeError, match=r"^x must be"):
        layer_norm(bad)


@pytest.mark.parametrize("dtype", [np.int64, np.complex64, np.float16, object])
@pytest.mark.parametrize("name", ["weight", "bias"])
def test_param_bad_dtype(name, dtype):
    p = _array_of(dtype, (8,))
    kw = {name: p}
    with pytest.raises(TypeError, match=rf"^{name} must be float32 or float64, found {np.dtype(dtype).name}"):
        layer_norm(_x(), **kw)


@pytest.mark.parametrize("name", ["dy", "x", "mean", "rstd", "weight"])
@pytest.mark.parametrize("dtype", [np.int32, np.complex128])
def test_backward_bad_dtype(name, dtype):
    x = _x()
    m, r = _stats(x)
    args = dict(dy=np.ones_like(x), x=x, mean=m, rstd=r, weight=np.ones(8))
    args[name] = args[name].astype(dtype)
    copies = {k: v.copy() for k, v in args.items()}
    with pytest.raises(TypeError, match=rf"^{name} must be float32 or float64, found {np.dtype(dtype).name}"):
        layer_norm_backward(args["dy"], args["x"], args["mean"], args["rstd"], args["weight"])
    for k, v in args.items():
        np.testing.assert_array_equal(v, copies[k])


# --------------------------------------------------------------------------
# shapes and axes
# --------------------------------------------------------------------------

def test_zero_d():
    for x in (np.float64(3.0), np.array(3.0), 3.0):
        with pytest.raises(ValueError, match=r"x is 0-d.*np\.atleast_1d"):
            layer_norm(x)
    with pytest.raises(ValueError, match=r"0-d"):
        layer_norm_backward(np.array(1.0), np.array(1.0), np.array(0.0), np.array(1.0))


@pytest.mark.parametrize("axis,found", [(2, "axis=2"), (-3, "axis=-3"), ((0, 5), "axis=5"), ((-1, 9), "axis=9")])
def test_axis_out_of_range(axis, found):
    with pytest.raises(ValueError, match=rf"{re.escape(found)} is out of range for an array with 2 dimensions "
                                         r"\(valid: -2 to 1\)"):
        layer_norm(_x(), axis=axis)
    x = _x()
    with pytest.raises(ValueError, match=r"out of range"):
        layer_norm_backward(x, x, np.zeros(4), np.ones(4), axis=axis)


@pytest.mark.parametrize("axis", [(1, 1), (-1, 2), (0, -2, 1), [2, 2]])
def test_duplicate_axis(axis):
    with pytest.raises(ValueError, match=r"names an axis twice"):
        layer_norm(_x((2, 3, 4)), axis=axis)


def test_empty_axis_tuple():
    with pytest.raises(ValueError, match=r"axis=\(\) names no axis"):
        layer_norm(_x(), axis=())


@pytest.mark.parametrize("axis,found", [(1.5, "float"), ("last", "str"), ((0, None), "NoneType"), (None, "NoneType")])
def test_axis_not_int(axis, found):
    with pytest.raises(TypeError, match=rf"axis must be an int or a tuple of ints, found {found}"):
        layer_norm(_x(), axis=axis)


def test_numpy_integer_axes_are_fine():
    x = _x((2, 3, 4))
    np.testing.assert_array_equal(layer_norm(x, axis=np.int64(-1)), layer_norm(x, axis=-1))
    np.testing.assert_array_equal(layer_norm(x, axis=(np.int32(1), 2)), layer_norm(x, axis=(1, 2)))


@pytest.mark.parametrize("name", ["weight", "bias"])
@pytest.mark.parametrize("shape,axis,pshape,expected", [
    ((4, 8), -1, (7,), "(8,)"),
    ((4, 8), -1, (1, 8), "(8,)"),
    ((4, 8), -1, (), "(8,)"),
    ((2, 4, 8), (1, 2), (32,), "(4, 8)"),      # flattened is not accepted: exactly the normalised shape
    ((2, 4, 8), (1, 2), (8, 4), "(4, 8)"),
    ((3, 4, 5), (0, 2), (5, 3), "(3, 5)"),
    ((3, 4, 5), 1, (5,), "(4,)"),
])
def test_param_wrong_shape(name, shape, axis, pshape, expected):
    p = np.ones(pshape)
    with pytest.raises(ValueError, match=rf"^{name} has shape {re.escape(str(pshape))} but the normalized "
                                         rf"shape is {re.escape(expected)}"):
        layer_norm(_x(shape), axis=axis, **{name: p})


def test_backward_weight_wrong_shape():
    x = _x()
    m, r = _stats(x)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\) but the normalized shape is \(8,\)"):
        layer_norm_backward(x, x, m, r, np.ones(4))


@pytest.mark.parametrize("dy_shape", [(4, 7), (8, 4), (1, 8), (4, 8, 1), (32,)])
def test_backward_dy_shape_mismatch(dy_shape):
    x = _x()
    m, r = _stats(x)
    with pytest.raises(ValueError, match=rf"^dy has shape {re.escape(str(dy_shape))} but x's shape is \(4, 8\)"):
        layer_norm_backward(np.ones(dy_shape), x, m, r)


@pytest.mark.parametrize("name", ["mean", "rstd"])
@pytest.mark.parametrize("sshape", [(3,), (4, 1), (8,), ()])
def test_backward_stats_shape_mismatch(name, sshape):
    x = _x()
    m, r = _stats(x)
    args = {"mean": m, "rstd": r}
    args[name] = np.ones(sshape)
    with pytest.raises(ValueError, match=rf"^{name} has shape {re.escape(str(sshape))} but the shape of x's axes "
                                         r"that are not normalised"):
        layer_norm_backward(x, x, args["mean"], args["rstd"])


def test_backward_axis_differs_from_forward():
    """Stats from axis=-1 fed to a backward over axis=0: caught by the stats' shape."""
    x = _x((4, 8))
    m, r = _stats(x, axis=-1)
    with pytest.raises(ValueError, match=r"mean has shape \(4,\) but .* is \(8,\)"):
        layer_norm_backward(x, x, m, r, axis=0)


# --------------------------------------------------------------------------
# eps
# --------------------------------------------------------------------------

@pytest.mark.parametrize("eps", [-1e-5, -0.0 - 1.0, float("nan"), float("inf"), float("-inf"), np.float32("nan")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match=rf"eps must be a finite number >= 0, found {re.escape(repr(eps))}"):
        layer_norm(_x(), eps=eps)


@pytest.mark.parametrize("eps", [None, [1e-5], object()])
def test_eps_not_a_number(eps):
    with pytest.raises(TypeError, match=rf"eps must be a number, found {type(eps).__name__}"):
        layer_norm(_x(), eps=eps)


def test_numpy_scalar_eps_is_fine():
    x = _x()
    np.testing.assert_array_equal(layer_norm(x, eps=np.float32(1e-3)), layer_norm(x, eps=float(np.float32(1e-3))))


# --------------------------------------------------------------------------
# out
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fn", ["forward", "backward"])
class TestOut:
    def _call(self, fn, x, out):
        if fn == "forward":
            return layer_norm(x, out=out)
        m, r = _stats(x)
        return layer_norm_backward(np.ones_like(x), x, m, r, out=out)

    @pytest.mark.parametrize("shape", [(4, 7), (8, 4), (32,), (4, 8, 1)])
    def test_wrong_shape(self, fn, shape):
        with pytest.raises(ValueError, match=rf"^out has shape {re.escape(str(shape))} but the result's shape "
                                             r"is \(4, 8\)"):
            self._call(fn, _x(), np.empty(shape))

    @pytest.mark.parametrize("xdt,odt", [(np.float64, np.float32), (np.float32, np.float64),
                                         (np.float64, np.int64), (np.float32, np.float16)])
    def test_wrong_dtype(self, fn, xdt, odt):
        out = np.zeros((4, 8), odt)
        with pytest.raises(TypeError, match=rf"^out has dtype {np.dtype(odt).name} but the result is "
                                            rf"{np.dtype(xdt).name}; pass out=np\.empty"):
            self._call(fn, _x(dtype=xdt), out)
        assert np.all(out == 0)

    def test_read_only(self, fn):
        out = np.zeros((4, 8))
        out.flags.writeable = False
        with pytest.raises(ValueError, match=r"^out is read-only; pass a writeable array"):
            self._call(fn, _x(), out)

    def test_read_only_x_as_out(self, fn):
        x = _x()
        x.flags.writeable = False
        before = x.copy()
        with pytest.raises(ValueError, match=r"read-only"):
            self._call(fn, x, x)
        np.testing.assert_array_equal(x, before)

    @pytest.mark.parametrize("out", [[[0.0] * 8] * 4, (1, 2), 3.0, "out"])
    def test_not_an_ndarray(self, fn, out):
        with pytest.raises(TypeError, match=rf"^out must be a NumPy array for host input, found {type(out).__name__}"):
            self._call(fn, _x(), out)


def test_failed_call_leaves_out_and_inputs_untouched():
    x = _x()
    w = np.ones(8)
    out = np.full((4, 8), 7.0)
    xc = x.copy()
    with pytest.raises(ValueError):
        layer_norm(x, w, np.ones(5), out=out)     # bad bias: checked before anything is written
    np.testing.assert_array_equal(out, 7.0)
    np.testing.assert_array_equal(x, xc)
    with pytest.raises(ValueError):
        layer_norm(x, w, out=x, eps=-1.0)          # in place requested, but eps is bad
    np.testing.assert_array_equal(x, xc)


# --------------------------------------------------------------------------
# stream on the CPU
# --------------------------------------------------------------------------

def test_stream_with_host_arrays():
    x = _x()
    with pytest.raises(ValueError, match=r"stream= applies to GPU arrays only"):
        layer_norm(x, stream=object())
    m, r = _stats(x)
    with pytest.raises(ValueError, match=r"stream= applies to GPU arrays only"):
        layer_norm_backward(x, x, m, r, stream=object())
