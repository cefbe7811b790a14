"""``compare`` on the run harness: resume rule, flagged rows, rw_a resumes."""

import dataclasses
import json
import os

import pytest

from jaxunlearn import harness, train
from jaxunlearn.harness._compare import CompareConfig, compare


def _cfg(**kw):
    base = CompareConfig(
        dataset="digits",
        model="mlp",
        methods=("finetune",),
        seeds=(0,),
        training=train.TrainConfig(epochs=2, batch_size=64, learning_rate=0.05),
        metrics=("accuracy", "mia_logreg", "nomus"),
        shadow_models=0,
    )
    for name in kw.get("methods", base.methods):
        base.recipes.setdefault(name, {})["epochs"] = 1
    return dataclasses.replace(base, **kw)


def _go(cfg, workdir, tmp_path, plots=False):
    return compare(
        cfg,
        str(workdir),
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        plots=plots,
    )


def _methods(res):
    return {r["method"]: r for r in res["rows_per_seed"]["0"]}


def test_diverged_method_is_a_flagged_row_and_reruns_cleanly(tmp_path):
    cfg = _cfg(methods=("neggrad",))
    cfg.recipes["neggrad"] = {"learning_rate": 1e30, "epochs": 2}
    workdir = tmp_path / "run"
    res = _go(cfg, workdir, tmp_path, plots=True)
    row = _methods(res)["neggrad"]
    assert row["flag"] == "diverged" and row["diverged"] is True
    assert _methods(res)["original"]["flag"] is None
    assert "neggrad **diverged**" in res["table"]
    assert "neggrad **diverged**" in (workdir / "report.md").read_text()
    again = _go(cfg, workdir, tmp_path, plots=True)
    assert _methods(again)["neggrad"]["resumed"] is True
    assert _methods(again)["neggrad"]["flag"] == "diverged"


def test_collapsed_flag():
    from jaxunlearn.harness._compare import _flag

    assert _flag({"acc_retain": 0.1, "acc_test": 0.1}, 10) == "collapsed"
    assert _flag({"acc_retain": 0.9}, 10) is None


def test_rw_a_rows_resume(tmp_path):
    cfg = _cfg(methods=("rw_a",))
    workdir = tmp_path / "run"
    first = _go(cfg, workdir, tmp_path)
    again = _go(cfg, workdir, tmp_path, plots=True)  # plots reload the adapters
    row = _methods(again)["rw_a"]
    assert row.get("resumed") is True
    assert row["acc_forget"] == _methods(first)["rw_a"]["acc_forget"]


def test_new_seed_reuses_rows_and_batch_size_invalidates(tmp_path):
    workdir = tmp_path / "run"
    first = _go(_cfg(), workdir, tmp_path)
    n_lines = len(open(workdir / "metrics.jsonl").readlines())
    two = _go(_cfg(seeds=(0, 1)), workdir, tmp_path)
    assert two["rows_per_seed"]["0"][2].get("resumed") is True
    assert not two["rows_per_seed"]["1"][2].get("resumed")
    strip = lambda r: {k: v for k, v in r.items() if k != "resumed"}  # noqa: E731
    assert strip(two["rows_per_seed"]["0"][2]) == json.loads(
        json.dumps(first["rows"][2])
    )
    assert len(open(workdir / "metrics.jsonl").readlines()) == 2 * n_lines
    other = _go(_cfg(unlearn_batch_size=32), workdir, tmp_path)
    assert not other["rows"][2].get("resumed")


def test_interrupted_compare_resumes_to_identical_rows(tmp_path, monkeypatch):
    cfg = _cfg(methods=("finetune", "random_label"))
    clean = _go(cfg, tmp_path / "clean", tmp_path)
    workdir = tmp_path / "broken"
    real = train.unlearn
    calls = []

    def flaky(method, *a, **kw):
        calls.append(1)
        if len(calls) == 2:  # dies in the second method, after its first epoch
            kw["callback"](0, {"loss": 1.0}, None)
            raise KeyboardInterrupt
        return real(method, *a, **kw)

    monkeypatch.setattr(train, "unlearn", flaky)
    with pytest.raises(KeyboardInterrupt):
        _go(cfg, workdir, tmp_path)
    monkeypatch.setattr(train, "unlearn", real)
    res = _go(cfg, workdir, tmp_path)
    assert [r.get("resumed", False) for r in res["rows"][2:]] == [True, False]
    strip = lambda r: {  # noqa: E731
        k: v
        for k, v in r.items()
        if k not in ("resumed", "time", "compile_time", "cache")
    }
    assert [strip(r) for r in json.loads(json.dumps(res["rows"]))] == [
        strip(r) for r in json.loads(json.dumps(clean["rows"]))
    ]
    recs = harness.RunDir(str(workdir), {}).read_metrics()
    keys = [(r["row"], r["epoch"]) for r in recs]
    assert len(keys) == len(set(keys))
    assert os.path.exists(workdir / "report.md")
