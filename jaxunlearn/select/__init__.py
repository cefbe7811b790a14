"""Distributional unlearning (paper 002): decide which samples to delete so the
data moves away from an unwanted distribution and stays close to the kept one.

* ``gaussian_kl`` / ``gaussian_kl_general``, ``pareto_frontier`` (Prop. 1)
  and ``optimal_edit`` (the edited Gaussian that attains it);
* ``ExpFamily`` with ``bernoulli`` / ``poisson`` / ``gaussian_known_variance``
  and ``exp_family_frontier`` (Prop. 3, solved from its KKT condition);
* ``random_removal_bound`` / ``selective_removal_bound`` (Thms 1-2) and
  ``simulate_removal`` to check them;
* deletion scores ``cos_mu2``, ``lr_cos``, ``maha_mu2``, ``lr_maha``,
  ``knn_ratio``, ``norm``, ``random`` (``score`` by name, ``fit_gaussian``);
* ``select_for_removal`` (jit / vmap over budgets and seeds) and
  ``edit_dataset`` (kept indices plus a manifest).

Example::

    >>> import jax.numpy as jnp
    >>> from jaxunlearn import select
    >>> delta = select.gaussian_kl(jnp.zeros(2), jnp.ones(2), jnp.eye(2))
    >>> float(delta), float(select.pareto_frontier(4.0, delta))
    (1.0, 1.0)
"""

from jaxunlearn.select._bounds import (
    folded_normal_cdf,
    folded_normal_quantile,
    kept_weight,
    random_removal_bound,
    selective_removal_bound,
    simulate_removal,
)
from jaxunlearn.select._edit import (
    budget_from_fraction,
    edit_dataset,
    select_for_removal,
)
from jaxunlearn.select._expfamily import (
    ExpFamily,
    bernoulli,
    exp_family_frontier,
    gaussian_known_variance,
    poisson,
)
from jaxunlearn.select._gaussian import (
    gaussian_kl,
    gaussian_kl_general,
    optimal_edit,
    pareto_frontier,
)
from jaxunlearn.select._scores import (
    SCORES,
    cos_mu2,
    fit_gaussian,
    knn_ratio,
    knn_sq_distances,
    ledoit_wolf,
    lr_cos,
    lr_maha,
    maha_mu2,
    norm,
    random,
    score,
)

__all__ = [
    "SCORES",
    "ExpFamily",
    "bernoulli",
    "budget_from_fraction",
    "cos_mu2",
    "edit_dataset",
    "exp_family_frontier",
    "fit_gaussian",
    "folded_normal_cdf",
    "folded_normal_quantile",
    "gaussian_kl",
    "gaussian_kl_general",
    "gaussian_known_variance",
    "kept_weight",
    "knn_ratio",
    "knn_sq_distances",
    "ledoit_wolf",
    "lr_cos",
    "lr_maha",
    "maha_mu2",
    "norm",
    "optimal_edit",
    "pareto_frontier",
    "poisson",
    "random",
    "random_removal_bound",
    "score",
    "select_for_removal",
    "selective_removal_bound",
    "simulate_removal",
]
