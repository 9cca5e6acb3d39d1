"""Smoke test of experiments/bench_recurrent_bytes.py (eval_shape only, one small buffer
allocated)."""

import json

import pytest


@pytest.fixture
def bench(load_experiment):
    return load_experiment("bench_recurrent_bytes")


def test_gru_rows_and_json(bench, tmp_path, capsys):
    out = tmp_path / "bytes.json"
    assert bench.main(["--envs", "MemoryChain-20", "--cells", "gru", "--out", str(out)]) == 0
    assert "MET" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    f32, bf16 = doc["rows"]
    assert (f32["carry_dtype"], bf16["carry_dtype"]) == ("float32", "bfloat16")
    # 64 float32 units: 256 B at every step; once per 20-row window start: 12.8 B per step
    assert f32["state_bytes_per_step"]["every_step"] == 256
    assert f32["state_bytes_per_step"]["ours"] == pytest.approx(256 / 20)
    assert bf16["state_bytes_per_step"]["ours"] == pytest.approx(128 / 20)
    assert bf16["state_every_step_float32_over_ours"] == pytest.approx(40.0)
    # R2D2: the state once per 40 new steps, but every step stored twice
    assert f32["state_bytes_per_step"]["r2d2"] == pytest.approx(256 / 40)
    assert f32["all_bytes_per_step"]["r2d2"] > f32["all_bytes_per_step"]["ours_80_40"]
    assert doc["allocated_check"]["equal"] is True
    assert doc["targets"]["state_every_step_over_ours_min"]["met"] is True
