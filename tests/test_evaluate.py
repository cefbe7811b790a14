"""evaluate(): known orderings on digits, every metric, errors, reports."""

import json

import numpy as np
import pytest

from jaxunlearn import data, eval, models, train

# No weight decay and a 50/50 train/test split of digits, so the MLP memorises
# enough for membership to be measurable (digits generalises very well).
CFG = train.TrainConfig(epochs=30, batch_size=64, learning_rate=0.05, weight_decay=0.0)
SHADOW_CFG = CFG


def _fn(apply_fn, variables):
    """The logits function ``evaluate`` takes (eval never imports train)."""
    return lambda x: train.predict(apply_fn, variables, x)


@pytest.fixture(scope="module")
def random_setup():
    digits = data.load("digits", test_fraction=0.5)
    split = data.split(digits, "random", forget_fraction=0.2, seed=0)
    model = models.get_model("mlp", 10)
    original, _ = train.train_original(model, split, CFG, seed=0)
    retrained, _ = train.retrain(model, split, CFG, seed=1)
    pool, _ = eval.shadow_pool(split)
    shadow = train.train_shadow_models(model, pool, SHADOW_CFG, num_models=16, seed=2)
    return split, model, original, retrained, shadow


def test_original_forget_set_is_more_detectable_than_retrained(random_setup):
    split, model, original, retrained, shadow = random_setup
    apply_fn = models.make_apply_fn(model)
    metrics = ("accuracy", "mia_logreg", "loss_threshold", "lira", "rmia")
    r_orig = eval.evaluate(
        _fn(apply_fn, original), split, metrics=metrics, shadow=shadow
    )
    r_ret = eval.evaluate(
        _fn(apply_fn, retrained), split, metrics=metrics, shadow=shadow
    )
    o, r = r_orig.values, r_ret.values
    assert o["acc_forget"] > r["acc_forget"]  # members are fitted
    # The loss attack is weak on a model that generalises this well (AUC about
    # 0.55), but it still orders the two models; LiRA separates them clearly.
    assert o["loss_auc"] > r["loss_auc"], (o["loss_auc"], r["loss_auc"])
    assert o["lira_auc"] > r["lira_auc"] + 0.1, (o["lira_auc"], r["lira_auc"])
    assert o["rmia_auc"] > r["rmia_auc"], (o["rmia_auc"], r["rmia_auc"])
    # the retrained model's forget set looks unseen
    assert abs(r["lira_auc"] - 0.5) < 0.1


