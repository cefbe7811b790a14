"""Tests for jaxunlearn.eval._plots (plots need the optional matplotlib)."""

import ast
import inspect
import os
import sys

import numpy as np
import pytest

from jaxunlearn.eval import _plots
from jaxunlearn.eval._plots import (
    confusion_matrix,
    plot_confusion,
    plot_embedding,
    plot_loss_histograms,
    plot_metric_bars,
    plot_roc,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def mpl():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    return mpl


def _new_ax():
    from matplotlib.figure import Figure

    fig = Figure()
    return fig, fig.add_subplot()


def _legend_texts(fig):
    (ax,) = [a for a in fig.axes if a.get_legend() is not None]
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _mann_whitney_auc(scores, is_member):
    """P(member score > non-member score) + 0.5 P(tie), by brute force."""
    pos = scores[is_member][:, None]
    neg = scores[~is_member][None, :]
    return float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg))


# --------------------------------------------------------------------------- #
# Optional dependency.
# --------------------------------------------------------------------------- #


def test_matplotlib_not_imported_at_module_level():
    tree = ast.parse(inspect.getsource(_plots))
    for node in tree.body:  # `if TYPE_CHECKING:` blocks are If nodes: skipped.
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not any(n.split(".")[0] == "matplotlib" for n in names), names


def test_missing_matplotlib_raises_install_hint(monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.axes"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'jaxunlearn\[experiments\]'"):
        plot_roc({"a": ([0.0, 1.0], [False, True])})
    with pytest.raises(ImportError, match=r"jaxunlearn\[experiments\]"):
        save_figure(object(), "x.png")
    # The numpy-only function still works.
    assert confusion_matrix([0], [0], 1).tolist() == [[1]]


# --------------------------------------------------------------------------- #
# confusion_matrix.
# --------------------------------------------------------------------------- #


def test_confusion_matrix_hand_computed():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 2, 2, 0, 2])
    expected = np.array([[1, 1, 0], [0, 2, 1], [1, 0, 3]])
    got = confusion_matrix(preds, labels, 3)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64 and got.shape == (3, 3)
    # Logits give the same result via argmax; rows sum to the class counts.
    logits = np.eye(3)[preds] * 5.0 - 1.0
    np.testing.assert_array_equal(confusion_matrix(logits, labels, 3), expected)
    np.testing.assert_array_equal(got.sum(1), np.bincount(labels))
    # An unused class gives an empty row and column.
    assert confusion_matrix([0, 0], [0, 0], 4).sum() == 2
    assert confusion_matrix(np.zeros(0, int), np.zeros(0, int), 2).sum() == 0


@pytest.mark.parametrize(
    "preds, labels, num_classes, exc, match",
    [
        ([0, 1], [0, 3], 3, ValueError, "labels"),
        ([0, 1], [0, -1], 3, ValueError, "labels"),
        ([0, 5], [0, 1], 3, ValueError, "logits_or_preds"),
        ([0, 1, 1], [0, 1], 3, ValueError, "labels"),
        (np.zeros((2, 4)), [0, 1], 3, ValueError, "logits_or_preds"),
        (np.zeros((2, 3, 1)), [0, 1], 3, ValueError, "logits_or_preds"),
        ([0.0, 1.0], [0, 1], 3, TypeError, "logits_or_preds"),
        ([0, 1], [0.0, 1.0], 3, TypeError, "labels"),
        ([0, 1], [0, 1], 0, ValueError, "num_classes"),
        ([0, 1], [0, 1], 2.0, TypeError, "num_classes"),
    ],
)
def test_confusion_matrix_bad_input(preds, labels, num_classes, exc, match):
    with pytest.raises(exc, match=match):
        confusion_matrix(preds, labels, num_classes)


# --------------------------------------------------------------------------- #
# plot_loss_histograms.
# --------------------------------------------------------------------------- #


def test_loss_histograms(mpl, rng):
    forget = rng.exponential(0.2, size=40)
    unseen = rng.exponential(1.0, size=60)
    fig = plot_loss_histograms(forget, unseen, bins=10, title="losses")
    (ax,) = fig.axes
    assert len(ax.patches) == 2  # one filled step polygon per set
    texts = _legend_texts(fig)
    assert texts[0].startswith("forget (n=40") and f"{forget.mean():.3g}" in texts[0]
    assert texts[1].startswith("unseen (n=60") and f"{unseen.mean():.3g}" in texts[1]
    assert ax.get_title() == "losses"
    # Both densities integrate to 1 over the shared edges.
    for patch in ax.patches:
        xy = patch.get_xy()
        assert np.isclose(
            abs(0.5 * np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1])), 1.0
        )


