"""logsumexp of complex input, as scipy.special.logsumexp."""
import numpy as np
import pytest

import lossmle as lm

sps = pytest.importorskip("scipy.special")
INF = np.inf


def same(got, want, rtol=1e-14):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
@pytest.mark.parametrize("kw", [{}, {"axis": 1}, {"axis": 0, "keepdims": True},
                                {"axis": (0, 1)}, {"return_sign": True, "axis": 1},
                                {"b": "complex"}, {"b": "real", "return_sign": True},
                                {"b": "complex", "axis": 0, "return_sign": True}])
def test_as_scipy(dtype, kw):
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(3, 4)) * 3 + 1j * rng.normal(size=(3, 4)) * 5).astype(dtype)
    kw = dict(kw)
    if kw.get("b") == "complex":
        kw["b"] = (rng.normal(size=(3, 4)) + 1j * rng.normal(size=(3, 4))).astype(dtype)
    elif kw.get("b") == "real":
        kw["b"] = rng.normal(size=(3, 4))
    got = lm.logsumexp(a, **kw)
    want = sps.logsumexp(a, **kw)
    rtol = 1e-13 if dtype == np.complex128 and "b" not in kw else 2e-5
    if kw.get("return_sign"):
        same(got[0], want[0], rtol)
        same(got[1], want[1], rtol)
    else:
        same(got, want, rtol)


@pytest.mark.parametrize("a", [
    [1 + 1j, INF + 0j], [1 + 1j, INF + 1j], [-INF + 0j, -INF + 0j], [INF + 2j, INF - 2j],
    [complex(np.nan, 0), 1j], [complex(INF, np.nan), 0j], [-INF + 1j, 0.5 + 3j],
    [1e308 + 0j, 1e308 + 3.14j],
], ids=range(8))
@pytest.mark.parametrize("return_sign", [False, True])
def test_infinite_elements_as_scipy_gh22601(a, return_sign):
    a = np.array(a)
    with np.errstate(all="ignore"):
        want = sps.logsumexp(a, return_sign=return_sign)
    got = lm.logsumexp(a, return_sign=return_sign)
    for g, w in zip(got, want) if return_sign else [(got, want)]:
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-14, atol=0)
        assert np.asarray(g).dtype == np.asarray(w).dtype


def test_phase_wrapped_and_empty():
    a = np.array([0.0 + 3.0j, 0.0 + 3.1j])
    res = lm.logsumexp(a)
    assert -np.pi < res.imag <= np.pi
    same(res, sps.logsumexp(a))
    e = np.zeros((0, 3), complex)
    with np.errstate(invalid="ignore"):   # scipy's own sign of -inf warns
        want = sps.logsumexp(e, axis=0)
    same(lm.logsumexp(e, axis=0), want)


def test_out_and_input_untouched():
    a = np.array([[1 + 1j, 2 - 1j], [0.5j, -1 + 0j]])
    a0 = a.copy()
    out = np.empty(2, complex)
    assert lm.logsumexp(a, axis=1, out=out) is out
    same(out, sps.logsumexp(a0, axis=1))
    np.testing.assert_array_equal(a, a0)
    with pytest.raises(TypeError, match="out"):
        lm.logsumexp(a, axis=1, out=np.empty(2))
