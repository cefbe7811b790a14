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
    assert "| method | ACC_retain | ACC_forget | ACC_test | MIA |" in out
    for f in (
        "config.json",
        "manifest.json",
        "results.json",
        "report.md",
        "metrics.jsonl",
        "compare.png",
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
            "time",
            "compile_time",
        ):
            assert 0 <= r[k] if k.endswith("time") else 0 <= r[k] <= 1, (k, r)
    retrain = res["rows"][1]
    assert retrain["acc_forget"] < 0.05  # the oracle never saw class 3
    manifest = json.load(open(os.path.join(workdir, "manifest.json")))
    assert set(manifest["split"]["hashes"]) >= {"retain", "forget", "dataset"}
    n_lines = len(open(os.path.join(workdir, "metrics.jsonl")).readlines())
    # second run: models come from the cache, finished methods are resumed
    _run(tmp_path)
    manifest = json.load(open(os.path.join(workdir, "manifest.json")))
    assert manifest["original"]["cache"] == "hit"
    assert len(open(os.path.join(workdir, "metrics.jsonl")).readlines()) == n_lines


def test_unknown_method_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names"):
        _run(tmp_path, "--methods", "finetune,bogus")
