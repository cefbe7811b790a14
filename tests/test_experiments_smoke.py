import dataclasses
import importlib.util
import json
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "experiments", f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_train_smoke(tmp_path):
    mod = _load("bench_train")
    out = tmp_path / "bench.json"
    res = mod.main(["--smoke", "--out", str(out)])
    saved = json.load(open(out))
    assert saved["cases"] == json.loads(json.dumps(res["cases"]))
    assert [c["case"] for c in res["cases"]] == [
        "mlp_digits",
        "cnn_28x28",
        "resnet18_32x32",
    ]
    for c in res["cases"]:
        for k in (
            "step_compile_s",
            "step_per_s",
            "scan_epoch_compile_s",
            "scan_epoch_s",
            "loop_epoch_s",
            "host_loop_epoch_s",
            "loop_epoch_compile_s",
        ):
            assert c[k] > 0, (c["case"], k)


def test_bench_eval_smoke(tmp_path):
    mod = _load("bench_eval")
    out = tmp_path / "bench.json"
    res = mod.main(["--smoke", "--out", str(out)])
    assert json.load(open(out))["benchmark"] == "bench_eval"
    st = res["shadow_training"]
    assert set(st) == {"vmapped", "scan_loop", "step_loop"}
    # the three ways of training give the same models
    assert st["scan_loop"]["max_abs_logit_diff_vs_vmapped"] < 1e-3
    assert st["step_loop"]["max_abs_logit_diff_vs_vmapped"] < 1e-3
    assert res["lira_scoring"]["run_s"] > 0


@pytest.fixture(scope="module")
def rwft_run(tmp_path_factory):
    """One smoke run of the RWFT driver, shared by the tests below."""
    mod = _load("rwft_class_unlearning")
    workdir = tmp_path_factory.mktemp("rwft")
    res = mod.main(["--config", "smoke", "--workdir", str(workdir)])
    return mod, workdir, res


