"""Smoke test of experiments/bench_own_loop.py (the docs' own-loop DQN, memjax vs flashbax)."""

import json

import pytest

pytest.importorskip("flashbax", reason="flashbax (the benchmark peer) is not installed")
pytest.importorskip("gymnax", reason="the loop steps gymnax's CartPole-v1")


def test_quick_writes_json(load_experiment, tmp_path, capsys):
    bench = load_experiment("bench_own_loop")
    out = tmp_path / "own_loop.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    assert "--- 2 seeds" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["rounds"] == 2 and doc["chunk_steps"] == 5
    for seeds in ("1", "2"):
        row = doc["results"][seeds]
        assert row["load_average_1m"] >= 0
        assert row["flashbax"]["over_flashbax"] == 1.0
        for side in ("ours", "ours_one_copy", "flashbax"):
            assert row[side]["median_us_per_step"] > 0 and row[side]["compile_s"] > 0
            lo, hi = row[side]["over_flashbax_range"]
            assert lo <= row[side]["over_flashbax"] <= hi
