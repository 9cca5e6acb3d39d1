"""Smoke tests of experiments/bench_memnet_loop.py: the replay-free floor of a window agent."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import bench_memnet_loop as bench  # noqa: E402
from memjax.train import TrainConfig, make_train  # noqa: E402

CONFIG = TrainConfig(
    agent="drqn",
    env="MemoryChain-8",
    num_envs=2,
    buffer_capacity=400,
    batch_size=4,
    learning_starts=200,
    chunk_steps=4,
    total_steps=240,
).replace(hidden=(8,), memory=8, sequence_length=12, sequence_period=5, burn_in=2)


def test_the_floor_replays_one_drawn_batch_and_stores_nothing():
    """The floor's state is the batch DRQN's buffer drew from its filled state (the windows
    and their stored carries, per seed); add and update leave it as it is, every sample
    returns it, and the loop on it trains (the learner's loss is finite and changes the
    parameters)."""
    trainer = make_train(CONFIG)
    keys = jax.random.split(jax.random.key(0), 2)
    state = jax.vmap(lambda k: trainer.collect(trainer.init(k))[0])(keys)
    floor = bench.frozen_sample_buffer(trainer.buffer, CONFIG.batch_size)
    zeros = floor.init(trainer.example)
    frozen = bench.frozen_state(trainer, state, jax.random.key(7))
    size = CONFIG.batch_size
    want = jax.vmap(lambda b, k: trainer.buffer.sample(b, k, size))(
        state.buffer, jax.random.split(jax.random.key(7), 2)
    )
    one = jax.tree.map(lambda x: x[0], frozen.buffer)
    assert jax.tree.structure(zeros) == jax.tree.structure(one)
    for a, b in zip(jax.tree.leaves(zeros), jax.tree.leaves(one)):
        assert a.shape == b.shape and a.dtype == b.dtype and not np.any(np.asarray(a))
    jax.tree.map(np.testing.assert_array_equal, frozen.buffer, want)
    assert one.items["carry"].shape == (size, 8)  # the stored state, per window
    assert (
        floor.add(one, trainer.example) is one
        and floor.update(one, one.indices, one.weights) is one
    )
    assert floor.sample(one, jax.random.key(1), size) is one
    with pytest.raises(ValueError, match="holds a batch of 4, asked 8"):
        floor.sample(one, jax.random.key(1), 8)

    floor_trainer = bench.dataclasses.replace(trainer, buffer=floor)
    after, metrics = jax.vmap(floor_trainer.chunk)(frozen)
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))
    jax.tree.map(np.testing.assert_array_equal, after.buffer, frozen.buffer)
    moved = jax.tree.map(
        lambda a, b: np.any(np.asarray(a) != np.asarray(b)), after.agent, state.agent
    )
    assert any(jax.tree.leaves(moved.params))


def test_floors_must_be_timed_sides(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--sides", "drqn", "--floors", "ntm"])
    assert "--floors: ['ntm'] not among --sides drqn" in capsys.readouterr().err
