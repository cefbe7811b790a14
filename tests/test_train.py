import json
import os
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import cache, methods, models, optim, train


def _small_split(split, n=256):
    return {"retain": {k: v[:n] for k, v in split.retain.items()}}


@pytest.mark.parametrize(
    "model_name,kw", [("mlp", {"hidden": (32,)}), ("cnn", {"widths": (8, 8, 8)})]
)
def test_four_devices_give_the_same_loss_curve_as_one(
    digits_class_split, model_name, kw
):
    assert len(jax.devices()) == 4, "conftest must simulate 4 CPU devices"
    split = digits_class_split
    model = models.get_model(model_name, 10, **kw)
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    cfg = train.TrainConfig(epochs=3, batch_size=64, learning_rate=0.05)
    sets = _small_split(split)
    one = train.fit(model, v, sets["retain"], cfg, key=jax.random.key(1))
    four = train.fit(
        model, v, sets["retain"], cfg, key=jax.random.key(1), mesh=train.make_mesh(4)
    )
    losses1 = [h["loss"] for h in one.history]
    losses4 = [h["loss"] for h in four.history]
    np.testing.assert_allclose(losses1, losses4, rtol=1e-4)
    chex.assert_trees_all_close(one.variables, four.variables, rtol=1e-3, atol=1e-5)
    # the replicated result really lives on 4 devices
    leaf = jax.tree.leaves(four.variables["params"])[0]
    assert len(leaf.sharding.device_set) == 4


def test_mesh_batch_must_divide(digits_class_split):
    model = models.get_model("mlp", 10, hidden=(8,))
    v = models.init(model, jax.random.key(0), digits_class_split.retain["image"][:1])
    with pytest.raises(ValueError, match="divisible"):
        train.fit(
            model,
            v,
            digits_class_split.retain,
            train.TrainConfig(epochs=1, batch_size=30),
            key=jax.random.key(0),
            mesh=train.make_mesh(4),
        )


def test_unlearn_compiles_once_and_keeps_caller_arrays(digits_class_split):
    split = digits_class_split
    model = models.get_model("mlp", 10, hidden=(16,))
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    traces = []
    base = methods.get("neggrad_plus", apply_fn=apply_fn)

    def step(state, batch, key):
        traces.append(1)
        return base.step(state, batch, key)

    m = methods.Method(base.init, step, base.driver)
    r = train.unlearn(m, v, split, epochs=3, batch_size=50, key=jax.random.key(1))
    assert len(r.history) == 3
    assert len(traces) == 1  # one trace for three epochs
    assert r.compile_time > 0 and r.run_time > 0
    assert int(r.state.step) == 3 * int(np.ceil(len(split.retain["label"]) / 50))
    # the caller's variables were not donated away
    assert np.isfinite(np.asarray(jax.tree.leaves(v)[0])).all()


def test_unlearn_bad_input(digits_class_split):
    model = models.get_model("mlp", 10, hidden=(8,))
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), digits_class_split.retain["image"][:1])
    m = methods.get("neggrad", apply_fn=apply_fn)
    empty = {
        "retain": digits_class_split.retain,
        "forget": {"image": np.zeros((0, 8, 8, 1)), "label": np.zeros(0, int)},
    }
    with pytest.raises(ValueError, match="empty"):
        train.unlearn(m, v, empty, epochs=1, batch_size=8, key=jax.random.key(0))
    bad = {"retain": {"image": np.zeros((4, 8, 8, 1)), "label": np.zeros(3, int)}}
    with pytest.raises(ValueError, match="labels"):
        train.unlearn(
            methods.get("finetune", apply_fn=apply_fn),
            v,
            bad,
            epochs=1,
            batch_size=2,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="forget"):
        train.unlearn(
            m,
            v,
            {"retain": digits_class_split.retain},
            epochs=1,
            batch_size=8,
            key=jax.random.key(0),
        )
    with pytest.raises(TypeError, match="data"):
        train.unlearn(m, v, [1, 2], epochs=1, batch_size=8, key=jax.random.key(0))


def test_masked_padding_does_not_change_the_gradient():
    """A padded batch gives the same update as the unpadded one."""
    model = models.get_model("mlp", 3, hidden=(4,))
    apply_fn = models.make_apply_fn(model)
    x = jax.random.normal(jax.random.key(0), (5, 2, 2, 1))
    y = jnp.array([0, 1, 2, 0, 1])
    v = models.init(model, jax.random.key(1), x[:1])
    m = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.1)
    s = m.init(v)
    full = {"retain": {"image": x, "label": y, "mask": jnp.ones(5, bool)}}
    pad = {
        "retain": {
            "image": jnp.concatenate([x, x[:3] * 7]),
            "label": jnp.concatenate([y, y[:3]]),
            "mask": jnp.arange(8) < 5,
        }
    }
    a, _ = m.step(s, full, jax.random.key(0))
    b, _ = m.step(s, pad, jax.random.key(0))
    chex.assert_trees_all_close(a.variables, b.variables, rtol=1e-5, atol=1e-7)


