"""Shared type aliases. No logic lives here."""

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax

PyTree = Any
Array = jax.Array
PRNGKey = jax.Array
Batch = Mapping[str, Mapping[str, jax.Array]]
"""Fixed-shape batches: ``{"retain": {"image", "label", "mask"}, "forget": {...}}``."""
Metrics = dict[str, jax.Array]
Variables = Mapping[str, PyTree]
"""Flax variables: ``{"params": ..., "batch_stats": ...}``."""


class ApplyFn(Protocol):
    """``apply_fn(variables, x, *, train, key, return_features, mask)``
    ``-> (out, new_variables)``.

    ``mask`` (boolean ``[N]``) marks the real rows of a padded batch; in
    training mode BatchNorm statistics are computed over those rows only.
    """

    def __call__(
        self,
        variables: Variables,
        x: jax.Array,
        *,
        train: bool = False,
        key: jax.Array | None = None,
        return_features: bool = False,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, Variables]: ...


InitFn = Callable[[jax.Array], Variables]
