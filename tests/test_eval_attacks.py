"""Known-answer tests of the sklearn-based paper-parity attacks."""

import numpy as np
import pytest

from jaxunlearn.eval._attacks import (
    _cv_auc,
    mia_nn,
    mia_svc_confidence,
    nearest_class,
    phi_logreg_auc,
)

# --- SVC confidence attack (SalUn / RWFT "MIA") ---------------------


def test_svc_attack_at_chance_on_one_distribution():
    # The SVC boundary on indistinguishable sets is driven by noise, so a
    # single run can sit 10-15 points from 50; the average over seeds cannot.
    pct = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        a, b, c = (rng.beta(5, 2, 1000) for _ in range(3))
        pct.append(mia_svc_confidence(a, b, c, seed=seed))
    assert all(0.0 <= p <= 100.0 for p in pct)
    assert abs(np.mean(pct) - 50.0) < 7.0


def test_svc_attack_orientation_on_separated_sets(rng):
    members = rng.beta(30, 1, 1000)  # confident: training data
    nonmembers = rng.beta(2, 3, 1000)  # unsure: unseen data
    # Retrained-like: the forget set looks unseen -> about 100 percent.
    assert mia_svc_confidence(members, nonmembers, rng.beta(2, 3, 500)) > 97
    # Original-like: the forget set looks like training data -> about 0.
    assert mia_svc_confidence(members, nonmembers, rng.beta(30, 1, 500)) < 3


def test_svc_attack_balances_and_is_seeded(rng):
    members = rng.beta(5, 2, 3000)
    nonmembers = rng.beta(2, 5, 200)
    target = rng.beta(3, 3, 300)
    r1 = mia_svc_confidence(members, nonmembers, target, seed=1)
    assert r1 == mia_svc_confidence(members, nonmembers, target, seed=1)
    # 2-D features are accepted.
    two_d = mia_svc_confidence(
        np.c_[members, members], np.c_[nonmembers, nonmembers], np.c_[target, target]
    )
    assert 0.0 <= two_d <= 100.0


def test_svc_attack_bad_input(rng):
    x = rng.random(50)
    with pytest.raises(ValueError, match="same number of features"):
        mia_svc_confidence(x, x, np.c_[x, x])
    with pytest.raises(ValueError, match="too few"):
        mia_svc_confidence(x[:3], x, x)
    with pytest.raises(ValueError, match="target_conf is empty"):
        mia_svc_confidence(x, x, x[:0])
    with pytest.raises(ValueError, match="nonmember_conf contains non-finite"):
        mia_svc_confidence(x, np.r_[x, np.nan], x)
    with pytest.raises(ValueError, match="member_conf must be"):
        mia_svc_confidence(x.reshape(5, 5, 2), x, x)


# --- nearest class and MIA-NN ---------------------------------------


def test_nearest_class():
    assert nearest_class([50, 3, 40, 7], 0) == 2
    assert nearest_class(np.array([0.1, 0.8, 0.05, 0.05]), 1) == 0
    assert nearest_class([5, 9, 9], 0) == 1  # ties -> lowest index
    with pytest.raises(ValueError, match="forget_class must be in"):
        nearest_class([1, 2, 3], 3)
    with pytest.raises(TypeError, match="forget_class must be an int"):
        nearest_class([1, 2, 3], 1.0)
    with pytest.raises(ValueError, match="confusion_row must be 1-D"):
        nearest_class([[1, 2], [3, 4]], 0)
    with pytest.raises(ValueError, match="confusion_row contains non-finite"):
        nearest_class([1, np.nan, 3], 0)


