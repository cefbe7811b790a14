"""Hyperparameter sweeps selected against retraining (``sweep``).

Every point of a grid over a method's sweepable hyperparameters (the scalars
in ``state.hparams``: learning rate, loss weights, ...) is trained as ONE
vmapped program (:func:`~jaxunlearn.train.unlearn_replicas`), in chunks of a
fixed size so the program compiles once; a ``"replica"`` mesh shards the
points over devices. Each trained point is then scored against the retrained
model on a *selection* split (held out from training and from the evaluation
split) by a declared :class:`SelectionRule`, and the lowest score wins.
"""

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxunlearn import data as data_lib
from jaxunlearn import eval as ev
from jaxunlearn import methods
from jaxunlearn.train._engine import _host_arrays, _num_classes_of, to_host
from jaxunlearn.train._loops import unlearn_replicas

TERMS = ("retain", "forget", "heldout", "privacy")


@dataclasses.dataclass(frozen=True)
class SelectionRule:
    """How a sweep picks its winner: the weighted gap to the retrained model.

    For a trained point ``u`` and the retrained model ``r`` the score is::

        sum_t weights[t] * |m_t(u) - m_t(r)|        (lower is better)

    over the terms ``t``:

    * ``"retain"``: accuracy on (a seeded subsample of) the retain set;
    * ``"forget"``: accuracy on the forget set;
    * ``"heldout"``: accuracy on the selection split (stands in for test
      accuracy, which stays untouched for evaluation);
    * ``"privacy"``: accuracy of a cross-fitted logistic-regression membership
      attack on per-example losses, forget set (members) against the selection
      split (non-members) (:func:`jaxunlearn.eval.loss_mia_accuracy`).

    A point whose parameters or scores are not finite (diverged) scores
    ``inf`` and never wins; ties go to the earliest point of the grid.

    Attributes:
      weights: ``{term: weight >= 0}``; a missing term has weight 0.
      max_retain: retain examples scored (a seeded subsample; 0 = all).
      mia_folds: folds of the cross-fitted attack.

    Examples:
      >>> from jaxunlearn import train
      >>> rule = train.SelectionRule(weights={"forget": 1.0, "privacy": 2.0})
      >>> rule.describe()
      'min 1*|forget - forget*| + 2*|privacy - privacy*| (* = retrained model)'
    """

    weights: Mapping[str, float] = dataclasses.field(
        default_factory=lambda: {t: 1.0 for t in TERMS}
    )
    max_retain: int = 2000
    mia_folds: int = 2

    def __post_init__(self):
        if not isinstance(self.weights, Mapping) or not self.weights:
            raise ValueError("SelectionRule.weights must be a non-empty mapping.")
        unknown = sorted(set(self.weights) - set(TERMS))
        if unknown:
            raise ValueError(
                f"SelectionRule.weights has unknown terms {unknown}; valid: {TERMS}."
            )
        for t, w in self.weights.items():
            if (
                isinstance(w, bool)
                or not isinstance(w, int | float)
                or not math.isfinite(w)
                or w < 0
            ):
                raise ValueError(
                    f"SelectionRule.weights[{t!r}] must be a finite number >= 0,"
                    f" got {w!r}."
                )
        if not any(self.weights.values()):
            raise ValueError("SelectionRule.weights are all 0.")
        if not isinstance(self.max_retain, int) or self.max_retain < 0:
            raise ValueError(
                f"SelectionRule.max_retain must be an int >= 0, got"
                f" {self.max_retain!r}."
            )
        if not isinstance(self.mia_folds, int) or self.mia_folds < 2:
            raise ValueError(
                f"SelectionRule.mia_folds must be an int >= 2, got {self.mia_folds!r}."
            )

    def describe(self) -> str:
        parts = [
            f"{w:g}*|{t} - {t}*|" for t in TERMS if (w := self.weights.get(t, 0.0))
        ]
        return "min " + " + ".join(parts) + " (* = retrained model)"

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": {t: float(self.weights.get(t, 0.0)) for t in TERMS},
            "max_retain": self.max_retain,
            "mia_folds": self.mia_folds,
            "formula": self.describe(),
        }


