"""Aggregating metrics over seeds: mean, standard deviation, bootstrap intervals."""

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np


def _values(values, name: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 0:
        x = x[None]
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence, got shape {x.shape}.")
    if x.size == 0:
        raise ValueError(f"{name} is empty.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values.")
    return x


def mean_std(values) -> tuple[float, float]:
    """Sample mean and standard deviation (``ddof=1``) of per-seed values.

    Args:
      values: 1-D sequence of finite numbers (at least one).

    Returns:
      ``(mean, std)``; ``std`` is ``nan`` for a single value.

    Raises:
      ValueError: if ``values`` is empty, not 1-D, or non-finite.

    Examples:
      >>> mean_std([1.0, 2.0, 3.0])
      (2.0, 1.0)
    """
    x = _values(values)
    std = float(np.std(x, ddof=1)) if x.size >= 2 else math.nan
    return float(np.mean(x)), std


def bootstrap_ci(
    values,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean.

    Resamples ``values`` with replacement ``n_resamples`` times (numpy
    ``default_rng(seed)``) and returns the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of the resampled means. With few seeds
    (say 3-5) the percentile interval is narrower than its nominal coverage;
    report it together with ``n``.

    Args:
      values: 1-D sequence of finite numbers.
      confidence: coverage in (0, 1).
      n_resamples: number of bootstrap resamples (>= 1).
      seed: seed of the resampling.

    Returns:
      ``(low, high)``; ``(nan, nan)`` for fewer than 2 values.

    Raises:
      ValueError: on empty / non-finite ``values`` or out-of-range arguments.

    Examples:
      >>> low, high = bootstrap_ci([0.90, 0.92, 0.91, 0.95, 0.93])
      >>> low < 0.922 < high
      True
    """
    x = _values(values)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, numbers.Integral):
        raise TypeError(f"n_resamples must be an int, got {n_resamples!r}.")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}.")
    if x.size < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    n = x.size
    rows = max(1, (1 << 22) // n)  # keep each index block at ~4M entries
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _is_number(v) -> bool:
    if isinstance(v, numbers.Real):  # includes bool and numpy scalars
        return True
    return (
        isinstance(v, np.ndarray | np.generic)
        and v.shape == ()
        and (np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_)
    )


def aggregate(
    results: Sequence[Mapping],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Summarise per-seed metric dicts key by key.

    A key is aggregated when every dict that has it holds a real scalar there
    (Python or numpy number, 0-d array, or bool, counted as 0/1, so a
    ``"diverged"`` flag becomes the fraction of diverged seeds); keys whose
    values are all non-numeric (strings, arrays) are skipped. Keys missing from
    some dicts are aggregated over the dicts that have them (``n`` tells how
    many). If any value of a key is ``nan`` or infinite, that key's statistics
    are all ``nan`` (a diverged seed is never silently dropped).

    Args:
      results: sequence of dicts, e.g. one evaluation result per seed.
      confidence: coverage of the bootstrap interval.
      n_resamples: bootstrap resamples.
      seed: bootstrap seed.

    Returns:
      ``{key: {"mean", "std", "ci_low", "ci_high", "n"}}`` in order of first
      appearance; ``std`` and the interval are ``nan`` when ``n < 2``.

    Raises:
      TypeError: if ``results`` is not a sequence of mappings, or a key mixes
        numeric and non-numeric values.
      ValueError: if ``results`` is empty.

    Examples:
      >>> out = aggregate([{"acc": 0.9, "name": "a"}, {"acc": 0.8, "name": "b"}])
      >>> list(out), out["acc"]["mean"], out["acc"]["n"]
      (['acc'], 0.85, 2)
    """
    if isinstance(results, Mapping) or not isinstance(results, Sequence):
        raise TypeError(
            f"results must be a sequence of dicts, got {type(results).__name__}."
        )
    if len(results) == 0:
        raise ValueError("results is empty.")
    collected: dict[str, list] = {}
    for i, r in enumerate(results):
        if not isinstance(r, Mapping):
            raise TypeError(f"results[{i}] must be a dict, got {type(r).__name__}.")
        for k, v in r.items():
            collected.setdefault(k, []).append(v)
    out: dict[str, dict[str, float]] = {}
    for k, vs in collected.items():
        numeric = [_is_number(v) for v in vs]
        if not any(numeric):
            continue
        if not all(numeric):
            raise TypeError(f"results key {k!r} mixes numeric and non-numeric values.")
        x = np.asarray([float(v) for v in vs])
        n = int(x.size)
        if not np.all(np.isfinite(x)):
            out[k] = dict(
                mean=math.nan, std=math.nan, ci_low=math.nan, ci_high=math.nan, n=n
            )
            continue
        mean, std = mean_std(x)
        low, high = bootstrap_ci(
            x, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        out[k] = dict(mean=mean, std=std, ci_low=low, ci_high=high, n=n)
    return out
