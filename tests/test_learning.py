"""DQN learns: short fixed-seed CartPole-v1 runs through the whole loop must beat the random
policy (about 22) by far.

On this configuration (4 seeds x 5e4 env steps, about 7 s on 2 CPU cores) the correct update
reaches a mean greedy return of 250-326 over base keys 0, 1 and 2 (lowest seed 154); with
prioritized replay and 3-step targets 389-433 (lowest seed 290). The 1-step runs with the
update's sign flipped (gradient ascent) end at 9.1-9.6, without bootstrapping at 20-25, and
with termination ignored in the target at 9.1-9.4, so a broken update or target fails here.
"""

import jax
import numpy as np
import pytest

from memjax.agents import DQNConfig, DRQNConfig
from memjax.train import TrainConfig, make_train

QUICK_CARTPOLE = TrainConfig(
    total_steps=50_000,
    learning_starts=1_000,
    eps_decay_steps=20_000,
    buffer_capacity=10_000,
    batch_size=64,
    lr=1e-3,
    chunk_steps=50_000,
    eval_episodes=10,
    agent=DQNConfig(hidden=(64, 64)),
)


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(replay="prioritized", n_step=3)],
    ids=["dqn-uniform", "dqn-per-3-step"],
)
def test_dqn_learns_cartpole(settings):
    trainer = make_train(QUICK_CARTPOLE.replace(**settings))
    _, metrics = jax.jit(jax.vmap(trainer))(jax.random.split(jax.random.key(0), 4))
    per_seed = np.asarray(metrics["eval_return"]).mean(axis=1)
    assert per_seed.mean() >= 150, per_seed
    assert np.sum(per_seed >= 100) >= 3, per_seed


# A memory task: MemoryChain-8 shows its context bit only at the start; the reward at the end
# is +1 for the action that matches it, -1 otherwise. A feedforward DQN cannot do better than
# chance (0); DRQN with these settings reaches 1.0 on both seeds in 1e4 env steps.
QUICK_MEMORY = TrainConfig(
    env="MemoryChain-8",
    total_steps=10_000,
    num_envs=8,
    buffer_capacity=4096,
    batch_size=16,
    learning_starts=2_000,
    eps_decay_steps=5_000,
    target_update_every=500,
    lr=1e-3,
    chunk_steps=10_000,
    eval_episodes=20,
    agent=DRQNConfig(sequence_length=16, sequence_period=8, burn_in=2, hidden=(64,), memory=32),
)


def test_drqn_learns_a_memory_task_that_dqn_cannot():
    returns = {}
    for agent in ("drqn", "dqn"):
        trainer = make_train(QUICK_MEMORY.replace(agent=agent))
        _, metrics = jax.jit(jax.vmap(trainer))(jax.random.split(jax.random.key(0), 2))
        returns[agent] = np.asarray(metrics["eval_return"]).mean(axis=1)
    assert np.all(returns["drqn"] >= 0.8), returns
    assert np.all(np.abs(returns["dqn"]) <= 0.5), returns  # chance is 0
