"""jaxunlearn: machine unlearning in JAX/Flax.

The package exposes namespaces, not names::

    from jaxunlearn import condense, data, models, losses, methods, eval, select, train

Library code is pure functions over pytrees; ``jax.jit``/``jax.vmap`` are applied
at the edge (``jaxunlearn.train``, the CLI and the experiment drivers).
"""

__version__ = "0.1.0"

from jaxunlearn import (  # noqa: E402
    condense,
    data,
    eval,
    losses,
    methods,
    models,
    select,
    train,
)

__all__ = [
    "condense",
    "data",
    "eval",
    "losses",
    "methods",
    "models",
    "select",
    "train",
    "__version__",
]
