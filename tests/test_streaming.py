"""LogSumExpState: chunked / merged log-sum-exp against the one-shot oracle.

Oracles: scipy.special.logsumexp of the concatenated chunks, mpmath for the
precision cases, closed forms.  The claim under test is "the same as the
one-shot value to a few ulps", so the tolerance is a few float64 ulps of the
row's scale, not the suite's loose default.
"""
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lossmle
from lossmle import LogSumExpState

from conftest import quiet

special = pytest.importorskip("scipy.special")

EPS = np.finfo(np.float64).eps


def assert_ulps(got, want, x, n=4, eps=EPS):
    """|got - want| <= n ulps (of eps) of the row scale max(1, max |finite x|)."""
    finite = np.abs(np.asarray(x, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(got, want, rtol=n * eps, atol=n * eps * scale)


def split(x, axis, cuts):
    """x cut along axis at the sorted positions cuts (empty pieces allowed)."""
    return np.split(x, sorted(cuts), axis=axis)


def feed(chunks, axis=-1, **kw):
    state = LogSumExpState(axis=axis)
    for c in chunks:
        assert state.update(c, **kw) is state
    return state


# ---------------------------------------------------------------------------
# chunked == one-shot
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis", [
    ((50,), 0), ((6, 40), -1), ((40, 6), 0), ((3, 30, 4), 1), ((2, 3, 25), -1)],
    ids=["1d", "2d-last", "2d-first", "3d-middle", "3d-last"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_chunks_match_one_shot(rng, shape, axis, dtype):
    x = (rng.normal(scale=30, size=shape)).astype(dtype)
    n = shape[axis]
    cuts = rng.integers(0, n + 1, size=4)
    state = feed(split(x, axis, cuts), axis=axis)
    want = special.logsumexp(x.astype(np.float64), axis=axis)
    got = state.result()
    assert got.dtype == np.float64 and np.shape(got) == np.shape(want)
    # the state is float64; a float32 chunk is reduced at least to float32
    # precision (the one-shot kernel's vectorised float32 path)
    eps = np.finfo(dtype).eps
    assert_ulps(got, want, x, eps=eps)
    assert state.n_classes == n
    # and the same as lossmle's own one-shot function of the input dtype
    assert_ulps(got, lossmle.logsumexp(x, axis=axis), x, eps=eps)


def test_one_chunk_is_the_one_shot_value(rng):
    # one chunk enters as its own (exact-formula) log-sum-exp: bit for bit
    # scipy's value up to scipy's own rounding; a dominant term included
    x = rng.normal(scale=3, size=(5, 40))
    x[0, 0] = 60.0
    assert_ulps(feed([x]).result(), special.logsumexp(x, axis=-1), x, n=2)


def test_one_value_per_chunk(rng):
    x = rng.normal(scale=5, size=(3, 64))
    state = feed([x[:, j:j + 1] for j in range(64)])
    assert_ulps(state.result(), special.logsumexp(x, axis=-1), x)


def test_scalar_rows_give_a_scalar(rng):
    x = rng.normal(size=17)
    res = feed(split(x, 0, [5, 9])).result()
    assert isinstance(res, np.float64)
    assert_ulps(res, special.logsumexp(x), x)


@pytest.mark.parametrize("order", ["max-first", "max-last"])
def test_dominant_term_keeps_full_precision(order):
    # log(exp(0) + exp(-40)) = log1p(exp(-40)) = 4.248e-18 (closed form); a
    # naive m + log(s) would round it to 0
    chunks = [np.array([0.0]), np.array([-40.0])]
    if order == "max-last":
        chunks.reverse()
    got = feed(chunks).result()
    assert got == math.log1p(math.exp(-40.0))


def test_huge_values_do_not_overflow(mpmath):
    x = np.array([1e300, 1e300 - 1e284, 3.0, -1e300, 1e300])
    got = feed(split(x, 0, [1, 3])).result()
    mpmath.mp.dps = 50
    want = float(mpmath.log(sum(mpmath.exp(mpmath.mpf(v)) for v in x)))
    assert got == want


def test_precision_against_mpmath(rng, mpmath):
    mpmath.mp.dps = 40
    for _ in range(5):
        x = rng.normal(scale=50, size=200)
        got = feed(split(x, 0, rng.integers(0, 201, size=6))).result()
        want = float(mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in x)))
        assert_ulps(got, want, x, n=2)


