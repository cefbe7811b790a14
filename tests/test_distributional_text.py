"""Smoke and behaviour tests of experiments/distributional_text.py (SMS spam)."""

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dt():
    spec = importlib.util.spec_from_file_location(
        "distributional_text",
        os.path.join(ROOT, "experiments", "distributional_text.py"),
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def smoke(dt, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dt_smoke")
    res = dt.main(["--config", "smoke", "--workdir", str(workdir)])
    return workdir, res


def test_smoke_writes_outputs(dt, smoke):
    workdir, res = smoke
    for f in ("results.json", "report.md", "config.json", "deletion_curves.png"):
        assert (workdir / f).exists(), f
    saved = json.load(open(workdir / "results.json"))
    for k in (
        "config",
        "data",
        "rows",
        "aggregate",
        "targets",
        "versions",
        "paper",
        "wall_time_s",
    ):
        assert k in saved, k
    cfg = dt.get_config("smoke")
    assert len(saved["rows"]) == len(cfg.seeds) * len(cfg.scores) * len(cfg.fractions)
    assert {r["score"] for r in saved["rows"]} == set(cfg.scores)
    assert saved["data"]["synthetic"] is True
    assert "sklearn" in saved["versions"] and "jax" in saved["versions"]
    for name in cfg.scores:
        assert name in saved["targets"]["half"]["fraction"]
    report = (workdir / "report.md").read_text()
    assert "SYNTHETIC" in report and "90%" in report
    # every written row file is reused by a second run with the same config
    again = dt.run(cfg, str(workdir), log=lambda s: None)
    assert again["reused_seeds"] == list(cfg.seeds)
    assert again["rows"] == saved["rows"]


def test_generated_corpus_is_deterministic(dt):
    t1, y1 = dt.generate_corpus(200, 40, seed=3)
    t2, y2 = dt.generate_corpus(200, 40, seed=3)
    t3, _ = dt.generate_corpus(200, 40, seed=4)
    assert t1 == t2 and np.array_equal(y1, y2)
    assert t1 != t3
    assert len(t1) == 240 and int(y1.sum()) == 40
    assert set(np.unique(y1)) == {0, 1}
    assert all(isinstance(t, str) and t for t in t1)


def test_full_deletion_gives_zero_recall(smoke):
    _, res = smoke
    last = [r for r in res["rows"] if r["fraction"] == 1.0]
    assert last
    for r in last:
        assert r["recall_spam"] == 0.0
        assert r["single_class"] and r["removed"] == r["spam_train"]
        assert r["acc_ham"] == 1.0


def test_no_deletion_is_identical_across_scores(dt):
    cfg = dataclasses.replace(
        dt.get_config("smoke"), fractions=(0.0,), reuse_identical_edits=False
    )
    texts, labels, _ = dt.load_corpus(cfg)
    rows = dt.run_seed(cfg, texts, labels, 0, log=lambda s: None)
    assert [r["score"] for r in rows] == list(cfg.scores)
    assert not any(r["reused"] for r in rows)  # every score really refits
    assert all(r["removed"] == 0 for r in rows)
    assert len({r["kept_sha256"] for r in rows}) == 1
    for m in ("recall_spam", "f1_ham", "macro_f1", "acc_ham"):
        assert len({r[m] for r in rows}) == 1, m
    assert rows[0]["recall_spam"] > 0.5


def test_selective_scores_halve_recall_no_later_than_random(smoke):
    _, res = smoke
    t = res["targets"]["half"]["fraction"]
    assert t["random"] is not None
    for name in ("cos_mu2", "lr_cos", "knn_ratio"):
        assert t[name] is not None and t[name] <= t["random"], (name, t)
    # and at half the spam deleted, lr-cos has forgotten more than random
    by = {(a["score"], a["fraction"]): a for a in res["aggregate"]}
    assert (
        by[("lr_cos", 0.5)]["recall_spam"]["mean"]
        < by[("random", 0.5)]["recall_spam"]["mean"]
    )


def test_missing_sms_file_exits_with_url(dt, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        dt.main(["--config", "sms", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error:")
    assert dt.SMS_URL in err and "SMSSpamCollection" in err
    with pytest.raises(SystemExit) as e:
        dt.main(
            [
                "--config",
                "sms",
                "--sms-path",
                str(tmp_path / "nope"),
                "--workdir",
                str(tmp_path),
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and dt.SMS_URL in err and "download" in err
    with pytest.raises(dt.MissingDataError, match="archive.ics.uci.edu"):
        dt.load_sms(None)


def test_sms_file_format(dt, tmp_path):
    texts, labels = dt.generate_corpus(120, 30, seed=1)
    path = tmp_path / "SMSSpamCollection"
    path.write_text(
        "".join(
            f"{'spam' if y else 'ham'}\t{t}\n"
            for t, y in zip(texts, labels, strict=True)
        )
    )
    t2, y2 = dt.load_sms(str(path))
    assert t2 == texts and np.array_equal(y2, labels)
    cfg = dataclasses.replace(
        dt.get_config("sms"),
        sms_path=str(path),
        seeds=(0,),
        fractions=(0.0, 1.0),
        scores=("lr_cos", "random"),
    )
    res = dt.run(cfg, str(tmp_path / "work"), log=lambda s: None)
    assert res["data"]["synthetic"] is False
    assert "SYNTHETIC" not in (tmp_path / "work" / "report.md").read_text()
    bad = tmp_path / "bad"
    bad.write_text("spam\tok\nnotalabel\tx\n")
    with pytest.raises(ValueError, match="bad:2"):
        dt.load_sms(str(bad))
