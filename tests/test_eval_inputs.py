"""eval: the membership attack at its limits, and bad input at every entry point.

Bad input raises ``ValueError`` / ``TypeError`` whose message names the
argument.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import eval as ev


def _separable(n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    base = np.linspace(0.0, 1.0, n)
    return base * scale, (base + 2.0) * scale


# --------------------------------------------------------------------------
# mia_logreg


@pytest.mark.parametrize("n", [5, 6, 10])
@pytest.mark.parametrize("test_size", [0.1, 0.5, 0.9])
def test_mia_logreg_works_at_its_documented_minimum(n, test_size):
    members, nonmembers = _separable(n, 1.0)
    r = ev.mia_logreg(members, nonmembers, test_size=test_size)
    assert r["n_member"] == r["n_nonmember"] == n
    assert r["auc"] == 1.0
    # one training example per side at n=5, test_size=0.9: the regularised
    # fit may still put one held-out point on the wrong side
    assert r["accuracy"] >= (1.0 if test_size < 0.9 else 0.9)


@pytest.mark.parametrize("n_m, n_n", [(5, 1000), (1000, 5)])
def test_mia_logreg_unbalanced_minimum_keeps_both_sides_in_every_split(n_m, n_n):
    rng = np.random.default_rng(0)
    r = ev.mia_logreg(rng.normal(0, 0.1, n_m), rng.normal(5, 0.1, n_n), balance=False)
    assert (r["n_member"], r["n_nonmember"]) == (n_m, n_n)
    assert r["auc"] == 1.0


@pytest.mark.parametrize(
    "n_m, n_n, name", [(4, 10, "member_scores"), (10, 4, "nonmember_scores")]
)
def test_mia_logreg_below_minimum_names_the_argument(n_m, n_n, name):
    with pytest.raises(ValueError, match=f"{name} has 4.*at least 5"):
        ev.mia_logreg(np.zeros(n_m), np.ones(n_n))


@pytest.mark.parametrize("scale", [1e-12, 1e-3, 1.0, 1e6, 1e12, 1e300])
def test_mia_logreg_is_scale_free_on_separable_losses(scale):
    r = ev.mia_logreg(*_separable(100, scale))
    assert r["accuracy"] == pytest.approx(1.0) and r["auc"] == pytest.approx(1.0)


@pytest.mark.parametrize("scale", [1e-12, 1e12])
def test_mia_logreg_same_answer_at_any_scale(scale):
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, 1.0, 200), rng.gamma(2.5, 1.0, 200)
    r1, r2 = ev.mia_logreg(a, b), ev.mia_logreg(a * scale, b * scale)
    assert r1["accuracy"] == pytest.approx(r2["accuracy"])
    assert r1["auc"] == pytest.approx(r2["auc"])


# --------------------------------------------------------------------------
# accuracy / per_example_loss


@pytest.mark.parametrize("fn", [ev.accuracy, ev.per_example_loss])
@pytest.mark.parametrize("labels", [[0, 1, 3], [0, 1, 7], [-1, 0, 1], [3, 3, 3]])
def test_labels_out_of_range_raise_naming_labels(fn, labels):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        fn(np.eye(3), np.array(labels))


def test_accuracy_keeps_non_finite_logits_of_a_diverged_model():
    logits = np.array([[np.nan, 0.0], [0.0, 1.0]])
    assert ev.accuracy(logits, np.array([0, 1])) == 1.0
    with pytest.raises(ValueError, match="logits contains non-finite"):
        ev.per_example_loss(logits, np.array([0, 1]))


# --------------------------------------------------------------------------
# Every entry point: wrong rank, empty, NaN, mismatched lengths, wrong types.

_P = np.full((20, 3), 1 / 3)
_Y = np.repeat(np.arange(3), [7, 7, 6])
_NAN10 = np.array([np.nan] + [0.0] * 9)

BAD = [
    # accuracy / per_example_loss
    (ev.accuracy, (np.zeros(3), np.zeros(3, int)), {}, ValueError, "logits"),
    (ev.accuracy, (np.zeros((3, 2)), np.zeros(2, int)), {}, ValueError, "labels"),
    (ev.accuracy, (np.zeros((3, 2)), np.zeros(3)), {}, TypeError, "labels"),
    (ev.accuracy, (np.zeros((3, 0)), np.zeros(3, int)), {}, ValueError, "logits"),
    (ev.per_example_loss, (np.zeros((2, 2, 2)), [0, 1]), {}, ValueError, "logits"),
    (ev.per_example_loss, (np.zeros((3, 2)), [0, 1]), {}, ValueError, "labels"),
    # mia_logreg
    (
        ev.mia_logreg,
        (np.zeros((10, 1, 1)), np.ones(10)),
        {},
        ValueError,
        "member_scores",
    ),
    (ev.mia_logreg, (np.zeros(10), np.array([])), {}, ValueError, "nonmember_scores"),
    (ev.mia_logreg, (_NAN10, np.ones(10)), {}, ValueError, "member_scores"),
    (ev.mia_logreg, (np.ones(10), _NAN10), {}, ValueError, "nonmember_scores"),
    (ev.mia_logreg, (["a"] * 10, np.ones(10)), {}, TypeError, "member_scores"),
    (
        ev.mia_logreg,
        (np.zeros((10, 2)), np.ones((10, 3))),
        {},
        ValueError,
        "nonmember_scores",
    ),
    (
        ev.mia_logreg,
        (np.zeros(10), np.ones(10)),
        {"n_splits": 0},
        ValueError,
        "n_splits",
    ),
    (
        ev.mia_logreg,
        (np.zeros(10), np.ones(10)),
        {"n_splits": 2.0},
        TypeError,
        "n_splits",
    ),
    (
        ev.mia_logreg,
        (np.zeros(10), np.ones(10)),
        {"test_size": 1.0},
        ValueError,
        "test_size",
    ),
    (
        ev.mia_logreg,
        (np.zeros(10), np.ones(10)),
        {"test_size": "0.1"},
        TypeError,
        "test_size",
    ),
    # mia_svc_confidence
    (
        ev.mia_svc_confidence,
        (np.ones(10), np.zeros(10), np.array([])),
        {},
        ValueError,
        "target_conf",
    ),
    (
        ev.mia_svc_confidence,
        (np.ones(10), _NAN10, np.ones(3)),
        {},
        ValueError,
        "nonmember_conf",
    ),
    (
        ev.mia_svc_confidence,
        (np.ones((10, 2)), np.zeros(10), np.ones(3)),
        {},
        ValueError,
        "member_conf",
    ),
    # nearest_class / mia_nn
    (
        ev.nearest_class,
        ([[1.0, 2.0]],),
        {"forget_class": 0},
        ValueError,
        "confusion_row",
    ),
    (
        ev.nearest_class,
        ([1.0, np.nan],),
        {"forget_class": 0},
        ValueError,
        "confusion_row",
    ),
    (ev.nearest_class, ([1.0, 2.0],), {"forget_class": 2}, ValueError, "forget_class"),
    (
        ev.mia_nn,
        (_P, _Y + 1),
        {"forget_class": 0, "neighbour_class": 1},
        ValueError,
        "labels",
    ),
    (
        ev.mia_nn,
        (_P, _Y[:5]),
        {"forget_class": 0, "neighbour_class": 1},
        ValueError,
        "labels",
    ),
    (
        ev.mia_nn,
        (_P[:, :, None], _Y),
        {"forget_class": 0, "neighbour_class": 1},
        ValueError,
        "probs",
    ),
    (
        ev.mia_nn,
        (_P, _Y),
        {"forget_class": 0, "neighbour_class": 0},
        ValueError,
        "neighbour_class",
    ),
    # phi_logreg_auc
    (ev.phi_logreg_auc, (np.zeros((10, 1)), np.ones(10)), {}, ValueError, "forget_phi"),
    (ev.phi_logreg_auc, (np.zeros(10), _NAN10), {}, ValueError, "test_phi"),
    (ev.phi_logreg_auc, (np.zeros(10), np.array([])), {}, ValueError, "test_phi"),
    (
        ev.phi_logreg_auc,
        (np.zeros(10), np.ones(10)),
        {"n_repeats": 0},
        ValueError,
        "n_repeats",
    ),
    # roc_metrics
    (
        ev.roc_metrics,
        (np.zeros((2, 2)), np.ones((2, 2), bool)),
        {},
        ValueError,
        "scores",
    ),
    (
        ev.roc_metrics,
        (np.zeros(3), np.array([True, False])),
        {},
        ValueError,
        "is_member",
    ),
    (
        ev.roc_metrics,
        (np.array([np.nan, 0.0]), np.array([True, False])),
        {},
        ValueError,
        "scores",
    ),
    (ev.roc_metrics, (np.array([]), np.array([], bool)), {}, ValueError, "is_member"),
    (ev.roc_metrics, (np.zeros(2), np.array([0.0, 1.0])), {}, TypeError, "is_member"),
    # lira / ulira / rmia (eager)
    (
        ev.lira,
        (jnp.zeros(0), jnp.zeros((4, 0)), jnp.zeros((4, 0), bool)),
        {},
        ValueError,
        "target_scores",
    ),
    (
        ev.lira,
        (jnp.zeros(3), jnp.zeros((0, 3)), jnp.zeros((0, 3), bool)),
        {},
        ValueError,
        "shadow_scores",
    ),
    (
        ev.lira,
        (jnp.zeros((3, 1)), jnp.zeros((4, 3)), jnp.zeros((4, 3), bool)),
        {},
        ValueError,
        "target_scores",
    ),
    (
        ev.lira,
        (jnp.zeros(3), jnp.zeros((4, 3)), jnp.zeros((4, 2), bool)),
        {},
        ValueError,
        "shadow_in",
    ),
    (
        ev.ulira,
        (jnp.zeros(0), jnp.zeros((4, 0)), jnp.zeros((4, 0))),
        {},
        ValueError,
        "target_scores",
    ),
    (
        ev.ulira,
        (jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros((4, 3))),
        {},
        ValueError,
        "unlearned_scores",
    ),
    (
        ev.ulira,
        (jnp.zeros(3), jnp.zeros((4, 3)), jnp.zeros((4, 3))),
        {"n_holdout": 0},
        ValueError,
        "n_holdout",
    ),
    (
        ev.rmia,
        (jnp.zeros(0), jnp.zeros((2, 0)), jnp.ones(3), jnp.ones((2, 3))),
        {},
        ValueError,
        "target_probs",
    ),
    (
        ev.rmia,
        (jnp.ones(2), jnp.ones((2, 2)), jnp.ones(3), jnp.ones((1, 3))),
        {},
        ValueError,
        "population_reference_probs",
    ),
    (
        ev.rmia,
        (jnp.ones(2), jnp.ones((2, 2)), jnp.ones(3), jnp.ones((2, 3))),
        {"gamma": 0.0},
        ValueError,
        "gamma",
    ),
    # logit_confidence (eager)
    (
        ev.logit_confidence,
        (jnp.zeros((3, 1)), jnp.zeros(3, int)),
        {},
        ValueError,
        "logits",
    ),
    (
        ev.logit_confidence,
        (jnp.zeros((3, 2)), jnp.zeros(2, int)),
        {},
        ValueError,
        "labels",
    ),
    (
        ev.logit_confidence,
        (jnp.zeros((3, 2), complex), jnp.zeros(3, int)),
        {},
        TypeError,
        "logits",
    ),
    (
        ev.logit_confidence_from_probs,
        (jnp.ones((3, 2)), jnp.full(3, 2)),
        {},
        ValueError,
        "labels",
    ),
    # scalar metrics
    (ev.forgetting_score, (math.nan,), {}, ValueError, "mia_accuracy"),
    (ev.forgetting_score, ([0.5],), {}, TypeError, "mia_accuracy"),
    (ev.nomus, (0.5, 1.5), {}, ValueError, "forgetting_score"),
    (ev.utv, (np.eye(2), np.eye(3)), {}, ValueError, "p_unlearned"),
    (ev.utv, (np.zeros((0, 2)), np.zeros((0, 2))), {}, ValueError, "p_retrained"),
    (ev.utv, (np.eye(2), np.full((2, 2), np.nan)), {}, ValueError, "p_unlearned"),
    # statistics
    (ev.mean_std, ([],), {}, ValueError, "values"),
    (ev.mean_std, ([[1.0, 2.0]],), {}, ValueError, "values"),
    (ev.mean_std, ([1.0, math.nan],), {}, ValueError, "values"),
    (ev.bootstrap_ci, ([1.0, 2.0],), {"confidence": 1.0}, ValueError, "confidence"),
    (ev.bootstrap_ci, ([1.0, 2.0],), {"n_resamples": 0}, ValueError, "n_resamples"),
    (ev.aggregate, ([],), {}, ValueError, "results"),
    (ev.aggregate, ({"a": 1.0},), {}, TypeError, "results"),
    # confusion matrix
    (ev.confusion_matrix, ([0, 1], [0, 1, 1], 2), {}, ValueError, "labels"),
    (ev.confusion_matrix, ([0, 5], [0, 1], 2), {}, ValueError, "logits_or_preds"),
]


@pytest.mark.parametrize(
    "fn, args, kwargs, exc, match",
    BAD,
    ids=[f"{b[0].__name__}-{i}" for i, b in enumerate(BAD)],
)
def test_bad_input_raises_naming_the_argument(fn, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)
