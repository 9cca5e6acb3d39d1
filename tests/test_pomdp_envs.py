"""The partially observable task suite (memjax.envs.pomdp) against its definitions.

Each card game runs beside a plain-Python transcription of POPGym's code (popgym 1.0.7)
dealt the same deck, MemoryChain beside a transcription of bsuite's, and StatelessCartPole
beside gymnax's CartPole-v1 driven by the same keys and actions. Then the returns: the best
policy (one that reads the hidden state) gets the maximal return, a uniformly random or a
constant one about chance, every return within its bounds; and the loop trains on each.
"""

import functools

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import hypergeom

import memjax as mj
from memjax.envs import pomdp

SUITE = [
    "StatelessCartPole",
    "NoisyStatelessCartPole",
    "RepeatFirst",
    "RepeatPrevious",
    "CountRecall",
    "MemoryChain-20",
]


# ---------------------------------------------------------------- rollouts


@functools.cache
def made(name):
    """One instance per name, so that the jitted rollout (the environment is a static
    argument) compiles once per environment."""
    if name == "CartPole-v1":
        return gymnax.make(name)
    return mj.envs.make(name)


def oracle(name, env, state, params):
    """The best action, read from the hidden state (ONE environment)."""
    if name == "RepeatFirst":
        return state.suits[0]
    if name == "RepeatPrevious":
        return state.suits[jnp.maximum(state.time + 1 - params.k, 0)]
    if name.startswith("CountRecall"):
        return env.count(state)
    if name.startswith("MemoryChain"):
        return state.context[state.query]
    # CartPole: a linear full-state controller keeps the pole up for the whole episode
    push = 0.5 * state.x + state.x_dot + 20.0 * state.theta + 3.0 * state.theta_dot
    return (push > 0).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=0)
def _rollout(name, params, key, actions, use_oracle):
    env, _ = made(name)
    batch = actions.shape[0]
    k_reset, key = jax.random.split(key)
    obs0, state0 = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k_reset, batch), params)
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    vbest = jax.vmap(lambda s: oracle(name, env, s, params))

    def body(state, xs):
        key, action = xs
        action = jnp.where(use_oracle, vbest(state).astype(jnp.int32), action)
        obs, new, reward, terminated, truncated, info = vstep(
            jax.random.split(key, batch), state, action, params
        )
        return new, {
            "obs": obs,
            "state": new,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "final_obs": info["final_observation"],
            "action": action,
        }

    steps = jax.random.split(key, actions.shape[1])
    _, out = jax.lax.scan(body, state0, (steps, jnp.swapaxes(actions, 0, 1)))
    return obs0, state0, out


SHAPES = {"cards": (200, 70), "cartpole": (400, 500)}  # environments x steps per rollout


def rollout(name, actions=None, params=None, seed=0, best=False):
    """Environments stepped through gymnax's ``step`` (auto-reset) with ``actions`` int
    [B, T] (default: uniformly random), or with the oracle's actions if ``best``. Returns
    NumPy (obs0 [B, ...], state0, per-step dict [T, B, ...])."""
    env, default = made(name)
    if actions is None:
        batch, steps = SHAPES["cartpole" if "CartPole" in name else "cards"]
        actions = np.random.default_rng(seed).integers(0, env.num_actions, (batch, steps))
    return jax.device_get(
        _rollout(
            name,
            default if params is None else params,
            jax.random.key(seed),
            jnp.asarray(actions, jnp.int32),
            jnp.bool_(best),
        )
    )


def episode_returns(steps, first_only=False):
    """Returns and lengths of the episodes that ended within the rollout, in each
    environment (only its first one with ``first_only``)."""
    done = steps["terminated"] | steps["truncated"]
    returns, lengths = [], []
    for b in range(done.shape[1]):
        ends = np.flatnonzero(done[:, b])[: 1 if first_only else None]
        starts = np.concatenate([[0], ends[:-1] + 1])
        returns += [steps["reward"][s : e + 1, b].sum() for s, e in zip(starts, ends)]
        lengths += list(ends - starts + 1)
    return np.array(returns), np.array(lengths)


