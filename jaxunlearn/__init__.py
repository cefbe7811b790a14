"""jaxunlearn: machine unlearning in JAX/Flax.

The package exposes namespaces, not names::

    from jaxunlearn import data, models, losses, methods, eval, select, train

Library code is pure functions over pytrees; ``jax.jit``/``jax.vmap`` are applied
at the edge (``jaxunlearn.train``, the CLI and the experiment drivers).
"""

__version__ = "0.1.0"

from jaxunlearn import data, eval, losses, methods, models, select, train  # noqa: E402

__all__ = [
    "data",
    "eval",
    "losses",
    "methods",
    "models",
    "select",
    "train",
    "__version__",
]
