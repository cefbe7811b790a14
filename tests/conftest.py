"""Shared fixtures (environment set-up is in the root conftest.py)."""

import jax
import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    from jaxunlearn import data

    return data.load("digits")


@pytest.fixture(scope="session")
def digits_class_split(digits):
    from jaxunlearn import data

    return data.split(digits, "class", forget_classes=3, seed=0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def key():
    return jax.random.key(0)
