"""Deployable policies: a trained run's greedy Q-network as a file that runs without memjax.

``memjax export RUN_DIR --format jax [--quantize int8] --out FILE`` (and :func:`export_jax`)
writes the Q-network of one seed of a run (``RUN_DIR/checkpoint.msgpack``, written by
``memjax train --out RUN_DIR``) as serialized StableHLO (``jax.export``): a function
``q_values = f(obs)`` with ``obs`` float32 ``[batch, *obs_shape]`` (``batch`` dynamic) and
``q_values`` float32 ``[batch, num_actions]``. It loads and runs with ``jax`` alone, no flax
and no memjax::

    import jax, numpy as np
    policy = jax.export.deserialize(bytearray(open("cartpole.jaxexport", "rb").read()))
    q_values = jax.jit(policy.call)                        # jit: no per-call Python overhead
    action = int(np.argmax(q_values(np.zeros((1, 4), np.float32))[0]))

``--quantize int8`` stores every Dense/Conv kernel as int8 with one float32 scale per output
channel (:func:`memjax.compress.quantize`) and computes from them, so the file holds int8
constants. The programs are lowered for CPU and CUDA by default (``platforms``); JAX promises
that a serialized export keeps loading and running in the JAX releases of the following six
months, and that a JAX release runs exports made by releases up to six months older
(https://jax.readthedocs.io/en/latest/export/export.html#compatibility-guarantees).

``--format onnx`` (:func:`export_onnx`) writes the same function as an ONNX model that
onnxruntime runs without JAX (feedforward agents). Agents that carry a state (DRQN, the NTM)
export in the jax format as ``(obs, carry, first) -> (q_values, carry)``: zeros of the carry's
shapes (``jax.tree.unflatten(exp.in_tree, exp.in_avals)[0][1]``) with ``first`` True at an
episode's start give the agent's initial state.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from memjax import compress
from memjax.train import params_file

FORMATS = ("jax", "onnx")
"""The export formats: ``jax`` (serialized StableHLO, ``jax.export``) and ``onnx`` (an ONNX
model that onnxruntime runs without JAX)."""
ONNX_OPSET = 17
"""The ONNX operator set of ``--format onnx`` files (per-axis ``DequantizeLinear`` needs 13+)."""
QUANTIZE = ("none", "int8")
"""Weight storage of an export: float32 as trained, or int8 with per-channel scales."""
DEFAULT_PLATFORMS = ("cpu", "cuda")


def policy_function(run, *, seed: int = 0, quantize: str = "none"):
    """The greedy policy's Q-function of one seed of a run, ``obs [B, *obs_shape] -> q_values
    float32 [B, num_actions]``, with the weights closed over, and the observation spec.

    Args:
      run: a run directory (or its ``checkpoint.msgpack``), or a loaded
        :class:`memjax.train.params_file.Checkpoint`.
      seed: which of the run's seeds.
      quantize: ``"none"`` or ``"int8"`` (kernels as int8 with per-channel scales).

    Returns:
      ``(function, obs_spec)``: the function and a ``jax.ShapeDtypeStruct`` of ONE
      observation.

    Raises:
      FileNotFoundError: no parameter file.
      ValueError: a recurrent agent, a seed out of range, an unknown ``quantize``, or a
        network with layers that cannot be quantized.
    """
    loaded = run if isinstance(run, params_file.Checkpoint) else params_file.load(run)
    _check_choice(quantize, seed, loaded)
    if not loaded.spec.feedforward:
        raise ValueError(
            f"agent {loaded.config.agent!r} carries a state from step to step: see "
            f"recurrent_policy_function"
        )
    network = loaded.network()
    params = jax.tree.map(jnp.asarray, loaded.seed_params(seed))
    obs_spec = loaded.observation_spec()
    if quantize == "int8":
        params = compress.quantize(params, bits=8, per_channel=True)

        def q_values(obs):
            return compress.apply(network, params, obs.astype(obs_spec.dtype))
    else:

        def q_values(obs):
            return network.apply(params, obs.astype(obs_spec.dtype))

    return q_values, obs_spec


def recurrent_policy_function(run, *, seed: int = 0, quantize: str = "none"):
    """The greedy policy's step of one seed of a run whose agent carries a state:
    ``(obs [B, *obs_shape], carry, first bool [B]) -> (q_values float32 [B, num_actions],
    carry)``, where the carry is put back to the agent's initial state in the rows where
    ``first`` (an episode starts), as the training loop does. Networks called as
    ``network.apply(params, carry, obs) -> (carry, q_values)`` with an
    ``initial_carry(batch)`` method (DRQN's, the NTM's).

    Returns:
      ``(function, obs_spec, carry_spec)``: the function, a ``jax.ShapeDtypeStruct`` of ONE
      observation and the carry's structure of ShapeDtypeStructs for a batch of one.

    Raises:
      ValueError: a feedforward agent, a network of another form, a seed out of range or an
        unknown ``quantize``.
    """
    from memjax.agents import reset_where

    loaded = run if isinstance(run, params_file.Checkpoint) else params_file.load(run)
    if loaded.spec.feedforward:
        raise ValueError(f"agent {loaded.config.agent!r} is feedforward: use policy_function")
    _check_choice(quantize, seed, loaded)
    network = loaded.network()
    params = jax.tree.map(jnp.asarray, loaded.seed_params(seed))
    obs_spec = loaded.observation_spec()
    if quantize == "int8":
        params = compress.quantize(params, bits=8, per_channel=True)

    def call(carry, obs):
        # int8: the integers and scales are the file's constants, dequantized in the program
        weights = compress.decompress(params) if quantize == "int8" else params
        return network.apply(weights, carry, obs)

    if not hasattr(network, "initial_carry"):
        raise ValueError(f"a {type(network).__name__} has no initial_carry: not exportable")
    one = jnp.zeros((1, *obs_spec.shape), obs_spec.dtype)
    try:
        carry_spec, _ = jax.eval_shape(call, network.initial_carry(1), one)
    except TypeError as e:
        raise ValueError(
            f"agent {loaded.config.agent!r}: its {type(network).__name__} is not "
            f"called as (carry, obs) -> (carry, q_values); not exportable "
            f"({e})"
        ) from None

    def step(obs, carry, first):
        initial = network.initial_carry(obs.shape[0])
        carry = reset_where(first, carry, initial)
        carry, q_values = call(carry, obs.astype(obs_spec.dtype))
        return q_values, carry

    return step, obs_spec, carry_spec


def _check_choice(quantize: str, seed, loaded) -> None:
    """``ValueError`` for an unknown ``quantize`` or a seed the run does not have."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if not isinstance(seed, int) or not 0 <= seed < loaded.num_seeds:
        raise ValueError(f"seed {seed!r} out of range: the run has {loaded.num_seeds} seeds")


