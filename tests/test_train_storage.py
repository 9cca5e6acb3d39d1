"""Replay storage in the training loop: lossless storage trains bit-identically to float32,
codecs are built and calibrated from the config, byte budgets give the largest capacity
that fits, and the CLI accepts the storage options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnax.environments import spaces

import memjax as mj
import memjax.codecs as mc
from memjax.agents import DQNConfig
from memjax.replay.one_copy_store import OneCopyStore
from memjax.train import TrainConfig, make_train
from memjax.train.storage import make_codecs, make_layout
from test_train import TinyEnv


class BitsEnv(TinyEnv):
    """test_train's TinyEnv (kind 0 truncated at t=3, kind 1 terminates at t=2, kind 2 at
    t=3; reward = 10 t + action) with binary observations: one-hot time (4), one-hot kind
    (3), a constant 1."""

    def get_obs(self, state, params=None, key=None):
        return jnp.concatenate(
            [jax.nn.one_hot(state.time, 4), jax.nn.one_hot(state.kind, 3), jnp.ones((1,))]
        ).astype(jnp.float32)

    def observation_space(self, params):
        return spaces.Box(0.0, 1.0, (8,), jnp.float32)


BASE = TrainConfig(
    env="Bits",
    num_envs=4,
    total_steps=480,
    buffer_capacity=64,
    batch_size=8,
    learning_starts=32,
    chunk_steps=16,
    target_update_every=8,
    agent=DQNConfig(hidden=(8,)),
    eval_episodes=2,
    storage="plain",  # float32 transitions whole; each test asks for the storage it checks
)
LOSSLESS = dict(obs_codec="bitpack", compact_fields=True, reward_codec="int8")


def run_whole(config):
    trainer = make_train(config, env=BitsEnv())
    state, metrics = jax.jit(jax.vmap(trainer.train))(jax.random.split(jax.random.key(5), 2))
    return trainer, jax.device_get(state), jax.device_get(metrics)


@pytest.fixture(scope="module")
def float32_uniform():
    return run_whole(BASE)


@pytest.mark.parametrize(
    "storage",
    [
        dict(LOSSLESS),
        dict(LOSSLESS, layout="one_copy", side_fraction=1.0),
    ],
)
def test_lossless_storage_trains_bit_identically(float32_uniform, storage):
    """Same seeds: bitpacked obs, uint8 actions/flags, int8 rewards (and one observation
    copy per transition) give exactly the float32 run's parameters and losses."""
    _, ref_state, ref_metrics = float32_uniform
    trainer, state, metrics = run_whole(BASE.replace(**storage))
    assert trainer.buffer.memory(state.buffer).bytes_per_item < 0.5 * 76  # float32: 76 B
    jax.tree.map(np.testing.assert_array_equal, state.agent.params, ref_state.agent.params)
    np.testing.assert_array_equal(metrics["train"]["loss"], ref_metrics["train"]["loss"])
    np.testing.assert_array_equal(metrics["eval_return"], ref_metrics["eval_return"])
    assert int(np.sum(state.buffer.codecs["obs"].invalid)) == 0


def test_prioritized_lossless_one_copy_is_bit_identical():
    per = BASE.replace(replay="prioritized")
    _, ref_state, ref_metrics = run_whole(per)
    _, state, metrics = run_whole(per.replace(**LOSSLESS, layout="one_copy", side_fraction=1.0))
    jax.tree.map(np.testing.assert_array_equal, state.agent.params, ref_state.agent.params)
    np.testing.assert_array_equal(metrics["train"]["loss"], ref_metrics["train"]["loss"])


def test_frame_stacked_quantized_one_copy_runs():
    cfg = BASE.replace(obs_codec="int4", layout="one_copy", frame_stack=2, calibration_steps=200)
    trainer, state, metrics = run_whole(cfg)
    assert trainer.env.observation_space(trainer.env_params).shape == (16,)
    assert np.isfinite(metrics["train"]["loss"]).all()
    assert int(np.sum(state.buffer.layout_errors)) == 0
    # int4 frames of 8 values: 4 bytes per transition for obs, ~0 for next_obs
    fields = {f.name: f for f in trainer.buffer.memory(state.buffer).fields}
    assert fields["obs"].shape == (4,) and fields["obs"].raw_bytes == 64


