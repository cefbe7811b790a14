import importlib.util
import json
import os

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


def test_rwft_class_unlearning_smoke(tmp_path):
    mod = _load("rwft_class_unlearning")
    res = mod.main(["--config", "smoke", "--workdir", str(tmp_path)])
    for f in ("results.json", "report.md", "config.json", "confusion.png"):
        assert (tmp_path / f).exists(), f
    methods = {r["method"] for r in res["rows"]}
    assert {"original", "retrain", "rwft_o", "rwft_2_o", "rw_a", "svd"} <= methods
    # --report-only re-renders from results.json without training.
    (tmp_path / "report.md").unlink()
    again = mod.main(["--workdir", str(tmp_path), "--report-only"])
    assert (tmp_path / "report.md").exists()
    assert again["checks"] == json.loads(json.dumps(res["checks"]))
    assert res["ulira"] and res["multi_class"]
    assert all(isinstance(c["holds"], bool) for c in res["checks"])
    # every RWFT variant forgets the class completely, as in the paper
    for r in res["rows"]:
        if r["method"].startswith("rw"):
            assert r["acc_test_forget"] == 0.0, r["method"]


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


def test_distributional_images_smoke(tmp_path):
    mod = _load("distributional_images")
    res = mod.main(["--config", "smoke", "--workdir", str(tmp_path)])
    for f in ("results.json", "report.md", "accuracy.png"):
        assert (tmp_path / f).exists(), f
    rows = res["rows"]
    # 0% and 100% are shared by every score; the middle fraction once per score.
    assert {r["score"] for r in rows} == {"all", "random", "lr_maha", "knn_ratio"}
    pool = {r["kept_count"] + r["removed_count"] for r in rows}
    assert len(pool) == 1  # every model trains on a subset of one pool
    for r in rows:
        expected = int(r["fraction"] * r["forget_size"] + 0.5)
        assert r["removed_count"] == expected
    full = [r for r in rows if r["fraction"] == 1.0]
    assert full[0]["acc_forget"] == 0.0  # never saw the class
    none = [r for r in rows if r["fraction"] == 0.0]
    assert none[0]["acc_forget"] > 0.5
    # Resuming reuses the finished seed's rows.
    again = mod.main(["--config", "smoke", "--workdir", str(tmp_path)])
    assert again["rows"] == json.loads(json.dumps(rows))
