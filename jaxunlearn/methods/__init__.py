"""Unlearning methods: factories returning ``Method(init, step)``.

Use the registry to build one by name::

    from jaxunlearn import methods
    methods.names()   # ('finetune', 'neggrad', 'neggrad_plus', 'random_label', ...)
    m = methods.get("neggrad", apply_fn=apply_fn, learning_rate=1e-3)

Adding a method: write a factory in its own module that returns
:func:`gradient_method` (or a hand-written ``Method``), decorate it with
``@register("name")`` and import the module here.
"""

from jaxunlearn.methods._aamu import AAMU_REFERENCE_CODE, a_amu, a_cf, a_l1, a_scrub
from jaxunlearn.methods._base import (
    DRIVERS,
    GradientSpec,
    LossFn,
    Method,
    Objective,
    UnlearnState,
    check_hparam,
    check_int,
    default_tx,
    freeze_except,
    get,
    gradient_method,
    names,
    needs_forget_classes,
    objective_of,
    register,
    sgd_tx,
    with_objective,
)
from jaxunlearn.methods._baselines import (
    finetune,
    neggrad,
    neggrad_plus,
    random_label,
    retrain,
)
from jaxunlearn.methods._dc_baselines import (
    PRUNE_TARGETS,
    VARIANCE_RULES,
    bad_distillation,
    fisher,
    fisher_diagonal,
    fisher_noise,
    prune_schedule,
    pruning,
    ssd,
    ssd_dampen,
    ssd_importance,
)
from jaxunlearn.methods._dlfd import DLFD_REFERENCE_CODE, dlfd, dlfd_selected
from jaxunlearn.methods._instance_baselines import (
    cf_k,
    error_maximising_noise,
    eu_k,
    stage_order,
    unsir,
)
from jaxunlearn.methods._rwft import (
    intermediate_group,
    middle_group,
    rw_a,
    rwft_2_o,
    rwft_o,
)
from jaxunlearn.methods._sparse_salun_bu import (
    boundary_shrink,
    l1_sparse,
    saliency_mask,
    salun,
)
from jaxunlearn.methods._svd import scaled_projection, svd, svd_unlearn
from jaxunlearn.methods._teachers import adam_tx, bad_teacher, scrub

__all__ = [
    "PRUNE_TARGETS",
    "VARIANCE_RULES",
    "bad_distillation",
    "fisher",
    "fisher_diagonal",
    "fisher_noise",
    "prune_schedule",
    "pruning",
    "ssd",
    "ssd_dampen",
    "ssd_importance",
    "AAMU_REFERENCE_CODE",
    "a_amu",
    "a_cf",
    "a_l1",
    "a_scrub",
    "cf_k",
    "error_maximising_noise",
    "eu_k",
    "stage_order",
    "unsir",
    "adam_tx",
    "bad_teacher",
    "scrub",
    "DLFD_REFERENCE_CODE",
    "dlfd",
    "dlfd_selected",
    "DRIVERS",
    "GradientSpec",
    "LossFn",
    "Objective",
    "check_hparam",
    "check_int",
    "objective_of",
    "sgd_tx",
    "with_objective",
    "boundary_shrink",
    "l1_sparse",
    "saliency_mask",
    "salun",
    "scaled_projection",
    "svd",
    "svd_unlearn",
    "Method",
    "UnlearnState",
    "default_tx",
    "finetune",
    "freeze_except",
    "get",
    "gradient_method",
    "intermediate_group",
    "middle_group",
    "names",
    "neggrad",
    "neggrad_plus",
    "needs_forget_classes",
    "random_label",
    "register",
    "retrain",
    "rw_a",
    "rwft_2_o",
    "rwft_o",
]
