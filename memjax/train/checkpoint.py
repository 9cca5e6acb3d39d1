"""Checkpoints of trained Q-networks: the parameters of every seed plus the ``TrainConfig``.

One file, ``checkpoint.msgpack`` (flax.serialization's msgpack), holding::

    {"format": "memjax-checkpoint", "version": 1,
     "config": "<TrainConfig as JSON>", "meta": "<JSON: env, seeds, num_actions, ...>",
     "params": <flax params pytree of numpy arrays, leading seed axis [S, ...]>}

``memjax train --out DIR`` writes ``DIR/checkpoint.msgpack``; :func:`load` reads it back and
:func:`Checkpoint.network` rebuilds the flax module, so evaluation needs nothing else::

    ck = memjax.train.checkpoint.load("runs/cartpole")
    q = ck.network().apply(ck.seed_params(0), obs)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

import jax
import numpy as np
from flax import serialization

from memjax import envs
from memjax.agents import (
    ConvQNetwork,
    MemoryQNetwork,
    MLPQNetwork,
    RecurrentQNetwork,
    make_network,
    network_kind,
)
from memjax.train.build import make_env_for, make_network_for
from memjax.train.config import TrainConfig
from memjax.train.results import config_to_dict

FORMAT = "memjax-checkpoint"
VERSION = 1
FILENAME = "checkpoint.msgpack"


def _path(path) -> Path:
    p = Path(path)
    return p / FILENAME if p.is_dir() or p.suffix != ".msgpack" else p


def config_to_json(config) -> str:
    """``config`` as JSON text (see :func:`memjax.train.results.config_to_dict`)."""
    return json.dumps(config_to_dict(config), sort_keys=True)


def config_from_json(text: str) -> TrainConfig:
    """A ``TrainConfig`` from :func:`config_to_json`'s text. Fields missing from the text get
    their defaults; unknown fields raise ``ValueError`` naming them."""
    d = json.loads(text)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"checkpoint config has fields this memjax does not know: {unknown}")
    if "hidden" in d:
        d["hidden"] = tuple(d["hidden"])
    return TrainConfig(**d)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Loaded checkpoint: ``params`` (numpy pytree, leading seed axis ``[S, ...]``),
    ``config`` (``TrainConfig``) and ``meta`` (dict: ``env``, ``num_seeds``,
    ``num_actions``, ``network``, plus whatever the writer added)."""

    params: Any
    config: Any
    meta: dict

    @property
    def num_seeds(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[0])

    def seed_params(self, i: int):
        """The parameters of seed ``i`` (no seed axis)."""
        if not 0 <= i < self.num_seeds:
            raise IndexError(f"seed {i} out of range: the checkpoint has {self.num_seeds} seeds")
        return jax.tree.map(lambda x: x[i], self.params)

    def network(self):
        """The flax Q-network the parameters belong to."""
        num_actions = int(self.meta["num_actions"])
        if self.meta["network"] == "recurrent":
            return RecurrentQNetwork(num_actions, hidden=tuple(self.config.hidden),
                                     memory=self.config.memory, cell=self.config.cell,
                                     channels=int(self.meta.get("channels", 0)))
        if self.meta["network"] == "memnet":
            return MemoryQNetwork(num_actions, obs_shape=tuple(self.meta["obs_shape"]),
                                  obs_dtype=np.dtype(self.meta["obs_dtype"]),
                                  context_length=self.config.context_length,
                                  hidden=tuple(self.config.hidden), memory=self.config.memory,
                                  heads=int(self.meta.get("heads", 1)),  # before heads: one
                                  channels=int(self.meta.get("channels", 0)))
        return make_network(self.meta["network"], num_actions, self.config.hidden)


def _network_kind(network) -> str:
    if isinstance(network, RecurrentQNetwork):
        return "recurrent"
    if isinstance(network, MemoryQNetwork):
        return "memnet"
    if isinstance(network, ConvQNetwork):
        return "conv"
    if isinstance(network, MLPQNetwork):
        return "mlp"
    raise ValueError(f"checkpoint.save: unsupported network {type(network).__name__}; "
                     "memjax checkpoints hold MLPQNetwork, ConvQNetwork or RecurrentQNetwork "
                     "parameters")


def save(path, config, params, *, stacked: bool = True, network=None,
         meta: Optional[dict] = None) -> Path:
    """Write ``params`` and ``config`` to ``path`` (a directory, created if needed, gets
    ``checkpoint.msgpack``; a path ending in ``.msgpack`` is used as is). ``stacked``: params
    already carry a leading seed axis (as after ``vmap``); otherwise one is added.
    ``network``: the flax module (default: built from ``config`` and ``gymnax.make``; pass it
    when training on a custom environment). Returns the file's path."""
    config.validate()
    params = jax.tree.map(np.asarray, jax.device_get(params))
    if not stacked:
        params = jax.tree.map(lambda x: x[None], params)
    channels = 0
    if network is None and config.agent == "memnet":  # its module needs the observation spec
        network = make_network_for(config, *make_env_for(config))
    if network is None:
        env, env_params = envs.make(config.env)
        kind = network_kind(config.network, envs.observation_shape(env, env_params))
        num_actions = envs.num_actions(env, env_params)
        if config.recurrent:
            kind, channels = "recurrent", 16 if kind == "conv" else 0
    else:
        kind, num_actions = _network_kind(network), int(network.num_actions)
        channels = int(getattr(network, "channels", 0)) if kind in ("recurrent", "memnet") else 0
    m = {"env": config.env, "num_seeds": int(jax.tree.leaves(params)[0].shape[0]),
         "num_actions": num_actions, "network": kind}
    if kind in ("recurrent", "memnet"):
        m["channels"] = channels
    if kind == "memnet":
        m.update(obs_shape=list(network.obs_shape), obs_dtype=str(np.dtype(network.obs_dtype)),
                 heads=int(network.heads))
    m.update(meta or {})
    blob = serialization.msgpack_serialize({
        "format": FORMAT, "version": VERSION, "config": config_to_json(config),
        "meta": json.dumps(m, sort_keys=True), "params": serialization.to_state_dict(params)})
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
        raise FileNotFoundError(f"no checkpoint at {p} (train with `memjax train --out DIR` "
                                f"to write DIR/{FILENAME})")
    try:
        d = serialization.msgpack_restore(p.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError(f"{p} is not a memjax checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{p} is not a memjax checkpoint (no format tag {FORMAT!r})")
    if d.get("version") != VERSION:
        raise ValueError(f"{p} has checkpoint version {d.get('version')!r}; this memjax reads "
                         f"version {VERSION}")
    return Checkpoint(params=d["params"], config=config_from_json(d["config"]),
                      meta=json.loads(d["meta"]))


__all__ = ["Checkpoint", "save", "load", "config_to_json", "config_from_json", "FILENAME"]