# ---------------------------------------------------------------------------
# special values, as scipy.special.logsumexp of the concatenation
# ---------------------------------------------------------------------------
SPECIAL_ROWS = {
    "nan-first": [np.nan, 1.0, 2.0, 3.0],
    "nan-last": [1.0, 2.0, 3.0, np.nan],
    "nan-and-inf": [np.inf, 1.0, np.nan, 0.0],
    "inf-early": [np.inf, 1.0, 2.0, 3.0],
    "inf-late": [1.0, 2.0, 3.0, np.inf],
    "two-inf": [np.inf, 1.0, 2.0, np.inf],
    "inf-and-minus-inf": [-np.inf, -np.inf, np.inf, -np.inf],
    "all-minus-inf": [-np.inf] * 4,
    "minus-inf-then-finite": [-np.inf, -np.inf, 3.0, 1.0],
    "finite-then-minus-inf": [3.0, 1.0, -np.inf, -np.inf],
    "ties": [2.0, 2.0, 2.0, 2.0],
}


@pytest.mark.parametrize("row", list(SPECIAL_ROWS), ids=list(SPECIAL_ROWS))
@pytest.mark.parametrize("cuts", [[1, 2, 3], [2], [0, 4]], ids=["1-1-1-1", "2-2", "0-4-0"])
def test_special_values_match_scipy(row, cuts):
    x = np.array(SPECIAL_ROWS[row])
    got = feed(split(x, 0, cuts)).result()
    want = quiet(special.logsumexp, x)
    np.testing.assert_array_equal(got, want)
    # merged from separate states too
    states = [LogSumExpState().update(c) for c in split(x, 0, cuts)]
    merged = states[0]
    for s in states[1:]:
        merged.merge(s)
    np.testing.assert_array_equal(merged.result(), want)


# ---------------------------------------------------------------------------
# merge
# ---------------------------------------------------------------------------
def test_tree_merge_in_any_order_matches_one_shot(rng):
    x = rng.normal(scale=20, size=(5, 300))
    pieces = split(x, 1, rng.integers(0, 301, size=15))
    states = [LogSumExpState().update(p) for p in pieces]
    order = rng.permutation(len(states))
    states = [states[i] for i in order]
    while len(states) > 1:  # pairwise tree, as a distributed reduction
        states = [states[i].merge(states[i + 1]) if i + 1 < len(states) else states[i]
                  for i in range(0, len(states), 2)]
    assert_ulps(states[0].result(), special.logsumexp(x, axis=-1), x)
    assert states[0].n_classes == 300


def test_merge_with_self_adds_log2(rng):
    x = rng.normal(size=(4, 9))
    state = LogSumExpState().update(x)
    state.merge(state)
    assert_ulps(state.result(), special.logsumexp(x, axis=-1) + math.log(2.0), x)


def test_merge_leaves_other_unchanged_and_accepts_empty(rng):
    x = rng.normal(size=(3, 8))
    a = LogSumExpState().update(x[:, :4])
    b = LogSumExpState().update(x[:, 4:])
    before = b.result().copy()
    a.merge(b)
    np.testing.assert_array_equal(b.result(), before)
    r = a.result().copy()
    a.merge(LogSumExpState())                  # no shape yet: a no-op
    np.testing.assert_array_equal(a.result(), r)
    fresh = LogSumExpState().merge(a)          # an empty state adopts a's rows
    np.testing.assert_array_equal(fresh.result(), r)


def test_known_shape_without_chunks_is_minus_inf():
    state = LogSumExpState(shape=(2, 3))
    np.testing.assert_array_equal(state.result(), np.full((2, 3), -np.inf))
    assert state.result().shape == (2, 3)
    # an empty class axis, as the one-shot function
    assert state.update(np.empty((2, 3, 0))).n_classes == 0
    np.testing.assert_array_equal(state.result(), special.logsumexp(np.empty((2, 3, 0)), axis=-1))