def at(tree, *index):
    return jax.tree.map(lambda x: np.asarray(x)[index], tree)


# ---------------------------------------------------------------- references


def one_hot(i, n):
    out = np.zeros(n, np.float32)
    out[i] = 1.0
    return out


class RefRepeatFirst:
    """popgym/envs/repeat_first.py on a given deck of suits (dealing order)."""

    def __init__(self, suits, num_suits=4):
        self.deck, self.num_suits, self.num_cards = list(suits), num_suits, len(suits)

    def obs(self, first):
        return np.concatenate([one_hot(self.deck[self.dealt - 1], self.num_suits), [first]])

    def reset(self):
        self.dealt = 1
        self.card = self.deck[0]
        return self.obs(1.0)

    def step(self, action):
        reward_scale = 1 / (self.num_cards - 1)
        reward = reward_scale if action == self.card else -reward_scale
        terminated = self.num_cards - self.dealt == 1  # len(self.deck) == 1
        self.dealt += 1
        return self.obs(0.0), reward, terminated


class RefRepeatPrevious:
    """popgym/envs/repeat_previous.py on a given deck of suits."""

    def __init__(self, suits, num_suits=4, k=8):
        self.deck, self.num_suits, self.num_cards, self.k = list(suits), num_suits, len(suits), k

    def obs(self, first):
        return np.concatenate([one_hot(self.hand[-1], self.num_suits), [first]])

    def reset(self):
        self.hand = [self.deck[0]]
        return self.obs(1.0)

    def step(self, action):
        reward_scale = 1 / (self.num_cards - self.k)
        reward = 0
        terminated = self.num_cards - len(self.hand) == 1
        if len(self.hand) >= self.k:
            reward = reward_scale if action == self.hand[-self.k] else -reward_scale
        self.hand.append(self.deck[len(self.hand)])
        return self.obs(0.0), reward, terminated


class RefCountRecall:
    """popgym/envs/count_recall.py on a given value deck and query deck."""

    def __init__(self, decks, num_values=2):
        self.values, self.queries = list(decks[0]), list(decks[1])
        self.num_values, self.num_cards = num_values, len(self.values)

    def deal(self):
        self.dealt += 1
        return self.values[self.dealt - 1], self.queries[self.dealt - 1]

    def obs(self, first):
        return np.concatenate(
            [one_hot(self.value, self.num_values), one_hot(self.query, self.num_values), [first]]
        )

    def reset(self):
        self.dealt = 0
        self.counts = np.zeros(self.num_values, int)
        self.value, self.query = self.deal()
        self.counts[self.value] += 1
        return self.obs(1.0)

    def step(self, action):
        prev_count = self.counts[self.query]
        self.value, self.query = self.deal()
        self.counts[self.value] += 1
        reward = (1 if action == prev_count else -1) / (self.num_cards - 1)
        terminated = self.num_cards - self.dealt == 0  # len(self.value_deck) == 0
        return self.obs(0.0), reward, terminated


class RefMemoryChain:
    """bsuite/environments/memory_chain.py for a given context and query."""

    def __init__(self, context_query, memory_length=20):
        self.context, self.query = context_query
        self.memory_length, self.num_bits = memory_length, len(self.context)

    def _get_observation(self):
        obs = np.zeros(self.num_bits + 2, np.float32)
        obs[0] = 1 - self._timestep / self.memory_length
        if self._timestep == self.memory_length - 1:
            obs[1] = self.query
        if self._timestep == 0:
            obs[2:] = 2 * np.asarray(self.context) - 1
        return obs

    def reset(self):
        self._timestep = 0
        return self._get_observation()

    def step(self, action):
        observation = self._get_observation()
        self._timestep += 1
        if self._timestep - 1 < self.memory_length:
            return observation, 0.0, False
        assert self._timestep - 1 == self.memory_length
        return observation, (1.0 if action == self.context[self.query] else -1.0), True