def test_loss_histograms_into_existing_ax_log_x(mpl, rng):
    fig, ax = _new_ax()
    forget = np.r_[0.0, rng.exponential(0.1, size=20)]  # an exact zero
    out = plot_loss_histograms(forget, rng.exponential(1.0, size=20), ax=ax, log_x=True)
    assert out is fig and len(ax.patches) == 2
    assert ax.get_xscale() == "log"


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(forget_losses=[]), ValueError, "forget_losses"),
        (dict(unseen_losses=[1.0, np.nan]), ValueError, "unseen_losses"),
        (dict(bins=0), ValueError, "bins"),
        (dict(bins=[1.0, 0.5]), ValueError, "bins"),
    ],
)
def test_loss_histograms_bad_input(mpl, kwargs, exc, match):
    args = dict(forget_losses=[0.1, 0.2], unseen_losses=[0.5, 1.0]) | kwargs
    with pytest.raises(exc, match=match):
        plot_loss_histograms(
            args.pop("forget_losses"), args.pop("unseen_losses"), **args
        )


# --------------------------------------------------------------------------- #
# plot_roc.
# --------------------------------------------------------------------------- #


def test_roc_known_case_and_ties(mpl):
    curves = {
        "known": ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]),
        "ties": (np.array([1.0, 1.0, 0.0, 0.0]), np.array([True, False, True, False])),
    }
    fig = plot_roc(curves, title="roc")
    (ax,) = fig.axes
    assert len(ax.lines) == 3  # two curves + chance diagonal
    known, ties, chance = ax.lines
    np.testing.assert_allclose(known.get_xdata(), [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(known.get_ydata(), [0, 0.5, 0.5, 1, 1])
    # Tied scores are one threshold: a single diagonal segment, not a step.
    np.testing.assert_allclose(ties.get_xdata(), [0, 0.5, 1])
    np.testing.assert_allclose(ties.get_ydata(), [0, 0.5, 1])
    assert chance.get_linestyle() == "--"
    assert _legend_texts(fig) == ["known (AUC=0.750)", "ties (AUC=0.500)"]
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)


def test_roc_auc_matches_reference(mpl, rng):
    curves = {}
    for name, shift in (("weak", 0.3), ("strong", 2.0)):
        is_member = rng.random(300) < 0.4
        scores = np.round(rng.normal(size=300) + shift * is_member, 1)  # many ties
        curves[name] = (scores, is_member)
    fig = plot_roc(curves)
    for text, (scores, is_member) in zip(_legend_texts(fig), curves.values()):
        assert f"AUC={_mann_whitney_auc(scores, is_member):.3f}" in text
    # Trapezoid area of the drawn curve equals the reference exactly.
    line = fig.axes[0].lines[0]
    area = np.trapezoid(line.get_ydata(), line.get_xdata())
    assert np.isclose(area, _mann_whitney_auc(*curves["weak"]))


@pytest.mark.parametrize("n, lo", [(50, 1 / 50), (20000, 1e-4)])
def test_roc_log_axes(mpl, rng, n, lo):
    fig, ax = _new_ax()
    is_member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    scores = rng.normal(size=2 * n) + is_member
    assert plot_roc({"lira": (scores, is_member)}, log=True, ax=ax) is fig
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert np.allclose(ax.get_xlim(), (lo, 1.0)) and np.allclose(
        ax.get_ylim(), (lo, 1.0)
    )
    assert len(ax.lines) == 2


@pytest.mark.parametrize(
    "curves, exc, match",
    [
        ({"a": ([0.1, 0.2, 0.3], [0, 1])}, ValueError, "is_member"),
        ({"a": ([0.1, 0.2], [1, 1])}, ValueError, "is_member"),
        ({"a": ([0.1, 0.2], [0, 2])}, ValueError, "is_member"),
        ({"a": ([0.1, np.nan], [0, 1])}, ValueError, "scores"),
        ({}, ValueError, "curves"),
        ({"a": 3.0}, TypeError, "curves"),
        ([([0.1], [1])], TypeError, "curves"),
    ],
)
def test_roc_bad_input(mpl, curves, exc, match):
    with pytest.raises(exc, match=match):
        plot_roc(curves)


# --------------------------------------------------------------------------- #
# plot_confusion.
# --------------------------------------------------------------------------- #


def test_confusion_normalized(mpl):
    m = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])  # last class has no examples
    fig = plot_confusion(m, class_names=["a", "b", "c"], title="cm")
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heat map + colour bar
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown.sum(1), [1.0, 1.0, 0.0])
    np.testing.assert_allclose(shown[0], [5 / 6, 1 / 6, 0])
    assert ax.images[0].get_clim() == (0.0, 1.0)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 9 and texts[:2] == ["0.83", "0.17"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]