def test_prioritized_one_copy_with_an_overflowing_side_store_draws_only_live_items():
    """PER and one copy per observation with a side store of num_envs entries, for episodes of
    2-3 steps: it overflows every few steps and drops rows, yet no learner step draws an item
    of weight 0, the loss stays finite, and after training the tree holds mass on exactly the
    sampleable transitions."""
    cfg = BASE.replace(replay="prioritized", layout="one_copy", side_fraction=1 / 64)
    agent = make_train(cfg, env=BitsEnv()).agent

    def learn(state, sample, key):
        state, priorities, metrics = agent.learn(state, sample, key)
        return state, priorities, dict(metrics, zero_weights=jnp.sum(sample.weights == 0))

    trainer = make_train(cfg, env=BitsEnv(), agent=agent._replace(learn=learn))
    state, metrics = jax.device_get(
        jax.jit(jax.vmap(trainer.train))(jax.random.split(jax.random.key(5), 2))
    )
    assert np.all(metrics["train"]["zero_weights"] == 0)
    assert np.isfinite(metrics["train"]["loss"]).all()
    store = OneCopyStore(cfg.buffer_capacity, {}, make_layout(cfg))
    for seed in range(2):
        buffer = jax.tree.map(lambda x: x[seed], state.buffer)
        assert 0 < int(buffer.count) < cfg.buffer_capacity // 2  # rows dropped by the side store
        sampleable = np.asarray(store.sampleable(buffer, jnp.arange(store.num_slots)))
        leaves = np.asarray(mj.sumtree.leaves(buffer.tree))
        assert np.all(leaves[~sampleable] == 0) and np.all(leaves[sampleable] > 0)
        assert sampleable.sum() == int(buffer.count)


@pytest.mark.parametrize(
    "name, stored",
    [
        ("bitpack", (jnp.uint8, (1,))),
        ("int8", (jnp.uint8, (8,))),
        ("int4", (jnp.uint8, (4,))),
        ("int2", (jnp.uint8, (2,))),
        ("kmeans16", (jnp.uint8, (4,))),
        ("float16", (jnp.float16, (8,))),
        ("bfloat16", (jnp.bfloat16, (8,))),
    ],
)
def test_obs_codecs_from_config(name, stored):
    env = BitsEnv()
    cfg = BASE.replace(obs_codec=name, calibration_steps=100)
    codecs = make_codecs(cfg, env, env.default_params)
    assert set(codecs) == {"obs", "next_obs"} and codecs["obs"] is codecs["next_obs"]
    spec = mc.stored_spec(codecs["obs"], jnp.zeros((8,), jnp.float32))
    assert (spec.dtype, spec.shape) == (jnp.dtype(stored[0]), stored[1])
    one_copy = cfg.replace(layout="one_copy")
    assert set(make_codecs(one_copy, env, env.default_params)) == {"obs"}
    assert make_layout(one_copy).num_envs == 4 and make_layout(cfg) is None


def test_calibrated_quantizer_covers_random_policy_with_margin():
    env = BitsEnv()
    cfg = BASE.replace(obs_codec="int8", calibration_steps=100, calibration_margin=0.5)
    state = make_codecs(cfg, env, env.default_params)["obs"].init(jnp.zeros((8,)))
    np.testing.assert_array_equal(state.low, 0.0)  # the space's finite bounds, no margin
    np.testing.assert_array_equal(state.high, 1.0)  # (feature 3 and 7 are constant in the data)
    unbounded = BitsEnv()
    unbounded.observation_space = lambda params: spaces.Box(-jnp.inf, jnp.inf, (8,), jnp.float32)
    state = make_codecs(cfg, unbounded, env.default_params)["obs"].init(jnp.zeros((8,)))
    np.testing.assert_allclose(state.low[:3], -0.5)  # data range [0, 1] widened by 50%
    np.testing.assert_allclose(state.high[:3], 1.5)
    x = jnp.asarray([[0, 1, 0, 1, 1, 0, 0, 1]], jnp.float32)  # binary data: lossless int2
    two = make_codecs(cfg.replace(obs_codec="int2"), env, env.default_params)["obs"]
    st2 = two.init(x[0])
    np.testing.assert_array_equal(two.decode(two.encode(x, st2)[0], st2), x)


