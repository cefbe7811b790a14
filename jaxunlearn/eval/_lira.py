"""Shadow-model membership attacks (LiRA, U-LiRA, RMIA) and ROC summaries.

``lira``, ``ulira`` and ``rmia`` are vectorised ``jax.numpy`` functions with no
Python loops over examples: they run under ``jax.jit`` (pass the keyword options
through ``functools.partial`` or ``static_argnames``) and can be ``jax.vmap``-ed
over targets. Shape checks happen at trace time; value checks (finiteness) only
on concrete inputs, with numpy on the host, so arrays closed over by a jitted
function are checked too. ``roc_metrics`` is exact numpy (float64) and returns floats.

Orientation everywhere: a higher score means "more likely a member" (for
U-LiRA: "more likely the unlearned, not the retrained, model").
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

_ROC_KEYS = ("auc", "balanced_accuracy", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr")


# ---------------------------------------------------------------------------
# ROC summary (numpy, exact)


def _roc_inputs(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D [n], got shape {s.shape}.")
    if m.shape != s.shape:
        raise ValueError(
            f"is_member has shape {m.shape}, expected {s.shape} to match scores."
        )
    if np.any(np.isnan(s)):
        raise ValueError("scores contains nan values.")
    if m.dtype != np.bool_:
        if not np.issubdtype(m.dtype, np.integer) or not np.isin(m, (0, 1)).all():
            raise TypeError(
                f"is_member must be boolean (or 0/1 integers), got dtype {m.dtype}."
            )
        m = m.astype(bool)
    n_pos = int(m.sum())
    if n_pos == 0 or n_pos == m.size:
        raise ValueError(
            f"is_member must contain both members and non-members, got {n_pos} "
            f"members out of {m.size}."
        )
    return s, m


def roc_metrics(scores, is_member) -> dict[str, float]:
    """Threshold-free summary of a membership score: AUC, balanced acc., low-FPR TPR.

    A higher score must mean "more likely a member"; the attack predicts member
    when ``score >= t``. All quantities are exact (no interpolation):

    * ``auc``: the Mann-Whitney statistic with ties counted one half, via
      average ranks; equals ``sklearn.metrics.roc_auc_score(is_member, scores)``.
      Swapping the labels gives exactly ``1 - auc``. 0.5 = chance; below 0.5
      means the score is *anti*-correlated with membership (an orientation
      trap, see docs/methods_notes.md), not that the attack failed safely.
    * ``balanced_accuracy``: ``max_t (TPR(t) + TNR(t)) / 2`` over all thresholds
      including "accept none" (0.5). This is the best-threshold value as in
      Carlini et al.'s LiRA code, hence slightly optimistic (above 0.5 at chance
      on finite samples).
    * ``tpr_at_0.1%_fpr`` / ``tpr_at_1%_fpr``: the largest TPR over thresholds
      whose FPR is <= 0.001 / 0.01 (needs >= 1000 / 100 non-members to be
      informative; with fewer, it is the TPR at FPR = 0).

    Args:
      scores: ``[n]`` membership scores (numpy or jax); ``+-inf`` are allowed
        and ordered as usual (e.g. ``-inf`` = surely a non-member), ``nan`` is
        not.
      is_member: ``[n]`` booleans (or 0/1 integers), both classes present.

    Returns:
      Dict with float values for ``"auc"``, ``"balanced_accuracy"``,
      ``"tpr_at_0.1%_fpr"``, ``"tpr_at_1%_fpr"``.

    Examples:
      >>> import numpy as np
      >>> r = roc_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
      >>> r["auc"], r["balanced_accuracy"]
      (0.75, 0.75)
    """
    s, m = _roc_inputs(scores, is_member)
    n_pos = int(m.sum())
    n_neg = m.size - n_pos
    # Average ranks (1-based) with ties sharing the mean of their positions.
    uniq, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = avg_rank[inverse][m].sum()
    auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    # ROC points: thresholds at each distinct score, from high to low, plus
    # the "accept none" point (0, 0).
    pos_per = np.bincount(inverse, weights=m, minlength=uniq.size)[::-1]
    neg_per = counts[::-1] - pos_per
    tpr = np.concatenate([[0.0], np.cumsum(pos_per) / n_pos])
    fpr = np.concatenate([[0.0], np.cumsum(neg_per) / n_neg])
    bal = float(np.max((tpr + 1.0 - fpr) / 2.0))
    return {
        "auc": float(auc),
        "balanced_accuracy": bal,
        "tpr_at_0.1%_fpr": float(np.max(tpr[fpr <= 0.001])),
        "tpr_at_1%_fpr": float(np.max(tpr[fpr <= 0.01])),
    }


# ---------------------------------------------------------------------------
# Shared helpers (jnp)


def _host(x) -> np.ndarray | None:
    """A numpy copy of a concrete array, ``None`` for a tracer.

    Value checks use numpy on this copy: inside a ``jax.jit`` trace even a
    closed-over concrete array gives a tracer from ``jnp.all`` / ``jnp.any``.
    """
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _real(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not (
        jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)
    ):
        raise TypeError(f"{name} must be a real array, got dtype {x.dtype}.")
    return x


def _to_float(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _check_finite(x: jax.Array, name: str) -> None:
    host = _host(x)
    if host is not None and not np.all(np.isfinite(host)):
        raise ValueError(f"{name} contains non-finite values.")


def _rank1(x, name: str) -> jax.Array:
    x = _real(x, name)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D [n], got shape {x.shape}.")
    _check_finite(x, name)  # before the cast, which a trace would stage
    return _to_float(x)


def _rank2(x, name: str, n: int, what: str) -> jax.Array:
    x = _real(x, name)
    if x.ndim != 2 or x.shape[1] != n:
        raise ValueError(f"{name} must be 2-D [{what}, n={n}], got shape {x.shape}.")
    _check_finite(x, name)
    return _to_float(x)


def _masked_gaussian(scores: jax.Array, mask: jax.Array, ddof: int):
    """Per-column mean / variance of ``scores[mask]`` plus pooled statistics.

    Returns ``(count, mean, var, pooled_var, global_mean)``: ``count`` [n] is the
    number of masked entries per column, ``mean`` [n] their mean (0 where the
    count is 0), ``var`` [n] their variance with ``ddof`` (meaningful only where
    ``count >= 2``), ``pooled_var`` the pooled within-column variance
    ``sum (s - mean_col)^2 / sum (count_col - ddof)`` over non-empty columns
    (``nan`` if undefined), and ``global_mean`` the mean of all masked scores.
    """
    m = mask.astype(scores.dtype)
    count = m.sum(axis=0)
    mean = jnp.sum(m * scores, axis=0) / jnp.maximum(count, 1.0)
    dev2 = jnp.sum(m * (scores - mean) ** 2, axis=0)
    var = dev2 / jnp.maximum(count - ddof, 1.0)
    dof = jnp.sum(jnp.where(count > 0, jnp.maximum(count - ddof, 0.0), 0.0))
    pooled_var = jnp.where(dof > 0, jnp.sum(dev2) / jnp.maximum(dof, 1.0), jnp.nan)
    total = count.sum()
    global_mean = jnp.where(
        total > 0, jnp.sum(m * scores) / jnp.maximum(total, 1.0), jnp.nan
    )
    return count, mean, var, pooled_var, global_mean


def _std(count, var, pooled_var, other_pooled_var, fixed_variance: bool, eps: float):
    """Per-example std with fallback to the pooled std (then the other kind's)."""
    pooled = jnp.where(jnp.isnan(pooled_var), other_pooled_var, pooled_var)
    if fixed_variance:
        v = jnp.broadcast_to(pooled, count.shape)
    else:
        v = jnp.where(count >= 2, var, pooled)
    return jnp.maximum(jnp.sqrt(v), eps)


def _fill_means(cnt_a, mu_a, glob_a, cnt_b, mu_b, glob_b):
    """Fill missing per-example means of kind a / b from the other kind.

    Where an example has no scores of one kind, its mean is the other kind's
    mean shifted by the average a-minus-b difference over examples that have
    both (or by the difference of the global means if none has both).
    """
    both = (cnt_a > 0) & (cnt_b > 0)
    n_both = both.sum()
    shift_both = jnp.sum(jnp.where(both, mu_a - mu_b, 0.0)) / jnp.maximum(n_both, 1)
    shift = jnp.where(n_both > 0, shift_both, glob_a - glob_b)
    new_a = jnp.where(cnt_a > 0, mu_a, mu_b + shift)
    new_b = jnp.where(cnt_b > 0, mu_b, mu_a - shift)
    return new_a, new_b


# ---------------------------------------------------------------------------
# LiRA


def lira(
    target_scores,
    shadow_scores,
    shadow_in,
    *,
    online: bool = True,
    fixed_variance: bool = False,
    eps: float = 1e-6,
) -> jax.Array:
    """Likelihood-ratio attack (LiRA, Carlini et al. 2022) with shadow models.

    For every example ``i`` the shadow scores are split by ``shadow_in`` into IN
    (the shadow trained on ``i``) and OUT, and a Gaussian is fitted to each
    (the mean, and the ``ddof=0`` std as in the reference code):

    * online: ``score_i = log N(s_i; mu_in, sd_in) - log N(s_i; mu_out, sd_out)``;
    * offline (``online=False``, only OUT shadows needed): the one-sided test of
      the paper, ``score_i = log Phi((s_i - mu_out) / sd_out)`` (the log of
      ``1 - Pr[Z > s_i]``, ``Z ~ N(mu_out, sd_out^2)``).

    ``fixed_variance=True`` replaces the per-example stds by one pooled
    within-example std per kind (recommended with few shadows).

    Missing statistics (nan-safe; never from Python branches): an example
    without IN (OUT) shadows gets ``mu_in = mu_out + delta`` (``mu_out = mu_in -
    delta``), where ``delta`` is the mean IN-minus-OUT difference over examples
    that have both (else the difference of the global IN and OUT means); an
    example with fewer than 2 shadows of a kind uses that kind's pooled std
    (the other kind's if it is undefined). Stds are floored at ``eps``.

    Differences from the reference code (``tensorflow/privacy``
    ``research/mi_lira_2021``): it uses the per-example median for the mean; its
    ``fix_variance`` takes the std of all raw scores, between-example spread
    included (and, online, the IN std for both kinds); and its offline score is
    the two-sided ``-log N(s; mu_out, sd_out)`` rather than the paper's
    one-sided test used here.

    Args:
      target_scores: ``[n]`` scores of the target model, normally
        :func:`logit_confidence` (phi) of each example's true label.
      shadow_scores: ``[K, n]`` the same score under each of ``K`` shadows.
      shadow_in: ``[K, n]`` bool, ``True`` where example ``i`` was in shadow
        ``k``'s training set.
      online: online (IN and OUT) or offline (OUT only) attack.
      fixed_variance: pooled instead of per-example stds.
      eps: lower bound on every std.

    Returns:
      ``[n]`` membership scores, higher = more likely a member (evaluate with
      :func:`roc_metrics`).

    Raises:
      ValueError: on shape mismatch, empty ``target_scores``, no shadow models,
        non-finite concrete scores, or concrete ``shadow_in`` without any IN
        (online) / OUT shadows.
      TypeError: if ``shadow_in`` is not boolean.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> shadow_in = jax.random.bernoulli(k1, 0.5, (16, 4))
      >>> shadow = shadow_in * 3.0 + jax.random.normal(k2, (16, 4))
      >>> lira(jnp.array([3.0, 3.0, 0.0, 0.0]), shadow, shadow_in).shape
      (4,)
    """
    s = _rank1(target_scores, "target_scores")
    n = s.shape[0]
    if n == 0:
        raise ValueError("target_scores is empty.")
    sh = _rank2(shadow_scores, "shadow_scores", n, "K")
    if sh.shape[0] == 0:
        raise ValueError("shadow_scores has no shadow models (shape [0, n]).")
    m = jnp.asarray(shadow_in)
    if m.shape != sh.shape:
        raise ValueError(
            f"shadow_in has shape {m.shape}, expected {sh.shape} to match "
            "shadow_scores."
        )
    if m.dtype != jnp.bool_:
        raise TypeError(f"shadow_in must be boolean, got dtype {m.dtype}.")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    host = _host(m)
    if host is not None:
        if online and not host.any():
            raise ValueError(
                "shadow_in has no IN shadows; online LiRA needs them (use "
                "online=False)."
            )
        if host.all():
            raise ValueError("shadow_in has no OUT shadows; LiRA needs them.")
    dtype = jnp.promote_types(s.dtype, sh.dtype)
    s, sh = s.astype(dtype), sh.astype(dtype)
    c_in, mu_in, v_in, pv_in, g_in = _masked_gaussian(sh, m, ddof=0)
    c_out, mu_out, v_out, pv_out, g_out = _masked_gaussian(sh, ~m, ddof=0)
    mu_in, mu_out = _fill_means(c_in, mu_in, g_in, c_out, mu_out, g_out)
    sd_out = _std(c_out, v_out, pv_out, pv_in, fixed_variance, eps)
    if not online:
        return norm.logcdf((s - mu_out) / sd_out)
    sd_in = _std(c_in, v_in, pv_in, pv_out, fixed_variance, eps)
    return norm.logpdf(s, mu_in, sd_in) - norm.logpdf(s, mu_out, sd_out)


# ---------------------------------------------------------------------------
# U-LiRA


def _rates_at(sorted_x: jax.Array, t: jax.Array) -> jax.Array:
    """Fraction of ``sorted_x`` that is ``>= t`` (vectorised over ``t``)."""
    below = jnp.searchsorted(sorted_x, t, side="left")
    return (sorted_x.shape[0] - below) / sorted_x.shape[0]


def _auc_jnp(pos: jax.Array, neg: jax.Array) -> jax.Array:
    """Mann-Whitney AUC (ties one half) of ``pos`` over ``neg``."""
    neg_sorted = jnp.sort(neg)
    less = jnp.searchsorted(neg_sorted, pos, side="left")
    leq = jnp.searchsorted(neg_sorted, pos, side="right")
    return jnp.mean(less + 0.5 * (leq - less)) / neg.shape[0]


def ulira(
    target_scores,
    unlearned_scores,
    retrained_scores,
    *,
    retrained_target_scores=None,
    n_holdout: int = 1,
    fixed_variance: bool = False,
    eps: float = 1e-6,
) -> dict[str, jax.Array]:
    """U-LiRA (Hayes et al. 2024) as used by RWFT: unlearned vs retrained shadows.

    See docs/methods_notes.md (after ``sangamesh-kodge/class_forgetting:main.py``,
    ``--do-mia-ulira``), scoring the *target* model (Kodge's code scores the last
    shadow by mistake). All scores are per forget example, normally
    :func:`logit_confidence` phi of the forget label.

    1. The last ``n_holdout`` models of each kind are held out; on the rest, fit
       per-example Gaussians (mean, ``ddof=1`` std as ``torch.std`` in the
       reference) to the shadow-unlearned scores (trained on everything, then
       unlearned with the method under test) and to the shadow-retrained scores
       (trained without the forget set). Std fallbacks and ``fixed_variance`` as
       in :func:`lira`.
    2. Score of a model on example ``i``: the log-likelihood ratio
       ``log N(s; mu_u, sd_u) - log N(s; mu_r, sd_r)`` (higher = looks like the
       unlearned models rather than retraining).
    3. One global threshold is chosen on the held-out models (all their
       examples pooled; held-out unlearned = positive): over all distinct
       thresholds plus ``+inf``, the one minimising ``|FPR + TPR - 1|``, ties to
       the highest threshold (the reference uses ``sklearn.roc_curve``, whose
       dropping of collinear points can move the pick slightly). A model is
       predicted "unlearned" on example ``i`` when its score is ``>= threshold``.

    Outputs (fractions, not percent; RWFT tables report x100):

    * ``scores`` ``[n]``: the target's per-example log-likelihood ratios.
    * ``threshold``: the chosen threshold.
    * ``heldout_balanced_accuracy``: ``(TPR + TNR) / 2`` of the held-out
      unlearned vs retrained models at the threshold. Ideal 0.5: the method's
      outputs cannot be told from retraining; 1.0: they always can. (Threshold
      and evaluation use the same held-out models, as in the reference.)
    * ``heldout_auc``: threshold-free version of the same (ideal 0.5).
    * ``target_unlearned_rate``: fraction of the target's forget examples
      predicted "unlearned". With a single unlearned target this is what the
      reference code's ``balanced_accuracy_score(ones, pred)`` reduces to, i.e.
      RWFT Table 3's "U-LiRA accuracy" / 100. Ideal about 0.5 (a retrained
      model is flagged at the held-out FPR, about 0.5 when the attack is at
      chance); 1.0 = every forget example gives the unlearned model away.
    * ``target_balanced_accuracy`` (only with ``retrained_target_scores``):
      Hayes et al.'s proper form, ``(target_unlearned_rate + fraction of the
      retrained target's examples predicted "retrained") / 2``; ideal 0.5.

    Args:
      target_scores: ``[n]`` scores of the unlearned target model.
      unlearned_scores: ``[N_u, n]`` scores of the shadow-unlearned models.
      retrained_scores: ``[N_r, n]`` scores of the shadow-retrained models.
      retrained_target_scores: optional ``[n]`` scores of a retrained target
        model (not one of the shadows).
      n_holdout: models of each kind held out for the threshold; each kind
        needs at least ``n_holdout + 2`` models.
      fixed_variance: pooled instead of per-example stds.
      eps: lower bound on every std.

    Returns:
      Dict of jax arrays as described above (scalars are 0-d arrays).

    Raises:
      ValueError: on shape mismatch, empty ``target_scores``, too few shadow
        models, non-finite concrete scores, or bad ``n_holdout`` / ``eps``.

    Examples:
      >>> import jax
      >>> ku, kr, kt = jax.random.split(jax.random.key(0), 3)
      >>> out = ulira(
      ...     jax.random.normal(kt, (200,)) + 6.0,   # target kept the forget set
      ...     jax.random.normal(ku, (4, 200)) + 6.0,  # shadow-unlearned
      ...     jax.random.normal(kr, (4, 200)),        # shadow-retrained
      ... )
      >>> float(out["heldout_balanced_accuracy"]) > 0.95
      True
      >>> float(out["target_unlearned_rate"]) > 0.95
      True
    """
    s = _rank1(target_scores, "target_scores")
    n = s.shape[0]
    if n == 0:
        raise ValueError("target_scores is empty.")
    u = _rank2(unlearned_scores, "unlearned_scores", n, "N_u")
    r = _rank2(retrained_scores, "retrained_scores", n, "N_r")
    if (
        isinstance(n_holdout, bool)
        or not isinstance(n_holdout, numbers.Integral)
        or n_holdout < 1
    ):
        raise ValueError(f"n_holdout must be a positive int, got {n_holdout!r}.")
    for name, x in (("unlearned_scores", u), ("retrained_scores", r)):
        if x.shape[0] < n_holdout + 2:
            raise ValueError(
                f"{name} has {x.shape[0]} models; with n_holdout={n_holdout} it "
                f"needs at least {n_holdout + 2} (2 to fit, the rest held out)."
            )
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}.")
    rt = None
    if retrained_target_scores is not None:
        rt = _rank1(retrained_target_scores, "retrained_target_scores")
        if rt.shape != s.shape:
            raise ValueError(
                f"retrained_target_scores has shape {rt.shape}, expected {s.shape}."
            )
    dtype = jnp.result_type(s, u, r, *(() if rt is None else (rt,)))
    s, u, r = s.astype(dtype), u.astype(dtype), r.astype(dtype)

    u_fit, u_ho = u[:-n_holdout], u[-n_holdout:]
    r_fit, r_ho = r[:-n_holdout], r[-n_holdout:]
    ones_u = jnp.ones(u_fit.shape, bool)
    ones_r = jnp.ones(r_fit.shape, bool)
    c_u, mu_u, v_u, pv_u, _ = _masked_gaussian(u_fit, ones_u, ddof=1)
    c_r, mu_r, v_r, pv_r, _ = _masked_gaussian(r_fit, ones_r, ddof=1)
    sd_u = _std(c_u, v_u, pv_u, pv_r, fixed_variance, eps)
    sd_r = _std(c_r, v_r, pv_r, pv_u, fixed_variance, eps)

    def llr(x):
        return norm.logpdf(x, mu_u, sd_u) - norm.logpdf(x, mu_r, sd_r)

    pos = jnp.sort(llr(u_ho).ravel())
    neg = jnp.sort(llr(r_ho).ravel())
    cand = jnp.concatenate(
        [jnp.array([jnp.inf], dtype), jnp.sort(jnp.concatenate([pos, neg]))[::-1]]
    )
    tpr = _rates_at(pos, cand)
    fpr = _rates_at(neg, cand)
    best = jnp.argmin(jnp.abs(fpr + tpr - 1.0))
    threshold = cand[best]
    target = llr(s)
    out = {
        "scores": target,
        "threshold": threshold,
        "heldout_balanced_accuracy": (tpr[best] + 1.0 - fpr[best]) / 2.0,
        "heldout_auc": _auc_jnp(pos, neg),
        "target_unlearned_rate": jnp.mean(target >= threshold),
    }
    if rt is not None:
        retrained_kept = jnp.mean(llr(rt.astype(dtype)) < threshold)
        out["target_balanced_accuracy"] = (
            out["target_unlearned_rate"] + retrained_kept
        ) / 2.0
    return out