def export_jax(
    run, out, *, seed: int = 0, quantize: str = "none", platforms=DEFAULT_PLATFORMS
) -> Path:
    """Write the greedy Q-network of one seed of ``run`` as serialized StableHLO.

    Args:
      run: a run directory, its parameter file, or a loaded parameter file.
      out: the file to write (its folder is created); written whole or not at all.
      seed: which of the run's seeds.
      quantize: ``"none"`` or ``"int8"``.
      platforms: the platforms to lower for (``"cpu"``, ``"cuda"``, ``"rocm"``, ``"tpu"``).

    Returns:
      The file's path. ``jax.export.deserialize(path.read_bytes()).call(obs)`` runs it, with
      ``obs`` float32 ``[batch, *obs_shape]`` for any batch. An agent that carries a state
      (DRQN, the NTM) is exported as ``call(obs, carry, first) -> (q_values, carry)``: the
      carry's structure and shapes are ``jax.tree.unflatten(exp.in_tree, exp.in_avals)[0][1]``
      of the loaded file ``exp``; pass zeros of them with ``first`` True at an episode's start
      and the file puts the agent's initial state there.

    Raises:
      FileNotFoundError: no parameter file.
      ValueError: a recurrent agent, a seed out of range, an unknown ``quantize``, or a
        network with layers that cannot be quantized.
    """
    loaded = run if isinstance(run, params_file.Checkpoint) else params_file.load(run)
    (batch,) = jax.export.symbolic_shape("batch")
    if loaded.spec.feedforward:
        q_values, obs_spec = policy_function(loaded, seed=seed, quantize=quantize)
        args = (jax.ShapeDtypeStruct((batch, *obs_spec.shape), jnp.float32),)
        function = q_values
    else:
        function, obs_spec, carry_spec = recurrent_policy_function(
            loaded, seed=seed, quantize=quantize
        )
        args = (
            jax.ShapeDtypeStruct((batch, *obs_spec.shape), jnp.float32),
            jax.tree.map(
                lambda x: jax.ShapeDtypeStruct((batch, *x.shape[1:]), x.dtype), carry_spec
            ),
            jax.ShapeDtypeStruct((batch,), jnp.bool_),
        )
    exported = jax.export.export(jax.jit(function), platforms=tuple(platforms))(*args)
    return _write_atomically(Path(out), exported.serialize())