def test_sgd_matches_pytorch_semantics():
    """Coupled weight decay then momentum (dampening 0), as torch.optim.SGD."""
    lr, mom, wd = 0.1, 0.9, 0.01
    tx = optim.sgd(lr, momentum=mom, weight_decay=wd)
    w = jnp.array([1.0, -2.0])
    state = tx.init(w)
    buf = np.zeros(2)
    w_ref = np.array([1.0, -2.0])
    for _ in range(3):
        g = 2 * w  # gradient of ||w||^2
        upd, state = tx.update(g, state, w)
        w = optax.apply_updates(w, upd)
        g_ref = 2 * w_ref + wd * w_ref
        buf = mom * buf + g_ref
        w_ref = w_ref - lr * buf
    np.testing.assert_allclose(w, w_ref, rtol=1e-6)


def test_schedules():
    s = optim.schedule(0.1, kind="cosine", total_steps=10)
    assert float(s(0)) == pytest.approx(0.1) and float(s(10)) == pytest.approx(0.0)
    w = optim.schedule(0.1, kind="warmup_cosine", total_steps=20, warmup_steps=5)
    assert float(w(0)) == 0.0 and float(w(5)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="kind"):
        optim.schedule(0.1, kind="bogus")
    with pytest.raises(ValueError, match="total_steps"):
        optim.schedule(0.1, kind="cosine")


