"""CF-k, EU-k and UNSIR: frozen stages, stage order, re-initialisation, noise."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, losses, methods, models

BS = 32


def _model(name):
    if name == "mlp":
        return models.get_model("mlp", 10, hidden=(16, 16))
    if name == "cnn":  # BatchNorm in every block
        return models.get_model("cnn", 10, widths=(8, 8))
    return models.get_model("resnet18", 10, width=4)


@pytest.fixture(scope="module")
def split(digits_class_split):
    return digits_class_split


def _batch(split, key):
    out = {}
    for i, name in enumerate(("forget", "retain")):
        s = getattr(split, name)
        idx, mask = data.epoch_indices(jax.random.fold_in(key, i), len(s["label"]), BS)
        out[name] = data.gather(
            {"image": jnp.asarray(s["image"]), "label": jnp.asarray(s["label"])},
            idx[0],
            mask[0],
        )
    return out


def _run(m, state, split, n):
    step = jax.jit(m.step)
    metrics = []
    for i in range(n):
        state, mt = step(
            state, _batch(split, jax.random.key(100 + i)), jax.random.key(i)
        )
        metrics.append(mt)
    return state, metrics


def _equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)
    )


def _all_differ(a, b) -> bool:
    """Every leaf of ``a`` differs from the matching leaf of ``b`` somewhere."""
    return all(
        not np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


FORWARD = {
    "mlp": ("block1", "block2", "head"),
    "cnn": ("block1", "block2", "head"),
    "resnet18": ("stem", "layer1", "layer2", "layer3", "layer4", "head"),
}


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18"])
def test_stage_order_is_forward_order(name, split):
    model = _model(name)
    x = split.retain["image"][:1]
    v = models.init(model, jax.random.key(0), x)
    apply_fn = models.make_apply_fn(model)
    # jit rebuilds dicts with sorted keys: the order must not come from them
    v_sorted = jax.jit(lambda t: t)(v)
    assert methods.stage_order(apply_fn, v_sorted, x) == FORWARD[name]
    for k in (1, 2):
        m = methods.cf_k(apply_fn, k=k, example_input=x)
        s = m.init(v_sorted)
        assert tuple(m.spec.trainable(s.variables["params"])) == FORWARD[name][-k:]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("k", [1, 2])
def test_cf_k_freezes_all_but_last_k_stages(name, k, split):
    model = _model(name)
    x = split.retain["image"][:1]
    v = models.init(model, jax.random.key(0), x)
    m = methods.cf_k(
        models.make_apply_fn(model), k=k, example_input=x, learning_rate=0.1
    )
    state, _ = _run(m, m.init(v), split, 4)
    new = state.variables
    trained = FORWARD[name][-k:]
    for col in v:
        for stage in v[col]:
            if stage in trained:
                assert _all_differ(new[col][stage], v[col][stage]), (col, stage)
            else:
                assert _equal(new[col][stage], v[col][stage]), (col, stage)
    if name == "cnn":  # BatchNorm statistics exist and were checked
        assert set(v["batch_stats"]) == {"block1", "block2"}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("k", [1, 2])
def test_eu_k_reinitialises_exactly_the_last_k_stages(name, k, split):
    model = _model(name)
    x = split.retain["image"][:1]

    def init_fn(key):
        return models.init(model, key, x)

    v = init_fn(jax.random.key(0))
    key = jax.random.key(7)
    fresh = init_fn(key)
    apply_fn = models.make_apply_fn(model)
    m = methods.eu_k(apply_fn, init_fn=init_fn, k=k, example_input=x)
    s = m.init(v, key=key)
    trained = FORWARD[name][-k:]
    for col in v:
        for stage in v[col]:
            got = s.variables[col][stage]
            if stage in trained:
                assert _equal(got, fresh[col][stage]), (col, stage)
                if col == "params":  # (zero-initialised biases match)
                    assert not _equal(got, v[col][stage]), (col, stage)
            else:
                assert _equal(got, v[col][stage]), (col, stage)
    # training moves only the re-initialised stages
    s2, _ = _run(m, s, split, 3)
    for col in v:
        for stage in v[col]:
            if stage not in trained:
                assert _equal(s2.variables[col][stage], v[col][stage])
    # reinit=False: nothing re-initialised, still only the last k train
    m0 = methods.eu_k(apply_fn, k=k, example_input=x, reinit=False)
    s0 = m0.init(v, key=key)
    assert _equal(s0.variables, v)
    assert tuple(m0.spec.trainable(v["params"])) == trained


def test_eu_k_init_vmaps_over_keys(split):
    model = _model("cnn")
    x = split.retain["image"][:1]

    def init_fn(key):
        return models.init(model, key, x)

    v = init_fn(jax.random.key(0))
    m = methods.eu_k(models.make_apply_fn(model), init_fn=init_fn, example_input=x)
    keys = jnp.stack([jax.random.key(1), jax.random.key(2)])
    states = jax.vmap(lambda k: m.init(v, key=k))(keys)
    for i in range(2):
        single = m.init(v, key=keys[i])
        assert _equal(
            jax.tree.map(lambda a, i=i: a[i], states.variables), single.variables
        )


def _unsir_setup(split, name="mlp", **kw):
    model = _model(name)
    x = split.retain["image"][:1]
    v = models.init(model, jax.random.key(0), x)
    apply_fn = models.make_apply_fn(model)
    m = methods.unsir(apply_fn, forget_set=split.forget, num_classes=10, **kw)
    return model, apply_fn, v, m


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_unsir_noise_is_error_maximising(name, split):
    _, apply_fn, v, m = _unsir_setup(split, name, noise_batch=16)
    key = jax.random.key(3)
    s = m.init(v, key=key, num_steps=30)
    noise, y = s.extra["noise"], s.extra["noise_label"]
    assert noise.shape == (16, *split.forget["image"].shape[1:])
    np.testing.assert_array_equal(y, split.forget["label"][:16])
    noise0 = jax.random.normal(key, noise.shape, noise.dtype)

    def ce(z):
        logits, _ = apply_fn(v, z, train=False)
        return float(jnp.mean(losses.cross_entropy(logits, y)))

    def objective(z):  # what Adam minimises: -CE + 0.1 * mean_b sum z^2
        return -ce(z) + 0.1 * float(jnp.mean(jnp.sum(z**2, axis=(1, 2, 3))))

    assert ce(noise) > ce(noise0)
    assert objective(noise) < objective(noise0)
    # without the l2 pull the error grows further; with no steps, noise0 stays
    _, _, _, m_free = _unsir_setup(split, name, noise_batch=16, noise_l2=0.0)
    assert ce(m_free.init(v, key=key, num_steps=30).extra["noise"]) > ce(noise)
    _, _, _, m_zero = _unsir_setup(split, name, noise_batch=16, noise_steps=0)
    assert _equal(m_zero.init(v, key=key, num_steps=30).extra["noise"], noise0)
    # the noise optimisation runs the model in eval mode: nothing else moves
    assert _equal(s.variables, v)


def test_unsir_noise_labels_cycle_the_forget_labels():
    model = _model("mlp")
    forget = {
        "image": np.zeros((3, 8, 8, 1), np.float32),
        "label": np.array([4, 5, 6]),
    }
    v = models.init(model, jax.random.key(0), forget["image"][:1])
    m = methods.unsir(models.make_apply_fn(model), forget_set=forget, noise_batch=7)
    s = m.init(v, key=jax.random.key(0), num_steps=3)
    assert s.extra["noise_label"].tolist() == [4, 5, 6, 4, 5, 6, 4]


def test_unsir_init_vmaps_over_keys(split):
    _, _, v, m = _unsir_setup(split, noise_batch=8)
    keys = jnp.stack([jax.random.key(1), jax.random.key(2)])
    states = jax.jit(jax.vmap(lambda k: m.init(v, key=k, num_steps=30)))(keys)
    assert states.extra["noise"].shape[0] == 2
    assert not np.allclose(states.extra["noise"][0], states.extra["noise"][1])
    for i in range(2):
        single = m.init(v, key=keys[i], num_steps=30)
        np.testing.assert_allclose(
            states.extra["noise"][i], single.extra["noise"], rtol=1e-5, atol=1e-5
        )


def test_unsir_switches_from_impair_to_repair_at_the_right_step(split):
    _, _, v, m = _unsir_setup(split, noise_batch=8)
    s = m.init(v, key=jax.random.key(0), num_steps=9)  # impair: round(9 / 3) = 3
    assert int(s.extra["impair_until"]) == 3
    _, metrics = _run(m, s, split, 6)
    assert [float(mt["impair"]) for mt in metrics] == [1, 1, 1, 0, 0, 0]
    for mt in metrics[3:]:  # repair: plain retain cross-entropy
        np.testing.assert_allclose(mt["loss"], mt["retain_ce"], rtol=1e-6)
    # explicit impair_steps and the steps_per_epoch fallback
    _, _, _, m2 = _unsir_setup(split, noise_batch=8, impair_steps=5)
    assert (
        int(m2.init(v, key=jax.random.key(0), num_steps=9).extra["impair_until"]) == 5
    )
    s3 = m.init(v, key=jax.random.key(0), steps_per_epoch=4)
    assert int(s3.extra["impair_until"]) == 4
    # the paper's 1 + 1 epochs: fraction 1/2 of 2 epochs
    _, _, _, m4 = _unsir_setup(split, noise_batch=8, impair_fraction=0.5)
    assert (
        int(m4.init(v, key=jax.random.key(0), num_steps=40).extra["impair_until"]) == 20
    )


def test_unsir_impair_retain_changes_the_loss(split):
    _, _, v, m_with = _unsir_setup(split, noise_batch=8)
    _, _, _, m_without = _unsir_setup(split, noise_batch=8, impair_retain=False)
    batch = _batch(split, jax.random.key(1))
    s_with = m_with.init(v, key=jax.random.key(0), num_steps=9)
    s_without = m_without.init(v, key=jax.random.key(0), num_steps=9)
    _, a = jax.jit(m_with.step)(s_with, batch, jax.random.key(2))
    _, b = jax.jit(m_without.step)(s_without, batch, jax.random.key(2))
    # without retain: the noise cross-entropy alone
    np.testing.assert_allclose(b["loss"], b["noise_ce"], rtol=1e-6)
    # with retain: the mean over noise and retain examples together
    n, r = 8, int(batch["retain"]["mask"].sum())
    np.testing.assert_allclose(
        a["loss"], (n * a["noise_ce"] + r * a["retain_ce"]) / (n + r), rtol=1e-5
    )
    assert abs(float(a["loss"]) - float(b["loss"])) > 1e-3
    # in repair the two variants are the same method
    s_with = dataclasses.replace(s_with, step=jnp.asarray(5, jnp.int32))
    s_without = dataclasses.replace(s_without, step=jnp.asarray(5, jnp.int32))
    _, a = jax.jit(m_with.step)(s_with, batch, jax.random.key(2))
    _, b = jax.jit(m_without.step)(s_without, batch, jax.random.key(2))
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)


def test_bad_arguments_raise_naming_them(split):
    model = _model("mlp")
    x = split.retain["image"][:1]
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), x)

    def init_fn(key):
        return models.init(model, key, x)

    for fn in (methods.cf_k, methods.eu_k):
        kw = {"init_fn": init_fn} if fn is methods.eu_k else {}
        with pytest.raises(ValueError, match="`k`"):
            fn(apply_fn, k=0, example_input=x, **kw)
        with pytest.raises(TypeError, match="`k`"):
            fn(apply_fn, k=1.5, example_input=x, **kw)
        with pytest.raises(TypeError, match="`k`"):
            fn(apply_fn, k=True, example_input=x, **kw)
        with pytest.raises(ValueError, match="example_input"):
            fn(apply_fn, **kw)
        with pytest.raises(ValueError, match="learning_rate"):
            fn(apply_fn, example_input=x, learning_rate=-1.0, **kw)
        with pytest.raises(ValueError, match="momentum"):
            fn(apply_fn, example_input=x, momentum=2.0, **kw)
        with pytest.raises(TypeError, match="apply_fn"):
            fn(None, example_input=x, **kw)
        with pytest.raises(TypeError, match="`tx`"):
            fn(apply_fn, example_input=x, tx="sgd", **kw)
        m = fn(apply_fn, k=4, example_input=x, **kw)  # the MLP has 3 stages
        with pytest.raises(ValueError, match="`k`"):
            m.init(v, key=jax.random.key(0))
    with pytest.raises(ValueError, match="init_fn"):
        methods.eu_k(apply_fn, example_input=x)
    with pytest.raises(TypeError, match="init_fn"):
        methods.eu_k(apply_fn, init_fn=3, example_input=x)
    with pytest.raises(TypeError, match="reinit"):
        methods.eu_k(apply_fn, init_fn=init_fn, example_input=x, reinit="yes")
    with pytest.raises(ValueError, match="key"):
        methods.eu_k(apply_fn, init_fn=init_fn, example_input=x).init(v)

    f = split.forget
    bad = [
        (ValueError, "forget_set", {"forget_set": None}),
        (ValueError, "forget_set", {"forget_set": {"image": f["image"]}}),
        (
            ValueError,
            "forget_set",
            {"forget_set": {"image": f["image"][:0], "label": f["label"][:0]}},
        ),
        (ValueError, "num_classes", {"num_classes": 1}),
        (ValueError, "noise_batch", {"noise_batch": 0}),
        (TypeError, "noise_batch", {"noise_batch": 2.0}),
        (ValueError, "noise_steps", {"noise_steps": -1}),
        (ValueError, "noise_lr", {"noise_lr": 0.0}),
        (ValueError, "noise_l2", {"noise_l2": -0.1}),
        (ValueError, "impair_fraction", {"impair_fraction": 1.5}),
        (ValueError, "impair_steps", {"impair_steps": -1}),
        (TypeError, "impair_retain", {"impair_retain": 1}),
        (ValueError, "learning_rate", {"learning_rate": 0.0}),
        (TypeError, "`tx`", {"tx": 0.1}),
    ]
    for exc, name, kw in bad:
        kw = {"forget_set": f, **kw}
        with pytest.raises(exc, match=name):
            methods.unsir(apply_fn, **kw)
    m = methods.unsir(apply_fn, forget_set=f)
    with pytest.raises(ValueError, match="num_steps"):
        m.init(v, key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        m.init(v, num_steps=10)
    # through the registry, with the context keywords callers always pass
    for name in ("cf_k", "eu_k", "unsir"):
        assert name in methods.names()
        m = methods.get(
            name,
            apply_fn=apply_fn,
            init_fn=init_fn,
            example_input=x,
            forget_set=f,
            num_classes=10,
            retain_set=split.retain,
        )
        m.init(v, key=jax.random.key(0), num_steps=10)