def test_confusion_counts_and_large(mpl):
    fig, ax = _new_ax()
    m = np.array([[3, 1], [0, 4]])
    assert plot_confusion(m, normalize=False, ax=ax) is fig
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), m)
    assert [t.get_text() for t in ax.texts] == ["3", "1", "0", "4"]
    big = plot_confusion(np.eye(13) * 4 + 1)
    assert len(big.axes[0].texts) == 0  # no annotations above 12 classes


@pytest.mark.parametrize(
    "matrix, kwargs, match",
    [
        (np.ones((2, 3)), {}, "matrix"),
        (-np.ones((2, 2)), {}, "matrix"),
        (np.ones((2, 2)), dict(class_names=["a"]), "class_names"),
    ],
)
def test_confusion_bad_input(mpl, matrix, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_confusion(matrix, **kwargs)


# --------------------------------------------------------------------------- #
# plot_embedding.
# --------------------------------------------------------------------------- #


def _clusters(rng, n_per=30, classes=3, dim=6):
    centers = rng.normal(scale=5.0, size=(classes, dim))
    labels = np.repeat(np.arange(classes), n_per)
    return centers[labels] + rng.normal(size=(labels.size, dim)), labels


def test_embedding_pca_with_highlight(mpl, rng):
    x, y = _clusters(rng)
    highlight = y == 1
    plain = plot_embedding(x, y)
    assert len(plain.axes[0].collections) == 3  # one scatter per class
    fig = plot_embedding(x, y, highlight=highlight, title="emb")
    ax = fig.axes[0]
    assert len(ax.collections) == 4
    extra = ax.collections[-1]
    assert len(extra.get_offsets()) == highlight.sum()
    np.testing.assert_allclose(extra.get_edgecolor()[0], [0, 0, 0, 1])
    assert _legend_texts(fig)[-1] == "highlighted (n=30)"
    # Highlighted points sit exactly on their class-1 points.
    np.testing.assert_allclose(extra.get_offsets(), ax.collections[1].get_offsets())


def test_embedding_subsampling_is_seeded(mpl, rng):
    x, y = _clusters(rng, n_per=100)
    a = plot_embedding(x, y, max_points=50, seed=1).axes[0]
    b = plot_embedding(x, y, max_points=50, seed=1).axes[0]
    c = plot_embedding(x, y, max_points=50, seed=2).axes[0]
    pts = [
        np.concatenate([col.get_offsets() for col in ax.collections])
        for ax in (a, b, c)
    ]
    assert len(pts[0]) == 50
    np.testing.assert_allclose(pts[0], pts[1])
    assert pts[0].shape != pts[2].shape or not np.allclose(pts[0], pts[2])


def test_embedding_tsne_into_ax(mpl, rng):
    x, y = _clusters(rng, n_per=12)
    fig, ax = _new_ax()
    out = plot_embedding(x.reshape(-1, 2, 3), y, method="tsne", ax=ax)  # [N, 2, 3]
    assert out is fig and len(ax.collections) == 3
    assert sum(len(c.get_offsets()) for c in ax.collections) == 36


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(method="umap"), ValueError, "method"),
        (dict(labels=np.zeros(5, int)), ValueError, "labels"),
        (dict(highlight=np.ones(5, bool)), ValueError, "highlight"),
        (dict(highlight=np.ones(90)), TypeError, "highlight"),
        (dict(features=np.zeros((90, 1))), ValueError, "features"),
        (dict(max_points=2), ValueError, "max_points"),
    ],
)
def test_embedding_bad_input(mpl, rng, kwargs, exc, match):
    x, y = _clusters(rng)
    args = dict(features=x, labels=y) | kwargs
    with pytest.raises(exc, match=match):
        plot_embedding(args.pop("features"), args.pop("labels"), **args)


