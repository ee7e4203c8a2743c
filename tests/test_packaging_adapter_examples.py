"""The adapters' training examples: lossmle's loss curves equal the framework's own."""
import importlib.util
import os

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_torch_example_curves_agree():
    pytest.importorskip("torch")
    worst = _load("train_torch").main(steps=12, verbose=False)
    assert 0 <= worst <= 1e-6


def test_train_jax_example_curves_agree():
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    try:
        worst = _load("train_jax").main(steps=12, verbose=False)
    finally:
        jax.config.update("jax_enable_x64", previous)
    assert 0 <= worst <= 1e-6
