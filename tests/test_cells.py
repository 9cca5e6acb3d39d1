"""The parallel memory cells (LRU, minGRU, FFM): the scan against a step-by-step NumPy
reference of each recurrence and against stepping the cell in JAX, episode starts inside a
window, DRQN's TD errors and gradients through the scan equal to stepping, the stored carry
through replay and a codec, and clear errors for bad settings."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memjax as mj
import memjax.codecs as mc
from memjax import cli
from memjax.agents import RecurrentQNetwork, make_drqn, unroll, window_td_errors
from memjax.agents.cells import (
    FFM,
    LRU,
    PARALLEL_CELLS,
    MinGRU,
    linear_scan,
    linear_scan_autodiff,
)
from memjax.agents.drqn import carry_from_stored, stored_carry
from memjax.train import TrainConfig

B, D, H, OBS, A = 3, 5, 16, 4, 3
MODULES = {"mingru": MinGRU, "lru": LRU, "ffm": FFM}

# --------------------------------------------------------------------------- NumPy references


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def dense(p, x):
    return x @ p["kernel"] + p.get("bias", 0.0)


def ref_mingru(p, h, x):
    z = sigmoid(dense(p["gate"], x))
    h = (1 - z) * h + z * dense(p["candidate"], x)
    return h, h


def ref_lru(p, carry, x):
    n = carry.shape[-1] // 2
    h = carry[:n] + 1j * carry[n:]
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    bx = dense(p["b_re"], x) + 1j * dense(p["b_im"], x)
    h = lam * h + np.exp(p["gamma_log"]) * bx
    u = dense(p["c_re"], h.real) - dense(p["c_im"], h.imag) + dense(p["skip"], x)
    y = dense(p["glu_value"], u) * sigmoid(dense(p["glu_gate"], u))
    return np.concatenate([h.real, h.imag]), y


def ref_ffm(p, carry, x):
    m, c = p["alpha"].shape[0], p["omega"].shape[0]
    s = (carry[: m * c] + 1j * carry[m * c :]).reshape(m, c)
    gated = dense(p["pre"], x) * sigmoid(dense(p["gate_in"], x))
    gamma = np.exp(-np.abs(p["alpha"])[:, None] + 1j * p["omega"][None, :])
    s = gamma * s + gated[:, None]
    new = np.concatenate([s.real.reshape(-1), s.imag.reshape(-1)])
    z = dense(p["mix"], new)
    z = (z - z.mean()) / np.sqrt(z.var() + 1e-6)  # flax LayerNorm, no scale or offset
    g = sigmoid(dense(p["gate_out"], x))
    return new, z * g + dense(p["skip"], x) * (1 - g)


REFERENCES = {"mingru": ref_mingru, "lru": ref_lru, "ffm": ref_ffm}


def reference_window(name, params, carry, x, first):
    """Step by step in float64: the carry reset to zeros before each step where first."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    carries, ys = np.zeros((*x.shape[:2], H)), np.zeros((*x.shape[:2], H))
    for b in range(x.shape[0]):
        c = np.asarray(carry[b], np.float64)
        for t in range(x.shape[1]):
            c = np.zeros(H) if first[b, t] else c
            c, ys[b, t] = REFERENCES[name](p, c, np.asarray(x[b, t], np.float64))
            carries[b, t] = c
    return carries, ys


def cell_and_params(name, seed=0):
    cell = MODULES[name](features=H)
    params = cell.init(jax.random.key(seed), jnp.zeros((1, H)), jnp.zeros((1, D)))
    # move every parameter off its initial value so that no term is a special case
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return cell, jax.tree.unflatten(tree, noisy)


def random_window(key, length, p_first=0.25):
    k = jax.random.split(key, 3)
    x = jax.random.normal(k[0], (B, length, D))
    first = jax.random.uniform(k[1], (B, length)) < p_first
    carry = jax.random.normal(k[2], (B, H))
    return carry, x, first


_WINDOW = {}


