"""What keeps a run from learning is said before it starts: an exploration schedule or warm-up
longer than the run (a 30k-step CartPole run with the 5e5-step defaults ends below random),
and a memory task whose span is beyond the agent's reach (memnet with a context of 32 on
MemoryChain-40, which needs 39)."""

import pytest

from memjax import envs
from memjax.agents import MemnetConfig
from memjax.train import TrainConfig, make_train
from memjax.train.build import run_warnings


def warnings_of(config):
    trainer = make_train(config)
    return run_warnings(trainer.config, trainer.env, trainer.env_params)


def test_the_defaults_warn_of_nothing():
    assert warnings_of(TrainConfig()) == []


def test_a_short_run_with_the_default_schedule_is_warned_about():
    (warning,) = warnings_of(TrainConfig(total_steps=30_000))
    assert "epsilon decays over 250,000 env steps but the run has 30,000" in warning
    assert "probability 0.89 at the end" in warning and "--eps-decay-steps (e.g. 15,000" in warning
    assert warnings_of(TrainConfig(total_steps=30_000, eps_decay_steps=15_000)) == []
    (warning,) = warnings_of(
        TrainConfig(total_steps=30_000, eps_decay_steps=15_000, learning_starts=20_000)
    )
    assert "warm-up (--learning-starts 20,000) is more than half" in warning


@pytest.mark.parametrize(
    "name, span",
    [
        ("MemoryChain-40", 39),
        ("MemoryChain-20", 19),
        ("RepeatPrevious-8", 7),
        ("RepeatPrevious", 7),
        ("RepeatFirst", 31),
        ("CountRecall", 15),
        ("StatelessCartPole", None),
        ("CartPole-v1", None),
    ],
)
def test_memory_spans_of_the_suite(name, span):
    assert envs.memory_span(name) == span
    env, params = envs.make(name)
    assert envs.memory_span(envs.FrameStack(env, 4), params) == span


def test_a_task_beyond_the_agents_reach_is_warned_about():
    far = TrainConfig(
        env="MemoryChain-40",
        agent=MemnetConfig(context_length=32),
        total_steps=200_000,
        eps_decay_steps=100_000,
    )
    (warning,) = warnings_of(far)
    assert "MemoryChain-40 asks to remember 39 steps back" in warning
    assert "agent 'memnet' reads only 32 (its reach)" in warning
    near = far.replace(context_length=39, sequence_length=40)
    assert warnings_of(near) == []
    # DRQN's recurrent state has no fixed reach: nothing to say
    assert warnings_of(far.replace(agent="drqn")) == []
