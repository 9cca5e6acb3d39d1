"""Smoke test of experiments/bench_sequence.py: the quick mode, in-process (compiles dominate)."""

import json

import pytest

pytest.importorskip("flashbax", reason="flashbax (the benchmark peer) is not installed")


@pytest.fixture
def bench(load_experiment):
    return load_experiment("bench_sequence")


def test_quick_writes_json_and_table(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--rounds", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### sample" in printed and "### per" in printed and "targets:" in printed

    doc = json.loads(out.read_text())
    for key in ("machine", "settings", "notes", "targets", "add", "sample", "per", "memory"):
        assert key in doc, key
    sides = {
        "add": ("ours", "flashbax", "bare"),
        "sample": ("ours", "flashbax", "floor"),
        "per": ("ours", "flashbax_cpu", "flashbax_bincount"),
    }
    for section, names in sides.items():
        row = doc[section][0]
        for side in names:
            assert row["modes"]["call"]["times"][side]["median_us"] > 0
            program = row["programs"]["call"][side]
            assert program["compile_s"] > 0 and program["donation_ok"] is True
    assert doc["sample"][0]["modes"]["call"]["ours_over_floor"] > 0
    assert doc["per"][0]["modes"]["call"]["flashbax_best_over_ours"] > 0
    memory = doc["memory"][0]
    assert memory["lstm_ratio"] == pytest.approx(40.0) and memory[
        "lstm_ratio_bf16"
    ] == pytest.approx(80.0)
    assert memory["lstm_bytes_per_step"]["flashbax_lstm_every_step"] == 1024
    assert set(doc["targets"]) == {"call", "memory"}


def test_bad_only_is_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "--only" in capsys.readouterr().err
