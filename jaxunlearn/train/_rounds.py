"""Multi-round unlearning: a sequence of deletion requests, one after another.

Each round takes the next forget set, starts from the previous round's
weights, optionally rebuilds a (condensed) retain set against the cumulative
forget indices, unlearns, and records metrics and times.
"""

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxunlearn import methods
from jaxunlearn.train._engine import _num_classes_of
from jaxunlearn.train._loops import unlearn

# A condenser maps the cumulative forget indices (into the training set) to
# the retain set the method trains on, plus an info dict ({"time": seconds,
# ...}); see ``unlearn_rounds``.
Condenser = Callable[[np.ndarray], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]]


def forget_rounds(
    num_examples: int, *, fraction: float = 0.1, rounds: int = 3, seed: int = 0
) -> list[np.ndarray]:
    """Disjoint forget index sets for sequential uniform deletion requests.

    Round 0 forgets ``round(fraction * num_examples)`` examples drawn
    uniformly; each later round forgets ``fraction`` of what the previous
    rounds retained (the Blend + A-AMU paper's multi-round protocol:
    3 rounds of 10%).

    Examples:
      >>> from jaxunlearn import train
      >>> [len(r) for r in train.forget_rounds(1000, fraction=0.1, rounds=3)]
      [100, 90, 81]
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
        raise TypeError(f"`num_examples` must be an int, got {num_examples!r}.")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"`rounds` must be an int >= 1, got {rounds!r}.")
    if not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ValueError(f"`fraction` must be in (0, 1), got {fraction!r}.")
    rng = np.random.default_rng(seed)
    remaining = rng.permutation(int(num_examples))
    out = []
    for r in range(rounds):
        n = int(round(fraction * len(remaining)))
        if n < 1:
            raise ValueError(
                f"round {r} would forget no example: `num_examples` "
                f"({num_examples}) is too small for {rounds} rounds of "
                f"`fraction` {fraction}."
            )
        out.append(np.sort(remaining[:n]))
        remaining = remaining[n:]
    return out


@dataclasses.dataclass
class RoundsResult:
    """Output of :func:`unlearn_rounds`.

    Attributes:
      variables: the model after the last round.
      records: one dict per round: ``round``, ``forget_size`` (this round),
        ``forget_total`` (cumulative), ``retain_size`` (real retain set),
        ``train_size`` (the set the method trained on: the condensed one with
        a condenser), ``condense_time``, ``unlearn_time`` (run time, no
        compilation), ``compile_time``, ``history`` (per-epoch metrics) and
        whatever ``evaluate`` returned.
      round_variables: the model after each round (host arrays).
    """

    variables: Any
    records: list[dict[str, Any]]
    round_variables: list[Any]


def _subset(ds: Mapping[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {"image": ds["image"][idx], "label": ds["label"][idx]}


def _check_rounds(rounds, n: int) -> list[np.ndarray]:
    if isinstance(rounds, np.ndarray) or not isinstance(rounds, Sequence) or not rounds:
        raise TypeError(
            "`forget_rounds` must be a non-empty sequence of index arrays "
            "(one per round; see train.forget_rounds)."
        )
    seen = np.zeros(n, bool)
    out = []
    for r, idx in enumerate(rounds):
        idx = np.asarray(idx)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"`forget_rounds[{r}]` must be a non-empty 1-D int array, got "
                f"shape {idx.shape} dtype {idx.dtype}."
            )
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(
                f"`forget_rounds[{r}]` indexes outside the training set (size {n})."
            )
        if seen[idx].any() or len(np.unique(idx)) != len(idx):
            raise ValueError(
                f"`forget_rounds[{r}]` repeats indices (of its own or of an "
                "earlier round); rounds must be disjoint."
            )
        seen[idx] = True
        out.append(idx)
    if not (~seen).any():
        raise ValueError("`forget_rounds` forget the whole training set.")
    return out


def unlearn_rounds(
    method: str | Callable[[dict[str, Any]], methods.Method],
    variables: Any,
    train_set: Mapping[str, np.ndarray],
    forget_rounds: Sequence[np.ndarray],
    *,
    apply_fn: Callable,
    epochs: int,
    batch_size: int | Mapping[str, int],
    key: jax.Array,
    method_kwargs: Mapping[str, Any] | None = None,
    init_fn: Callable | None = None,
    unseen_set: Mapping[str, np.ndarray] | None = None,
    val_set: Mapping[str, np.ndarray] | None = None,
    condenser: Condenser | None = None,
    evaluate: Callable[[Any, dict[str, Any]], Mapping[str, Any]] | None = None,
    num_classes: int | None = None,
    progress: bool = False,
) -> RoundsResult:
    """Runs sequential deletion requests, each round from the previous weights.

    Round ``r`` forgets ``forget_rounds[r]`` (indices into ``train_set``).
    The method is rebuilt every round with that round's context: its
    ``forget_set`` is the *current* request only (A-AMU's MMD uses the current
    forget set), its ``retain_set`` everything not forgotten so far, or,
    with a ``condenser``, ``condenser(cumulative_forget_indices)`` -- e.g.
    Blend re-run against the cumulative forget set on a clustering computed
    once (``jaxunlearn.condense``). Condensation time is recorded apart from
    unlearning time (and compile time apart from both).

    Args:
      method: a registered method name (built with ``methods.get`` and the
        round's context plus ``method_kwargs``), or ``make(context) ->
        Method`` receiving the context dict (``apply_fn``, ``num_classes``,
        ``init_fn``, ``forget_set``, ``retain_set``, ``unseen_set``,
        ``val_set``, ``forget_classes``, ``example_input``).
      variables: the model before round 0 (trained on all of ``train_set``).
      train_set: ``{"image", "label"}`` numpy arrays, the original training set.
      forget_rounds: disjoint index arrays, one per round
        (:func:`forget_rounds`).
      apply_fn: the model's apply function.
      epochs, batch_size, key: as :func:`unlearn` (round ``r`` uses
        ``fold_in(key, r)``).
      method_kwargs: hyperparameters for a method given by name.
      init_fn: ``init_fn(key) -> variables`` for methods that re-initialise.
      unseen_set, val_set: context for methods that need unseen data.
      condenser: ``condenser(cumulative_forget) -> (retain_set, info)``;
        ``info["time"]`` is its wall time in seconds.
      evaluate: ``evaluate(variables, info) -> {name: value}`` after each
        round; ``info`` holds ``round``, ``forget_indices`` (this round),
        ``forget_cumulative`` and ``retain_indices`` (real retain set).
      num_classes: class count (default: read from the model).
      progress: tqdm bars per round.

    Returns:
      A :class:`RoundsResult`.

    Examples:
      >>> import jax
      >>> from jaxunlearn import data, models, train
      >>> ds = data.load("digits")["train"]
      >>> model = models.get_model("mlp", 10, hidden=(16,))
      >>> v = models.init(model, jax.random.key(0), ds["image"][:1])
      >>> rounds = train.forget_rounds(len(ds["label"]), fraction=0.1, rounds=2)
      >>> res = train.unlearn_rounds("finetune", v, ds, rounds,
      ...     apply_fn=models.make_apply_fn(model), epochs=1, batch_size=64,
      ...     key=jax.random.key(1))
      >>> [r["forget_total"] for r in res.records]
      [144, 273]
    """
    if not isinstance(train_set, Mapping) or not {"image", "label"} <= set(train_set):
        raise ValueError("`train_set` must be a mapping with 'image' and 'label'.")
    images = np.asarray(train_set["image"])
    labels = np.asarray(train_set["label"])
    if len(images) != len(labels):
        raise ValueError(
            f"`train_set` images and labels differ in length: {len(images)} vs "
            f"{len(labels)}."
        )
    rounds = _check_rounds(forget_rounds, len(labels))
    if isinstance(method, str):
        if method not in methods.names():
            raise ValueError(
                f"unknown method {method!r}; valid names: {methods.names()}."
            )
    elif not callable(method):
        raise TypeError("`method` must be a registered name or a callable.")
    if condenser is not None and not callable(condenser):
        raise TypeError("`condenser` must be callable (or None).")
    num_classes = num_classes or _num_classes_of(variables)
    ds = {"image": images, "label": labels}
    forgotten = np.zeros(len(labels), bool)
    records: list[dict[str, Any]] = []
    kept: list[Any] = []
    for r, idx in enumerate(rounds):
        forgotten[idx] = True
        cumulative = np.flatnonzero(forgotten)
        retain_idx = np.flatnonzero(~forgotten)
        forget = _subset(ds, idx)
        retain = _subset(ds, retain_idx)
        condense_time, cinfo = 0.0, {}
        train_on = retain
        if condenser is not None:
            t0 = time.perf_counter()
            train_on, cinfo = condenser(cumulative)
            condense_time = float(cinfo.get("time", time.perf_counter() - t0))
            train_on = {k: np.asarray(train_on[k]) for k in ("image", "label")}
        whole = np.unique(labels[idx])
        full_classes = [int(c) for c in whole if not np.any((labels == c) & ~forgotten)]
        context = dict(
            apply_fn=apply_fn,
            num_classes=num_classes,
            init_fn=init_fn,
            forget_set=forget,
            retain_set=train_on,
            unseen_set=unseen_set,
            val_set=val_set,
            forget_classes=full_classes or None,
            example_input=images[:1],
        )
        if isinstance(method, str):
            m = methods.get(method, **context, **dict(method_kwargs or {}))
        else:
            m = method(context)
        res = unlearn(
            m,
            variables,
            {"retain": train_on, "forget": forget},
            epochs=epochs,
            batch_size=batch_size,
            key=jax.random.fold_in(key, r),
            num_classes=num_classes,
            progress=f"round {r}" if progress else False,
        )
        variables = jax.device_get(res.variables)
        record = {
            "round": r,
            "forget_size": int(len(idx)),
            "forget_total": int(len(cumulative)),
            "retain_size": int(len(retain_idx)),
            "train_size": int(len(train_on["label"])),
            "condense_time": condense_time,
            "unlearn_time": float(res.run_time),
            "compile_time": float(res.compile_time),
            "history": res.history,
            **{k: v for k, v in cinfo.items() if k != "time"},
        }
        if evaluate is not None:
            info = dict(
                round=r,
                forget_indices=idx,
                forget_cumulative=cumulative,
                retain_indices=retain_idx,
            )
            record.update(dict(evaluate(variables, info)))
        records.append(record)
        kept.append(variables)
    return RoundsResult(variables=variables, records=records, round_variables=kept)
