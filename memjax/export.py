"""Deployable policies: a trained or compressed greedy Q-network as a file that runs without
memjax.

``memjax export SOURCE --format jax|onnx [--quantize int8] --out FILE`` (and
:func:`export_jax`, :func:`export_onnx`) writes the Q-network of one seed of

* a run (``RUN_DIR/checkpoint.msgpack``, written by ``memjax train --out RUN_DIR``), or
* one method of a ``memjax compress --out DIR`` result (``DIR/<method>/seed<i>.msgpack``, e.g.
  ``DIR/prune_0.9+int8``): a pruned, low-rank, weight-shared, quantized or distilled network,

as a function ``q_values = f(obs)`` with ``obs`` float32 ``[batch, *obs_shape]`` (``batch``
dynamic) and ``q_values`` float32 ``[batch, num_actions]``. The jax format (serialized
StableHLO, ``jax.export``) loads and runs with ``jax`` alone, no flax and no memjax::

    import jax, numpy as np
    policy = jax.export.deserialize(bytearray(open("cartpole.jaxexport", "rb").read()))
    q_values = jax.jit(policy.call)                        # jit: no per-call Python overhead
    action = int(np.argmax(q_values(np.zeros((1, 4), np.float32))[0]))

The ONNX format (opset :data:`ONNX_OPSET`, ONNX's own operators) runs in onnxruntime without
JAX. ``--quantize int8`` stores every Dense/Conv kernel as int8 with float32 scales (one per
output channel, :func:`memjax.compress.quantize`) and computes from them; a network that
``memjax compress`` quantized keeps its own integers and scales. ``--quantize none`` stores
float32 kernels (a low-rank network keeps its two thin factors per layer).

Agents that carry a state (DRQN, the NTM, memnet) export as ``(obs, carry, first) ->
(q_values, carry)``: with ``first`` True where an episode starts, the file puts the agent's
initial state there (so zeros of the carry's shapes are a valid first carry). In the jax
format the carry is the agent's own pytree
(``jax.tree.unflatten(exp.in_tree, exp.in_avals)[0][1]``); in ONNX its arrays are inputs and
outputs of their own (:func:`export_onnx`).

The programs are lowered for CPU and CUDA by default (``platforms``); JAX promises that a
serialized export keeps loading and running in the JAX releases of the following six months,
and that a JAX release runs exports made by releases up to six months older
(https://docs.jax.dev/en/latest/export/export.html#compatibility-guarantees).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

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
"""Weight storage of an export: float32, or int8 with per-channel scales."""
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
"""The platforms a jax-format file can be lowered for (``jax.export``'s names)."""
DEFAULT_PLATFORMS = ("cpu", "cuda")
ONNX_CARRY = {"gru": ("h",), "lstm": ("c", "h"), "lru": ("h",), "mingru": ("h",)}
"""The carry inputs of a recurrent Q-network's ONNX file, by cell: float32 ``[batch, memory]``
each (the LRU's: the real parts of its complex state, then the imaginary parts), zeros at
an episode's start; the file outputs the next ones as ``next_<name>``, after
``q_values``, and takes ``first`` bool ``[batch]`` last among its inputs."""
ONNX_NTM_CARRY = ("controller", "memory", "weights", "reads")
"""The carry inputs of an NTM's ONNX file, float32 (``controller``: none for the feed-forward
controller); outputs ``next_<name>`` after ``q_values``; ``first`` last among the inputs."""
ONNX_CELLS = tuple(ONNX_CARRY)
"""The memory cells an ONNX file writes (DRQN's cell, one layer; the NTM's controller)."""
RUN_FILES = ("summary.json", "returns.csv", "checkpoints")
"""What a run directory holds besides its final parameters (a run killed before the end has
some of them but no ``checkpoint.msgpack``)."""


class Policy(NamedTuple):
    """One seed's greedy policy, ready to export.

    Attributes:
      network: the flax Q-network.
      params: its parameters, plain or with :mod:`memjax.compress` kernels.
      obs_spec: a ``jax.ShapeDtypeStruct`` of ONE observation.
      num_actions: A.
      feedforward: False for an agent that carries a state from step to step.
      name: what it is, for messages (``agent 'dqn'``, ``compress result 'int8'``).
    """

    network: Any
    params: Any
    obs_spec: Any
    num_actions: int
    feedforward: bool
    name: str


def load_policy(source, *, seed: int = 0) -> Policy:
    """The policy of one seed of a run or of one method of a ``memjax compress`` result.

    Args:
      source: a run directory (or its ``checkpoint.msgpack``, or a loaded
        :class:`memjax.train.params_file.Checkpoint`), or a method's folder of a
        ``memjax compress --out DIR`` result (``DIR/<method>``, next to ``DIR/results.json``).
      seed: which of the run's seeds (a compress result: the checkpoint seed it compressed).

    Raises:
      FileNotFoundError: no such folder, a folder that is neither a run nor a compress result,
        or a run without final parameters.
      ValueError: a seed out of range, a compress result's whole folder instead of one
        method's, or a foreign file.
    """
    if isinstance(source, params_file.Checkpoint):
        return _from_checkpoint(source, seed)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no run or compress result at {path}")
    if path.is_dir() and not (path / params_file.FILENAME).is_file():
        if (path.parent / "results.json").is_file() and any(path.glob("seed*.msgpack")):
            return _from_compress_result(path, seed)
        if (path / "results.json").is_file():
            methods = sorted(d.name for d in path.iterdir() if any(d.glob("seed*.msgpack")))
            raise ValueError(
                f"{path} is a memjax compress result: export one of its methods' folders "
                f"({', '.join(methods) or 'none written'}), e.g. {path / (methods or ['int8'])[0]}"
            )
        if any((path / name).exists() for name in RUN_FILES):
            raise FileNotFoundError(
                f"run {path} has no final parameters ({params_file.FILENAME}): it stopped "
                f"before the end; `memjax train --resume {path}` finishes it"
            )
        raise FileNotFoundError(
            f"{path} is neither a run of `memjax train --out` (no {params_file.FILENAME}) nor "
            f"a method's folder of a `memjax compress --out` result (no seed*.msgpack next to "
            f"a results.json)"
        )
    return _from_checkpoint(params_file.load(path), seed)


def _check_seed(seed, num_seeds: int, where: str) -> None:
    if not isinstance(seed, int) or not 0 <= seed < num_seeds:
        raise ValueError(f"seed {seed!r} out of range: the {where} has {num_seeds} seeds")


def _from_checkpoint(loaded, seed: int) -> Policy:
    _check_seed(seed, loaded.num_seeds, "run")
    return Policy(
        network=loaded.network(),
        params=jax.tree.map(jnp.asarray, loaded.seed_params(seed)),
        obs_spec=loaded.observation_spec(),
        num_actions=int(loaded.meta["num_actions"]),
        feedforward=loaded.spec.feedforward,
        name=f"agent {loaded.config.agent!r}",
    )


def _from_compress_result(folder: Path, seed: int) -> Policy:
    """The network of ``folder`` (one method of a compress result) and its seed's artefact."""
    from memjax.compress import pipeline

    results = json.loads((folder.parent / "results.json").read_text())
    methods = {pipeline.artefact_folder(r["method"]): r["method"] for r in results.get("rows", [])}
    if folder.name not in methods:
        raise ValueError(f"{folder}: {folder.parent / 'results.json'} has no method written there")
    method = methods[folder.name]
    blob = folder / f"seed{seed}.msgpack"
    if not isinstance(seed, int) or not blob.is_file():
        seeds = sorted(int(p.stem[4:]) for p in folder.glob("seed*.msgpack"))
        raise ValueError(f"seed {seed!r} out of range: {folder} holds seeds {seeds}")
    if "teacher" in results:  # written by memjax compress since export reads it
        config = params_file.config_from_json(json.dumps(results["teacher"]["config"]))
        teacher = params_file.Checkpoint(None, config, results["teacher"]["meta"])
    else:  # older results: the checkpoint they name
        teacher = params_file.load(results["checkpoint"])
    obs_spec = teacher.observation_spec()
    num_actions = int(teacher.meta["num_actions"])
    network = pipeline.result_network(method, teacher.network(), obs_spec, num_actions)
    try:
        params = compress.deserialize(blob.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError(
            f"{blob} is not a memjax compress artefact: {type(e).__name__}: {e}"
        ) from None
    return Policy(
        network=network,
        params=params,
        obs_spec=obs_spec,
        num_actions=num_actions,
        feedforward=True,  # memjax compress takes feedforward Q-networks only
        name=f"compress result {method!r}",
    )


def stored_weights(policy: Policy, quantize: str):
    """The policy's parameters in the form an export stores them.

    ``"none"``: every kernel float32, except a low-rank one, which keeps its two float32
    factors. ``"int8"``: every kernel a dense int8 :class:`memjax.compress.QTensor`: float
    kernels (pruned ones decoded, zeros kept) quantized per output channel, kernels that
    ``memjax compress`` quantized (int8/int4/int2, per channel or per tensor, pruned or not)
    with their own integers and scales.

    Raises:
      ValueError: an unknown ``quantize``; int8 of a network with layers other than Dense and
        Conv, or of low-rank factors or shared codebooks (compress does not quantize those).
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    params = policy.params
    if quantize == "none":
        compressed = jax.tree.leaves(params, is_leaf=compress.is_compressed)
        if not any(compress.is_compressed(leaf) for leaf in compressed):
            return params

        def as_float(kernel):
            if isinstance(kernel, compress.LowRank):
                return compress.LowRank(_float(kernel.a), _float(kernel.b), kernel.shape)
            return _float(kernel)

        return compress.map_kernels(as_float, params)
    try:
        compress.layers(params)
    except ValueError as e:
        raise ValueError(
            f"--quantize int8: {policy.name}'s layers cannot be quantized: {e}"
        ) from None

    def as_int8(path, kernel):
        if isinstance(kernel, compress.QTensor):  # its own integers and scales
            ints = kernel.ints()
            return compress.QTensor(ints, jnp.asarray(kernel.scale), 8, tuple(ints.shape))
        if isinstance(kernel, (compress.LowRank, compress.Shared)):
            raise ValueError(
                f"--quantize int8: layer {'/'.join(path)!r} of {policy.name} is stored as a "
                f"{type(kernel).__name__}, which memjax compress does not quantize (nor does "
                f"export): use --quantize none"
            )
        return compress.quantize_tensor(_float(kernel), bits=8, per_channel=True)

    return compress.map_kernels(as_int8, params, with_path=True)


def _float(kernel):
    return kernel.decode() if compress.is_compressed(kernel) else jnp.asarray(kernel, jnp.float32)


def policy_function(source, *, seed: int = 0, quantize: str = "none"):
    """The greedy policy's Q-function of one seed of a run or compress result, ``obs [B,
    *obs_shape] -> q_values float32 [B, num_actions]``, with the weights closed over (their
    integers and scales for int8), and the observation spec.

    Args:
      source: what :func:`load_policy` takes, or a :class:`Policy`.
      seed: which seed.
      quantize: ``"none"`` or ``"int8"`` (:func:`stored_weights`).

    Returns:
      ``(function, obs_spec)``: the function and a ``jax.ShapeDtypeStruct`` of ONE
      observation.

    Raises:
      FileNotFoundError: no parameter file.
      ValueError: a recurrent agent, a seed out of range, an unknown ``quantize``, or a
        network with layers that cannot be quantized.
    """
    policy = source if isinstance(source, Policy) else load_policy(source, seed=seed)
    if not policy.feedforward:
        raise ValueError(
            f"{policy.name} carries a state from step to step: see recurrent_policy_function"
        )
    weights, network, obs_spec = stored_weights(policy, quantize), policy.network, policy.obs_spec

    def q_values(obs):
        return compress.apply(network, weights, obs.astype(obs_spec.dtype))

    return q_values, obs_spec


def recurrent_policy_function(source, *, seed: int = 0, quantize: str = "none"):
    """The greedy policy's step of one seed of a run whose agent carries a state:
    ``(obs [B, *obs_shape], carry, first bool [B]) -> (q_values float32 [B, num_actions],
    carry)``, where the carry is put back to the agent's initial state in the rows where
    ``first`` (an episode starts), as the training loop does. Networks with an
    ``initial_carry(batch)`` method, called as ``network.apply(params, carry, obs) -> (carry,
    q_values)`` (DRQN's, the NTM's) or with a ``step`` method of that form (memnet's, whose
    carry is its ring of recent observations).

    Returns:
      ``(function, obs_spec, carry_spec)``: the function, a ``jax.ShapeDtypeStruct`` of ONE
      observation and the carry's structure of ShapeDtypeStructs for a batch of one.

    Raises:
      ValueError: a feedforward agent, a network of another form, a seed out of range, an
        unknown ``quantize`` or int8 of layers that cannot be quantized.
    """
    from memjax.agents import reset_where

    policy = source if isinstance(source, Policy) else load_policy(source, seed=seed)
    if policy.feedforward:
        raise ValueError(f"{policy.name} is feedforward: use policy_function")
    network, obs_spec = policy.network, policy.obs_spec
    weights = stored_weights(policy, quantize)
    method = "step" if hasattr(network, "step") else "__call__"

    def call(carry, obs):
        # int8: the integers and scales are the file's constants, dequantized in the program
        w = compress.decompress(weights) if quantize == "int8" else weights
        return network.apply(w, carry, obs, method=method)

    if not hasattr(network, "initial_carry"):
        raise ValueError(f"a {type(network).__name__} has no initial_carry: not exportable")
    one = jnp.zeros((1, *obs_spec.shape), obs_spec.dtype)
    try:
        carry_spec, _ = jax.eval_shape(call, network.initial_carry(1), one)
    except TypeError as e:
        raise ValueError(
            f"{policy.name}: its {type(network).__name__} is not called as (carry, obs) -> "
            f"(carry, q_values) and has no step method of that form; not exportable ({e})"
        ) from None

    def step(obs, carry, first):
        initial = network.initial_carry(obs.shape[0])
        carry = reset_where(first, carry, initial)
        carry, q_values = call(carry, obs.astype(obs_spec.dtype))
        return q_values, carry

    return step, obs_spec, carry_spec


def export_jax(
    source, out, *, seed: int = 0, quantize: str = "none", platforms=DEFAULT_PLATFORMS
) -> Path:
    """Write the greedy Q-network of one seed of ``source`` as serialized StableHLO.

    Args:
      source: a run directory, its parameter file, a loaded parameter file, or a method's
        folder of a ``memjax compress --out`` result (:func:`load_policy`).
      out: the file to write (its folder is created); written whole or not at all.
      seed: which seed.
      quantize: ``"none"`` or ``"int8"`` (:func:`stored_weights`).
      platforms: the platforms to lower for (``"cpu"``, ``"cuda"``, ``"rocm"``, ``"tpu"``).

    Returns:
      The file's path. ``jax.export.deserialize(path.read_bytes()).call(obs)`` runs it, with
      ``obs`` float32 ``[batch, *obs_shape]`` for any batch. An agent that carries a state
      (DRQN, the NTM, memnet) is exported as ``call(obs, carry, first) -> (q_values,
      carry)``: the carry's structure and shapes are
      ``jax.tree.unflatten(exp.in_tree, exp.in_avals)[0][1]`` of the loaded file ``exp``;
      pass zeros of them with ``first`` True at an episode's start and the file puts the
      agent's initial state there.

    Raises:
      FileNotFoundError: no run or compress result, or a run without final parameters.
      ValueError: a seed out of range, an unknown ``quantize``, int8 of layers that cannot be
        quantized, or a network that is not exportable.
    """
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
        raise ValueError(f"platforms must be some of {PLATFORMS}, got {tuple(platforms)}")
    policy = load_policy(source, seed=seed)
    (batch,) = jax.export.symbolic_shape("batch")
    obs = jax.ShapeDtypeStruct((batch, *policy.obs_spec.shape), jnp.float32)
    if policy.feedforward:
        function, _ = policy_function(policy, quantize=quantize)
        args = (obs,)
    else:
        function, _, carry_spec = recurrent_policy_function(policy, quantize=quantize)
        carry = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct((batch, *x.shape[1:]), x.dtype), carry_spec
        )
        args = (obs, carry, jax.ShapeDtypeStruct((batch,), jnp.bool_))
    exported = jax.export.export(jax.jit(function), platforms=tuple(platforms))(*args)
    return _write_atomically(Path(out), exported.serialize())


def export_onnx(source, out, *, seed: int = 0, quantize: str = "none") -> Path:
    """Write the greedy Q-network of one seed of ``source`` as an ONNX model (opset 17):
    input ``obs`` float32 ``[batch, *obs_shape]``, output ``q_values`` float32 ``[batch,
    num_actions]``, ``batch`` dynamic. memjax's MLP and conv Q-networks (the feedforward
    agents', distilled students', and every ``memjax compress`` result) and the Q-networks of
    DRQN, memnet and the NTM are written layer by layer with ONNX's own operators (MatMul,
    Add, Relu, Conv with the NHWC input transposed; a GRU or LSTM cell as MatMul, Sigmoid,
    Tanh, Mul exactly as flax computes it; memnet's attention read with Einsum, Where and
    Softmax; the NTM's addressing with ReduceSum, Softmax, Slice and Concat for the circular
    shift, Log for the sharpening). ``quantize="int8"`` stores the kernels as int8 initializers with
    their scales, dequantized in the graph (``DequantizeLinear``), so the outputs equal
    memjax's int8 model's.

    A recurrent Q-network's file takes ``obs``, its carry (:data:`ONNX_CARRY`: ``h`` for a
    GRU, ``c`` and ``h`` for an LSTM, float32 ``[batch, memory]``) and ``first`` bool
    ``[batch]``, and returns ``q_values`` and ``next_h`` (``next_c``, ``next_h``); where
    ``first`` the carry is reset to DRQN's initial carry, zeros, before the step. memnet's
    file takes ``obs``, ``ring`` float32 ``[batch, context_length, *obs_shape]`` (the last
    observations, oldest first), ``count`` int32 ``[batch]`` (how many of the newest belong
    to the episode) and ``first``, and returns ``q_values``, ``next_ring`` and
    ``next_count`` (the ring after ``obs``); its initial carry is zeros. The NTM's file takes
    ``obs``, the carry's arrays (:data:`ONNX_NTM_CARRY`, shapes as in
    :class:`memjax.agents.NTMQNetwork`) and ``first``, and returns ``q_values`` and
    ``next_<name>`` of each; where ``first`` it puts the NTM's initial state (not zeros).

    Args:
      source: what :func:`load_policy` takes.
      out: the file to write; written whole or not at all.
      seed: which seed.
      quantize: ``"none"`` or ``"int8"``.

    Returns:
      The file's path. ``onnxruntime.InferenceSession(path).run(None, {"obs": obs})[0]``
      gives the Q-values.

    Raises:
      FileNotFoundError: no run or compress result, or a run without final parameters.
      ValueError: a network other than memjax's own (a user's flax module: use the jax
        format), a seed out of range, an unknown ``quantize`` or int8 of layers that cannot
        be quantized.
      ImportError: the ``onnx`` package is not installed.
    """
    from memjax.agents import ConvQNetwork, MLPQNetwork, RecurrentQNetwork
    from memjax.agents.memnet import MemoryQNetwork
    from memjax.agents.ntm import NTMQNetwork

    policy = load_policy(source, seed=seed)
    network = policy.network
    kinds = (MLPQNetwork, ConvQNetwork, RecurrentQNetwork, MemoryQNetwork, NTMQNetwork)
    if not isinstance(network, kinds):
        raise ValueError(
            f"ONNX export writes memjax's own Q-networks (MLP, conv, DRQN, memnet, NTM), not "
            f"{policy.name}'s {type(network).__name__}: use --format jax, which exports any "
            f"flax network"
        )
    check_onnx_memory(network)
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = stored_weights(policy, quantize)
    params = jax.tree.map(np.asarray, weights)["params"]
    graph = _OnnxGraph()
    inputs = [("obs", TensorProto.FLOAT, ["batch", *policy.obs_spec.shape])]
    outputs = [("q_values", TensorProto.FLOAT, ["batch", policy.num_actions])]
    if isinstance(network, MemoryQNetwork):
        m, shape = network.context_length, list(policy.obs_spec.shape)
        inputs += [("ring", TensorProto.FLOAT, ["batch", m, *shape])]
        inputs += [("count", TensorProto.INT32, ["batch"]), ("first", TensorProto.BOOL, ["batch"])]
        outputs += [("next_ring", TensorProto.FLOAT, ["batch", m, *shape])]
        outputs += [("next_count", TensorProto.INT32, ["batch"])]
        _memnet_graph(graph, network, params, tuple(shape))
    elif isinstance(network, NTMQNetwork):
        carry = jax.eval_shape(lambda: network.initial_carry(1))
        names = [n for n in ONNX_NTM_CARRY if n != "controller" or network.controller_size]
        for n in names:
            inputs += [(n, TensorProto.FLOAT, ["batch", *carry[n].shape[1:]])]
        inputs += [("first", TensorProto.BOOL, ["batch"])]
        outputs += [(f"next_{n}", TensorProto.FLOAT, ["batch", *carry[n].shape[1:]]) for n in names]
        _ntm_graph(graph, network, params, len(policy.obs_spec.shape), names)
    elif isinstance(network, RecurrentQNetwork):
        names = ONNX_CARRY[network.cell]
        inputs += [(n, TensorProto.FLOAT, ["batch", network.memory]) for n in names]
        inputs += [("first", TensorProto.BOOL, ["batch"])]
        outputs += [(f"next_{n}", TensorProto.FLOAT, ["batch", network.memory]) for n in names]
        _recurrent_graph(graph, network, params, len(policy.obs_spec.shape))
    else:
        _feedforward_graph(graph, params, isinstance(network, ConvQNetwork))
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            "memjax_q_network",
            [helper.make_tensor_value_info(*i) for i in inputs],
            [helper.make_tensor_value_info(*o) for o in outputs],
            initializer=[numpy_helper.from_array(v, k) for k, v in graph.initializers.items()],
        ),
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="memjax",
    )
    model.ir_version = 8  # what onnxruntime releases of the last years all read
    onnx.checker.check_model(model)
    return _write_atomically(Path(out), model.SerializeToString())


def _dense_names(params) -> list:
    return sorted((k for k in params if k.startswith("Dense_")), key=lambda k: int(k[6:]))


def _feedforward_graph(graph, params, conv: bool) -> None:
    """MLPQNetwork / ConvQNetwork: [conv 3x3 + relu], flatten, dense + relu ..., dense."""
    x = "obs"
    if conv:
        x = graph.conv("Conv_0", params["Conv_0"], x)
    x = graph.node("Flatten", [x], axis=1)  # as flax's reshape
    dense = _dense_names(params)
    for i, name in enumerate(dense):
        x = graph.dense(name, params[name], x, relu=i + 1 < len(dense))
    graph.node("Identity", [x], output="q_values")


def _torso(graph, network, params, obs_rank: int) -> tuple:
    """The encoder before a carry agent's memory: the conv layer of image observations,
    then the hidden dense layers. Returns (its output's name, the dense layers after it)."""
    x = "obs"
    if obs_rank == 3 and network.channels:
        x = graph.conv("Conv_0", params["Conv_0"], x)
    x = graph.node("Flatten", [x], axis=1)
    dense = _dense_names(params)
    for name in dense[: len(network.hidden)]:
        x = graph.dense(name, params[name], x, relu=True)
    return x, dense[len(network.hidden) :]


def _recurrent_graph(graph, network, params, obs_rank: int) -> None:
    """RecurrentQNetwork: encoder, the cell on the carry reset where ``first``, head."""
    x, rest = _torso(graph, network, params, obs_rank)
    first = graph.node("Unsqueeze", ["first", graph.constant("axes_1", np.array([1]), np.int64)])
    zero = graph.constant("zero", np.float32(0))
    carry = {
        n: graph.node("Where", [first, zero, n]) for n in ONNX_CARRY[network.cell]
    }  # DRQN's initial carry: zeros
    if network.cell == "gru":
        y = _gru(graph, "GRUCell_0", params["GRUCell_0"], x, carry["h"], output="next_h")
    elif network.cell == "lstm":
        cell = params["OptimizedLSTMCell_0"]
        _, y = _lstm(graph, "LSTM", cell, x, carry["c"], carry["h"], ("next_c", "next_h"))
    else:
        y = _linear_cell(graph, network.cell, params, x, carry["h"], "next_h")
    for k, name in enumerate(rest):
        y = graph.dense(name, params[name], y, relu=k + 1 < len(rest))
    graph.node("Identity", [y], output="q_values")


def _gru(graph, prefix: str, cell, x: str, h: str, output=None) -> str:
    """flax's GRUCell: the new ``h`` from ``x`` and ``h``."""

    def gate(name, act):  # act(x W_i + b_i + h W_h)
        i = graph.dense(f"{prefix}/i{name}", cell[f"i{name}"], x)
        return graph.node(
            act, [graph.node("Add", [i, graph.dense(f"{prefix}/h{name}", cell[f"h{name}"], h)])]
        )

    r, z = gate("r", "Sigmoid"), gate("z", "Sigmoid")
    hn = graph.dense(f"{prefix}/hn", cell["hn"], h)
    xn = graph.dense(f"{prefix}/in", cell["in"], x)
    n = graph.node("Tanh", [graph.node("Add", [xn, graph.node("Mul", [r, hn])])])
    keep = graph.node("Sub", [graph.constant("one", np.float32(1)), z])
    return graph.node(
        "Add", [graph.node("Mul", [keep, n]), graph.node("Mul", [z, h])], output=output
    )


def _lstm(graph, prefix: str, cell, x: str, c: str, h: str, outputs=(None, None)):
    """flax's OptimizedLSTMCell: the new ``(c, h)`` from ``x`` and ``(c, h)``."""

    def gate(name, act):  # act(h W_h + b_h + x W_i), as flax's fused matmuls sum them
        hidden = graph.dense(f"{prefix}/h{name}", cell[f"h{name}"], h)
        i = graph.dense(f"{prefix}/i{name}", cell[f"i{name}"], x)
        return graph.node(act, [graph.node("Add", [hidden, i])])

    i, f, g, o = (gate(n, a) for n, a in zip("ifgo", ("Sigmoid", "Sigmoid", "Tanh", "Sigmoid")))
    new_c = graph.node(
        "Add", [graph.node("Mul", [f, c]), graph.node("Mul", [i, g])], output=outputs[0]
    )
    return new_c, graph.node("Mul", [o, graph.node("Tanh", [new_c])], output=outputs[1])


def _linear_cell(graph, kind: str, params, x: str, h: str, output: str) -> str:
    """One step of :mod:`memjax.agents.cells`' LRU or minGRU from the carry ``h``: writes the
    next carry to ``output`` and returns the cell's output."""
    step = {"lru": _lru, "mingru": _mingru}[kind]
    return step(graph, params, x, h, output)


def _mingru(graph, params, x: str, h: str, output: str) -> str:
    """``MinGRU_0``: ``h' = (1 - z) h + z h~`` with ``z = sigmoid(x W_z + b_z)``, ``h~ = x W_h
    + b_h``; the output is ``h'``."""
    cell = params["MinGRU_0"]
    z = graph.node("Sigmoid", [graph.dense("MinGRU_0/gate", cell["gate"], x)])
    candidate = graph.dense("MinGRU_0/candidate", cell["candidate"], x)
    keep = graph.node("Sub", [graph.constant("one", np.float32(1)), z])
    return graph.node(
        "Add", [graph.node("Mul", [keep, h]), graph.node("Mul", [z, candidate])], output=output
    )


def _lru(graph, params, x: str, h: str, output: str) -> str:
    """``LRU_0``: ``h' = lambda h + gamma (B x)``, ``u = Re(C h') + D x``, ``y = (W u + b)
    sigmoid(V u + c)`` with the complex numbers as pairs of reals (the carry: real parts,
    then imaginary parts); ``lambda`` and ``gamma = exp(gamma_log)`` are constants of the
    graph, computed from the parameters as the cell computes them."""
    cell = params["LRU_0"]
    as64 = lambda name: np.asarray(cell[name], np.float64)  # noqa: E731
    n = as64("nu_log").shape[0]
    radius, angle = np.exp(-np.exp(as64("nu_log"))), np.exp(as64("theta_log"))
    lam_re = graph.constant("LRU_0/lambda_re", radius * np.cos(angle))
    lam_im = graph.constant("LRU_0/lambda_im", radius * np.sin(angle))
    scale = graph.constant("LRU_0/scale", np.exp(as64("gamma_log")))
    index = lambda name, v: graph.constant(name, np.asarray([v], np.int64), np.int64)  # noqa: E731
    axis = index("lru_axis", 1)
    h_re = graph.node("Slice", [h, index("lru_0", 0), index("lru_n", n), axis])
    h_im = graph.node("Slice", [h, index("lru_n", n), index("lru_2n", 2 * n), axis])
    mul = lambda a, b: graph.node("Mul", [a, b])  # noqa: E731
    b_re = mul(scale, graph.dense("LRU_0/b_re", cell["b_re"], x))
    b_im = mul(scale, graph.dense("LRU_0/b_im", cell["b_im"], x))
    new_re = graph.node("Add", [graph.node("Sub", [mul(lam_re, h_re), mul(lam_im, h_im)]), b_re])
    new_im = graph.node("Add", [graph.node("Add", [mul(lam_re, h_im), mul(lam_im, h_re)]), b_im])
    graph.node("Concat", [new_re, new_im], output=output, axis=1)
    c_re = graph.dense("LRU_0/c_re", cell["c_re"], new_re)
    out = graph.node("Sub", [c_re, graph.dense("LRU_0/c_im", cell["c_im"], new_im)])
    out = graph.node("Add", [out, graph.dense("LRU_0/skip", cell["skip"], x)])
    gate = graph.node("Sigmoid", [graph.dense("LRU_0/glu_gate", cell["glu_gate"], out)])
    return graph.node("Mul", [graph.dense("LRU_0/glu_value", cell["glu_value"], out), gate])


def check_onnx_memory(network) -> None:
    """``ValueError`` for a memory the ONNX graph does not write: a DRQN cell or NTM
    controller not in :data:`ONNX_CELLS` (FFM: its layer norm and complex traces have no ONNX
    step here), or more than one cell layer."""
    cell = getattr(network, "cell", None) or getattr(network, "controller", None)
    layers = getattr(network, "layers", 1)
    if cell is None:  # no recurrent memory (MLP, conv, memnet)
        return
    if cell not in (*ONNX_CELLS, "feedforward") or layers != 1:
        what = f"{layers} cell layers" if layers != 1 else f"the {cell!r} cell"
        raise ValueError(
            f"ONNX export writes memories of one layer of {', '.join(ONNX_CELLS)} (and the "
            f"NTM's feed-forward controller), not {what}: use --format jax, which exports "
            f"any memjax network"
        )


def _ntm_graph(graph, network, params, obs_rank: int, carry_names) -> None:
    """NTMQNetwork: the carry reset to its initial state where ``first``; encoder on [obs,
    last reads]; controller; heads; the memory's write then reads (``memjax.agents.ntm``'s
    addressing: content, interpolation, circular shift, sharpening); Q-head on [h, reads]."""
    from memjax.agents import ntm

    n_rows, width, r = network.memory_rows, network.memory_width, network.read_heads
    s = 2 * network.shift_range + 1
    initial = {k: np.asarray(v) for k, v in network.initial_carry(1).items()}
    carry = {}
    for name in carry_names:
        rank = initial[name].ndim
        first = graph.node(
            "Reshape", ["first", graph.constant(f"b{rank}", [-1] + [1] * (rank - 1), np.int64)]
        )
        carry[name] = graph.node(
            "Where", [first, graph.constant(f"initial_{name}", initial[name]), name]
        )
    const = lambda name, v: graph.constant(name, np.asarray(v, np.int64), np.int64)  # noqa: E731

    def cut(x, axis, start, end):  # x[..., start:end, ...] on a static axis
        return graph.node(
            "Slice",
            [x, const(f"s{start}", [start]), const(f"e{end}", [end]), const(f"a{axis}", [axis])],
        )

    def reduce_sum(x, axis, keep=0):
        return graph.node("ReduceSum", [x, const(f"a{axis}", [axis])], keepdims=keep)

    x, rest = _torso(graph, network, params, obs_rank)
    reads = graph.node("Flatten", [carry["reads"]], axis=1)
    x = graph.node("Concat", [x, reads], axis=1)
    m = network.memory
    if network.controller == "lstm":
        c, h = cut(carry["controller"], 1, 0, m), cut(carry["controller"], 1, m, 2 * m)
        c, y = _lstm(graph, "LSTM", params["OptimizedLSTMCell_0"], x, c, h)
        graph.node("Concat", [c, y], output="next_controller", axis=1)
    elif network.controller == "gru":
        y = _gru(graph, "GRUCell_0", params["GRUCell_0"], x, carry["controller"])
        graph.node("Identity", [y], output="next_controller")
    elif network.controller in ONNX_CELLS:
        y = _linear_cell(
            graph, network.controller, params, x, carry["controller"], "next_controller"
        )
    else:
        y, rest = graph.dense(rest[0], params[rest[0]], x, relu=True), rest[1:]
    emitted = graph.dense("heads", params["heads"], y)
    per_head = width + s + 3
    heads = graph.node(
        "Reshape",
        [cut(emitted, 1, 0, (r + 1) * per_head), const("heads_shape", [-1, r + 1, per_head])],
    )
    tail = cut(emitted, 1, (r + 1) * per_head, (r + 1) * per_head + 2 * width)
    one = graph.constant("one", np.float32(1))
    key = cut(heads, 2, 0, width)
    beta = graph.node("Softplus", [cut(heads, 2, width, width + 1)])
    gate = graph.node("Sigmoid", [cut(heads, 2, width + 1, width + 2)])
    shifts = graph.node("Softmax", [cut(heads, 2, width + 2, width + 2 + s)], axis=-1)
    gamma = graph.node(
        "Add", [one, graph.node("Softplus", [cut(heads, 2, width + 2 + s, width + 3 + s)])]
    )
    erase = graph.node("Sigmoid", [cut(tail, 1, 0, width)])
    add = graph.node("Tanh", [cut(tail, 1, width, 2 * width)])
    eps = graph.constant("eps", np.float32(ntm.EPS))

    def address(memory, previous, head_from, head_to):
        """Weightings [B, H, N] of heads head_from..head_to on memory [B, 1, N, W]."""
        k = cut(key, 1, head_from, head_to)  # [B, H, W]
        k4 = graph.node("Unsqueeze", [k, const("ax2", [2])])
        dot = reduce_sum(graph.node("Mul", [memory, k4]), -1)  # [B, H, N]
        rows = graph.node(
            "Sqrt", [graph.node("Add", [reduce_sum(graph.node("Mul", [memory, memory]), -1), eps])]
        )
        norm = graph.node(
            "Sqrt", [graph.node("Add", [reduce_sum(graph.node("Mul", [k, k]), -1, keep=1), eps])]
        )
        b = cut(beta, 1, head_from, head_to)
        similarity = graph.node(
            "Div", [graph.node("Mul", [b, dot]), graph.node("Mul", [rows, norm])]
        )
        content = graph.node("Softmax", [similarity], axis=-1)
        g = cut(gate, 1, head_from, head_to)
        w = graph.node(
            "Add",
            [
                graph.node("Mul", [g, content]),
                graph.node("Mul", [graph.node("Sub", [one, g]), previous]),
            ],
        )
        shift = cut(shifts, 1, head_from, head_to)  # [B, H, S]
        total = None
        for j in range(-(s // 2), s // 2 + 1):  # roll(w, j)[i] = w[(i - j) mod N]
            k_ = j % n_rows
            rolled = (
                w
                if k_ == 0
                else graph.node(
                    "Concat", [cut(w, 2, n_rows - k_, n_rows), cut(w, 2, 0, n_rows - k_)], axis=2
                )
            )
            term = graph.node("Mul", [cut(shift, 2, j + s // 2, j + s // 2 + 1), rolled])
            total = term if total is None else graph.node("Add", [total, term])
        gm = cut(gamma, 1, head_from, head_to)
        return graph.node(
            "Softmax",
            [graph.node("Mul", [gm, graph.node("Log", [graph.node("Add", [total, eps])])])],
            axis=-1,
        )

    memory = graph.node("Unsqueeze", [carry["memory"], const("ax1", [1])])  # [B, 1, N, W]
    w_write = address(memory, cut(carry["weights"], 1, 0, 1), 0, 1)  # [B, 1, N]
    w = graph.node("Unsqueeze", [w_write, const("ax3", [3])])  # [B, 1, N, 1]
    e = graph.node(
        "Unsqueeze", [graph.node("Unsqueeze", [erase, const("ax1", [1])]), const("ax1", [1])]
    )
    a = graph.node(
        "Unsqueeze", [graph.node("Unsqueeze", [add, const("ax1", [1])]), const("ax1", [1])]
    )
    kept = graph.node("Mul", [memory, graph.node("Sub", [one, graph.node("Mul", [w, e])])])
    written = graph.node("Add", [kept, graph.node("Mul", [w, a])])  # [B, 1, N, W]
    graph.node("Squeeze", [written, const("ax1", [1])], output="next_memory")
    w_read = address(written, cut(carry["weights"], 1, 1, r + 1), 1, r + 1)  # [B, R, N]
    graph.node("Concat", [w_write, w_read], output="next_weights", axis=1)
    wr = graph.node("Unsqueeze", [w_read, const("ax3", [3])])
    new_reads = reduce_sum(graph.node("Mul", [wr, written]), 2, keep=0)  # [B, R, W]
    graph.node("Identity", [new_reads], output="next_reads")
    z = graph.node("Concat", [y, graph.node("Flatten", [new_reads], axis=1)], axis=1)
    for name in rest:
        z = graph.dense(name, params[name], z, relu=True)
    graph.node("Identity", [graph.dense("q", params["q"], z)], output="q_values")


def _memnet_graph(graph, network, params, obs_shape: tuple) -> None:
    """MemoryQNetwork.step: reset the ring where ``first``, read it with attention from the
    current observation (the flax module's ``read``), push the observation into it."""
    m, d, heads = network.context_length, network.memory, network.heads
    rank = len(obs_shape)
    first = graph.node(
        "Reshape", ["first", graph.constant("b_ones", [-1] + [1] * (rank + 1), np.int64)]
    )
    ring = graph.node("Where", [first, graph.constant("zero", np.float32(0)), "ring"])
    count = graph.node("Where", ["first", graph.constant("zero_i", np.int32(0), np.int32), "count"])
    # valid [B, M]: the newest `count` slots
    start = graph.node("Sub", [graph.constant("m", np.int32(m), np.int32), count])
    start = graph.node("Unsqueeze", [start, graph.constant("axes_1", np.array([1]), np.int64)])
    slots = graph.constant("slots", np.arange(m)[None], np.int32)
    valid = graph.node("GreaterOrEqual", [slots, start])
    # one encoder pass over [obs; the ring's M observations of every row]
    flat = graph.node("Reshape", [ring, graph.constant("flat_shape", [-1, *obs_shape], np.int64)])
    x = graph.node("Concat", ["obs", flat], axis=0)
    if rank == 3 and network.channels:
        x = graph.conv("conv", params["conv"], x)
    x = graph.node("Flatten", [x], axis=1)
    for i in range(len(network.hidden)):
        x = graph.dense(f"encoder_{i}", params[f"encoder_{i}"], x, relu=True)
    batch = graph.node("Shape", ["obs"], start=0, end=1)
    big = graph.constant("big", [2**62], np.int64)
    zero_axis = graph.constant("axis_0", [0], np.int64)
    query_e = graph.node("Slice", [x, graph.constant("start_0", [0], np.int64), batch, zero_axis])
    context_e = graph.node("Slice", [x, batch, big, zero_axis])
    split_ctx = graph.constant("ctx_shape", [-1, m, d], np.int64)
    keys = graph.node("Reshape", [graph.dense("key", params["key"], context_e), split_ctx])
    values = graph.node("Reshape", [graph.dense("value", params["value"], context_e), split_ctx])
    query = graph.dense("query", params["query"], query_e)  # [B, d]
    per_head = graph.constant("heads_q", [-1, heads, d // heads], np.int64)
    per_head_ctx = graph.constant("heads_ctx", [-1, m, heads, d // heads], np.int64)
    heads_query = graph.node("Reshape", [query, per_head])
    aged = graph.node("Add", [keys, graph.constant("age", params["age"])])
    heads_keys = graph.node("Reshape", [aged, per_head_ctx])
    scale = graph.constant("scale", np.float32((heads / d) ** 0.5))
    logits = graph.node("Einsum", [heads_query, heads_keys], equation="ngd,nmgd->ngm")
    logits = graph.node("Mul", [logits, scale])
    valid = graph.node("Unsqueeze", [valid, graph.constant("axes_1b", np.array([1]), np.int64)])
    logits = graph.node("Where", [valid, logits, graph.constant("minus_inf", np.float32(-np.inf))])
    null_key = graph.constant("null_key", np.reshape(params["null_key"], (heads, d // heads)))
    null = graph.node("Einsum", [heads_query, null_key], equation="ngd,gd->ng")
    null = graph.node(
        "Unsqueeze",
        [graph.node("Mul", [null, scale]), graph.constant("axes_2", np.array([2]), np.int64)],
    )
    weights = graph.node("Softmax", [graph.node("Concat", [logits, null], axis=2)], axis=2)
    axis_2 = graph.constant("axis_2", [2], np.int64)
    on_slots = graph.node(
        "Slice",
        [weights, graph.constant("s0", [0], np.int64), graph.constant("sm", [m], np.int64), axis_2],
    )
    on_null = graph.node(
        "Slice",
        [
            weights,
            graph.constant("sm2", [m], np.int64),
            graph.constant("sm1", [m + 1], np.int64),
            axis_2,
        ],
    )
    heads_values = graph.node("Reshape", [values, per_head_ctx])
    read = graph.node("Einsum", [on_slots, heads_values], equation="ngm,nmgd->ngd")
    null_value = graph.constant("null_value", np.reshape(params["null_value"], (heads, d // heads)))
    read = graph.node("Add", [read, graph.node("Mul", [on_null, null_value])])
    read = graph.node("Reshape", [read, graph.constant("flat_read", [-1, d], np.int64)])
    hidden = graph.node(
        "Relu", [graph.node("Add", [graph.dense("combine", params["combine"], query), read])]
    )
    graph.node("Identity", [graph.dense("head", params["head"], hidden)], output="q_values")
    # the ring after obs: the oldest slot dropped, obs the newest; count up by one (at most M)
    axis_1 = graph.constant("axis_1", [1], np.int64)
    older = graph.node("Slice", [ring, graph.constant("s1", [1], np.int64), big, axis_1])
    newest = graph.node("Unsqueeze", ["obs", graph.constant("axes_1c", np.array([1]), np.int64)])
    graph.node("Concat", [older, newest], output="next_ring", axis=1)
    one = graph.constant("one_i", np.int32(1), np.int32)
    graph.node("Min", [graph.node("Add", [count, one]), "m"], output="next_count")


class _OnnxGraph:
    """Nodes and initializers of an ONNX graph being written, with fresh names."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], {}, 0

    def node(self, op: str, inputs, output=None, **attributes) -> str:
        from onnx import helper

        self.count += 1
        output = output or f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, list(inputs), [output], **attributes))
        return output

    def constant(self, name: str, value, dtype=np.float32) -> str:
        self.initializers[name] = np.asarray(value, dtype)
        return name

    def weight(self, name: str, kernel, perm=None) -> str:
        """A kernel (output channels last) with its axes in ``perm`` order: float32, or a
        :class:`memjax.compress.QTensor`'s int8 integers and scales (one per output channel,
        or one) dequantized in the graph."""
        perm = perm or tuple(range(np.ndim(kernel.values if hasattr(kernel, "values") else kernel)))
        if not isinstance(kernel, compress.QTensor):
            return self.constant(f"{name}/kernel", np.transpose(kernel, perm))
        ints = np.transpose(np.asarray(kernel.values, np.int8), perm)
        scale = np.asarray(kernel.scale, np.float32)
        self.initializers[f"{name}/int8"] = ints
        self.initializers[f"{name}/scale"] = scale
        axis = {"axis": perm.index(len(perm) - 1)} if scale.ndim else {}
        # no zero point: symmetric, and ONNX's default zero point is 0
        return self.node(
            "DequantizeLinear", [f"{name}/int8", f"{name}/scale"], f"{name}/kernel", **axis
        )

    def dense(self, name: str, layer, x: str, relu: bool = False) -> str:
        """``x @ kernel (+ bias)`` (a low-rank kernel: ``(x @ a) @ b``), then ReLU if asked."""
        kernel = layer["kernel"]
        if isinstance(kernel, compress.LowRank):
            x = self.node("MatMul", [x, self.weight(f"{name}/a", kernel.a)])
            x = self.node("MatMul", [x, self.weight(f"{name}/b", kernel.b)])
        else:
            x = self.node("MatMul", [x, self.weight(name, kernel)])
        if "bias" in layer:
            x = self.node("Add", [x, self.constant(f"{name}/bias", layer["bias"])])
        return self.node("Relu", [x]) if relu else x

    def conv(self, name: str, layer, x: str) -> str:
        """flax's VALID stride-1 conv + bias + ReLU on NHWC ``x``, as ONNX's NCHW Conv (a
        low-rank kernel: an r-filter conv, then a 1x1 conv); NHWC out."""
        kernel = layer["kernel"]
        hwio_to_oihw = (3, 2, 0, 1)
        x = self.node("Transpose", [x], perm=[0, 3, 1, 2])  # NHWC -> NCHW
        if isinstance(kernel, compress.LowRank):
            b = np.asarray(kernel.b)[None, None]  # [1, 1, r, out]: a 1x1 conv
            x = self.node("Conv", [x, self.weight(f"{name}/a", kernel.a, hwio_to_oihw)])
            kernel, name = b, f"{name}/b"
        weight = self.weight(name, kernel, hwio_to_oihw)
        bias = [self.constant(f"{name}/bias", layer["bias"])] if "bias" in layer else []
        x = self.node("Conv", [x, weight, *bias])
        x = self.node("Relu", [x])
        return self.node("Transpose", [x], perm=[0, 2, 3, 1])  # back to NHWC


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
    "ONNX_OPSET",
    "ONNX_CARRY",
    "ONNX_NTM_CARRY",
    "PLATFORMS",
    "Policy",
    "load_policy",
    "stored_weights",
    "export_jax",
    "export_onnx",
    "load_jax",
    "policy_function",
    "recurrent_policy_function",
]
