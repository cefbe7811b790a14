"""Plots for unlearning experiments: loss histograms, ROC curves, confusion maps.

matplotlib is an optional dependency (the ``experiments`` extra). It is imported
lazily inside the plotting functions, never when this module is imported, and
only its backend-independent API is used (``matplotlib.figure.Figure``; no
``pyplot`` state, no ``show``), so the functions work headless. Every plot
function draws into an existing ``ax=`` when given (and returns that Axes'
figure) or creates a new ``Figure``. ``confusion_matrix`` is pure numpy.
"""

from __future__ import annotations

import numbers
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "confusion_matrix",
    "plot_confusion",
    "plot_embedding",
    "plot_loss_histograms",
    "plot_metric_bars",
    "plot_roc",
    "save_figure",
]

_INSTALL_HINT = (
    "matplotlib is required for plotting; install it with "
    "pip install 'jaxunlearn[experiments]'"
)
_LOG_ROC_FLOOR = 1e-4
_ANNOTATE_MAX_CLASSES = 12
_LEGEND_MAX_CLASSES = 20


# --------------------------------------------------------------------------- #
# Helpers.
# --------------------------------------------------------------------------- #


def _require_matplotlib():
    """Imports matplotlib lazily, with an install hint when it is missing."""
    try:
        import matplotlib  # noqa: F401
        import matplotlib.axes
        import matplotlib.figure
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return matplotlib


def _figure_and_axes(ax, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """Returns ``(root_figure, ax)``, creating a new figure when ``ax`` is None."""
    mpl = _require_matplotlib()
    if ax is None:
        fig = mpl.figure.Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    if not isinstance(ax, mpl.axes.Axes):
        raise TypeError(
            f"ax must be a matplotlib Axes or None, got {type(ax).__name__}."
        )
    try:
        fig = ax.get_figure(root=True)
    except TypeError:  # matplotlib < 3.10: no `root`; `.figure` of a
        fig = ax.figure.figure  # SubFigure is the root figure already.
    return fig, ax


def _finite_1d(values, name: str, *, allow_empty: bool = False) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be an array of numbers: {e}") from e
    x = x.reshape(-1)
    if x.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values.")
    return x


def _int_1d(values, name: str) -> np.ndarray:
    x = np.asarray(values)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {x.shape}.")
    if x.size and x.dtype.kind not in "iu":
        raise TypeError(f"{name} must have an integer dtype, got {x.dtype}.")
    return x.astype(np.int64)


def _check_title(title) -> None:
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}.")


# --------------------------------------------------------------------------- #
# Confusion matrix.
# --------------------------------------------------------------------------- #