@dataclasses.dataclass
class SweepResult:
    """Output of :func:`sweep` (host values, JSON-ready through ``to_json``).

    Attributes:
      rule: the :class:`SelectionRule` used.
      grid: ``{name: [values]}`` as given.
      points: every setting, in grid order (``[{name: value}]``).
      metrics: per point ``{term: value}`` on the selection data.
      scores: per point, the rule's score (``inf`` when diverged).
      reference: the retrained model's ``{term: value}``.
      best_index: index of the winner in ``points``.
      best: the winning setting (pass it as ``hparams=`` to ``train.unlearn``).
      compile_time: seconds compiling the training program (scoring's
        compilation is inside ``run_time``).
      run_time: seconds training and scoring, compilation excluded.
      chunks: number of vmapped programs run (one compile for all of them).
      variables: the winner's trained variables (host arrays).
    """

    rule: SelectionRule
    grid: dict[str, list[float]]
    points: list[dict[str, float]]
    metrics: list[dict[str, float]]
    scores: list[float]
    reference: dict[str, float]
    best_index: int
    compile_time: float
    run_time: float
    chunks: int
    chunk_size: int
    variables: Any = None

    @property
    def best(self) -> dict[str, float]:
        return dict(self.points[self.best_index])

    @property
    def on_edge(self) -> list[str]:
        """Hyperparameters whose winning value is the smallest or largest of
        its grid axis (with more than one value): the optimum may lie outside
        the grid, so widen it."""
        out = []
        for name, values in self.grid.items():
            v = self.best[name]
            if len(set(values)) > 1 and v in (min(values), max(values)):
                out.append(name)
        return out

    def to_json(self) -> dict[str, Any]:
        def num(x):
            return float(x) if math.isfinite(x) else None

        return {
            "rule": self.rule.to_json(),
            "grid": self.grid,
            "reference": self.reference,
            "points": [
                {
                    "hparams": p,
                    # a diverged point's metrics come from NaN outputs: none
                    "metrics": {
                        k: num(v) if math.isfinite(s) else None for k, v in m.items()
                    },
                    "score": num(s),
                    "diverged": not math.isfinite(s),
                }
                for p, m, s in zip(self.points, self.metrics, self.scores, strict=True)
            ],
            "best_index": self.best_index,
            "best": self.best,
            "best_score": num(self.scores[self.best_index]),
            "best_on_grid_edge": self.on_edge,
            "compile_time": self.compile_time,
            "run_time": self.run_time,
            "chunks": self.chunks,
            "chunk_size": self.chunk_size,
        }


def sweepable(method: methods.Method, variables: Any) -> list[str]:
    """Names of ``method``'s sweepable hyperparameters (``state.hparams``).

    Found by tracing ``init`` abstractly (nothing runs), with the context
    :func:`unlearn` passes (a key and the run length).

    Examples:
      >>> import jax
      >>> from jaxunlearn import methods, models, train
      >>> model = models.get_model("mlp", 10, hidden=(8,))
      >>> v = models.init(model, jax.random.key(0), jax.numpy.zeros((1, 8, 8, 1)))
      >>> m = methods.get("neggrad_plus", apply_fn=models.make_apply_fn(model))
      >>> train.sweepable(m, v)
      ['learning_rate', 'retain_weight']
    """

    def init(v):
        return method.init(
            v, key=jax.random.key(0), num_steps=1, steps_per_epoch=1
        ).hparams

    return sorted(jax.eval_shape(init, variables))


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """The Cartesian product of ``grid`` in row-major order (last name fastest).

    Examples:
      >>> grid_points({"learning_rate": [0.1, 0.01], "alpha": [1.0]})
      [{'learning_rate': 0.1, 'alpha': 1.0}, {'learning_rate': 0.01, 'alpha': 1.0}]
    """
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"`grid` must be a non-empty mapping, got {grid!r}.")
    names, values = [], []
    for name, vals in grid.items():
        if isinstance(vals, str | bytes) or not isinstance(vals, Sequence):
            raise TypeError(
                f"grid[{name!r}] must be a list of numbers, got {type(vals).__name__}."
            )
        if not vals:
            raise ValueError(f"grid[{name!r}] is empty.")
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, int | float | np.number):
                raise TypeError(f"grid[{name!r}] has a non-number {v!r}.")
            if not math.isfinite(float(v)):
                raise ValueError(f"grid[{name!r}] has a non-finite value {v!r}.")
        names.append(name)
        values.append([float(v) for v in vals])
    return [dict(zip(names, p, strict=True)) for p in itertools.product(*values)]


