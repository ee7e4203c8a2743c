"""The API reference's lists of names, generated from ``lossmle.__all__``.

``docs/conf.py`` calls :func:`render` and writes its output to
``docs/_api_names.rst``, which ``docs/api.rst`` includes.  SECTIONS only
orders and groups the names: a public name that no section lists is put under
"Other" rather than left out, so adding a name to ``lossmle.__all__`` is all
it takes to document it (``tests/test_packaging_docs.py`` checks that every name is
listed).
"""

SECTIONS = [
    ("Log-sum-exp and softmax",
     "Drop-in replacements for the ``scipy.special`` functions.",
     ["logsumexp", "softmax", "log_softmax", "softmax_backward", "log_softmax_backward"]),
    ("Losses",
     "The ``torch.nn.functional`` losses, with their gradients in the same pass.",
     ["cross_entropy", "cross_entropy_with_grad", "nll_loss", "nll_loss_with_grad",
      "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_with_grad",
      "linear_cross_entropy", "linear_cross_entropy_with_grad"]),
    ("Divergences and entropy",
     "KL divergence and entropy of probabilities (``scipy.special.rel_entr``, "
     "``scipy.stats.entropy``) and of logits.",
     ["kl_divergence", "kl_div", "entropy", "kl_divergence_from_logits",
      "kl_divergence_from_logits_with_grad", "js_divergence_from_logits",
      "entropy_from_logits"]),
    ("Evaluation",
     "Several metrics from one read of the logits.",
     ["evaluate_logits"]),
    ("Maximum likelihood",
     "Likelihoods of samples, the empirical KL divergence and a model fitted by "
     "maximum likelihood.",
     ["log_likelihood", "negative_log_likelihood", "empirical_kl", "SoftmaxRegression",
      "ConvergenceWarning"]),
    ("Streaming",
     "Log-sum-exp over a class axis that arrives in pieces.",
     ["LogSumExpState"]),
    ("Threads and configuration", "",
     ["set_num_threads", "get_num_threads", "show_config"]),
]

#: public names that are not functions or classes to document
NOT_DOCUMENTED = {"__version__"}


def _autosummary(names):
    lines = [".. autosummary::", "   :toctree: generated/", "   :nosignatures:", ""]
    lines += [f"   {n}" for n in names]
    return lines + [""]


def render(module):
    """reST for the API page: one autosummary list per section."""
    public = [n for n in module.__all__ if n not in NOT_DOCUMENTED]
    seen = set()
    # stated here too: autosummary's stub generator reads this file on its own
    out = [f".. currentmodule:: {module.__name__}", ""]
    for title, blurb, names in SECTIONS:
        names = [n for n in names if n in public]
        if not names:
            continue
        seen.update(names)
        out += [title, "-" * len(title), ""]
        if blurb:
            out += [blurb, ""]
        out += _autosummary(names)
    rest = [n for n in public if n not in seen]
    if rest:
        out += ["Other", "-----", ""] + _autosummary(rest)
    return "\n".join(out)
