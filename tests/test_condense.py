"""condense: k-means, free / residual partition, Blend, DM, reduced retain set.

Tiny shapes (8x8x1 images, width-16 depth-2 extractors); compiled programs are shared
through module-scoped fixtures.
"""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import condense

WIDTH = 16
DEPTH = 2


def _same_partition(a, b):
    """True when integer labelings a and b induce the same grouping."""
    pairs = set(zip(np.asarray(a).tolist(), np.asarray(b).tolist(), strict=True))
    return (
        len(pairs)
        == len(set(np.asarray(a).tolist()))
        == len(set(np.asarray(b).tolist()))
    )


# --- k-means -----------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    truth = np.repeat(np.arange(4), 10)
    x = centers[truth] + rng.normal(scale=0.5, size=(40, 2))
    return x.astype(np.float32), truth


kmeans_jit = jax.jit(condense.kmeans, static_argnames=("k", "iters"))


def test_kmeans_recovers_separated_blobs(blobs):
    x, truth = blobs
    res = kmeans_jit(x, k=4, key=jax.random.key(0))
    assert _same_partition(res.assignment, truth)
    for c in range(4):
        np.testing.assert_allclose(
            res.centroids[c], x[np.asarray(res.assignment) == c].mean(0), rtol=1e-5
        )
    assert int(res.iterations) < 100 and float(res.shift) < 1e-4


def test_kmeans_is_deterministic_given_key_and_vmaps(blobs):
    x, _ = blobs
    keys = jax.random.split(jax.random.key(3), 3)
    a = kmeans_jit(x, k=4, key=keys[0])
    b = kmeans_jit(x, k=4, key=keys[0])
    np.testing.assert_array_equal(a.assignment, b.assignment)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    batched = jax.jit(
        jax.vmap(lambda k: condense.kmeans(x, 4, key=k)), static_argnames=()
    )(keys)
    for i in range(3):
        one = kmeans_jit(x, k=4, key=keys[i])
        np.testing.assert_array_equal(batched.assignment[i], one.assignment)
        np.testing.assert_allclose(batched.centroids[i], one.centroids, rtol=1e-6)


def test_kmeans_empty_clusters_and_mask():
    # Two distinct points, k = 3: a cluster must end up empty; centroids stay
    # finite (re-seeded onto data points).
    x = np.array([[0.0], [0.0], [1.0], [1.0], [1e6]], np.float32)
    mask = np.array([True, True, True, True, False])
    res = kmeans_jit(x, k=3, key=jax.random.key(0), mask=mask)
    a = np.asarray(res.assignment)
    assert a[4] == -1
    assert np.all(np.isfinite(np.asarray(res.centroids)))
    assert a[0] == a[1] != a[2] == a[3]
    # The masked outlier influences no centroid.
    assert np.all(np.abs(np.asarray(res.centroids)) <= 1.0)