def _copy(src, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


CLAIM_FIELDS = {"id", "text", "paper", "ours", "threshold", "holds", "evidence"}


def _check_claims(claims):
    assert isinstance(claims, list) and claims
    for c in claims:
        assert set(c) == CLAIM_FIELDS, c
        assert c["holds"] in (True, False, None)
        assert isinstance(c["evidence"], list) and c["evidence"]


def test_rwft_class_unlearning_smoke(rwft_run):
    mod, workdir, res = rwft_run
    for f in (
        "results.json",
        "report.md",
        "config.json",
        "manifest.json",
        "metrics.jsonl",
        "confusion.png",
    ):
        assert (workdir / f).exists(), f
    methods = {r["method"] for r in res["rows"]}
    assert {"original", "retrain", "rwft_o", "rwft_2_o", "rw_a", "svd"} <= methods
    # --report-only re-renders from results.json without training.
    (workdir / "report.md").unlink()
    again = mod.main(["--workdir", str(workdir), "--report-only"])
    assert (workdir / "report.md").exists()
    assert again["claims"] == json.loads(json.dumps(res["claims"]))
    assert res["ulira"] and res["multi_class"]
    # every RWFT variant forgets the class completely, as in the paper
    for r in res["rows"]:
        if r["method"].startswith("rw"):
            assert r["acc_test_forget"] == 0.0, r["method"]
    # BatchNorm ablation: rwft_o / rwft_2_o with bn="eval" on the smoke class
    bn = res["bn_ablation"]
    assert bn["classes"] == [0]
    assert {(r["method"], r["bn"]) for r in bn["rows"]} == {
        ("rwft_o", "eval"),
        ("rwft_2_o", "eval"),
    }
    assert {r["method"] for r in res["bn_ablation_table"]} == {
        "rwft_o bn=train",
        "rwft_o bn=eval",
        "rwft_2_o bn=train",
        "rwft_2_o bn=eval",
    }
    assert "BatchNorm ablation" in (workdir / "report.md").read_text()
    agg = {a["method"]: a for a in res["aggregate"]}
    assert "drop_vs_retrain" in agg["rwft_o"]


def test_rwft_claims_are_records(rwft_run):
    _, workdir, res = rwft_run
    claims = json.load(open(workdir / "results.json"))["claims"]
    _check_claims(claims)
    ids = {c["id"] for c in claims}
    assert {
        "acc_f_zero",
        "acc_r_rwft_o",
        "acc_r_rwft_2_o",
        "acc_r_rw_a",
        "utv_below_baselines",
        "mia_nn_rwft_2_o",
        "ulira_rwft_2_o_below_ft",
        "speed_10x",
    } <= ids
    speed = next(c for c in claims if c["id"] == "speed_10x")
    assert speed["threshold"] == ">= 10"


def test_rwft_rerun_recomputes_nothing(rwft_run, tmp_path):
    mod, workdir, _ = rwft_run
    res = mod.run(mod.get_config("smoke"), str(_copy(workdir, tmp_path)))
    assert res["rows_computed"] == []
    assert res["rows_resumed"]


def test_rwft_new_seed_computes_only_its_rows(rwft_run, tmp_path):
    mod, workdir, _ = rwft_run
    cfg = mod.get_config("smoke")
    cfg.seeds = (0, 1)
    res = mod.run(cfg, str(_copy(workdir, tmp_path)))
    assert res["rows_computed"]
    assert all("s1_" in n for n in res["rows_computed"]), res["rows_computed"]
    assert not any("s1_" in n for n in res["rows_resumed"])


def test_rwft_batch_size_invalidates_rows(rwft_run, tmp_path):
    mod, workdir, _ = rwft_run
    cfg = mod.get_config("smoke")
    cfg.batch_size = 32
    cfg.methods = {k: cfg.methods[k] for k in ("rwft_o",)}
    cfg.bn_ablation_methods = ()
    res = mod.run(cfg, str(_copy(workdir, tmp_path)))
    # rows that unlearn are recomputed; the reference rows do not depend on it
    assert set(res["rows_computed"]) == {
        "s0_c0_rwft_o",
        "ulira_s0_c0_rwft_o",
        "multi_s0_c0-1_rwft_o",
    }
    assert "s0_c0_reference" in res["rows_resumed"]


def test_rwft_cli_errors_exit_2(capsys):
    mod = _load("rwft_class_unlearning")
    for argv in (["--config", "nope"], ["--classes", "a,b"]):
        with pytest.raises(SystemExit) as e:
            mod.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err


def test_distributional_gaussians_smoke(tmp_path):
    mod = _load("distributional_gaussians")
    res = mod.main(["--config", "smoke", "--workdir", str(tmp_path)])
    for f in ("results.json", "report.md", "frontier.png", "removal.png"):
        assert (tmp_path / f).exists(), f
    saved = json.load(open(tmp_path / "results.json"))
    assert set(saved["removal"]) == {"low", "high"}
    for regime in ("low", "high"):
        r = res["removal"][regime]
        # Deleting nothing: every score gives the same refit.
        first = {s: [a[0] for a in v["alpha"]] for s, v in r["scores"].items()}
        assert len({tuple(v) for v in first.values()}) == 1
        # Deleting everything: q is fit on p2 alone, removal ~ Delta.
        last = [a[-1] for a in r["scores"]["random"]["alpha"]]
        assert abs(sum(last) / len(last) - r["delta"]) < 0.5 * r["delta"] + 0.05
        s = r["savings"]
        assert s["selective_pct"] < s["random_pct"]
    # The lower envelope of estimated pairs sits on the closed form at
    # alpha <= Delta (eps ~ 0), and the bounds held in every smoke draw.
    for c in res["frontier"]["curves"]:
        assert c["max_eps_below_threshold"] < 1e-3
    for r in res["removal"].values():
        assert min(r["bound_held_fraction"].values()) >= 0.95


@pytest.fixture(scope="module")
def images_run(tmp_path_factory):
    mod = _load("distributional_images")
    workdir = tmp_path_factory.mktemp("images")
    res = mod.main(["--config", "smoke", "--workdir", str(workdir)])
    return mod, workdir, res


def test_distributional_images_smoke(images_run):
    mod, tmp_path, res = images_run
    for f in (
        "results.json",
        "report.md",
        "accuracy.png",
        "config.json",
        "manifest.json",
        "metrics.jsonl",
    ):
        assert (tmp_path / f).exists(), f
    rows = res["rows"]
    # 0% and 100% are shared by every score; the middle fraction once per score.
    assert {r["score"] for r in rows} == {
        "all",
        "random",
        "lr_maha",
        "lr_maha_sq",
        "knn_ratio",
    }
    pool = {r["kept_count"] + r["removed_count"] for r in rows}
    assert len(pool) == 1  # every model trains on a subset of one pool
    for r in rows:
        expected = int(r["fraction"] * r["forget_size"] + 0.5)
        assert r["removed_count"] == expected
    full = [r for r in rows if r["fraction"] == 1.0]
    assert full[0]["acc_forget"] == 0.0  # never saw the class
    none = [r for r in rows if r["fraction"] == 0.0]
    assert none[0]["acc_forget"] > 0.5
    assert {"lr_maha", "lr_maha_sq"} <= set(res["halving_fraction"])
    report = (tmp_path / "report.md").read_text()
    assert "| lr_maha_sq |" in report


def test_images_claims_are_records(images_run):
    _, workdir, _ = images_run
    claims = json.load(open(workdir / "results.json"))["claims"]
    _check_claims(claims)
    ids = {c["id"] for c in claims}
    assert {
        "lr_maha_fewer_than_random",
        "lr_maha_saving",
        "lr_maha_sq_fewer_than_random",
        "other_class_stable",
    } <= ids


def test_images_rerun_recomputes_nothing(images_run, tmp_path):
    mod, workdir, res = images_run
    again = mod.run(mod.get_config("smoke"), str(_copy(workdir, tmp_path)))
    assert again["rows_computed"] == [] and again["rows_resumed"] == ["seed0"]
    assert again["rows"] == json.loads(json.dumps(res["rows"]))


def test_images_new_seed_computes_only_its_row(images_run, tmp_path):
    mod, workdir, _ = images_run
    cfg = mod.get_config("smoke")
    cfg.seeds = (0, 1)
    res = mod.run(cfg, str(_copy(workdir, tmp_path)))
    assert res["rows_computed"] == ["seed1"] and res["rows_resumed"] == ["seed0"]


def test_images_batch_size_invalidates_rows(images_run, tmp_path):
    mod, workdir, _ = images_run
    cfg = mod.get_config("smoke")
    cfg.training = dataclasses.replace(cfg.training, batch_size=32)
    res = mod.run(cfg, str(_copy(workdir, tmp_path)))
    assert res["rows_computed"] == ["seed0"]


def test_bench_dlfd_smoke(tmp_path):
    mod = _load("bench_dlfd")
    out = tmp_path / "bench.json"
    res = mod.main(["--smoke", "--out", str(out)])
    assert json.load(open(out))["benchmark"] == "bench_dlfd"
    step = res["step"]
    for case in (
        "finetune",
        "dlfd",
        "dlfd_rolled",
        "dlfd_with_monitor",
        "dlfd_with_monitor_select",
    ):
        assert step[case]["run_s"] > 0 and step[case]["compile_s"] >= 0
    assert step["dlfd_over_finetune"] > 1  # M extra passes cost something
    assert {(r["n"], r["d"]) for r in res["sinkhorn"]} == {(8, 4)}


@pytest.fixture(scope="module")
def dlfd_run(tmp_path_factory):
    """One smoke run of the DLFD driver, shared by the tests below."""
    mod = _load("dlfd_instance_unlearning")
    workdir = tmp_path_factory.mktemp("dlfd")
    res = mod.main(["--config", "smoke", "--workdir", str(workdir)])
    return mod, workdir, res


def test_dlfd_instance_unlearning_smoke(dlfd_run):
    mod, workdir, res = dlfd_run
    for f in (
        "results.json",
        "report.md",
        "config.json",
        "manifest.json",
        "metrics.jsonl",
        "losses_group.png",
        "embedding_group.png",
    ):
        assert (workdir / f).exists(), f
    cfg = mod.get_config("smoke")
    assert {r["method"] for r in res["rows"]} == set(cfg.rows)
    for r in res["rows"]:
        if r["flag"] is None:
            assert 0.0 <= r["nomus"] <= 1.0
            # NoMUS is the paper's formula of the row's own numbers
            assert (
                abs(r["nomus"] - (r["acc_test"] + 1 - r["forgetting_score"]) / 2) < 1e-9
            )
    rows = {r["method"]: r for r in res["rows"]}
    assert rows["dlfd_code"]["ot_grad_norm"] == 0.0
    assert rows["dlfd_cls"]["ot_grad_norm"] > 0.0
    assert rows["dlfd_cls"]["perturbed"] == 1.0  # no dynamic forgetting
    _check_claims(res["claims"])
    ids = {c["id"] for c in res["claims"]}
    assert {
        "group_dlfd_nomus_above_baselines",
        "group_code_variant_ot_gradient_zero",
        "group_neggrad_leak",
        "group_correlation_collapse",
    } <= ids
    assert res["leak"] and res["leak"][0]["forget_size"] == cfg.leak_forget_size
    # --report-only re-renders from the finished rows without training.
    (workdir / "report.md").unlink()
    again = mod.main(["--workdir", str(workdir), "--report-only"])
    assert (workdir / "report.md").exists()
    assert again["claims"] == json.loads(json.dumps(res["claims"]))
    assert again["rows_computed"] == []


def test_dlfd_new_seed_computes_only_its_rows(dlfd_run, tmp_path):
    mod, workdir, res = dlfd_run
    run = _copy(workdir, tmp_path)
    cfg = mod.get_config("smoke")
    cfg = dataclasses.replace(cfg, rows=("original", "finetune"))
    again = mod.run(cfg, str(run), log=lambda s: None)
    assert again["rows_computed"] == []
    cfg = dataclasses.replace(cfg, seeds=(0, 1))
    more = mod.run(cfg, str(run), log=lambda s: None)
    assert sorted(more["rows_computed"]) == [
        "group_seed1_finetune",
        "group_seed1_leak",
        "group_seed1_original",
    ] or sorted(more["rows_computed"]) == [
        "group_seed1_finetune",
        "group_seed1_original",
    ]


def test_dlfd_report_only_needs_a_finished_run(tmp_path):
    mod = _load("dlfd_instance_unlearning")
    with pytest.raises(SystemExit) as e:
        mod.main(["--workdir", str(tmp_path / "none"), "--report-only"])
    assert e.value.code == 2


def test_bench_aamu_quick(tmp_path):
    mod = _load("bench_aamu")
    out = tmp_path / "bench.json"
    res = mod.main(["--quick", "--out", str(out)])
    saved = json.load(open(out))
    assert saved["benchmark"] == "bench_aamu" and saved["quick"]
    step = res["step"]
    for case in ("cf", "a_cf"):
        assert step[case]["run_s"] > 0 and step[case]["compile_s"] >= 0
    assert step["a_cf_over_cf"] == step["a_cf"]["run_s"] / step["cf"]["run_s"]
    assert [r["sample_factor"] for r in res["sample_factor"]] == [1]
    assert all(r["gaussian_mmd2"]["run_s"] > 0 for r in res["mmd"])
    e2e = res["end_to_end"]
    assert e2e["estimated"] and e2e["cf_epochs"] == 50 and e2e["a_cf_epochs"] == 1
    assert e2e["speedup"] == pytest.approx(e2e["cf_s"] / e2e["a_cf_s"])