def confusion_matrix(logits_or_preds, labels, num_classes: int) -> np.ndarray:
    """Counts of (true class, predicted class) pairs.

    Args:
      logits_or_preds: logits ``[N, C]`` (the prediction is their argmax) or
        integer predictions ``[N]``.
      labels: integer true classes ``[N]``.
      num_classes: number of classes ``C`` (a positive int); with logits it
        must equal their last dimension.

    Returns:
      int64 array ``[C, C]``: entry ``[i, j]`` counts examples of true class
      ``i`` predicted as class ``j`` (rows = true, columns = predicted).

    Raises:
      ValueError: if the shapes disagree or a class index is outside
        ``[0, num_classes)``.
      TypeError: if predictions or labels are not integers, or
        ``num_classes`` is not an int.

    Examples:
      >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
      array([[1, 0, 0],
             [0, 1, 0],
             [0, 1, 1]])
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(
            f"num_classes must be an int, got {type(num_classes).__name__}."
        )
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    arr = np.asarray(logits_or_preds)
    if arr.ndim == 2:
        if arr.shape[1] != num_classes:
            raise ValueError(
                f"logits_or_preds has {arr.shape[1]} columns (shape {arr.shape}),"
                f" expected num_classes={num_classes}."
            )
        preds = np.argmax(arr, axis=1).astype(np.int64)
    elif arr.ndim == 1:
        preds = _int_1d(arr, "logits_or_preds")
    else:
        raise ValueError(
            "logits_or_preds must be logits [N, C] or predictions [N], "
            f"got shape {arr.shape}."
        )
    labels = _int_1d(labels, "labels")
    if labels.shape != preds.shape:
        raise ValueError(
            f"labels has shape {labels.shape}, but logits_or_preds gives "
            f"{preds.shape[0]} predictions."
        )
    for name, x in (("logits_or_preds", preds), ("labels", labels)):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(
                f"{name} has values in [{x.min()}, {x.max()}], outside "
                f"[0, num_classes={num_classes})."
            )
    flat = np.bincount(labels * num_classes + preds, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


# --------------------------------------------------------------------------- #
# Loss histograms.
# --------------------------------------------------------------------------- #


def plot_loss_histograms(
    forget_losses,
    unseen_losses,
    *,
    ax: Axes | None = None,
    bins: int | Sequence[float] = 50,
    title: str | None = None,
    log_x: bool = False,
) -> Figure:
    """Overlaid density histograms of per-example losses, forget vs unseen.

    A model that has truly forgotten its forget set should give it the same
    loss distribution as data it never saw (DLFD, Figs. 5/6). Both histograms
    share one set of bin edges and are normalised to unit area; the legend
    gives each set's size and mean loss.

    Args:
      forget_losses: per-example losses of the forget set (any shape,
        flattened; finite).
      unseen_losses: per-example losses of unseen (e.g. test) data.
      ax: Axes to draw into; a new figure is created when None.
      bins: number of shared bins (positive int) or explicit increasing edges.
      title: optional Axes title.
      log_x: log-scaled loss axis with geometric bins. Losses ``<= 0`` (a
        float32 cross-entropy can underflow to exactly 0) are clipped to the
        smallest positive loss so they fall in the first bin.

    Returns:
      The figure holding the Axes.

    Raises:
      ValueError: if a loss array is empty or non-finite, or ``bins`` is
        invalid.
    """
    forget = _finite_1d(forget_losses, "forget_losses")
    unseen = _finite_1d(unseen_losses, "unseen_losses")
    _check_title(title)
    both = np.concatenate([forget, unseen])
    if log_x:
        positive = both[both > 0]
        floor = positive.min() if positive.size else 1e-12
        forget = np.maximum(forget, floor)
        unseen = np.maximum(unseen, floor)
        both = np.maximum(both, floor)
    if isinstance(bins, bool):
        raise TypeError("bins must be an int or a sequence of edges, got bool.")
    if isinstance(bins, numbers.Integral):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}.")
        lo, hi = both.min(), both.max()
        if log_x:
            if hi <= lo:
                lo, hi = lo / 2.0, hi * 2.0
            edges = np.geomspace(lo, hi, int(bins) + 1)
        else:
            edges = np.histogram_bin_edges(both, bins=int(bins))
    else:
        edges = _finite_1d(bins, "bins")
        if edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins edges must be at least 2 increasing values.")
        if log_x and edges[0] <= 0:
            raise ValueError("bins edges must be positive when log_x=True.")

    fig, ax = _figure_and_axes(ax, (5.5, 3.8))
    for x, name, color in (
        (forget, "forget", "C3"),
        (unseen, "unseen", "C0"),
    ):
        ax.hist(
            x,
            bins=edges,
            density=True,
            histtype="stepfilled",
            alpha=0.45,
            color=color,
            edgecolor=color,
            label=f"{name} (n={x.size}, mean={x.mean():.3g})",
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("per-example loss")
    ax.set_ylabel("density")
    ax.legend()
    if title is not None:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- #
# ROC curves.
# --------------------------------------------------------------------------- #


def _roc_curve(scores, is_member, name: str):
    """ROC of ``score >= threshold => member``: ``(fpr, tpr, auc, n_neg)``.

    Tied scores form a single threshold (one diagonal segment), so the area
    equals the Mann-Whitney probability with ties counted as 1/2.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member)
    if s.ndim != 1:
        raise ValueError(f"{name} scores must be 1-D, got shape {s.shape}.")
    if y.ndim != 1:
        raise ValueError(f"{name} is_member must be 1-D, got shape {y.shape}.")
    if y.shape != s.shape:
        raise ValueError(
            f"{name}: is_member has length {y.shape[0]} but scores has length "
            f"{s.shape[0]}."
        )
    if np.any(np.isnan(s)):
        raise ValueError(f"{name} scores contain NaN.")
    if y.dtype != bool:
        if y.dtype.kind not in "iuf" or not np.all((y == 0) | (y == 1)):
            raise ValueError(f"{name} is_member must be boolean or 0/1.")
        y = y.astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{name} is_member needs both members and non-members "
            f"(got {n_pos} and {n_neg})."
        )
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # Last index of each run of equal scores (inf-safe, unlike np.diff).
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return fpr, tpr, auc, n_neg


