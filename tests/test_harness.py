"""The run harness: one resume rule, atomic rows, metrics without duplicates, claims."""

import ast
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxunlearn import harness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class ToyConfig:
    batch_size: int = 8
    epochs: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("a", "b")


class Interrupt(Exception):
    pass


def toy_driver(cfg, workdir, *, calls=None, fail_at=None):
    """A driver in the harness's shape: config, loop over rows, results."""
    run = harness.RunDir(workdir, cfg)
    rows = []
    for seed in cfg.seeds:
        for method in cfg.methods:
            name = f"seed{seed}_{method}"

            def compute(seed=seed, method=method, name=name):
                rng = np.random.default_rng([seed, cfg.batch_size, ord(method)])
                for epoch in range(cfg.epochs):
                    loss = float(rng.random())
                    run.log_metrics(name, {"epoch": epoch, "loss": loss})
                    if (seed, method, epoch) == fail_at:
                        raise Interrupt(name)
                if calls is not None:
                    calls.append(name)
                return {"seed": seed, "method": method, "loss": loss}

            fields = run.fields(exclude=("seeds", "methods"), seed=seed, method=method)
            rows.append(run.row(name, fields, compute))
    run.write_results({"rows": rows})
    return run, rows


def test_row_key_tracks_row_fields_not_loop_lists(tmp_path):
    run = harness.RunDir(str(tmp_path / "a"), ToyConfig())
    key = run.row_key(run.fields(exclude=("seeds", "methods"), seed=0, method="a"))
    more = harness.RunDir(str(tmp_path / "b"), ToyConfig(seeds=(0, 1, 2, 3)))
    assert key == more.row_key(
        more.fields(exclude=("seeds", "methods"), seed=0, method="a")
    )
    bs = harness.RunDir(str(tmp_path / "c"), ToyConfig(batch_size=16))
    assert key != bs.row_key(
        bs.fields(exclude=("seeds", "methods"), seed=0, method="a")
    )
    assert key != run.row_key(
        run.fields(exclude=("seeds", "methods"), seed=1, method="a")
    )


def test_adding_a_seed_recomputes_nothing_finished(tmp_path):
    calls = []
    toy_driver(ToyConfig(seeds=(0, 1)), str(tmp_path), calls=calls)
    assert len(calls) == 4
    calls.clear()
    run, rows = toy_driver(ToyConfig(seeds=(0, 1, 2)), str(tmp_path), calls=calls)
    assert calls == ["seed2_a", "seed2_b"]
    assert run.resumed == ["seed0_a", "seed0_b", "seed1_a", "seed1_b"]
    assert len(rows) == 6


def test_changing_batch_size_invalidates_rows(tmp_path):
    calls = []
    toy_driver(ToyConfig(seeds=(0,)), str(tmp_path), calls=calls)
    calls.clear()
    run, _ = toy_driver(
        ToyConfig(seeds=(0,), batch_size=32), str(tmp_path), calls=calls
    )
    assert calls == ["seed0_a", "seed0_b"] and run.resumed == []


def test_interrupted_run_resumes_to_identical_results(tmp_path):
    clean = tmp_path / "clean"
    toy_driver(ToyConfig(), str(clean))
    broken = tmp_path / "broken"
    with pytest.raises(Interrupt):
        toy_driver(ToyConfig(), str(broken), fail_at=(1, "b", 1))
    calls = []
    run, _ = toy_driver(ToyConfig(), str(broken), calls=calls)
    assert calls == ["seed1_b", "seed2_a", "seed2_b"]
    assert (broken / "results.json").read_text() == (clean / "results.json").read_text()
    # metrics.jsonl keeps exactly one line per (row, epoch): the interrupted
    # attempt's lines were dropped when the row was recomputed
    recs = run.read_metrics()
    keys = [(r["row"], r["epoch"]) for r in recs]
    assert len(keys) == len(set(keys)) == 6 * 3
    clean_recs = harness.RunDir(str(clean), ToyConfig()).read_metrics()
    assert sorted(map(json.dumps, recs)) == sorted(map(json.dumps, clean_recs))


def test_truncated_row_file_is_rebuilt(tmp_path):
    calls = []
    _, rows = toy_driver(ToyConfig(seeds=(0,)), str(tmp_path), calls=calls)
    path = tmp_path / "rows" / "seed0_a.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    calls.clear()
    with pytest.warns(UserWarning, match="unreadable row"):
        run, again = toy_driver(ToyConfig(seeds=(0,)), str(tmp_path), calls=calls)
    assert calls == ["seed0_a"] and again == rows
    assert json.loads(path.read_text())["row"] == rows[0]