DECKS = {  # what a reference needs from the environment's state, for environment b
    "RepeatFirst": lambda s, b: np.asarray(s.suits)[b],
    "RepeatPrevious": lambda s, b: np.asarray(s.suits)[b],
    "CountRecall": lambda s, b: (np.asarray(s.values)[b], np.asarray(s.queries)[b]),
    "MemoryChain-20": lambda s, b: (np.asarray(s.context)[b], int(np.asarray(s.query)[b])),
}
REFERENCES = {
    "RepeatFirst": RefRepeatFirst,
    "RepeatPrevious": RefRepeatPrevious,
    "CountRecall": RefCountRecall,
    "MemoryChain-20": RefMemoryChain,
}


def check_against_reference(name, rollout_out, envs=4, **ref_kwargs):
    """Every observation, reward and end of the first ``envs`` environments of a rollout
    equals the reference's, across auto-resets (a fresh reference on each new deck).
    Returns the number of episodes checked."""
    obs0, state0, steps = rollout_out
    make_ref = functools.partial(REFERENCES[name], **ref_kwargs)
    deck = DECKS[name]
    episodes = 0
    for b in range(envs):
        ref = make_ref(deck(state0, b))
        np.testing.assert_allclose(obs0[b], ref.reset())
        for t in range(steps["action"].shape[0]):
            obs, reward, terminated = ref.step(int(steps["action"][t, b]))
            np.testing.assert_allclose(
                steps["final_obs"][t, b], obs, atol=1e-6, err_msg=f"env {b} step {t}"
            )
            np.testing.assert_allclose(steps["reward"][t, b], reward, rtol=1e-6, atol=1e-7)
            assert bool(steps["terminated"][t, b]) == terminated, (b, t)
            assert not steps["truncated"][t, b], (b, t)
            if terminated:
                episodes += 1
                ref = make_ref(deck(at(steps["state"], t), b))
                np.testing.assert_allclose(steps["obs"][t, b], ref.reset())
            else:
                np.testing.assert_allclose(steps["obs"][t, b], obs, atol=1e-6)
    return episodes


# ---------------------------------------------------------------- the card games and MemoryChain


MEMORY_TASKS = ["RepeatFirst", "RepeatPrevious", "CountRecall", "MemoryChain-20"]
CHANCE = {
    "RepeatFirst": -0.5,
    "RepeatPrevious": -0.5,
    "CountRecall": 2 / 9 - 1,
    "MemoryChain-20": 0.0,
}
LENGTH = {"RepeatFirst": 31, "RepeatPrevious": 31, "CountRecall": 15, "MemoryChain-20": 21}


@pytest.mark.parametrize("name", MEMORY_TASKS)
def test_matches_reference_over_random_actions(name):
    assert check_against_reference(name, rollout(name, seed=3)) >= 4 * 2  # auto-resets too


def test_popgym_sizes():
    """POPGym Easy's decks: 52 cards, 51 steps, and for CountRecall 27 actions (the rules
    do not depend on the size; the references above check them on 32 and 16 cards)."""
    for env in (
        pomdp.RepeatFirst(num_ranks=13),
        pomdp.RepeatPrevious(num_ranks=13),
        pomdp.CountRecall(cards_per_value=26),
    ):
        assert env.num_cards == 52 and env.default_params.max_steps_in_episode == 51
        obs, state = jax.eval_shape(env.reset, jax.random.key(0), env.default_params)
        assert obs.shape == env.observation_space(env.default_params).shape
    assert env.num_actions == 27 and state.values.shape == state.queries.shape == (52,)


