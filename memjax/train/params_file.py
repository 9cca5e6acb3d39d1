"""Parameter files of trained Q-networks: the parameters of every seed plus the ``TrainConfig``.

One file, ``checkpoint.msgpack`` (flax.serialization's msgpack), holding::

    {"format": "memjax-checkpoint", "version": 2,
     "config": "<TrainConfig as JSON>",
     "meta": "<JSON: env, num_seeds, num_actions, agent, obs_shape, obs_dtype>",
     "params": <flax params pytree of numpy arrays, leading seed axis [S, ...]>}

``memjax train --out DIR`` writes ``DIR/checkpoint.msgpack``; :func:`load` reads it back and
:func:`Checkpoint.network` rebuilds the flax module, so evaluation needs nothing else::

    ck = memjax.train.params_file.load("runs/cartpole")
    q = ck.network().apply(ck.seed_params(0), obs)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from memjax import agents, envs
from memjax.train.build import make_env_for, observation_spec
from memjax.train.config import TrainConfig

FORMAT = "memjax-checkpoint"
VERSION = 2
"""2: the config's agent knobs nested under ``agent`` and the observation spec in the meta;
version 1 files (flat configs) still load."""
READABLE_VERSIONS = (1, 2)
FILENAME = "checkpoint.msgpack"


def _path(path) -> Path:
    p = Path(path)
    return p / FILENAME if p.is_dir() or p.suffix != ".msgpack" else p


def config_to_json(config: TrainConfig) -> str:
    """``config`` as JSON text (:meth:`TrainConfig.to_dict`)."""
    return json.dumps(config.to_dict(), sort_keys=True)


def config_from_json(text: str) -> TrainConfig:
    """A ``TrainConfig`` from :func:`config_to_json`'s text, or from a version 1 file's flat
    config. Fields missing from the text get their defaults; unknown fields raise
    ``ValueError`` naming them."""
    return TrainConfig.from_dict(json.loads(text), where="checkpoint config")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Loaded checkpoint: ``params`` (numpy pytree, leading seed axis ``[S, ...]``),
    ``config`` (``TrainConfig``), ``meta`` (dict: ``env``, ``num_seeds``,
    ``num_actions``, ``agent``, ``obs_shape``, ``obs_dtype``, plus whatever the writer
    added) and ``path`` (the file it was read from)."""

    params: Any
    config: Any
    meta: dict
    path: Path | None = None

    @property
    def num_seeds(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[0])

    @property
    def spec(self) -> agents.AgentSpec:
        """The agent's registered spec (``ValueError`` when it is not registered here)."""
        return agents.get(self.config.agent)

    def seed_params(self, i: int):
        """The parameters of seed ``i`` (no seed axis)."""
        if not 0 <= i < self.num_seeds:
            raise IndexError(f"seed {i} out of range: the checkpoint has {self.num_seeds} seeds")
        return jax.tree.map(lambda x: x[i], self.params)

    def observation_spec(self) -> jax.ShapeDtypeStruct:
        """Shape and dtype of one observation, from the meta (version 1 files: from the
        environment the config names)."""
        if "obs_shape" in self.meta and "obs_dtype" in self.meta:
            return jax.ShapeDtypeStruct(
                tuple(self.meta["obs_shape"]), np.dtype(self.meta["obs_dtype"])
            )
        return observation_spec(*make_env_for(self.config))

    def network(self):
        """The flax Q-network the parameters belong to, built by the agent's spec."""
        return self.spec.make_network(
            self.config.agent_config, self.observation_spec(), int(self.meta["num_actions"])
        )


def save(
    path,
    config: TrainConfig,
    params,
    *,
    stacked: bool = True,
    obs=None,
    num_actions: int | None = None,
    meta: dict | None = None,
) -> Path:
    """Write ``params`` and ``config`` to ``path``.

    Args:
      path: a directory (created if needed) that gets ``checkpoint.msgpack``, or a path ending
        in ``.msgpack``, used as is.
      config: the run's :class:`TrainConfig` (its agent's spec rebuilds the network).
      params: the Q-network parameters, with a leading seed axis when ``stacked``.
      stacked: params already carry a leading seed axis (as after ``vmap``); otherwise one is
        added.
      obs: a ``jax.ShapeDtypeStruct`` of one observation, and ``num_actions``: the action
        count; both default to those of ``memjax.envs.make(config.env)`` (pass them when
        training on a custom environment).
      num_actions: see ``obs``.
      meta: more entries for the meta (JSON-friendly).

    Returns:
      The file's path.
    """
    config.validate()
    params = jax.tree.map(np.asarray, jax.device_get(params))
    if not stacked:
        params = jax.tree.map(lambda x: x[None], params)
    if obs is None or num_actions is None:
        env, env_params = make_env_for(config)
        obs = observation_spec(env, env_params) if obs is None else obs
        num_actions = envs.num_actions(env, env_params) if num_actions is None else num_actions
    m = {
        "env": config.env,
        "num_seeds": int(jax.tree.leaves(params)[0].shape[0]),
        "num_actions": int(num_actions),
        "agent": config.agent,
        "obs_shape": list(obs.shape),
        "obs_dtype": str(np.dtype(obs.dtype)),
    }
    m.update(meta or {})
    blob = serialization.msgpack_serialize(
        {
            "format": FORMAT,
            "version": VERSION,
            "config": config_to_json(config),
            "meta": json.dumps(m, sort_keys=True),
            "params": serialization.to_state_dict(params),
        }
    )
    p = _path(path)
    os.makedirs(p.parent, exist_ok=True)
    tmp = p.with_suffix(".msgpack.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, p)
    return p


def load(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save` (a directory or the ``.msgpack`` file).
    Raises ``FileNotFoundError`` / ``ValueError`` with the reason on a missing or foreign
    file."""
    p = _path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {p} (train with `memjax train --out DIR` to write DIR/{FILENAME})"
        )
    try:
        d = serialization.msgpack_restore(p.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError(f"{p} is not a memjax checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{p} is not a memjax checkpoint (no format tag {FORMAT!r})")
    if d.get("version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{p} has checkpoint version {d.get('version')!r}; this memjax reads "
            f"versions {READABLE_VERSIONS}"
        )
    return Checkpoint(
        params=d["params"], config=config_from_json(d["config"]), meta=json.loads(d["meta"]), path=p
    )


__all__ = ["Checkpoint", "save", "load", "config_to_json", "config_from_json", "FILENAME"]
