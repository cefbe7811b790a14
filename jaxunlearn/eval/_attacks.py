"""Paper-parity membership attacks trained with scikit-learn (numpy in, float out).

* :func:`mia_svc_confidence`: the SalUn / RWFT "MIA" (MIA-efficacy) column.
* :func:`nearest_class` and :func:`mia_nn`: RWFT's nearest-class attack (MIA-NN).
* :func:`phi_logreg_auc`: the Blend/A-AMU code's "LiRA" score, which is a
  cross-validated logistic regression on logit confidence, not LiRA.

Each docstring states the orientation of its output and what is ideal. The
attackers run on CPU and are seeded; none swallows exceptions from sklearn.
"""

import numbers

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import SVC

from jaxunlearn.eval._mia import _features


def _svc() -> SVC:
    return SVC(C=3, gamma="auto", kernel="rbf")


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), n, replace=False))]


def _int_arg(x, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {x!r}.")
    return int(x)


def mia_svc_confidence(
    member_conf, nonmember_conf, target_conf, *, seed: int = 0
) -> float:
    """SalUn / RWFT "MIA" (MIA-efficacy): percent of targets predicted non-member.

    An ``SVC(C=3, gamma="auto", kernel="rbf")`` is trained on member features
    (label 1; retain-*train* confidences) against non-member features (label 0;
    *test* confidences of retained classes), then applied to the target
    features (forget-set confidences). Sizes are balanced before training: the
    larger set (normally the members) is subsampled without replacement, seeded,
    to the size of the smaller. The usual SalUn code (``OPTML-Group``,
    ``Ali-E/AMUN:evaluation/SVC_MIA.py``) instead keeps the *first*
    ``len(test)`` retain examples; a random subset avoids depending on data
    order. The feature is normally the softmax probability of the true label.

    Convention: this follows the RWFT paper text / SalUn (docs/methods_notes.md):
    members = retain-train, non-members = retain-class test, scored on the
    forget-*train* samples. Kodge et al.'s released code instead trains on
    retain-train (1) vs forget-train (0) and scores forget-*test* samples; to
    reproduce that, pass those arrays in those roles.

    Args:
      member_conf: ``[n_m]`` or ``[n_m, d]`` member features.
      nonmember_conf: ``[n_n]`` or ``[n_n, d]`` non-member features.
      target_conf: ``[n_t]`` or ``[n_t, d]`` features of the evaluated samples.
      seed: seed of the subsampling.

    Returns:
      Percent (0-100) of targets predicted non-member. Higher = the forget set
      looks unseen: a retrained model scores about 100, the original about 0
      (RWFT Table 2). When all three sets come from one distribution the value
      is about 50.

    Raises:
      ValueError: on wrong ranks, mismatched feature counts, non-finite values,
        fewer than 5 members / non-members, or an empty target set.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> members = rng.beta(20, 1, 300)     # confident on training data
      >>> nonmembers = rng.beta(2, 2, 300)   # unsure on unseen data
      >>> mia_svc_confidence(members, nonmembers, rng.beta(2, 2, 200)) > 80
      True
    """
    xm = _features(member_conf, "member_conf")
    xn = _features(nonmember_conf, "nonmember_conf")
    xt = _features(target_conf, "target_conf")
    if not xm.shape[1] == xn.shape[1] == xt.shape[1]:
        raise ValueError(
            f"member_conf, nonmember_conf and target_conf must have the same number"
            f" of features, got {xm.shape[1]}, {xn.shape[1]} and {xt.shape[1]}."
        )
    if min(len(xm), len(xn)) < 5:
        raise ValueError(
            f"too few examples for the attack: {len(xm)} members and {len(xn)}"
            " non-members (need at least 5 each)."
        )
    if len(xt) == 0:
        raise ValueError("target_conf is empty.")
    rng = np.random.default_rng(seed)
    n = min(len(xm), len(xn))
    xm, xn = _subsample(xm, n, rng), _subsample(xn, n, rng)
    x = np.concatenate([xm, xn])
    y = np.concatenate([np.ones(len(xm), int), np.zeros(len(xn), int)])
    clf = _svc().fit(x, y)
    return float(100.0 * np.mean(clf.predict(xt) == 0))


def nearest_class(confusion_row, forget_class) -> int:
    """The class a forget class is most confused with (RWFT's MIA-NN neighbour).

    Args:
      confusion_row: ``[C]`` row of the forget class in a reference model's
        confusion matrix (counts or mean probabilities), e.g. of the retrained
        model, or the original model's mean softmax on forget samples.
      forget_class: index of the forget class.

    Returns:
      ``argmax`` of the row with the forget class itself excluded (ties go to
      the lowest index).

    Raises:
      ValueError: if the row is not 1-D with at least 2 finite entries, or
        ``forget_class`` is out of range.
      TypeError: if ``forget_class`` is not an int.

    Examples:
      >>> nearest_class([50, 3, 40, 7], forget_class=0)
      2
    """
    row = np.asarray(confusion_row, dtype=np.float64)
    if row.ndim != 1 or row.size < 2:
        raise ValueError(
            f"confusion_row must be 1-D with >= 2 classes, got shape {row.shape}."
        )
    if not np.all(np.isfinite(row)):
        raise ValueError("confusion_row contains non-finite values.")
    c = _int_arg(forget_class, "forget_class")
    if not 0 <= c < row.size:
        raise ValueError(f"forget_class must be in [0, {row.size}), got {c}.")
    masked = row.copy()
    masked[c] = -np.inf
    return int(np.argmax(masked))


def mia_nn(
    probs,
    labels,
    *,
    forget_class,
    neighbour_class,
    seed: int = 0,
    balance: bool = True,
) -> float:
    """RWFT's nearest-class membership attack (MIA-NN, paper 3.2).

    Feature: ``p(neighbour_class | x)``. An ``SVC(C=3, gamma="auto",
    kernel="rbf")`` (the SVC of the other RWFT attack; the paper does not name
    the classifier) is trained on test samples of the neighbour class (label 1,
    "member of the neighbour class") against test samples of all other classes
    except the forget class (label 0), then applied to the forget-class test
    samples. With ``balance=True`` (an assumption; the paper is silent) the
    larger training group is subsampled, seeded, to the size of the smaller,
    so the SVC is not dominated by the 1 : (C - 2) class prior.

    Returns the fraction of forget-class samples classified *non*-member, i.e.
    not neighbour-like. This orientation is inferred (docs/methods_notes.md) from
    RWFT Table 1, "Truck MIA Acc", lower is better: a retrained model sends
    forgotten automobiles to the truck class, so they look truck-like (retrain
    = 0.0011), while methods that keep the class (l1: 0.974) do not.

    Args:
      probs: ``[n, C]`` softmax outputs of the evaluated model on the test set.
      labels: ``[n]`` integer test labels.
      forget_class: the forgotten class.
      neighbour_class: its nearest class (see :func:`nearest_class`).
      seed: seed of the balancing subsample.
      balance: subsample the two training groups to equal size.

    Returns:
      Fraction in [0, 1]; lower is better (closer to the retrained model).

    Raises:
      ValueError: on shape / range problems, equal classes, non-finite or
        non-probability inputs, fewer than 5 samples in a training group, or
        no forget-class samples.
      TypeError: if labels or classes are not integers.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> labels = np.repeat(np.arange(4), 50)
      >>> probs = np.full((200, 4), 0.02)
      >>> probs[np.arange(200), labels] = 0.94
      >>> probs[labels == 0] = [0.06, 0.9, 0.02, 0.02]  # forgotten -> neighbour
      >>> mia_nn(probs, labels, forget_class=0, neighbour_class=1)
      0.0
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f"probs must be [n, C] with C >= 3, got shape {p.shape}.")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels has shape {y.shape}, expected ({p.shape[0]},).")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels must be integers, got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {p.shape[1]}) (the classes of probs), got "
            f"range [{y.min()}, {y.max()}]."
        )
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains non-finite values.")
    if np.any(p < -1e-6) or np.any(p > 1 + 1e-6):
        raise ValueError("probs must hold probabilities in [0, 1].")
    n_cls = p.shape[1]
    f = _int_arg(forget_class, "forget_class")
    nb = _int_arg(neighbour_class, "neighbour_class")
    for name, c in (("forget_class", f), ("neighbour_class", nb)):
        if not 0 <= c < n_cls:
            raise ValueError(f"{name} must be in [0, {n_cls}), got {c}.")
    if f == nb:
        raise ValueError(f"forget_class and neighbour_class are both {f}.")
    feat = p[:, nb : nb + 1]
    pos = feat[y == nb]
    neg = feat[(y != nb) & (y != f)]
    target = feat[y == f]
    if min(len(pos), len(neg)) < 5:
        raise ValueError(
            f"too few test samples: {len(pos)} of neighbour_class {nb} and "
            f"{len(neg)} of the other classes (need at least 5 each)."
        )
    if len(target) == 0:
        raise ValueError(f"labels contain no sample of forget_class {f}.")
    if balance:
        rng = np.random.default_rng(seed)
        n = min(len(pos), len(neg))
        pos, neg = _subsample(pos, n, rng), _subsample(neg, n, rng)
    x = np.concatenate([pos, neg])
    t = np.concatenate([np.ones(len(pos), int), np.zeros(len(neg), int)])
    clf = _svc().fit(x, t)
    return float(np.mean(clf.predict(target) == 0))


def _cv_auc(first: np.ndarray, second: np.ndarray, seed: int) -> float:
    """AUC x100 of 5-fold CV logistic regression, ``first`` = 0, ``second`` = 1."""
    x = np.concatenate([first, second])[:, None]
    y = np.concatenate([np.zeros(len(first), int), np.ones(len(second), int)])
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    proba = cross_val_predict(
        LogisticRegression(), x, y, cv=cv, method="predict_proba"
    )[:, 1]
    return 100.0 * float(roc_auc_score(y, proba))


def _phi_vector(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D [n], got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values.")
    return x


def phi_logreg_auc(
    forget_phi,
    test_phi,
    *,
    n_repeats: int = 20,
    seed: int = 0,
    swap_threshold: float = 42.0,
    vary_folds: bool = False,
) -> float:
    """The Blend/A-AMU code's "MIA score" (``utils/lira_mia.py``); not LiRA.

    The paper calls it white-box LiRA, but there are no shadow models
    (docs/methods_notes.md). Steps, as in the reference code:

    1. Truncate both sets to ``min(n_forget, n_test)`` by keeping the *first*
       entries (prefix, not random; pass shuffled arrays if order matters).
    2. Label forget = 0, test = 1; 1-D feature phi (:func:`logit_confidence`;
       the reference clamps per-class CE to [0, 50], so phi there is bounded
       by about +-50).
    3. ``cross_val_predict`` of a default ``LogisticRegression`` with
       ``StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)``; ROC-AUC
       of the out-of-fold probabilities, x100.
    4. Average over ``n_repeats`` repeats. The reference code repeats 20 times
       with the same ``random_state`` (hard-coded 0), so its repeats are
       identical (``LogisticRegression``'s lbfgs is deterministic) and the
       average equals a single run; with ``vary_folds=False`` (default) the run
       is therefore computed once. ``vary_folds=True`` uses
       ``random_state=seed + r`` for repeat ``r`` instead, averaging over
       different fold splits (a lower-variance estimate, not in the reference).
    5. If the AUC is ``<= swap_threshold``, recompute with the roles swapped
       (test phi first with label 0, forget phi second with label 1) and return
       the larger of the two.

    The learned attacker picks its own orientation, so a cross-validated AUC
    well below 50 is an artefact of CV on indistinguishable sets; the swap
    rule turns such values into about ``100 - AUC``. Ideal = 50 (forget set
    indistinguishable from unseen test data); 100 = fully distinguishable.

    Args:
      forget_phi: ``[n_f]`` phi of the forget set.
      test_phi: ``[n_t]`` phi of held-out test data, restricted to the classes
        present in the forget set (as the reference code does).
      n_repeats: number of repeats, >= 1 (identical unless ``vary_folds``).
      seed: ``random_state`` of the folds (of the first repeat).
      swap_threshold: AUC (x100) at or below which the swapped run is tried.
      vary_folds: give each repeat its own fold split.

    Returns:
      AUC x100 in [0, 100].

    Raises:
      ValueError: on wrong ranks, non-finite values, fewer than 5 samples
        after truncation, or ``n_repeats < 1``.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> phi_logreg_auc(rng.normal(4, 1, 200), rng.normal(0, 1, 200)) > 95
      True
    """
    f = _phi_vector(forget_phi, "forget_phi")
    t = _phi_vector(test_phi, "test_phi")
    if _int_arg(n_repeats, "n_repeats") < 1:
        raise ValueError(f"n_repeats must be >= 1, got {n_repeats}.")
    n = min(len(f), len(t))
    if n < 5:
        raise ValueError(
            f"too few samples: forget_phi has {len(f)} and test_phi {len(t)} "
            "(need at least 5 each for 5-fold CV)."
        )
    f, t = f[:n], t[:n]
    seeds = [seed + r for r in range(n_repeats)] if vary_folds else [seed]
    auc = float(np.mean([_cv_auc(f, t, s) for s in seeds]))
    if auc <= swap_threshold:
        swapped = float(np.mean([_cv_auc(t, f, s) for s in seeds]))
        auc = max(auc, swapped)
    return auc
