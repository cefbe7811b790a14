"""Bad input to training and to method factories fails on the host, before
anything compiles, with an error naming the argument."""

import jax
import numpy as np
import pytest

from jaxunlearn import data, methods, models, train


@pytest.fixture(scope="module")
def setup():
    ds = data.load("digits")
    split = data.split(ds, "class", forget_classes=3, seed=0)
    model = models.get_model("mlp", 10, hidden=(8,))
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    return split, model, models.make_apply_fn(model), v


def _retain(split, **change):
    part = {
        "image": split.retain["image"][:64].copy(),
        "label": split.retain["label"][:64].copy(),
    }
    for k, fn in change.items():
        part[k] = fn(part[k])
    return {"retain": part}


def _label(value):
    def f(lab):
        lab = lab.astype(np.float64 if isinstance(value, float) else lab.dtype)
        lab[5] = value
        return lab

    return f


def _pixel(value):
    def f(img):
        img[2, 0, 0, 0] = value
        return img

    return f


BAD_DATA = [
    ("label_too_large", {"label": _label(15)}, ValueError, "label"),
    ("label_negative", {"label": _label(-1)}, ValueError, "label"),
    ("label_float", {"label": _label(3.7)}, TypeError, "label"),
    ("nan_pixel", {"image": _pixel(np.nan)}, ValueError, "image"),
    ("inf_pixel", {"image": _pixel(np.inf)}, ValueError, "image"),
    (
        "integer_images",
        {"image": lambda x: (x * 255).astype(np.uint8)},
        TypeError,
        "image",
    ),
    ("label_2d", {"label": lambda y: y[:, None]}, TypeError, "label"),
]


@pytest.mark.parametrize("case,change,exc,name", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_unlearn_rejects_bad_data(setup, case, change, exc, name):
    split, _, apply_fn, v = setup
    m = methods.get("finetune", apply_fn=apply_fn)
    with pytest.raises(exc, match=name):
        train.unlearn(
            m,
            v,
            _retain(split, **change),
            epochs=1,
            batch_size=32,
            key=jax.random.key(0),
        )


@pytest.mark.parametrize("case,change,exc,name", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_fit_rejects_bad_data(setup, case, change, exc, name):
    split, model, _, v = setup
    cfg = train.TrainConfig(epochs=1, batch_size=32)
    with pytest.raises(exc, match=name):
        train.fit(
            model, v, _retain(split, **change)["retain"], cfg, key=jax.random.key(0)
        )


BAD_HPARAMS = [
    ("finetune", {"learning_rate": -0.1}, ValueError, "learning_rate"),
    ("finetune", {"learning_rate": float("nan")}, ValueError, "learning_rate"),
    ("finetune", {"learning_rate": 0.0}, ValueError, "learning_rate"),
    ("finetune", {"learning_rate": "0.1"}, TypeError, "learning_rate"),
    ("finetune", {"momentum": -0.5}, ValueError, "momentum"),
    ("finetune", {"momentum": 1.5}, ValueError, "momentum"),
    ("finetune", {"weight_decay": -1e-4}, ValueError, "weight_decay"),
    ("finetune", {"weight_decay": float("inf")}, ValueError, "weight_decay"),
    ("neggrad", {"learning_rate": True}, TypeError, "learning_rate"),
    ("neggrad_plus", {"retain_weight": 1.5}, ValueError, "retain_weight"),
    ("neggrad_plus", {"retain_weight": -0.1}, ValueError, "retain_weight"),
    (
        "rwft_o",
        {"retain_weight": 2.0, "forget_classes": 3},
        ValueError,
        "retain_weight",
    ),
    (
        "rwft_2_o",
        {"learning_rate": -1.0, "forget_classes": 3},
        ValueError,
        "learning_rate",
    ),
    (
        "random_label",
        {"retain_weight": float("nan"), "num_classes": 10},
        ValueError,
        "retain_weight",
    ),
    ("l1_sparse", {"alpha": -1e-4}, ValueError, "alpha"),
    ("l1_sparse", {"decay_steps": 0}, ValueError, "decay_steps"),
    ("boundary_shrink", {"learning_rate": "fast"}, TypeError, "learning_rate"),
]


@pytest.mark.parametrize(
    "name,kw,exc,arg",
    BAD_HPARAMS,
    ids=[f"{c[0]}-{next(iter(c[1]))}-{i}" for i, c in enumerate(BAD_HPARAMS)],
)
def test_method_factories_validate_hyperparameters(setup, name, kw, exc, arg):
    _, _, apply_fn, _ = setup
    with pytest.raises(exc, match=arg):
        methods.get(name, apply_fn=apply_fn, **kw)


def test_unlearn_validates_its_own_arguments(setup):
    split, _, apply_fn, v = setup
    m = methods.get("finetune", apply_fn=apply_fn)
    with pytest.raises(TypeError, match="method"):
        train.unlearn(
            "finetune", v, split, epochs=1, batch_size=8, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="variables"):
        train.unlearn(
            m, {"weights": 1}, split, epochs=1, batch_size=8, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="epochs"):
        train.unlearn(m, v, split, epochs=-1, batch_size=8, key=jax.random.key(0))
    with pytest.raises(ValueError, match="include"):
        train.unlearn(
            m,
            v,
            split,
            epochs=1,
            batch_size=8,
            key=jax.random.key(0),
            include=np.ones(3, bool),
        )
    with pytest.raises(ValueError, match="include"):
        train.unlearn(
            m,
            v,
            split,
            epochs=1,
            batch_size=8,
            key=jax.random.key(0),
            include=np.zeros(len(split.retain["label"]), bool),
        )
    with pytest.raises(ValueError, match="batch_size"):
        train.unlearn(m, v, split, epochs=1, batch_size=0, key=jax.random.key(0))