def test_predict_matches_apply(digits_class_split):
    model = models.get_model("mlp", 10, hidden=(8,))
    apply_fn = models.make_apply_fn(model)
    x = digits_class_split.test["image"][:70]
    v = models.init(model, jax.random.key(0), x[:1])
    got = train.predict(apply_fn, v, x, batch_size=32)
    want = np.asarray(apply_fn(v, jnp.asarray(x), train=False)[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_original_and_retrain_are_cached_and_corruption_is_rebuilt(
    digits_class_split, tmp_path
):
    split = digits_class_split
    model = models.get_model("mlp", 10, hidden=(8,))
    cfg = train.TrainConfig(epochs=1, batch_size=128)
    d = str(tmp_path)
    v1, i1 = train.train_original(model, split, cfg, seed=0, cache_dir=d)
    v2, i2 = train.train_original(model, split, cfg, seed=0, cache_dir=d)
    assert (i1["cache"], i2["cache"]) == ("miss", "hit")
    # a cache hit reports the times of the run that built the entry
    assert i2["run_time"] == pytest.approx(i1["run_time"]) and i2["run_time"] > 0
    chex.assert_trees_all_close(v1, v2)
    # another seed or config is another entry
    _, i3 = train.train_original(model, split, cfg, seed=1, cache_dir=d)
    assert i3["cache"] == "miss" and i3["hash"] != i1["hash"]
    r, ir = train.retrain(model, split, cfg, seed=0, cache_dir=d)
    assert ir["hash"] != i1["hash"]
    # corrupt the payload: detected, discarded with a warning, rebuilt
    blob = os.path.join(d, i1["hash"] + ".msgpack")
    raw = bytearray(open(blob, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(blob, "wb").write(bytes(raw))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        v4, i4 = train.train_original(model, split, cfg, seed=0, cache_dir=d)
    assert i4["cache"] == "miss"
    assert any("corrupted" in str(x.message) for x in w)
    chex.assert_trees_all_close(v1, v4, rtol=1e-5, atol=1e-6)


def test_cache_rejects_wrong_shapes(tmp_path):
    manifest = {"a": 1}
    cache.save(str(tmp_path), manifest, {"params": {"w": np.zeros((2, 3))}})
    like = {"params": {"w": jax.ShapeDtypeStruct((3, 3), jnp.float64)}}
    with pytest.warns(UserWarning, match="corrupted"):
        assert cache.load(str(tmp_path), manifest, like=like) is None
    assert cache.load(str(tmp_path), manifest) is None  # entry was deleted
    assert cache.manifest_hash({"a": 1, "b": 2}) == cache.manifest_hash(
        {"b": 2, "a": 1}
    )


def test_atomic_write_is_readable_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "x.json"
    cache.atomic_write_json(str(path), {"a": np.arange(3)})
    assert json.loads(path.read_text()) == {"a": [0, 1, 2]}
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


@pytest.mark.parametrize(
    "model_name,kw", [("mlp", {"hidden": (16,)}), ("cnn", {"widths": (4, 4, 4)})]
)
def test_scan_and_loop_epochs_agree_and_auto_scans_canonical_convs(
    digits_class_split, model_name, kw
):
    split = digits_class_split
    model = models.get_model(model_name, 10, **kw)
    apply_fn = models.make_apply_fn(model)
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    method = methods.get("neggrad_plus", apply_fn=apply_fn, learning_rate=0.01)
    sets = {
        "retain": {k: x[:200] for k, x in split.retain.items()},
        "forget": {k: x[:40] for k, x in split.forget.items()},
    }
    arrays = {
        n: {"image": jnp.asarray(s["image"]), "label": jnp.asarray(s["label"])}
        for n, s in sets.items()
    }
    sizes = {n: len(s["label"]) for n, s in sets.items()}
    out = {}
    for mode in ("scan", "loop", "auto"):
        runner = train.EpochRunner(method, sizes, 32, mode=mode)
        state = method.init(jax.tree.map(jnp.copy, v))
        state, metrics = runner(state, arrays, jax.random.key(3))
        out[mode] = (state.variables, metrics["loss"], runner.resolved_mode)
    chex.assert_trees_all_close(out["scan"][0], out["loop"][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["scan"][1], out["loop"][1], rtol=1e-5)
    # The models' CPU convolution keeps gradients in the standard layout, so
    # XLA:CPU runs them fast inside the scan: auto scans the CNN too.
    assert out["auto"][2] == "scan"
    with pytest.raises(ValueError, match="mode"):
        train.EpochRunner(method, sizes, 32, mode="fast")


def test_sequential_replicas_match_vmapped_and_auto_picks_them_for_cpu_convs(
    digits_class_split,
):
    split = digits_class_split
    model = models.get_model("cnn", 10, widths=(4, 4, 4))
    apply_fn = models.make_apply_fn(model)
    method = methods.get("finetune", apply_fn=apply_fn, learning_rate=0.05)
    retain = {k: jnp.asarray(x[:96]) for k, x in split.retain.items()}
    arrays = {"retain": retain}
    keys = jax.random.split(jax.random.key(5), 3)
    v = jax.vmap(lambda k: models.init(model, k, split.retain["image"][:1]))(keys)
    subsets = jnp.asarray(np.random.default_rng(0).random((3, 96)) < 0.7)
    out = {}
    for mode in ("loop", "sequential", "auto"):
        runner = train.EpochRunner(method, {"retain": 96}, 16, mode=mode)
        states = jax.vmap(method.init)(jax.tree.map(jnp.copy, v))
        states, metrics = runner.replica_epoch(states, arrays, keys, subsets)
        out[mode] = (states.variables, metrics["loss"], runner.resolved_mode)
    # "loop" vmaps the step over replicas; "sequential" runs them one by one.
    chex.assert_trees_all_close(
        out["loop"][0], out["sequential"][0], rtol=1e-4, atol=1e-5
    )
    assert out["sequential"][1].shape == (3, 6)
    np.testing.assert_allclose(out["loop"][1], out["sequential"][1], rtol=1e-4)
    assert out["auto"][2] == "sequential"


def test_slow_in_loops_flags_lax_gradient_and_grouped_convs_only():
    """Auto mode loops (not scans) on CPU exactly when a convolution is not in
    XLA:CPU's standard layout: lax's weight gradient and vmapped (grouped)
    convolutions, not the models' canonical convolution or its gradients."""
    from jax import lax

    from jaxunlearn.models import _layers
    from jaxunlearn.train._engine import slow_in_loops

    x, w = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4))
    dn = ("NHWC", "HWIO", "NHWC")

    def text(conv, vmap=False):
        def loss(w, x):
            return (conv(x, w, (1, 1), "SAME", dimension_numbers=dn) ** 2).sum()

        g = jax.grad(loss)
        if vmap:
            # replicas: each its own weights and its own batch (grouped)
            return jax.jit(jax.vmap(g)).lower(jnp.stack([w, w]), jnp.stack([x, x]))
        return jax.jit(g).lower(w, x)

    assert slow_in_loops(text(lax.conv_general_dilated).as_text())
    assert not slow_in_loops(text(_layers.canonical_conv).as_text())
    assert slow_in_loops(text(_layers.canonical_conv, vmap=True).as_text())
    assert not slow_in_loops("no convolution here")


def test_predict_matches_direct_apply_for_a_cnn(digits_class_split):
    model = models.get_model("cnn", 10, widths=(4, 4, 4))
    apply_fn = models.make_apply_fn(model)
    images = split_images = digits_class_split.test["image"][:70]
    v = models.init(model, jax.random.key(0), split_images[:1])
    got = train.predict(apply_fn, v, images, batch_size=32)  # 3 batches, padded
    want = np.asarray(apply_fn(v, jnp.asarray(images), train=False)[0])
    assert got.shape == (70, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    feats = train.predict(apply_fn, v, images, batch_size=32, features=True)
    (_, want_f), _ = apply_fn(v, jnp.asarray(images), train=False, return_features=True)
    np.testing.assert_allclose(feats, np.asarray(want_f), rtol=1e-5, atol=1e-5)
