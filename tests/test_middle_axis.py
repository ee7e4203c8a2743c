"""Rows along a middle axis (torch's (N, C, d1..) layout) and rows of 9..64 values.

A middle axis of a C-ordered array is read a tile of neighbouring rows at a
time: rows of up to 64 values by the across-rows kernel for such rows, which
reads them in place; longer rows gathered into a contiguous buffer and run by
the contiguous-row kernels.  Contiguous rows of 9..40 values on the AVX-512
path, 9..20 on the others and for softmax, take the same across-rows kernel
through a transposed copy.  Checked on every SIMD path, both dtypes, one and
two threads, with special values: against scipy.special and torch (float64
oracles), mpmath for the ulp bound, and bit for bit against the same rows
laid out along the last axis where both layouts run the same kernel (rows
within that limit, or > 64 values; longer medium rows are read in place
along a middle axis but row-wise along the last, so they agree to the
oracle's tolerance, not to the bit).
"""
import numpy as np
import pytest
import scipy.special as sps

import lossmle as lm
from oracles import max0_rows as _max0_rows, np_cross_entropy_rows

TOL = {np.float64: 4e-15, np.float32: 2e-6}
FUNCS = {
    "logsumexp": (lm.logsumexp, sps.logsumexp),
    "softmax": (lm.softmax, sps.softmax),
    "log_softmax": (lm.log_softmax, sps.log_softmax),
}


def make_array(shape, axis, dtype, seed):
    """Random values with special rows along ``axis`` at spread positions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape)
    moved = np.moveaxis(x, axis, -1)          # a view: writes land in x
    flat = moved.reshape(-1, shape[axis])     # a copy unless contiguous
    n_rows = flat.shape[0]
    picks = rng.choice(n_rows, size=min(n_rows, 8), replace=False)
    kinds = [
        lambda r: r.__setitem__(0, np.nan),
        lambda r: r.__setitem__(-1, np.inf),
        lambda r: r.__setitem__(slice(None), -np.inf),
        lambda r: r.__setitem__(0, -np.inf),
        lambda r: r.__setitem__(slice(None), 7.0),             # ties at the max
        lambda r: r.__setitem__(1 % len(r), r[0] - 700.0),     # softmax near underflow
        lambda r: r.__setitem__(slice(None), np.linspace(-1e3, 1e3, len(r))),
        lambda r: r.__setitem__(1 % len(r), r[0] - 669.0),
    ]
    for pick, kind in zip(picks, kinds):
        row = flat[pick].copy()
        kind(row)
        flat[pick] = row
    moved[...] = flat.reshape(moved.shape)
    return x.astype(dtype)


def oracle(theirs, x, axis):
    """scipy's answer in float64 (its nan/inf rows warn; they are expected)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return theirs(x.astype(np.float64), axis=axis)


def check_close(got, want, dtype, scale):
    """TOL relative, plus TOL * scale absolute (log_softmax near 0 carries the
    error of the row's logsumexp, of the size of its largest |value|)."""
    want = want.astype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    err = np.abs(got[finite].astype(np.float64) - want[finite].astype(np.float64))
    bound = TOL[dtype] * (np.abs(want[finite]) + scale[finite])
    assert np.all(err <= bound), f"max error {err.max()}"


def row_scale(x, axis, keep_shape):
    """max |finite value| of each row, broadcast like the result."""
    a = np.where(np.isfinite(x), np.abs(x.astype(np.float64)), 0.0).max(axis=axis, keepdims=True)
    return np.broadcast_to(a, x.shape) if keep_shape else np.squeeze(a, axis)


def along_last(func, x, axis, **kw):
    """func over the last axis of a contiguous copy with ``axis`` moved there."""
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))
    res = func(moved, axis=-1, **kw)
    return res if res.ndim < x.ndim else np.moveaxis(res, -1, axis)


SHAPES = [
    ((4, 3, 37), 1),          # short rows, gathered
    ((3, 9, 70), 1),          # medium: the across-rows kernel, in place
    ((2, 16, 5, 7), 1),
    ((2, 21, 130), 1),        # medium, past softmax's last-axis limit of 20
    ((2, 40, 70), 1),         # the last-axis limit of the others
    ((3, 41, 9), 1),          # past it
    ((2, 64, 65), -2),
    ((3, 65, 19), 1),         # long: gathered tiles
    ((2, 300, 40), 1),
    ((10, 6, 3), 0),          # the first axis of three
    ((1, 12, 200), 1),        # one slab, several 64-row blocks
]


