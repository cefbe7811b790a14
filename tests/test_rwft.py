import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, methods, models, train


def test_intermediate_group_choice():
    resnet = ("head", "layer1", "layer2", "layer3", "layer4", "stem")
    assert methods.intermediate_group(resnet) == "layer3"
    vgg = ("block1", "block2", "block3", "block4", "block5", "head")
    assert methods.intermediate_group(vgg) == "block4"
    assert methods.intermediate_group(("block1", "block2", "block3", "head")) == (
        "block2"
    )
    assert methods.intermediate_group(("block1", "block2", "head")) == "block1"
    with pytest.raises(ValueError, match="intermediate"):
        methods.intermediate_group(("head",))


def _setup(split):
    model = models.get_model("mlp", 10, hidden=(16, 16))
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    part = split.forget
    idx, mask = data.epoch_indices(jax.random.key(1), len(part["label"]), 32)
    batch = {
        "forget": data.gather(
            {k: jnp.asarray(x) for k, x in part.items()}, idx[0], mask[0]
        )
    }
    return model, v, batch


def test_rwft_2_o_trains_only_the_intermediate_stage_and_head(digits_class_split):
    model, v, batch = _setup(digits_class_split)
    m = methods.get(
        "rwft_2_o",
        apply_fn=models.make_apply_fn(model),
        forget_classes=3,
        learning_rate=0.1,
    )
    s = m.init(v)
    step = jax.jit(m.step)
    for i in range(3):
        s, _ = step(s, batch, jax.random.key(i))
    p0, p1 = v["params"], s.variables["params"]
    assert jax.tree.all(jax.tree.map(np.array_equal, p0["block2"], p1["block2"]))
    for g in ("block1", "head"):
        assert not jax.tree.all(jax.tree.map(np.array_equal, p0[g], p1[g])), g
    # the frozen teacher that defines q* never moves
    t = s.extra["teacher"]["params"]
    assert jax.tree.all(jax.tree.map(np.array_equal, t, p0))


@pytest.mark.parametrize("strategy", ["proportional", "max"])
def test_rwft_o_drives_forget_class_probability_to_zero(digits_class_split, strategy):
    model, _, batch = _setup(digits_class_split)
    v, _ = train.train_original(
        model, digits_class_split, train.TrainConfig(epochs=5), seed=0
    )
    apply_fn = models.make_apply_fn(model)
    m = methods.get(
        "rwft_o",
        apply_fn=apply_fn,
        forget_classes=3,
        strategy=strategy,
        learning_rate=0.05,
    )
    s = m.init(v)
    step = jax.jit(m.step)
    p_before = jax.nn.softmax(apply_fn(v, batch["forget"]["image"])[0])[:, 3]
    for i in range(30):
        s, metrics = step(s, batch, jax.random.key(i))
    p_after = jax.nn.softmax(apply_fn(s.variables, batch["forget"]["image"])[0])[:, 3]
    assert float(p_after.mean()) < 0.1 and float(p_before.mean()) > 0.5
    assert bool(jnp.isfinite(metrics["rw_ce"]))


def test_rwft_bad_arguments():
    model = models.get_model("mlp", 10, hidden=(4,))
    apply_fn = models.make_apply_fn(model)
    with pytest.raises(ValueError, match="forget_classes"):
        methods.get("rwft_o", apply_fn=apply_fn)
    with pytest.raises(ValueError, match="strategy"):
        methods.get("rwft_o", apply_fn=apply_fn, forget_classes=1, strategy="x")
    assert methods.needs_forget_classes("rwft_2_o")
    assert not methods.needs_forget_classes("finetune")


def test_rw_a_adapters_start_as_identity_and_only_they_train(digits_class_split):
    split = digits_class_split
    model = models.get_model("cnn", 10, widths=(8, 8, 8))  # BatchNorm model
    apply_fn = models.make_apply_fn(model)
    x = split.forget["image"][:16]
    v = models.init(model, jax.random.key(0), x[:1])
    assert models.stage_widths(model, v, x[:1]) == {
        "block1": 8,
        "block2": 8,
        "block3": 8,
        "head": 10,
        "logits": 10,
    }
    m = methods.get(
        "rw_a",
        apply_fn=apply_fn,
        forget_classes=3,
        example_input=x[:1],
        learning_rate=0.05,
    )
    s = m.init(v)
    adapters = s.variables["params"][models.ADAPTERS]
    assert sorted(adapters) == ["block2", "logits"]  # middle of 3 blocks
    # identity at init: same outputs as the original model
    np.testing.assert_allclose(
        apply_fn(s.variables, x)[0], apply_fn(v, x)[0], rtol=1e-5, atol=1e-5
    )
    _, _, batch = _setup(split)
    step = jax.jit(m.step)
    for i in range(5):
        s, _ = step(s, batch, jax.random.key(i))
    new = s.variables
    base = {k: p for k, p in new["params"].items() if k != models.ADAPTERS}
    assert jax.tree.all(jax.tree.map(np.array_equal, base, v["params"]))
    assert jax.tree.all(
        jax.tree.map(np.array_equal, new["batch_stats"], v["batch_stats"])
    )
    moved = new["params"][models.ADAPTERS]["logits"]["kernel"]
    assert not np.allclose(moved, np.eye(10))
    # the adapted model is evaluated by the same apply_fn, and differs now
    assert not np.allclose(apply_fn(new, x)[0], apply_fn(v, x)[0])
    with pytest.raises(ValueError, match="example_input"):
        methods.get("rw_a", apply_fn=apply_fn, forget_classes=3)
