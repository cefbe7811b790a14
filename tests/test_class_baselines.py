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
    for name, kw in (("finetune", {}), ("l1_sparse", {"alpha": 1e-3})):
        m = methods.get(name, apply_fn=apply_fn, learning_rate=0.05, **kw)
        r = train.unlearn(
            m, v, digits_class_split, epochs=3, batch_size=64, key=jax.random.key(0)
        )
        norms[name] = _l1(r.variables["params"])
    assert norms["l1_sparse"] < 0.9 * norms["finetune"]


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
