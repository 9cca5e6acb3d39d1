"""experiments/study_continual.py's pieces (the whole study compiles five training programs,
too long for the suite): its task schedule against the environment's own switches, its
settings checks, and the mixer's phases (``memjax.replay.mixer.as_buffer``)."""

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax.replay.mixer import as_buffer

PATH = Path(__file__).resolve().parent.parent / "experiments" / "study_continual.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_continual", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_schedule_matches_the_environment(study):
    s = study.Settings(tasks=("default", "long", "reversed"), steps_per_task=8, num_envs=2)
    env, params = mj.envs.make(study.config_for(s, "fifo").env)
    assert env.switch_every == 4 and env.names == s.tasks
    vec_steps = 30
    _, state = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(jax.random.key(0), 2), params
    )

    def body(state, key):
        _, state, _, _, _, info = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            jax.random.split(key, 2), state, jnp.zeros(2, jnp.int32), params
        )
        return state, info["task"]

    _, tasks = jax.lax.scan(body, state, jax.random.split(jax.random.key(1), vec_steps))
    want = [study.task_at(v * s.num_envs, s) for v in range(vec_steps)]
    np.testing.assert_array_equal(np.asarray(tasks), np.stack([want, want], axis=1))
    assert want[:9] == [0, 0, 0, 0, 1, 1, 1, 1, 2] and want[12] == 0


def test_settings_checks(study):
    study.Settings().check()
    with pytest.raises(
        ValueError, match="steps_per_task \\(1500\\) must be a multiple of chunk_steps \\(1000\\)"
    ):
        study.Settings(steps_per_task=1_500).check()
    with pytest.raises(ValueError, match="budget \\(4001\\) must split evenly over the 4 tasks"):
        study.Settings(budget=4_001).check()
    with pytest.raises(ValueError, match="learning_starts \\(1500\\) must be a multiple"):
        study.Settings(learning_starts=1_500).check()
    with pytest.raises(ValueError, match="unknown policy 'lru'"):
        study.buffers_for("lru", study.Settings())


def test_mixer_phases_add_to_the_current_task_and_sample_the_tasks_seen(study):
    s = study.Settings(budget=40, tasks=("default", "long", "high-gravity", "reversed"))
    phases = study.buffers_for("mixer", s)
    example = {"x": jnp.zeros(()), "task": jnp.int32(0)}
    states = phases[0].init(example)
    for p in (0, 1):
        items = {"x": jnp.arange(6.0) + 10 * p, "task": jnp.full((6,), p, jnp.int32)}
        states = phases[p].add(states, items)
    np.testing.assert_array_equal([int(mj.replay.size(st)) for st in states], [6, 6, 0, 0])
    assert all(
        st_capacity == 10
        for st_capacity in [phases[0].memory(states)[k].capacity for k in range(4)]
    )
    batch = phases[1].sample(states, jax.random.key(0), 8)
    np.testing.assert_array_equal(batch.buffer, [0] * 4 + [1] * 4)
    np.testing.assert_array_equal(batch.items["task"], batch.buffer)
    assert bool(phases[1].can_sample(states, 8)) and not bool(phases[2].can_sample(states, 8))
    states = phases[1].update(states, batch.indices, None)  # uniform buffers: unchanged
    with pytest.raises(ValueError, match="add_to must be a buffer index in \\[0, 4\\), got 4"):
        as_buffer(mj.replay.mixer([mj.replay.uniform(4)] * 4, [1] * 4), 4)
