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

Feedforward agents only here (their spec's ``feedforward``): the recurrent agents' exports,
which take and return their carry, and ONNX files are still to come.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from memjax import compress
from memjax.train import params_file

FORMATS = ("jax",)
"""The export formats: ``jax`` (serialized StableHLO, ``jax.export``)."""
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
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, got {quantize!r}")
    if not loaded.spec.feedforward:
        raise ValueError(
            f"agent {loaded.config.agent!r} carries a state from step to step; memjax export "
            f"writes feedforward Q-networks for now"
        )
    if not isinstance(seed, int) or not 0 <= seed < loaded.num_seeds:
        raise ValueError(f"seed {seed!r} out of range: the run has {loaded.num_seeds} seeds")
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
      ``obs`` float32 ``[batch, *obs_shape]`` for any batch.

    Raises:
      FileNotFoundError: no parameter file.
      ValueError: a recurrent agent, a seed out of range, an unknown ``quantize``, or a
        network with layers that cannot be quantized.
    """
    q_values, obs_spec = policy_function(run, seed=seed, quantize=quantize)
    (batch,) = jax.export.symbolic_shape("batch")
    arg = jax.ShapeDtypeStruct((batch, *obs_spec.shape), jnp.float32)
    exported = jax.export.export(jax.jit(q_values), platforms=tuple(platforms))(arg)
    return _write_atomically(Path(out), exported.serialize())


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


def greedy_actions(policy, obs) -> np.ndarray:
    """int32 ``[B]``: the greedy actions of a loaded policy for ``obs [B, *obs_shape]``."""
    return np.asarray(jnp.argmax(policy.call(jnp.asarray(obs, jnp.float32)), axis=-1), np.int32)


__all__ = ["FORMATS", "QUANTIZE", "export_jax", "load_jax", "policy_function", "greedy_actions"]
