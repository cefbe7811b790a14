"""Tests for jaxunlearn.models: shapes, parameter groups, BatchNorm state, masks."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models
from jaxunlearn.models import _layers

NUM_CLASSES = 5

# name -> (small kwargs, expected groups, feature dim on 8x8, feature dim on 32x32).
# ResNets use one block per stage to keep compiles short; full depths are
# covered by the eval_shape parameter-count tests.
SMALL = {
    "mlp": (
        {"hidden": (16,)},
        ("block1", "head"),
        16,
        16,
    ),
    "cnn": (
        {"widths": (4, 8, 8)},
        ("block1", "block2", "block3", "head"),
        8,
        8,
    ),
    "convnet3": (
        {"width": 16},
        ("block1", "block2", "block3", "head"),
        16,
        16 * 4 * 4,
    ),
    "resnet18": (
        {"width": 8, "stage_sizes": (1, 1, 1, 1)},
        ("head", "layer1", "layer2", "layer3", "layer4", "stem"),
        64,
        64,
    ),
    "resnet50": (
        {"width": 4, "stage_sizes": (1, 1, 1, 1)},
        ("head", "layer1", "layer2", "layer3", "layer4", "stem"),
        4 * 8 * 4,
        4 * 8 * 4,
    ),
    "vgg19": (
        {"width_scale": 0.125},
        ("block1", "block2", "block3", "block4", "block5", "head"),
        64,
        64,
    ),
}
BN_MODELS = ("cnn", "resnet18", "resnet50", "vgg19")
ALL = tuple(SMALL)


def _small(name):
    return models.get_model(name, NUM_CLASSES, **SMALL[name][0])


def _images(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    """Cheaper XLA compiles for this module only (flax imagenet/train_test.py)."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def built():
    """name -> (model, variables, x) on 8x8x1 inputs, initialised once."""
    jit_init = jax.jit(models.init, static_argnums=0)
    out = {}
    for name in ALL:
        model = _small(name)
        x = _images((4, 8, 8, 1))
        out[name] = (model, jit_init(model, jax.random.key(1), x), x)
    return out


def test_init_returns_plain_dict():
    model = _small("mlp")
    variables = models.init(model, jax.random.key(0), _images((2, 8, 8, 1)))
    assert type(variables) is dict and type(variables["params"]) is dict
    assert set(variables) == {"params"}


def _head(features, params):
    head = params["head"]
    return features @ head["kernel"] + head["bias"][None, :]


def test_registry_names():
    assert models.names() == (
        "mlp",
        "cnn",
        "convnet3",
        "resnet18",
        "resnet50",
        "vgg19",
    )


@pytest.mark.parametrize("name", ALL)
def test_shapes_groups_and_head_on_8x8(built, name):
    model, variables, x = built[name]
    _, groups, dim8, _ = SMALL[name]
    assert models.param_groups(variables["params"]) == groups
    apply_fn = models.make_apply_fn(model)
    logits, new_vars = apply_fn(variables, x)
    assert new_vars is variables
    assert logits.shape == (4, NUM_CLASSES)
    assert logits.dtype == jnp.float32
    (logits2, feats), _ = apply_fn(variables, x, return_features=True)
    assert feats.shape == (4, dim8)
    np.testing.assert_allclose(logits2, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        _head(feats, variables["params"]), logits, rtol=1e-5, atol=1e-5
    )
    if name in BN_MODELS:
        assert set(variables) == {"params", "batch_stats"}
        assert set(variables["batch_stats"]) <= set(groups) - {"head"}
    else:
        assert set(variables) == {"params"}


@pytest.mark.parametrize("name", ALL)
def test_shapes_on_32x32_eval_shape(name):
    model = _small(name)
    _, groups, _, dim32 = SMALL[name]
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda k, x: models.init(model, k, x), jax.random.key(0), x
    )
    assert models.param_groups(variables["params"]) == groups
    apply_fn = models.make_apply_fn(model)
    (logits, feats), new_vars = jax.eval_shape(
        lambda v, x: apply_fn(v, x, train=True, return_features=True), variables, x
    )
    assert logits.shape == (2, NUM_CLASSES)
    assert feats.shape == (2, dim32)
    assert jax.tree.structure(new_vars) == jax.tree.structure(variables)


