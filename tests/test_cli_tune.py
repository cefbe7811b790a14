"""``jaxunlearn tune`` and ``compare --tune``: sweeps selected against retraining."""

import json
import os

import pytest

from jaxunlearn import cli

GRID = '{"learning_rate": [0.001, 0.03, 0.3]}'


def _argv(tmp_path, command, *extra):
    return [
        command,
        "--dataset", "digits", "--model", "mlp", "--forget-classes", "3",
        "--epochs", "3", "--unlearn-epochs", "2",
        "--cache-dir", str(tmp_path / "cache"),
        "--workdir", str(tmp_path / command),
        "--no-progress", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One ``tune`` run and one ``compare --tune`` run sharing their models."""
    tmp = tmp_path_factory.mktemp("tune")
    extra = ["--methods", "finetune,svd", "--grid", GRID]
    assert cli.main(_argv(tmp, "tune", *extra)) == 0
    assert (
        cli.main(
            _argv(
                tmp,
                "compare",
                *extra,
                "--tune",
                "--shadow-models",
                "0",
                "--metrics",
                "accuracy",
                "--no-plots",
            )
        )  # fmt: skip
        == 0
    )
    return tmp


def test_tune_records_rule_grid_every_point_and_the_argmin(tuned):
    rec = json.load(open(tuned / "tune" / "tune.json"))
    sw = rec["sweeps"]["finetune"]["0"]
    assert sw["grid"] == {"learning_rate": [0.001, 0.03, 0.3]}
    assert rec["rule"]["weights"] == {
        "retain": 1.0, "forget": 1.0, "heldout": 1.0, "privacy": 1.0
    }  # fmt: skip
    scores = [p["score"] for p in sw["points"]]
    assert len(scores) == 3 and all(s is not None for s in scores)
    assert sw["best_index"] == scores.index(min(scores))
    assert rec["selected"]["finetune"] == sw["points"][sw["best_index"]]["hparams"]
    for p in sw["points"]:  # each score is the rule applied to its metrics
        gap = sum(abs(p["metrics"][t] - sw["reference"][t]) for t in p["metrics"])
        assert p["score"] == pytest.approx(gap, abs=1e-9)
    # svd has no learning rate: reported, not tuned
    assert rec["sweeps"]["svd"]["0"] is None and "svd" not in rec["selected"]
    report = open(tuned / "tune" / "report.md").read()
    assert "not tuned" in report and "retrain (target)" in report
    target = next(r for r in rec["rows"] if r["method"] == "retrain (target)")
    assert target["forget"] == sw["reference"]["forget"] and target["score"] == 0


def test_compare_tune_trains_with_the_selected_setting(tuned):
    """compare --tune runs the same sweep (same key, same models) and then
    unlearns with its winner, which it records in the row."""
    selected = json.load(open(tuned / "tune" / "tune.json"))["selected"]
    res = json.load(open(tuned / "compare" / "results.json"))
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["finetune"]["tuned"] == selected["finetune"]
    assert rows["finetune"]["tune_points"] == 3
    assert rows["svd"]["tuned"] is None
    sweep = json.load(open(tuned / "compare" / "tune" / "seed0_finetune.json"))
    assert sweep["best"] == selected["finetune"]
    assert "tuned" in open(tuned / "compare" / "report.md").read()


def test_a_method_whose_every_point_diverges_is_a_flagged_row(tmp_path):
    """Nothing is lost: the other methods are tuned and tune.json is written;
    compare --tune falls back to the recipe and records why."""
    grid = (
        '{"finetune": {"learning_rate": [1e9]}, "neggrad": {"learning_rate": [1e-3]}}'
    )
    extra = ["--methods", "finetune,neggrad", "--grid", grid]
    assert cli.main(_argv(tmp_path, "tune", *extra)) == 0
    rec = json.load(open(tmp_path / "tune" / "tune.json"))
    flags = {r["method"]: r["flag"] for r in rec["rows"]}
    assert flags["finetune"] == "every grid point diverged" and flags["neggrad"] is None
    assert list(rec["selected"]) == ["neggrad"]
    argv = _argv(tmp_path, "compare", *extra, "--tune", "--shadow-models", "0",
                 "--metrics", "accuracy", "--no-plots")  # fmt: skip
    assert cli.main(argv) == 0
    rows = {
        r["method"]: r
        for r in json.load(open(tmp_path / "compare" / "results.json"))["rows"]
    }
    assert (
        rows["finetune"]["tuned"] is None
        and "diverged" in rows["finetune"]["tune_error"]
    )
    assert rows["neggrad"]["tuned"] == {"learning_rate": 1e-3}


def test_compare_without_tune_keeps_its_row_keys(tmp_path):
    """Tuning options enter a row's resume key only when tuning is on."""
    from jaxunlearn.harness import RunDir
    from jaxunlearn.harness._compare import CompareConfig

    a = RunDir(str(tmp_path / "a"), CompareConfig())
    b = RunDir(str(tmp_path / "b"), CompareConfig(tune_select={"forget": 2.0}))
    drop = ("seeds", "methods", "recipes", "data_dir", "tune", "tune_grids",
            "tune_select")  # fmt: skip
    assert a.row_key(a.fields(exclude=drop)) == b.row_key(b.fields(exclude=drop))


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--grid", GRID], "--grid"),  # compare without --tune
        (["--tune", "--grid", "{bad"], "--grid"),
        (["--tune", "--grid", '{"alpha": [1]}'], "--grid"),
        (["--tune", "--grid", '{"learning_rate": []}'], "--grid"),
        (["--tune", "--grid", '{"neggrad": {"learning_rate": [1]}}'], "--grid"),
        (["--tune", "--select", '{"test": 1}'], "--select"),
        (["--tune", "--select", '{"forget": -1}'], "--select"),
        (["--tune", "--select", '{"forget": true}'], "--select"),
        (
            ["--tune", "--grid", '{"finetune": {"learning_rate": [1]}, "alpha": [1]}'],
            "--grid",
        ),  # per-method and shared grids mixed
    ],
)
def test_tune_options_fail_in_one_line_before_training(tmp_path, capsys, extra, option):
    argv = _argv(tmp_path, "compare", "--methods", "finetune", *extra)
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and option in err, err
    assert not os.path.exists(tmp_path / "cache")