# ---------------------------------------------------------------------------
# RMIA


def rmia(
    target_probs,
    reference_probs,
    population_target_probs,
    population_reference_probs,
    *,
    gamma: float = 2.0,
) -> jax.Array:
    """RMIA (Zarifzadeh et al. 2024), online-style as in ``Ali-E/AMUN``.

    With ``Pr(x | theta)`` the model's probability of ``x``'s true label,
    ``ratio_x = Pr(x | theta) / mean_ref Pr(x | theta_ref)`` for the examples and
    likewise ``ratio_z`` for the population samples, and
    ``score(x) = mean_z [ratio_x / ratio_z > gamma]``. The ``[n, m]`` pairwise
    comparison is computed exactly but in ``O((n + m) log m)`` memory-light form:
    ``ratio_x / ratio_z > gamma`` iff ``ratio_z < ratio_x / gamma`` (ratios are
    non-negative), counted with a sorted search. Reference means are floored at
    the dtype's smallest normal number so a zero reference probability gives a
    large finite ratio, not a division by zero.

    Args:
      target_probs: ``[n]`` target-model probabilities of the true label of the
        examples under test (e.g. forget and held-out test examples).
      reference_probs: ``[R, n]`` the same under ``R`` reference models.
      population_target_probs: ``[m]`` target-model probabilities on the
        population samples ``z``.
      population_reference_probs: ``[R, m]`` reference-model probabilities on
        the population samples.
      gamma: likelihood-ratio threshold (> 0); RMIA's default is 2.

    Returns:
      ``[n]`` scores in [0, 1]; higher = more likely a member. Report the AUC of
      forget vs test scores with :func:`roc_metrics` (ideal 0.5 after
      unlearning).

    Raises:
      ValueError: on shape mismatch, empty inputs, different reference counts,
        probabilities outside [0, 1] or non-finite (concrete inputs), or
        ``gamma <= 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> rmia(jnp.array([0.9, 0.1]), jnp.full((2, 2), 0.3),
      ...      jnp.array([0.3, 0.3, 0.3]), jnp.full((2, 3), 0.3)).tolist()
      [1.0, 0.0]
    """
    px = _rank1(target_probs, "target_probs")
    n = px.shape[0]
    if n == 0:
        raise ValueError("target_probs is empty.")
    rx = _rank2(reference_probs, "reference_probs", n, "R")
    pz = _rank1(population_target_probs, "population_target_probs")
    m = pz.shape[0]
    if m == 0:
        raise ValueError("population_target_probs is empty.")
    rz = _rank2(population_reference_probs, "population_reference_probs", m, "R")
    if rx.shape[0] != rz.shape[0] or rx.shape[0] == 0:
        raise ValueError(
            f"reference_probs has {rx.shape[0]} reference models but "
            f"population_reference_probs has {rz.shape[0]} (need the same, >= 1)."
        )
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma}.")
    for name, x in (
        ("target_probs", target_probs),
        ("reference_probs", reference_probs),
        ("population_target_probs", population_target_probs),
        ("population_reference_probs", population_reference_probs),
    ):
        host = _host(jnp.asarray(x))  # the input: a cast would be staged
        if host is not None and np.any((host < 0) | (host > 1)):
            raise ValueError(f"{name} must hold probabilities in [0, 1].")
    dtype = jnp.result_type(px, rx, pz, rz)
    tiny = jnp.finfo(dtype).tiny
    ratio_x = px.astype(dtype) / jnp.maximum(rx.astype(dtype).mean(0), tiny)
    ratio_z = pz.astype(dtype) / jnp.maximum(rz.astype(dtype).mean(0), tiny)
    count = jnp.searchsorted(jnp.sort(ratio_z), ratio_x / gamma, side="left")
    return count / m