@settings(max_examples=20)
@given(k=st.integers(1, 31), seed=st.integers(0, 2**31 - 1))
def test_repeat_previous_any_k(k, seed):
    """Any k against the reference; the best policy scores from step k on, 1 / (32 - k)
    every time, and so gets 1."""
    params = made("RepeatPrevious")[1].replace(k=k)
    assert (
        check_against_reference(
            "RepeatPrevious", rollout("RepeatPrevious", params=params, seed=seed), envs=2, k=k
        )
        >= 4
    )
    _, _, steps = rollout("RepeatPrevious", params=params, seed=seed, best=True)
    assert np.all(steps["reward"][: k - 1] == 0)
    np.testing.assert_allclose(steps["reward"][k - 1 : 31], 1 / (32 - k), rtol=1e-6)
    np.testing.assert_allclose(episode_returns(steps)[0], 1.0, rtol=1e-5)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31 - 1))
def test_each_deck_is_a_shuffle(seed):
    for name, fields, cards, values in [
        ("RepeatFirst", ("suits",), 32, 4),
        ("CountRecall", ("values", "queries"), 16, 2),
    ]:
        _, state, _ = rollout(name, seed=seed)
        for field in fields:
            deck = np.asarray(getattr(state, field))
            np.testing.assert_array_equal(
                np.sort(deck, axis=1), np.tile(np.sort(np.arange(cards) % values), (200, 1))
            )
            assert len({tuple(row) for row in deck}) > 100  # different keys, different decks


def count_recall_constant(c, num_cards=16, per_value=8):
    """Expected return of always answering ``c``: the count after t cards is
    hypergeometric (the query's value is uniform and independent of the value deck)."""
    return np.mean([2 * hypergeom.pmf(c, num_cards, per_value, t) - 1 for t in range(1, num_cards)])


@pytest.mark.parametrize("name", MEMORY_TASKS)
def test_returns_best_random_constant(name):
    """The best policy gets 1 in every episode; a uniformly random and every constant one
    about chance; every episode has its length, terminates and returns within [-1, 1]."""
    env, _ = made(name)
    _, _, steps = rollout(name, best=True)
    best, lengths = episode_returns(steps)
    np.testing.assert_allclose(best, 1.0, rtol=1e-5)
    assert np.all(lengths == LENGTH[name]) and not steps["truncated"].any()

    for policy in ["random", *range(env.num_actions)]:
        actions = None if policy == "random" else np.full(SHAPES["cards"], policy)
        returns, lengths = episode_returns(rollout(name, actions, seed=1)[2])
        assert np.all(lengths == LENGTH[name]) and len(returns) >= 400
        assert np.all(returns >= -1 - 1e-5) and np.all(returns <= 1 + 1e-5)
        if name == "CountRecall" and policy != "random":
            expect = count_recall_constant(policy)
        else:
            expect = CHANCE[name]
        se = max(returns.std(), 0.05) / np.sqrt(len(returns))
        assert abs(returns.mean() - expect) < 4 * se, (policy, returns.mean(), expect)


def test_memory_chain_rewards_only_the_last_step():
    _, _, steps = rollout("MemoryChain-20", np.zeros(SHAPES["cards"]))
    for b in range(200):
        ends = np.flatnonzero(steps["terminated"][:, b])
        np.testing.assert_array_equal(ends, [20, 41, 62])
        assert np.all(np.abs(steps["reward"][ends, b]) == 1)
        assert steps["reward"][:, b].nonzero()[0].tolist() == ends.tolist()
    env, params = mj.envs.make("MemoryChain-40")
    assert env.name == "MemoryChain-40" and params.memory_length == 40
    assert params.max_steps_in_episode == 41


def test_time_limit_truncates_without_terminating():
    params = made("RepeatFirst")[1].replace(max_steps_in_episode=5)
    _, _, steps = rollout("RepeatFirst", params=params, best=True)
    returns, lengths = episode_returns(steps)
    assert np.all(lengths == 5) and not steps["terminated"].any()
    np.testing.assert_allclose(returns, 5 / 31, rtol=1e-5)