def test_kmeans_rejects_bad_input():
    with pytest.raises(ValueError, match="`k`"):
        condense.kmeans(np.zeros((3, 2)), 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`x`"):
        condense.kmeans(np.zeros(3), 2, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`mask`"):
        condense.kmeans(np.zeros((3, 2)), 2, key=jax.random.key(0), mask=np.ones(3))


def test_class_kmeans_fine_labels(blobs):
    x, truth = blobs
    labels = truth // 2  # class 0 = blobs 0, 1; class 1 = blobs 2, 3
    fine = condense.class_kmeans(x, labels, 2, key=jax.random.key(0))
    assert fine.shape == (40,)
    np.testing.assert_array_equal(fine // 2, labels)  # class * K + cluster
    assert _same_partition(fine, truth)
    with pytest.raises(ValueError, match="`labels`"):
        condense.class_kmeans(x, labels[:-1], 2, key=jax.random.key(0))


# --- partition ---------------------------------------------------------------


def test_partition_known_answer():
    fine = np.array([0, 0, 1, 1, 1, 2, 2, 3, 5])  # 4 is an empty fine label
    p = condense.partition(fine, forget_indices=[2, 6, 6])
    assert p.cluster.tolist() == [0, 3, 5]
    assert p.index.tolist() == [[0, 1], [7, 0], [8, 0]]
    assert p.mask.tolist() == [[True, True], [True, False], [True, False]]
    assert p.residual.tolist() == [3, 4, 5]  # retain members of clusters 1, 2
    assert p.sizes.tolist() == [2, 1, 1]


def test_partition_covers_retain_exactly_once():
    rng = np.random.default_rng(0)
    fine = rng.integers(0, 30, 500)
    forget = rng.choice(500, 40, replace=False)
    p = condense.partition(fine, forget)
    members = p.index[p.mask]
    assert len(np.unique(members)) == len(members)
    everything = np.concatenate([members, p.residual])
    assert len(np.unique(everything)) == len(everything)
    np.testing.assert_array_equal(
        np.sort(everything), np.setdiff1d(np.arange(500), forget)
    )
    assert not np.isin(forget, everything).any()
    touched = set(fine[forget].tolist())
    for row, c in zip(p.index, p.cluster, strict=True):
        assert c not in touched
    for row, m, c in zip(p.index, p.mask, p.cluster, strict=True):
        np.testing.assert_array_equal(np.sort(row[m]), np.flatnonzero(fine == c))
    empty = condense.partition(fine, [])
    assert len(empty.residual) == 0 and empty.mask.sum() == 500


def test_partition_rejects_bad_input():
    with pytest.raises(ValueError, match="forget_indices"):
        condense.partition([0, 1], [2])
    with pytest.raises(TypeError, match="forget_indices"):
        condense.partition([0, 1], [0.5])
    with pytest.raises(TypeError, match="fine_labels"):
        condense.partition([0.0, 1.0], [0])


# --- Blend -------------------------------------------------------------------


def test_blend_learning_rate_table():
    assert condense.blend_learning_rate(2) == pytest.approx(1.0, abs=1e-3)
    assert condense.blend_learning_rate(10) == pytest.approx(0.166, abs=1e-3)
    assert condense.blend_learning_rate(100) == pytest.approx(100, rel=0.01)
    with pytest.raises(ValueError, match="`ipc`"):
        condense.blend_learning_rate(0)


@pytest.fixture(scope="module")
def digits_small(digits):
    train = digits["train"]
    keep = np.flatnonzero(train["label"] < 3)[:90]
    return train["image"][keep], train["label"][keep].astype(np.int32)


@pytest.fixture(scope="module")
def clustering(digits_small):
    x, y = digits_small
    return condense.cluster(x, y, 4, key=jax.random.key(0), width=WIDTH, depth=DEPTH)


@pytest.fixture(scope="module")
def free(clustering, digits_small):
    _, y = digits_small
    forget = np.flatnonzero(y == 2)[:5]
    return condense.partition(clustering.fine_labels, forget)


@pytest.fixture(scope="module")
def runs(digits_small, free):
    """Blend with both extractors, vectorised and cluster by cluster."""
    x, y = digits_small
    out = {}
    for extractor in ("random", "fixed"):
        for vectorize in (True, False):
            out[extractor, vectorize] = condense.blend(
                x,
                free.index,
                free.mask,
                y,
                key=jax.random.key(1),
                iterations=6,
                learning_rate=10.0,
                extractor=extractor,
                vectorize=vectorize,
                width=WIDTH,
                depth=DEPTH,
            )
    return out


@pytest.mark.parametrize("extractor", ["random", "fixed"])
def test_blend_vectorized_equals_per_cluster_loop(runs, free, extractor):
    vec = runs[extractor, True]
    loop = runs[extractor, False]
    assert vec[0].shape == (len(free.cluster), 8, 8, 1)
    np.testing.assert_allclose(vec[0], loop[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(vec[1], loop[1])
    np.testing.assert_allclose(vec[2]["loss"], loop[2]["loss"], rtol=1e-4)
    for d in (vec[2], loop[2]):
        assert d["compile_s"] >= 0 and d["run_s"] >= 0 and d["loss"].shape == (6,)


def test_blend_labels_and_loss_decrease(runs, free, clustering, digits_small):
    out, labels, diag = runs["fixed", True]
    np.testing.assert_array_equal(labels, free.cluster // clustering.k_per_class)
    loss = diag["loss"]
    assert np.all(np.diff(loss) < 0), loss
    # Random extractors: a fresh network each iteration, so compare each
    # iteration's loss with the loss of the initial weights under the SAME
    # network (learning rate 0 draws the same networks).
    x, y = digits_small
    _, _, frozen = condense.blend(
        x, free.index, free.mask, y, key=jax.random.key(1), iterations=6,
        learning_rate=0.0, width=WIDTH, depth=DEPTH,
    )  # fmt: skip
    trained = runs["random", True][2]["loss"]
    assert trained[0] == frozen["loss"][0]
    assert np.all(trained[1:] < frozen["loss"][1:]), (trained, frozen["loss"])


def test_blend_extractors_differ(runs):
    assert not np.allclose(runs["random", True][0], runs["fixed", True][0])


def test_blend_identical_and_single_image_clusters(digits_small):
    x, y = digits_small
    same = np.flatnonzero(y == 0)[:1]
    images = np.concatenate([np.repeat(x[same], 3, axis=0), x[y == 1][:1]])
    labels = np.array([0, 0, 0, 1], np.int32)
    index = np.array([[0, 1, 2], [3, 0, 0]])
    mask = np.array([[True, True, True], [True, False, False]])
    out, lab, _ = condense.blend(
        images,
        index,
        mask,
        labels,
        key=jax.random.key(0),
        iterations=3,
        learning_rate=50.0,
        width=WIDTH,
        depth=DEPTH,
    )
    np.testing.assert_allclose(out[0], images[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1], images[3], rtol=1e-6, atol=0)
    assert lab.tolist() == [0, 1]


blend_step_jit = jax.jit(
    condense.blend_step, static_argnames=("apply_fn", "batch_size")
)


def test_blend_step_padded_slots_change_nothing(digits_small):
    x, _ = digits_small
    apply_fn = condense.extractor_apply_fn(width=WIDTH, depth=DEPTH)
    pool = np.concatenate([x[:5], np.full((1, 8, 8, 1), np.nan, np.float32)])
    mask = jnp.array([[True, True, True], [True, True, False]])
    segment = jnp.array([0, 0, 0, 1, 1, 7])  # the NaN image is no member
    clean = jnp.array([[0, 1, 2], [3, 4, 0]])
    dirty = jnp.array([[0, 1, 2], [3, 4, 5]])  # padded slot -> NaN image
    state = condense.blend_init(mask)
    garbage = state._replace(weights=state.weights.at[1, 2].set(123.0))
    kw = dict(apply_fn=apply_fn, learning_rate=1.0, key=jax.random.key(0))
    s1, l1 = blend_step_jit(state, pool, clean, mask, segment, **kw)
    s2, l2 = blend_step_jit(garbage, pool, dirty, mask, segment, **kw)
    assert np.isfinite(l1) and float(l1) == float(l2)
    np.testing.assert_array_equal(s1.weights[:, :2], s2.weights[:, :2])
    np.testing.assert_array_equal(s1.momentum[1, 2], 0.0)  # no gradient there
    np.testing.assert_array_equal(s2.momentum[1, 2], 0.0)
    b1 = condense.blend_images(s1.weights, pool[np.asarray(clean)], mask)
    b2 = condense.blend_images(s2.weights, pool[np.asarray(dirty)], mask)
    np.testing.assert_array_equal(b1, b2)


def test_blend_rejects_bad_input(digits_small):
    x, y = digits_small
    index, mask = np.array([[0, 1]]), np.array([[True, True]])
    with pytest.raises(ValueError, match="`extractor`"):
        condense.blend(x, index, mask, y, key=jax.random.key(0), ipc=2, extractor="x")
    with pytest.raises(ValueError, match="`ipc`"):
        condense.blend(x, index, mask, y, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`mask`"):
        condense.blend(x, index, mask[:, :1], y, key=jax.random.key(0), ipc=2)
    with pytest.raises(ValueError, match="one class"):
        mixed = np.array([[np.flatnonzero(y == 0)[0], np.flatnonzero(y == 1)[0]]])
        condense.blend(x, mixed, mask, y, key=jax.random.key(0), ipc=2)
    with pytest.raises(ValueError, match="`images`"):
        condense.blend(x[0], index, mask, y, key=jax.random.key(0), ipc=2)


# --- reduced retain set (multi-round) ---------------------------------------


def test_condense_retain_rounds_reuse_clustering(clustering, digits_small):
    x, y = digits_small
    forget1 = np.flatnonzero(y == 2)[:5]
    forget2 = np.union1d(forget1, np.flatnonzero(y == 0)[:5])
    infos = []
    for forget in (forget1, forget2):
        reduced, info = condense.condense_retain(
            clustering, x, y, forget, key=jax.random.key(1), iterations=2,
            width=WIDTH, depth=DEPTH,
        )  # fmt: skip
        assert info["retain"] == len(x) - len(forget)
        assert info["reduced"] == info["residual"] + info["free_clusters"]
        assert len(reduced["image"]) == len(reduced["label"]) == info["reduced"]
        assert info["residual"] + info["free_images"] == info["retain"]
        assert info["ratio"] == pytest.approx(info["reduced"] / info["retain"])
        assert reduced["image"].dtype == np.float32
        assert reduced["label"].dtype == np.int32
        p = condense.partition(clustering.fine_labels, forget)
        np.testing.assert_array_equal(
            reduced["image"][: len(p.residual)], x[p.residual]
        )
        infos.append(info)
    assert infos[1]["free_clusters"] <= infos[0]["free_clusters"]
    assert infos[0]["cluster_s"] == clustering.time_s > 0


# --- DM ----------------------------------------------------------------------


def test_dm_shapes_and_loss_decreases(digits_small):
    x, y = digits_small
    kw = dict(
        key=jax.random.key(0), iterations=30, batch_real=16, width=WIDTH, depth=DEPTH
    )
    syn, labels, diag = condense.dm(x, y, 2, learning_rate=1.0, **kw)
    assert syn.shape == (3 * 2, 8, 8, 1)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    # A fresh network and real batch each iteration: compare with the loss of
    # the initial images under the same networks and batches (lr 0).
    init, _, frozen = condense.dm(x, y, 2, learning_rate=0.0, **kw)
    loss, ref = diag["loss"], frozen["loss"]
    assert loss.shape == (30,) and np.all(np.isfinite(loss))
    assert loss[0] == ref[0]
    assert np.all(loss[-10:] < ref[-10:]), (loss, ref)
    assert loss[-10:].mean() < 0.8 * ref[-10:].mean()
    assert not np.allclose(syn, init)
    with pytest.raises(ValueError, match="`ipc`"):
        condense.dm(x, y, 1000, key=jax.random.key(0), iterations=1)


def test_sample_class_batches_without_replacement():
    mask = jnp.array([[True] * 5 + [False] * 3, [True] * 8])
    slots, valid = jax.jit(condense.sample_class_batches, static_argnums=2)(
        jax.random.key(0), mask, 6
    )
    assert slots.shape == (2, 6)
    assert valid[0].tolist() == [True] * 5 + [False]
    assert sorted(np.asarray(slots[0, :5]).tolist()) == [0, 1, 2, 3, 4]
    assert len(set(np.asarray(slots[1]).tolist())) == 6


# --- benchmark smoke ----------------------------------------------------------


def test_bench_condense_quick(tmp_path):
    root = pathlib.Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location(
        "bench_condense", root / "experiments" / "bench_condense.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "b.json"
    bench.main(["--quick", "--out", str(out)])
    res = json.loads(out.read_text())
    row = res["rows"][0]
    assert {"blend_vmap", "blend_loop", "blend_vmap_fixed", "dm", "cluster"} <= set(row)
    assert row["clusters"] == 10 and row["max_abs_diff"]["random"] < 1e-4
    assert row["blend_vmap"]["compile_s"] > 0 and row["dm"]["run_s"] > 0