@functools.partial(jax.jit, static_argnums=(0,))
def _stacked_losses(apply_fn, variables, images, labels):
    """Per-example cross-entropy and correctness of K stacked models."""

    def one(v):
        logits = apply_fn(v, images, train=False)[0]
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        loss = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
        return loss, (jnp.argmax(logits, -1) == labels)

    return jax.vmap(one)(variables)


@functools.partial(jax.jit, static_argnums=(2,))
def _repeat(variables, key, size):
    """``size`` copies of the starting variables and of the shared key."""
    stack = lambda x: jnp.broadcast_to(x, (size, *jnp.shape(x)))  # noqa: E731
    return jax.tree.map(stack, variables), jnp.stack([key] * size)


@jax.jit
def _finite_params(variables):
    """``[K]`` bool: every parameter / statistic of replica k is finite."""
    leaves = [
        jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1)
        for x in jax.tree.leaves(variables)
    ]
    return jnp.all(jnp.stack(leaves), axis=0)


@jax.jit
def _pick(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _model_outputs(apply_fn, variables, part, batch_size):
    """``(losses, correct)`` ``[K, n]`` of stacked models on one set.

    Every set is cut into batches of the same ``batch_size`` (the last one
    zero-padded), so scoring compiles one program for all sets.
    """
    n = len(part["label"])
    batches = data_lib.padded_batches(
        {"image": part["image"], "label": part["label"]}, batch_size
    )
    losses, correct = [], []
    for img, lab in zip(batches["image"], batches["label"], strict=True):
        lo, co = _stacked_losses(apply_fn, variables, img, lab)
        losses.append(to_host(lo))
        correct.append(to_host(co))
    return np.concatenate(losses, 1)[:, :n], np.concatenate(correct, 1)[:, :n]


@jax.jit
def _append(stacked, one):
    """``[K, ...]`` replicas plus one more model: ``[K + 1, ...]``."""
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), stacked, one)


@functools.partial(jax.jit, static_argnums=(2,))
def _mia(member, nonmember, folds):
    return jax.vmap(lambda m, u: ev.loss_mia_accuracy(m, u, folds=folds))(
        member, nonmember
    )


def _selection_metrics(apply_fn, variables, sets, rule, batch_size):
    """``{term: [K]}`` of K stacked models on the selection data."""
    out = {}
    losses = {}
    for name in ("retain", "forget", "heldout"):
        lo, co = _model_outputs(apply_fn, variables, sets[name], batch_size)
        out[name] = co.mean(axis=1)
        losses[name] = lo
    member = np.nan_to_num(losses["forget"], nan=1e4, posinf=1e4, neginf=-1e4)
    non = np.nan_to_num(losses["heldout"], nan=1e4, posinf=1e4, neginf=-1e4)
    out["privacy"] = to_host(_mia(member, non, rule.mia_folds))
    finite = np.isfinite(losses["forget"]).all(1) & np.isfinite(losses["heldout"]).all(
        1
    )
    return out, finite


def _score(metrics, reference, rule, finite):
    score = np.zeros(len(finite))
    for t in TERMS:
        w = rule.weights.get(t, 0.0)
        if w:
            score = score + w * np.abs(metrics[t] - reference[t])
    return np.where(finite & np.isfinite(score), score, np.inf)