def plot_roc(
    curves: Mapping[Any, tuple[Any, Any]],
    *,
    log: bool = False,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """ROC curves of membership scores (a higher score means "member").

    Args:
      curves: ``{label: (scores, is_member)}``; ``scores`` is 1-D (NaN-free),
        ``is_member`` a boolean or 0/1 array of the same length with both
        classes present. Each label is drawn with its AUC in the legend.
      log: log-log "low-FPR" ROC as in LiRA papers: both axes log-scaled from
        ``max(1e-4, 1/n)`` to 1, where ``n`` is the largest number of
        non-members among the curves (``1/n`` is the smallest non-zero FPR
        one can measure).
      ax: Axes to draw into; a new figure is created when None.
      title: optional Axes title.

    Returns:
      The figure holding the Axes.

    Raises:
      ValueError: if ``curves`` is empty, or ``scores``/``is_member`` of an
        entry disagree in length or are otherwise invalid.
      TypeError: if ``curves`` is not a mapping or an entry is not a pair.
    """
    if not isinstance(curves, Mapping):
        raise TypeError(
            "curves must be a mapping {label: (scores, is_member)}, got "
            f"{type(curves).__name__}."
        )
    if not curves:
        raise ValueError("curves is empty.")
    _check_title(title)
    computed = []
    max_neg = 1
    for label, entry in curves.items():
        name = f"curves[{label!r}]"
        try:
            scores, is_member = entry
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a pair (scores, is_member).") from e
        fpr, tpr, auc, n_neg = _roc_curve(scores, is_member, name)
        max_neg = max(max_neg, n_neg)
        computed.append((str(label), fpr, tpr, auc))

    fig, ax = _figure_and_axes(ax, (4.8, 4.5))
    lo = max(_LOG_ROC_FLOOR, 1.0 / max_neg) if log else 0.0
    for label, fpr, tpr, auc in computed:
        ax.plot(fpr, tpr, lw=1.5, label=f"{label} (AUC={auc:.3f})")
    ax.plot([lo, 1.0], [lo, 1.0], ls="--", color="grey", lw=1.0, label="_chance")
    if log:
        ax.set_xscale("log", nonpositive="clip")
        ax.set_yscale("log", nonpositive="clip")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(lo, 1.0)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    if title is not None:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- #
# Confusion heat map.
# --------------------------------------------------------------------------- #


def plot_confusion(
    matrix,
    *,
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Heat map of a confusion matrix with a colour bar (RWFT, Figs. 1/3).

    Args:
      matrix: ``[C, C]`` non-negative counts, rows = true class, columns =
        predicted (as returned by :func:`confusion_matrix`).
      class_names: optional ``C`` tick labels (default ``0 .. C-1``).
      normalize: divide each row by its sum (rows with no examples stay 0),
        so a cell reads "fraction of class i predicted as j"; the colour
        scale is then fixed to [0, 1].
      ax: Axes to draw into; a new figure is created when None.
      title: optional Axes title.

    Returns:
      The figure holding the Axes and its colour bar. Cells are annotated
      with their values when ``C <= 12``.

    Raises:
      ValueError: if ``matrix`` is not square, is negative or non-finite, or
        ``class_names`` has the wrong length.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"matrix must be a non-empty [C, C] array, got {m.shape}.")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("matrix must be finite and non-negative.")
    c = m.shape[0]
    if class_names is None:
        names = [str(i) for i in range(c)]
    else:
        names = [str(n) for n in class_names]
        if len(names) != c:
            raise ValueError(f"class_names has {len(names)} entries, expected C={c}.")
    _check_title(title)
    is_counts = not normalize and np.all(m == np.round(m))
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
        vmax = 1.0
    else:
        vmax = max(float(m.max()), 1e-12)

    side = min(3.0 + 0.45 * c, 12.0)
    fig, ax = _figure_and_axes(ax, (side + 1.0, side))
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="fraction of true class" if normalize else "count")
    tick_size = 8 if c <= _ANNOTATE_MAX_CLASSES else 6
    step = 1 if c <= 30 else int(np.ceil(c / 30))
    ticks = np.arange(0, c, step)
    ax.set_xticks(ticks, [names[i] for i in ticks], fontsize=tick_size, rotation=90)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=tick_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if c <= _ANNOTATE_MAX_CLASSES:
        for i in range(c):
            for j in range(c):
                v = m[i, j]
                text = f"{int(v)}" if is_counts else f"{v:.2f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.5 * vmax else "black",
                )
    if title is not None:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- #
