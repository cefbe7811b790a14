"""Loss-based membership inference with a logistic-regression attacker."""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit


def _features(x, name):
    x = np.asarray(x, np.float64)
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
    over ``n_splits`` stratified shuffle splits with ``test_size``.

    Args:
      member_scores: ``[n_m]`` or ``[n_m, d]`` features of members.
      nonmember_scores: ``[n_n]`` or ``[n_n, d]`` features of non-members.
      n_splits: number of stratified shuffle splits.
      test_size: held-out fraction per split.
      seed: seed of the subsampling and the splits.
      balance: subsample to equal sizes (DLFD's code does not; default does).

    Returns:
      ``{"accuracy", "auc", "n_member", "n_nonmember"}``; accuracy 0.5 means the
      attacker cannot tell the sets apart, AUC > 0.5 means members are detected.

    Examples:
      >>> import numpy as np
      >>> rng = np.random.default_rng(0)
      >>> r = mia_logreg(rng.normal(0, 1, 500), rng.normal(3, 1, 500))
      >>> r["accuracy"] > 0.9
      True
    """
    xm = _features(member_scores, "member_scores")
    xn = _features(nonmember_scores, "nonmember_scores")
    if xm.shape[1] != xn.shape[1]:
        raise ValueError(
            f"member_scores has {xm.shape[1]} features, nonmember_scores {xn.shape[1]}."
        )
    rng = np.random.default_rng(seed)
    if balance:
        n = min(len(xm), len(xn))
        xm = xm[np.sort(rng.choice(len(xm), n, replace=False))]
        xn = xn[np.sort(rng.choice(len(xn), n, replace=False))]
    if min(len(xm), len(xn)) < 5:
        raise ValueError(
            f"too few examples for the attack: {len(xm)} members and {len(xn)}"
            " non-members (need at least 5 each)."
        )
    x = np.concatenate([xm, xn])
    y = np.concatenate([np.ones(len(xm), int), np.zeros(len(xn), int)])
    splitter = StratifiedShuffleSplit(
        n_splits=n_splits, test_size=test_size, random_state=seed
    )
    accs, aucs = [], []
    for train_idx, test_idx in splitter.split(x, y):
        clf = LogisticRegression().fit(x[train_idx], y[train_idx])
        accs.append(clf.score(x[test_idx], y[test_idx]))
        aucs.append(roc_auc_score(y[test_idx], clf.predict_proba(x[test_idx])[:, 1]))
    return {
        "accuracy": float(np.mean(accs)),
        "auc": float(np.mean(aucs)),
        "n_member": int(len(xm)),
        "n_nonmember": int(len(xn)),
    }
