import numpy as np
import pytest

from jaxunlearn import eval as ev
from jaxunlearn import losses


def test_attack_on_identical_distributions_is_at_chance(rng):
    a = rng.normal(size=4000)
    b = rng.normal(size=4000)
    r = ev.mia_logreg(a, b)
    assert abs(r["auc"] - 0.5) < 0.05
    assert abs(r["accuracy"] - 0.5) < 0.05


def test_attack_on_separated_distributions_is_near_one(rng):
    r = ev.mia_logreg(rng.normal(0, 1, 1000), rng.normal(6, 1, 1000))
    assert r["accuracy"] > 0.98 and r["auc"] > 0.99


def test_learned_attack_finds_the_orientation_itself(rng):
    """The attacker is trained, so swapping member / non-member roles gives the
    same detection power (AUC > 0.5 both ways), never 1 - AUC."""
    a, b = rng.normal(0, 1, 2000), rng.normal(0.5, 1, 2000)
    r1, r2 = ev.mia_logreg(a, b), ev.mia_logreg(b, a)
    assert r1["auc"] > 0.6 and r2["auc"] > 0.6
    assert r1["auc"] == pytest.approx(r2["auc"], abs=0.03)


def test_balancing_and_multifeature(rng):
    r = ev.mia_logreg(rng.normal(size=(300, 2)), rng.normal(size=(50, 2)))
    assert r["n_member"] == r["n_nonmember"] == 50
    with pytest.raises(ValueError, match="features"):
        ev.mia_logreg(rng.normal(size=(30, 2)), rng.normal(size=(30, 3)))
    with pytest.raises(ValueError, match="too few"):
        ev.mia_logreg(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        ev.mia_logreg(np.array([np.nan] * 10), np.zeros(10))


def test_accuracy_and_loss_match_jax(rng):
    logits = rng.normal(size=(20, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 20)
    np.testing.assert_allclose(
        ev.per_example_loss(logits, labels),
        np.asarray(losses.cross_entropy(logits, labels)),
        rtol=1e-5,
    )
    assert ev.accuracy(logits, labels) == np.mean(logits.argmax(1) == labels)
    with pytest.raises(ValueError, match="labels"):
        ev.accuracy(logits, labels[:3])