@pytest.mark.parametrize("name", BN_MODELS)
def test_batchnorm_train_updates_stats(built, name):
    model, variables, x = built[name]
    (logits, feats), new_vars = models.forward(
        model, variables, x, train=True, return_features=True
    )
    assert jax.tree.structure(new_vars) == jax.tree.structure(variables)
    for old, new in zip(
        jax.tree.leaves(variables), jax.tree.leaves(new_vars), strict=True
    ):
        assert old.shape == new.shape and old.dtype == new.dtype
    assert new_vars["params"] is variables["params"]
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)),
        variables["batch_stats"],
        new_vars["batch_stats"],
    )
    assert all(jax.tree.leaves(changed))
    # The head still sees exactly the returned features in training mode.
    np.testing.assert_allclose(
        _head(feats, variables["params"]), logits, rtol=1e-5, atol=1e-5
    )
    # Eval mode leaves the variables untouched.
    _, same = models.forward(model, new_vars, x, train=False)
    assert same is new_vars


@pytest.mark.parametrize("norm", ["instance", "group"])
def test_resnet_without_batchnorm(norm):
    model = models.get_model(
        "resnet18", NUM_CLASSES, width=8, norm=norm, stage_sizes=(1, 1)
    )
    x = _images((2, 8, 8, 3))
    variables = models.init(model, jax.random.key(0), x)
    assert set(variables) == {"params"}
    assert models.param_groups(variables["params"]) == (
        "head",
        "layer1",
        "layer2",
        "stem",
    )
    (logits, feats), new_vars = models.forward(
        model, variables, x, train=True, return_features=True
    )
    assert new_vars is variables
    assert logits.shape == (2, NUM_CLASSES) and feats.shape == (2, 16)
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_group_norm_odd_width():
    model = models.get_model("resnet18", NUM_CLASSES, width=48, norm="group")
    x = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda k, x: models.init(model, k, x), jax.random.key(0), x
    )
    assert set(variables) == {"params"}


def test_mlp_dropout_and_flat_inputs():
    model = models.get_model("mlp", NUM_CLASSES, hidden=(32, 32), dropout_rate=0.5)
    x = _images((3, 8, 8, 1))
    variables = models.init(model, jax.random.key(0), x)
    apply_fn = models.make_apply_fn(model)
    eval1, _ = apply_fn(variables, x)
    eval2, _ = apply_fn(variables, x, key=jax.random.key(5))
    np.testing.assert_array_equal(eval1, eval2)
    (a, feats), _ = apply_fn(
        variables, x, train=True, key=jax.random.key(1), return_features=True
    )
    b, _ = apply_fn(variables, x, train=True, key=jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_allclose(_head(feats, variables["params"]), a, atol=1e-5)
    # Already-flat [N, D] inputs work too.
    flat = models.init(model, jax.random.key(0), x.reshape(3, -1))
    np.testing.assert_allclose(
        apply_fn(flat, x.reshape(3, -1))[0], eval1, rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("name", ALL)
def test_jit_matches_eager(built, name):
    model, variables, x = built[name]
    apply_fn = models.make_apply_fn(model)
    jitted = jax.jit(apply_fn, static_argnames=("train", "return_features"))
    (l1, f1), v1 = apply_fn(variables, x, return_features=True)
    (l2, f2), v2 = jitted(variables, x, return_features=True)
    np.testing.assert_allclose(l1, l2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-5)
    assert v1 is variables
    jax.tree.map(np.testing.assert_array_equal, v2, variables)
    if name in BN_MODELS:
        # Training mode normalises over a batch of 4 (down to 1x1 maps), which
        # amplifies rounding differences between fused and op-by-op kernels.
        tol = {"rtol": 1e-3, "atol": 1e-3}
        l1, v1 = apply_fn(variables, x, train=True)
        l2, v2 = jitted(variables, x, train=True)
        np.testing.assert_allclose(l1, l2, **tol)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **tol), v1, v2)