# --------------------------------------------------------------------------- #
# plot_metric_bars.
# --------------------------------------------------------------------------- #

ROWS = [
    {"method": "original", "retain_acc": 0.99, "forget_acc": 0.98, "mia": 0.75},
    {"method": "retrain", "retain_acc": 0.97, "forget_acc": 0.60, "mia": 0.50},
    {"method": "scrub", "retain_acc": 0.95, "forget_acc": 0.55, "mia": None},
]


def test_metric_bars(mpl):
    keys = ["retain_acc", "forget_acc", "mia"]
    fig = plot_metric_bars(ROWS, keys, labels=["retain", "forget", "MIA"], title="t")
    (ax,) = fig.axes
    assert len(ax.patches) == len(ROWS) * len(keys)
    assert len(ax.containers) == len(keys)
    heights = [p.get_height() for p in ax.containers[0]]
    np.testing.assert_allclose(heights, [0.99, 0.97, 0.95])
    assert np.isnan(ax.containers[2][2].get_height())  # None drawn as a gap
    (half,) = ax.lines
    assert half.get_linestyle() == "--" and list(half.get_ydata()) == [0.5, 0.5]
    assert ax.get_ylim() == (0.0, 1.05)
    assert _legend_texts(fig) == ["retain", "forget", "MIA"]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "original",
        "retrain",
        "scrub",
    ]


def test_metric_bars_into_ax(mpl):
    fig, ax = _new_ax()
    assert plot_metric_bars(ROWS[:2], ["mia"], ax=ax) is fig
    assert len(ax.patches) == 2 and _legend_texts(fig) == ["mia"]


@pytest.mark.parametrize(
    "rows, keys, kwargs, exc, match",
    [
        ([], ["mia"], {}, ValueError, "rows"),
        (ROWS, [], {}, ValueError, "keys"),
        ([{"mia": 0.5}], ["mia"], {}, ValueError, "method"),
        (ROWS, ["test_acc"], {}, ValueError, "test_acc"),
        (ROWS, ["mia"], dict(labels=["a", "b"]), ValueError, "labels"),
        ([{"method": "m", "mia": "high"}], ["mia"], {}, TypeError, "mia"),
    ],
)
def test_metric_bars_bad_input(mpl, rows, keys, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        plot_metric_bars(rows, keys, **kwargs)


# --------------------------------------------------------------------------- #
# save_figure.
# --------------------------------------------------------------------------- #


def test_save_figure_png_atomic(mpl, tmp_path):
    fig = plot_metric_bars(ROWS, ["mia"])
    path = tmp_path / "a" / "b" / "bars.png"
    save_figure(fig, path, dpi=50)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(path.parent) == ["bars.png"]  # no temp files left
    # Overwriting works and leaves no temp file either.
    save_figure(plot_roc({"a": ([0.0, 1.0], [0, 1])}), str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert os.listdir(path.parent) == ["bars.png"]


def test_save_figure_failure_keeps_old_file(mpl, tmp_path, monkeypatch):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old")
    fig = plot_metric_bars(ROWS, ["mia"])

    def broken_savefig(f, **kwargs):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        save_figure(fig, path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["fig.png"]


def test_save_figure_closes_pyplot_figure(mpl, tmp_path):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plot_loss_histograms([0.1, 0.2], [0.3, 0.4], ax=fig.add_subplot())
    assert plt.fignum_exists(fig.number)
    save_figure(fig, tmp_path / "h.png")
    assert not plt.fignum_exists(fig.number)
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC


def test_save_figure_bad_input(mpl, tmp_path):
    fig = plot_metric_bars(ROWS, ["mia"])
    with pytest.raises(ValueError, match="path"):
        save_figure(fig, tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="dpi"):
        save_figure(fig, tmp_path / "x.png", dpi=0)
    with pytest.raises(TypeError, match="fig"):
        save_figure("not a figure", tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_subfigure_axes_returns_root_figure(mpl):
    from matplotlib.figure import Figure

    root = Figure()
    sub = root.subfigures(1, 2)[1]
    ax = sub.add_subplot()
    assert plot_roc({"a": ([0.2, 0.9], [0, 1])}, ax=ax) is root
    with pytest.raises(TypeError, match="ax"):
        plot_roc({"a": ([0.2, 0.9], [0, 1])}, ax=root)
