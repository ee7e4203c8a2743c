"""Hypothesis fuzzing of every public function: arbitrary shapes (0-d, empty, up
to 4-D), strides (transposed, reversed, strided, 0-stride broadcast, Fortran),
dtypes (float64/32/16, big-endian, ints, bool) and values (+-inf, nan, huge).

Each call must either raise TypeError/ValueError/IndexError or return the
oracle's answer (scipy for the drop-in functions, torch in float64 for the
losses, NumPy closed forms for the training helpers) -- and never mutate an
input or let a warning escape (pytest turns warnings into errors).
"""

import os

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as sst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossmle as lm
from conftest import quiet
from oracles import torch_loss_rows as torch_loss

# CI (CI=true) replays a fixed, seeded set of examples, so a submission's
# verdict does not depend on the draw; elsewhere every run explores anew.
SETTINGS = settings(max_examples=80, deadline=None, derandomize=bool(os.environ.get("CI")),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
OK = (TypeError, ValueError, IndexError)
INF, NAN = np.inf, np.nan
VALUES = st.one_of(st.floats(-60, 60, width=32),
                   st.sampled_from([0.0, -0.0, INF, -INF, NAN, 1e308, -1e308, 3e38, 1e-310]),
                   st.floats(allow_nan=True, allow_infinity=True))
PROBS = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 0.5, 1e-300]),
                  st.sampled_from([-0.5, NAN, INF]))
DTYPES = [np.float64, np.float32, np.float16, ">f8", "<f4", np.int64, np.int8, np.uint8, np.bool_]
LAYOUTS = ["C", "F", "T", "reversed", "strided", "broadcast", "readonly"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def _layout(a, layout):
    if layout == "F" and a.ndim >= 2:  # (asfortranarray makes a 0-d array 1-d)
        return np.asfortranarray(a)
    if layout == "T" and a.ndim >= 2:
        return np.ascontiguousarray(a.T).T
    if layout == "reversed" and a.ndim >= 1:
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "strided" and a.ndim >= 1:
        big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::2] = a
        return big[::2]
    if layout == "broadcast" and a.ndim >= 1 and a.shape[0] >= 1:
        return np.broadcast_to(a[:1], a.shape)
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
    return a


@st.composite
def arrays(draw, shape=None, values=VALUES, dtypes=DTYPES):
    if shape is None:
        shape = draw(SHAPES)
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    base = draw(hnp.arrays(np.float64, shape, elements=values))
    if dtype.kind in "iub":
        base = quiet(lambda: np.nan_to_num(np.round(np.clip(base, -100, 100))))
    arr = np.asarray(quiet(np.asarray(base).astype, dtype))
    return _layout(arr, draw(st.sampled_from(LAYOUTS)))


def axis_for(draw, ndim, allow_none=True, allow_tuple=True):
    choices = [st.integers(-max(ndim, 1), max(ndim, 1) - 1)]
    if allow_none:
        choices.append(st.none())
    if allow_tuple and ndim >= 1:
        choices.append(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim)
                       .map(tuple))
    return draw(st.one_of(*choices))


def f64(a):
    return quiet(np.asarray(a).astype, np.float64)


def res_dtype(*arrays):
    if all(np.asarray(a).dtype.kind == "f" and np.asarray(a).dtype.itemsize <= 4 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def scale_of(*arrays):
    m = 1.0
    for a in arrays:
        a = f64(a)
        fin = a[np.isfinite(a)]
        if fin.size:
            m = max(m, float(np.max(np.abs(fin))))
    return m


def agree(got, expected, dtype, scale=1.0):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype == dtype, (got.dtype, dtype)
    exp = quiet(expected.astype, dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exp))
    eps = float(np.finfo(dtype).eps)
    # scale may be ~1e308: keep atol finite (numpy rejects an infinite one)
    atol = min(64 * eps * scale, float(np.finfo(dtype).max))
    with np.errstate(over="ignore"):   # atol + rtol * |exp| may overflow near 1e308
        np.testing.assert_allclose(got, exp, rtol=64 * eps, atol=atol, equal_nan=True)


def call(fn, *args, **kwargs):
    """fn(*args, **kwargs), None if it raised an allowed exception; inputs must be untouched."""
    arrays = [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]
    before = [a.tobytes() for a in arrays]
    try:
        out = fn(*args, **kwargs)
    except OK as exc:
        assert str(exc)
        out = None
    assert [a.tobytes() for a in arrays] == before
    return out


