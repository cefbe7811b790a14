"""Pure loss functions: per-example values with ``where=`` masks.

Reduction is left to the caller (see :func:`masked_mean`).
"""

from jaxunlearn.losses._classification import (
    cross_entropy,
    kl_divergence,
    masked_mean,
    soft_cross_entropy,
)

__all__ = ["cross_entropy", "kl_divergence", "masked_mean", "soft_cross_entropy"]
