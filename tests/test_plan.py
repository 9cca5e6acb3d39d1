"""The memory plan (``memjax train --plan``) against the state it describes, allocated."""

import dataclasses

import jax
import pytest

from memjax import cli
from memjax.train import TrainConfig, make_train
from memjax.train.plan import PARTS, nbytes, plan

SMALL = TrainConfig(num_envs=4, total_steps=2_000, learning_starts=400, buffer_capacity=1_000,
                    batch_size=16, hidden=(32,))


@pytest.mark.parametrize("settings", [dict(), dict(replay="prioritized", layout="one_copy"),
                                      dict(agent="drqn", sequence_length=8, sequence_period=4,
                                           burn_in=2, buffer_capacity=1_024, memory=16)],
                         ids=["dqn", "per-one-copy", "drqn"])
def test_plan_matches_the_allocated_state(settings):
    config = dataclasses.replace(SMALL, **settings)
    result = plan(config, num_seeds=3)
    state = jax.vmap(make_train(config).init)(jax.random.split(jax.random.key(0), 3))
    parts = result["bytes_by_part"]
    assert list(parts) == list(PARTS)
    assert result["total_bytes"] == sum(parts.values()) == nbytes(state)
    assert parts["params"] == nbytes(state.agent.params) > 0
    assert parts["optimizer"] == nbytes(state.agent.opt_state)
    assert parts["replay"] == nbytes(state.buffer)
    assert parts["carry"] == nbytes(state.carry)
    assert (parts["carry"] > 0) == (config.agent == "drqn")
    assert sum(result["replay_by_field"].values()) <= parts["replay"]
    assert result["bytes_per_seed"] == pytest.approx(result["total_bytes"] / 3)


def test_largest_capacity_fits_the_budget_and_one_more_does_not():
    budget = 400_000                                             # bytes per seed
    capacity = plan(SMALL, num_seeds=2, budget_bytes=budget)["largest_capacity"]
    assert capacity is not None and capacity > SMALL.batch_size
    fits = plan(dataclasses.replace(SMALL, buffer_capacity=capacity), num_seeds=2)
    over = plan(dataclasses.replace(SMALL, buffer_capacity=capacity + 1), num_seeds=2)
    assert fits["bytes_per_seed"] <= budget < over["bytes_per_seed"]


def test_cli_plan_prints_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--plan", "--seeds", "2", "--capacity", "1000",
                     "--device-budget", "4MB", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "memory plan: 2 seeds" in text and "replay" in text and "largest replay capacity" in text
    assert not out.exists()
