"""Deployable policies (memjax export, jax format): the file is the policy (outputs equal the
in-memory network; int8 equals memjax's own int8 model), for any batch, for an MLP and a
MinAtar conv net; it loads and runs in a process that imports neither flax nor memjax; bad
input is one error line with no file left behind."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax.compress as mjc
from memjax import cli, export
from memjax.agents import ConvQNetwork, MLPQNetwork
from memjax.train import TrainConfig, params_file

CASES = {
    "mlp": (MLPQNetwork(num_actions=2, hidden=(120, 84)), (4,), TrainConfig()),  # CartPole
    "conv": (
        ConvQNetwork(num_actions=3, channels=16, hidden=128),
        (10, 10, 4),
        TrainConfig(env="Breakout-MinAtar", buffer_capacity=100_000),
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def run(request, tmp_path_factory):
    """A run directory with a 2-seed parameter file of the case's network."""
    network, obs_shape, config = CASES[request.param]
    params = jax.vmap(lambda k: network.init(k, jnp.zeros((1, *obs_shape))))(
        jax.random.split(jax.random.key(0), 2)
    )
    folder = tmp_path_factory.mktemp(request.param)
    params_file.save(folder, config, params)
    return request.param, folder, network, params, obs_shape


def observations(obs_shape, batch, seed=0):
    rng = np.random.default_rng(seed)
    if len(obs_shape) == 3:  # MinAtar: 0/1 channels
        return (rng.random((batch, *obs_shape)) < 0.1).astype(np.float32)
    return rng.normal(size=(batch, *obs_shape)).astype(np.float32)


def q_values_elsewhere(code: str, obs, tmp_path, forbidden) -> tuple:
    """Run ``code`` (which sets ``q`` from ``obs``) in a fresh interpreter without memjax on
    its path; returns ``(q, the forbidden top-level modules it imported)``."""
    np.save(tmp_path / "obs.npy", obs)
    script = (
        f"import sys, json, numpy as np\nobs = np.load({str(tmp_path / 'obs.npy')!r})\n{code}"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {tuple(forbidden)!r}]\n"
        "print(json.dumps({'q': np.asarray(q).tolist(), 'imported': bad}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**env, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return np.asarray(result["q"]), result["imported"]


@pytest.mark.parametrize("batch", [1, 256])
def test_the_file_computes_the_networks_q_values(run, tmp_path, batch):
    name, folder, network, params, obs_shape = run
    path = export.export_jax(folder, tmp_path / "policy.jaxexport", seed=1)
    policy = export.load_jax(path)
    obs = observations(obs_shape, batch)
    expected = network.apply(jax.tree.map(lambda x: x[1], params), obs)
    np.testing.assert_allclose(np.asarray(policy.call(obs)), np.asarray(expected), atol=1e-5)
    assert policy.in_avals[0].dtype == jnp.float32 and str(policy.in_avals[0].shape[0]) == "batch"


def test_int8_equals_memjaxs_int8_model_and_is_smaller(run, tmp_path):
    name, folder, network, params, obs_shape = run
    full = export.export_jax(folder, tmp_path / "f32.jaxexport")
    small = export.export_jax(folder, tmp_path / "int8.jaxexport", quantize="int8")
    seed0 = jax.tree.map(lambda x: x[0], params)
    obs = observations(obs_shape, 64, seed=3)
    expected = mjc.apply(network, mjc.quantize(seed0, bits=8, per_channel=True), obs)
    got = export.load_jax(small).call(obs)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-5)
    ratio = small.stat().st_size / full.stat().st_size
    # the conv net's kernels dominate its file: int8 is about a quarter of float32; the
    # CartPole MLP's 10,934 parameters leave the program's own bytes a larger share
    assert ratio < (0.3 if name == "conv" else 0.6), ratio


def test_the_file_loads_without_flax_or_memjax(run, tmp_path):
    name, folder, network, params, obs_shape = run
    path = export.export_jax(folder, tmp_path / "policy.jaxexport", quantize="int8")
    obs = observations(obs_shape, 3)
    q, imported = q_values_elsewhere(
        "import jax\n"
        f"policy = jax.export.deserialize(bytearray(open({str(path)!r}, 'rb').read()))\n"
        "q = policy.call(obs)\n",
        obs,
        tmp_path,
        forbidden=("flax", "memjax", "optax"),
    )
    assert imported == []
    expected = export.load_jax(path).call(obs)
    np.testing.assert_allclose(q, np.asarray(expected), atol=1e-6)