def _selection_sets(split, rule, seed):
    """Retain (subsampled), forget and the selection split of ``split``."""
    retain = split.retain
    if rule.max_retain and len(retain["label"]) > rule.max_retain:
        retain = data_lib.subsample(retain, rule.max_retain, seed)
    return {"retain": retain, "forget": split.forget, "heldout": split.val}


def sweep(
    method: methods.Method,
    grid: Mapping[str, Sequence[float]],
    data: Any,
    *,
    variables: Any,
    retrained: Any,
    apply_fn,
    epochs: int,
    batch_size: int,
    key: jax.Array,
    select: SelectionRule | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    selection: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    eval_batch_size: int = 512,
    progress: bool | str = False,
) -> SweepResult:
    """Trains every point of ``grid`` as one vmapped program and picks one.

    All points start from ``variables`` and share ``key`` (the same batches
    and step randomness: common random numbers, so scores differ only through
    the hyperparameters). The grid is cut into chunks of ``chunk_size`` points
    (the last one padded by repeating its final point), so the training
    program compiles once; with a ``"replica"`` mesh (``make_mesh(axis=
    "replica")``, or a 2-D one) each chunk's points are sharded over devices.
    Scores come from the selection data, never from the test split.

    Args:
      method: the method, built with its context (``methods.get(...)``).
      grid: ``{hparam: [values]}`` over the method's sweepable scalars
        (``method.init(variables).hparams``); every combination is trained.
      data: an ``UnlearningData`` / ``Split`` (its retain / forget sets train;
        with the default ``selection`` its ``val`` part is the selection split).
      variables: the original model (starting point of every point).
      retrained: the retrained model's variables (the selection target).
      apply_fn: the model's apply function (``models.make_apply_fn``).
      epochs: epochs of the method.
      batch_size: batch size of the method.
      key: PRNG key shared by every point.
      select: the :class:`SelectionRule` (default: all four terms, weight 1).
      chunk_size: points per vmapped program (default: all, up to 64).
      mesh: optional mesh with a ``"replica"`` axis.
      selection: ``{"retain", "forget", "heldout": {"image", "label"}}``;
        default: ``data.retain`` (subsampled), ``data.forget``, ``data.val``.
      eval_batch_size: examples per scoring batch.
      progress: show a tqdm bar over chunks.

    Returns:
      A :class:`SweepResult`; ``result.best`` is the winning setting.

    Examples:
      >>> import jax
      >>> from jaxunlearn import data, methods, models, train
      >>> split = data.split(data.load("digits"), "class", forget_classes=3)
      >>> model = models.get_model("mlp", 10, hidden=(32,))
      >>> apply_fn = models.make_apply_fn(model)
      >>> cfg = train.TrainConfig(epochs=3)
      >>> orig, _ = train.train_original(model, split, cfg, seed=0)
      >>> retr, _ = train.retrain(model, split, cfg, seed=1)
      >>> m = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.1)
      >>> r = train.sweep(m, {"learning_rate": [0.01, 0.1]}, split,
      ...                 variables=orig, retrained=retr, apply_fn=apply_fn,
      ...                 epochs=1, batch_size=64, key=jax.random.key(0))
      >>> len(r.scores), r.chunks
      (2, 1)
    """
    if not isinstance(method, methods.Method):
        raise TypeError(
            f"`method` must be a methods.Method, got {type(method).__name__}."
        )
    points = grid_points(grid)
    select = SelectionRule() if select is None else select
    if not isinstance(select, SelectionRule):
        raise TypeError(
            f"`select` must be a SelectionRule, got {type(select).__name__}."
        )
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive int, got {epochs!r}.")
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, int)
        or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` must be a positive int, got {chunk_size!r}.")
    for name in ("variables", "retrained"):
        v = variables if name == "variables" else retrained
        if not isinstance(v, Mapping) or "params" not in v:
            raise ValueError(
                f"`{name}` must be Flax variables with a 'params' collection."
            )
    names = sweepable(method, variables)
    unknown = sorted(set(grid) - set(names))
    if unknown:
        raise ValueError(
            f"grid names {unknown} are not sweepable hyperparameters of this method;"
            f" sweepable: {names}."
        )
    if selection is None:
        for part in ("retain", "forget", "val"):
            if not hasattr(data, part):
                raise ValueError(
                    "`data` has no retain / forget / val parts: pass `selection=`"
                    " ({'retain', 'forget', 'heldout'} sets)."
                )
        selection = _selection_sets(data, select, seed=0)
    missing = sorted({"retain", "forget", "heldout"} - set(selection))
    if missing:
        raise ValueError(f"`selection` is missing sets {missing}.")
    sel, _ = _host_arrays(
        {k: selection[k] for k in ("retain", "forget", "heldout")},
        _num_classes_of(variables),
    )

    replicas = 1
    if mesh is not None and "replica" in mesh.shape:
        replicas = mesh.shape["replica"]
    size = min(len(points), 64) if chunk_size is None else min(chunk_size, len(points))
    size = -(-size // replicas) * replicas  # a multiple of the replica axis
    num_chunks = -(-len(points) // size)

    leaves = jax.tree.leaves(jax.device_get(retrained))
    if not all(np.all(np.isfinite(np.asarray(x))) for x in leaves):
        raise ValueError("`retrained` has non-finite parameters or statistics.")
    eval_bs = min(eval_batch_size, max(len(p["label"]) for p in sel.values()))
    # The retrained model is scored as one more replica of every chunk (one
    # compiled scoring program for both); its values come from the first.
    reference: dict[str, float] = {}
    score_time = 0.0

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            label = progress if isinstance(progress, str) else "sweep"
            bar = tqdm(total=num_chunks, desc=label, unit="chunk", leave=False)
        except ImportError:
            bar = None

    metrics: dict[str, list[float]] = {t: [] for t in TERMS}
    compile_time = run_time = 0.0
    best_vars, best_score = None, np.inf
    scores: list[float] = []
    stacked, keys = _repeat(variables, key, size)
    for c in range(num_chunks):
        chunk = points[c * size : (c + 1) * size]
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        hp = {name: np.array([p[name] for p in padded], np.float32) for name in grid}
        t0 = time.perf_counter()
        result = unlearn_replicas(
            method,
            stacked,
            data,
            epochs=epochs,
            batch_size=batch_size,
            keys=keys,
            mesh=mesh,
            hparams=hp,
        )
        trained = result.state.variables
        jax.block_until_ready(trained)
        elapsed = time.perf_counter() - t0
        compile_time += result.compile_time
        run_time += elapsed - result.compile_time
        t0 = time.perf_counter()
        both = _append(trained, retrained)
        m, finite = _selection_metrics(apply_fn, both, sel, select, eval_bs)
        finite = finite & to_host(_finite_params(both))
        if not reference:
            if not finite[-1]:
                raise ValueError(
                    "`retrained` gives non-finite losses on the selection data."
                )
            reference = {t: float(m[t][-1]) for t in TERMS}
        m = {t: v[:-1] for t, v in m.items()}
        s = _score(m, reference, select, finite[:-1])
        score_time += time.perf_counter() - t0
        n = len(chunk)
        for t in TERMS:
            metrics[t] += [float(x) for x in m[t][:n]]
        scores += [float(x) for x in s[:n]]
        i = int(np.argmin(s[:n]))
        if s[i] < best_score:
            best_score = s[i]
            best_vars = jax.tree.map(to_host, _pick(trained, i))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not np.isfinite(best_score):
        raise FloatingPointError(
            f"every one of the {len(points)} grid points diverged (non-finite"
            " parameters or losses); try smaller learning rates."
        )
    best_index = int(np.argmin(np.asarray(scores)))
    return SweepResult(
        rule=select,
        grid={k: [float(v) for v in vals] for k, vals in grid.items()},
        points=points,
        metrics=[{t: metrics[t][i] for t in TERMS} for i in range(len(points))],
        scores=scores,
        reference=reference,
        best_index=best_index,
        compile_time=compile_time,
        run_time=run_time + score_time,
        chunks=num_chunks,
        chunk_size=size,
        variables=best_vars,
    )
