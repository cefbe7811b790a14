"""Smoke test of experiments/blend_condensation.py (digits, seconds)."""

import importlib.util
import json
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLAIM_FIELDS = {"id", "text", "paper", "ours", "threshold", "holds", "evidence"}


def _load():
    spec = importlib.util.spec_from_file_location(
        "blend_condensation", os.path.join(ROOT, "experiments", "blend_condensation.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_blend_condensation_smoke(tmp_path):
    mod = _load()
    workdir = tmp_path / "run"
    res = mod.main(["--config", "smoke", "--workdir", str(workdir)])
    cfg = mod.get_config("smoke")

    for f in ("results.json", "report.md", "config.json", "manifest.json"):
        assert (workdir / f).is_file(), f
    assert res["plots"] == ["blend_condensation.png"]
    assert (workdir / "blend_condensation.png").stat().st_size > 0
    report = (workdir / "report.md").read_text()
    assert "](blend_condensation.png)" in report and "## Claims" in report

    # Every (method, IPC) row, one per seed, with its timing and accuracy.
    want = {(m, i, s) for m in mod.METHODS for i in cfg.ipcs for s in cfg.seeds}
    got = {(r["method"], r["ipc"], r["seed"]) for r in res["rows"]}
    assert got == want
    for m, i, s in want:
        assert (workdir / "rows" / f"{m}_ipc{i}_seed{s}.json").is_file()
    for r in res["rows"]:
        assert 0.0 <= r["acc_test"] <= 1.0
        assert r["images"] == 10 * r["ipc"]
        assert r["condense_s"] >= 0.0
        if r["method"] == "dm":
            assert r["extrapolated_s"] > r["compile_s"]
        if r["method"] == "blend":
            assert r["clusters"] == 10 * r["ipc"]
    assert {(a["method"], a["ipc"]) for a in res["aggregate"]} == {
        (m, i) for m in mod.METHODS for i in cfg.ipcs
    }

    # Claims are records, in results.json as on return.
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["claims"] == res["claims"]
    ids = {c["id"] for c in res["claims"]}
    assert {"blend_vs_dm_acc_ipc2", "blend_seconds"} <= ids
    assert {f"blend_speedup_ipc{i}" for i in cfg.ipcs} <= ids
    assert {f"blend_vs_random_ipc{i}" for i in cfg.ipcs} <= ids
    for c in res["claims"]:
        assert set(c) == CLAIM_FIELDS, c
        assert c["holds"] in (True, False, None)
        assert isinstance(c["evidence"], list) and c["evidence"]

    # A resume computes nothing new.
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    again = mod.run(cfg, str(copy), log=lambda s: None)
    assert again["rows_computed"] == []
    assert len(again["rows_resumed"]) == len(want)
    assert again["rows"] == res["rows"]