# Feature embeddings.
# --------------------------------------------------------------------------- #


def plot_embedding(
    features,
    labels,
    *,
    method: str = "pca",
    highlight=None,
    ax: Axes | None = None,
    title: str | None = None,
    seed: int = 0,
    max_points: int = 3000,
) -> Figure:
    """2-D embedding of features, coloured by class (DLFD, Figs. 2/4).

    Args:
      features: ``[N, ...]`` features (flattened to ``[N, D]``, ``D >= 2``,
        finite), e.g. penultimate-layer activations.
      labels: integer classes ``[N]``; one colour per class.
      method: ``"pca"`` (sklearn ``PCA``) or ``"tsne"`` (sklearn ``TSNE``
        with ``random_state=seed``, PCA initialisation and perplexity
        ``min(30, (n - 1) / 3)``).
      highlight: optional boolean mask ``[N]``; those points (e.g. the
        forget set) are circled in black in one extra scatter artist.
      ax: Axes to draw into; a new figure is created when None.
      title: optional Axes title.
      seed: seed of the subsampling and of t-SNE.
      max_points: when ``N`` exceeds it, a uniform random subset of this size
        (``numpy.random.default_rng(seed)``) is embedded and drawn.

    Returns:
      The figure holding the Axes: one scatter per class, plus one for the
      highlighted points when any are drawn.

    Raises:
      ValueError: if ``method`` is unknown, or shapes or values are invalid.
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}.")
    x = np.asarray(features)
    if x.ndim < 2:
        raise ValueError(f"features must be [N, D, ...], got shape {x.shape}.")
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    n = x.shape[0]
    if n < 3 or x.shape[1] < 2:
        raise ValueError(
            f"features needs N >= 3 points of dimension D >= 2, got {x.shape}."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("features contains non-finite values.")
    y = _int_1d(labels, "labels")
    if y.shape[0] != n:
        raise ValueError(f"labels has length {y.shape[0]}, features has N={n}.")
    if highlight is not None:
        h = np.asarray(highlight)
        if h.dtype != bool:
            raise TypeError(f"highlight must be a boolean mask, got dtype {h.dtype}.")
        if h.shape != (n,):
            raise ValueError(f"highlight has shape {h.shape}, expected ({n},).")
    if isinstance(max_points, bool) or not isinstance(max_points, numbers.Integral):
        raise TypeError(f"max_points must be an int, got {type(max_points).__name__}.")
    if max_points < 3:
        raise ValueError(f"max_points must be >= 3, got {max_points}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
    _check_title(title)

    if n > max_points:
        rng = np.random.default_rng(int(seed))
        idx = np.sort(rng.choice(n, size=int(max_points), replace=False))
        x, y = x[idx], y[idx]
        if highlight is not None:
            h = h[idx]
        n = int(max_points)

    if method == "pca":
        from sklearn.decomposition import PCA

        z = PCA(n_components=2, random_state=int(seed)).fit_transform(x)
    else:
        from sklearn.manifold import TSNE

        z = TSNE(
            n_components=2,
            perplexity=min(30.0, max(1.0, (n - 1) / 3.0)),
            init="pca",
            random_state=int(seed),
        ).fit_transform(x)

    fig, ax = _figure_and_axes(ax, (5.5, 4.8))
    mpl = _require_matplotlib()
    classes = np.unique(y)
    k = classes.size
    if k <= 10:
        colors = mpl.colormaps["tab10"](np.arange(k))
    elif k <= 20:
        colors = mpl.colormaps["tab20"](np.arange(k))
    else:
        colors = mpl.colormaps["turbo"](np.linspace(0.0, 1.0, k))
    size = 12.0 if n <= 1000 else 5.0
    for color, cls in zip(colors, classes, strict=True):
        sel = y == cls
        ax.scatter(
            z[sel, 0],
            z[sel, 1],
            s=size,
            color=color,
            alpha=0.75,
            linewidths=0,
            label=str(cls),
        )
    if highlight is not None and h.any():
        ax.scatter(
            z[h, 0],
            z[h, 1],
            s=size * 3.0,
            facecolors="none",
            edgecolors="black",
            linewidths=0.8,
            label=f"highlighted (n={int(h.sum())})",
        )
    ax.set_xlabel(f"{method.upper()} 1" if method == "pca" else "t-SNE 1")
    ax.set_ylabel(f"{method.upper()} 2" if method == "pca" else "t-SNE 2")
    if k <= _LEGEND_MAX_CLASSES:
        ax.legend(fontsize=7, markerscale=1.5, ncols=2 if k > 10 else 1)
    if title is not None:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- #
# Metric bars.
# --------------------------------------------------------------------------- #


def plot_metric_bars(
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Grouped bars comparing methods on metrics in [0, 1].

    Args:
      rows: one mapping per method, each with a ``"method"`` name and a
        number (or None / NaN, drawn as a gap) under every key in ``keys``.
      keys: the metrics to draw, one bar per key within each group (e.g.
        ``["retain_acc", "forget_acc", "test_acc", "mia"]``).
      labels: optional legend labels for ``keys`` (default: the keys).
      ax: Axes to draw into; a new figure is created when None.
      title: optional Axes title.

    Returns:
      The figure holding the Axes: ``len(rows) * len(keys)`` bars, a dashed
      line at 0.5 (chance for a balanced MIA) and the y-axis fixed to
      [0, 1.05].

    Raises:
      ValueError: if ``rows`` or ``keys`` is empty, a row lacks ``"method"``
        or a key, or ``labels`` has the wrong length.
      TypeError: if a value is not a number.
    """
    if isinstance(rows, Mapping) or not isinstance(rows, Sequence) or not rows:
        raise ValueError("rows must be a non-empty sequence of mappings.")
    if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
        raise ValueError("keys must be a non-empty sequence of metric names.")
    if labels is None:
        names = [str(k) for k in keys]
    else:
        if isinstance(labels, str) or len(labels) != len(keys):
            raise ValueError(
                f"labels must be a sequence of {len(keys)} names (one per key)."
            )
        names = [str(s) for s in labels]
    _check_title(title)
    methods = []
    values = np.empty((len(rows), len(keys)))
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "method" not in row:
            raise ValueError(f"rows[{i}] must be a mapping with a 'method' key.")
        methods.append(str(row["method"]))
        for j, key in enumerate(keys):
            if key not in row:
                raise ValueError(f"rows[{i}] ({methods[-1]!r}) has no key {key!r}.")
            v = row[key]
            if v is None:
                values[i, j] = np.nan
                continue
            try:
                values[i, j] = float(v)
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"rows[{i}][{key!r}] must be a number, got {v!r}."
                ) from e

    n, k = values.shape
    fig, ax = _figure_and_axes(ax, (max(4.5, 1.2 + 0.35 * n * k + 0.4 * n), 3.8))
    width = 0.8 / k
    x = np.arange(n)
    for j in range(k):
        ax.bar(x + (j - (k - 1) / 2.0) * width, values[:, j], width, label=names[j])
    ax.axhline(0.5, ls="--", color="grey", lw=1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xticks(x, methods, rotation=30 if n > 4 else 0)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title is not None:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------- #
# Saving.
# --------------------------------------------------------------------------- #


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 110) -> None:
    """Writes a figure to a PNG file atomically, then closes it.

    The PNG is rendered to a temporary file in the destination directory and
    moved into place with ``os.replace``, so readers never see a partial file
    and an existing file is only replaced by a complete one. Parent
    directories are created. A figure registered with ``pyplot`` is closed
    (``pyplot.close``); a plain ``Figure`` needs no closing.

    Args:
      fig: the matplotlib figure.
      path: destination; its suffix must be ``.png`` (any case) or absent.
      dpi: resolution in dots per inch (positive).

    Raises:
      TypeError: if ``fig`` is not a matplotlib Figure.
      ValueError: if ``path`` has another suffix or ``dpi`` is not positive.
    """
    mpl = _require_matplotlib()
    if not isinstance(fig, mpl.figure.Figure):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}.")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1]
    if suffix and suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got {path!r}.")
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or not dpi > 0:
        raise ValueError(f"dpi must be a positive number, got {dpi!r}.")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
