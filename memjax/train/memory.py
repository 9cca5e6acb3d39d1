"""Memory accounting of a run, from ``jax.eval_shape`` (nothing is allocated): bytes per stored
transition, the agent's carry per environment, the largest replay capacity within a budget, and
the storage summary of ``summary.json``. The host driver and the ``--plan`` use it."""

from __future__ import annotations

import jax
import numpy as np

from memjax import codecs as mc
from memjax import replay
from memjax.train.config import TrainConfig
from memjax.train.loop import Trainer, make_train
from memjax.train.storage import make_codecs, make_layout


def buffer_bytes_per_transition(trainer: Trainer) -> float:
    """Bytes of one seed's whole replay state (items, sum-tree, counters) divided by its
    capacity, from ``jax.eval_shape`` (nothing is allocated)."""
    state = jax.eval_shape(trainer.init, jax.random.key(0))
    return trainer.buffer.memory(state.buffer).bytes_per_item


def carry_bytes_per_env(trainer: Trainer) -> int:
    """Bytes of the agent's carry per environment (0 for feedforward agents), from
    ``jax.eval_shape`` of ``initial_carry(1)``."""
    carry = jax.eval_shape(lambda: trainer.agent.initial_carry(1))
    return sum(
        int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(carry)
    )


def capacity_for_budget(config: TrainConfig, budget_bytes: int, env=None, env_params=None) -> int:
    """The largest replay capacity whose buffer state (one seed, with ``config``'s replay
    kind, codecs and layout, on its environment) fits in ``budget_bytes``, measured with
    ``jax.eval_shape`` (no allocation); see :func:`memjax.replay.capacity_for`. Raises
    ``ValueError`` if not even ``batch_size`` transitions fit."""
    # only the trainer's example item (with the agent's extras) is used: a stand-in buffer
    # keeps make_train from building the run's own and calibrating its codecs a second time
    trainer = make_train(
        config, env=env, env_params=env_params, buffer=replay.uniform(config.buffer_capacity)
    )
    config = trainer.config  # the storage chosen for the environment
    kwargs = {"alpha": config.alpha} if config.replay == "prioritized" else {}
    return replay.capacity_for(
        budget_bytes,
        trainer.example,
        codecs=make_codecs(config, trainer.env, trainer.env_params),
        layout=make_layout(config),
        kind=config.replay,
        minimum=max(config.batch_size, config.num_envs),
        **kwargs,
    )


def storage_summary(config: TrainConfig, buffer_state, choices=None) -> dict:
    """Codecs, layout and their end-of-run counters: values clipped / invalid per field
    (summed over seeds), and per-seed buffer sizes (the row layouts may hold fewer than the
    capacity when their side store overflowed) and frame-stack errors; with ``choices``
    (:attr:`memjax.train.Trainer.storage`) also ``chosen``: setting -> ``{"value", "why",
    "auto"}``. ``run`` adds ``size_after_each_chunk`` ([chunks][seeds])."""
    out = {
        "storage": config.storage,
        "side_fraction": config.side_fraction,
        "obs_codec": config.obs_codec,
        "reward_codec": config.reward_codec,
        "compact_fields": config.compact_fields,
        "layout": config.storage_layout,
        "frame_stack": config.frame_stack,
        "n_step": config.n_step,
        "codec_counters": {name: mc.counters(st) for name, st in buffer_state.codecs.items()},
        "final_size_per_seed": np.asarray(buffer_state.count).tolist(),
    }
    if getattr(buffer_state, "layout_errors", None) is not None:
        out["layout_errors"] = int(np.sum(buffer_state.layout_errors))
    if choices:
        out["chosen"] = {name: c._asdict() for name, c in choices.items()}
    return out


__all__ = [
    "buffer_bytes_per_transition",
    "carry_bytes_per_env",
    "capacity_for_budget",
    "storage_summary",
]