def test_bad_input_is_one_line_and_leaves_no_file(run, tmp_path, capsys):
    name, folder, *_ = run
    out = tmp_path / "out" / "x.jaxexport"
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("not a run")
    (tmp_path / "killed" / "checkpoints" / "1000").mkdir(parents=True)  # no final parameters
    (tmp_path / "bad.msgpack").write_bytes(b"\x00 not msgpack")
    for argv, words in [
        ([str(tmp_path / "nope")], "no run or compress result at"),
        ([str(tmp_path / "stranger")], "is neither a run of `memjax train --out`"),
        ([str(tmp_path / "killed")], "has no final parameters (checkpoint.msgpack)"),
        ([str(tmp_path / "bad.msgpack")], "is not a memjax checkpoint"),
        ([str(folder), "--seed", "9"], "seed 9 out of range: the run has 2 seeds"),
        ([str(folder), "--quantize", "int4"], "invalid choice: 'int4'"),
        ([str(folder), "--format", "tflite"], "invalid choice: 'tflite'"),
        ([str(folder), "--platforms", "cpu,gpu"], "--platforms must be some of ('cpu', 'cuda'"),
    ]:
        for fmt in ("jax", "onnx"):
            with pytest.raises(SystemExit) as exc:
                cli.main(["export", "--format", fmt, *argv, "--out", str(out)])
            assert exc.value.code == 2
            err = capsys.readouterr().err
            assert words in err and err.count("\n") == 1, err
            assert not out.parent.exists()
    assert cli.main(["export", str(folder), "--out", str(out), "--quantize", "int8"]) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()


def saved_agent(folder, agent, env="MemoryChain-8", **knobs):
    """A 2-seed parameter file of ``agent`` on ``env`` (small knobs), and its trainer and
    seed 1's parameters."""
    from memjax.train import make_train

    config = TrainConfig(agent=agent, env=env).replace(**knobs)
    trainer = make_train(config)
    obs = jnp.zeros(trainer.env.observation_space(trainer.env_params).shape)
    keys = jax.random.split(jax.random.key(0), 2)
    state = jax.vmap(trainer.agent.init, in_axes=(0, None))(keys, obs)
    params_file.save(folder, config, state.params)
    return trainer, jax.tree.map(lambda x: x[1], state.params)


CARRY_AGENTS = {
    "drqn-gru": ("drqn", dict(hidden=(8,), memory=8)),
    "drqn-lstm": ("drqn", dict(hidden=(8,), memory=8, cell="lstm")),
    "drqn-lru": ("drqn", dict(hidden=(8,), memory=8, cell="lru")),
    "drqn-mingru": ("drqn", dict(hidden=(8,), memory=8, cell="mingru")),
    "ntm": ("ntm", dict(hidden=(8,), memory=8)),
    "ntm-lru": ("ntm", dict(hidden=(8,), memory=8, controller="lru")),
    "memnet": (
        "memnet",
        dict(hidden=(8,), memory=8, context_length=4, sequence_length=8, sequence_period=4),
    ),
}
NOT_QUANTIZED = {"memnet": "", "drqn-lru": "'LRU_0'", "ntm-lru": "'LRU_0'"}
"""The carry agents whose int8 export is refused, and the layer the refusal names (memnet's
age and null slots, the LRU's complex recurrence: no Dense or Conv layers)."""
FIRST = [(True, True, True), (False, False, False), (False, True, False), (False, False, True)]


def network_steps(network, params, batch, observations):
    """Q-values and carries of ``network`` stepped over ``observations`` with the loop's
    reset where ``FIRST``, from its initial carry."""
    from memjax.agents import reset_where

    method = "step" if hasattr(network, "step") else "__call__"
    carry, out = network.initial_carry(batch), []
    for obs, first in zip(observations, FIRST * 2):
        carry = reset_where(jnp.asarray(first), carry, network.initial_carry(batch))
        carry, q = network.apply(params, carry, obs, method=method)
        out.append((np.asarray(q), jax.tree.map(np.asarray, carry)))
    return out


def trajectory(obs_shape, batch=3, steps=8):
    return list(np.random.default_rng(0).normal(size=(steps, batch, *obs_shape)).astype(np.float32))