# ---------------------------------------------------------------- CartPole without velocities


def test_stateless_cartpole_is_cartpole_v1_positions():
    """Same keys and actions as gymnax's CartPole-v1: the observations are its x and theta,
    the rewards and ends are its own, across many auto-resets."""
    f_obs0, _, full = rollout("CartPole-v1", seed=5)
    for name in ("StatelessCartPole", "NoisyStatelessCartPole"):
        env, params = made(name)
        if name == "NoisyStatelessCartPole":
            params = params.replace(noise_std=0.0)
        obs0, _, steps = rollout(name, params=params, seed=5)
        np.testing.assert_array_equal(obs0, f_obs0[:, [0, 2]])
        for field in ("obs", "final_obs"):
            np.testing.assert_array_equal(steps[field], full[field][..., [0, 2]])
        for field in ("action", "reward", "terminated", "truncated"):
            np.testing.assert_array_equal(steps[field], full[field])
        assert full["terminated"].sum() >= 400 * 5  # many episodes, all auto-reset
        assert env.observation_space(params).contains(steps["obs"])


def test_noisy_stateless_cartpole_noise():
    env, params = made("NoisyStatelessCartPole")
    assert params.noise_std == 0.1
    obs0, state0, steps = rollout("NoisyStatelessCartPole", seed=6)
    _, _, clean = rollout("StatelessCartPole", seed=6)
    for field in ("reward", "terminated", "truncated"):  # the cart moves the same way
        np.testing.assert_array_equal(steps[field], clean[field])
    true = np.stack([steps["state"].x, steps["state"].theta], -1)  # (reset) state after a step
    noise = np.concatenate(
        [(steps["obs"] - true).reshape(-1, 2), obs0 - np.stack([state0.x, state0.theta], -1)]
    )
    assert np.all(np.abs(noise.mean(axis=0)) < 4 * 0.1 / np.sqrt(len(noise)))
    np.testing.assert_allclose(noise.std(axis=0), 0.1, rtol=0.02)
    # fresh noise for each step and environment: neighbours are uncorrelated
    assert abs(np.corrcoef(noise[:-1, 0], noise[1:, 0])[0, 1]) < 0.01
    # clipped to the observation space
    loud = params.replace(noise_std=10.0)
    _, _, steps = rollout("NoisyStatelessCartPole", params=loud, seed=6)
    low, high = (
        np.asarray(b) for b in (env.observation_space(loud).low, env.observation_space(loud).high)
    )
    for field in ("obs", "final_obs"):
        assert np.all(steps[field] >= low) and np.all(steps[field] <= high)
        assert np.any(steps[field] == low) and np.any(steps[field] == high)


@pytest.mark.parametrize("name", ["StatelessCartPole", "NoisyStatelessCartPole"])
def test_cartpole_returns(name):
    _, _, steps = rollout(name, best=True)
    best, lengths = episode_returns(steps)
    np.testing.assert_array_equal(best, 500.0)  # the maximal return
    assert np.all(lengths == 500) and steps["truncated"][-1].all()
    assert not steps["terminated"].any()
    returns, _ = episode_returns(rollout(name, seed=1)[2], first_only=True)
    assert len(returns) == 400 and 21.0 < returns.mean() < 24.0  # uniformly random: about 22.5
    scaled = made(name)[1].replace(max_steps_in_episode=200, reward_scale=1 / 200)  # POPGym Easy
    best, lengths = episode_returns(rollout(name, params=scaled, best=True)[2])
    np.testing.assert_allclose(best, 1.0, rtol=1e-5)
    assert np.all(lengths == 200)


# ---------------------------------------------------------------- the registry and the spaces


