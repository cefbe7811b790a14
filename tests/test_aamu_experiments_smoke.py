"""Smoke runs of the A-AMU drivers (single round with Blend, multi-round)."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "experiments", f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_claims(claims):
    for c in claims:
        assert set(c) >= {"id", "text", "paper", "ours", "threshold", "holds"}


@pytest.mark.parametrize("driver", ["aamu_single_round", "aamu_multi_round"])
def test_aamu_driver_smoke_and_resume(driver, tmp_path):
    mod = _load(driver)
    cfg = mod.get_config("smoke")
    res = mod.run(cfg, str(tmp_path), log=lambda s: None)
    for f in ("results.json", "report.md", "config.json", "manifest.json"):
        assert (tmp_path / f).exists(), f
    saved = json.load(open(tmp_path / "results.json"))
    _check_claims(saved["claims"])
    rows = res["rows"]
    if driver == "aamu_single_round":
        names = {(r["method"], r["blend"]) for r in rows}
        assert names == {
            ("original", False),
            ("cf", False),
            ("a_cf", False),
            ("a_cf", True),
        }
        blended = next(r for r in rows if r["blend"])
        # the Blend-reduced set is smaller than the real retain set, and its
        # condensation time is recorded apart from the unlearning time
        assert blended["reduced"] < blended["retain"]
        assert blended["condense_s"] > 0 and blended["time"] > 0
        assert {c["id"] for c in saved["claims"]} >= {
            "a_cf_test_acc_class",
            "a_cf_speedup_class",
            "blend_reduction",
        }
    else:
        assert {(r["method"], r["blend"]) for r in rows} == {
            ("a_cf", False),
            ("a_cf", True),
        }
        for r in rows:
            assert [x["round"] for x in r["rounds"]] == [0, 1]
            # cumulative forget sets grow, retain sets shrink
            assert r["rounds"][1]["forget_total"] > r["rounds"][0]["forget_total"]
            if r["blend"]:
                assert all(x["condense_time"] > 0 for x in r["rounds"])
                assert r["cluster_s"] > 0
    again = mod.run(cfg, str(tmp_path), log=lambda s: None)
    assert again["rows_computed"] == []
    assert mod.rebuild_report(str(tmp_path))["rows_computed"] == []