def test_rows_are_written_atomically(tmp_path):
    toy_driver(ToyConfig(seeds=(0,)), str(tmp_path))
    leftovers = [f for f in os.listdir(tmp_path / "rows") if f.startswith(".tmp")]
    assert leftovers == []


def test_row_variables_round_trip(tmp_path):
    run = harness.RunDir(str(tmp_path), {"x": 1})
    key = run.row_key({"x": 1})
    v = {"params": {"w": np.arange(3.0, dtype=np.float32)}}
    run.save_row("r", key, {"acc": 1.0}, variables=v)
    got = run.load_variables(key)
    np.testing.assert_array_equal(got["params"]["w"], v["params"]["w"])
    assert run.load_row("r", key) == {"acc": 1.0}
    assert run.load_row("r", "other") is None


def test_bad_row_name_is_rejected(tmp_path):
    run = harness.RunDir(str(tmp_path), {})
    with pytest.raises(ValueError, match="row name"):
        run.row("../x", {}, lambda: 1)


def test_manifest_and_report(tmp_path):
    run = harness.RunDir(str(tmp_path), ToyConfig())
    m = run.write_manifest({"split": "abc"})
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved == m and saved["split"] == "abc"
    assert {"config_hash", "versions", "device"} <= set(saved)
    assert json.loads((tmp_path / "config.json").read_text())["seeds"] == [0, 1, 2]
    run.write_report(["# t", "", "x"])
    assert (tmp_path / "report.md").read_text() == "# t\n\nx\n"


def test_claims_render_from_records():
    claims = [
        harness.Claim(
            "c1",
            "a beats b",
            paper=0.5,
            ours=0.61234,
            threshold=">= 0.5",
            holds=True,
            evidence=["results.json:rows"],
        ),
        harness.Claim("c2", "b fails", paper=None, ours=None, holds=None),
        harness.Claim("c3", "x | y", paper=3, ours=4, threshold=3, holds=np.bool_(0)),
    ]
    md = harness.render_claims(claims)
    lines = md.splitlines()
    assert len(lines) == 5
    assert "| c1: a beats b | 0.5 | 0.6123 | >= 0.5 | PASS | results.json:rows |" in md
    assert "n/a" in lines[3] and "FAIL" in lines[4] and "x \\| y" in lines[4]
    assert claims[2].holds is False
    back = [
        harness.Claim.from_json(json.loads(json.dumps(c.to_json()))) for c in claims
    ]
    assert back == claims


def test_fmt_and_flagged_table():
    assert harness.fmt(None) == "-"
    assert harness.fmt({"mean": 1.0, "std": float("nan"), "n": 1}, ".1f") == "1.0"
    assert harness.fmt(float("inf")) == "inf"
    assert harness.fmt(0.5, ".0f", scale=100, suffix="%") == "50%"
    rows = [
        {"method": "ok", "acc": 0.9},
        {"method": "bad", "acc": float("nan")},
        {"method": "flat", "acc": 0.1},
    ]
    for r in rows:
        r["flag"] = harness.row_flag(r, accuracy_key="acc", chance=0.1)
    md = harness.table(rows, [("ACC", "acc", ".3f"), ("none", "missing")])
    assert "none" not in md
    assert "| ok | 0.900 |" in md
    assert "| bad **diverged** | nan |" in md
    assert "| flat **collapsed** | 0.100 |" in md


def _imports(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            for a in node.names:
                yield f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name


def test_lower_layers_never_import_the_harness():
    pkg = os.path.join(ROOT, "jaxunlearn")
    bad = []
    for sub in ("train", "methods", "eval", "data", "models", "losses", "select"):
        p = os.path.join(pkg, sub)
        files = (
            [p]
            if p.endswith(".py")
            else [os.path.join(p, f) for f in os.listdir(p) if f.endswith(".py")]
        )
        for f in files:
            if any(m.startswith("jaxunlearn.harness") for m in _imports(f)):
                bad.append(f)
    assert bad == []


def test_harness_imports_no_plotting_or_progress():
    code = (
        "import sys, jaxunlearn.harness\n"
        "print(sorted(m for m in ('matplotlib', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
