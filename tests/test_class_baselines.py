"""l1-sparse, SalUn and Boundary Shrink: properties beyond the common battery."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, methods, models, train


@pytest.fixture(scope="module")
def trained(digits_class_split):
    model = models.get_model("mlp", 10, hidden=(32,))
    v, _ = train.train_original(
        model, digits_class_split, train.TrainConfig(epochs=10), seed=0
    )
    return model, models.make_apply_fn(model), v


def _batch(split, key, bs=32):
    out = {}
    for name in ("retain", "forget"):
        part = getattr(split, name)
        idx, mask = data.epoch_indices(key, len(part["label"]), bs)
        out[name] = data.gather(
            {k: jnp.asarray(x) for k, x in part.items()}, idx[0], mask[0]
        )
    return out


def _l1(p):
    return float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(p)))


def test_l1_sparse_shrinks_the_weights_more_than_finetune(digits_class_split, trained):
    _, apply_fn, v = trained
    norms = {}
    l1 = {"alpha": 1e-3, "decay": "constant"}
    for name, kw in (("finetune", {}), ("l1_sparse", l1)):
        m = methods.get(name, apply_fn=apply_fn, learning_rate=0.05, **kw)
        r = train.unlearn(
            m, v, digits_class_split, epochs=3, batch_size=64, key=jax.random.key(0)
        )
        norms[name] = _l1(r.variables["params"])
    assert norms["l1_sparse"] < 0.9 * norms["finetune"]


def test_l1_sparse_weight_decays_linearly_over_the_run(digits_class_split, trained):
    """Default schedule (Jia et al.): alpha_t = alpha * (1 - t / T) with T the
    run's length in steps, which ``train.unlearn`` passes to ``init``."""
    _, apply_fn, v = trained
    m = methods.get("l1_sparse", apply_fn=apply_fn, learning_rate=0.01, alpha=1e-4)
    r = train.unlearn(
        m, v, digits_class_split, epochs=2, batch_size=256, key=jax.random.key(0)
    )
    steps = 2 * data.num_batches(len(digits_class_split.retain["label"]), 256)
    assert float(r.state.extra["decay_steps"]) == steps
    per_epoch = steps // 2
    expect = [
        np.mean([1 - t / steps for t in range(e * per_epoch, (e + 1) * per_epoch)])
        for e in range(2)
    ]
    got = [h["l1_scale"] for h in r.history]
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    with pytest.raises(ValueError, match="num_steps"):
        m.init(v)
    const = methods.get("l1_sparse", apply_fn=apply_fn, decay="constant")
    const.init(v)  # no run length needed
    with pytest.raises(ValueError, match="decay"):
        methods.get("l1_sparse", apply_fn=apply_fn, decay="cosine")


def test_salun_moves_only_salient_weights(digits_class_split, trained):
    _, apply_fn, v = trained
    split = digits_class_split
    mask = methods.saliency_mask(apply_fn, v, split.forget, threshold=0.3)
    frac = np.mean(np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)]))
    assert abs(frac - 0.3) < 0.01
    m = methods.get(
        "salun",
        apply_fn=apply_fn,
        num_classes=10,
        forget_set=split.forget,
        threshold=0.3,
        learning_rate=0.05,
    )
    s = m.init(v)
    step = jax.jit(m.step)
    for i in range(4):
        s, _ = step(s, _batch(split, jax.random.key(i)), jax.random.key(i))
    for old, new, keep in zip(
        jax.tree.leaves(v["params"]),
        jax.tree.leaves(s.variables["params"]),
        jax.tree.leaves(mask),
        strict=True,
    ):
        frozen = np.asarray(keep) == 0
        np.testing.assert_array_equal(np.asarray(new)[frozen], np.asarray(old)[frozen])
    assert not np.allclose(
        jax.tree.leaves(s.variables["params"])[0], jax.tree.leaves(v["params"])[0]
    )


def test_boundary_shrink_never_targets_the_true_label(digits_class_split, trained):
    _, apply_fn, v = trained
    split = digits_class_split
    m = methods.get("boundary_shrink", apply_fn=apply_fn, learning_rate=1e-2)
    s = m.init(v)
    r = train.unlearn(m, v, split, epochs=5, batch_size=64, key=jax.random.key(0))
    preds = np.asarray(apply_fn(r.variables, split.forget["image"])[0]).argmax(-1)
    assert np.mean(preds == split.forget["label"]) < 0.2
    assert jax.tree.all(
        jax.tree.map(np.array_equal, s.extra["teacher"]["params"], v["params"])
    )


def test_bad_arguments(trained):
    _, apply_fn, _ = trained
    with pytest.raises(ValueError, match="forget_set"):
        methods.get("salun", apply_fn=apply_fn, num_classes=10)
    with pytest.raises(ValueError, match="epsilon"):
        methods.get("boundary_shrink", apply_fn=apply_fn, epsilon=0.0)
    with pytest.raises(ValueError, match="decay_steps"):
        methods.get("l1_sparse", apply_fn=apply_fn, decay_steps=0)


def test_scaled_projection_properties(rng):
    x = rng.normal(size=(200, 6)) @ np.diag([5, 3, 1, 0.1, 0, 0])
    m = methods.scaled_projection(x, 1.0)  # alpha = 1: scale = r
    np.testing.assert_allclose(m, m.T, atol=1e-10)
    w = np.linalg.eigvalsh(m)
    assert w.min() > -1e-10 and w.max() < 1 + 1e-10
    big = methods.scaled_projection(x, 1e9)  # alpha -> inf: the span projector
    np.testing.assert_allclose(big @ big, big, atol=1e-4)
    np.testing.assert_allclose(np.trace(big), 4, atol=1e-4)  # rank 4


@pytest.mark.parametrize(
    "name,kw", [("mlp", {"hidden": (32,)}), ("cnn", {"widths": (8, 8, 8)})]
)
def test_svd_is_the_identity_without_forget_directions(digits_class_split, name, kw):
    split = digits_class_split
    model = models.get_model(name, 10, **kw)
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    new = methods.svd_unlearn(
        apply_fn,
        v,
        split.retain["image"][:200],
        split.forget["image"][:50],
        alpha_f=1e-12,
    )
    for a, b in zip(
        jax.tree.leaves(v["params"]), jax.tree.leaves(new["params"]), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_svd_forgets_a_digits_class_and_keeps_retain_accuracy(
    digits_class_split, trained
):
    """Kodge's CIFAR-10 defaults (alpha_r 100, alpha_f 3) on the MLP: the forget
    accuracy collapses while retain accuracy stays above 0.9 (the original: 1.0)."""
    _, apply_fn, v = trained
    split = digits_class_split
    m = methods.get(
        "svd", apply_fn=apply_fn, forget_set=split.forget, retain_set=split.retain
    )
    new = m.init(v).variables

    def acc(vv, part):
        return float(
            np.mean(
                np.asarray(apply_fn(vv, part["image"])[0]).argmax(-1) == part["label"]
            )
        )

    assert acc(v, split.forget) > 0.9
    assert acc(new, split.forget) < 0.2
    assert acc(new, split.retain) > 0.9
    with pytest.raises(ValueError, match="retain_set"):
        methods.get("svd", apply_fn=apply_fn, forget_set=split.forget)
