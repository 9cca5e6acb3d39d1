"""The Neural Turing Machine agent (ntm): each addressing step, the write and the read against
NumPy, a whole step and a sequence of steps against NumPy, no NaN or Inf from a zero key or an
all-zero memory, gradient checks through a short unroll, the unroll's reset at episode
starts, burn-in without gradient, the stored state and its codecs, bad settings, the command
line, bytes per step, and a short learning run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import memjax as mj
from memjax import cli
from memjax.agents import NTMConfig, NTMQNetwork, make_ntm, unroll, window_td_errors
from memjax.agents import ntm as ntm_module
from memjax.agents.cells import PARALLEL_CELLS
from memjax.agents.ntm import (
    CONTROLLER_KINDS,
    EPS,
    address,
    carry_from_stored,
    content_weights,
    interpolate,
    memory_step,
    read,
    row_int8,
    sharpen,
    shift,
    split_heads,
    stored_carry,
    write,
)
from memjax.train import TrainConfig, make_train

B, OBS, A = 3, 4, 3
N, W, R, S = 6, 5, 2, 1  # rows, width, read heads, shift range

# --------------------------------------------------------------------------- NumPy reference


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_content(memory, key, beta):
    """One head: memory [N, W], key [W], beta scalar -> [N] (the paper's 3.1, eps in norms)."""
    cos = np.array(
        [key @ row / (np.sqrt(row @ row + EPS) * np.sqrt(key @ key + EPS)) for row in memory]
    )
    return np_softmax(beta * cos)


def np_interpolate(content, previous, gate):
    return gate * content + (1 - gate) * previous


def np_shift(weights, shifts):
    """Circular convolution, element by element: out[i] = sum_j s[j] w[(i - j) mod N]."""
    n, s = len(weights), (len(shifts) - 1) // 2
    out = np.zeros(n)
    for i in range(n):
        for j in range(-s, s + 1):
            out[i] += shifts[j + s] * weights[(i - j) % n]
    return out


def np_sharpen(weights, gamma):
    powered = (weights + EPS) ** gamma
    return powered / powered.sum()


def np_write(memory, weights, erase, add):
    out = memory.copy()
    for i in range(len(memory)):
        out[i] = memory[i] * (1 - weights[i] * erase) + weights[i] * add
    return out


def np_read(memory, weights):
    return sum(weights[i] * memory[i] for i in range(len(memory)))


def np_address(memory, previous, key, beta, gate, shifts, gamma):
    w = np_interpolate(np_content(memory, key, beta), previous, gate)
    return np_sharpen(np_shift(w, shifts), gamma)


def np_heads(emitted):
    """:func:`split_heads` for ONE environment: emitted [features] -> per-head lists."""
    per = W + 2 * S + 4
    sp = lambda x: np.log1p(np.exp(x))  # noqa: E731
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    heads = []
    for h in range(R + 1):
        p = emitted[h * per : (h + 1) * per]
        heads.append(
            dict(
                key=p[:W],
                beta=sp(p[W]),
                gate=sig(p[W + 1]),
                shifts=np_softmax(p[W + 2 : W + 3 + 2 * S]),
                gamma=1 + sp(p[W + 3 + 2 * S]),
            )
        )
    rest = emitted[(R + 1) * per :]
    return heads, sig(rest[:W]), np.tanh(rest[W:])


def np_memory_step(memory, weights, emitted):
    """One environment: write head 0 on the old memory, then the read heads on the new."""
    heads, erase, add = np_heads(emitted)
    w_write = np_address(memory, weights[0], **heads[0])
    memory = np_write(memory, w_write, erase, add)
    w_read = [np_address(memory, weights[h], **heads[h]) for h in range(1, R + 1)]
    return memory, np.stack([w_write, *w_read]), np.stack([np_read(memory, w) for w in w_read])


def rand(key, shape, scale=1.0):
    return np.asarray(jax.random.normal(jax.random.key(key), shape), np.float64) * scale


def simplex(key, shape):
    return np_softmax(rand(key, shape, 2.0))


f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
close = lambda got, want: np.testing.assert_allclose(  # noqa: E731
    np.asarray(got, np.float64), want, rtol=2e-5, atol=2e-6
)


# --------------------------------------------------------------------------- each function


def test_content_weights_match_numpy():
    memory, key, beta = rand(0, (B, R, N, W)), rand(1, (B, R, W)), np.abs(rand(2, (B, R))) * 3
    got = content_weights(f32(memory), f32(key), f32(beta))
    want = [[np_content(memory[b, h], key[b, h], beta[b, h]) for h in range(R)] for b in range(B)]
    close(got, np.array(want))


def test_interpolation_shift_and_sharpening_match_numpy():
    content, previous = simplex(0, (B, R, N)), simplex(1, (B, R, N))
    gate, shifts = np.abs(rand(2, (B, R))) % 1, simplex(3, (B, R, 2 * S + 1))
    gamma = 1 + np.abs(rand(4, (B, R))) * 3
    close(
        interpolate(f32(content), f32(previous), f32(gate)),
        np_interpolate(content, previous, gate[..., None]),
    )
    for s in (1, 2):  # shift ranges 1 and 2 over N = 6 rows
        wide = simplex(5 + s, (B, R, 2 * s + 1))
        want = [[np_shift(content[b, h], wide[b, h]) for h in range(R)] for b in range(B)]
        close(shift(f32(content), f32(wide)), np.array(want))
    want = [[np_sharpen(content[b, h], gamma[b, h]) for h in range(R)] for b in range(B)]
    close(sharpen(f32(content), f32(gamma)), np.array(want))
    # shift by exactly +1 rotates the weighting one row forward
    one_hot = np.eye(N)[[2]]
    close(shift(f32(one_hot), f32([[0.0, 0.0, 1.0]])), np.eye(N)[[3]])
    close(shift(f32(np.eye(N)[[0]]), f32([[1.0, 0.0, 0.0]])), np.eye(N)[[N - 1]])  # wraps
    del gate, shifts


def test_address_write_and_read_match_numpy():
    memory, previous = rand(0, (B, N, W)), simplex(1, (B, N))
    key, beta, gate = rand(2, (B, W)), np.abs(rand(3, (B,))) * 4, 1 / (1 + np.exp(-rand(4, (B,))))
    shifts, gamma = simplex(5, (B, 2 * S + 1)), 1 + np.abs(rand(6, (B,)))
    got = address(*(f32(x) for x in (memory, previous, key, beta, gate, shifts, gamma)))
    want = [
        np_address(memory[b], previous[b], key[b], beta[b], gate[b], shifts[b], gamma[b])
        for b in range(B)
    ]
    close(got, np.array(want))
    weights, erase = np.array(want), 1 / (1 + np.exp(-rand(7, (B, W))))
    add = np.tanh(rand(8, (B, W)))
    close(
        write(f32(memory), f32(weights), f32(erase), f32(add)),
        np.array([np_write(memory[b], weights[b], erase[b], add[b]) for b in range(B)]),
    )
    close(
        read(f32(memory), f32(weights)),
        np.array([np_read(memory[b], weights[b]) for b in range(B)]),
    )


def test_memory_step_matches_numpy():
    features = ntm_module.head_sizes(W, R, S)
    memory, weights, emitted = rand(0, (B, N, W)), simplex(1, (B, R + 1, N)), rand(2, (B, features))
    heads = split_heads(f32(emitted), W, R, S)
    got = memory_step(f32(memory), f32(weights), heads)
    for b in range(B):
        want = np_memory_step(memory[b], weights[b], emitted[b])
        for g, w in zip(got, want):
            close(g[b], w)


# --------------------------------------------------------------------------- the network


def small(controller="lstm", **kw):
    sizes = dict(memory_rows=N, memory_width=W, read_heads=R, shift_range=S)
    memory = 8 if controller in PARALLEL_CELLS else 7  # LRU: even; FFM: a multiple of 8
    kw = (
        dict(num_actions=A, hidden=(8,), memory=memory, controller=controller, head=(6,))
        | sizes
        | kw
    )
    network = NTMQNetwork(**kw)
    keys = jax.random.split(jax.random.key(0), 2)
    init = jax.jit(network.init)
    params = [init(k, network.initial_carry(1), jnp.zeros((1, OBS))) for k in keys]
    return network, params[0], params[1]


def np_network_step(params, carry, obs):
    """The feed-forward-controller network's whole step in float64 NumPy, ONE environment."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params["params"])
    dense = lambda name, x: x @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
    x = np.maximum(dense("Dense_0", obs), 0)
    x = np.concatenate([x, carry["reads"].reshape(-1)])
    y = np.maximum(dense("Dense_1", x), 0)
    memory, weights, reads = np_memory_step(carry["memory"], carry["weights"], dense("heads", y))
    z = np.maximum(dense("Dense_2", np.concatenate([y, reads.reshape(-1)])), 0)
    new = {"controller": carry["controller"], "memory": memory, "weights": weights, "reads": reads}
    return new, dense("q", z)


def test_a_sequence_of_steps_matches_numpy():
    """Five steps of the network (feed-forward controller: the state is all NTM) against the
    NumPy step, each from the state NumPy reached: the memory, weightings, reads and Q-values."""
    network, params, _ = small("feedforward")
    apply = jax.jit(network.apply)
    carry = jax.tree.map(np.asarray, network.initial_carry(B))
    want = [jax.tree.map(lambda x: np.asarray(x[b], np.float64), carry) for b in range(B)]
    for t in range(5):
        obs = rand(10 + t, (B, OBS))
        carry, q = apply(params, carry, f32(obs))
        for b in range(B):
            want[b], q_b = np_network_step(params, want[b], obs[b])
            close(q[b], q_b)
            for name in ("memory", "weights", "reads"):
                close(carry[name][b], want[b][name])
    assert float(jnp.abs(carry["memory"] - ntm_module.INITIAL_MEMORY).max()) > 1e-2  # it wrote


@pytest.mark.parametrize("controller", CONTROLLER_KINDS)
def test_zero_key_and_all_zero_memory_give_no_nan_or_inf(controller):
    network, params, _ = small(controller)
    zero = jnp.zeros((B, N, W))
    # the addressing alone: zero key, zero memory, both
    for memory, key in (
        (zero, jnp.ones((B, W))),
        (jnp.ones((B, N, W)), jnp.zeros((B, W))),
        (zero, jnp.zeros((B, W))),
    ):
        w = content_weights(memory, key, jnp.full((B,), 5.0))
        assert np.all(np.isfinite(w)) and np.allclose(w.sum(-1), 1)
        grads = jax.grad(
            lambda m, k: jnp.sum(content_weights(m, k, jnp.full((B,), 5.0)) ** 2), (0, 1)
        )(memory, key)
        assert all(np.all(np.isfinite(g)) for g in grads)
    # sharpening of a weighting with zeros, with a large gamma
    w = jnp.zeros((B, N)).at[:, 0].set(1.0)
    for gamma in (1.0, 50.0):
        g = jax.grad(lambda w, gm: jnp.sum(sharpen(w, gm) * jnp.arange(N)), (0, 1))(
            w, jnp.full((B,), gamma)
        )
        assert np.all(np.isfinite(sharpen(w, jnp.full((B,), gamma)))) and all(
            np.all(np.isfinite(x)) for x in g
        )
    # a whole step from an all-zero state with zero observations, and its gradients
    carry = jax.tree.map(jnp.zeros_like, network.initial_carry(B))
    new, q = jax.jit(network.apply)(params, carry, jnp.zeros((B, OBS)))
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((new, q)))
    grads = jax.jit(
        jax.grad(lambda p, c: jnp.sum(network.apply(p, c, jnp.zeros((B, OBS)))[1] ** 2), (0, 1))
    )(params, carry)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(grads))


@pytest.mark.parametrize("controller", CONTROLLER_KINDS)
def test_gradients_through_a_three_step_unroll(controller):
    """check_grads (float64, forward and reverse mode, order 1) of the Q-values of a 3-step
    unroll with an episode start inside, with respect to the parameters and the start state."""
    from jax.test_util import check_grads

    network, params, _ = small(controller)
    with jax.enable_x64(True):
        f64 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), t)  # noqa: E731
        params64 = f64(params)
        start = f64(network.initial_carry(2))
        start = {**start, "memory": jnp.asarray(rand(3, (2, N, W), 0.5))}
        obs = jnp.asarray(rand(4, (2, 3, OBS)))
        first = jnp.array([[False, False, True], [False, False, False]])
        initial = f64(network.initial_carry(2, jnp.float64))

        def q_of(p, memory):
            _, q, _ = unroll(
                network.apply, p, {**start, "memory": memory}, obs, first, initial=initial
            )
            return q

        check_grads(
            q_of,
            (params64, start["memory"]),
            order=1,
            modes=("fwd", "rev"),
            atol=1e-5,
            rtol=1e-5,
            eps=1e-6,
        )


# --------------------------------------------------------------------------- learning pieces


def windows(key, length=9):
    k = jax.random.split(jax.random.key(key), 6)
    ends = jax.random.uniform(k[0], (B, length)) < 0.2
    terminated = ends & (jax.random.uniform(k[1], (B, length)) < 0.5)
    first = jnp.concatenate([jax.random.uniform(k[2], (B, 1)) < 0.5, ends[:, :-1]], axis=1)
    obs = jax.random.normal(k[3], (B, length, OBS))
    following = jnp.concatenate([obs[:, 1:], jax.random.normal(k[5], (B, 1, OBS))], axis=1)
    next_obs = jnp.where(ends[..., None], jax.random.normal(k[4], (B, length, OBS)), following)
    return {
        "obs": obs,
        "next_obs": next_obs,
        "first": first,
        "terminated": terminated.astype(jnp.float32),
        "action": jax.random.randint(k[0], (B, length), 0, A),
        "reward": jax.random.normal(k[1], (B, length)),
    }


def test_unroll_resets_to_the_initial_state_at_episode_starts():
    """unroll with the NTM's initial carry against a Python loop of steps that puts the
    INITIAL carry (memory 1e-6, one-hot weightings; not zeros) back where first."""
    network, params, _ = small("lstm")
    w = windows(1)
    start = jax.tree.map(lambda x: x + 0.3, network.initial_carry(B))
    initial = network.initial_carry(B)
    carry, q, q_next = jax.jit(
        lambda p, c: unroll(network.apply, p, c, w["obs"], w["first"], w["next_obs"], initial)
    )(params, start)
    apply = jax.jit(network.apply)
    c = start
    for t in range(w["obs"].shape[1]):
        c = jax.tree.map(
            lambda s, i: jnp.where(w["first"][:, t].reshape((-1,) + (1,) * (s.ndim - 1)), i, s),
            c,
            initial,
        )
        c, q_t = apply(params, c, w["obs"][:, t])
        close(q[:, t], np.asarray(q_t, np.float64))
        close(q_next[:, t], np.asarray(apply(params, c, w["next_obs"][:, t])[1], np.float64))
    for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(c)):
        close(got, np.asarray(want, np.float64))
    assert bool(w["first"][:, 1:].any())  # the windows do start episodes inside


def test_td_errors_are_drqns_where_no_episode_starts_inside():
    """Without an episode start in the windows the reset rule never applies, and the TD errors
    are exactly :func:`memjax.agents.window_td_errors`'s (checked against Python in
    tests/test_drqn.py) for the same network and stored state."""
    network, params, target = small("gru")
    w = windows(3)
    w["first"] = jnp.zeros_like(w["first"])
    w["terminated"] = jnp.zeros_like(w["terminated"])
    start = jax.tree.map(lambda x: x + 0.2, network.initial_carry(B))
    settings = dict(burn_in=2, n_step=2, gamma=0.9, double=True)
    initial = network.initial_carry(B)
    ours = jax.jit(
        lambda: window_td_errors(
            network.apply, params, target, w, start, initial=initial, **settings
        )
    )
    drqn = jax.jit(
        lambda: mj.agents.window_td_errors(network.apply, params, target, w, start, **settings)
    )
    (td, q), (want_td, want_q) = ours(), drqn()
    assert td.shape == (B, 9 - 2 - 2 + 1)
    np.testing.assert_allclose(td, want_td, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q, want_q, rtol=1e-5, atol=1e-6)


def test_burn_in_has_no_gradient():
    network, params, target = small("gru")
    w = windows(7)
    w["first"] = w["first"].at[:, 0].set(False)
    start = jax.tree.map(lambda x: x + 0.1, network.initial_carry(B))
    initial = network.initial_carry(B)

    def loss(obs, start, burn_in):
        settings = dict(burn_in=burn_in, n_step=1, gamma=0.9, double=True)
        w_obs = {**w, "obs": obs}
        td, _ = window_td_errors(
            network.apply, params, target, w_obs, start, initial=initial, **settings
        )
        return jnp.sum(td**2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    d_obs, d_start = grad(w["obs"], start, 4)
    assert np.all(np.asarray(d_obs[:, :4]) == 0)
    assert np.any(np.asarray(d_obs[:, 4:]) != 0)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(d_start))
    value = jax.jit(loss, static_argnums=2)
    assert float(value(w["obs"].at[:, 1].add(1.0), start, 4)) != float(value(w["obs"], start, 4))
    _, d_start = grad(w["obs"], start, 0)
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(d_start))


def test_stored_carry_round_trip_and_act_returns_the_state_before_the_step():
    network, params, _ = small("lstm")
    carry = jax.tree.map(
        lambda x: jax.random.normal(jax.random.key(2), x.shape), network.initial_carry(4)
    )
    stored = stored_carry(carry)
    assert stored["carry"].shape == (4, network.stored_size()) and stored["memory"].shape == (
        4,
        N,
        W,
    )
    for a, b in zip(jax.tree.leaves(carry_from_stored(stored, network)), jax.tree.leaves(carry)):
        np.testing.assert_array_equal(a, b)
    agent = make_ntm(network, A, optax.adam(1e-3), epsilon=lambda s: 0.1)
    state = jax.jit(agent.init)(jax.random.key(0), jnp.zeros(OBS))
    act = jax.jit(agent.act, static_argnums=5)
    _, new, extras = act(state, carry, jnp.ones((4, OBS)), jax.random.key(1), 0, False)
    assert sorted(extras) == ["carry", "memory"]
    np.testing.assert_array_equal(extras["memory"], carry["memory"])
    assert not np.array_equal(new["memory"], carry["memory"])


def test_row_int8_codec_bounds_each_row_by_its_own_scale():
    codec = row_int8()
    x = jnp.asarray(rand(0, (7, N, W)) * np.logspace(-4, 1, N)[None, :, None], jnp.float32)
    x = x.at[0, 0].set(0.0)  # a zero row
    state = codec.init(x[0])
    assert mj.codecs.stored_spec(codec, x[0]) == jax.ShapeDtypeStruct((N, W + 4), jnp.int8)
    stored, state = jax.jit(codec.encode)(x, state)
    back = codec.decode(stored, state)
    peak = np.abs(np.asarray(x)).max(-1, keepdims=True)
    assert np.all(np.abs(np.asarray(back - x)) <= peak / 254 * (1 + 1e-5))
    np.testing.assert_array_equal(back[0, 0], 0.0)
    _, state = codec.encode(x.at[1, 1, 1].set(jnp.nan), state)
    assert mj.codecs.counters(state)["invalid"] == 1


@pytest.mark.parametrize(
    "replay, n_step, memory_codec", [("prioritized", 2, "int8"), ("uniform", 1, "none")]
)
def test_learn_from_uniform_and_prioritized_window_replay(replay, n_step, memory_codec):
    """A few hundred steps through the loop: the replay stores carry and memory once per
    window (the memory through its codec), and learning gives finite losses."""
    knobs = NTMConfig(
        sequence_length=8,
        sequence_period=4,
        burn_in=2,
        hidden=(8,),
        memory=8,
        memory_rows=4,
        memory_width=4,
        memory_codec=memory_codec,
    )
    cfg = TrainConfig(
        env="MemoryChain-4",
        total_steps=400,
        num_envs=4,
        buffer_capacity=256,
        batch_size=4,
        learning_starts=200,
        chunk_steps=200,
        eval_episodes=2,
        replay=replay,
        n_step=n_step,
        agent=knobs,
    )
    trainer = make_train(cfg)
    assert {"carry", "memory"} <= set(trainer.example)
    state, metrics = jax.jit(trainer)(jax.random.key(0))
    assert np.all(np.isfinite(np.asarray(metrics["train"]["loss"])))
    fields = {f.name: f.bytes_per_item for f in trainer.buffer.memory(state.buffer).fields}
    row_bytes = 4 + 4 if memory_codec == "int8" else 4 * 4  # int8 codes + scale | float32
    assert fields["memory"] == pytest.approx(4 * row_bytes / 4, rel=0.01)  # once per 4 rows


# --------------------------------------------------------------------------- settings


QUICK = TrainConfig(
    env="MemoryChain-8",
    total_steps=6_000,
    num_envs=8,
    buffer_capacity=4096,
    batch_size=16,
    learning_starts=1_000,
    eps_decay_steps=3_000,
    target_update_every=500,
    lr=1e-3,
    chunk_steps=6_000,
    eval_episodes=20,
    agent=NTMConfig(sequence_length=16, sequence_period=8, burn_in=2, hidden=(64,), memory=32),
)


@pytest.mark.parametrize(
    "settings, words",
    [
        (dict(memory_rows=0), r"memory_rows must be a positive integer, got 0"),
        (dict(memory_width=0), r"memory_width must be a positive integer, got 0"),
        (dict(read_heads=0), r"read_heads must be a positive integer, got 0"),
        (
            dict(shift_range=8),
            r"shift_range \(8\) shifts over 17 rows, more than the memory's memory_rows \(16\)",
        ),
        (dict(shift_range=-1), r"shift_range must be an integer >= 0"),
        (
            dict(controller="rnn"),
            r"controller must be one of \('lstm', 'gru', 'feedforward', 'lru'",
        ),
        (dict(controller="lru", memory=33), r"cell 'lru' needs an even memory, got 33"),
        (dict(controller="ffm", memory=20), r"cell 'ffm' needs a memory that is a multiple of 8"),
        (dict(memory_codec="int4"), r"memory_codec must be one of"),
        (
            dict(sequence_length=4, burn_in=4),
            r"sequence_length \(4\) is shorter than burn_in \(4\) \+ n_step \(1\)",
        ),
        (
            dict(sequence_length=5, burn_in=4, n_step=2),
            r"sequence_length \(5\) is shorter than burn_in \(4\) \+ n_step \(2\)",
        ),
    ],
)
def test_bad_settings_are_clear_errors_before_compiling(settings, words, monkeypatch):
    def no_compiling(*a, **k):
        raise AssertionError("compiled before the error")

    monkeypatch.setattr(jax, "jit", no_compiling)
    with pytest.raises(ValueError, match=words):
        make_train(QUICK.replace(**settings))


def test_network_refuses_bad_sizes_and_windows_shorter_than_burn_in_plus_n_step():
    with pytest.raises(ValueError, match=r"shift_range \(3\) shifts over 7 rows"):
        NTMQNetwork(A, memory_rows=6, shift_range=3).initial_carry(1)
    with pytest.raises(ValueError, match="memory_width must be a positive integer"):
        make_ntm(NTMQNetwork(A, memory_width=0), A, optax.adam(1e-3), epsilon=lambda s: 0.1)
    network, params, target = small("gru")
    w = windows(0, length=4)
    with pytest.raises(
        ValueError, match=r"window of 4 steps is shorter than burn_in \(3\) \+ n_step \(2\)"
    ):
        carry = network.initial_carry(B)
        settings = dict(burn_in=3, n_step=2, gamma=0.9, double=True)
        window_td_errors(network.apply, params, target, w, carry, initial=carry, **settings)


def test_command_line_lists_the_knobs_and_plans(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--agent", "ntm", "--help"])
    out = capsys.readouterr().out
    for option in (
        "--controller",
        "--memory-rows",
        "--memory-width",
        "--read-heads",
        "--shift-range",
        "--burn-in",
        "--memory-codec",
    ):
        assert option in out, option
    args = [
        "train",
        "--agent",
        "ntm",
        "--env",
        "MemoryChain-8",
        "--steps",
        "2000",
        "--learning-starts",
        "500",
        "--plan",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "memory" in out and "carry" in out


def bytes_per_step(cfg):
    """(state bytes per stored step, all bytes per stored step) of the run's real buffer."""
    trainer = make_train(cfg)
    rep = trainer.buffer.memory(jax.eval_shape(trainer.init, jax.random.key(0)).buffer)
    fields = {f.name: f.bytes_per_item for f in rep.fields}
    return fields.get("carry", 0) + fields.get("memory", 0), rep.bytes_per_item, trainer