def window_fn(cell):
    name = type(cell).__name__
    if name not in _WINDOW:
        _WINDOW[name] = jax.jit(lambda p, c, x, f: cell.apply(p, c, x, f, method="window"))
    return _WINDOW[name]


@pytest.mark.parametrize("name", PARALLEL_CELLS)
@pytest.mark.parametrize("length", [1, 6, 33])
def test_scan_matches_numpy_step_by_step(name, length):
    cell, params = cell_and_params(name)
    carry, x, first = random_window(jax.random.key(length), length)
    first = first.at[0, length // 2].set(True)  # an episode start inside a window
    carries, y = window_fn(cell)(params, carry, x, first)
    ref_carries, ref_y = reference_window(name, params, carry, x, np.asarray(first))
    np.testing.assert_allclose(np.asarray(carries), ref_carries, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(np.asarray(y), ref_y, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", PARALLEL_CELLS)
@settings(max_examples=10)
@given(starts=st.lists(st.booleans(), min_size=12, max_size=12), seed=st.integers(0, 2**16))
def test_scan_equals_stepping_the_cell_in_jax(name, starts, seed):
    length = len(starts)
    cell, params = cell_and_params(name)
    carry, x, _ = random_window(jax.random.key(seed), length)
    first = jnp.asarray(np.tile(np.asarray(starts), (B, 1)))
    carries, y = window_fn(cell)(params, carry, x, first)
    step = jax.jit(cell.apply)
    for t in range(length):
        carry = jnp.where(first[:, t, None], 0.0, carry)
        carry, y_t = step(params, carry, x[:, t])
        np.testing.assert_allclose(np.asarray(carries[:, t]), np.asarray(carry), 1e-5, 1e-5)
        np.testing.assert_allclose(np.asarray(y[:, t]), np.asarray(y_t), 1e-5, 1e-5)


@pytest.mark.parametrize("length", [1, 5, 16])
def test_linear_scan_with_an_initial_state_and_complex_coefficients(length):
    k = jax.random.split(jax.random.key(length), 6)
    shape = (B, length, 2, 3)
    a = jax.lax.complex(jax.random.uniform(k[0], shape), jax.random.normal(k[1], shape))
    b = jax.lax.complex(jax.random.normal(k[2], shape), jax.random.normal(k[3], shape))
    first = jax.random.uniform(k[4], (B, length)) < 0.3
    start, initial = (
        jax.random.normal(kk, (B, 2, 3)).astype(jnp.complex64) for kk in jax.random.split(k[5])
    )
    got = np.asarray(jax.jit(linear_scan)(a, b, first, start, initial))
    want = np.zeros(shape, np.complex128)
    a, b, first = np.asarray(a, np.complex128), np.asarray(b, np.complex128), np.asarray(first)
    for i in range(B):
        h = np.asarray(start[i], np.complex128)
        for t in range(length):
            h = np.asarray(initial[i]) if first[i, t] else h
            h = a[i, t] * h + b[i, t]
            want[i, t] = h
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


A_SHAPES = {  # how a broadcasts to b [B, L, *S]
    "full": lambda batch, length, state: (batch, length, *state),
    "per state": lambda batch, length, state: state,  # LRU's eigenvalues, FFM's decays
    "per window": lambda batch, length, state: (batch, 1, *state),
    "scalar": lambda batch, length, state: (),
}


@settings(max_examples=12, deadline=None)  # new shapes each: a compile an example
@given(
    batch=st.integers(1, 3),
    state=st.sampled_from([(), (3,), (2, 3)]),
    starts=st.lists(st.booleans(), min_size=1, max_size=9),
    kind=st.sampled_from(["real", "complex", "real a, complex b"]),
    a_shape=st.sampled_from(sorted(A_SHAPES)),
    with_initial=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_linear_scan_gradient_equals_autodiff_of_the_associative_scan(
    batch, state, starts, kind, a_shape, with_initial, seed
):
    """The custom VJP (one reverse scan) against ``jax.vjp`` of the operator-reset scan: every
    cotangent (a summed back to its broadcast shape, real where the primal is real), with
    episode starts anywhere in the window (t = 0 included: then ``start`` gets none)."""
    rng = np.random.default_rng(seed)
    length = len(starts)

    def draw(shape, complex_):
        x = rng.normal(size=shape)
        return jnp.asarray(x + 1j * rng.normal(size=shape) if complex_ else x).astype(
            jnp.complex64 if complex_ else jnp.float32
        )

    shape = (batch, length, *state)
    a = 0.9 * draw(A_SHAPES[a_shape](batch, length, state), kind == "complex")
    b = draw(shape, kind != "real")
    start = draw((batch, *state), kind != "real")
    # every row's own starts: the drawn pattern shifted per row, so rows differ
    first = jnp.asarray(np.stack([np.roll(starts, i) for i in range(batch)]))
    cotangent = draw(shape, kind != "real")
    args = (a, b, start, draw((batch, *state), kind != "real")) if with_initial else (a, b, start)

    @functools.partial(jax.jit, static_argnums=0)  # quicker than running op by op
    def states_and_cotangents(scan, cotangent, *args):
        h, vjp = jax.vjp(lambda a, b, start, *init: scan(a, b, first, start, *init), *args)
        return h, vjp(cotangent)

    h, cts = states_and_cotangents(linear_scan, cotangent, *args)
    h_ref, cts_ref = states_and_cotangents(linear_scan_autodiff, cotangent, *args)
    np.testing.assert_allclose(np.asarray(h), np.asarray(h_ref), rtol=1e-5, atol=1e-5)
    for name, got, want, primal in zip(("a", "b", "start", "initial"), cts, cts_ref, args):
        assert (
            got.shape == want.shape == primal.shape and got.dtype == want.dtype == primal.dtype
        ), name
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4, err_msg=name
        )


def test_linear_scan_gradient_under_jit_and_grad_of_a_loss():
    """Under ``jit`` and ``grad`` (how the update uses it), complex as the LRU: the custom
    gradient of a real loss of the states equals autodiff's of the reference."""
    k = jax.random.split(jax.random.key(7), 5)
    shape = (B, 16, 4)
    lam = jnp.exp(-jnp.exp(jax.random.normal(k[0], (4,))) + 1j * jax.random.normal(k[1], (4,)))
    b = jax.lax.complex(jax.random.normal(k[2], shape), jax.random.normal(k[3], shape))
    first = (jax.random.uniform(k[4], (B, 16)) < 0.2).at[:, 0].set(True).at[1, 0].set(False)
    start = b[:, 0] * 0.5

    def loss(scan):
        return lambda lam, b, start: jnp.sum(jnp.abs(scan(lam, b, first, start)) ** 2)

    got = jax.jit(jax.grad(loss(linear_scan), argnums=(0, 1, 2)))(lam, b, start)
    want = jax.jit(jax.grad(loss(linear_scan_autodiff), argnums=(0, 1, 2)))(lam, b, start)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-4)
    assert np.any(np.asarray(got[2]) != 0) and np.any(np.asarray(got[2]) == 0)  # row 1 only


# --------------------------------------------------------------------------- in DRQN

L = 12


def network_and_params(cell, layers=1):
    network = RecurrentQNetwork(num_actions=A, hidden=(8,), memory=H, cell=cell, layers=layers)
    keys = jax.random.split(jax.random.key(3), 2)
    params = [network.init(k, network.initial_carry(1), jnp.zeros((1, OBS))) for k in keys]
    return network, params[0], params[1]


def windows(key, length=L, layers=1):
    k = jax.random.split(key, 7)
    ends = jax.random.uniform(k[0], (B, length)) < 0.2
    return {
        "obs": jax.random.normal(k[1], (B, length, OBS)),
        "next_obs": jax.random.normal(k[2], (B, length, OBS)),
        "first": jnp.concatenate([jnp.zeros((B, 1), bool), ends[:, :-1]], axis=1),
        "terminated": (ends & (jax.random.uniform(k[3], (B, length)) < 0.5)).astype(jnp.float32),
        "action": jax.random.randint(k[4], (B, length), 0, A),
        "reward": jax.random.normal(k[5], (B, length)),
        "carry": jax.random.normal(k[6], (B, H * layers)),
    }


@pytest.mark.parametrize("cell, layers", [(c, 1) for c in PARALLEL_CELLS] + [("lru", 3)])
def test_unroll_in_parallel_equals_stepping(cell, layers):
    network, params, _ = network_and_params(cell, layers)
    w = windows(jax.random.key(1), layers=layers)
    run = jax.jit(
        lambda p, w, parallel: unroll(
            network.apply, p, w["carry"], w["obs"], w["first"], w["next_obs"], parallel=parallel
        ),
        static_argnums=2,
    )
    for got, want in zip(run(params, w, True), run(params, w, False)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell, layers", [(c, 1) for c in PARALLEL_CELLS] + [("mingru", 2)])
def test_td_errors_and_gradients_through_the_scan_equal_stepping(cell, layers):
    network, params, target = network_and_params(cell, layers)
    w = windows(jax.random.key(2), layers=layers)

    def loss(p, parallel):
        td, _ = window_td_errors(
            network.apply,
            p,
            target,
            w,
            w["carry"],
            burn_in=3,
            n_step=2,
            gamma=0.9,
            double=True,
            parallel=parallel,
        )
        return jnp.mean(td**2), td

    grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    (g_par, td_par), (g_seq, td_seq) = grad(params, True), grad(params, False)
    np.testing.assert_allclose(np.asarray(td_par), np.asarray(td_seq), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_par), jax.tree.leaves(g_seq)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert any(np.any(np.asarray(a) != 0) for a in jax.tree.leaves(g_par))


@pytest.mark.parametrize("cell", PARALLEL_CELLS)
def test_the_stored_carry_through_replay_and_a_codec(cell):
    """act's carry extra, stored once per window (as is, and through a bfloat16 codec), comes
    back from replay bit for bit (bfloat16: as the codec rounds it), and learn takes it."""
    network, *_ = network_and_params(cell)
    agent = make_drqn(network, A, optax.adam(1e-3), epsilon=lambda s: 0.5, burn_in=1, n_step=1)
    state = agent.init(jax.random.key(0), jnp.zeros(OBS))
    E, length = 2, 4
    carry = agent.initial_carry(E)
    assert carry.shape == (E, H) and carry.dtype == jnp.float32
    stored = stored_carry(carry)
    np.testing.assert_array_equal(carry_from_stored(stored, cell), carry)
    layout = mj.replay.sequence(E, length=length, period=length, per_window=("carry",))
    act = jax.jit(agent.act, static_argnums=5)
    for codecs in ({}, {"carry": mc.cast(jnp.bfloat16)}):
        buf = mj.replay.uniform(E * 8, layout=layout, sample_batch_size=4, codecs=codecs)
        add = jax.jit(buf.add)
        obs = jax.random.normal(jax.random.key(1), (E, OBS))
        example = {
            "obs": obs[0],
            "next_obs": obs[0],
            "first": jnp.bool_(False),
            "action": jnp.int32(0),
            "reward": jnp.float32(0),
            "terminated": jnp.float32(0),
            "carry": carry[0],
        }
        buf_state, c, starts = buf.init(example), carry, []
        for t in range(8):
            next_obs = jax.random.normal(jax.random.key(10 + t), (E, OBS))
            actions, new_c, extras = act(state, c, obs, jax.random.key(t), t, False)
            if t % length == 0:
                starts.append(np.asarray(extras["carry"]))
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
            obs, c = next_obs, new_c
        sample = jax.jit(buf.sample)(buf_state, jax.random.key(5))
        want = np.concatenate(starts)  # the windows' first carries, [windows, H]
        if codecs:  # what the bfloat16 codec keeps of each carry
            want = np.asarray(jnp.asarray(want).astype(jnp.bfloat16).astype(jnp.float32))
        got = np.asarray(sample.items["carry"])
        assert any(np.any(row != 0) for row in want)
        for row in got:  # every sampled window's carry is one of the stored ones, exactly
            assert np.any(np.all(want == row, axis=1)), (row, want)
        _, priorities, metrics = jax.jit(agent.learn)(state, sample, jax.random.key(6))
        assert np.isfinite(float(metrics["loss"])) and np.all(np.asarray(priorities) > 0)


def test_stacked_layers_keep_their_own_states_and_one_layer_its_parameters():
    """One layer has the parameters it had before layers existed (checkpoints and exports
    keep loading); with two, the carry is the layers' states side by side: the first layer's
    half steps exactly as a one-layer network with the same cell parameters, and the second
    layer's half depends on it."""
    one, p1, _ = network_and_params("mingru")
    assert set(p1["params"]) == {"Dense_0", "MinGRU_0", "Dense_1", "Dense_2"}
    two, p2, _ = network_and_params("mingru", 2)
    assert {"MinGRU_0", "MinGRU_1", "LayerNorm_0"} <= set(p2["params"])
    assert two.initial_carry(3).shape == (3, 2 * H)
    shared = {
        **p1["params"],
        "Dense_0": p2["params"]["Dense_0"],
        "MinGRU_0": p2["params"]["MinGRU_0"],
    }
    obs = jax.random.normal(jax.random.key(5), (3, OBS))
    carry = jax.random.normal(jax.random.key(6), (3, 2 * H))
    after, _ = two.apply(p2, carry, obs)
    first_layer, _ = one.apply({"params": shared}, carry[:, :H], obs)
    np.testing.assert_allclose(np.asarray(after[:, :H]), np.asarray(first_layer), rtol=1e-6)
    moved, _ = two.apply(p2, carry.at[:, :H].set(0.0), obs)
    assert not np.allclose(np.asarray(moved[:, H:]), np.asarray(after[:, H:]))


# --------------------------------------------------------------------------- bad settings


def test_an_unknown_cell_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"^cell must be one of \('gru', 'lstm', 'lru', "):
        mj.agents.DRQNConfig(cell="s5").check()
    with pytest.raises(ValueError, match="cell must be one of"):
        RecurrentQNetwork(num_actions=2, cell="s5").initial_carry(1)


@pytest.mark.parametrize(
    "cell, memory, layers, words",
    [
        ("lru", 15, 1, r"cell 'lru' needs an even memory, got 15: .*complex.*--memory 16"),
        ("ffm", 20, 1, r"cell 'ffm' needs a memory that is a multiple of 8, got 20: .*--memory 24"),
        ("gru", 64, 2, r"cell_layers 2 stacks parallel cells .* cell 'gru' is stepped"),
        ("mingru", 64, 0, r"cell_layers must be an integer >= 1, got 0"),
    ],
)
def test_a_setting_the_cell_cannot_take_is_refused_before_compiling(cell, memory, layers, words):
    agent = mj.agents.DRQNConfig(cell=cell, memory=memory, cell_layers=layers)
    with pytest.raises(ValueError, match=words):
        agent.check()
    with pytest.raises(ValueError, match=words):  # the loop's config check: nothing traced
        TrainConfig(env="MemoryChain-8", agent=agent).validate()
    with pytest.raises(ValueError, match=words):
        RecurrentQNetwork(num_actions=2, memory=memory, cell=cell, layers=layers).initial_carry(1)
    if layers != 1:
        return
    mj.agents.DRQNConfig(cell=cell, memory=memory + (1 if cell == "lru" else 4)).check()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cell", "s5"], "argument --cell: invalid choice: 's5' (choose from 'gru', 'lstm', "),
        (["--cell", "lru", "--memory", "15"], "cell 'lru' needs an even memory, got 15"),
        (["--cell", "ffm", "--memory", "12"], "cell 'ffm' needs a memory that is a multiple of 8"),
        (["--cell-layers", "2"], "cell_layers 2 stacks parallel cells"),
    ],
)
def test_the_command_line_refuses_a_bad_cell_in_one_line(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--agent", "drqn", "--env", "MemoryChain-8", *argv, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 2, err  # argparse's usage line, then the error
    assert not out.exists()


def test_a_config_file_chooses_the_cell(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"agent": "drqn", "cell": "bogus"}')
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert exc.value.code == 2
    assert "cell must be one of ('gru', 'lstm', 'lru', 'mingru', 'ffm'), got 'bogus'" in (
        capsys.readouterr().err
    )
    config = TrainConfig.from_dict({"agent": "drqn", "cell": "mingru", "memory": 32})
    assert config.agent_config.cell == "mingru" and config.agent_config.memory == 32


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("cell", ["mingru"])
def test_a_parallel_cell_learns_a_memory_task_that_dqn_cannot(cell):
    """test_learning's MemoryChain-8 run (where DQN stays at chance, 0, and DRQN's GRU reaches
    1) with the parallel cell as DRQN's memory: both seeds >= 0.8."""
    from test_learning import QUICK_MEMORY

    config = QUICK_MEMORY.replace(agent=dataclasses.replace(QUICK_MEMORY.agent_config, cell=cell))
    trainer = mj.train.make_train(config)
    _, metrics = jax.jit(jax.vmap(trainer))(jax.random.split(jax.random.key(0), 2))
    returns = np.asarray(metrics["eval_return"]).mean(axis=1)
    assert np.all(returns >= 0.8), returns


@pytest.mark.parametrize("cell", PARALLEL_CELLS)
def test_a_parallel_cell_exports_its_step(cell, tmp_path):
    """``memjax export --format jax`` of DRQN with the cell: the exported step along a
    trajectory with an episode start inside equals the network stepped with the loop's reset."""
    from memjax import export
    from memjax.agents import reset_where
    from test_export import saved_agent

    trainer, params = saved_agent(tmp_path, "drqn", hidden=(8,), memory=8, cell=cell)
    policy = export.load_jax(export.export_jax(tmp_path, tmp_path / "p.jaxexport", seed=1))
    batch, network = 3, trainer.network
    carry = np.zeros((batch, 8), np.float32)
    reference = network.initial_carry(batch)
    rng = np.random.default_rng(0)
    for t in range(6):
        obs = rng.normal(size=(batch, *policy.in_avals[0].shape[1:])).astype(np.float32)
        first = np.array([t == 0, t in (0, 3), t == 0])
        q, carry = policy.call(obs, carry, first)
        reference = reset_where(jnp.asarray(first), reference, network.initial_carry(batch))
        reference, q_ref = network.apply(params, reference, obs)
        np.testing.assert_allclose(np.asarray(q), np.asarray(q_ref), atol=1e-5)
        np.testing.assert_allclose(np.asarray(carry), np.asarray(reference), atol=1e-5)


def test_bench_cells_quick_writes_json_and_one_table(tmp_path, capsys):
    from experiments import bench_cells

    out = tmp_path / "bench.json"
    argv = ["--quick", "--cells", "gru,mingru", "--compare-autodiff", "--out", str(out)]
    assert bench_cells.main(argv) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    for part in (doc["updates"]["8"], doc["loops"]["1"]):
        assert set(part) == {"gru", "mingru", "mingru/autodiff"}
        assert part["gru"]["speedup_vs_gru"] == 1.0 and part["gru"]["custom_vs_autodiff"] is None
        assert part["mingru"]["speedup_vs_gru"] > 0 and part["mingru"]["custom_vs_autodiff"] > 0
    update = doc["updates"]["8"]
    assert update["mingru"]["hlo_kernels"] != update["mingru/autodiff"]["hlo_kernels"]
    assert printed.count("speed-up vs gru") == 1 and "loop MemoryChain-20, 1 seed" in printed
