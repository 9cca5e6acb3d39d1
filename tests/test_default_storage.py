"""Lossless storage by default (``TrainConfig.storage``): the choices per environment and
why, bit-identical learning against ``storage="plain"`` (float32 transitions stored whole),
no codec chosen on calibration's word alone, and the peak of the memory plan."""

import jax
import numpy as np
import pytest

import memjax as mj
from memjax.train import TrainConfig, make_train
from memjax.train.plan import nbytes, plan
from memjax.train.storage import resolve_storage
from test_train_storage import BASE, BitsEnv


class DeclaredBitsEnv(BitsEnv):
    """BitsEnv (0/1 observations, integer rewards 10 t + action in [10, 31]) that says so."""

    def binary_observations(self, params):
        return True

    def integer_reward_bounds(self, params):
        return (0, 40)


class HalfRewardEnv(DeclaredBitsEnv):
    """Declares integer rewards in [0, 40] but gives 10 t + action + 0.5: a wrong word."""

    def step_env(self, key, state, action, params):
        obs, new, reward, terminated, info = super().step_env(key, state, action, params)
        return obs, new, reward + 0.5, terminated, info


DEFAULT = BASE.replace(storage="lossless")  # every storage setting at auto


def values(choices):
    return {name: c.value for name, c in choices.items()}


@pytest.mark.parametrize("replay", ["uniform", "prioritized"])
def test_default_storage_trains_bit_identically_to_plain(replay):
    """The lossless default (one copy per observation, bitpacked 0/1 observations, int8
    rewards, uint8 actions and flags, a side store sized from calibration) gives exactly
    the parameters, losses and greedy returns of float32 transitions stored whole."""
    trainer, state, metrics = run_whole_with(DEFAULT.replace(replay=replay), DeclaredBitsEnv())
    assert values(trainer.storage) == {
        "layout": "one_copy",
        "side_fraction": trainer.config.side_fraction,
        "obs_codec": "bitpack",
        "reward_codec": "int8",
        "compact_fields": True,
    }
    assert all(c.auto for c in trainer.storage.values())
    plain, ref_state, ref_metrics = run_whole_with(BASE.replace(replay=replay), DeclaredBitsEnv())
    assert plain.config.layout == "flat" and plain.config.obs_codec == "none"
    jax.tree.map(np.testing.assert_array_equal, state.agent.params, ref_state.agent.params)
    np.testing.assert_array_equal(metrics["train"]["loss"], ref_metrics["train"]["loss"])
    np.testing.assert_array_equal(metrics["eval_return"], ref_metrics["eval_return"])
    ours, theirs = (
        t.buffer.memory(s.buffer).bytes_per_item for t, s in ((trainer, state), (plain, ref_state))
    )
    assert ours < 0.5 * theirs  # float32: 76 B
    assert int(np.sum(state.buffer.codecs["obs"].invalid)) == 0
    assert int(np.sum(state.buffer.codecs["reward"].clipped)) == 0
    # the side store never overflowed: every seed holds the whole capacity
    np.testing.assert_array_equal(state.buffer.count, DEFAULT.buffer_capacity)


def run_whole_with(config, env):
    trainer = make_train(config, env=env)
    state, metrics = jax.jit(jax.vmap(trainer.train))(jax.random.split(jax.random.key(5), 2))
    return trainer, jax.device_get(state), jax.device_get(metrics)


def test_the_lossless_choices_of_the_named_environments():
    """CartPole: one copy, int8 rewards, float32 observations (no lossless codec for
    them); Breakout-MinAtar: bitpack too; DRQN on MemoryChain-20: its sequence windows."""
    small = TrainConfig(calibration_steps=400)
    cases = {
        "CartPole-v1": ("one_copy", "none", "int8"),
        "Breakout-MinAtar": ("one_copy", "bitpack", "int8"),
        "SpaceInvaders-MinAtar": ("one_copy", "bitpack", "int8"),  # rewards in [0, 100]
    }
    for name, (layout, obs, reward) in cases.items():
        env, params = mj.envs.make(name)
        config, choices = resolve_storage(small.replace(env=name), env, params)
        assert (config.layout, config.obs_codec, config.reward_codec) == (layout, obs, reward)
        assert config.compact_fields is True and config.storage == "lossless"
        assert 1 / 16 <= config.side_fraction <= 1
        assert all(c.why for c in choices.values())
    drqn = small.replace(env="MemoryChain-20", agent="drqn")
    env, params = mj.envs.make("MemoryChain-20")
    config, choices = resolve_storage(drqn, env, params)
    assert config.storage_layout == "sequence" and "windows" in choices["layout"].why
    assert config.reward_codec == "int8"  # rewards -1, 0, 1 by the task's rules


def test_side_store_follows_the_random_policys_episode_ends():
    """The side store holds the final observations of 1.5x the random policy's episode
    ends or of the constant action that ends most (an untrained greedy policy): CartPole's
    constant pushes end every ~9.4 steps, Breakout's every ~6 (random: 22 and 10)."""
    small = TrainConfig(calibration_steps=2_000)
    fractions = {}
    for name in ("CartPole-v1", "Breakout-MinAtar"):
        env, params = mj.envs.make(name)
        config, choices = resolve_storage(small.replace(env=name), env, params)
        fractions[name] = config.side_fraction
        assert "episode ends per step" in choices["side_fraction"].why
    assert 0.09 < fractions["CartPole-v1"] < 0.13
    assert 0.14 < fractions["Breakout-MinAtar"] < 0.2