def contiguous_col_limit(name, path):
    """Contiguous rows of up to this many values take the across-rows kernel
    for medium rows (through a transposed copy) on this SIMD path."""
    return 40 if path == "avx512" and name != "softmax" else 20


def same_kernel_both_layouts(name, n, path):
    """Rows of n values run the same kernel along the last axis as along a
    middle one: the across-rows kernel (contiguous rows within
    contiguous_col_limit; a middle axis of up to 64, in place) or the
    contiguous-row kernels (gathered tiles of 65+)."""
    return n <= contiguous_col_limit(name, path) or n > 64


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=[f"{s}ax{a}" for s, a in SHAPES])
@pytest.mark.parametrize("name", list(FUNCS))
def test_middle_axis_matches_scipy(simd_path, name, shape, axis, dtype, n_threads):
    ours, theirs = FUNCS[name]
    x = make_array(shape, axis, dtype, seed=sum(shape) + axis)
    before = x.copy()
    got = ours(x, axis=axis, n_threads=n_threads)
    np.testing.assert_array_equal(x, before)                 # input untouched
    want = oracle(theirs, x, axis)
    assert got.dtype == dtype and got.shape == want.shape
    check_close(got, want, dtype, row_scale(x, axis, name != "logsumexp"))
    # the same bits for any thread count
    np.testing.assert_array_equal(got, ours(x, axis=axis, n_threads=3 - n_threads))
    if same_kernel_both_layouts(name, shape[axis], simd_path):
        np.testing.assert_array_equal(got, along_last(ours, x, axis, n_threads=n_threads))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,axis", SHAPES, ids=[f"{s}ax{a}" for s, a in SHAPES])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_middle_axis_in_place(simd_path, name, shape, axis, dtype):
    """out=x: every row is read before its tile is written back."""
    ours, _ = FUNCS[name]
    x = make_array(shape, axis, dtype, seed=7 + sum(shape))
    want = ours(x, axis=axis)
    res = ours(x, axis=axis, out=x)
    assert res is x
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", [9, 10, 12, 16, 20, 21, 24, 33, 40, 41, 64, 65])
@pytest.mark.parametrize("name", list(FUNCS))
def test_medium_rows_match_scipy(simd_path, name, n_cols, dtype):
    """Contiguous rows on both sides of the across-rows kernel's limits (40
    along the last axis, softmax 20), with the special rows, 1000 rows (a
    tail block)."""
    ours, theirs = FUNCS[name]
    x = make_array((1000, n_cols), 1, dtype, seed=n_cols)
    got = ours(x, axis=-1)
    want = oracle(theirs, x, -1)
    check_close(got, want, dtype, row_scale(x, -1, name != "logsumexp"))
    np.testing.assert_array_equal(got, ours(x, axis=-1, n_threads=1))
    # a single row gets the bits it gets among many
    for r in (0, 500, 999):
        np.testing.assert_array_equal(ours(x[r], axis=-1), got[r])


@pytest.mark.parametrize("n_cols,layout", [
    (9, "last"), (20, "last"), (21, "last"), (40, "last"),
    (9, "middle"), (20, "middle"), (21, "middle"), (64, "middle"),
])
def test_medium_logsumexp_at_max_zero_within_two_ulp(simd_path, mpmath, n_cols, layout):
    """Rows whose max is 0: logsumexp is log1p(s) itself, nothing dilutes the
    kernel's log error; within 2 ulp of mpmath wherever the medium-row kernel
    runs (contiguous rows within contiguous_col_limit, a middle axis of <=
    64).  (With a plain running sum instead of the compensated one, 15 of 24
    such cases - 4 widths x 2 layouts x 3 paths - failed, at up to 3 ulp.
    Longer contiguous rows are summed lane-wise by the row kernels: up to 2.4
    ulp, as the README says, and 3 in the debug build's avx2 / baseline
    code.)"""
    if layout == "last" and n_cols > contiguous_col_limit("logsumexp", simd_path):
        pytest.skip(f"{n_cols}-value contiguous rows run row-wise on {simd_path}")
    x, exact = _max0_rows(n_cols)
    if layout == "last":
        got = lm.logsumexp(x, axis=-1)
    else:
        got = lm.logsumexp(np.ascontiguousarray(x.T)[None], axis=1)[0]
    err = np.abs(got - exact) / np.spacing(exact)
    assert err.max() <= 2.0, f"{err.max():.2f} ulp at row {np.argmax(err)}"


