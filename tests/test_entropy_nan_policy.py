"""entropy(..., nan_policy=..., keepdims=...) as scipy.stats.entropy."""
import numpy as np
import pytest

import lossmle as lm

st = pytest.importorskip("scipy.stats")

NAN = np.nan


def data(seed, shape=(4, 5, 3)):
    rng = np.random.default_rng(seed)
    p = rng.random(shape)
    q = rng.random(shape)
    p.flat[rng.choice(p.size, 9, replace=False)] = NAN
    q.flat[rng.choice(q.size, 5, replace=False)] = NAN
    p[0, :, 0] = NAN           # a whole distribution of nan
    return p, q


@pytest.mark.parametrize("axis", [0, 1, -1, None, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("with_q", [False, True])
@pytest.mark.parametrize("policy", ["propagate", "omit"])
def test_as_scipy(axis, keepdims, with_q, policy):
    p, q = data(1)
    qk = q if with_q else None
    if isinstance(axis, tuple):
        # scipy's entropy takes one axis: the reference moves both to the end, flattened
        pp = np.moveaxis(p, axis, (-2, -1)).reshape(p.shape[1], -1)
        qq = None if qk is None else np.moveaxis(qk, axis, (-2, -1)).reshape(p.shape[1], -1)
        want = st.entropy(pp, qq, axis=-1, nan_policy=policy)
        if keepdims:
            want = want.reshape(1, -1, 1)
    else:
        want = st.entropy(p, qk, axis=axis, nan_policy=policy, keepdims=keepdims)
    got = lm.entropy(p, qk, axis=axis, nan_policy=policy, keepdims=keepdims, base=None)
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    got2 = lm.entropy(p, qk, axis=axis, nan_policy=policy, keepdims=keepdims, base=2)
    np.testing.assert_allclose(got2, np.asarray(want) / np.log(2), rtol=1e-13, atol=1e-15)


def test_raise_and_clean_inputs():
    p, q = data(2)
    with pytest.raises(ValueError, match="nan"):
        lm.entropy(p, nan_policy="raise")
    with pytest.raises(ValueError, match="nan"):
        lm.entropy(np.abs(q[1]) + 0.1, q, nan_policy="raise")
    clean = np.random.default_rng(3).random((6, 4))
    for policy in ("propagate", "omit", "raise"):
        np.testing.assert_array_equal(lm.entropy(clean, nan_policy=policy),
                                      lm.entropy(clean))


def test_all_nan_and_float32():
    assert lm.entropy([NAN, NAN], nan_policy="omit") == st.entropy([NAN, NAN],
                                                                  nan_policy="omit")
    x = np.array([[0.2, NAN, 0.5], [0.1, 0.1, NAN]], dtype=np.float32)
    got = lm.entropy(x, axis=1, nan_policy="omit")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, st.entropy(x.astype(np.float64), axis=1, nan_policy="omit"),
                               rtol=1e-6)


@pytest.mark.parametrize("bad", ["ignore", None, "OMIT"])
def test_bad_policy_names_itself(bad):
    with pytest.raises(ValueError, match="nan_policy"):
        lm.entropy([0.5, 0.5], nan_policy=bad)
