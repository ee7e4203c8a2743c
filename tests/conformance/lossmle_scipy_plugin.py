"""pytest plugin: SciPy's own test modules, with SciPy's functions replaced by lossmle's.

Loaded with ``-p lossmle_scipy_plugin`` into a pytest run of SciPy's
installed tests (numpy backend).  At configure time, before any test module
is imported, ``scipy.special.logsumexp / softmax / log_softmax / rel_entr``
and ``scipy.stats.entropy`` become thin adapters that call lossmle (looked up
at call time, so a broken lossmle function breaks the upstream tests: see
``LOSSMLE_CONFORMANCE_SABOTAGE``).  Test modules that did
``from scipy.special import logsumexp`` therefore hold the adapter.

LOSSMLE_CONFORMANCE_SABOTAGE=1 replaces those lossmle functions by ones
that raise (the proof that the layer calls lossmle: every test fails).
"""
import os

import numpy as np

_PATCHED = {}


# The adapters: scipy's signatures, lossmle's work.  Module-level (picklable
# by name, as upstream's tests pickle the functions they test).
def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    import lossmle as lm
    return lm.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)


def softmax(x, axis=None):
    import lossmle as lm
    return lm.softmax(x, axis=axis)


def log_softmax(x, axis=None):
    import lossmle as lm
    return lm.log_softmax(x, axis=axis)


def entropy(pk, qk=None, base=None, axis=0, *, nan_policy="propagate", keepdims=False,
            _no_deco=False):
    # _no_deco: scipy's private switch past its nan/axis decorator, which
    # upstream's tests use for the reference on cleaned data; lossmle has no
    # decorator, so that reference is lossmle's own result on the clean data
    import lossmle as lm
    return lm.entropy(pk, qk, base=base, axis=axis, nan_policy=nan_policy, keepdims=keepdims)


def rel_entr(x, y, out=None, **kwargs):
    """The elementwise term, as lossmle's KL of one-value distributions."""
    import lossmle as lm
    if kwargs:
        raise TypeError(f"unsupported ufunc keywords {sorted(kwargs)}")
    x, y = np.broadcast_arrays(np.asarray(x), np.asarray(y))
    res = lm.kl_divergence(x[..., None], y[..., None], validate=False)
    if out is not None:
        out[...] = res
        return out
    return res


def _adapters():
    return {"logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax,
            "rel_entr": rel_entr, "entropy": entropy}


class Sabotaged(RuntimeError):
    pass


def _sabotage():
    """Make the lossmle functions the adapters call raise: every upstream test
    that reaches one must then fail."""
    import lossmle as lm

    def broken(name):
        def call(*args, **kwargs):
            raise Sabotaged(f"lossmle.{name} sabotaged")
        return call

    for name in ("logsumexp", "softmax", "log_softmax", "entropy", "kl_divergence"):
        setattr(lm, name, broken(name))


def pytest_configure(config):
    import scipy.special
    import scipy.stats

    if os.environ.get("LOSSMLE_CONFORMANCE_SABOTAGE"):
        _sabotage()
    from scipy._lib import _array_api

    ad = _adapters()
    table = _array_api.xp_capabilities_table   # the test modules' marks look adapters up
    for mod, names in ((scipy.special, ("logsumexp", "softmax", "log_softmax", "rel_entr")),
                       (scipy.stats, ("entropy",))):
        for name in names:
            orig = getattr(mod, name)
            _PATCHED[(mod, name)] = orig
            if orig in table:
                table[ad[name]] = table[orig]
            setattr(mod, name, ad[name])


def pytest_report_header(config):
    import lossmle
    return f"lossmle conformance: scipy functions replaced by lossmle from {lossmle.__file__}"
