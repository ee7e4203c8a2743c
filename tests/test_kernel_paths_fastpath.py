"""The small-input fast paths (lossmle/_kernels/fastpath.pyx, issue #4 "Tiny 8x10").

For a plain small array the public functions answer from compiled code
without their general Python path.  What must hold, checked here:

* the fast path really is taken for the plain cases (``_fastpath.<f>`` returns
  a result, not None) and the public result is BIT-IDENTICAL to the general
  path's (the same public call with the fast paths switched off), with the
  same type (numpy scalar or ndarray), dtype and shape - for float64 and
  float32, 1-D and 2-D, short rows (across-rows SIMD kernel), long rows,
  several blocks of rows, and rows holding inf, -inf, nan and huge values;
* results agree with independent oracles (scipy.special, scipy.stats, torch
  when installed, NumPy written here);
* every case the fast path does not take (other axes, dtypes, layouts,
  options, bad input) comes out of the public function exactly as from the
  general path, errors included (same type, same message);
* inputs are never written.
"""
import contextlib
import os
import threading

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as sst
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossmle as lm
from lossmle._cli import config as _config
from lossmle._kernels import fastpath as _fastpath
from lossmle._validation import PARALLEL_MIN_ELEMENTS

from conftest import quiet, tol
from oracles import np_cross_entropy_rows

DTYPES = [np.float64, np.float32]
DT_IDS = ["f64", "f32"]
FAST_NAMES = ("logsumexp", "softmax", "log_softmax", "cross_entropy", "nll_loss",
              "cross_entropy_with_grad", "kl_divergence", "entropy")


@contextlib.contextmanager
def general_path():
    """Switch every fast path off: the public functions run their general path."""
    saved = {name: getattr(_fastpath, name) for name in FAST_NAMES}
    try:
        for name in FAST_NAMES:
            setattr(_fastpath, name, lambda *args: None)
        yield
    finally:
        for name, fn in saved.items():
            setattr(_fastpath, name, fn)


def assert_same(fast, ref):
    """Bit for bit: same type, dtype, shape and bytes (nan payloads included)."""
    assert type(fast) is type(ref), (type(fast), type(ref))
    a, b = np.asarray(fast), np.asarray(ref)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), (a, b)


def call_both(fn, *args, **kwargs):
    """(public result, general-path result) of the same call."""
    fast = fn(*args, **kwargs)
    with general_path():
        ref = fn(*args, **kwargs)
    return fast, ref


def errors_alike(fn, *args, **kwargs):
    """The call raises the same exception (type and message) on both paths."""
    with pytest.raises(Exception) as fast:
        fn(*args, **kwargs)
    with general_path(), pytest.raises(Exception) as ref:
        fn(*args, **kwargs)
    assert type(fast.value) is type(ref.value)
    assert str(fast.value) == str(ref.value)
    return fast.value


class _Sub(np.ndarray):
    """An ndarray subclass: not the fast path's exact np.ndarray."""


def huge(dtype):
    return 1e300 if dtype == np.float64 else 3e38


# rows x columns: 1-D (n,), a single value, the benchmark's 8x10, a column,
# long rows, short rows (across-rows kernel, n <= 8) in one and in several blocks
SHAPES = [(10,), (1,), (3,), (1, 1), (8, 10), (3, 1), (5, 4096), (2, 3), (40, 7), (600, 4),
          (1, 8), (7, 9), (3, 2049)]
