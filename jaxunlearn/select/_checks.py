"""Input validation that is skipped under tracing (values unknown there)."""

from typing import Any

import jax
import numpy as np


def concrete(x: Any) -> np.ndarray | None:
    """``x`` as a numpy array, or None when it is a tracer."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def check_nonnegative(name: str, x: Any) -> None:
    v = concrete(x)
    if v is not None and (np.any(np.isnan(v)) or np.any(v < 0)):
        raise ValueError(f"{name} must be >= 0, got {v}.")


def check_matrix(name: str, x: Any, ndim: int = 2) -> None:
    if np.ndim(x) != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {np.shape(x)}.")
    if np.shape(x)[0] == 0:
        raise ValueError(f"{name} is empty (shape {np.shape(x)}).")