def test_non_contiguous_middle_axis_still_right():
    """A strided view takes the row-wise path: same oracle."""
    x = make_array((3, 12, 40), 1, np.float64, seed=5)[:, :, ::3]
    for name, (ours, theirs) in FUNCS.items():
        check_close(ours(x, axis=1), oracle(theirs, x, 1), np.float64,
                    row_scale(x, 1, name != "logsumexp"))


# ---- cross-entropy with the class axis in the middle ----

CE_SHAPES = [(4, 3, 37), (3, 10, 70), (2, 21, 5, 13), (2, 40, 9), (2, 41, 9), (2, 64, 9),
             (2, 65, 30), (2, 300, 20)]
CE_OPTIONS = [{}, {"weight": True}, {"label_smoothing": 0.1},
              {"weight": True, "label_smoothing": 0.25}, {"ignore_index": 1}]


def ce_case(shape, dtype, seed, option):
    rng = np.random.default_rng(seed)
    x = (rng.normal(scale=4.0, size=shape)).astype(dtype)
    target = rng.integers(0, shape[1], size=(shape[0],) + shape[2:])
    target.flat[::9] = option.get("ignore_index", -100)      # some rows ignored
    weight = rng.uniform(0.1, 2.0, size=shape[1])
    return x, target, weight


def ce_kwargs(option, weight):
    kw = dict(option)
    if kw.get("weight"):
        kw["weight"] = weight
    return kw


def log_softmax_pick(x, target, weight, label_smoothing=0.0, ignore_index=-100):
    """torch's per-row loss along axis 1 (the oracle's, in float64)."""
    return np_cross_entropy_rows(x, target, 1, weight, ignore_index, label_smoothing)[0]


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("option", CE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_cross_entropy_middle_axis_matches_scipy(simd_path, shape, option, dtype, n_threads):
    x, target, weight = ce_case(shape, dtype, seed=sum(shape), option=option)
    x.flat[11] = np.nan
    x.flat[23] = np.inf
    kw = ce_kwargs(option, weight)
    got = lm.cross_entropy(x, target, axis=1, reduction="none", n_threads=n_threads, **kw)
    want = log_softmax_pick(x, target, kw.get("weight"), kw.get("label_smoothing", 0.0),
                            kw.get("ignore_index", -100))
    assert got.shape == target.shape
    scale = np.abs(x[np.isfinite(x)]).max()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=TOL[dtype] * 4,
                               atol=TOL[dtype] * 4 * scale)
    np.testing.assert_array_equal(
        got, lm.cross_entropy(x, target, axis=1, reduction="none", n_threads=3 - n_threads,
                              **kw))
    # the bits of the same rows along the last axis, but for the plain loss of
    # 41..64 classes (read in place along a middle axis, row-wise along the last)
    plain = not (option.get("weight") or option.get("label_smoothing"))
    if not plain or same_kernel_both_layouts("cross_entropy", shape[1], simd_path):
        moved = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        np.testing.assert_array_equal(
            got, lm.cross_entropy(moved, target, reduction="none", n_threads=n_threads, **kw))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("option", CE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_cross_entropy_with_grad_middle_axis(simd_path, shape, option, dtype):
    """The gradient along a middle class axis: torch autograd's (float64), and
    bit for bit the gradient of the same rows along the last axis (the tiles
    run the contiguous rows' kernels); the loss too where those rows are."""
    torch = pytest.importorskip("torch")
    x, target, weight = ce_case(shape, dtype, seed=3 + sum(shape), option=option)
    kw = ce_kwargs(option, weight)
    loss, grad = lm.cross_entropy_with_grad(x, target, axis=1, **kw)
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    tkw = {k: torch.from_numpy(v) if k == "weight" else v for k, v in kw.items()}
    want = torch.nn.functional.cross_entropy(xt, torch.from_numpy(target), **tkw)
    want.backward()
    assert abs(loss - want.item()) <= TOL[dtype] * 8 * max(1.0, abs(want.item()))
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=0, atol=TOL[dtype] * 4)
    moved = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    loss_last, grad_last = lm.cross_entropy_with_grad(moved, target, **kw)
    np.testing.assert_array_equal(grad, np.moveaxis(grad_last, -1, 1))
    assert loss == loss_last


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("n_cols", [9, 10, 16, 20, 21, 32, 40, 41])
def test_cross_entropy_medium_rows(simd_path, n_cols, dtype):
    """Contiguous rows of 9..40 classes (and 41, past the limit): the plain loss through the medium-row
    kernel (a transposed copy), special rows redone row-wise; against scipy's
    log_softmax, the same bits for one or two threads, and 'sum' the blocked
    pairwise sum of 'none' (the total skips the row array)."""
    x, target, _ = ce_case((1000, n_cols), dtype, seed=n_cols, option={})
    x[3, 2] = np.nan
    x[5, :] = -np.inf
    x[7, 1] = -np.inf
    x[9, 0] = np.inf
    x[11, :] = 4.0
    got = lm.cross_entropy(x, target, reduction="none")
    want = log_softmax_pick(x, target, None)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=TOL[dtype] * 4,
                               atol=TOL[dtype] * 4 * np.abs(x[np.isfinite(x)]).max())
    np.testing.assert_array_equal(got, lm.cross_entropy(x, target, reduction="none",
                                                        n_threads=1))
    if dtype is np.float64:   # (float32 'none' is rounded; the sums are not)
        clean = np.isfinite(x).all(axis=1)
        xs, ts = x[clean], target[clean]
        rows = lm.cross_entropy(xs, ts, reduction="none")
        blocks = [np.sum(rows[i:i + 256]) for i in range(0, len(rows), 256)]
        assert lm.cross_entropy(xs, ts, reduction="sum") == 0.0 + np.sum(np.array(blocks))