@pytest.mark.parametrize("kind", sorted(CARRY_AGENTS))
def test_an_agent_with_a_carry_exports_its_step(kind, tmp_path, capsys):
    """``(obs, carry, first) -> (q_values, carry)`` along an 8-step trajectory with episode
    starts inside equals the network stepped with the loop's reset, from zeros and first=True
    (the NTM's initial state is not zero: the file puts it back where first); int8 is smaller
    and equals the network run from memjax's int8 weights (memnet and the LRU: refused,
    :data:`NOT_QUANTIZED`)."""
    agent, knobs = CARRY_AGENTS[kind]
    trainer, params = saved_agent(tmp_path, agent, **knobs)
    network = trainer.network
    for quantize in ("none", "int8"):
        path = tmp_path / f"{quantize}.jaxexport"
        if kind in NOT_QUANTIZED and quantize == "int8":
            with pytest.raises(SystemExit) as exc:
                cli.main(["export", str(tmp_path), "--quantize", "int8", "--out", str(path)])
            err = capsys.readouterr().err
            assert exc.value.code == 2 and err.count("\n") == 1
            assert f"agent '{agent}''s layers cannot be quantized: unsupported layer" in err
            assert NOT_QUANTIZED[kind] in err
            assert not path.exists()
            continue
        policy = export.load_jax(export.export_jax(tmp_path, path, seed=1, quantize=quantize))
        (_, carry_avals, _), _ = jax.tree.unflatten(policy.in_tree, policy.in_avals)
        carry = jax.tree.map(lambda a: np.zeros((3, *a.shape[1:]), a.dtype), carry_avals)
        weights = params if quantize == "none" else mjc.decompress(mjc.quantize(params))
        observations = trajectory(policy.in_avals[0].shape[1:])
        reference = network_steps(network, weights, 3, observations)
        for obs, first, (q_ref, carry_ref) in zip(observations, FIRST * 2, reference):
            q, carry = policy.call(obs, carry, np.array(first))
            np.testing.assert_allclose(np.asarray(q), q_ref, atol=1e-5)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carry, carry_ref)
    if kind not in NOT_QUANTIZED:
        assert (tmp_path / "int8.jaxexport").stat().st_size < (
            tmp_path / "none.jaxexport"
        ).stat().st_size


class NormalizedQNetwork(nn.Module):
    """A user's Q-network with a LayerNorm: neither written in ONNX nor quantizable."""

    num_actions: int

    @nn.compact
    def __call__(self, obs):
        return nn.Dense(self.num_actions)(nn.LayerNorm()(nn.Dense(16)(obs)))


@pytest.fixture
def user_agent():
    from memjax import agents

    def make_network(config, obs, num_actions):
        return NormalizedQNetwork(num_actions)

    agents.register(agents.get("dqn")._replace(name="normed", make_network=make_network))
    yield "normed"
    agents.unregister("normed")


