"""Bytes per stored transition of ``memjax train``'s default storage (lossless) against
``--storage plain`` (float32 transitions whole, the default before) and flashbax 0.1.3, and
the 64 seeds x 1M Breakout-MinAtar plan; all from ``jax.eval_shape`` (nothing allocated).

    python experiments/storage_defaults.py     # writes experiments/results/storage_defaults.json

flashbax's figure is its flat buffer holding the same run's steps as flashbax users store
them: one timestep per step (``obs``, ``action`` int32, ``reward`` float32, ``done`` bool,
and a recurrent agent's carry at every step, as Stoix stores it), transitions paired
``(t, t + 1)`` at sample time, sum-tree excluded (uniform replay).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp

import memjax as mj
from memjax.train.plan import nbytes, plan

RUNS = {
    "CartPole-v1": {},
    "Breakout-MinAtar": {},
    "MemoryChain-20 (drqn)": dict(env="MemoryChain-20", agent="drqn"),
}
OUT = Path(__file__).parent / "results" / "storage_defaults.json"


def bytes_per_transition(config) -> tuple:
    trainer = mj.train.make_train(config)
    state = jax.eval_shape(trainer.init, jax.random.key(0))
    choices = {name: c.value for name, c in trainer.storage.items()}
    return trainer.buffer.memory(state.buffer).bytes_per_item, choices, trainer


def flashbax_bytes_per_transition(trainer, capacity: int = 1_000_000) -> float:
    import flashbax as fbx

    obs = trainer.example["obs"]
    step = {
        "obs": jnp.zeros(obs.shape, obs.dtype),
        "action": jnp.int32(0),
        "reward": jnp.float32(0),
        "done": jnp.bool_(False),
    }
    standard = {"obs", "next_obs", "action", "reward", "terminated", "first"}
    step.update({k: v for k, v in trainer.example.items() if k not in standard})  # a carry
    buf = fbx.make_flat_buffer(
        max_length=capacity,
        min_length=1,
        sample_batch_size=1,
        add_batch_size=trainer.config.num_envs,
    )
    return nbytes(jax.eval_shape(buf.init, step)) / capacity


def main() -> dict:
    out = {"bytes_per_transition": {}}
    for name, settings in RUNS.items():
        config = mj.train.TrainConfig(**({"env": name} | settings))
        default, choices, trainer = bytes_per_transition(config)
        plain, _, _ = bytes_per_transition(config.replace(storage="plain"))
        flashbax = flashbax_bytes_per_transition(trainer)
        out["bytes_per_transition"][name] = {
            "plain": plain,
            "lossless_default": default,
            "flashbax_flat": flashbax,
            "chosen": choices,
        }
        print(f"{name:<24} plain {plain:8.1f}  default {default:6.1f}  flashbax {flashbax:8.1f}")
        print(f"{'':<24} {choices}")
    big = mj.train.TrainConfig(env="Breakout-MinAtar", buffer_capacity=1_000_000)
    result = plan(big, num_seeds=64)
    plain = plan(big.replace(storage="plain"), num_seeds=64)
    trainer = mj.train.make_train(big)
    flashbax = flashbax_bytes_per_transition(trainer) * 64 * 1_000_000
    out["breakout_64x1M"] = {
        "state_bytes": result["total_bytes"],
        "replay_bytes": result["bytes_by_part"]["replay"],
        "plain_state_bytes": plain["total_bytes"],
        "flashbax_replay_bytes": flashbax,
    }
    mib = 2.0**20
    print(
        f"Breakout-MinAtar 64 x 1M: state {result['total_bytes'] / mib:,.0f} MiB (replay "
        f"{result['bytes_by_part']['replay'] / mib:,.0f}); plain {plain['total_bytes'] / mib:,.0f}"
        f" MiB; flashbax replay {flashbax / mib:,.0f} MiB"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