def test_bytes_per_step_of_the_stored_state():
    """MemoryChain-20 with the defaults (LSTM of 64, N = W = 16, R = 1, windows of 40 every
    20): the state once per window with a bfloat16 memory, against the same state at every
    step and uncompressed (float32) at every step."""
    cfg = TrainConfig(env="MemoryChain-20", agent="ntm")
    ours, ours_all, trainer = bytes_per_step(cfg)
    raw, _, _ = bytes_per_step(cfg.replace(memory_codec="none"))
    int8, _, _ = bytes_per_step(cfg.replace(memory_codec="int8"))
    network = trainer.network
    carry_f32 = network.stored_size() * 4
    memory_f32, memory_bf16 = N_W_DEFAULT * 4, N_W_DEFAULT * 2
    assert network.stored_size() == 2 * 64 + 2 * 16 + 16
    period = cfg.agent_config.sequence_period
    assert ours == pytest.approx((carry_f32 + memory_bf16) / period, rel=0.01)
    assert raw == pytest.approx((carry_f32 + memory_f32) / period, rel=0.01)
    assert int8 == pytest.approx((carry_f32 + 16 * (16 + 4)) / period, rel=0.01)
    every_step = carry_f32 + memory_bf16  # the same state stored at every step
    uncompressed = carry_f32 + memory_f32  # float32, every step
    print(
        f"\nntm state bytes per step: ours {ours:.1f} (int8 {int8:.1f}, float32 {raw:.1f}), "
        f"every step {every_step}, uncompressed {uncompressed}; whole buffer {ours_all:.1f}"
    )
    assert every_step / ours >= 19 and uncompressed / ours >= 25