@pytest.mark.parametrize("name", ALL)
def test_param_gradients_finite(built, name):
    model, variables, x = built[name]
    apply_fn = models.make_apply_fn(model)
    labels = jnp.arange(x.shape[0]) % NUM_CLASSES

    def loss(params):
        logits, _ = apply_fn({**variables, "params": params}, x, train=True)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads["head"]))


def test_make_apply_fn_hashable_and_equal():
    a = models.make_apply_fn(_small("mlp"))
    b = models.make_apply_fn(_small("mlp"))
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize(
    "trainable", ["head", ("layer3", "head"), ["stem"], ()], ids=str
)
def test_group_mask_selects_named_groups(built, trainable):
    params = built["resnet18"][1]["params"]
    mask = models.group_mask(params, trainable)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    names = {trainable} if isinstance(trainable, str) else set(trainable)
    for group in models.param_groups(params):
        leaves = jax.tree.leaves(mask[group])
        assert leaves and all(v is (group in names) for v in leaves)


def test_group_mask_unknown_group_lists_groups(built):
    params = built["cnn"][1]["params"]
    with pytest.raises(ValueError, match="trainable") as err:
        models.group_mask(params, ["head", "layer9"])
    for group in ("block1", "block2", "block3", "head"):
        assert group in str(err.value)


def test_unknown_model_lists_names():
    with pytest.raises(ValueError) as err:
        models.get_model("resnet1000", NUM_CLASSES)
    for name in models.names():
        assert name in str(err.value)


@pytest.mark.parametrize("bad", [1, 0, 2.5, "10", True, None])
def test_bad_num_classes(bad):
    with pytest.raises(ValueError, match="num_classes"):
        models.get_model("mlp", bad)


@pytest.mark.parametrize(
    ("name", "kw", "arg"),
    [
        ("resnet18", {"norm": "layer"}, "norm"),
        ("resnet18", {"width": 0}, "width"),
        ("vgg19", {"width_scale": 0.0}, "width_scale"),
        ("cnn", {"widths": ()}, "widths"),
        ("mlp", {"dropout_rate": 1.0}, "dropout_rate"),
    ],
)
def test_bad_options_name_the_argument(name, kw, arg):
    with pytest.raises(ValueError, match=arg):
        models.get_model(name, NUM_CLASSES, **kw)


@pytest.mark.parametrize("name", ["cnn", "convnet3", "resnet18", "vgg19"])
def test_bad_input_rank_names_x(name):
    model = _small(name)
    with pytest.raises(ValueError, match="`x`"):
        models.init(model, jax.random.key(0), jnp.zeros((2, 8, 8)))


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (models.ResNet18, 11_173_962),
        (models.ResNet50, 23_520_842),
        (models.VGG19, 20_040_522),
    ],
    ids=["resnet18", "resnet50", "vgg19"],
)
def test_parameter_counts_cifar(factory, expected):
    model = factory(num_classes=10)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(
        lambda k, x: models.init(model, k, x), jax.random.key(0), x
    )
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))
    assert count == expected


@pytest.mark.parametrize("hw", [(8, 8), (7, 5), (1, 4), (3, 1), (1, 1)])
def test_pool2x2_matches_flax_and_skips_size_one_axes(hw):
    x = _images((2, *hw, 3))
    window = tuple(2 if s > 1 else 1 for s in hw)
    if window == (1, 1):
        max_ref = avg_ref = x
    else:
        max_ref = nn.max_pool(x, window, strides=window)
        avg_ref = nn.avg_pool(x, window, strides=window)
    np.testing.assert_array_equal(_layers.max_pool2x2(x), max_ref)
    np.testing.assert_allclose(_layers.avg_pool2x2(x), avg_ref, rtol=1e-6, atol=1e-6)
