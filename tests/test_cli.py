import argparse
import json
import os
import subprocess
import sys
import time

import pytest

import jaxunlearn
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


def _bad_argv(tmp_path, *extra):
    """Cheap compare flags, then ``extra`` (the last value of an option wins)."""
    return [
        "compare",
        "--methods",
        "finetune,neggrad",
        "--epochs",
        "1",
        "--shadow-models",
        "4",
        "--workdir",
        str(tmp_path / "run"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
        "--no-plots",
        *extra,
    ]


BAD_INPUTS = {
    "unknown dataset": ("--dataset", ["--dataset", "bogus"]),
    "missing npz dataset": ("--dataset", ["--dataset", "npz:/no/such/file.npz"]),
    "unknown model": ("--model", ["--model", "bogus"]),
    "unknown mode": ("--mode", ["--mode", "bogus"]),
    "unknown method": ("--methods", ["--methods", "finetune,bogus"]),
    "no method": ("--methods", ["--methods", ","]),
    "repeated method": ("--methods", ["--methods", "finetune,finetune"]),
    "class-only method, random mode": (
        "--methods",
        ["--mode", "random", "--methods", "rwft_o"],
    ),
    "unknown metric": ("--metrics", ["--metrics", "accuracy,bogus"]),
    "bad json": (
        "--method-config",
        ["--method-config", '{"finetune": {'],
    ),
    "json not an object": ("--method-config", ["--method-config", "[1, 2]"]),
    "misspelt method in config": (
        "--method-config",
        ["--method-config", '{"finetun": {"learning_rate": 0.1}}'],
    ),
    "configured method not selected": (
        "--method-config",
        ["--method-config", '{"salun": {"learning_rate": 0.1}}'],
    ),
    "unknown hyperparameter": (
        "--method-config",
        ["--method-config", '{"finetune": {"learning_rat": 0.1}}'],
    ),
    "zero method epochs": (
        "--method-config",
        ["--method-config", '{"neggrad": {"epochs": 0}}'],
    ),
    "workdir is a file": ("--workdir", ["--workdir", "{file}"]),
    "workdir under a file": ("--workdir", ["--workdir", "{file}/sub"]),
    "cache dir is a file": ("--cache-dir", ["--cache-dir", "{file}"]),
    "data dir is a file": ("--data-dir", ["--data-dir", "{file}"]),
    "one shadow model": ("--shadow-models", ["--shadow-models", "1"]),
    "negative shadow models": ("--shadow-models", ["--shadow-models", "-3"]),
    "no shadow models but lira asked": (
        "--shadow-models",
        ["--shadow-models", "0", "--metrics", "accuracy,lira"],
    ),
    "zero devices": ("--num-devices", ["--num-devices", "0"]),
    "negative devices": ("--num-devices", ["--num-devices", "-2"]),
    "more devices than present": ("--num-devices", ["--num-devices", "4096"]),
    "negative lr": ("--lr", ["--lr", "-0.1"]),
    "zero lr": ("--lr", ["--lr", "0"]),
    "nan lr": ("--lr", ["--lr", "nan"]),
    "inf lr": ("--lr", ["--lr", "inf"]),
    "non-numeric lr": ("--lr", ["--lr", "fast"]),
    "non-integer forget class": ("--forget-classes", ["--forget-classes", "three"]),
    "negative forget class": ("--forget-classes", ["--forget-classes", "-1"]),
    "forget class out of range": ("--forget-classes", ["--forget-classes", "10"]),
    "no forget class": ("--forget-classes", ["--forget-classes", ""]),
    "repeated forget class": ("--forget-classes", ["--forget-classes", "3,3"]),
    "every class forgotten": (
        "--forget-classes",
        ["--forget-classes", ",".join(map(str, range(10)))],
    ),
    "forget classes in random mode": (
        "--forget-classes",
        ["--mode", "random", "--forget-classes", "3"],
    ),
    "forget fraction out of range": ("--forget-fraction", ["--forget-fraction", "1"]),
    "negative seed": ("--seeds", ["--seeds", "-1"]),
    "zero epochs": ("--epochs", ["--epochs", "0"]),
    "zero batch size": ("--batch-size", ["--batch-size", "0"]),
    "zero unlearn epochs": ("--unlearn-epochs", ["--unlearn-epochs", "0"]),
    "unknown option": ("--bogus", ["--bogus"]),
}


@pytest.mark.parametrize("option,extra", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
def test_user_error_is_one_line_exit_2_before_training(tmp_path, capsys, option, extra):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    extra = [e.replace("{file}", str(afile)) for e in extra]
    t0 = time.perf_counter()
    assert cli.main(_bad_argv(tmp_path, *extra)) == 2
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert "error:" in err and option in err, err
    assert "Traceback" not in err
    # nothing was trained or written: no workdir, no cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert elapsed < 30, elapsed  # loose: training would take much longer


def test_user_errors_list_the_valid_choices(tmp_path, capsys):
    assert cli.main(_bad_argv(tmp_path, "--methods", "finetune,bogus")) == 2
    assert "'neggrad_plus'" in capsys.readouterr().err
    assert cli.main(_bad_argv(tmp_path, "--metrics", "bogus")) == 2
    assert "'mia_logreg'" in capsys.readouterr().err
    config = '{"finetune": {"learning_rat": 0.1}}'
    assert cli.main(_bad_argv(tmp_path, "--method-config", config)) == 2
    assert "'learning_rate'" in capsys.readouterr().err


def test_validate_args_builds_the_config_without_training(tmp_path):
    config = '{"neggrad": {"learning_rate": 0.02, "epochs": 3}}'
    args = cli.build_parser().parse_args(
        _bad_argv(tmp_path, "--method-config", config, "--seeds", "0,2")
    )
    cfg, cache_dir = cli.validate_args(args)
    assert cfg.methods == ("finetune", "neggrad")
    assert cfg.recipes["neggrad"] == {"learning_rate": 0.02, "epochs": 3}
    assert cfg.forget_classes == (3,) and cfg.seeds == (0, 2)
    assert cfg.metrics == cli.DEFAULT_METRICS
    assert cache_dir == str(tmp_path / "cache")
    assert not os.path.exists(tmp_path / "run")


def test_python_m_jaxunlearn_user_error_has_no_traceback(tmp_path):
    argv = _bad_argv(tmp_path, "--method-config", '{"finetune": {"lr": 0.1}}')
    proc = subprocess.run(
        [sys.executable, "-m", "jaxunlearn", *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "--method-config" in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "run")


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"jaxunlearn {cli._version()}"
    assert cli._version() == jaxunlearn.__version__


def _options(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for option, act in _options(sub):
                    yield f"{name} {option}", act
        elif action.option_strings:
            yield action.option_strings[-1], action


def test_every_option_has_help():
    found = dict(_options(cli.build_parser()))
    assert "compare --lr" in found and "--version" in found
    missing = [o for o, a in found.items() if not (a.help and a.help.strip())]
    assert not missing, f"options without help: {missing}"
