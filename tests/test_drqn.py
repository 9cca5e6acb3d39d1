"""DRQN: the recurrent unroll and the window TD errors against a step-by-step Python
reference, burn-in without gradient, the stored carry, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import memjax as mj
from memjax.agents import RecurrentQNetwork, make_drqn, unroll, window_td_errors
from memjax.agents.drqn import carry_from_stored, stored_carry

B, L, OBS, A = 3, 9, 4, 3


def windows(key, length=L):
    """Random windows with episode ends inside: terminated[t] or a time limit at t both
    make first[t + 1] True."""
    k = jax.random.split(key, 6)
    ends = jax.random.uniform(k[0], (B, length)) < 0.2
    terminated = ends & (jax.random.uniform(k[1], (B, length)) < 0.5)
    first = jnp.concatenate([jax.random.uniform(k[2], (B, 1)) < 0.5, ends[:, :-1]], axis=1)
    obs = jax.random.normal(k[3], (B, length, OBS))
    final = jax.random.normal(k[4], (B, length, OBS))
    following = jnp.concatenate([obs[:, 1:], jax.random.normal(k[5], (B, 1, OBS))], axis=1)
    next_obs = jnp.where(ends[..., None], final, following)
    return {
        "obs": obs,
        "next_obs": next_obs,
        "first": first,
        "terminated": terminated.astype(jnp.float32),
        "action": jax.random.randint(k[0], (B, length), 0, A),
        "reward": jax.random.normal(k[1], (B, length)),
    }


@pytest.fixture(scope="module", params=["gru", "lstm"])
def net(request):
    network = RecurrentQNetwork(num_actions=A, hidden=(8,), memory=5, cell=request.param)
    keys = jax.random.split(jax.random.key(0), 2)
    params = [network.init(k, network.initial_carry(1), jnp.zeros((1, OBS))) for k in keys]
    start = jax.tree.map(
        lambda x: jax.random.normal(jax.random.key(9), x.shape), network.initial_carry(B)
    )
    return network, params[0], params[1], start


_APPLY = {}


def step(network, params, carry, obs):
    """One step of ONE window (no batch axis) through the network."""
    apply = _APPLY.setdefault(network.cell, jax.jit(network.apply))
    carry = jax.tree.map(lambda x: x[None], carry)
    carry, q = apply(params, carry, obs[None])
    return jax.tree.map(lambda x: x[0], carry), np.asarray(q[0], np.float64)


def reference_unroll(network, params, carry, obs, first, next_obs):
    """Per step: reset where first, q at obs, then q at next_obs from the carry after obs."""
    zeros = jax.tree.map(jnp.zeros_like, carry)
    q, q_next = [], []
    for t in range(obs.shape[0]):
        carry = zeros if bool(first[t]) else carry
        carry, q_t = step(network, params, carry, obs[t])
        q.append(q_t)
        q_next.append(step(network, params, carry, next_obs[t])[1])
    return carry, np.stack(q), np.stack(q_next)


def reference_td(network, params, target, w, start, burn_in, n, gamma, double):
    out = np.zeros((B, L - burn_in - n + 1))
    for b in range(B):
        one = {k: np.asarray(v[b]) for k, v in w.items()}
        carry = jax.tree.map(lambda x: x[b], start)
        carries = []
        for p in (params, target):
            c = carry
            for t in range(burn_in):
                c = jax.tree.map(jnp.zeros_like, c) if one["first"][t] else c
                c, _ = step(network, p, c, one["obs"][t])
            carries.append(c)
        rest = {k: v[burn_in:] for k, v in one.items()}
        _, q, qn_online = reference_unroll(
            network, params, carries[0], rest["obs"], rest["first"], rest["next_obs"]
        )
        _, _, qn_target = reference_unroll(
            network, target, carries[1], rest["obs"], rest["first"], rest["next_obs"]
        )
        for t in range(out.shape[1]):
            ret, discount, m = 0.0, 0.0, t + n - 1
            for k in range(n):
                ret += gamma**k * rest["reward"][t + k]
                if rest["terminated"][t + k]:
                    discount, m = 0.0, t + k
                    break
                if k == n - 1 or rest["first"][t + k + 1]:
                    discount, m = gamma ** (k + 1), t + k
                    break
            value = qn_target[m][np.argmax(qn_online[m])] if double else qn_target[m].max()
            out[b, t] = ret + discount * value - q[t][rest["action"][t]]
    return out


def test_unroll_matches_step_by_step(net):
    network, params, _, start = net
    w = windows(jax.random.key(1))
    carry, q, q_next = jax.jit(lambda p, c, o, f, n: unroll(network.apply, p, c, o, f, n))(
        params, start, w["obs"], w["first"], w["next_obs"]
    )
    for b in range(B):
        ref_carry, ref_q, ref_next = reference_unroll(
            network,
            params,
            jax.tree.map(lambda x: x[b], start),
            w["obs"][b],
            w["first"][b],
            w["next_obs"][b],
        )
        np.testing.assert_allclose(q[b], ref_q, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(q_next[b], ref_next, rtol=1e-5, atol=1e-5)
        for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(ref_carry)):
            np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "burn_in, n_step, double", [(0, 1, False), (3, 1, True), (2, 3, True), (4, 2, False)]
)
def test_window_td_errors_match_reference(net, burn_in, n_step, double):
    network, params, target, start = net
    w = windows(jax.random.key(burn_in * 10 + n_step))
    td, q = window_td_errors(
        network.apply,
        params,
        target,
        w,
        start,
        burn_in=burn_in,
        n_step=n_step,
        gamma=0.9,
        double=double,
    )
    want = reference_td(network, params, target, w, start, burn_in, n_step, 0.9, double)
    assert td.shape == want.shape == (B, L - burn_in - n_step + 1)
    assert q.shape == (B, L - burn_in, A)
    np.testing.assert_allclose(td, want, rtol=1e-4, atol=1e-5)


def test_burn_in_has_no_gradient(net):
    network, params, target, start = net
    w = windows(jax.random.key(7))
    w["first"] = w["first"].at[:, 0].set(False)  # the windows continue from the stored carry

    def loss(obs, start, burn_in):
        td, _ = window_td_errors(
            network.apply,
            params,
            target,
            {**w, "obs": obs},
            start,
            burn_in=burn_in,
            n_step=1,
            gamma=0.9,
            double=True,
        )
        return jnp.sum(td**2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    d_obs, d_start = grad(w["obs"], start, 4)
    assert np.all(np.asarray(d_obs[:, :4]) == 0)  # the burn-in steps
    assert np.any(np.asarray(d_obs[:, 4:]) != 0)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(d_start))
    # ... but burn-in observations do change the loss (through the carry they warm up)
    moved = w["obs"].at[:, 1].add(1.0)
    value = jax.jit(loss, static_argnums=2)
    assert float(value(moved, start, 4)) != float(value(w["obs"], start, 4))
    # without burn-in, the stored carry gets a gradient
    _, d_start = grad(w["obs"], start, 0)
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(d_start))


def test_stored_carry_round_trip(net):
    network, *_ = net
    carry = jax.tree.map(
        lambda x: jax.random.normal(jax.random.key(2), x.shape), network.initial_carry(4)
    )
    stored = stored_carry(carry)
    assert isinstance(stored, jax.Array) and stored.shape[0] == 4
    for a, b in zip(
        jax.tree.leaves(carry_from_stored(stored, network.cell)), jax.tree.leaves(carry)
    ):
        np.testing.assert_array_equal(a, b)


def test_learn_on_sequence_replay_updates_and_returns_window_priorities(net):
    network, *_ = net
    agent = make_drqn(
        network, A, optax.adam(1e-2), epsilon=lambda s: 0.5, burn_in=2, n_step=2, target_period=1
    )
    state = agent.init(jax.random.key(0), jnp.zeros(OBS))
    E = 2
    layout = mj.replay.sequence(E, length=6, period=2, per_window=("carry",))
    buf = mj.replay.prioritized(E * 16, layout=layout, sample_batch_size=4)
    carry = agent.initial_carry(E)
    obs = jnp.zeros((E, OBS))
    add, act = jax.jit(buf.add), jax.jit(agent.act, static_argnums=5)
    _, _, extras = act(state, carry, obs, jax.random.key(1), 0, False)
    example = {
        "obs": obs[0],
        "next_obs": obs[0],
        "first": jnp.bool_(False),
        "action": jnp.int32(0),
        "reward": jnp.float32(0),
        "terminated": jnp.float32(0),
        "carry": extras["carry"][0],
    }
    buf_state = buf.init(example)
    key = jax.random.key(2)
    for t in range(12):
        key, k_obs, k_act = jax.random.split(key, 3)
        next_obs = jax.random.normal(k_obs, (E, OBS))
        actions, new_carry, extras = act(state, carry, obs, k_act, t, False)
        assert actions.shape == (E,) and actions.dtype == jnp.int32
        buf_state = add(
            buf_state,
            {
                "obs": obs,
                "next_obs": next_obs,
                "action": actions,
                "reward": jnp.ones(E),
                "terminated": jnp.zeros(E),
                "first": jnp.full((E,), t == 0),
                **extras,
            },
        )
        obs, carry = next_obs, new_carry
    sample = jax.jit(buf.sample)(buf_state, jax.random.key(3))
    new_state, priorities, metrics = jax.jit(agent.learn)(state, sample, jax.random.key(4))
    assert priorities.shape == (4,) and np.all(np.asarray(priorities) > 0)
    assert np.isfinite(float(metrics["loss"]))
    assert int(new_state.updates) == 1
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new_state.params, state.params)
    assert any(jax.tree.leaves(moved))
    np.testing.assert_array_equal(  # target_period=1: the target is the new online network
        jax.tree.leaves(new_state.target_params)[0], jax.tree.leaves(new_state.params)[0]
    )


def test_windows_shorter_than_burn_in_plus_n_step(net):
    network, params, target, start = net
    w = windows(jax.random.key(0), length=4)
    with pytest.raises(
        ValueError,
        match=r"window of 4 steps is shorter than burn_in \(3\) "
        r"\+ n_step \(2\)",
    ):
        window_td_errors(
            network.apply, params, target, w, start, burn_in=3, n_step=2, gamma=0.9, double=True
        )


def test_transitions_instead_of_windows_is_a_clear_error(net):
    network, *_ = net
    agent = make_drqn(network, A, optax.adam(1e-3), epsilon=lambda s: 0.1)
    state = agent.init(jax.random.key(0), jnp.zeros(OBS))
    batch = mj.replay.Sample(
        items={"obs": jnp.zeros((2, OBS)), "reward": jnp.zeros(2)},
        indices=jnp.zeros(2, jnp.int32),
        weights=jnp.ones(2),
        probabilities=jnp.ones(2),
    )
    with pytest.raises(ValueError, match="'first' and a per-window 'carry'"):
        agent.learn(state, batch, jax.random.key(0))


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(burn_in=-1), "burn_in must be >= 0"),
        (dict(n_step=0), "n_step >= 1"),
        (dict(eta=1.5), "eta must be in"),
        (dict(target_period=0), "target_period"),
    ],
)
def test_bad_settings(net, kwargs, words):
    network, *_ = net
    with pytest.raises(ValueError, match=words):
        make_drqn(network, A, optax.adam(1e-3), epsilon=lambda s: 0.1, **kwargs)
