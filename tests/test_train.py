"""The fused training loop: truncation handling, n-step targets, static schedule, target
updates, seed independence, user-defined agents, the whole vmapped run and the host driver.
Small configs throughout."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from memjax import agents
from memjax.agents import DQNConfig
from memjax.train import TrainConfig, capacity_for_budget, make_train, run
from memjax.train.results import config_to_dict

GAMMA = 0.9


# --------------------------------------------------------------------------- a tiny environment


@struct.dataclass
class TinyState(environment.EnvState):
    time: jax.Array
    kind: jax.Array


@struct.dataclass
class TinyParams(environment.EnvParams):
    max_steps_in_episode: int = 3


class TinyEnv(environment.Environment):
    """obs = [time, kind, 7]; reward = 10 * new_time + action.

    ``kind`` is drawn at reset: 0 never terminates (truncated by the time limit at t=3),
    1 terminates at t=2, 2 terminates at t=3, the same step as the time limit (terminated
    wins: no bootstrap). After any end the env auto-resets to time 0."""

    @property
    def default_params(self):
        return TinyParams()

    def step_env(self, key, state, action, params):
        t = state.time + 1
        new = TinyState(time=t, kind=state.kind)
        terminated = ((state.kind == 1) & (t == 2)) | ((state.kind == 2) & (t == 3))
        reward = (10 * t + action).astype(jnp.float32)
        return self.get_obs(new), new, reward, terminated, {}

    def reset_env(self, key, params):
        s = TinyState(time=jnp.int32(0), kind=jax.random.randint(key, (), 0, 3))
        return self.get_obs(s), s

    def get_obs(self, state, params=None, key=None):
        return jnp.array([state.time, state.kind, 7.0], jnp.float32)

    @property
    def num_actions(self):
        return 2

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params):
        return spaces.Box(0.0, 10.0, (3,), jnp.float32)


TINY = TrainConfig(
    env="Tiny",
    num_envs=4,
    total_steps=400,
    buffer_capacity=64,
    batch_size=8,
    learning_starts=32,
    chunk_steps=4,
    target_update_every=8,
    gamma=GAMMA,
    agent=DQNConfig(hidden=(8,)),
    eval_episodes=3,
)


@pytest.fixture(scope="module")
def tiny():
    return make_train(TINY, env=TinyEnv())


@pytest.fixture(scope="module")
def tiny_rollout(tiny):
    """30 vector steps of epsilon-greedy acting (eps ~ 1), transitions as inserted."""

    @jax.jit
    def roll(key):
        state = tiny.init(key)
        return jax.lax.scan(lambda s, _: tiny.env_step(s), state, None, length=30)

    state, (tr, done, finished) = roll(jax.random.key(3))
    return state, jax.device_get(tr), np.asarray(done), np.asarray(finished)


def _check_transitions(tr):
    obs, nxt = np.asarray(tr["obs"]), np.asarray(tr["next_obs"])
    t, kind = obs[..., 0], obs[..., 1]
    t1 = t + 1
    # next_obs is the real successor (final_observation), never the auto-reset observation
    np.testing.assert_array_equal(nxt[..., 0], t1)
    np.testing.assert_array_equal(nxt[..., 1], kind)
    np.testing.assert_array_equal(nxt[..., 2], 7.0)
    term = ((kind == 1) & (t1 == 2)) | ((kind == 2) & (t1 == 3))
    np.testing.assert_array_equal(np.asarray(tr["terminated"]), term.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(tr["reward"]), 10 * t1 + np.asarray(tr["action"]))
    assert np.asarray(tr["terminated"]).dtype == np.float32
    assert np.asarray(tr["action"]).dtype == np.int32
    return t, kind, term


def test_truncation_transitions_exact(tiny_rollout):
    _, tr, done, finished = tiny_rollout
    t, kind, term = _check_transitions(tr)
    truncated = (t + 1 == 3) & ~term
    assert truncated.sum() > 3 and term.sum() > 3  # both cases occur
    assert ((kind == 2) & (t + 1 == 3)).sum() > 0  # terminated and time limit together
    # the episode ends exactly at terminations and time limits, then restarts at t=0
    np.testing.assert_array_equal(done, term | truncated)
    np.testing.assert_array_equal(tr["obs"][1:, :, 0][done[:-1]], 0.0)
    # finished episode returns: sum of 10*t + action over the episode
    assert np.all(finished[~done] == 0)
    assert np.all(finished[done] >= 10 + 20)


def test_truncation_targets_exact(tiny_rollout):
    """TD targets on the stored transitions bootstrap through truncation, not termination:
    target = r + gamma * (1 - terminated) * max_a Q_target(next_obs)."""
    _, tr, _, _ = tiny_rollout
    batch = jax.tree.map(lambda x: jnp.asarray(x).reshape((-1,) + x.shape[2:]), tr)

    def apply_fn(w, obs):  # Q(obs) = [w * time, w * time + 1]
        return jnp.stack([w * obs[:, 0], w * obs[:, 0] + 1.0], axis=-1)

    for double in (False, True):
        # online w = 0 -> Q(obs, a) = a, and (Double DQN) argmax picks action 1
        td, _ = agents.td_errors(0.0, 1.0, apply_fn, batch, gamma=GAMMA, double=double)
        abs_td = np.abs(np.asarray(td))
        t, kind, a = (
            np.asarray(batch["obs"][:, 0]),
            np.asarray(batch["obs"][:, 1]),
            np.asarray(batch["action"]),
        )
        t1 = t + 1
        ends = ((kind == 1) & (t1 == 2)) | ((kind == 2) & (t1 == 3))
        want = 10 * t1 + a + np.where(ends, 0.0, GAMMA * (t1 + 1.0)) - a
        np.testing.assert_allclose(np.asarray(abs_td), np.abs(want), rtol=1e-6)
        # a truncated step (kind 0, t=2->3) bootstraps from the final observation (t=3)
        trunc = (kind == 0) & (t1 == 3)
        np.testing.assert_allclose(np.asarray(abs_td)[trunc], 30 + GAMMA * 4.0, rtol=1e-6)


def test_buffer_holds_final_observations(tiny):
    """Everything that reaches the buffer satisfies the same invariants (checked by sampling
    the whole buffer many times after the warm-up)."""

    @jax.jit
    def f(key):
        state, _ = tiny.collect(tiny.init(key))
        keys = jax.random.split(jax.random.key(1), 8)
        return jax.vmap(lambda k: tiny.buffer.sample(state.buffer, k, 32).items)(keys)

    _check_transitions(jax.device_get(f(jax.random.key(0))))


# --------------------------------------------------------------------------- n-step targets


def np_tiny_target(t0, kind, actions, gamma, n):
    """The n-step target from TinyEnv's own rules (not from the buffer's flags) for a window
    that starts at time t0 of an episode of ``kind``, with Q_target(obs) = [time, time + 1]:
    rewards 10 t + a until the episode ends; termination stops, truncation (t = 3) and the
    window's end bootstrap from the next observation's time."""
    target, t = 0.0, t0
    for k in range(n):
        t1 = t + 1
        target += gamma**k * (10 * t1 + actions[k])
        terminated = (kind == 1 and t1 == 2) or (kind == 2 and t1 == 3)
        if terminated:
            return target
        if t1 == 3 or k == n - 1:
            return target + gamma ** (k + 1) * (t1 + 1.0)
        t = t1


@pytest.fixture(scope="module")
def tiny_three_step():
    """TinyEnv with 3-step targets: 30 vector steps inserted, then 64 windows sampled (a side
    store as large as the buffer: TinyEnv's episodes end every 2-3 steps)."""
    trainer = make_train(TINY.replace(n_step=3, side_fraction=1.0), env=TinyEnv())

    @jax.jit
    def roll(key):
        state = trainer.init(key)
        state, _ = jax.lax.scan(lambda s, _: trainer.env_step(s), state, None, length=30)
        return trainer.buffer.sample(state.buffer, jax.random.key(9), 64).items

    return trainer, jax.device_get(roll(jax.random.key(3)))


def test_n_step_targets_through_the_loop_match_the_environment(tiny_three_step):
    """Windows of 3 steps come out of the loop's replay with episode starts marked; the
    3-step TD errors are cut at termination and bootstrapped at truncation exactly as the
    environment's rules say, for DQN and Double DQN."""
    trainer, windows = tiny_three_step
    assert trainer.config.storage_layout == "sequence"
    assert windows["obs"].shape == (64, 3, 3) and windows["first"].shape == (64, 3)
    t0, kind, actions = windows["obs"][:, 0, 0], windows["obs"][:, 0, 1], windows["action"]

    def apply_fn(w, obs):  # Q(obs) = [w * time, w * time + 1]
        return jnp.stack([w * obs[:, 0], w * obs[:, 0] + 1.0], axis=-1)

    want = [
        np_tiny_target(int(t0[i]), int(kind[i]), actions[i], GAMMA, 3) - actions[i, 0]
        for i in range(64)
    ]
    for double in (False, True):  # online w = 0: Q(obs, a) = a, argmax is action 1
        td, _ = agents.td_errors(0.0, 1.0, apply_fn, windows, gamma=GAMMA, double=double)
        np.testing.assert_allclose(np.asarray(td), want, rtol=1e-5)
    crosses = windows["first"][:, 1:].any(axis=1)
    assert crosses.sum() > 3 and (~crosses).sum() > 3  # windows across episode ends, and not
    assert len(set(map(tuple, windows["obs"][:, :, :2].reshape(64, -1).tolist()))) > 10


def test_sequence_layout_of_one_step_trains_like_one_copy():
    """Windows of one step (layout "sequence", n_step 1) hold the same transitions as the
    one-copy layout and are drawn alike: the whole run is bit-identical."""
    runs = []
    for layout in ("one_copy", "sequence"):
        cfg = TINY.replace(layout=layout, side_fraction=1.0, total_steps=160)
        trainer = make_train(cfg, env=TinyEnv())
        runs.append(jax.jit(trainer.train)(jax.random.key(4)))
    (one_copy, m_one_copy), (sequence, m_sequence) = runs
    chex.assert_trees_all_equal(one_copy.agent.params, sequence.agent.params)
    np.testing.assert_array_equal(m_one_copy["train"]["loss"], m_sequence["train"]["loss"])


# --------------------------------------------------------------------------- user agents


def counting_agent():
    """A user-defined agent: its carry counts the steps of the running episode, stored with
    every step as the extra ``count``; ``learn`` counts its calls and returns no priorities."""

    def init(key, obs):
        return {"learned": jnp.zeros((), jnp.int32)}

    def initial_carry(num_envs):
        return jnp.zeros((num_envs,), jnp.int32)

    def act(state, carry, obs, key, step, greedy):
        actions = jax.random.randint(key, carry.shape, 0, 2, dtype=jnp.int32)
        return actions, carry + 1, {"count": carry}

    def learn(state, sample, key):
        return ({"learned": state["learned"] + 1}, None, {"loss": jnp.mean(sample.items["reward"])})

    return agents.Agent(init, initial_carry, act, learn)


def test_user_agent_carry_resets_at_episode_starts():
    trainer = make_train(TINY, env=TinyEnv(), agent=counting_agent())
    assert trainer.network is None and "count" in trainer.example

    @jax.jit
    def run_chunks(key):
        state, _ = trainer.collect(trainer.init(key))
        state, metrics = trainer.chunk(state)
        items = trainer.buffer.sample(state.buffer, jax.random.key(1), 64).items
        return state, metrics, items

    state, metrics, items = run_chunks(jax.random.key(0))
    # TinyEnv's obs[0] is the time since reset: the carry must be reset at the same moments,
    # in the random warm-up too
    np.testing.assert_array_equal(items["count"], items["obs"][:, 0].astype(np.int32))
    assert int(state.agent["learned"]) == TINY.chunk_iters
    assert np.isfinite(float(metrics["loss"]))
    with pytest.raises(TypeError, match="priorities"):  # PER needs priorities from learn
        per = make_train(TINY.replace(replay="prioritized"), env=TinyEnv(), agent=counting_agent())
        jax.eval_shape(per.learner_step, jax.eval_shape(per.init, jax.random.key(0)))


# --------------------------------------------------------------------------- schedule/targets


@pytest.fixture(scope="module")
def tiny_vmapped(tiny):
    keys = jax.random.split(jax.random.key(0), 2)
    init = jax.jit(jax.vmap(tiny.init))
    collect = jax.jit(jax.vmap(tiny.collect))
    chunk = jax.jit(jax.vmap(tiny.chunk))
    s0 = init(keys)
    s1, m1 = collect(s0)
    return dict(keys=keys, init=init, collect=collect, chunk=chunk, s0=s0, s1=s1, m1=m1)


def test_static_schedule_warmup_then_training(tiny, tiny_vmapped):
    s0, s1 = tiny_vmapped["s0"], tiny_vmapped["s1"]
    # warm-up: learning_starts env steps, no update at all
    assert TINY.warmup_vec_steps == 8
    np.testing.assert_array_equal(s1.step, [8, 8])
    np.testing.assert_array_equal(s1.agent.updates, [0, 0])
    chex.assert_trees_all_equal(s0.agent.params, s1.agent.params)
    chex.assert_trees_all_equal(s1.agent.params, s1.agent.target_params)
    # a training chunk: chunk_steps = 4 env steps = 1 vector step, one update
    s2, m2 = tiny_vmapped["chunk"](s1)
    np.testing.assert_array_equal(s2.step, [9, 9])
    np.testing.assert_array_equal(s2.agent.updates, [1, 1])
    assert np.all(np.isfinite(np.asarray(m2["loss"])))
    # target every 8 env steps = every 2 updates: after 1 update unchanged, params moved
    assert TINY.target_period == 2
    chex.assert_trees_all_equal(s2.agent.target_params, s1.agent.target_params)
    assert not np.allclose(
        s2.agent.params["params"]["Dense_0"]["kernel"],
        s1.agent.params["params"]["Dense_0"]["kernel"],
    )
    # the second update copies
    s3, _ = tiny_vmapped["chunk"](s2)
    chex.assert_trees_all_equal(s3.agent.target_params, s3.agent.params)
    s4, _ = tiny_vmapped["chunk"](s3)
    chex.assert_trees_all_equal(s4.agent.target_params, s3.agent.params)


def test_soft_target_update_in_loop(tiny_vmapped):
    cfg = TINY.replace(tau=0.25, target_update_every=4)
    tr = make_train(cfg, env=TinyEnv())
    s1 = tiny_vmapped["s1"]
    s2, _ = jax.jit(jax.vmap(tr.chunk))(s1)
    want = jax.tree.map(lambda t, o: 0.75 * t + 0.25 * o, s1.agent.target_params, s2.agent.params)
    chex.assert_trees_all_close(s2.agent.target_params, want, rtol=1e-6, atol=1e-7)


def test_train_every_groups_steps():
    cfg = TINY.replace(train_every=2, chunk_steps=16)
    tr = make_train(cfg, env=TinyEnv())
    assert cfg.chunk_iters == 2
    s, _ = jax.jit(tr.chunk)(jax.jit(tr.collect)(tr.init(jax.random.key(0)))[0])
    assert int(s.step) == 8 + 4 and int(s.agent.updates) == 2


# --------------------------------------------------------------------------- seed independence


def _differs(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_seeds_are_independent(tiny, tiny_vmapped):
    s0, s1 = tiny_vmapped["s0"], tiny_vmapped["s1"]
    take = lambda tree, i: jax.tree.map(lambda x: x[i], tree)  # noqa: E731
    # network init and environment resets differ per seed
    assert _differs(take(s0.agent.params, 0), take(s0.agent.params, 1))
    assert _differs(s0.obs[0], s0.obs[1])
    assert _differs(take(s1.buffer, 0), take(s1.buffer, 1))

    # same state, different keys: exploration and replay samples differ; same key: identical
    base = take(s1, 0)
    twin = jax.tree.map(lambda x: jnp.stack([x, x]), base)
    other = twin.replace(key=jax.random.split(jax.random.key(42), 2))

    def actions(s):  # 10 vector steps of (eps ~ 1) exploration: 40 actions
        return jax.lax.scan(lambda c, _: tiny.env_step(c), s, None, length=10)[1][0]["action"]

    step = jax.jit(jax.vmap(actions))
    assert _differs(step(other)[0], step(other)[1])
    a = step(twin)
    np.testing.assert_array_equal(a[0], a[1])

    learn = jax.jit(jax.vmap(lambda s: tiny.learner_step(s)[0].agent.params))
    p = learn(other)
    assert _differs(take(p, 0), take(p, 1))
    p = learn(twin)
    chex.assert_trees_all_equal(take(p, 0), take(p, 1))


# --------------------------------------------------------------------------- evaluation


def test_evaluation_cap_and_unfinished_episodes(tiny):
    """A cap of 2 steps cuts TinyEnv's 3-step episodes (kinds 0 and 2), reported unfinished
    with the returns of their first 2 steps; kind 1 ends at step 2 by itself."""
    from memjax.train.evaluation import DEFAULT_MAX_STEPS, episode_cap, evaluate

    def policy(carry, obs, key):  # action 0 always: reward 10 t
        return jnp.zeros(obs.shape[:1], jnp.int32), carry

    env, params = TinyEnv(), TinyEnv().default_params
    kinds = jax.vmap(lambda k: env.reset(k, params)[0][1])(
        jax.random.split(jax.random.split(jax.random.key(0))[0], 64)
    )
    capped = evaluate(policy, (), env, params, jax.random.key(0), 64, 2, max_steps=2)
    np.testing.assert_array_equal(capped.finished, np.asarray(kinds) == 1)
    np.testing.assert_array_equal(capped.returns, np.full(64, 10.0 + 20.0))
    whole = evaluate(policy, (), env, params, jax.random.key(0), 64, 2)
    assert bool(np.all(whole.finished)) and episode_cap(params) == 3
    np.testing.assert_array_equal(whole.returns, np.where(np.asarray(kinds) == 1, 30.0, 60.0))
    assert episode_cap(struct.dataclass(type("NoLimit", (), {}))()) == DEFAULT_MAX_STEPS == 1000
    with pytest.raises(ValueError, match="max_steps"):
        episode_cap(params, 0)
    trainer = make_train(TINY.replace(eval_max_steps=2, eval_episodes=64), env=TinyEnv())
    episodes = jax.jit(trainer.evaluate)(trainer.init(jax.random.key(1)).agent, jax.random.key(2))
    assert 0 < int(np.sum(~np.asarray(episodes.finished))) < 64


# --------------------------------------------------------------------------- whole runs


CARTPOLE_TINY = TrainConfig(
    num_envs=4,
    total_steps=2_000,
    buffer_capacity=500,
    batch_size=16,
    learning_starts=400,
    chunk_steps=600,
    eval_episodes=2,
    agent=DQNConfig(hidden=(16,)),
    eps_decay_steps=1_000,
)


def test_jit_vmap_train_whole_run():
    for replay in ("prioritized",):  # uniform runs through the host driver below
        cfg = CARTPOLE_TINY.replace(replay=replay)
        trainer = make_train(cfg)
        assert trainer.final_chunk is not None  # 1600 training steps = 2 chunks of 600 + 400
        keys = jax.random.split(jax.random.key(1), 3)
        state, metrics = jax.jit(jax.vmap(trainer))(keys)
        assert metrics["eval_return"].shape == (3, 2)
        assert metrics["train"]["loss"].shape == (3, 3)
        assert np.all(np.isfinite(np.asarray(metrics["train"]["loss"])))
        np.testing.assert_array_equal(state.step, [cfg.steps_done // cfg.num_envs] * 3)
        np.testing.assert_array_equal(state.agent.updates, [cfg.train_iters] * 3)
        assert _differs(
            state.agent.params["params"]["Dense_0"]["kernel"][0],
            state.agent.params["params"]["Dense_0"]["kernel"][1],
        )


def test_run_writes_results(tmp_path):
    out = tmp_path / "run"
    summary = run(CARTPOLE_TINY, num_seeds=2, out_dir=out, progress=False, log=None)
    for name in ("returns.csv", "returns.json", "curve.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "summary.json").read_text())
    for key in (
        "env",
        "seeds",
        "steps",
        "final_return_mean",
        "final_return_per_seed",
        "steps_per_second",
        "compile_seconds",
        "bytes_per_transition",
    ):
        assert key in saved
    assert saved["env"] == "CartPole-v1" and saved["seeds"] == 2 and saved["steps"] == 2_000
    assert len(saved["final_return_per_seed"]) == 2
    assert saved["compile_seconds"] > 0 and saved["steps_per_second"] > 0
    # lossless storage by default: obs once (16 B), uint8 action/terminated, int8 reward
    assert 18 < saved["bytes_per_transition"] <= 25  # plain float32: 44
    assert saved["carry_bytes_per_env"] == 0  # DQN carries nothing
    assert saved["eval_max_steps"] == 500 and saved["eval_unfinished_total"] == 0
    # the summary records the config that ran: its auto storage settings resolved
    storage = ("layout", "obs_codec", "reward_codec", "compact_fields", "side_fraction")
    ran = CARTPOLE_TINY.replace(**{name: saved["config"][name] for name in storage})
    assert saved["config"] == json.loads(json.dumps(config_to_dict(ran)))
    assert saved["config"]["layout"] == "one_copy" and saved["config"]["obs_codec"] == "none"
    rows = (out / "returns.csv").read_text().strip().splitlines()
    assert rows[0] == "step,seed,eval_return,train_return"
    assert len(rows) - 1 == 2 * 4  # (warm-up + 3 chunks) x 2 seeds
    assert summary["final_return_mean"] == pytest.approx(np.mean(saved["final_return_per_seed"]))


def test_minatar_uses_conv_network():
    cfg = CARTPOLE_TINY.replace(
        env="Breakout-MinAtar", total_steps=200, learning_starts=40, chunk_steps=40, eval_episodes=1
    )
    trainer = make_train(cfg)
    assert type(trainer.network).__name__ == "ConvQNetwork"
    state = trainer.init(jax.random.key(0))
    assert state.obs.shape == (4, 10, 10, 4)
    with pytest.raises(ValueError, match="conv"):
        make_train(CARTPOLE_TINY.replace(network="conv"))


def test_config_validation_messages():
    bad = [
        (dict(batch_size=600), "larger than the buffer"),
        (dict(buffer_capacity=0), "buffer_capacity must be a positive integer"),
        (dict(num_envs=-1), "num_envs"),
        (dict(replay="lifo"), "replay"),
        (dict(learning_starts=8), "learning_starts"),
        (dict(total_steps=400), "leaves no training"),
        (dict(tau=0.0), "tau"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            make_train(CARTPOLE_TINY.replace(**kw))
    with pytest.raises(ValueError, match="unknown environment 'Nope-v0'"):
        make_train(CARTPOLE_TINY.replace(env="Nope-v0"))
    with pytest.raises(ValueError, match="discrete"):
        make_train(CARTPOLE_TINY.replace(env="Pendulum-v1"))


def test_capacity_for_budget():
    cap = capacity_for_budget(CARTPOLE_TINY, 1_000_000)
    small = CARTPOLE_TINY.replace(buffer_capacity=cap)
    big = CARTPOLE_TINY.replace(buffer_capacity=cap + 1)
    nbytes = lambda c: sum(
        x.size * x.dtype.itemsize
        for x in jax.tree.leaves(  # noqa: E731
            jax.eval_shape(make_train(c).init, jax.random.key(0)).buffer
        )
    )
    assert nbytes(small) <= 1_000_000 < nbytes(big)
    with pytest.raises(ValueError, match="too small"):
        capacity_for_budget(CARTPOLE_TINY, 100)


def test_carry_bytes_per_env_counts_the_recurrent_state():
    from memjax.train.memory import carry_bytes_per_env

    gru = CARTPOLE_TINY.replace(
        agent="drqn",
        memory=16,
        sequence_length=8,
        sequence_period=4,
        burn_in=2,
        buffer_capacity=512,
    )
    assert carry_bytes_per_env(make_train(gru)) == 16 * 4
    lstm = gru.replace(cell="lstm")
    assert carry_bytes_per_env(make_train(lstm)) == 2 * 16 * 4


@pytest.mark.parametrize(
    "changes, words",
    [
        (
            dict(sequence_length=5, burn_in=4, n_step=2),
            r"sequence_length \(5\) is shorter than "
            r"burn_in \(4\) \+ n_step \(2\)",
        ),
        (dict(buffer_capacity=500), r"125 rows .* multiple of sequence_period \(4\)"),
        (dict(cell="rnn"), "cell must be one of"),
    ],
)
def test_drqn_settings_fail_before_compiling(changes, words):
    settings = dict(
        agent="drqn", sequence_length=8, sequence_period=4, burn_in=2, buffer_capacity=512
    )
    config = CARTPOLE_TINY.replace(**{**settings, **changes})
    with pytest.raises(ValueError, match=words):
        make_train(config)
