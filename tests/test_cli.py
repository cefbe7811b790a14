import json
import os

import pytest

from jaxunlearn import cli


def _run(tmp_path, *extra):
    workdir = str(tmp_path / "run")
    argv = [
        "compare",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--forget-classes",
        "3",
        "--methods",
        "finetune,neggrad",
        "--epochs",
        "3",
        "--unlearn-epochs",
        "1",
        "--shadow-models",
        "4",
        "--workdir",
        workdir,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        *extra,
    ]
    assert cli.main(argv) == 0
    return workdir


def test_compare_writes_all_outputs_and_resumes(tmp_path, capsys):
    workdir = _run(tmp_path)
    out = capsys.readouterr().out
    assert "| method | ACC_retain | ACC_forget | ACC_test | MIA | NoMUS | UTV |" in out
    for f in (
        "config.json",
        "manifest.json",
        "results.json",
        "report.md",
        "metrics.jsonl",
        "compare.png",
        "loss_hist.png",
        "roc_log.png",
        "confusion.png",
        "embedding.png",
    ):
        assert os.path.exists(os.path.join(workdir, f)), f
    res = json.load(open(os.path.join(workdir, "results.json")))
    names = [r["method"] for r in res["rows"]]
    assert names == ["original", "retrain", "finetune", "neggrad"]
    for r in res["rows"]:
        for k in (
            "acc_retain",
            "acc_forget",
            "acc_test",
            "mia_accuracy",
            "nomus",
            "utv",
            "lira_auc",
            "rmia_auc",
            "phi_logreg_auc",
            "mia_nn",
        ):
            assert k in r, (k, r["method"])
        assert r["time"] >= 0 and r["compile_time"] >= 0
    retrain = res["rows"][1]
    assert retrain["acc_forget"] < 0.05  # the oracle never saw class 3
    assert retrain["utv"] == pytest.approx(0.0, abs=1e-6)
    manifest = json.load(open(os.path.join(workdir, "manifest.json")))
    assert set(manifest["seeds"][0]["split"]["hashes"]) >= {"retain", "forget"}
    n_lines = len(open(os.path.join(workdir, "metrics.jsonl")).readlines())
    # second run: models come from the cache, finished methods are resumed
    _run(tmp_path)
    manifest = json.load(open(os.path.join(workdir, "manifest.json")))
    assert manifest["seeds"][0]["original"]["cache"] == "hit"
    assert manifest["seeds"][0]["shadow"]["cache"] == "hit"
    assert len(open(os.path.join(workdir, "metrics.jsonl")).readlines()) == n_lines
    res2 = json.load(open(os.path.join(workdir, "results.json")))
    assert all(r.get("resumed") for r in res2["rows"][2:])
    assert res2["rows"][2]["acc_forget"] == res["rows"][2]["acc_forget"]


def test_several_seeds_are_aggregated(tmp_path):
    workdir = _run(
        tmp_path,
        "--seeds",
        "0,1",
        "--methods",
        "finetune",
        "--metrics",
        "accuracy,mia_logreg,nomus",
        "--shadow-models",
        "0",
        "--no-plots",
    )
    res = json.load(open(os.path.join(workdir, "results.json")))
    assert set(res["rows_per_seed"]) == {"0", "1"}
    agg = {r["method"]: r for r in res["aggregate"]}
    a = agg["finetune"]["acc_retain"]
    assert a["n"] == 2 and a["ci_low"] <= a["mean"] <= a["ci_high"]
    assert "±" in open(os.path.join(workdir, "report.md")).read()


def test_unknown_method_or_metric_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names"):
        _run(tmp_path, "--methods", "finetune,bogus")
    with pytest.raises(ValueError, match="unknown metrics"):
        _run(tmp_path, "--metrics", "accuracy,bogus")