def export_onnx(run, out, *, seed: int = 0, quantize: str = "none") -> Path:
    """Write the greedy Q-network of one seed of ``run`` as an ONNX model (opset 17): input
    ``obs`` float32 ``[batch, *obs_shape]``, output ``q_values`` float32 ``[batch,
    num_actions]``, ``batch`` dynamic. memjax's MLP and conv Q-networks (the feedforward
    agents' and distilled students') are written layer by layer with ONNX's own operators
    (MatMul, Add, Relu, Conv with the NHWC input transposed); ``quantize="int8"`` stores the
    kernels as int8 initializers with per-output-channel scales, dequantized in the graph
    (``DequantizeLinear``), so the outputs equal memjax's int8 model's.

    Args:
      run: a run directory, its parameter file, or a loaded parameter file.
      out: the file to write; written whole or not at all.
      seed: which of the run's seeds.
      quantize: ``"none"`` or ``"int8"``.

    Returns:
      The file's path. ``onnxruntime.InferenceSession(path).run(None, {"obs": obs})[0]``
      gives the Q-values.

    Raises:
      FileNotFoundError: no parameter file.
      ValueError: a recurrent agent, a network other than memjax's MLP or conv Q-network, a
        seed out of range or an unknown ``quantize``.
      ImportError: the ``onnx`` package is not installed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from memjax.agents import ConvQNetwork, MLPQNetwork

    loaded = run if isinstance(run, params_file.Checkpoint) else params_file.load(run)
    if not loaded.spec.feedforward:
        raise ValueError(
            f"agent {loaded.config.agent!r} carries a state from step to step; ONNX export "
            f"writes feedforward Q-networks (use --format jax for it)"
        )
    _check_choice(quantize, seed, loaded)
    network = loaded.network()
    if not isinstance(network, (MLPQNetwork, ConvQNetwork)):
        raise ValueError(
            f"ONNX export writes memjax's MLP and conv Q-networks, not a {type(network).__name__}"
        )
    params = jax.tree.map(np.asarray, loaded.seed_params(seed))["params"]
    obs_shape = tuple(loaded.observation_spec().shape)
    graph = _OnnxGraph(quantize == "int8")
    x = "obs"
    if isinstance(network, ConvQNetwork):
        layer = params["Conv_0"]
        x = graph.node("Transpose", [x], perm=[0, 3, 1, 2])  # NHWC -> NCHW
        kernel = np.transpose(layer["kernel"], (3, 2, 0, 1))  # HWIO -> OIHW
        weight = graph.weight("Conv_0", kernel, axis=0)
        x = graph.node(
            "Conv",
            [x, weight, graph.constant("Conv_0/bias", layer["bias"])],
            kernel_shape=[3, 3],
            strides=[1, 1],
            pads=[0, 0, 0, 0],
        )
        x = graph.node("Relu", [x])
        x = graph.node("Transpose", [x], perm=[0, 2, 3, 1])  # back to NHWC
    x = graph.node("Flatten", [x], axis=1)  # as flax's reshape
    dense = sorted((k for k in params if k.startswith("Dense_")), key=lambda k: int(k[6:]))
    for i, name in enumerate(dense):
        weight = graph.weight(name, params[name]["kernel"], axis=1)
        x = graph.node("MatMul", [x, weight])
        x = graph.node("Add", [x, graph.constant(f"{name}/bias", params[name]["bias"])])
        if i + 1 < len(dense):
            x = graph.node("Relu", [x])
    graph.node("Identity", [x], output="q_values")
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "memjax_q_network",
            [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", *obs_shape])],
            [
                helper.make_tensor_value_info(
                    "q_values", TensorProto.FLOAT, ["batch", int(loaded.meta["num_actions"])]
                )
            ],
            initializer=[numpy_helper.from_array(v, k) for k, v in graph.initializers.items()],
        ),
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="memjax",
    )
    model.ir_version = 8  # what onnxruntime releases of the last years all read
    onnx.checker.check_model(model)
    return _write_atomically(Path(out), model.SerializeToString())


class _OnnxGraph:
    """Nodes and initializers of an ONNX graph being written, with fresh names."""

    def __init__(self, int8: bool):
        self.int8, self.nodes, self.initializers, self.count = int8, [], {}, 0

    def node(self, op: str, inputs, output=None, **attributes) -> str:
        from onnx import helper

        self.count += 1
        output = output or f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, list(inputs), [output], **attributes))
        return output

    def constant(self, name: str, value) -> str:
        self.initializers[name] = np.asarray(value, np.float32)
        return name

    def weight(self, name: str, kernel, axis: int) -> str:
        """A kernel as float32, or as int8 with one scale per output channel (``axis``)
        dequantized in the graph, the integers and scales of :func:`memjax.compress.quantize`."""
        if not self.int8:
            return self.constant(f"{name}/kernel", kernel)
        moved = np.moveaxis(np.asarray(kernel, np.float32), axis, -1)  # out channels last
        quantized = compress.quantize_tensor(jnp.asarray(moved), bits=8, per_channel=True)
        ints = np.moveaxis(np.asarray(quantized.ints()), -1, axis)
        self.initializers[f"{name}/kernel_int8"] = ints.astype(np.int8)
        self.initializers[f"{name}/scale"] = np.asarray(quantized.scale, np.float32)
        self.initializers[f"{name}/zero"] = np.zeros(ints.shape[axis], np.int8)
        return self.node(
            "DequantizeLinear", [f"{name}/kernel_int8", f"{name}/scale", f"{name}/zero"], axis=axis
        )


def _write_atomically(path: Path, blob: bytes) -> Path:
    """``blob`` into ``path`` through a temporary file in the same folder (no partial file)."""
    os.makedirs(path.parent or Path("."), exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_jax(path):
    """The exported policy at ``path`` (``jax.export.deserialize``); ``.call(obs)`` runs
    it. Only jax is needed to load one, this function is for convenience."""
    return jax.export.deserialize(bytearray(Path(path).read_bytes()))


__all__ = [
    "FORMATS",
    "QUANTIZE",
    "export_jax",
    "export_onnx",
    "load_jax",
    "ONNX_OPSET",
    "policy_function",
    "recurrent_policy_function",
]
