"""Q-learning targets (1-step and n-step), losses, the DQN agent, policies and networks,
against NumPy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memjax import agents
from memjax.replay import Sample

GAMMA = 0.99


# --------------------------------------------------------------------------- NumPy references


def np_n_step(rewards, terminated, first, gamma):
    """Loop-by-loop reference: (partial return, discount, last step used)."""
    partial, power = 0.0, 1.0
    for k in range(len(rewards)):
        partial += power * rewards[k]
        power *= gamma
        ends = terminated[k] or (k + 1 < len(rewards) and first[k + 1])
        if ends or k == len(rewards) - 1:
            return partial, power * (1.0 - float(terminated[k])), k


def np_huber(x, delta=1.0):
    ax = np.abs(x)
    return np.where(ax <= delta, 0.5 * x**2, delta * (ax - 0.5 * delta))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    B, A = 16, 3
    return dict(
        q_tm1=rng.normal(size=(B, A)).astype(np.float32) * 2,
        q_target=rng.normal(size=(B, A)).astype(np.float32) * 2,
        q_online=rng.normal(size=(B, A)).astype(np.float32) * 2,
        a=rng.integers(0, A, size=B).astype(np.int32),
        targets=rng.normal(size=B).astype(np.float32) * 3,
        w=rng.uniform(0.1, 1.0, size=B).astype(np.float32),
    )


# --------------------------------------------------------------------------- targets


window = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-5, 5, width=32), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
    )
)


@given(window)
def test_n_step_bootstrap_matches_numpy(case):
    rewards, terminated, first, gamma = case
    want = np_n_step(rewards, terminated, first, gamma)
    got = agents.n_step_bootstrap(
        jnp.asarray(rewards, jnp.float32),
        jnp.asarray(terminated, jnp.float32),
        jnp.asarray(first),
        gamma,
    )
    np.testing.assert_allclose(float(got[0]), want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(got[1]), want[1], rtol=1e-6, atol=1e-7)
    assert int(got[2]) == want[2]


def test_one_step_window_is_the_one_step_target_exactly():
    partial, discount, last = agents.n_step_bootstrap(
        jnp.array([1.7], jnp.float32), jnp.array([0.0]), jnp.array([True]), 0.97
    )
    assert float(partial) == np.float32(1.7) and float(discount) == np.float32(0.97)
    assert int(last) == 0
    _, discount, _ = agents.n_step_bootstrap(
        jnp.array([1.0]), jnp.array([1.0]), jnp.array([False]), 0.97
    )
    assert float(discount) == 0.0


def test_bootstrap_value_and_td(batch):
    q_target, q_online = jnp.asarray(batch["q_target"]), jnp.asarray(batch["q_online"])
    b = np.arange(len(batch["a"]))
    np.testing.assert_allclose(jax.vmap(agents.bootstrap_value)(q_target), batch["q_target"].max(1))
    np.testing.assert_allclose(
        jax.vmap(agents.bootstrap_value)(q_target, q_online),
        batch["q_target"][b, batch["q_online"].argmax(1)],
    )
    td = jax.vmap(agents.q_learning_td)(
        jnp.asarray(batch["q_tm1"]), jnp.asarray(batch["a"]), jnp.asarray(batch["targets"])
    )
    np.testing.assert_allclose(td, batch["targets"] - batch["q_tm1"][b, batch["a"]], rtol=1e-6)


def test_no_gradient_through_target(batch):
    def f(q_tm1, target):
        return jnp.sum(jax.vmap(agents.q_learning_td)(q_tm1, jnp.asarray(batch["a"]), target))

    g_q, g_t = jax.grad(f, argnums=(0, 1))(
        jnp.asarray(batch["q_tm1"]), jnp.asarray(batch["targets"])
    )
    assert np.all(np.asarray(g_t) == 0)
    assert np.sum(np.asarray(g_q) != 0) == len(batch["a"])


def test_shape_errors_are_clear():
    with pytest.raises(AssertionError, match="rank"):
        agents.n_step_bootstrap(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.zeros((2, 3), bool), 0.9)
    with pytest.raises(AssertionError, match="shape"):
        agents.n_step_bootstrap(jnp.zeros(3), jnp.zeros(2), jnp.zeros(3, bool), 0.9)
    with pytest.raises(AssertionError):
        agents.q_learning_td(jnp.zeros(3), jnp.float32(0), jnp.float32(0))  # float action
    with pytest.raises(AssertionError, match="shape"):
        agents.weighted_loss(jnp.zeros(4), jnp.ones(3))


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("loss", ["mse", "huber"])
@pytest.mark.parametrize("weighted", [False, True])
def test_weighted_loss_matches_numpy(batch, loss, weighted):
    td = batch["targets"]
    w = batch["w"] if weighted else None
    got = agents.weighted_loss(
        jnp.asarray(td), None if w is None else jnp.asarray(w), loss=loss, huber_delta=1.5
    )
    per = np_huber(td, 1.5) if loss == "huber" else 0.5 * td**2
    np.testing.assert_allclose(float(got), np.mean(per * (1 if w is None else w)), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        agents.weighted_loss(jnp.asarray(td), loss="l1")


def _linear_q(w, obs):  # Q(obs) = [w * obs0, w * obs0 + 1]
    return jnp.stack([w * obs[:, 0], w * obs[:, 0] + 1.0], axis=-1)


def test_td_errors_on_windows_match_numpy():
    """n-step TD errors of a batch of windows: obs [B, n, 1], bootstrap at next_obs[m]."""
    rng = np.random.default_rng(3)
    B, n = 64, 4
    windows = {
        "obs": rng.normal(size=(B, n, 1)).astype(np.float32),
        "next_obs": rng.normal(size=(B, n, 1)).astype(np.float32),
        "action": rng.integers(0, 2, (B, n)).astype(np.int32),
        "reward": rng.normal(size=(B, n)).astype(np.float32),
        "terminated": (rng.random((B, n)) < 0.2).astype(np.float32),
        "first": rng.random((B, n)) < 0.2,
    }
    for double in (False, True):
        td, q_tm1 = agents.td_errors(0.5, 2.0, _linear_q, windows, gamma=0.9, double=double)
        want = []
        for i in range(B):
            partial, discount, m = np_n_step(
                windows["reward"][i], windows["terminated"][i], windows["first"][i], 0.9
            )
            x = windows["next_obs"][i, m, 0]
            q_t = np.array([2 * x, 2 * x + 1])
            value = q_t[np.argmax([0.5 * x, 0.5 * x + 1])] if double else q_t.max()
            q = np.array([0.5 * windows["obs"][i, 0, 0], 0.5 * windows["obs"][i, 0, 0] + 1])
            want.append(partial + discount * value - q[windows["action"][i, 0]])
        np.testing.assert_allclose(td, want, rtol=1e-5, atol=1e-5)
        assert q_tm1.shape == (B, 2)


def test_transitions_are_windows_of_one():
    rng = np.random.default_rng(4)
    tr = {
        "obs": rng.normal(size=(8, 1)).astype(np.float32),
        "next_obs": rng.normal(size=(8, 1)).astype(np.float32),
        "action": rng.integers(0, 2, 8).astype(np.int32),
        "reward": rng.normal(size=8).astype(np.float32),
        "terminated": (rng.random(8) < 0.5).astype(np.float32),
    }
    flat, _ = agents.td_errors(0.5, 2.0, _linear_q, tr, gamma=0.9, double=False)
    windowed, _ = agents.td_errors(
        0.5, 2.0, _linear_q, agents.as_windows(tr), gamma=0.9, double=False
    )
    np.testing.assert_array_equal(flat, windowed)
    q_next = np.stack([2 * tr["next_obs"][:, 0], 2 * tr["next_obs"][:, 0] + 1], -1).max(-1)
    q = np.stack([0.5 * tr["obs"][:, 0], 0.5 * tr["obs"][:, 0] + 1], -1)[np.arange(8), tr["action"]]
    np.testing.assert_allclose(
        flat, tr["reward"] + 0.9 * (1 - tr["terminated"]) * q_next - q, rtol=1e-6
    )


# --------------------------------------------------------------------------- the DQN agent


@pytest.fixture(scope="module")
def dqn():
    network = agents.MLPQNetwork(num_actions=2, hidden=(8,))
    agent = agents.make_dqn(
        network, 2, optax.sgd(0.1), epsilon=optax.linear_schedule(1.0, 0.0, 100), target_period=3
    )
    return network, agent


def _sample(rng, B=8):
    items = {
        "obs": rng.normal(size=(B, 3)).astype(np.float32),
        "next_obs": rng.normal(size=(B, 3)).astype(np.float32),
        "action": rng.integers(0, 2, B).astype(np.int32),
        "reward": rng.normal(size=B).astype(np.float32),
        "terminated": np.zeros(B, np.float32),
    }
    return Sample(
        items=jax.tree.map(jnp.asarray, items),
        indices=jnp.arange(B, dtype=jnp.int32),
        weights=jnp.ones(B),
        probabilities=jnp.full(B, 1.0 / B),
    )


def test_dqn_learn_descends_and_updates_target_every_period(dqn):
    network, agent = dqn
    state = agent.init(jax.random.key(0), jnp.zeros(3))
    assert state.updates == 0 and agent.initial_carry(4) == ()
    chex.assert_trees_all_equal(state.params, state.target_params)
    learn = jax.jit(agent.learn)
    rng = np.random.default_rng(0)
    sample = _sample(rng)
    targets = []
    for i in range(1, 7):
        before = state
        state, priorities, metrics = learn(state, sample, jax.random.key(i))
        targets.append(state.target_params)
        # plain SGD on 0.5 * mean(td^2): the step is -lr * gradient
        grads = jax.grad(
            lambda p: agents.weighted_loss(
                agents.td_errors(
                    p, before.target_params, network.apply, sample.items, gamma=0.99, double=False
                )[0]
            )
        )(before.params)
        chex.assert_trees_all_close(
            state.params,
            jax.tree.map(lambda p, g: p - 0.1 * g, before.params, grads),
            rtol=1e-5,
            atol=1e-6,
        )
        td, _ = agents.td_errors(
            before.params,
            before.target_params,
            network.apply,
            sample.items,
            gamma=0.99,
            double=False,
        )
        np.testing.assert_allclose(priorities, np.abs(td) + 1e-6, rtol=1e-6)
        assert set(metrics) == {"loss", "q"}
        if i % 3 == 0:
            chex.assert_trees_all_equal(state.target_params, state.params)
        else:
            chex.assert_trees_all_equal(state.target_params, before.target_params)
    assert int(state.updates) == 6


def test_dqn_polyak_target_and_act(dqn):
    network, _ = dqn
    agent = agents.make_dqn(
        network, 2, optax.sgd(0.1), epsilon=lambda step: 0.5, tau=0.25, target_period=1
    )
    state = agent.init(jax.random.key(0), jnp.zeros(3))
    new, _, _ = agent.learn(state, _sample(np.random.default_rng(1)), jax.random.key(0))
    chex.assert_trees_all_close(
        new.target_params,
        jax.tree.map(lambda t, o: 0.75 * t + 0.25 * o, state.target_params, new.params),
        rtol=1e-6,
    )
    obs = jnp.asarray(np.random.default_rng(2).normal(size=(4000, 3)), jnp.float32)
    greedy, carry, extras = agent.act(state, (), obs, jax.random.key(1), 0, True)
    np.testing.assert_array_equal(greedy, jnp.argmax(network.apply(state.params, obs), -1))
    assert carry == () and extras == {}
    explored, _, _ = agent.act(state, (), obs, jax.random.key(1), 0, False)
    # epsilon 0.5 over 2 actions: 75% of the actions are the greedy ones
    np.testing.assert_allclose(np.mean(np.asarray(explored) == np.asarray(greedy)), 0.75, atol=0.03)
    with pytest.raises(ValueError, match="target_period"):
        agents.make_dqn(network, 2, optax.sgd(0.1), epsilon=lambda s: 0.0, target_period=0)


# --------------------------------------------------------------------------- policies


def test_epsilon_greedy():
    key = jax.random.key(0)
    q = jnp.tile(jnp.array([0.0, 5.0, 1.0, 2.0]), (20_000, 1))
    greedy = agents.epsilon_greedy(key, q, 0.0)
    assert greedy.dtype == jnp.int32 and greedy.shape == (20_000,)
    assert np.all(np.asarray(greedy) == 1)
    rand = np.asarray(agents.epsilon_greedy(key, q, 1.0))
    np.testing.assert_allclose(np.bincount(rand, minlength=4) / 20_000, 0.25, atol=0.02)
    half = np.asarray(agents.epsilon_greedy(key, q, 0.5))
    np.testing.assert_allclose(np.mean(half == 1), 0.5 + 0.5 / 4, atol=0.02)
    other = np.asarray(agents.epsilon_greedy(jax.random.key(1), q, 1.0))
    assert np.mean(other != rand) > 0.5
    # explore() on the greedy actions is the same draw
    np.testing.assert_array_equal(agents.explore(key, jnp.ones(20_000, jnp.int32), 4, 0.5), half)


# --------------------------------------------------------------------------- networks


def test_networks_shapes_and_auto_rule():
    mlp = agents.MLPQNetwork(num_actions=2)
    p = mlp.init(jax.random.key(0), jnp.zeros((5, 4)))
    assert mlp.apply(p, jnp.zeros((5, 4))).shape == (5, 2)
    kernels = [x.shape for x in jax.tree.leaves(p)]
    assert (4, 120) in kernels and (120, 84) in kernels and (84, 2) in kernels
    conv = agents.make_network("conv", 3)
    obs = jnp.zeros((2, 10, 10, 4), jnp.bool_)
    pc = conv.init(jax.random.key(0), obs)
    out = conv.apply(pc, obs)
    assert out.shape == (2, 3) and out.dtype == jnp.float32
    with pytest.raises(ValueError, match="network"):
        agents.make_network("transformer", 2)
    assert agents.network_kind("auto", (10, 10, 4)) == "conv"
    assert agents.network_kind("auto", (4,)) == "mlp"
    with pytest.raises(ValueError, match="needs image observations"):
        agents.network_kind("conv", (4,))
