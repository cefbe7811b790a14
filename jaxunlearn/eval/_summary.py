"""The first-evaluation summary used by the main job."""

from collections.abc import Callable

import numpy as np

from jaxunlearn.eval._basic import accuracy, per_example_loss
from jaxunlearn.eval._mia import mia_logreg


def evaluate_split(
    logits_fn: Callable[[np.ndarray], np.ndarray],
    split,
    *,
    mia_seed: int = 0,
) -> dict[str, float]:
    """Accuracies and the loss-based MIA of one model on an ``UnlearningData``.

    Args:
      logits_fn: maps images ``[N, H, W, C]`` to logits ``[N, C]`` (e.g.
        ``lambda x: train.predict(apply_fn, variables, x)``).
      split: the ``UnlearningData``.
      mia_seed: seed of the attack's subsampling and splits.

    Returns:
      ``acc_retain``, ``acc_forget``, ``acc_test`` (test examples of retained
      classes in class mode, all test examples otherwise), ``acc_test_forget``
      (test examples of the forgotten classes; class mode only), and
      ``mia_accuracy`` / ``mia_auc``: :func:`mia_logreg` on per-example losses
      of the forget set (members) against unseen test data (non-members), the
      latter restricted to the forgotten classes in class mode so the attack
      compares like with like. Ideal after unlearning: about 0.5. If the model
      produced non-finite losses, ``diverged`` is True and the MIA fields are
      ``nan``.
    """
    out: dict[str, float] = {}
    losses = {}
    for name in ("retain", "forget", "test"):
        part = getattr(split, name)
        logits = logits_fn(part["image"])
        losses[name] = per_example_loss(logits, part["label"])
        if name == "test" and split.mode == "class":
            forgotten = np.isin(part["label"], split.forget_classes)
            out["acc_test"] = accuracy(logits[~forgotten], part["label"][~forgotten])
            out["acc_test_forget"] = accuracy(
                logits[forgotten], part["label"][forgotten]
            )
            losses["unseen"] = losses["test"][forgotten]
        else:
            out[f"acc_{name}"] = accuracy(logits, part["label"])
    members, nonmembers = losses["forget"], losses.get("unseen", losses["test"])
    finite = bool(np.isfinite(members).all() and np.isfinite(nonmembers).all())
    out["diverged"] = not finite
    if not finite:
        # A diverged model (inf / nan logits) has no meaningful attack score;
        # report it as such instead of feeding non-finite features to sklearn.
        out.update(mia_accuracy=float("nan"), mia_auc=float("nan"), mia_n=0)
        return out
    mia = mia_logreg(members, nonmembers, seed=mia_seed)
    out["mia_accuracy"] = mia["accuracy"]
    out["mia_auc"] = mia["auc"]
    out["mia_n"] = mia["n_member"]
    return out
