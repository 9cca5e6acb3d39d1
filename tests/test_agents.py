"""Losses, target updates, schedules and networks against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax import agents

GAMMA = 0.99


# --------------------------------------------------------------------------- NumPy references


def np_huber(x, delta=1.0):
    ax = np.abs(x)
    return np.where(ax <= delta, 0.5 * x**2, delta * (ax - 0.5 * delta))


def np_dqn(q_tm1, a, r, disc, q_t_target, q_t_online=None, weights=None, loss="huber",
           delta=1.0):
    b = np.arange(len(a))
    if q_t_online is None:
        v = q_t_target.max(axis=1)
    else:
        v = q_t_target[b, q_t_online.argmax(axis=1)]
    td = r + disc * v - q_tm1[b, a]
    per = np_huber(td, delta) if loss == "huber" else 0.5 * td**2
    w = np.ones_like(td) if weights is None else weights
    return float(np.mean(w * per)), np.abs(td)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    B, A = 16, 3
    q_tm1 = rng.normal(size=(B, A)).astype(np.float32) * 2
    q_t_target = rng.normal(size=(B, A)).astype(np.float32) * 2
    q_t_online = rng.normal(size=(B, A)).astype(np.float32) * 2
    a = rng.integers(0, A, size=B).astype(np.int32)
    r = rng.normal(size=B).astype(np.float32)
    term = (rng.random(B) < 0.3).astype(np.float32)
    disc = (GAMMA * (1 - term)).astype(np.float32)
    w = rng.uniform(0.1, 1.0, size=B).astype(np.float32)
    return dict(q_tm1=q_tm1, q_t_target=q_t_target, q_t_online=q_t_online, a=a, r=r,
                disc=disc, w=w, term=term)


# --------------------------------------------------------------------------- losses


def test_huber_matches_numpy():
    x = np.linspace(-3, 3, 61).astype(np.float32)
    for delta in (0.5, 1.0, 2.0):
        np.testing.assert_allclose(agents.huber(jnp.asarray(x), delta), np_huber(x, delta),
                                   rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(agents.l2(jnp.asarray(x)), 0.5 * x**2, rtol=1e-6)


@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("weighted", [False, True])
def test_dqn_loss_matches_numpy(batch, loss, weighted):
    w = batch["w"] if weighted else None
    got, abs_td = agents.dqn_loss(jnp.asarray(batch["q_tm1"]), jnp.asarray(batch["a"]),
                                  jnp.asarray(batch["r"]), jnp.asarray(batch["disc"]),
                                  jnp.asarray(batch["q_t_target"]),
                                  None if w is None else jnp.asarray(w), loss=loss)
    want, want_td = np_dqn(batch["q_tm1"], batch["a"], batch["r"], batch["disc"],
                           batch["q_t_target"], weights=w, loss=loss)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(abs_td), want_td, rtol=1e-5, atol=1e-6)
    assert abs_td.shape == (16,) and abs_td.dtype == jnp.float32


@pytest.mark.parametrize("loss", ["huber", "mse"])
@pytest.mark.parametrize("weighted", [False, True])
def test_double_dqn_loss_matches_numpy(batch, loss, weighted):
    w = batch["w"] if weighted else None
    got, abs_td = agents.double_dqn_loss(
        jnp.asarray(batch["q_tm1"]), jnp.asarray(batch["a"]), jnp.asarray(batch["r"]),
        jnp.asarray(batch["disc"]), jnp.asarray(batch["q_t_target"]),
        jnp.asarray(batch["q_t_online"]), None if w is None else jnp.asarray(w), loss=loss)
    want, want_td = np_dqn(batch["q_tm1"], batch["a"], batch["r"], batch["disc"],
                           batch["q_t_target"], q_t_online=batch["q_t_online"], weights=w,
                           loss=loss)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(abs_td), want_td, rtol=1e-5, atol=1e-6)
    # Double DQN genuinely differs from DQN on this batch (the selector disagrees with max).
    dqn, _ = np_dqn(batch["q_tm1"], batch["a"], batch["r"], batch["disc"], batch["q_t_target"],
                    weights=w, loss=loss)
    assert abs(dqn - want) > 1e-3


def test_huber_and_mse_differ_only_for_large_errors():
    q_tm1 = jnp.zeros((2, 2))
    a = jnp.array([0, 0], jnp.int32)
    disc = jnp.zeros(2)
    small, _ = agents.dqn_loss(q_tm1, a, jnp.array([0.5, -0.5]), disc, jnp.zeros((2, 2)),
                               loss="huber")
    small_mse, _ = agents.dqn_loss(q_tm1, a, jnp.array([0.5, -0.5]), disc, jnp.zeros((2, 2)),
                                   loss="mse")
    np.testing.assert_allclose(small, small_mse)  # both 0.5 * 0.25
    big, _ = agents.dqn_loss(q_tm1, a, jnp.array([3.0, -3.0]), disc, jnp.zeros((2, 2)),
                             loss="huber")
    big_mse, _ = agents.dqn_loss(q_tm1, a, jnp.array([3.0, -3.0]), disc, jnp.zeros((2, 2)),
                                 loss="mse")
    np.testing.assert_allclose(big, 2.5)      # 1 * (3 - 0.5)
    np.testing.assert_allclose(big_mse, 4.5)  # 0.5 * 9


def test_weights_scale_each_item(batch):
    args = [jnp.asarray(batch[k]) for k in ("q_tm1", "a", "r", "disc", "q_t_target")]
    w = np.zeros(16, np.float32)
    w[3] = 1.0
    got, _ = agents.dqn_loss(*args, jnp.asarray(w))
    _, td = np_dqn(batch["q_tm1"], batch["a"], batch["r"], batch["disc"], batch["q_t_target"])
    np.testing.assert_allclose(float(got), np_huber(td[3]) / 16, rtol=1e-5)


def test_no_gradient_through_target(batch):
    def f(q_tm1, q_t_target, q_t_online):
        return agents.double_dqn_loss(q_tm1, jnp.asarray(batch["a"]), jnp.asarray(batch["r"]),
                                      jnp.asarray(batch["disc"]), q_t_target, q_t_online)[0]

    g = jax.grad(f, argnums=(0, 1, 2))(jnp.asarray(batch["q_tm1"]),
                                       jnp.asarray(batch["q_t_target"]),
                                       jnp.asarray(batch["q_t_online"]))
    assert np.any(np.asarray(g[0]) != 0)
    assert np.all(np.asarray(g[1]) == 0) and np.all(np.asarray(g[2]) == 0)


def test_td_loss_terminated_masks_bootstrap():
    # q(obs) = [w * obs[0], w * obs[0] + 1]: max = w * obs[0] + 1
    def apply_fn(w, obs):
        return jnp.stack([w * obs[:, 0], w * obs[:, 0] + 1.0], axis=-1)

    batch = {"obs": jnp.array([[1.0], [2.0]]), "action": jnp.array([0, 1], jnp.int32),
             "reward": jnp.array([1.0, 1.0]), "next_obs": jnp.array([[5.0], [5.0]]),
             "terminated": jnp.array([0.0, 1.0])}
    loss, (abs_td, _) = agents.td_loss(0.0, 1.0, apply_fn, batch, gamma=0.5, double=False,
                                       loss="mse")
    # targets: 1 + 0.5 * 6 = 4 (bootstrapped), 1 (terminal); q_sa = 0 and 1
    np.testing.assert_allclose(np.asarray(abs_td), [4.0, 0.0])
    np.testing.assert_allclose(float(loss), 0.5 * 16 / 2)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="a_tm1"):
        agents.dqn_loss(jnp.zeros((4, 2)), jnp.zeros((3,), jnp.int32), jnp.zeros(4),
                        jnp.zeros(4), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="weights"):
        agents.dqn_loss(jnp.zeros((4, 2)), jnp.zeros((4,), jnp.int32), jnp.zeros(4),
                        jnp.zeros(4), jnp.zeros((4, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="loss"):
        agents.dqn_loss(jnp.zeros((4, 2)), jnp.zeros((4,), jnp.int32), jnp.zeros(4),
                        jnp.zeros(4), jnp.zeros((4, 2)), loss="l1")


# --------------------------------------------------------------------------- target updates


def _params(v):
    return {"a": jnp.full((3,), v, jnp.float32), "b": {"c": jnp.full((2, 2), v, jnp.float32)}}


def test_soft_update():
    out = agents.soft_update(_params(0.0), _params(10.0), 0.1)
    for leaf in jax.tree.leaves(out):
        np.testing.assert_allclose(leaf, 1.0, rtol=1e-6)
    same = agents.soft_update(_params(3.0), _params(10.0), 1.0)
    for leaf in jax.tree.leaves(same):
        np.testing.assert_allclose(leaf, 10.0)


def test_hard_update_every_period_env_steps():
    # 10 envs per vector step, copy every 500 env steps -> every 50 vector steps
    target, copies = _params(-1.0), []
    for step in range(1, 201):
        online = _params(float(step))
        target = agents.periodic_update(target, online, (step - 1) * 10, step * 10, 500)
        if float(target["a"][0]) == step:
            copies.append(step)
    assert copies == [50, 100, 150, 200]
    np.testing.assert_allclose(target["b"]["c"], 200.0)


def test_periodic_soft_update_and_jit_vmap():
    f = jax.jit(jax.vmap(lambda t, o, b, a: agents.periodic_update(t, o, b, a, 4, tau=0.5)))
    t = jax.tree.map(lambda x: jnp.stack([x, x]), _params(0.0))
    o = jax.tree.map(lambda x: jnp.stack([x, x]), _params(2.0))
    out = f(t, o, jnp.array([3, 4]), jnp.array([4, 5]))  # seed 0 crosses 4, seed 1 does not
    np.testing.assert_allclose(out["a"][0], 1.0)
    np.testing.assert_allclose(out["a"][1], 0.0)


# --------------------------------------------------------------------------- schedules


def test_epsilon_schedule():
    eps = agents.epsilon_schedule(1.0, 0.05, 250_000)
    np.testing.assert_allclose(eps(0), 1.0)
    np.testing.assert_allclose(eps(125_000), 0.525, rtol=1e-6)
    np.testing.assert_allclose(eps(250_000), 0.05, rtol=1e-6)
    np.testing.assert_allclose(eps(10**7), 0.05, rtol=1e-6)
    np.testing.assert_allclose(eps(jnp.array([0, 50_000])), [1.0, 0.81], rtol=1e-6)


def test_beta_schedule():
    beta = agents.beta_schedule(0.4, 1.0, begin=10_000, steps=490_000)
    np.testing.assert_allclose(beta(0), 0.4)
    np.testing.assert_allclose(beta(10_000), 0.4)
    np.testing.assert_allclose(beta(255_000), 0.7, rtol=1e-6)
    np.testing.assert_allclose(beta(500_000), 1.0)
    np.testing.assert_allclose(beta(600_000), 1.0)


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
    # different keys explore differently
    other = np.asarray(agents.epsilon_greedy(jax.random.key(1), q, 1.0))
    assert np.mean(other != rand) > 0.5


# --------------------------------------------------------------------------- networks


def test_networks_shapes():
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