def test_registry_names_spaces_and_errors():
    expected = {
        "StatelessCartPole": (pomdp.StatelessCartPole, (2,), 2),
        "NoisyStatelessCartPole": (pomdp.NoisyStatelessCartPole, (2,), 2),
        "RepeatFirst": (pomdp.RepeatFirst, (5,), 4),
        "RepeatPrevious": (pomdp.RepeatPrevious, (5,), 4),
        "CountRecall": (pomdp.CountRecall, (5,), 9),
        "MemoryChain-20": (pomdp.MemoryChain, (3,), 2),
    }
    for name, (cls, shape, actions) in expected.items():
        env, params = mj.envs.make(name)
        assert type(env) is cls and env.name == name
        assert mj.envs.observation_shape(env, params) == shape
        assert env.observation_space(params).shape == shape
        assert mj.envs.num_actions(env, params) == env.num_actions == actions
        obs0, _, steps = rollout(name, best=True)  # compiled already
        space = made(name)[0].observation_space(params)
        assert obs0.dtype == steps["obs"].dtype == np.float32
        for obs in (obs0, steps["obs"], steps["final_obs"]):
            assert obs.shape[-1:] == shape
            assert np.all(obs >= np.asarray(space.low)) and np.all(obs <= np.asarray(space.high))
    assert mj.envs.make("RepeatPrevious")[1].k == 8
    env, params = mj.envs.make("RepeatPrevious-5")
    assert type(env) is pomdp.RepeatPrevious and params.k == 5
    assert params.replace(k=8) == mj.envs.make("RepeatPrevious")[1]
    for bad in ("RepeatPrevious-32", "RepeatPrevious-100"):
        with pytest.raises(ValueError, match=r"k must lie in 1 \.\. 31"):
            mj.envs.make(bad)
    with pytest.raises(ValueError, match="RepeatPrevious-<k>"):
        mj.envs.make("RepeatPrevious-0")
    assert mj.envs.make("MemoryChain-bsuite")[1].memory_length == 5  # gymnax's own, unchanged
    for bad in ("MemoryChain-0", "MemoryChain-x", "repeatfirst"):
        with pytest.raises(ValueError, match="partially observable suite: .*MemoryChain-<L>"):
            mj.envs.make(bad)
    with pytest.raises(ValueError, match="num_ranks must be >= 1"):
        pomdp.RepeatFirst(num_ranks=0)
    with pytest.raises(ValueError, match="at least 2 cards"):
        pomdp.CountRecall(num_values=1, cards_per_value=1)


# ---------------------------------------------------------------- the training loop


TINY = mj.train.TrainConfig(
    num_envs=4,
    total_steps=400,
    buffer_capacity=200,
    batch_size=8,
    learning_starts=40,
    chunk_steps=360,
    eval_episodes=2,
    agent=mj.agents.DQNConfig(hidden=(8,)),
    eps_decay_steps=200,
)


@pytest.mark.parametrize("name", SUITE)
def test_make_train_traces_on_each_env(name):
    """The whole DQN run traces on every environment (shapes only: compiling each would
    take seconds; the test below compiles and runs one)."""
    trainer = mj.train.make_train(TINY.replace(env=name))
    _, metrics = jax.eval_shape(trainer.train, jax.random.key(0))
    assert metrics["eval_return"].shape == (2,)


def test_dqn_trains_on_repeat_previous_with_a_frame_stack():
    """One whole run compiled and run: DQN with a 4-frame stack on RepeatPrevious."""
    trainer = mj.train.make_train(TINY.replace(env="RepeatPrevious", frame_stack=4))
    state, metrics = jax.jit(trainer.train)(jax.random.key(0))
    assert state.obs.shape == (4, 20)
    assert np.all(np.isfinite(np.asarray(metrics["train"]["loss"])))
    returns = np.asarray(metrics["eval_return"])
    assert np.all(np.asarray(metrics["eval_finished"]))
    assert np.all(returns >= -1 - 1e-5) and np.all(returns <= 1 + 1e-5)
