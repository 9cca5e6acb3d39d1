"""TrainConfig.samples_per_insert: the loop's learner steps follow Reverb's SampleToInsertRatio
rate limiter (memjax.replay.sample_to_insert_ratio), as a static schedule shared by all seeds."""

import jax
import numpy as np
import pytest

import memjax as mj
from memjax.replay.rate_limiter import steady_schedule

BASE = mj.train.TrainConfig(
    total_steps=3_000,
    learning_starts=1_000,
    chunk_steps=1_000,
    batch_size=32,
    buffer_capacity=2_000,
    num_envs=10,
)


def count_updates(cfg):
    """Run the loop for 2 seeds and count the optimizer steps the agent took."""
    trainer = mj.train.make_train(cfg)
    state, metrics = jax.jit(jax.vmap(trainer))(jax.random.split(jax.random.key(0), 2))
    counts = [
        int(x) for x in np.asarray(jax.tree.leaves(state.agent.opt_state)[0]).reshape(2, -1)[:, 0]
    ]
    return counts, metrics


def test_schedule_follows_the_rate_limiter():
    cfg = BASE.replace(samples_per_insert=4.8)  # 48 samples per vector step = 1.5 batches
    cfg.validate()
    backlog, pattern = cfg.rate_schedule
    assert pattern == (1, 2) or pattern == (2, 1)
    assert cfg.iter_vec_steps == 2
    limiter = cfg.rate_limiter
    assert steady_schedule(limiter, 10, 32, 1000) == (backlog, pattern)
    assert cfg.total_updates == backlog + cfg.train_iters * 3
    assert cfg.steps_done == 3_000
    counts, metrics = count_updates(cfg)
    assert counts == [cfg.total_updates] * 2
    assert np.isfinite(np.asarray(metrics["train"]["loss"])).all()


def test_one_batch_per_vector_step_is_train_every_1_plus_the_backlog():
    cfg = BASE.replace(samples_per_insert=3.2)  # 32 per vector step
    backlog, pattern = cfg.rate_schedule
    assert pattern == (1,)
    assert cfg.total_updates == backlog + BASE.train_iters


def test_bad_rate_settings():
    with pytest.raises(ValueError, match="deadlock"):
        BASE.replace(samples_per_insert=3.2, rate_error_buffer=5.0).validate()
    with pytest.raises(ValueError, match="train_every"):
        BASE.replace(samples_per_insert=3.2, train_every=2).validate()
    with pytest.raises(ValueError, match="needs samples_per_insert"):
        BASE.replace(rate_error_buffer=5.0).validate()