# logsumexp / softmax / log_softmax also take N-D arrays over the last axis
SHAPES += [(2, 3, 10), (3, 70, 4), (2, 1, 2, 9), (1, 3, 2049), (1, 1, 1), (4, 1, 2)]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def logits(rng, shape, dtype, special):
    """Normal logits scaled x4, with special values planted in some rows."""
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    flat = x.reshape(-1, shape[-1])
    if special == "plain":
        return x
    rows = flat.shape[0]
    n = flat.shape[1]
    h = huge(dtype)
    plant = {
        "inf": lambda r: flat[r].__setitem__(n // 2, np.inf),
        "ninf_row": lambda r: flat[r].__setitem__(slice(None), -np.inf),
        "ninf_some": lambda r: flat[r].__setitem__(slice(0, max(1, n // 2)), -np.inf),
        "nan": lambda r: flat[r].__setitem__(n - 1, np.nan),
        "huge": lambda r: flat[r].__setitem__(slice(None), flat[r] * 0 + h),
        "mixed_huge": lambda r: flat[r].__setitem__(0, -h),
    }[special]
    for r in {0, rows // 2, rows - 1}:
        plant(r)
    return x


SPECIALS = ["plain", "inf", "ninf_row", "ninf_some", "nan", "huge", "mixed_huge"]


# ---------------------------------------------------------------------------
# logsumexp, softmax, log_softmax
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_special_functions_bit_identical(shape, dtype, special, rng):
    x = logits(rng, shape, dtype, special)
    before = x.copy()
    for name in ("logsumexp", "softmax", "log_softmax"):
        public = getattr(lm, name)
        for axis in [None, *range(-x.ndim, x.ndim)]:
            for keepdims in ((False, True) if name == "logsumexp" else (None,)):
                kw = {} if keepdims is None else dict(keepdims=keepdims)
                fast, ref = call_both(public, x, axis=axis, **kw)
                assert_same(fast, ref)
                # the fast path itself answered (not a fall-through)
                if name == "logsumexp":
                    direct = _fastpath.logsumexp(x, axis, None, keepdims, False, None, None,
                                                 None)
                else:
                    direct = getattr(_fastpath, name)(x, axis, None, None, None)
                assert direct is not None
                assert_same(direct, ref)
    np.testing.assert_array_equal(x, before)     # never written


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(10,), (1, 1), (8, 10), (3, 1), (5, 4096), (600, 4)],
                         ids=lambda s: "x".join(map(str, s)))
def test_special_functions_match_scipy(shape, dtype, rng):
    x = logits(rng, shape, dtype, "plain")
    x64 = x.astype(np.float64)
    t = tol(dtype, scale=np.abs(x64).max())
    lse = lm.logsumexp(x, axis=-1)
    assert np.asarray(lse).dtype == dtype
    np.testing.assert_allclose(lse, sps.logsumexp(x64, axis=-1), **t)
    np.testing.assert_allclose(lm.softmax(x, axis=-1), sps.softmax(x64, axis=-1), **t)
    np.testing.assert_allclose(lm.log_softmax(x, axis=-1), sps.log_softmax(x64, axis=-1), **t)
    np.testing.assert_allclose(lm.softmax(x), sps.softmax(x64), **t)   # axis=None: all


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(2, 3, 10), (3, 70, 4), (2, 1, 2, 9), (7,), (8, 10)],
                         ids=lambda s: "x".join(map(str, s)))
def test_nd_and_keepdims_match_scipy(shape, dtype, rng):
    """N-D arrays over any one axis (or all) and logsumexp's keepdims (fast
    path), as scipy."""
    x = logits(rng, shape, dtype, "plain")
    x64 = x.astype(np.float64)
    t = tol(dtype, scale=np.abs(x64).max())
    for axis in [None, *range(-x.ndim, x.ndim)]:
        assert _fastpath.softmax(x, axis, None, None, None) is not None
        for keepdims in (False, True):
            got = lm.logsumexp(x, axis=axis, keepdims=keepdims)
            want = sps.logsumexp(x64, axis=axis, keepdims=keepdims)
            assert np.shape(got) == np.shape(want)
            np.testing.assert_allclose(got, want, **t)
        np.testing.assert_allclose(lm.softmax(x, axis=axis), sps.softmax(x64, axis=axis), **t)
        np.testing.assert_allclose(lm.log_softmax(x, axis=axis),
                                   sps.log_softmax(x64, axis=axis), **t)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_special_values_match_scipy(dtype):
    h = huge(dtype)
    x = np.array([[0.0, np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 1.0],
                  [h, h, h], [-np.inf, 0.0, 2.0]], dtype=dtype)
    x64 = x.astype(np.float64)
    got = lm.logsumexp(x, axis=-1)
    assert _fastpath.logsumexp(x, -1, None, False, False, None, None, None) is not None
    want = quiet(sps.logsumexp, x64, axis=-1)
    np.testing.assert_allclose(got, want, rtol=tol(dtype)["rtol"])
    np.testing.assert_allclose(lm.softmax(x, axis=-1), quiet(sps.softmax, x64, axis=-1),
                               rtol=tol(dtype)["rtol"], atol=0)
    np.testing.assert_allclose(lm.log_softmax(x, axis=-1)[[1, 2, 4]],
                               quiet(sps.log_softmax, x64, axis=-1)[[1, 2, 4]],
                               rtol=tol(dtype)["rtol"], atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_scalar_results_are_numpy_scalars(dtype):
    x = np.array([1.0, 2.0, 3.0], dtype=dtype)
    for value in (lm.logsumexp(x), lm.logsumexp(x, axis=-1), lm.logsumexp(x[None], axis=None),
                  lm.kl_divergence(x / 6, x[::-1] / 6), lm.entropy(x),
                  lm.cross_entropy(x[None], np.array([2]))):
        assert type(value) is np.dtype(dtype).type
    want = np.log(np.exp(1.0) + np.exp(2.0) + np.exp(3.0))
    np.testing.assert_allclose(float(lm.logsumexp(x)), want, rtol=tol(dtype)["rtol"])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_special_functions_fall_through(dtype, rng):
    """Everything the fast path leaves alone gives the general path's result."""
    x = logits(rng, (6, 5), dtype, "plain")
    cases = [
        (lm.logsumexp, (x,), dict(axis=0)),
        (lm.logsumexp, (x,), dict(axis=-1, keepdims=True)),
        (lm.logsumexp, (x,), dict(axis=-1, return_sign=True)),
        (lm.logsumexp, (x,), dict(axis=-1, b=np.full(5, 0.5, dtype))),
        (lm.logsumexp, (x,), dict(axis=(0, 1))),
        (lm.logsumexp, (x,), dict(axis=np.int64(1))),
        (lm.logsumexp, (x,), dict(axis=-1, n_threads=np.int64(2))),
        (lm.logsumexp, (x,), dict(axis=-1, where=x > 0)),
        (lm.logsumexp, (np.asfortranarray(x),), dict(axis=-1)),
        (lm.logsumexp, (x[:, ::2],), dict(axis=-1)),
        (lm.logsumexp, (x.tolist(),), dict(axis=-1)),
        (lm.logsumexp, (x.astype(x.dtype.newbyteorder()),), dict(axis=-1)),
        (lm.logsumexp, (x.reshape(2, 3, 5),), dict(axis=1)),
        (lm.logsumexp, (x.reshape(2, 3, 5)[:, ::2],), dict(axis=-1)),
        (lm.logsumexp, (x.reshape(2, 3, 5).transpose(1, 0, 2),), dict(axis=-1)),
        (lm.logsumexp, (x,), dict(axis=-1, keepdims=np.True_)),
        (lm.logsumexp, (x,), dict(axis=-1, keepdims=1)),
        (lm.logsumexp, (np.float64(3.0),), {}),
        (lm.logsumexp, (np.zeros((0, 3), dtype),), dict(axis=-1)),
        (lm.logsumexp, (np.zeros((3, 0), dtype),), dict(axis=-1)),
        (lm.softmax, (x,), dict(axis=(0,))),
        (lm.softmax, (x.astype(np.float16),), dict(axis=-1)),
        (lm.softmax, (x.astype(np.int64),), dict(axis=-1)),
        (lm.softmax, (x.reshape(2, 3, 5),), dict(axis=0)),
        (lm.softmax, (x.reshape(3, 2, 5)[::-1],), dict(axis=-1)),
        (lm.softmax, (np.zeros((0, 3), dtype),), dict(axis=-1)),
        (lm.log_softmax, (x,), dict(axis=-1, where=x > 0)),
        (lm.log_softmax, (x[::-1],), dict(axis=-1)),
        (lm.log_softmax, (x.view(_Sub),), dict(axis=-1)),
    ]
    for fn, args, kwargs in cases:
        fast, ref = call_both(fn, *args, **kwargs)
        if isinstance(ref, tuple):
            for f, r in zip(fast, ref):
                assert_same(f, r)
        else:
            assert_same(fast, ref)
    assert _fastpath.logsumexp(x, (0, 1), None, False, False, None, None, None) is None
    assert _fastpath.logsumexp(x, np.int64(1), None, False, False, None, None, None) is None
    assert _fastpath.logsumexp(x, 2, None, False, False, None, None, None) is None
    for fn in (lm.logsumexp, lm.softmax, lm.log_softmax):   # bad axes: the same errors
        errors_alike(fn, x, axis=-3)
        errors_alike(fn, x, axis=2)
    assert _fastpath.logsumexp(x, -1, None, np.True_, False, None, None, None) is None
    assert _fastpath.softmax(x.reshape(2, 3, 5)[:, ::2], -1, None, None, None) is None
    assert _fastpath.softmax(np.asfortranarray(x), -1, None, None, None) is None


def test_out_and_in_place_fall_through(rng):
    x = logits(rng, (4, 6), np.float64, "plain")
    out = np.empty(4)
    assert lm.logsumexp(x, axis=-1, out=out) is out
    np.testing.assert_allclose(out, sps.logsumexp(x, axis=-1), **tol(np.float64))
    y = x.copy()
    assert lm.softmax(y, axis=-1, out=y) is y
    np.testing.assert_allclose(y, sps.softmax(x, axis=-1), **tol(np.float64))


@pytest.mark.parametrize("special", ["plain", "inf", "ninf_row", "nan", "mixed_huge"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(10,), (1, 1), (8, 10), (600, 4), (3, 2049), (2, 3, 10),
                                   (3, 70, 4)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_transform_out_fast_path(name, shape, dtype, special, rng):
    """softmax / log_softmax with out= a separate array of the input's dtype,
    shape and C layout, or out=x (in place), are the fast path's: the 8x10
    out= call spent ~20 us in the general path's checks for a 1 us kernel
    (NumPy's own out= softmax was 2x faster).  Same bits as the general path
    into the same buffer, the buffer itself returned, nothing else written."""
    x = logits(rng, shape, dtype, special)
    public = getattr(lm, name)
    for axis in [None, *range(-x.ndim, x.ndim)]:
        with general_path():
            ref_out = np.full(shape, 7.0, dtype)
            assert public(x, axis=axis, out=ref_out) is ref_out
            ref_in_place = x.copy()
            assert public(ref_in_place, axis=axis, out=ref_in_place) is ref_in_place
        before = x.copy()
        buf = np.full(shape, 7.0, dtype)
        assert getattr(_fastpath, name)(x, axis, None, buf, None) is buf   # taken
        assert_same(buf, ref_out)
        buf = np.full(shape, 7.0, dtype)
        assert public(x, axis=axis, out=buf) is buf
        assert_same(buf, ref_out)
        np.testing.assert_array_equal(x, before)                             # x only read
        y = x.copy()
        assert getattr(_fastpath, name)(y, axis, None, y, None) is y         # in place
        assert_same(y, ref_in_place)
    if special == "plain":   # and the values, against scipy
        x64 = x.astype(np.float64)
        buf = np.empty(shape, dtype)
        public(x, axis=-1, out=buf)
        np.testing.assert_allclose(buf, getattr(sps, name)(x64, axis=-1),
                                   **tol(dtype, scale=np.abs(x64).max()))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_transform_out_the_fast_path_leaves_to_the_general_path(name, rng):
    """Every out= but a separate or identical C-ordered array of the input's
    dtype and shape goes to the general path: the same result into the same
    buffer, or the same error, as with the fast paths off."""
    x = logits(rng, (6, 8), np.float64, "plain")
    public = getattr(lm, name)
    read_only = np.empty_like(x)
    read_only.flags.writeable = False
    refused = [
        x[:, :],                                   # a view of all of x (not x itself)
        x[::-1],                                   # overlaps x reversed
        np.empty((6, 8), np.float32),              # another dtype
        np.empty((8, 6)),                          # another shape
        np.empty((6, 8, 1)),
        np.empty((6, 8), order="F"),               # another layout
        np.empty((6, 16))[:, ::2],                 # strided
        np.empty((6, 8)).view(_Sub),               # a subclass
        np.empty((6, 8)).astype(np.dtype(np.float64).newbyteorder()),
        read_only,
        [[0.0] * 8] * 6,                           # not an array
    ]
    for out in refused:
        assert getattr(_fastpath, name)(x, -1, None, out, None) is None
    # a buffer that overlaps x part-way, in both directions
    whole = np.concatenate([x.ravel(), np.zeros(x.size)])
    x_in = whole[:x.size].reshape(x.shape)
    for start in (1, x.size - 1):
        out = whole[start:start + x.size].reshape(x.shape)
        assert getattr(_fastpath, name)(x_in, -1, None, out, None) is None
        snapshot = whole.copy()
        errors_alike(public, x_in, axis=-1, out=out)
        np.testing.assert_array_equal(whole, snapshot)       # nothing written
    # adjacent but apart: the fast path's
    out = whole[x.size:].reshape(x.shape)
    assert getattr(_fastpath, name)(x_in, -1, None, out, None) is out
    # the refused ones come out of the public function as from the general path
    for out in (np.empty((6, 8), np.float32), np.empty((8, 6)), read_only,
                [[0.0] * 8] * 6, x[::-1]):
        errors_alike(public, x, axis=-1, out=out)
    for out in (np.empty((6, 8), order="F"), np.empty((6, 16))[:, ::2]):
        got = public(x, axis=-1, out=out)
        with general_path():
            ref = public(x, axis=-1, out=np.empty_like(out))
        assert got is out
        assert_same(np.ascontiguousarray(got), np.ascontiguousarray(ref))
    view = x.copy()
    alias = view[:, :]
    with general_path():
        ref = public(view.copy(), axis=-1)
    assert public(view, axis=-1, out=alias) is alias          # in place via a view
    assert_same(np.ascontiguousarray(alias), ref)


def test_large_inputs_are_left_to_the_general_path():
    n = PARALLEL_MIN_ELEMENTS // 8
    x = np.zeros((8, n))
    assert _fastpath.logsumexp(x, -1, None, False, False, None, None, None) is None
    assert _fastpath.softmax(x, -1, None, None, None) is None
    assert _fastpath.kl_divergence(x, x, -1, None, False, True, None, None) is None
    x = np.zeros((8, n - 1))
    assert _fastpath.logsumexp(x, -1, None, False, False, None, None, None) is not None


# ---------------------------------------------------------------------------
# n_threads: validated exactly as before
# ---------------------------------------------------------------------------
BAD_THREADS = [0, -1, 1.5, True, "2", np.bool_(True)]


@pytest.mark.parametrize("n_threads", BAD_THREADS, ids=repr)
def test_bad_n_threads_raise_as_before(n_threads):
    x = np.zeros((2, 3))
    y = np.array([0, 1])
    p = np.full((2, 3), 1 / 3)
    for fn, args in [(lm.logsumexp, (x,)), (lm.softmax, (x,)), (lm.log_softmax, (x,)),
                     (lm.cross_entropy, (x, y)), (lm.kl_divergence, (p, p)),
                     (lm.entropy, (p,))]:
        errors_alike(fn, *args, n_threads=n_threads)


@pytest.mark.parametrize("n_threads", [None, 1, 2, 64])
def test_good_n_threads_take_the_fast_path(n_threads, rng):
    x = logits(rng, (8, 10), np.float64, "plain")
    assert _fastpath.softmax(x, -1, None, None, n_threads) is not None
    assert_same(*call_both(lm.softmax, x, axis=-1, n_threads=n_threads))


# ---------------------------------------------------------------------------
# cross_entropy
# ---------------------------------------------------------------------------
def ce_oracle(x, y, ignore_index=-100):
    """Per-row cross-entropy (0 on ignored rows) and the kept rows."""
    return np_cross_entropy_rows(x, y, ignore_index=ignore_index)[0], y != ignore_index


def _smoothed_weighted_ce(x, y, w, eps):
    """torch's cross_entropy with weight and label_smoothing: the rows, and
    the 'mean' (divided by sum w_y over the kept rows)."""
    rows, row_w = np_cross_entropy_rows(x, y, weight=w, label_smoothing=eps)
    return rows, rows.sum() / row_w.sum()


CE_SHAPES = [(8, 10), (1, 1), (3, 1), (1, 10), (5, 4096), (7, 2), (9, 8), (300, 3),
             (129, 9), (1000, 5), (2, 2049)]


def check_ce_bit_identical(public, direct_fn, x, target, same=None, weight=None,
                           label_smoothing=0.0):
    """For every reduction, the public call (cross_entropy or _with_grad) bit for
    bit as the general path's, and the fast path itself answers - but for a
    nan sum of row losses, left to the general path (see the nan-total test);
    the inputs are not written."""
    same = same or assert_same
    before_x, before_t = x.copy(), target.copy()
    opts = dict(weight=weight, label_smoothing=label_smoothing)
    with general_path():
        nan_total = bool(np.isnan(lm.cross_entropy(x, target, reduction="sum", **opts)))
    for reduction in ("mean", "sum", "none"):
        direct = direct_fn(x, target, -1, weight, -100, reduction, label_smoothing, None,
                           None, None, None, None)
        fast, ref = call_both(public, x, target, reduction=reduction, **opts)
        same(fast, ref)
        assert (direct is None) == (reduction != "none" and nan_total)
        if direct is not None:
            same(direct, ref)
    np.testing.assert_array_equal(x, before_x)
    np.testing.assert_array_equal(target, before_t)


@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_bit_identical(shape, dtype, special, rng):
    x = logits(rng, shape, dtype, special)
    y = rng.integers(0, shape[1], shape[0])
    y[::3] = -100                                   # ignored rows
    check_ce_bit_identical(lm.cross_entropy, _fastpath.cross_entropy, x, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_cross_entropy_nan_total_is_the_general_paths(dtype):
    """Rows whose losses are nans of both signs (+inf logit: +nan; all -inf: the
    x86 default nan, sign bit set): which one their sum gives depends on operand
    order, so the fast path leaves nan sums and means to the general path."""
    x = np.full((16, 2), -np.inf, dtype)
    x[0, 1] = np.inf
    y = np.zeros(16, np.int64)
    rows = lm.cross_entropy(x, y, reduction="none")
    assert np.isnan(rows).all()
    for reduction in ("sum", "mean"):
        assert _fastpath.cross_entropy(x, y, -1, None, -100, reduction, 0.0, None, None,
                                       None, None, None) is None
        fast, ref = call_both(lm.cross_entropy, x, y, reduction=reduction)
        assert_same(fast, ref)
        assert np.isnan(fast)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(8, 10), (1, 1), (300, 3), (5, 4096), (7, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_matches_oracles(shape, dtype, rng):
    """Plain, class-weighted and label-smoothed (all on the fast path) against
    the closed form written with scipy's log_softmax."""
    x = logits(rng, shape, dtype, "plain")
    y = rng.integers(0, shape[1], shape[0])
    y[1::4] = -100
    t = tol(dtype, scale=np.abs(x).max())
    for weight, eps in [(None, 0.0), (rng.random(shape[1]) + 0.1, 0.0),
                        (None, 0.15), (rng.random(shape[1]) + 0.1, 0.15)]:
        kw = dict(weight=weight, label_smoothing=eps)
        assert _fastpath.cross_entropy(x, y, -1, weight, -100, "mean", eps, None, None, None,
                                       None, None) is not None
        rows, mean = _smoothed_weighted_ce(x, y, np.ones(shape[1]) if weight is None
                                           else weight, eps)
        np.testing.assert_allclose(lm.cross_entropy(x, y, reduction="none", **kw), rows, **t)
        np.testing.assert_allclose(lm.cross_entropy(x, y, reduction="sum", **kw), rows.sum(),
                                   **t)
        np.testing.assert_allclose(lm.cross_entropy(x, y, **kw), mean, **t)


def test_cross_entropy_matches_torch(torch):
    """Loss (and, weighted and smoothed, the gradient) as torch's."""
    rng = np.random.default_rng(4)
    for dtype in DTYPES:
        x = (rng.standard_normal((8, 10)) * 3).astype(dtype)
        y = rng.integers(0, 10, 8)
        y[2] = -100
        want = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(y))
        np.testing.assert_allclose(lm.cross_entropy(x, y), want.item(), **tol(dtype, 10))
        w = rng.random(10) + 0.1
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        want = torch.nn.functional.cross_entropy(
            xt, torch.from_numpy(y), weight=torch.from_numpy(w.astype(dtype)),
            label_smoothing=0.2)
        want.backward()
        loss, grad = lm.cross_entropy_with_grad(x, y, weight=w, label_smoothing=0.2)
        tl = tol(dtype, 10)
        np.testing.assert_allclose(loss, want.item(), **tl)
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=tl["rtol"], atol=tl["rtol"])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_cross_entropy_every_target_ignored_is_nan(dtype):
    x = np.zeros((3, 4), dtype)
    y = np.full(3, -100)
    fast, ref = call_both(lm.cross_entropy, x, y)
    assert_same(fast, ref)
    assert np.isnan(fast) and type(fast) is np.dtype(dtype).type
    assert lm.cross_entropy(x, y, reduction="sum") == 0


def test_cross_entropy_float32_overflow_is_inf():
    x = np.array([[-3e38, 3e38], [-3e38, 3e38]], np.float32)
    y = np.array([0, 0])
    fast, ref = call_both(lm.cross_entropy, x, y, reduction="sum")
    assert_same(fast, ref)
    assert fast == np.inf
    assert_same(*call_both(lm.cross_entropy, x, y))
    rows, ref_rows = call_both(lm.cross_entropy, x, y, reduction="none")   # cast to float32
    assert_same(rows, ref_rows)
    assert np.isinf(rows).all()


def test_cross_entropy_custom_ignore_index(rng):
    x = logits(rng, (6, 5), np.float64, "plain")
    y = np.array([0, 7, 4, 7, 1, 2])       # 7 is out of range, but ignored
    assert _fastpath.cross_entropy(x, y, -1, None, 7, "mean", 0.0, None, None, None, None,
                                   None) is not None
    fast, ref = call_both(lm.cross_entropy, x, y, ignore_index=7)
    assert_same(fast, ref)
    rows, keep = ce_oracle(x, y, ignore_index=7)
    np.testing.assert_allclose(fast, rows.sum() / keep.sum(), **tol(np.float64, 10))


@pytest.mark.parametrize("label", [5, 10, -1, -101, 2**40])
def test_cross_entropy_label_out_of_range_raises_as_before(label):
    x = np.zeros((4, 5))
    y = np.array([0, 1, label, 2])
    exc = errors_alike(lm.cross_entropy, x, y)
    assert isinstance(exc, IndexError)
    assert str(label) in str(exc)


def test_cross_entropy_falls_through(rng):
    x = logits(rng, (6, 5), np.float64, "plain")
    x32 = x.astype(np.float32)
    y = rng.integers(0, 5, 6)
    p = sps.softmax(rng.standard_normal((6, 5)), axis=-1)
    cases = [
        ((x, y.astype(np.int32)), {}),
        ((x, y.astype(np.uint8)), {}),
        ((x, y[::-1]), {}),
        ((x, y.tolist()), {}),
        ((x, np.r_[y, y][::2]), {}),
        ((x.tolist(), y), {}),
        ((np.asfortranarray(x), y), {}),
        ((x32, y), dict(weight=np.arange(1.0, 6.0))),
        ((x, y), dict(label_smoothing=0.1)),
        ((x, y), dict(label_smoothing=np.float64(0.0))),
        ((x, y), dict(ignore_index=np.int64(-100))),
        ((x, p), {}),
        ((x.T.copy(), y), dict(axis=0)),
        ((x, y), dict(sample_weight=np.ones(6))),
        ((x, y), dict(where=np.ones((6, 5), bool))),
        ((x, y), dict(logit_softcap=30.0)),
        ((x.reshape(3, 2, 5), y.reshape(3, 2)), {}),
        ((x[0], np.int64(3)), {}),
        ((x, y), dict(reduction="none", out=np.empty(6))),
    ]
    for args, kwargs in cases:
        assert_same(*call_both(lm.cross_entropy, *args, **kwargs))


@pytest.mark.parametrize("bad", [
    dict(reduction="avg"), dict(reduction=None), dict(axis=None), dict(axis=2),
    dict(ignore_index=1.5), dict(ignore_index=True), dict(ignore_index=2**70),
    dict(label_smoothing=-0.1), dict(label_smoothing="0"), dict(weight=np.ones(3)),
], ids=repr)
def test_cross_entropy_bad_options_raise_as_before(bad):
    x = np.zeros((4, 5))
    y = np.array([0, 1, 2, 3])
    errors_alike(lm.cross_entropy, x, y, **bad)


@pytest.mark.parametrize("args", [
    (np.zeros((4, 5)), np.array([0.5, 1, 2, 3])),                # float target, wrong shape
    (np.zeros((4, 5)), np.array([0, 1, 2])),                     # wrong length
    (np.zeros((4, 5)), np.array([[0, 1, 2, 3]])),                # wrong ndim
    (np.zeros((4, 5)), np.array(["a", "b", "c", "d"])),          # not numbers
    (np.zeros((4, 0)), np.array([0, 0, 0, 0])),                  # no classes
    (np.zeros((4, 5), np.complex128), np.array([0, 1, 2, 3])),   # complex logits
    (np.float64(1.0), np.int64(0)),                              # 0-d logits
], ids=["float_target", "length", "ndim", "str", "no_classes", "complex", "0d"])
def test_cross_entropy_bad_input_raises_as_before(args):
    errors_alike(lm.cross_entropy, *args)


@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_prob_target_bit_identical(shape, dtype, special, rng):
    """Probability targets of the logits' dtype and shape: bit for bit as the
    general path (short rows block by block, long rows, specials in the logits
    and a zero / one-hot target row), and the fast path really answers."""
    x = logits(rng, shape, dtype, special)
    t = rng.random(shape) + 0.01
    t[0] = 0.0
    t[-1] = 0.0
    t[-1, -1] = 1.0
    t = (t / np.maximum(t.sum(-1, keepdims=True), 1e-300)).astype(dtype)
    check_ce_bit_identical(lm.cross_entropy, _fastpath.cross_entropy, x, t)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(8, 10), (1, 1), (300, 3), (5, 4096), (7, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_prob_target_matches_oracles(shape, dtype, rng):
    """-sum t log_softmax(x) per row (scipy, float64); the mean over rows."""
    x = logits(rng, shape, dtype, "plain")
    t = sps.softmax(rng.standard_normal(shape), axis=-1).astype(dtype)
    rows = -(t.astype(np.float64) * sps.log_softmax(x.astype(np.float64), axis=-1)).sum(-1)
    tl = tol(dtype, scale=np.abs(x).max())
    np.testing.assert_allclose(lm.cross_entropy(x, t, reduction="none"), rows, **tl)
    np.testing.assert_allclose(lm.cross_entropy(x, t, reduction="sum"), rows.sum(), **tl)
    np.testing.assert_allclose(lm.cross_entropy(x, t), rows.mean(), **tl)


def test_cross_entropy_prob_target_falls_through(rng):
    """Probabilities of another dtype, shape or layout take the general path."""
    x = logits(rng, (6, 5), np.float64, "plain")
    t = sps.softmax(rng.standard_normal((6, 5)), axis=-1)
    cases = [
        ((x, t.astype(np.float32)), {}),
        ((x.astype(np.float32), t), {}),
        ((x, np.asfortranarray(t)), {}),
        ((x, t[:, ::-1]), {}),
        ((x, t.tolist()), {}),
        ((x, t), dict(weight=np.arange(1.0, 6.0).tolist())),
        ((x, t), dict(weight=np.arange(1.0, 6.0, dtype=np.float32))),
        ((x, t), dict(weight=np.arange(1.0, 11.0)[::2])),
        ((x, t), dict(label_smoothing=np.float64(0.2))),
        ((x, t), dict(ignore_index=np.int64(3))),
    ]
    for args, kwargs in cases:
        assert _fastpath.cross_entropy(*args, -1, kwargs.get("weight"),
                                       kwargs.get("ignore_index", -100), "mean",
                                       kwargs.get("label_smoothing", 0.0), None, None, None,
                                       None, None) is None
        assert_same(*call_both(lm.cross_entropy, *args, **kwargs))
    errors_alike(lm.cross_entropy, x, t[:5])                 # wrong shape


# class weights and label smoothing: the fast path takes them as _losses does
CE_OPTION_SETS = [
    dict(weight="ramp"), dict(label_smoothing=0.1), dict(weight="ramp", label_smoothing=1.0),
    dict(weight="zeros"), dict(label_smoothing=1),
]


def _ce_options(opts, n, rng):
    opts = dict(opts)
    if opts.get("weight") == "ramp":
        opts["weight"] = rng.random(n) * 3
    elif opts.get("weight") == "zeros":   # some classes weigh nothing
        opts["weight"] = np.where(np.arange(n) % 2 == 0, 0.0, 1.5)
    return opts


@pytest.mark.parametrize("kind", ["class", "class_grad", "prob", "prob_grad"])
@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_weight_and_smoothing_bit_identical(shape, dtype, special, kind, rng):
    """weight= and label_smoothing= (each, both, weights of 0) on class indices
    and probabilities, with and without the gradient: bit for bit as the
    general path, every reduction, and the fast path really answers."""
    x = logits(rng, shape, dtype, special)
    if kind.startswith("class"):
        target = rng.integers(0, shape[1], shape[0])
        target[::3] = -100
    else:
        target = sps.softmax(rng.standard_normal(shape), axis=-1).astype(dtype)
    grad = kind.endswith("grad")
    public = lm.cross_entropy_with_grad if grad else lm.cross_entropy
    direct = _fastpath.cross_entropy_with_grad if grad else _fastpath.cross_entropy
    for opts in CE_OPTION_SETS:
        check_ce_bit_identical(public, direct, x, target, assert_same_pair if grad else None,
                               **_ce_options(opts, shape[1], rng))


@pytest.mark.parametrize("make_target", [
    lambda y: y.astype(np.int32), lambda y: y.astype(np.int16), lambda y: y.astype(np.int8),
    lambda y: np.where(y < 0, 0, y).astype(np.uint8),
    lambda y: np.where(y < 0, 1, y).astype(np.uint32),
    lambda y: y.tolist(), lambda y: tuple(y.tolist()),
], ids=["int32", "int16", "int8", "uint8", "uint32", "list", "tuple"])
@pytest.mark.parametrize("fn", [lm.cross_entropy, lm.cross_entropy_with_grad],
                         ids=["ce", "with_grad"])
def test_cross_entropy_narrow_int_and_list_targets(fn, make_target, rng):
    """Narrower integer dtypes and lists of ints are widened to int64 once, then
    take the fast path: bit for bit as the general path (which widens them
    too), with ignored rows and weights; bad indices raise as before."""
    same = assert_same_pair if fn is lm.cross_entropy_with_grad else assert_same
    for shape in [(8, 10), (300, 5)]:
        x = logits(rng, shape, np.float64, "inf")
        y = rng.integers(0, shape[1], shape[0])
        y[::4] = -100
        y[1] = 7 % shape[1]
        target = make_target(y)
        wide = lm._losses._wide_class_indices(target)
        assert wide.dtype == np.int64
        np.testing.assert_array_equal(wide, np.asarray(target))
        assert _fastpath.cross_entropy(x, wide, -1, None, -100, "none", 0.0, None, None, None,
                                       None, None) is not None
        for kwargs in [{}, dict(reduction="sum"), dict(reduction="none"),
                       dict(weight=rng.random(shape[1]))]:
            same(*call_both(fn, x, target, **kwargs))
    bad = make_target(np.array([0, 1, 2, 9]))
    exc = errors_alike(fn, np.zeros((4, 5)), bad)
    assert isinstance(exc, IndexError)


@pytest.mark.parametrize("fn", [lm.cross_entropy, lm.nll_loss], ids=["ce", "nll"])
def test_ragged_list_target_keeps_the_general_paths_error_order(fn):
    """A list target that NumPy cannot make an array of is not widened: the
    general path checks the other arguments first, as before the widening."""
    with pytest.raises(ValueError, match="reduction must be one of"):
        fn(np.zeros((2, 3)), [[0, 1], [0]], reduction="bad")
    with pytest.raises(TypeError, match="ignore_index"):
        fn(np.zeros((2, 3)), [[0, 1], [0]], ignore_index=1.5)
    assert lm._losses._wide_class_indices([[0, 1], [0]]) is None


def test_cross_entropy_float_list_and_wide_targets_are_left_alone(rng):
    """Lists of floats (probabilities), int64 / uint64 arrays: not widened."""
    p = sps.softmax(rng.standard_normal((4, 5)), axis=-1)
    assert lm._losses._wide_class_indices(p.tolist()) is None
    assert lm._losses._wide_class_indices(np.arange(4, dtype=np.uint64)) is None
    assert lm._losses._wide_class_indices(np.arange(4)) is None
    assert_same(*call_both(lm.cross_entropy, np.zeros((4, 5)), p.tolist()))
    errors_alike(lm.cross_entropy, np.zeros((4, 5)), [2**70, 0, 1, 2])


@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_nll_loss_bit_identical(shape, dtype, special, rng):
    """nll_loss of class indices (ignored rows, with and without class weights):
    bit for bit as the general path, every reduction, the fast path answering
    (but for a nan sum of row losses)."""
    log_probs = logits(rng, shape, dtype, special)
    y = rng.integers(0, shape[1], shape[0])
    y[::3] = -100
    before = log_probs.copy()
    with general_path():
        nan_total = bool(np.isnan(lm.nll_loss(log_probs, y, reduction="sum")))
    for weight in (None, rng.random(shape[1]) * 2):
        for reduction in ("mean", "sum", "none"):
            direct = _fastpath.nll_loss(log_probs, y, -1, weight, -100, reduction, None, None,
                                        None)
            fast, ref = call_both(lm.nll_loss, log_probs, y, weight=weight,
                                  reduction=reduction)
            assert_same(fast, ref)
            assert (direct is None) == (reduction != "none" and nan_total)
            if direct is not None:
                assert_same(direct, ref)
    np.testing.assert_array_equal(log_probs, before)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_nll_loss_matches_numpy_and_torch(dtype, rng):
    log_probs = sps.log_softmax(rng.standard_normal((8, 10)) * 3, axis=-1).astype(dtype)
    y = rng.integers(0, 10, 8)
    y[2] = -100
    w = rng.random(10) + 0.1
    keep = y != -100
    picked = -log_probs.astype(np.float64)[np.arange(8), np.where(keep, y, 0)] * keep
    wy = w[np.where(keep, y, 0)] * keep
    t = tol(dtype, 10)
    np.testing.assert_allclose(lm.nll_loss(log_probs, y), picked.sum() / keep.sum(), **t)
    np.testing.assert_allclose(lm.nll_loss(log_probs, y, weight=w, reduction="none"),
                               picked * wy, **t)
    np.testing.assert_allclose(lm.nll_loss(log_probs, y, weight=w),
                               (picked * wy).sum() / wy.sum(), **t)
    torch = pytest.importorskip("torch")
    want = torch.nn.functional.nll_loss(torch.from_numpy(log_probs), torch.from_numpy(y),
                                        weight=torch.from_numpy(w.astype(dtype)))
    np.testing.assert_allclose(lm.nll_loss(log_probs, y, weight=w), want.item(), **t)


def test_nll_loss_falls_through_and_raises_as_before(rng):
    log_probs = sps.log_softmax(rng.standard_normal((6, 5)), axis=-1)
    y = rng.integers(0, 5, 6)
    p = sps.softmax(rng.standard_normal((6, 5)), axis=-1)
    for args, kwargs in [((log_probs, y.astype(np.int32)), {}), ((log_probs, y.tolist()), {}),
                         ((log_probs, y), dict(sample_weight=np.ones(6))),
                         ((log_probs.T.copy(), y), dict(axis=0)),
                         ((log_probs, y), dict(reduction="none", out=np.empty(6))),
                         ((log_probs.astype(np.float32), y), dict(weight=np.ones(5)))]:
        assert_same(*call_both(lm.nll_loss, *args, **kwargs))
    assert _fastpath.nll_loss(log_probs, p, -1, None, -100, "mean", None, None, None) is None
    assert isinstance(errors_alike(lm.nll_loss, log_probs, p), TypeError)
    assert isinstance(errors_alike(lm.nll_loss, log_probs, np.array([0, 1, 2, 3, 4, 5])),
                      IndexError)
    errors_alike(lm.nll_loss, log_probs, y, weight=np.ones(4))
    errors_alike(lm.nll_loss, log_probs, y, reduction="avg")


@pytest.mark.parametrize("bad", [
    dict(weight=np.array([1.0, np.nan, 1.0, 1.0, 1.0])),
    dict(weight=np.array([1.0, np.inf, 1.0, 1.0, 1.0])),
    dict(weight=np.array([1.0, -np.inf, 1.0, 1.0, 1.0])),
    dict(weight=np.ones(4)), dict(weight=np.ones((5, 1))),
    dict(label_smoothing=float("nan")), dict(label_smoothing=1.5), dict(label_smoothing=2),
    dict(label_smoothing=-1e-300),
], ids=repr)
@pytest.mark.parametrize("fn", [lm.cross_entropy, lm.cross_entropy_with_grad],
                         ids=["ce", "with_grad"])
def test_cross_entropy_bad_weight_or_smoothing_raise_as_before(fn, bad):
    x = np.zeros((4, 5))
    y = np.array([0, 1, 2, 3])
    exc = errors_alike(fn, x, y, **bad)
    assert isinstance(exc, ValueError)


@pytest.mark.parametrize("fn", [lm.cross_entropy, lm.cross_entropy_with_grad],
                         ids=["ce", "with_grad"])
def test_cross_entropy_negative_weight_same_on_both_paths(fn):
    # negative class weights are accepted (as torch) and agree between paths
    x = np.random.default_rng(5).normal(size=(4, 5))
    y = np.array([0, 1, 2, 3])
    fast, ref = call_both(fn, x, y, weight=np.array([1.0, -1.0, 0.5, 2.0, -0.25]))
    for a, b in zip(fast, ref) if isinstance(fast, tuple) else [(fast, ref)]:
        assert_same(a, b)


# ---------------------------------------------------------------------------
# cross_entropy_with_grad (the cross_entropy fast path with the gradient)
# ---------------------------------------------------------------------------
def assert_same_pair(fast, ref):
    assert type(fast) is tuple and type(ref) is tuple and len(fast) == len(ref) == 2
    assert_same(fast[0], ref[0])
    assert_same(fast[1], ref[1])


@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_with_grad_bit_identical(shape, dtype, special, rng):
    """Loss and gradient bit for bit as the general path's, for short rows (the
    across-rows kernel, several 256-row blocks), long rows, one class, ignored
    rows and special values; the fast path really answers (but for a nan sum)."""
    x = logits(rng, shape, dtype, special)
    y = rng.integers(0, shape[1], shape[0])
    y[::3] = -100
    check_ce_bit_identical(lm.cross_entropy_with_grad, _fastpath.cross_entropy_with_grad, x, y,
                           assert_same_pair)


@pytest.mark.parametrize("special", SPECIALS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", CE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_with_grad_prob_target_bit_identical(shape, dtype, special, rng):
    """Probability targets: loss and gradient bit for bit as the general path's,
    and against the closed form sum(t) softmax - t (scaled by 1 / rows for the
    mean) where the logits are finite."""
    x = logits(rng, shape, dtype, special)
    t = sps.softmax(rng.standard_normal(shape), axis=-1).astype(dtype)
    t[0] = 0.0
    check_ce_bit_identical(lm.cross_entropy_with_grad, _fastpath.cross_entropy_with_grad, x, t,
                           assert_same_pair)
    if special == "plain":
        t64 = t.astype(np.float64)
        want = t64.sum(-1, keepdims=True) * sps.softmax(x.astype(np.float64), axis=-1) - t64
        tl = tol(dtype, scale=np.abs(x).max())
        for reduction, scale in [("sum", 1.0), ("mean", shape[0])]:
            grad = lm.cross_entropy_with_grad(x, t, reduction=reduction)[1]
            np.testing.assert_allclose(grad, want / scale, rtol=tl["rtol"], atol=tl["rtol"])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(8, 10), (1, 1), (300, 3), (5, 4096), (7, 2)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cross_entropy_with_grad_matches_oracles(shape, dtype, rng):
    """Against the closed form with scipy's softmax: the gradient of the mean is
    (softmax - onehot) / kept rows on kept rows and 0 on ignored ones."""
    x = logits(rng, shape, dtype, "plain")
    y = rng.integers(0, shape[1], shape[0])
    y[1::4] = -100
    rows, keep = ce_oracle(x, y)
    p = sps.softmax(x.astype(np.float64), axis=-1)
    onehot = np.zeros(shape)
    onehot[np.arange(shape[0])[keep], y[keep]] = 1.0
    g_sum = np.where(keep[:, None], p - onehot, 0.0)
    t = tol(dtype, scale=np.abs(x).max())
    for reduction, want_loss, want_grad in [
            ("none", rows, g_sum), ("sum", rows.sum(), g_sum),
            ("mean", rows.sum() / max(keep.sum(), 1), g_sum / max(keep.sum(), 1))]:
        loss, grad = lm.cross_entropy_with_grad(x, y, reduction=reduction)
        assert grad.dtype == dtype and grad.shape == shape
        np.testing.assert_allclose(loss, want_loss, **t)
        np.testing.assert_allclose(grad, want_grad, rtol=t["rtol"], atol=t["rtol"])


def test_cross_entropy_with_grad_matches_torch(torch):
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        x = (rng.standard_normal((8, 10)) * 3).astype(dtype)
        y = rng.integers(0, 10, 8)
        y[2] = -100
        xt = torch.from_numpy(x.copy()).requires_grad_(True)
        want = torch.nn.functional.cross_entropy(xt, torch.from_numpy(y))
        want.backward()
        loss, grad = lm.cross_entropy_with_grad(x, y)
        np.testing.assert_allclose(loss, want.item(), **tol(dtype, 10))
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=tol(dtype, 10)["rtol"],
                                   atol=tol(dtype, 10)["rtol"])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_cross_entropy_with_grad_every_target_ignored(dtype):
    """'mean' of no kept target: nan loss, zero gradient (torch's), both paths alike."""
    x = np.zeros((3, 4), dtype)
    y = np.full(3, -100)
    fast, ref = call_both(lm.cross_entropy_with_grad, x, y)
    assert_same_pair(fast, ref)
    assert np.isnan(fast[0]) and not fast[1].any()


def test_cross_entropy_with_grad_falls_through(rng):
    """Calls the fast path does not take come out as from the general path."""
    x = logits(rng, (6, 5), np.float64, "plain")
    y = rng.integers(0, 5, 6)
    p = sps.softmax(rng.standard_normal((6, 5)), axis=-1)
    cases = [
        ((x, y.astype(np.int32)), {}),
        ((x, y[::-1]), {}),
        ((x.tolist(), y), {}),
        ((np.asfortranarray(x), y), {}),
        ((x, y), dict(weight=np.arange(1.0, 6.0))),
        ((x, y), dict(label_smoothing=0.1)),
        ((x.T.copy(), y), dict(axis=0)),
        ((x, y), dict(sample_weight=np.ones(6))),
        ((x, y), dict(logit_softcap=30.0)),
        ((x, y), dict(grad_out=np.empty_like(x))),
        ((x.reshape(3, 2, 5), y.reshape(3, 2)), {}),
        ((x, y), dict(n_threads=2)),
        ((x, p.astype(np.float32)), {}),
        ((x, np.asfortranarray(p)), {}),
        ((x, p), dict(label_smoothing=0.1)),
    ]
    for args, kwargs in cases:
        assert_same_pair(*call_both(lm.cross_entropy_with_grad, *args, **kwargs))


@pytest.mark.parametrize("label", [5, -1, 2**40])
def test_cross_entropy_with_grad_bad_label_raises_as_before(label):
    exc = errors_alike(lm.cross_entropy_with_grad, np.zeros((4, 5)), np.array([0, 1, label, 2]))
    assert isinstance(exc, IndexError)


@pytest.mark.parametrize("bad", [dict(reduction="avg"), dict(axis=None), dict(ignore_index=1.5),
                                 dict(n_threads=0)], ids=repr)
def test_cross_entropy_with_grad_bad_options_raise_as_before(bad):
    errors_alike(lm.cross_entropy_with_grad, np.zeros((4, 5)), np.array([0, 1, 2, 3]), **bad)


# ---------------------------------------------------------------------------
# kl_divergence and entropy
# ---------------------------------------------------------------------------
def probabilities(rng, shape, dtype, special="plain"):
    p = rng.random(shape) + 0.01
    p /= p.sum(-1, keepdims=True)
    flat = p.reshape(-1, shape[-1])
    if special == "zeros":
        flat[0, ::2] = 0
    elif special == "tiny":
        flat[-1, 0] = 1e-310 if dtype == np.float64 else 1e-44
    return p.astype(dtype)


DIV_SHAPES = [(10,), (1,), (1, 1), (8, 10), (3, 1), (5, 4096), (40, 7)]


@pytest.mark.parametrize("special", ["plain", "zeros", "tiny"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", DIV_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_divergences_bit_identical(shape, dtype, special, rng):
    p = probabilities(rng, shape, dtype, special)
    q = probabilities(rng, shape, dtype, "plain")
    if special == "zeros" and p.size > 2:
        q.reshape(-1, shape[-1])[-1, 0] = 0          # p > 0 with q == 0: inf
    before = (p.copy(), q.copy())
    for axis in (-1, p.ndim - 1, None):
        for validate in (True, False):
            assert _fastpath.kl_divergence(p, q, axis, None, False, validate, None,
                                           None) is not None
            assert_same(*call_both(lm.kl_divergence, p, q, axis=axis, validate=validate))
        assert _fastpath.entropy(p, None, None, axis, False, None, None) is not None
        assert_same(*call_both(lm.entropy, p, axis=axis))
    assert_same(*call_both(lm.entropy, p))                # scipy's default axis=0
    if p.ndim == 2:
        assert _fastpath.entropy(p, None, None, 0, False, None, None) is not None
    np.testing.assert_array_equal(p, before[0])
    np.testing.assert_array_equal(q, before[1])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(10,), (8, 10), (5, 4096)],
                         ids=lambda s: "x".join(map(str, s)))
def test_divergences_match_scipy(shape, dtype, rng):
    p = probabilities(rng, shape, dtype, "zeros")
    q = probabilities(rng, shape, dtype)
    p64, q64 = p.astype(np.float64), q.astype(np.float64)
    t = tol(dtype)
    np.testing.assert_allclose(lm.kl_divergence(p, q), sps.rel_entr(p64, q64).sum(-1), **t)
    np.testing.assert_allclose(lm.entropy(p, axis=-1), sst.entropy(p64, axis=-1), **t)
    np.testing.assert_allclose(lm.entropy(p), sst.entropy(p64), **t)
    np.testing.assert_allclose(lm.entropy(p * 3, axis=None), sst.entropy(p64.ravel()), **t)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
def test_kl_invalid_probabilities_raise_as_before(dtype):
    p = np.full((3, 4), 0.25, dtype)
    for where, value in [("p", -0.1), ("q", -0.1), ("p", np.nan), ("q", np.nan)]:
        bad_p, bad_q = p.copy(), p.copy()
        (bad_p if where == "p" else bad_q)[1, 2] = value
        assert _fastpath.kl_divergence(bad_p, bad_q, -1, None, False, True, None,
                                       None) is None
        exc = errors_alike(lm.kl_divergence, bad_p, bad_q)
        assert isinstance(exc, ValueError) and str(exc).startswith(where)
        # validate=False: rel_entr's conventions (inf for negatives, nan for nan)
        fast, ref = call_both(lm.kl_divergence, bad_p, bad_q, validate=False)
        assert_same(fast, ref)
        want = quiet(sps.rel_entr, bad_p.astype(np.float64), bad_q.astype(np.float64)).sum(-1)
        np.testing.assert_allclose(fast, want, rtol=tol(dtype)["rtol"])


def test_divergences_fall_through(rng):
    p = probabilities(rng, (6, 5), np.float64)
    q = probabilities(rng, (6, 5), np.float64)
    cases = [
        (lm.kl_divergence, (p, q[0]), {}),                      # broadcast
        (lm.kl_divergence, (p, q.astype(np.float32)), {}),      # mixed dtypes
        (lm.kl_divergence, (p.astype(np.float32), q), {}),
        (lm.kl_divergence, (p, q), dict(axis=0)),
        (lm.kl_divergence, (p, q), dict(base=2)),
        (lm.kl_divergence, (p, q), dict(keepdims=True)),
        (lm.kl_divergence, (p, q), dict(validate=1)),
        (lm.kl_divergence, (p.tolist(), q), {}),
        (lm.kl_divergence, (np.asfortranarray(p), q), {}),
        (lm.kl_divergence, (p.reshape(2, 3, 5), q.reshape(2, 3, 5)), {}),
        (lm.kl_divergence, (np.zeros((0, 3)), np.zeros((0, 3))), {}),
        (lm.kl_divergence, (np.zeros((3, 0)), np.zeros((3, 0))), {}),
        (lm.entropy, (p, q), {}),
        (lm.entropy, (p,), dict(base=2)),
        (lm.entropy, (p,), dict(keepdims=True)),
        (lm.entropy, (p,), dict(axis=-1, out=np.empty(6))),
        (lm.entropy, (p.reshape(2, 3, 5),), dict(axis=1)),
        (lm.entropy, (p[:, ::2],), dict(axis=-1)),
    ]
    for fn, args, kwargs in cases:
        assert_same(*call_both(fn, *args, **kwargs))


@pytest.mark.parametrize("args,kwargs", [
    ((np.ones((2, 3)), np.ones((2, 4))), {}),
    ((np.ones((2, 3)), np.ones((2, 3))), dict(axis=2)),
    ((np.ones((2, 3)), np.ones((2, 3))), dict(base=-1.0)),
    ((np.ones((2, 3), np.complex128), np.ones((2, 3))), {}),
], ids=["shape", "axis", "base", "complex"])
def test_kl_bad_input_raises_as_before(args, kwargs):
    errors_alike(lm.kl_divergence, *args, **kwargs)


# ---------------------------------------------------------------------------
# SIMD paths and threads
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["avx512", "avx2", "baseline"])
def test_every_simd_path_bit_identical(path, monkeypatch, rng):
    monkeypatch.setenv("LOSSMLE_SIMD", path)
    try:
        if _config.reselect_simd() != path:
            pytest.skip(f"this CPU has no {path}")
        x = logits(rng, (8, 10), np.float64, "ninf_some")
        x32 = x.astype(np.float32)
        y = rng.integers(0, 10, 8)
        p = probabilities(rng, (8, 10), np.float64)
        q = probabilities(rng, (8, 10), np.float64)
        for a in (x, x32, x[:, :5].copy()):
            for fn in (lm.logsumexp, lm.softmax, lm.log_softmax):
                assert_same(*call_both(fn, a, axis=-1))
            assert_same(*call_both(lm.cross_entropy, a, y % a.shape[1]))
        assert_same(*call_both(lm.kl_divergence, p, q))
    finally:
        monkeypatch.delenv("LOSSMLE_SIMD")
        _config.reselect_simd()


def test_concurrent_calls_agree(rng):
    """Calls from several threads (GIL released above NOGIL_MIN_ELEMENTS) agree."""
    small = logits(rng, (8, 10), np.float64, "plain")
    large = logits(rng, (64, 1000), np.float64, "plain")
    want = {id(a): (lm.logsumexp(a, axis=-1), lm.log_softmax(a, axis=-1)) for a in (small, large)}
    errors = []

    def work():
        try:
            for _ in range(30):
                for a in (small, large):
                    lse, ls = lm.logsumexp(a, axis=-1), lm.log_softmax(a, axis=-1)
                    assert lse.tobytes() == want[id(a)][0].tobytes()
                    assert ls.tobytes() == want[id(a)][1].tobytes()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---------------------------------------------------------------------------
# Property: any plain small input, any values - the fast path is the general path
# (CI=true replays a fixed set of examples, as tests/test_fuzz_hypothesis.py)
# ---------------------------------------------------------------------------
_VALUES = st.one_of(st.floats(-60, 60, width=32),
                    st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 1e308, -1e308, 3e38,
                                     1e-310, 1e-45]),
                    st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=150, deadline=None, derandomize=bool(os.environ.get("CI")),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_property_fast_equals_general(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    shape = data.draw(st.one_of(st.tuples(st.integers(1, 12)),
                                st.tuples(st.integers(1, 300), st.integers(1, 12))))
    with np.errstate(over="ignore"):
        x = data.draw(hnp.arrays(np.float64, shape, elements=_VALUES)).astype(dtype)
    axis = data.draw(st.sampled_from([-1, None]))
    for fn in (lm.logsumexp, lm.softmax, lm.log_softmax):
        assert_same(*call_both(fn, x, axis=axis))
    p = np.abs(x)
    q = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1))).astype(dtype)
    assert_same(*call_both(lm.entropy, p, axis=axis))
    validate = data.draw(st.booleans())
    try:
        fast = lm.kl_divergence(p, q, axis=axis, validate=validate)
    except ValueError:
        errors_alike(lm.kl_divergence, p, q, axis=axis, validate=validate)
    else:
        with general_path():
            assert_same(fast, lm.kl_divergence(p, q, axis=axis, validate=validate))
    if x.ndim == 2:
        y = data.draw(hnp.arrays(np.int64, shape[:1],
                                 elements=st.sampled_from([-100, 0, shape[1] - 1]
                                                          + list(range(shape[1])))))
        reduction = data.draw(st.sampled_from(["mean", "sum", "none"]))
        assert_same(*call_both(lm.cross_entropy, x, y, reduction=reduction))