# ---------------------------------------------------------------------------
# drop-in functions vs scipy
# ---------------------------------------------------------------------------
class TestDropIn:
    @SETTINGS
    @given(st.data())
    def test_logsumexp(self, data):
        a = data.draw(arrays())
        axis = axis_for(data.draw, a.ndim)
        keepdims = data.draw(st.booleans())
        b = data.draw(st.none() | arrays(shape=a.shape, values=st.floats(0, 4)))
        got = call(lm.logsumexp, a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
        if got is None:
            return
        if axis == () and a.size == 0:
            return  # scipy returns [-inf] here; lossmle reduces nothing (an empty array)
        try:
            expected = quiet(sps.logsumexp, f64(a), axis=axis, b=None if b is None else f64(b),
                             keepdims=keepdims, return_sign=True)
        except (ValueError, IndexError):
            return  # scipy fails on some empty tuple-axis cases; covered by the policy tests
        dtype = res_dtype(a) if b is None else res_dtype(a, b)
        agree(got[0], expected[0], dtype, scale_of(a) + 2 + scale_of(np.log(f64(b) + 1e-300))
              if b is not None else scale_of(a) + 2)
        agree(got[1], expected[1], dtype)

    @pytest.mark.parametrize("name", ["softmax", "log_softmax"])
    @SETTINGS
    @given(data=st.data())
    def test_softmax_family(self, name, data):
        x = data.draw(arrays())
        axis = axis_for(data.draw, x.ndim)
        got = call(getattr(lm, name), x, axis=axis)
        try:
            expected = quiet(getattr(sps, name), f64(x), axis=axis)
        except ValueError:
            # scipy refuses an empty reduction axis; lossmle too, unless the result is empty
            # anyway (scipy's (0, 0) with axis=0 fails inside np.max, its (2, 0) does not)
            assert got is None or (got.size == 0 and got.shape == x.shape)
            return
        assert got is not None
        agree(got, expected, res_dtype(x), 1.0 if name == "softmax" else scale_of(x) + 2)

    @SETTINGS
    @given(st.data())
    def test_entropy(self, data):
        pk = data.draw(arrays(values=PROBS))
        qk = data.draw(st.none() | arrays(shape=pk.shape, values=PROBS))
        axis = data.draw(st.integers(-max(pk.ndim, 1), max(pk.ndim, 1) - 1) | st.none())
        base = data.draw(st.sampled_from([None, 2, 10.0]))
        got = call(lm.entropy, pk, qk, base=base, axis=axis)
        if got is None:
            return
        expected = quiet(sst.entropy, f64(pk), None if qk is None else f64(qk), base=base,
                         axis=axis)
        agree(got, expected, res_dtype(pk) if qk is None else res_dtype(pk, qk),
              100.0 * max(pk.size, 1))

    @SETTINGS
    @given(st.data())
    def test_kl_divergence(self, data):
        p = data.draw(arrays(values=PROBS))
        q = data.draw(arrays(shape=p.shape, values=PROBS))
        axis = axis_for(data.draw, p.ndim)
        validate = data.draw(st.booleans())
        got = call(lm.kl_divergence, p, q, axis=axis, validate=validate)
        pf, qf = f64(p), f64(q)
        invalid = bool(np.any((pf < 0) | np.isnan(pf) | (qf < 0) | np.isnan(qf)))
        if got is None:
            assert validate and invalid or p.ndim == 0 and axis not in (None, 0, -1, ())
            return
        assert not (validate and invalid and p.size)
        terms = quiet(sps.rel_entr, pf, qf)
        expected = quiet(np.sum, terms, axis=axis)
        if terms.ndim == 0:
            expected = terms
        agree(got, expected, res_dtype(p, q), scale_of(terms) * max(p.size, 1))


# ---------------------------------------------------------------------------
# losses vs torch (float64)
# ---------------------------------------------------------------------------
@st.composite
def loss_problem(draw, prob_target_ok=True):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
    x = draw(arrays(shape=shape, dtypes=[np.float64, np.float32, np.float16, ">f8", np.int64]))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    ax = axis % x.ndim
    c = shape[ax]
    tshape = shape[:ax] + shape[ax + 1:]
    if prob_target_ok and draw(st.integers(0, 3)) == 0:
        target = draw(arrays(shape=shape, values=st.floats(0, 1), dtypes=[np.float64,
                                                                          np.float32]))
    else:
        labels = st.integers(0, max(c - 1, 0)) | st.sampled_from([-100, -1, c, 2**40])
        raw = draw(hnp.arrays(np.int64, tshape, elements=labels))
        tdt = draw(st.sampled_from([np.int64, np.int32, np.int16, np.uint8, np.int8]))
        target = _layout(quiet(raw.astype, tdt).astype(np.int64).astype(tdt)
                         if tdt != np.uint8 else np.where(raw < 0, 255, raw).astype(np.uint8),
                         draw(st.sampled_from(LAYOUTS)))
    kw = dict(axis=axis, reduction=draw(st.sampled_from(["none", "mean", "sum"])),
              ignore_index=draw(st.sampled_from([-100, 0, 1])))
    if draw(st.booleans()):
        kw["weight"] = draw(hnp.arrays(np.float64, (c,), elements=st.floats(0, 3)))
    return x, target, kw


class TestLosses:
    @pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_with_grad", "nll_loss"])
    @settings(SETTINGS, suppress_health_check=list(SETTINGS.suppress_health_check)
              + [HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def test_against_torch(self, torch, name, data):
        x, target, kw = data.draw(loss_problem(prob_target_ok=name != "nll_loss"))
        if name != "nll_loss":
            kw["label_smoothing"] = data.draw(st.sampled_from([0.0, 0.25]))
        got = call(getattr(lm, name), x, target, **kw)
        t = np.asarray(target)
        c = x.shape[kw["axis"]]
        bad_label = t.dtype.kind in "iu" and np.any(
            (t.astype(np.int64) != kw["ignore_index"]) & ((t.astype(np.int64) < 0)
                                                          | (t.astype(np.int64) >= c)))
        if got is None:
            assert bad_label or c == 0
            return
        assert not bad_label
        loss = got[0] if name == "cross_entropy_with_grad" else got
        e_loss, e_grad = quiet(torch_loss, torch, "nll_loss" if name == "nll_loss" else "ce",
                               x, target, kw)
        dtype = res_dtype(x)
        rows = max(1, x.size // max(c, 1))
        wmax = float(np.max(kw["weight"])) if kw.get("weight") is not None and c else 1.0
        scale = (scale_of(x) + float(np.log(max(c, 2)))) * max(wmax, 1.0) * (
            rows if kw["reduction"] != "none" else 1)
        if t.dtype.kind == "f" and kw["reduction"] == "mean" and kw.get("weight") is not None:
            return  # torch's weighted mean of probability targets: covered by the parity grid
        if t.dtype.kind in "iu" and kw["reduction"] == "mean" and c:
            labels = t.astype(np.int64).reshape(-1)
            kept = labels[labels != kw["ignore_index"]]
            w = np.ones(c) if kw.get("weight") is None else np.asarray(kw["weight"], float)
            if np.sum(w[kept]) == 0:
                # every target ignored or weighted 0: the mean is 0 / 0 = nan,
                # as torch's (documented)
                assert np.isnan(loss) and np.isnan(e_loss)
                return
            if np.all(np.isfinite(x)) and not np.all(np.isfinite(e_loss)):
                # torch's weighted mean can overflow on the way to a finite
                # value: logits [0, -4.2e15], weights [2.4e-293, 1], smoothing
                # 0.25 gave inf through its 1-D path (2.247e307 through the 2-D
                # one, and lossmle).  Its sum over the same denominator is
                # the oracle then.
                e_sum, e_sum_grad = quiet(torch_loss, torch,
                                          "nll_loss" if name == "nll_loss" else "ce",
                                          x, target, dict(kw, reduction="sum"))
                with np.errstate(over="ignore"):
                    e_loss = np.asarray(np.float64(e_sum) / np.sum(w[kept]))
                    e_grad = e_sum_grad / np.sum(w[kept])
        if (np.all(np.isfinite(x)) and np.all(np.isfinite(t)) and scale_of(x) > 1e300
                and not np.all(np.isfinite(e_loss))
                and not (name == "nll_loss" and kw["reduction"] == "none")):
            # near the float maximum torch's own sums (e.g. -sum(log_softmax) for
            # label smoothing) overflow to inf, so it is no oracle there; lossmle
            # keeps every term relative to the row max. Still: nan only where
            # torch's is (a target 0 on a log-prob that overflowed to -inf, as
            # logits [1e308, -1e308]: 0 * -inf) and, for cross-entropy, >= 0.
            # (nll_loss 'none' is one product -w x per entry, exact in torch
            # too, so it is compared below; its value may be negative.)
            loss_a = np.asarray(loss)
            assert not np.any(np.isnan(loss_a) & ~np.isnan(e_loss))
            if name != "nll_loss":
                assert np.all(loss_a[~np.isnan(loss_a)] >= 0)
            return
        agree(loss, e_loss, dtype, scale)
        if name == "cross_entropy_with_grad":
            grad = got[1]
            assert grad.shape == x.shape and grad.dtype == dtype
            # ignored rows: exactly 0 (torch: nan when their logits are not finite)
            finite_rows = np.isfinite(e_grad)
            eps = float(np.finfo(dtype).eps)
            # rounded to the result dtype, as the loss in agree(): torch's float64
            # gradient 3.4e299 (weights [1.8e-301, 1], mean) is inf in float32
            e_grad = quiet(e_grad.astype, dtype)
            np.testing.assert_allclose(grad[finite_rows], e_grad[finite_rows],
                                       rtol=64 * eps, atol=64 * eps * max(wmax, 1.0))


# ---------------------------------------------------------------------------
# training helpers (owned elsewhere): no crash, allowed exceptions, closed forms
# ---------------------------------------------------------------------------
FINITE = st.floats(-30, 30)


class TestTrainingHelpers:
    @pytest.mark.parametrize("name", ["logsumexp", "softmax", "log_softmax"])
    @SETTINGS
    @given(data=st.data())
    def test_masked_vs_scipy_on_filled(self, name, data):
        x = data.draw(arrays(values=FINITE, dtypes=[np.float64, np.float32]))
        where = data.draw(hnp.arrays(np.bool_, x.shape))
        axis = axis_for(data.draw, x.ndim)
        got = call(getattr(lm, name), x, axis=axis, where=where)
        if got is None or (axis == () and x.size == 0):
            return  # (scipy returns [-inf] for an empty axis=() reduction)
        filled = np.where(where, f64(x), -INF)
        base = name
        try:
            expected = quiet(getattr(sps, base), filled, axis=axis)
        except (ValueError, IndexError):
            return
        if base != "logsumexp":
            # masked-out entries are 0 / -inf; fully masked rows are the function's choice
            expected = np.where(where, expected, 0.0 if base == "softmax" else -INF)
            keep = np.broadcast_to(np.any(where, axis=axis, keepdims=True), x.shape) \
                if x.ndim else where
            got, expected = np.asarray(got)[keep], expected[keep]
        agree(got, expected, res_dtype(x), scale_of(x) + 5)

    @pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
    @SETTINGS
    @given(data=st.data())
    def test_backward_closed_form(self, name, data):
        shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
        g = data.draw(arrays(shape=shape, values=FINITE, dtypes=[np.float64, np.float32]))
        x = data.draw(arrays(shape=shape, values=FINITE, dtypes=[np.float64, np.float32]))
        axis = data.draw(st.integers(-len(shape), len(shape) - 1))
        if shape[axis] == 0:
            call(getattr(lm, name), g, x, axis=axis)  # no crash
            return
        y = sps.softmax(f64(x), axis=axis) if name == "softmax_backward" \
            else sps.log_softmax(f64(x), axis=axis)
        y = y.astype(x.dtype)
        got = call(getattr(lm, name), g, y, axis=axis)
        if got is None:
            return
        gf, yf = f64(g), f64(y)
        if name == "softmax_backward":
            expected = yf * (gf - np.sum(gf * yf, axis=axis, keepdims=True))
        else:
            expected = gf - np.exp(yf) * np.sum(gf, axis=axis, keepdims=True)
        agree(got, expected, res_dtype(g, y), 30.0 * max(1, shape[axis]))

    @SETTINGS
    @given(st.data())
    def test_entropy_from_logits(self, data):
        x = data.draw(arrays(values=FINITE, dtypes=[np.float64, np.float32]))
        if x.ndim == 0:
            return
        axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
        got = call(lm.entropy_from_logits, x, axis=axis)
        if got is None:
            assert x.shape[axis] == 0
            return
        expected = quiet(sst.entropy, sps.softmax(f64(x), axis=axis), axis=axis)
        agree(got, expected, res_dtype(x), 10.0 * max(1, x.shape[axis]))

    @SETTINGS
    @given(st.data())
    def test_binary_cross_entropy_with_logits(self, data):
        x = data.draw(arrays(values=FINITE, dtypes=[np.float64, np.float32]))
        t = data.draw(arrays(shape=x.shape, values=st.floats(0, 1),
                             dtypes=[np.float64, np.float32]))
        got = call(lm.binary_cross_entropy_with_logits, x, t, reduction="none")
        if got is None:
            return
        xf, tf = f64(x), f64(t)
        expected = np.maximum(xf, 0) - xf * tf + np.log1p(np.exp(-np.abs(xf)))
        agree(got, expected, res_dtype(x, t) if x.dtype == t.dtype else np.asarray(got).dtype,
              scale_of(x) + 2)

    @pytest.mark.parametrize("name", ["kl_divergence_from_logits", "js_divergence_from_logits",
                                      "cross_entropy", "nll_loss",
                                      "nll_loss_with_grad", "evaluate_logits",
                                      "cross_entropy_with_grad",
                                      "kl_divergence_from_logits_with_grad",
                                      "binary_cross_entropy_with_logits_with_grad"])
    @SETTINGS
    @given(data=st.data())
    def test_no_crash(self, name, data):
        x = data.draw(arrays())
        if name.startswith(("kl", "js", "binary")):
            second = data.draw(arrays(shape=x.shape if data.draw(st.booleans()) else None))
        else:
            ax = -1 if x.ndim else 0
            tshape = x.shape[:-1] if x.ndim else ()
            second = data.draw(hnp.arrays(np.int64, tshape, elements=st.integers(-1, 5)))
            del ax
        call(getattr(lm, name), x, second)