def test_no_lossless_codec_on_calibration_alone():
    """Integer rewards in calibration are not enough (a learned policy's may not be): an
    environment that does not declare them keeps float32 rewards; one whose rewards break its
    own declaration too; 0/1 observations likewise."""
    for env, reward_why, obs_why in [
        (BitsEnv(), "does not declare integer rewards", "does not declare 0/1"),
        (HalfRewardEnv(), "yet calibration saw", None),
    ]:
        config, choices = resolve_storage(DEFAULT, env, env.default_params)
        assert config.reward_codec == "none" and reward_why in choices["reward_codec"].why
        if obs_why:
            assert config.obs_codec == "none" and obs_why in choices["obs_codec"].why
    assert (
        "all integers"
        in resolve_storage(DEFAULT, BitsEnv(), BitsEnv().default_params)[1]["reward_codec"].why
    )


def test_given_settings_win_and_plain_is_the_old_default():
    env = DeclaredBitsEnv()
    config, choices = resolve_storage(
        DEFAULT.replace(obs_codec="int8", layout="flat", compact_fields=False), env, None
    )
    assert (config.obs_codec, config.layout, config.compact_fields) == ("int8", "flat", False)
    assert choices["obs_codec"] == ("int8", "as given", False)
    assert config.reward_codec == "int8" and choices["reward_codec"].auto
    plain, _ = resolve_storage(BASE, env, env.default_params)
    assert (
        plain.layout,
        plain.obs_codec,
        plain.reward_codec,
        plain.compact_fields,
        plain.side_fraction,
    ) == ("flat", "none", "none", False, 1 / 16)
    # one_copy needs whole rows: a capacity that is not a multiple of num_envs stays flat
    odd, choices = resolve_storage(DEFAULT.replace(buffer_capacity=66), env, env.default_params)
    assert odd.layout == "flat" and "not a multiple" in choices["layout"].why


def test_bad_storage_setting_is_rejected():
    with pytest.raises(ValueError, match="storage must be one of"):
        TrainConfig(storage="tiny").validate()
    with pytest.raises(ValueError, match="compact_fields"):
        TrainConfig(compact_fields="yes").validate()


def test_plan_peak_is_the_state_plus_the_largest_program():
    """The plan's peak: the state plus what the biggest compiled program adds; the donated
    chunk writes the state in place (it adds less than a copy of it)."""
    config = DEFAULT.replace(env="CartPole-v1", buffer_capacity=4_000)
    result = plan(config, num_seeds=2, peak=True)
    programs = result["program_bytes"]
    assert set(programs) >= {"init", "collect", "chunk", "evaluate"}
    state = result["bytes_per_device"]
    assert result["peak_bytes_per_device"] == state + max(programs.values())
    assert programs["chunk"] < 0.5 * state and programs["collect"] < 0.5 * state
    assert result["expected_peak_rss_bytes"] > result["peak_bytes_per_device"]
    trainer = make_train(config)
    real = jax.eval_shape(jax.vmap(trainer.init), jax.random.split(jax.random.key(0), 2))
    assert nbytes(real) == state


def test_storage_options_on_the_command_line():
    from memjax import cli
    from memjax.cli_config import config_from_args

    def parsed(*argv):
        return config_from_args(cli.build_parser().parse_args(["train", *argv]))

    default = parsed()
    assert (default.storage, default.layout, default.compact_fields) == ("lossless", "auto", None)
    assert default.side_fraction is None and default.obs_codec == default.reward_codec == "auto"
    config = parsed("--storage", "plain", "--compact-fields", "--side-fraction", "0.25")
    assert (config.storage, config.compact_fields, config.side_fraction) == ("plain", True, 0.25)
    assert parsed("--no-compact-fields", "--side-fraction", "auto").compact_fields is False
    assert parsed("--reward-codec", "int16").reward_codec == "int16"
    with pytest.raises(SystemExit):
        parsed("--storage", "small")


def test_default_run_returns_what_plain_returns_on_cartpole():
    """``mj.train.run`` (the driver: AOT-compiled init with its key as an argument, donated
    chunks) on CartPole-v1 with the defaults and with ``storage="plain"``: the same greedy
    returns and final parameters, bit for bit, at about half the bytes, nothing dropped. (A
    policy that ends episodes more often than the side store was sized for overflows it: the
    oldest transitions are dropped, never returned wrong, and the runs part.)"""
    config = TrainConfig(
        num_envs=4,
        total_steps=2_400,
        buffer_capacity=1_200,
        batch_size=32,
        learning_starts=400,
        eps_decay_steps=2_400,
        chunk_steps=800,
        eval_episodes=2,
        lr=1e-3,
    )
    runs = {
        storage: mj.train.run(
            config.replace(storage=storage), num_seeds=2, progress=False, log=None
        )
        for storage in ("lossless", "plain")
    }
    ours, plain = runs["lossless"], runs["plain"]
    assert (
        ours["replay_storage"]["layout"] == "one_copy"
        and plain["replay_storage"]["layout"] == "flat"
    )
    assert ours["replay_storage"]["chosen"]["reward_codec"]["value"] == "int8"
    np.testing.assert_array_equal(ours["curves"]["eval_return"], plain["curves"]["eval_return"])
    np.testing.assert_array_equal(ours["curves"]["train_return"], plain["curves"]["train_return"])
    jax.tree.map(np.testing.assert_array_equal, ours["params"], plain["params"])
    assert ours["bytes_per_transition"] < 0.6 * plain["bytes_per_transition"]
    assert ours["replay_storage"]["final_size_per_seed"] == [1_200, 1_200]  # nothing dropped