def test_bad_storage_config_is_rejected():
    for kw, match in [
        (dict(obs_codec="int3"), "obs_codec"),
        (dict(layout="two"), "layout"),
        (dict(reward_codec="int4"), "reward_codec"),
        (dict(frame_stack=0), "frame_stack"),
        (dict(layout="one_copy", buffer_capacity=66), "multiple of num_envs"),
    ]:
        with pytest.raises(ValueError, match=match):
            BASE.replace(**kw).validate()


EXAMPLE = {
    "obs": jnp.zeros((10, 10, 4)),
    "next_obs": jnp.zeros((10, 10, 4)),
    "action": jnp.int32(0),
    "reward": jnp.float32(0),
    "terminated": jnp.float32(0),
}


@pytest.mark.parametrize(
    "kind, codecs, layout",
    [
        ("uniform", None, None),
        ("prioritized", None, None),
        ("uniform", {"obs": mc.bitpack(), "next_obs": mc.bitpack()}, None),
        ("uniform", {"obs": mc.bitpack(), "action": mc.cast(jnp.uint8)}, mj.replay.one_copy(10)),
        ("prioritized", {"obs": mc.bitpack()}, mj.replay.one_copy(10, frame_stack=2)),
    ],
)
def test_capacity_for_is_the_largest_that_fits(kind, codecs, layout):
    budget = 1_000_003
    example = (
        EXAMPLE
        if not (layout and layout.frame_stack == 2)
        else dict(EXAMPLE, obs=jnp.zeros((10, 10, 8)), next_obs=jnp.zeros((10, 10, 8)))
    )
    cap = mj.replay.capacity_for(budget, example, codecs=codecs, layout=layout, kind=kind)
    step = layout.num_envs if layout else 1
    factory = getattr(mj.replay, kind)
    make = lambda c: factory(c, codecs=codecs, layout=layout)  # noqa: E731
    assert cap % step == 0
    assert mj.replay.buffer_bytes(make, cap, example) <= budget
    assert mj.replay.buffer_bytes(make, cap + step, example) > budget
    with pytest.raises(ValueError, match="too small"):
        mj.replay.capacity_for(100, example, codecs=codecs, layout=layout, kind=kind)


def test_memory_budget_buys_more_transitions_with_codecs():
    from memjax.train import capacity_for_budget

    env = BitsEnv()
    plain = capacity_for_budget(BASE, 100_000, env=env)
    small = capacity_for_budget(BASE.replace(**LOSSLESS, layout="one_copy"), 100_000, env=env)
    assert plain == (100_000 - 12) // 76  # 76 B per float32 transition, 12 B of counters
    assert small > 10 * plain and small % 4 == 0


def test_calibration_includes_finite_observation_space_bounds():
    """A feature the random policy never moves still covers the space's finite bounds."""
    import gymnax

    env, params = gymnax.make("CartPole-v1")
    cfg = TrainConfig(obs_codec="int8", calibration_steps=200)
    state = make_codecs(cfg, env, params)["obs"].init(jnp.zeros((4,)))
    assert float(state.low[0]) <= -4.8 and float(state.high[2]) >= 0.418  # cart x, pole angle
    assert 0.1 < float(state.high[1]) < 100  # cart velocity: unbounded space, data range
    stacked = make_codecs(
        cfg.replace(frame_stack=2, layout="one_copy"), mj.envs.FrameStack(env, 2), params
    )["obs"].init(jnp.zeros((4,)))
    np.testing.assert_array_equal(stacked.low[0], state.low[0])
