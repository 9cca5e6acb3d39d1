"""The memory plan (``memjax train --plan``) against the state it describes, allocated."""

import jax
import pytest

from memjax import cli
from memjax.agents import DQNConfig
from memjax.train import TrainConfig, make_train
from memjax.train.plan import PARTS, nbytes, plan

SMALL = TrainConfig(
    num_envs=4,
    total_steps=2_000,
    learning_starts=400,
    buffer_capacity=1_000,
    batch_size=16,
    agent=DQNConfig(hidden=(32,)),
)


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(replay="prioritized", layout="one_copy"),
        dict(
            agent="drqn",
            sequence_length=8,
            sequence_period=4,
            burn_in=2,
            buffer_capacity=1_024,
            memory=16,
        ),
    ],
    ids=["dqn", "per-one-copy", "drqn"],
)
def test_plan_matches_the_allocated_state(settings):
    config = SMALL.replace(**settings)
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


@pytest.mark.parametrize("devices,data_parallel", [(1, False), (2, False), (2, True)])
def test_largest_capacity_fits_the_budget_and_one_more_does_not(devices, data_parallel):
    budget = 800_000  # bytes per device
    where = dict(num_seeds=2, devices=devices, data_parallel=data_parallel)
    capacity = plan(SMALL, budget_bytes=budget, **where)["largest_capacity"]
    assert capacity is not None and capacity > SMALL.batch_size
    fits = plan(SMALL.replace(buffer_capacity=capacity), **where)
    over = plan(SMALL.replace(buffer_capacity=capacity + 1), **where)
    assert fits["bytes_per_device"] <= budget < over["bytes_per_device"]


def test_plan_per_device_when_sharded_or_data_parallel():
    one = plan(SMALL, num_seeds=4, devices=1)
    sharded = plan(SMALL, num_seeds=4, devices=4)
    assert sharded["total_bytes"] == one["total_bytes"] == 4 * sharded["bytes_per_device"]
    # data parallel: every device holds every seed's state (its own buffer shard, envs)
    dp = plan(SMALL, num_seeds=4, devices=2, data_parallel=True)
    assert (
        dp["bytes_per_device"] == one["total_bytes"] and dp["total_bytes"] == 2 * one["total_bytes"]
    )
    assert dp["bytes_by_part"]["params"] == 2 * one["bytes_by_part"]["params"]
    with pytest.raises(ValueError, match="--seeds 3 must be a multiple of the 2 devices"):
        plan(SMALL, num_seeds=3, devices=2)


def test_cli_plan_prints_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "train",
                "--plan",
                "--seeds",
                "2",
                "--capacity",
                "1000",
                "--device-budget",
                "4MB",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "memory plan: 2 seeds sharded over 1 device(s)" in text and "replay" in text
    assert "largest replay capacity" in text and "per device" in text
    assert not out.exists()