def test_every_metric_runs_on_class_forgetting(digits, tmp_path):
    split = data.split(digits, "class", forget_classes=3, seed=0)
    model = models.get_model("mlp", 10, hidden=(32,))
    cfg = train.TrainConfig(epochs=5, batch_size=64)
    original, _ = train.train_original(model, split, cfg, seed=0)
    retrained, _ = train.retrain(model, split, cfg, seed=1)
    pool, _ = eval.shadow_pool(split)
    shadow = train.train_shadow_models(model, pool, cfg, num_models=4, seed=0)
    apply_fn = models.make_apply_fn(model)
    rep = eval.evaluate(
        _fn(apply_fn, original),
        split,
        metrics=eval.metric_names(),
        retrained_logits_fn=_fn(apply_fn, retrained),
        shadow=shadow,
    )
    v = rep.values
    assert rep.metrics[:2] == ("accuracy", "mia_logreg")
    assert set(rep.metrics) == set(eval.metric_names())
    for k in (
        "acc_retain",
        "acc_forget",
        "acc_test",
        "acc_test_forget",
        "mia_accuracy",
        "forgetting_score",
        "loss_auc",
        "nomus",
        "utv",
        "mia_svc",
        "mia_nn",
        "mia_nn_neighbour",
        "phi_logreg_auc",
        "lira_auc",
        "rmia_auc",
    ):
        assert k in v, k
    assert v["nomus"] == pytest.approx((v["acc_test"] + 1 - v["forgetting_score"]) / 2)
    assert 0 <= v["utv"] <= 1 and 0 <= v["mia_svc"] <= 100
    assert v["mia_nn_neighbour"] != 3
    # the retrained model is its own reference: UTV 0
    same = eval.evaluate(
        _fn(apply_fn, retrained),
        split,
        metrics=("utv",),
        retrained_logits_fn=_fn(apply_fn, retrained),
    )
    assert same.values["utv"] == pytest.approx(0.0, abs=1e-6)
    d = json.loads(rep.to_json())
    assert d["metric_versions"]["lira"] == "1" and "jax" in d["versions"]
    assert "| nomus |" in rep.to_markdown()
    paths = rep.save_plots(str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == [
        "loss_hist.png",
        "roc.png",
        "roc_log.png",
    ]
    assert all(open(p, "rb").read(4) == b"\x89PNG" for p in paths)


def test_missing_inputs_and_unknown_metrics_are_errors(digits_class_split):
    split = digits_class_split
    model = models.get_model("mlp", 10, hidden=(8,))
    v = models.init(model, __import__("jax").random.key(0), split.retain["image"][:1])
    apply_fn = models.make_apply_fn(model)
    fn = _fn(apply_fn, v)
    with pytest.raises(ValueError, match="retrained_logits_fn="):
        eval.evaluate(fn, split, metrics=("utv",))
    with pytest.raises(ValueError, match="shadow"):
        eval.evaluate(fn, split, metrics=("lira",))
    with pytest.raises(ValueError, match="valid"):
        eval.evaluate(fn, split, metrics=("bogus",))


def test_shadow_pool_segments(digits_class_split):
    pool, seg = eval.shadow_pool(digits_class_split)
    n = len(pool["label"])
    assert seg["test"].stop == n
    np.testing.assert_array_equal(
        pool["label"][seg["forget"]], digits_class_split.forget["label"]
    )


def test_diverged_model_reports_accuracy_and_says_so(digits_class_split):
    import jax

    split = digits_class_split
    model = models.get_model("mlp", 10, hidden=(8,))
    v = models.init(model, jax.random.key(0), split.retain["image"][:1])
    v = {"params": jax.tree.map(lambda p: p * np.nan, v["params"])}
    rep = eval.evaluate(
        _fn(models.make_apply_fn(model), v),
        split,
        metrics=("accuracy", "mia_logreg", "nomus"),
    )
    assert rep.values["diverged"] is True
    assert rep.metrics == ("accuracy",)
    assert "mia_accuracy" not in rep.values and "acc_retain" in rep.values


def _zeros_fn(num_classes=10):
    return lambda x: np.zeros((len(x), num_classes), np.float32)


def test_evaluate_takes_any_logits_function(digits_class_split):
    """No model, no train: a plain numpy function of the images is enough."""
    split = digits_class_split
    w = np.random.default_rng(0).normal(size=(split.retain["image"][0].size, 10))

    def linear(x):
        return np.asarray(x, np.float64).reshape(len(x), -1) @ w

    rep = eval.evaluate(
        linear,
        split,
        metrics=("accuracy", "utv"),
        retrained_logits_fn=linear,
    )
    assert rep.values["utv"] == pytest.approx(0.0)
    assert rep.values["acc_retain"] == eval.accuracy(
        linear(split.retain["image"]), split.retain["label"]
    )


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (("not a function",), {}, TypeError, "logits_fn"),
        (
            (_zeros_fn(),),
            {"retrained_logits_fn": {"params": 1}},
            TypeError,
            "retrained_logits_fn",
        ),
        ((lambda x: np.zeros(len(x)),), {}, ValueError, "logits_fn"),
        ((lambda x: np.zeros((3, 10)),), {}, ValueError, "logits_fn"),
        ((_zeros_fn(7),), {}, ValueError, "num_classes"),
        (
            (_zeros_fn(),),
            {"metrics": ("utv",), "retrained_logits_fn": _zeros_fn(7)},
            ValueError,
            "retrained_logits_fn",
        ),
        ((_zeros_fn(),), {"metrics": "accuracy"}, TypeError, "metrics"),
        ((_zeros_fn(),), {"options": {"gamma": 2}}, ValueError, "options"),
        ((_zeros_fn(),), {"options": {"mia_feature": "x"}}, ValueError, "mia_feature"),
    ],
)
def test_evaluate_bad_input_names_the_argument(
    digits_class_split, args, kwargs, exc, match
):
    with pytest.raises(exc, match=match):
        eval.evaluate(*args, digits_class_split, **kwargs)
