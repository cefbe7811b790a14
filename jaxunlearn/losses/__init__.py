"""Pure loss functions: per-example values with ``where=`` masks.

Reduction is left to the caller (see :func:`masked_mean`).
"""

from jaxunlearn.losses._classification import (
    cross_entropy,
    kl_divergence,
    masked_mean,
    soft_cross_entropy,
)
from jaxunlearn.losses._distribution import (
    aamu_loss,
    gaussian_mmd2,
    probit_transform,
    soft_ecdf,
)
from jaxunlearn.losses._ot import sinkhorn_cost
from jaxunlearn.losses._reweight import STRATEGIES, reweighted_targets

__all__ = [
    "STRATEGIES",
    "aamu_loss",
    "gaussian_mmd2",
    "probit_transform",
    "soft_ecdf",
    "cross_entropy",
    "kl_divergence",
    "masked_mean",
    "reweighted_targets",
    "sinkhorn_cost",
    "soft_cross_entropy",
]
