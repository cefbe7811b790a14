"""Loss-based membership inference with a logistic-regression attacker."""

import numbers

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

MIN_PER_SIDE = 5


def _features(x, name):
    try:
        x = np.asarray(x, np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a real array: {e}") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [n] or [n, d], got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values.")
    return x


def mia_logreg(
    member_scores,
    nonmember_scores,
    *,
    n_splits: int = 10,
    test_size: float = 0.1,
    seed: int = 0,
    balance: bool = True,
) -> dict[str, float]:
    """Membership inference by logistic regression on per-example scores.

    The attacker (scikit-learn ``LogisticRegression`` with default settings) is
    trained to tell members (label 1) from non-members (label 0) on 1-D or N-D
    features, e.g. per-example losses of the forget set (members) and of unseen
    data (non-members) as in DLFD. Sizes are balanced by seeded subsampling of
    the larger set (so chance is exactly 0.5); accuracy and ROC-AUC are averaged
    over ``n_splits`` stratified shuffle splits: each split holds out
    ``round(test_size * n)`` examples of each side, but at least one, and
    keeps at least one for training. Features are standardised with the
    training part's statistics before the fit, so the result does not depend
    on the scale of the scores (the regulariser of a default
    ``LogisticRegression`` would otherwise flatten losses of scale 1e12 or
    1e-12 to chance).

    Args:
      member_scores: ``[n_m]`` or ``[n_m, d]`` finite features of members,
        ``n_m >= 5``.
      nonmember_scores: ``[n_n]`` or ``[n_n, d]`` finite features of
        non-members, ``n_n >= 5``.
      n_splits: number of stratified shuffle splits (>= 1).
      test_size: held-out fraction per split, in (0, 1).
      seed: seed of the subsampling and the splits.
      balance: subsample to equal sizes (DLFD's code does not; default does).

    Returns:
      ``{"accuracy", "auc", "n_member", "n_nonmember"}``; accuracy 0.5 means the
      attacker cannot tell the sets apart, AUC > 0.5 means members are detected.

    Raises:
      ValueError: on wrong ranks, different feature counts, non-finite values,
        fewer than 5 examples on a side, or ``n_splits`` / ``test_size`` out of
        range.
      TypeError: if the scores are not real arrays, or ``n_splits`` /
        ``test_size`` are not numbers.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> r = mia_logreg(rng.normal(0, 1, 500), rng.normal(3, 1, 500))
      >>> r["accuracy"] > 0.9
      True
    """
    if isinstance(n_splits, bool) or not isinstance(n_splits, numbers.Integral):
        raise TypeError(f"n_splits must be an int, got {n_splits!r}.")
    if n_splits < 1:
        raise ValueError(f"n_splits must be >= 1, got {n_splits}.")
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise TypeError(f"test_size must be a float, got {test_size!r}.")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}.")
    xm = _features(member_scores, "member_scores")
    xn = _features(nonmember_scores, "nonmember_scores")
    if xm.shape[1] != xn.shape[1]:
        raise ValueError(
            f"member_scores has {xm.shape[1]} features, nonmember_scores {xn.shape[1]}."
        )
    for name, x in (("member_scores", xm), ("nonmember_scores", xn)):
        if len(x) < MIN_PER_SIDE:
            raise ValueError(
                f"too few examples for the attack: {name} has {len(x)} (need at "
                f"least {MIN_PER_SIDE} members and {MIN_PER_SIDE} non-members; "
                f"got {len(xm)} and {len(xn)})."
            )
    rng = np.random.default_rng(seed)
    if balance:
        n = min(len(xm), len(xn))
        xm = xm[np.sort(rng.choice(len(xm), n, replace=False))]
        xn = xn[np.sort(rng.choice(len(xn), n, replace=False))]
    x = np.concatenate([xm, xn])
    y = np.concatenate([np.ones(len(xm), int), np.zeros(len(xn), int)])
    # Per side: test_size of it, rounded, but at least 1 example in the test
    # part and 1 in the training part (so 5 + 5 examples work at test_size=0.1).
    sides = [np.flatnonzero(y == c) for c in (1, 0)]
    n_test = [min(max(1, round(test_size * len(idx))), len(idx) - 1) for idx in sides]
    accs, aucs = [], []
    for _ in range(n_splits):
        test_idx, train_idx = [], []
        for idx, k in zip(sides, n_test, strict=True):
            perm = rng.permutation(idx)
            test_idx.append(perm[:k])
            train_idx.append(perm[k:])
        test_idx, train_idx = np.concatenate(test_idx), np.concatenate(train_idx)
        x_train, x_test = _standardise(x[train_idx], x[test_idx])
        clf = LogisticRegression().fit(x_train, y[train_idx])
        accs.append(clf.score(x_test, y[test_idx]))
        aucs.append(roc_auc_score(y[test_idx], clf.predict_proba(x_test)[:, 1]))
    return {
        "accuracy": float(np.mean(accs)),
        "auc": float(np.mean(aucs)),
        "n_member": int(len(xm)),
        "n_nonmember": int(len(xn)),
    }


def _standardise(train: np.ndarray, test: np.ndarray):
    """Scales each feature by the training part's mean and std.

    The features are first divided by their largest training magnitude, so
    losses of any scale (1e-12 or 1e300) neither underflow nor overflow the
    variance, and LogisticRegression's fixed L2 penalty means the same at
    every scale. A constant feature is only centred.
    """
    top = np.abs(train).max(axis=0)
    top = np.where(top > 0, top, 1.0)
    train, test = train / top, test / top
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std
