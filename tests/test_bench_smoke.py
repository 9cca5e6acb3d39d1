"""Smoke test of experiments/bench_replay.py: the quick mode's smallest config, in-process."""

import json

import pytest

pytest.importorskip("flashbax", reason="flashbax (the benchmark peer) is not installed")


@pytest.fixture
def bench(load_experiment):
    return load_experiment("bench_replay")


SMALLEST = [
    "--quick",
    "--rounds",
    "1",
    "--add-capacities",
    "1e4",
    "--add-batches",
    "8",
    "--shapes",
    "4",
    "--sample-capacities",
    "1e4",
    "--per-capacities",
    "65536",
]


def _check_row(row, mode, names, ratio_keys):
    m = row["modes"][mode]
    for side in names:
        assert m["times"][side]["min_us"] > 0
        prog = row["programs"][mode][side]
        assert prog["compile_s"] > 0 and prog["donation_ok"] is True
        assert prog["hlo"]["kernels"] > 0
    for r in ratio_keys:
        assert m[r] > 0


def test_quick_smallest_config_writes_json(bench, tmp_path, capsys):
    """All three sections, one op per dispatch (compiles dominate: about 10 s)."""
    out = tmp_path / "bench.json"
    rc = bench.main(SMALLEST + ["--out", str(out), "--modes", "call"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "uniform add" in printed and "PER sample+update" in printed and "targets" in printed

    doc = json.loads(out.read_text())
    for key in ("machine", "settings", "notes", "targets", "add", "sample", "per"):
        assert key in doc, key
    for key in ("jax_devices", "cpu_count", "platform", "jax_backend", "versions"):
        assert key in doc["machine"], key
    assert len(doc["add"]) == len(doc["sample"]) == len(doc["per"]) == 1

    sides = {
        "add": ("ours", "flashbax", "bare"),
        "sample": ("ours", "flashbax", "bare"),
        "per": ("ours", "flashbax_cpu", "flashbax_bincount"),
    }
    ratios = {
        "add": ("ours_over_bare", "flashbax_over_ours"),
        "sample": ("flashbax_over_ours", "ours_over_bare"),
        "per": ("flashbax_cpu_over_ours", "flashbax_bincount_over_ours", "flashbax_best_over_ours"),
    }
    for section, names in sides.items():
        _check_row(doc[section][0], "call", names, ratios[section])
    assert set(doc["targets"]) == {"call"}
    assert "add_within_1.2x_of_bare" in doc["targets"]["call"]
    assert "sample_1.3x_faster_than_flashbax" in doc["targets"]["call"]
    assert "65536" in doc["targets"]["call"]["per_10x_faster_than_flashbax_best"]


def test_quick_fused_mode(bench, tmp_path):
    """K ops per lax.scan: the add section is enough to exercise it."""
    out = tmp_path / "bench.json"
    assert bench.main(SMALLEST + ["--out", str(out), "--modes", "fused", "--only", "add"]) == 0
    doc = json.loads(out.read_text())
    row = doc["add"][0]
    _check_row(row, "fused", ("ours", "flashbax", "bare"), ("ours_over_bare", "flashbax_over_ours"))
    assert row["programs"]["fused"]["ours"]["ops_per_call"] > 1
    assert set(doc["targets"]) == {"fused"} and "sample" not in doc


def test_bad_only_is_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--only", "nope"])
    assert exc.value.code == 2
    assert "--only" in capsys.readouterr().err