def test_what_cannot_be_exported_says_why(tmp_path, capsys, user_agent):
    """A user's network exports in the jax format (any flax module), not in ONNX (memjax
    writes its own networks there) nor as int8 (a LayerNorm is no Dense or Conv): one line,
    exit 2, no file."""
    network = NormalizedQNetwork(2)
    params = network.init(jax.random.key(0), jnp.zeros((1, 4)))
    params_file.save(tmp_path, TrainConfig(agent=user_agent), params, stacked=False)
    obs = observations((4,), 5)
    path = export.export_jax(tmp_path, tmp_path / "p.jaxexport")
    np.testing.assert_allclose(
        np.asarray(export.load_jax(path).call(obs)), network.apply(params, obs), atol=1e-5
    )
    for argv, words in [
        (["--format", "onnx"], "not agent 'normed''s NormalizedQNetwork"),
        (["--quantize", "int8"], "agent 'normed''s layers cannot be quantized: unsupported"),
    ]:
        with pytest.raises(SystemExit) as exc:
            cli.main(["export", str(tmp_path), *argv, "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and words in err, err
        assert not (tmp_path / "x").exists()


onnxruntime = pytest.importorskip("onnxruntime", reason="pip install -e '.[dev]'")


@pytest.mark.parametrize(
    "kind, knobs, words",
    [
        ("drqn-lru", dict(cell="ffm"), "not the 'ffm' cell"),
        ("drqn-lru", dict(cell="mingru", cell_layers=2), "not 2 cell layers"),
        ("ntm-lru", dict(controller="ffm"), "not the 'ffm' cell"),
    ],
)
def test_a_memory_onnx_does_not_write_says_so(kind, knobs, words, tmp_path, capsys):
    """FFM (DRQN's cell or the NTM's controller) or stacked cell layers in ONNX: one line
    naming it and the jax format, exit 2, no file."""
    agent, base = CARRY_AGENTS[kind]
    saved_agent(tmp_path, agent, **(base | knobs))
    out = tmp_path / "x.onnx"
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", str(tmp_path), "--format", "onnx", "--out", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert words in err and "use --format jax" in err, err
    assert not out.exists()


def onnx_session(path, optimized: bool = True):
    options = onnxruntime.SessionOptions()
    if not optimized:  # no fusion of DequantizeLinear + MatMul into integer kernels
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return onnxruntime.InferenceSession(str(path), options)


@pytest.mark.parametrize("batch", [1, 256])
def test_the_onnx_file_computes_the_networks_q_values(run, tmp_path, batch):
    name, folder, network, params, obs_shape = run
    path = export.export_onnx(folder, tmp_path / "policy.onnx", seed=1)
    obs = observations(obs_shape, batch)
    expected = network.apply(jax.tree.map(lambda x: x[1], params), obs)
    got = onnx_session(path).run(None, {"obs": obs})[0]
    np.testing.assert_allclose(got, np.asarray(expected), atol=1e-5)
    inputs, outputs = onnx_session(path).get_inputs(), onnx_session(path).get_outputs()
    assert [i.name for i in inputs] == ["obs"] and inputs[0].shape[0] == "batch"
    assert [o.name for o in outputs] == ["q_values"] and outputs[0].type == "tensor(float)"


def test_onnx_int8_is_memjaxs_int8_model_and_under_a_third_of_the_size(run, tmp_path):
    name, folder, network, params, obs_shape = run
    full = export.export_onnx(folder, tmp_path / "f32.onnx")
    small = export.export_onnx(folder, tmp_path / "int8.onnx", quantize="int8")
    assert small.stat().st_size <= 0.3 * full.stat().st_size, (small, full)
    seed0 = jax.tree.map(lambda x: x[0], params)
    obs = observations(obs_shape, 128, seed=4)
    expected = np.asarray(mjc.apply(network, mjc.quantize(seed0, bits=8), obs))
    # dequantized weights, float arithmetic: memjax's int8 model within float rounding
    plain = onnx_session(small, optimized=False).run(None, {"obs": obs})[0]
    np.testing.assert_allclose(plain, expected, atol=1e-5)
    # onnxruntime's default fuses the weights' dequantization into integer kernels that
    # quantize the activations too: Q-values within 2% of their range, the same greedy actions
    fused = onnx_session(small).run(None, {"obs": obs})[0]
    assert np.abs(fused - expected).max() <= 0.02 * np.abs(expected).max()
    assert np.mean(fused.argmax(-1) == expected.argmax(-1)) >= 0.95


def test_onnx_runs_without_jax(run, tmp_path):
    name, folder, network, params, obs_shape = run
    path = export.export_onnx(folder, tmp_path / "policy.onnx", quantize="int8")
    obs = observations(obs_shape, 3)
    q, imported = q_values_elsewhere(
        "import onnxruntime\n"
        f"q = onnxruntime.InferenceSession({str(path)!r}).run(None, {{'obs': obs}})[0]\n",
        obs,
        tmp_path,
        forbidden=("jax", "flax", "memjax"),
    )
    assert imported == []
    expected = onnx_session(path).run(None, {"obs": obs})[0]
    np.testing.assert_allclose(q, expected, atol=1e-6)


def test_a_greedy_episode_through_onnx_scores_what_the_network_scores(tmp_path):
    """CartPole episodes played greedily through the ONNX file in onnxruntime and through the
    flax network, from the same resets: the same actions, so the same returns."""
    from memjax import envs

    network, obs_shape, config = CASES["mlp"]
    params = network.init(jax.random.key(3), jnp.zeros((1, *obs_shape)))
    params_file.save(tmp_path, config, params, stacked=False)
    session = onnx_session(export.export_onnx(tmp_path, tmp_path / "policy.onnx"))
    env, env_params = envs.make("CartPole-v1")
    step = jax.jit(env.step)
    flax_q = jax.jit(lambda o: network.apply(params, o))
    for episode in range(3):
        returns = []
        for act in (lambda o: session.run(None, {"obs": o})[0], lambda o: np.asarray(flax_q(o))):
            obs, state = env.reset(jax.random.key(episode), env_params)
            total, done, t = 0.0, False, 0
            while not done and t < 500:
                action = int(np.argmax(act(np.asarray(obs, np.float32)[None])[0]))
                obs, state, reward, done, _ = step(jax.random.key(t), state, action, env_params)[:5]
                total, t = total + float(reward), t + 1
            returns.append(total)
        assert returns[0] == returns[1], returns


@pytest.mark.parametrize(
    "kind", ["drqn-gru", "drqn-lstm", "drqn-gru-minatar", "drqn-lru", "drqn-mingru"]
)
def test_drqn_in_onnx_steps_as_the_network(kind, tmp_path):
    """DRQN's file (obs, carry tensors, first) -> (q_values, next carry) along a trajectory
    with episode starts inside equals the network stepped with the loop's reset: float32
    within 1e-5, int8 equal to the network run from memjax's int8 weights (the LRU: float32
    only, :data:`NOT_QUANTIZED`)."""
    agent, knobs = CARRY_AGENTS[kind.removesuffix("-minatar")]
    env = "Breakout-MinAtar" if kind.endswith("minatar") else "MemoryChain-8"
    extra = {"buffer_capacity": 10_000} if kind.endswith("minatar") else {}
    trainer, params = saved_agent(tmp_path, agent, env=env, **knobs, **extra)
    names = export.ONNX_CARRY[knobs.get("cell", "gru")]
    for quantize in ("none",) if kind in NOT_QUANTIZED else ("none", "int8"):
        path = export.export_onnx(
            tmp_path, tmp_path / f"{quantize}.onnx", seed=1, quantize=quantize
        )
        session = onnx_session(path, optimized=False)
        assert [i.name for i in session.get_inputs()] == ["obs", *names, "first"]
        assert [o.name for o in session.get_outputs()] == ["q_values"] + [
            f"next_{n}" for n in names
        ]
        weights = params if quantize == "none" else mjc.decompress(mjc.quantize(params))
        obs_shape = tuple(session.get_inputs()[0].shape[1:])
        observations = trajectory(obs_shape)
        if len(obs_shape) == 3:
            observations = [(o > 1.0).astype(np.float32) for o in observations]
        reference = network_steps(trainer.network, weights, 3, observations)
        carry = {n: np.zeros((3, knobs["memory"]), np.float32) for n in names}
        for obs, first, (q_ref, carry_ref) in zip(observations, FIRST * 2, reference):
            q, *new = session.run(None, {"obs": obs, **carry, "first": np.array(first)})
            carry = dict(zip(names, new))
            np.testing.assert_allclose(q, q_ref, atol=1e-5)
            carry_ref = carry_ref if isinstance(carry_ref, tuple) else (carry_ref,)
            for got, want in zip(new, carry_ref):
                np.testing.assert_allclose(got, want, atol=1e-5)
    if kind not in NOT_QUANTIZED:
        assert (tmp_path / "int8.onnx").stat().st_size < (tmp_path / "none.onnx").stat().st_size


def test_a_recurrent_file_runs_without_memjax_or_jax(tmp_path):
    """DRQN's jax file steps in a process that imports neither flax nor memjax, its ONNX file
    in one that imports no jax: both give the Q-values of the file run here."""
    agent, knobs = CARRY_AGENTS["drqn-lstm"]
    saved_agent(tmp_path, agent, **knobs)
    obs = trajectory((3,), steps=1)[0]
    jax_file = export.export_jax(tmp_path, tmp_path / "p.jaxexport", quantize="int8")
    q, imported = q_values_elsewhere(
        "import jax\n"
        f"p = jax.export.deserialize(bytearray(open({str(jax_file)!r}, 'rb').read()))\n"
        "(_, avals, _), _ = jax.tree.unflatten(p.in_tree, p.in_avals)\n"
        "carry = jax.tree.map(lambda a: np.zeros((3, *a.shape[1:]), a.dtype), avals)\n"
        "q, carry = p.call(obs, carry, np.ones(3, bool))\n",
        obs,
        tmp_path,
        forbidden=("flax", "memjax", "optax"),
    )
    assert imported == []
    carry = (np.zeros((3, 8), np.float32),) * 2
    here = export.load_jax(jax_file).call(obs, carry, np.ones(3, bool))[0]
    np.testing.assert_allclose(q, np.asarray(here), atol=1e-6)
    onnx_file = export.export_onnx(tmp_path, tmp_path / "p.onnx", quantize="int8")
    zeros = "np.zeros((3, 8), np.float32)"
    q, imported = q_values_elsewhere(
        "import onnxruntime\n"
        f"s = onnxruntime.InferenceSession({str(onnx_file)!r})\n"
        f"feed = {{'obs': obs, 'c': {zeros}, 'h': {zeros}, 'first': np.ones(3, bool)}}\n"
        "q = s.run(None, feed)[0]\n",
        obs,
        tmp_path,
        forbidden=("jax", "flax", "memjax"),
    )
    assert imported == []
    feed = {"obs": obs, "c": carry[0], "h": carry[1], "first": np.ones(3, bool)}
    np.testing.assert_allclose(q, onnx_session(onnx_file).run(None, feed)[0], atol=1e-6)


def test_memnet_in_onnx_steps_as_the_network(tmp_path):
    """memnet's file (obs, ring, count, first) -> (q_values, next_ring, next_count) along a
    trajectory with episode starts inside equals MemoryQNetwork.step with the loop's reset."""
    agent, knobs = CARRY_AGENTS["memnet"]
    trainer, params = saved_agent(tmp_path, agent, **knobs)
    session = onnx_session(export.export_onnx(tmp_path, tmp_path / "m.onnx", seed=1))
    assert [i.name for i in session.get_inputs()] == ["obs", "ring", "count", "first"]
    assert [o.name for o in session.get_outputs()] == ["q_values", "next_ring", "next_count"]
    observations = trajectory((3,))
    reference = network_steps(trainer.network, params, 3, observations)
    ring, count = np.zeros((3, 4, 3), np.float32), np.zeros(3, np.int32)
    for obs, first, (q_ref, carry_ref) in zip(observations, FIRST * 2, reference):
        feed = {"obs": obs, "ring": ring, "count": count, "first": np.array(first)}
        q, ring, count = session.run(None, feed)
        np.testing.assert_allclose(q, q_ref, atol=1e-5)
        np.testing.assert_array_equal(ring, carry_ref["obs"])
        np.testing.assert_array_equal(count, carry_ref["count"])


@pytest.mark.parametrize("controller", ["lstm", "gru", "feedforward", "lru", "mingru"])
def test_the_ntm_in_onnx_steps_as_the_network(controller, tmp_path):
    """The NTM's file (obs, controller, memory, weights, reads, first) -> (q_values, next
    ...) along a trajectory with episode starts inside equals the network stepped with the
    loop's reset to its initial state (not zeros), float32 within 1e-5 and int8 with memjax's
    int8 weights (the LRU controller: float32 only)."""
    agent, knobs = CARRY_AGENTS["ntm"]
    trainer, params = saved_agent(tmp_path, agent, controller=controller, **knobs)
    names = [n for n in export.ONNX_NTM_CARRY if n != "controller" or controller != "feedforward"]
    for quantize in ("none",) if controller == "lru" else ("none", "int8"):
        path = export.export_onnx(
            tmp_path, tmp_path / f"{quantize}.onnx", seed=1, quantize=quantize
        )
        session = onnx_session(path, optimized=False)
        assert [i.name for i in session.get_inputs()] == ["obs", *names, "first"]
        weights = params if quantize == "none" else mjc.decompress(mjc.quantize(params))
        observations = trajectory((3,))
        reference = network_steps(trainer.network, weights, 3, observations)
        carry = {
            i.name: np.zeros((3, *i.shape[1:]), np.float32) for i in session.get_inputs()[1:-1]
        }
        for obs, first, (q_ref, carry_ref) in zip(observations, FIRST * 2, reference):
            q, *new = session.run(None, {"obs": obs, **carry, "first": np.array(first)})
            carry = dict(zip(names, new))
            np.testing.assert_allclose(q, q_ref, atol=1e-5)
            for name in names:
                np.testing.assert_allclose(carry[name], carry_ref[name], atol=1e-5)