# ---------------------------------------------------------------------------
# pickling, copies, threads, inputs
# ---------------------------------------------------------------------------
def test_pickle_round_trip_mid_stream(rng):
    x = rng.normal(scale=10, size=(4, 5, 60))
    pieces = split(x, 2, [10, 25, 40])
    direct = feed(pieces)
    half = feed(pieces[:2])
    restored = pickle.loads(pickle.dumps(half, protocol=pickle.HIGHEST_PROTOCOL))
    assert repr(restored) == repr(half)
    for p in pieces[2:]:
        restored.update(p)
    np.testing.assert_array_equal(restored.result(), direct.result())
    assert_ulps(restored.result(), special.logsumexp(x, axis=-1), x)
    # an unpickled empty state works too
    empty = pickle.loads(pickle.dumps(LogSumExpState(axis=0)))
    assert empty.axis == 0 and empty.shape is None


def test_copy_is_independent(rng):
    x = rng.normal(size=(2, 10))
    a = LogSumExpState().update(x[:, :5])
    b = a.copy()
    b.update(x[:, 5:])
    assert_ulps(a.result(), special.logsumexp(x[:, :5], axis=-1), x)
    assert_ulps(b.result(), special.logsumexp(x, axis=-1), x)


def test_thread_count_does_not_change_bits(rng):
    x = rng.normal(scale=10, size=(512, 400))  # above the parallel threshold
    pieces = split(x, 1, [100, 250])
    one = feed(pieces, n_threads=1).result()
    two = feed(pieces, n_threads=2).result()
    np.testing.assert_array_equal(one, two)


def test_layouts_and_input_dtypes(rng):
    x = rng.normal(size=(6, 20))
    want = special.logsumexp(x, axis=-1)
    strided = np.repeat(x, 2, axis=1)[:, ::2]
    fortran = np.asfortranarray(x)
    readonly = x.copy()
    readonly.setflags(write=False)
    for layout in (strided, fortran, readonly, x[:, ::-1], x.tolist()):
        assert_ulps(feed(split(np.asarray(layout), 1, [7])).result(), want, x)
    ints = np.arange(12).reshape(3, 4)
    assert_ulps(feed([ints[:, :1], ints[:, 1:]]).result(),
                special.logsumexp(ints.astype(float), axis=-1), ints)


def test_chunks_are_not_modified(rng):
    x = rng.normal(size=(3, 9))
    keep = x.copy()
    feed(split(x, 1, [4]))
    np.testing.assert_array_equal(x, keep)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 40)),
               elements=st.floats(-1e3, 1e3, allow_nan=False)),
    st.lists(st.integers(0, 40), max_size=5),
)
def test_property_any_split_matches_scipy(x, cuts):
    cuts = [min(c, x.shape[1]) for c in cuts]
    got = feed(split(x, 1, cuts)).result()
    assert_ulps(got, special.logsumexp(x, axis=-1), x)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    state = LogSumExpState().update(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"chunk has rows of shape \(4,\).*\(2,\)"):
        state.update(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="chunk must have at least one dimension"):
        LogSumExpState().update(1.0)
    with pytest.raises(TypeError, match="chunk"):
        LogSumExpState().update(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="axis"):
        LogSumExpState(axis=1.5)
    with pytest.raises(TypeError, match="axis"):
        LogSumExpState(axis=True)
    with pytest.raises(np.exceptions.AxisError):
        LogSumExpState(axis=2).update(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="other must be a LogSumExpState"):
        state.merge(np.zeros(2))
    with pytest.raises(ValueError, match=r"other has rows of shape \(5,\)"):
        state.merge(LogSumExpState().update(np.zeros((5, 1))))
    with pytest.raises(ValueError, match="row shape is unknown"):
        LogSumExpState().result()
    with pytest.raises(TypeError, match="shape"):
        LogSumExpState(shape=3)
    with pytest.raises(ValueError, match="shape"):
        LogSumExpState(shape=(-1,))
    # the failed calls left the state as it was
    np.testing.assert_array_equal(state.result(), special.logsumexp(np.zeros((2, 3)), axis=-1))


def test_docstring_examples_run():
    import doctest

    import lossmle._streaming as mod
    res = doctest.testmod(mod)
    assert res.attempted > 0 and res.failed == 0