N_W_DEFAULT = 16 * 16


def test_ntm_learns_a_memory_task_through_its_memory_alone():
    """MemoryChain-8 on 2 seeds with the FEED-FORWARD controller (the only state is the NTM's
    memory, weightings and reads): >= 0.8 greedy return on both in 6e3 env steps (1.0 on
    both when written, 36 s here; the default LSTM controller: also 1.0 on both, 41 s).
    tests/test_learning.py shows DQN at chance on this task."""
    trainer = make_train(QUICK.replace(controller="feedforward"))
    _, metrics = jax.jit(jax.vmap(trainer))(jax.random.split(jax.random.key(0), 2))
    returns = np.asarray(metrics["eval_return"]).mean(axis=1)
    assert np.all(returns >= 0.8), returns


def test_parameter_file_rebuilds_the_ntm_network(tmp_path):
    from memjax.compress.pipeline import make_context
    from memjax.train import params_file

    config = QUICK.replace(
        controller="gru", hidden=(8,), memory=7, memory_rows=N, memory_width=W, read_heads=R
    )
    network = config.spec.make_network(
        config.agent_config, jax.ShapeDtypeStruct((OBS,), jnp.float32), A
    )
    params = jax.jit(network.init)(jax.random.key(0), network.initial_carry(1), jnp.zeros((1, OBS)))
    obs = jax.ShapeDtypeStruct((OBS,), jnp.float32)
    params_file.save(tmp_path, config, params, stacked=False, num_actions=A, obs=obs)
    loaded = params_file.load(tmp_path)
    assert loaded.meta["agent"] == "ntm" and loaded.config.agent_config == config.agent_config
    assert loaded.network() == network
    with pytest.raises(ValueError, match="holds agent 'ntm'"):  # compress: feedforward only
        make_context(loaded)