# ---- KL divergence and entropy over a middle axis (gathered tiles) ----

DIV_SHAPES = [((3, 5, 40), 1), ((2, 17, 9), 1), ((4, 100, 33), 1), ((2, 3, 4, 5), 2),
              ((30, 7), 0), ((300, 50), 0), ((2, 1, 8), 1)]


def prob_pair(shape, axis, dtype, seed):
    rng = np.random.default_rng(seed)
    p = rng.random(shape)
    q = rng.random(shape)
    if shape[axis] > 1:
        p.flat[3] = 0.0                           # a zero term (0 log 0 = 0)
    p /= p.sum(axis=axis, keepdims=True)
    q /= q.sum(axis=axis, keepdims=True)
    return p.astype(dtype), q.astype(dtype)


@pytest.mark.parametrize("n_threads", [1, 2], ids=["T1", "T2"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape,axis", DIV_SHAPES, ids=[f"{s}ax{a}" for s, a in DIV_SHAPES])
def test_divergences_middle_axis(simd_path, shape, axis, dtype, n_threads):
    """kl_divergence, entropy and the relative entropy over a middle axis (and
    scipy.stats.entropy's default axis 0): scipy's values, and the bits of the
    same rows along the last axis (the tiles run the contiguous rows' code)."""
    import scipy.stats as sst
    p, q = prob_pair(shape, axis, dtype, seed=sum(shape) + axis)
    tol = 1e-5 if dtype is np.float32 else 1e-13
    p64, q64 = p.astype(np.float64), q.astype(np.float64)
    moved = [np.ascontiguousarray(np.moveaxis(a, axis, -1)) for a in (p, q)]
    cases = [
        (lm.kl_divergence(p, q, axis=axis, n_threads=n_threads),
         sps.rel_entr(p64, q64).sum(axis=axis),
         lm.kl_divergence(*moved, axis=-1, n_threads=n_threads)),
        (lm.entropy(p, axis=axis, n_threads=n_threads), sst.entropy(p64, axis=axis),
         lm.entropy(moved[0], axis=-1, n_threads=n_threads)),
        (lm.entropy(p, q, axis=axis, n_threads=n_threads), sst.entropy(p64, q64, axis=axis),
         lm.entropy(*moved, axis=-1, n_threads=n_threads)),
    ]
    for got, want, along_last_axis in cases:
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 1e-2, equal_nan=True)
        np.testing.assert_array_equal(got, along_last_axis)
    if p.ndim == 2 and axis == 0:     # the default axis, through the fast path
        np.testing.assert_array_equal(lm.entropy(p), cases[1][0])


def test_kl_middle_axis_still_validates():
    """A negative probability along a middle axis raises, as along the last."""
    p, q = prob_pair((3, 20, 40), 1, np.float64, seed=1)
    p[1, 5, 7] = -0.1
    with pytest.raises(ValueError, match="p"):
        lm.kl_divergence(p, q, axis=1)


# ---- the layouts around the fast branches ----

@pytest.mark.parametrize("name", list(FUNCS))
def test_long_middle_rows_run_strided(name):
    """Rows longer than the tiles take (70000 values along axis 1) are not
    gathered (a buffer of the input's order of size): they run strided, in
    place - same oracle."""
    ours, theirs = FUNCS[name]
    x = make_array((1, 70000, 3), 1, np.float64, seed=4)
    got = ours(x, axis=1, n_threads=2)
    check_close(got, oracle(theirs, x, 1), np.float64, row_scale(x, 1, name != "logsumexp"))


def test_long_middle_rows_cross_entropy_and_divergences():
    x, target, _ = ce_case((1, 70000, 3), np.float64, seed=6, option={})
    got = lm.cross_entropy(x, target, axis=1, reduction="none")
    np.testing.assert_allclose(got, log_softmax_pick(x, target, None), rtol=1e-13,
                               atol=1e-13 * np.abs(x).max())
    p, q = prob_pair((1, 70000, 3), 1, np.float64, seed=6)
    np.testing.assert_allclose(lm.kl_divergence(p, q, axis=1),
                               sps.rel_entr(p, q).sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis", [((4, 21, 3000), 1), ((3, 9, 5000), 1), ((2, 300, 500), 1)])
def test_middle_axis_out_buffers_and_threads(name, shape, axis):
    """out= a strided buffer, and out=x with two threads (inputs large enough
    to be split between them): the fresh result's bits."""
    ours, _ = FUNCS[name]
    x = make_array(shape, axis, np.float64, seed=sum(shape))
    want = ours(x, axis=axis, n_threads=1)
    wide = np.full(shape[:-1] + (2 * shape[-1],), 7.0)
    res = ours(x, axis=axis, out=wide[..., ::2], n_threads=2)
    np.testing.assert_array_equal(res, want)
    np.testing.assert_array_equal(wide[..., 1::2], 7.0)      # nothing written between
    same = x.copy()
    assert ours(same, axis=axis, out=same, n_threads=2) is same
    np.testing.assert_array_equal(same, want)


@pytest.mark.parametrize("shape,axis", [((5, 1, 7), 1), ((5, 1), -1), ((1, 12), -1),
                                        ((1, 9, 1), 1), ((12,), 0)])
@pytest.mark.parametrize("name", list(FUNCS))
def test_one_value_and_one_row(name, shape, axis):
    """Axes of length 1 on either side of the reduced one, through the fast
    path and (out=) the general path: scipy's values, the same bits."""
    ours, theirs = FUNCS[name]
    x = make_array(shape, axis, np.float64, seed=len(shape) + shape[axis])
    got = ours(x, axis=axis)
    check_close(got, oracle(theirs, x, axis), np.float64,
                row_scale(x, axis, name != "logsumexp"))
    buf = np.empty_like(got)
    np.testing.assert_array_equal(ours(x, axis=axis, out=buf), got)


@pytest.mark.parametrize("n_classes", [3, 12, 40, 100])
def test_cross_entropy_grad_out_middle_axis(n_classes):
    """grad_out= along a middle axis - a separate buffer, a strided one, the
    logits themselves: the fresh gradient's bits."""
    x, target, _ = ce_case((3, n_classes, 70), np.float64, seed=n_classes, option={})
    loss, grad = lm.cross_entropy_with_grad(x, target, axis=1)
    for buf in (np.empty_like(x), np.empty(x.shape[:-1] + (140,))[..., ::2]):
        loss2, grad2 = lm.cross_entropy_with_grad(x, target, axis=1, grad_out=buf)
        assert grad2 is buf and loss2 == loss
        np.testing.assert_array_equal(grad2, grad)
    own = x.copy()
    loss3, grad3 = lm.cross_entropy_with_grad(own, target, axis=1, grad_out=own)
    assert grad3 is own and loss3 == loss
    np.testing.assert_array_equal(own, grad)