def _synthetic_test_set(rng, forgotten_look_like_neighbour: bool, n_per=200, c=5):
    """Softmax outputs of a 5-class model; class 0 forgotten, class 1 nearest."""
    labels = np.repeat(np.arange(c), n_per)
    logits = rng.normal(0.0, 1.0, (labels.size, c))
    logits[np.arange(labels.size), labels] += 5.0
    forget = labels == 0
    if forgotten_look_like_neighbour:  # retrained: automobiles -> truck
        logits[forget, 0] -= 10.0
        logits[forget, 1] += 5.0
    z = logits - logits.max(1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return probs, labels


def test_mia_nn_retrained_low_original_high(rng):
    probs, labels = _synthetic_test_set(rng, forgotten_look_like_neighbour=True)
    retrained = mia_nn(probs, labels, forget_class=0, neighbour_class=1)
    probs, labels = _synthetic_test_set(rng, forgotten_look_like_neighbour=False)
    original = mia_nn(probs, labels, forget_class=0, neighbour_class=1)
    assert retrained < 0.05 and original > 0.95
    unbalanced = mia_nn(probs, labels, forget_class=0, neighbour_class=1, balance=False)
    assert 0.0 <= unbalanced <= 1.0


def test_mia_nn_bad_input(rng):
    probs, labels = _synthetic_test_set(rng, True, n_per=20)
    with pytest.raises(ValueError, match="forget_class and neighbour_class"):
        mia_nn(probs, labels, forget_class=1, neighbour_class=1)
    with pytest.raises(ValueError, match="neighbour_class must be in"):
        mia_nn(probs, labels, forget_class=0, neighbour_class=7)
    with pytest.raises(ValueError, match="labels has shape"):
        mia_nn(probs, labels[:-1], forget_class=0, neighbour_class=1)
    with pytest.raises(TypeError, match="labels must be integers"):
        mia_nn(probs, labels.astype(float), forget_class=0, neighbour_class=1)
    with pytest.raises(ValueError, match="probs must be"):
        mia_nn(probs[:, 0], labels, forget_class=0, neighbour_class=1)
    with pytest.raises(ValueError, match="probs must hold probabilities"):
        mia_nn(probs * 3, labels, forget_class=0, neighbour_class=1)
    with pytest.raises(ValueError, match="probs contains non-finite"):
        bad = probs.copy()
        bad[0, 0] = np.nan
        mia_nn(bad, labels, forget_class=0, neighbour_class=1)
    with pytest.raises(ValueError, match="no sample of forget_class"):
        mia_nn(
            probs[labels != 0], labels[labels != 0], forget_class=0, neighbour_class=1
        )
    with pytest.raises(ValueError, match="too few test samples"):
        keep = (labels != 1) | (np.arange(labels.size) % 20 < 3)
        mia_nn(probs[keep], labels[keep], forget_class=0, neighbour_class=1)


# --- phi logistic-regression AUC (Blend/A-AMU "LiRA") ---------------


def test_phi_logreg_auc_same_distribution_is_50(rng):
    score = phi_logreg_auc(rng.normal(size=1000), rng.normal(size=1000))
    assert abs(score - 50.0) < 5.0


def test_phi_logreg_auc_separated_is_100(rng):
    forget = rng.normal(6.0, 1.0, 500)  # confident on the forget set
    test = rng.normal(0.0, 1.0, 700)
    assert phi_logreg_auc(forget, test) > 99.0
    # The attacker learns its own orientation: swapping roles changes nothing.
    assert phi_logreg_auc(test, forget) > 99.0


def test_phi_logreg_auc_swap_rule():
    # Small indistinguishable sets: cross-validated AUC falls well below 50.
    for seed in range(100):
        rng = np.random.default_rng(seed)
        f, t = rng.normal(size=10), rng.normal(size=10)
        plain = _cv_auc(f, t, 0)
        if plain <= 30.0:
            break
    else:
        pytest.fail("no low-AUC example found")
    swapped = _cv_auc(t, f, 0)
    assert phi_logreg_auc(f, t, n_repeats=2, swap_threshold=0.0) == pytest.approx(plain)
    got = phi_logreg_auc(f, t, n_repeats=2)
    assert got == pytest.approx(max(plain, swapped))
    assert got > plain
    # Above the threshold no swap happens.
    assert phi_logreg_auc(f, t, swap_threshold=plain - 1.0) == pytest.approx(plain)


def test_phi_logreg_auc_repeats(rng):
    f, t = rng.normal(0.3, 1, 60), rng.normal(0, 1, 60)
    kw = dict(seed=5, swap_threshold=0.0)  # isolate the repeats from the swap
    # Fixed folds: repeats are identical, so the result is one run.
    assert phi_logreg_auc(f, t, n_repeats=20, **kw) == pytest.approx(_cv_auc(f, t, 5))
    varied = phi_logreg_auc(f, t, n_repeats=3, vary_folds=True, **kw)
    assert varied == pytest.approx(np.mean([_cv_auc(f, t, s) for s in (5, 6, 7)]))


def test_phi_logreg_auc_truncates_to_prefix(rng):
    f, t = rng.normal(2, 1, 300), rng.normal(0, 1, 100)
    assert phi_logreg_auc(f, t) == phi_logreg_auc(f[:100], t)


def test_phi_logreg_auc_bad_input(rng):
    x = rng.normal(size=20)
    with pytest.raises(ValueError, match="forget_phi must be 1-D"):
        phi_logreg_auc(x[:, None], x)
    with pytest.raises(ValueError, match="test_phi contains non-finite"):
        phi_logreg_auc(x, np.r_[x, np.inf])
    with pytest.raises(ValueError, match="too few samples"):
        phi_logreg_auc(x, x[:4])
    with pytest.raises(ValueError, match="n_repeats"):
        phi_logreg_auc(x, x, n_repeats=0)
