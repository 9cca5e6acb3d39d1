"""Memory plan of a run before anything is allocated: the bytes of the whole training state
by part, from ``jax.eval_shape`` of the vmapped ``Trainer.init``.

```
memjax train --plan [--seeds 8] [--device-budget 16GB] ...   # prints the plan, trains nothing
```

Besides the state, ``--plan`` gives the peak: the state plus the most any of the run's
compiled programs (init, warm-up, chunks, evaluation) adds while it runs, from XLA's memory
analysis (the programs are compiled, never run), and on a CPU the process's runtime on top.

The seeds are sharded over the devices (``--devices``, default all local ones), so a device
holds ``seeds / devices`` seeds' states; a data-parallel run (``--data-parallel``) holds every
seed on every device (each with its own buffer shard and environments). The plan gives the
bytes per device and per seed, and the largest replay capacity per seed (per seed and device
shard when data parallel) with which the whole state fits a budget per device
(``--device-budget``). Devices need not exist: plan a GPU
machine's run from a laptop.
"""

from __future__ import annotations

import jax
import numpy as np

from memjax.train.config import TrainConfig
from memjax.train.loop import make_train
from memjax.train.memory import capacity_for_budget

PARTS = (
    "params",
    "target_params",
    "optimizer",
    "agent_other",
    "replay",
    "env_states",
    "observations",
    "carry",
    "loop_other",
)
"""The parts of :func:`plan`'s ``bytes_by_part``, in order."""


def nbytes(tree) -> int:
    """Bytes of the arrays (or ShapeDtypeStructs) of ``tree``; typed PRNG keys count their
    raw words."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        dtype = leaf.dtype
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            itemsize = int(np.prod(jax.random.key_data(jax.random.key(0)).shape)) * 4
        else:
            itemsize = np.dtype(dtype).itemsize
        total += int(np.prod(leaf.shape)) * itemsize
    return total


def _agent_parts(agent_state) -> dict:
    fields = dict(vars(agent_state)) if hasattr(agent_state, "__dict__") else {}
    params = fields.pop("params", None)
    target = fields.pop("target_params", None)
    optimizer = fields.pop("opt_state", None)
    if params is None:  # an agent state of another shape: all of it is "agent_other"
        return {"params": 0, "target_params": 0, "optimizer": 0, "agent_other": nbytes(agent_state)}
    return {
        "params": nbytes(params),
        "target_params": nbytes(target),
        "optimizer": nbytes(optimizer),
        "agent_other": nbytes(fields),
    }


def plan(
    config: TrainConfig,
    num_seeds: int = 8,
    env=None,
    env_params=None,
    budget_bytes=None,
    devices=None,
    data_parallel: bool = False,
    peak: bool = False,
) -> dict:
    """The bytes of a run's training state, by part, without allocating it, and with
    ``peak`` the peak memory of running it.

    Args:
      config: the run's :class:`TrainConfig`.
      num_seeds: vmapped seeds.
      env: optionally a gymnax environment instead of ``config.env``.
      env_params: its parameters.
      budget_bytes: optionally, bytes per device for the whole state; the plan then gives
        the largest replay capacity that fits.
      devices: the devices the seeds are sharded over (default: the local devices).
      data_parallel: every seed is one agent replicated over the devices.
      peak: also compile (not run) the run's programs for one device's seeds and read XLA's
        memory analysis of each (:func:`program_memory`): ``peak_bytes_per_device`` is the
        state plus the most that one program adds to it while it runs (its temporaries and
        the outputs it does not write in place), ``peak_program`` names that program, and
        ``runtime_bytes`` is this process's peak RSS after compiling (Python, JAX and the
        compiled programs: what a CPU run adds to its devices' memory in host RAM).
        ``expected_peak_rss_bytes`` (CPU backend) is their sum over the devices. Compiling
        takes about as long as a run's start-up.

    Returns:
      A dict: ``seeds``, ``devices``, ``data_parallel``, ``bytes_by_part`` (part -> bytes
      of the whole run, all seeds and devices, see :data:`PARTS`), ``replay_by_field``
      (field -> stored bytes, the same), ``total_bytes``, ``bytes_per_seed``,
      ``bytes_per_device`` and, with ``budget_bytes``, ``largest_capacity`` (None when not
      even a batch fits).

    Raises:
      ValueError: ``devices`` < 1, or seeds not a multiple of the devices (seeds sharded).
    """
    devices = jax.local_device_count() if devices is None else devices
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    if not data_parallel and num_seeds % devices:
        raise ValueError(
            f"--seeds {num_seeds} must be a multiple of the {devices} devices "
            "that shard them (or --data-parallel)"
        )
    copies = devices if data_parallel else 1  # data parallel: a state per device and seed
    trainer = make_train(config, env=env, env_params=env_params)
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), num_seeds))
    state = jax.eval_shape(jax.vmap(trainer.init), keys)
    report = trainer.buffer.memory(state.buffer)
    parts = {
        **_agent_parts(state.agent),
        "replay": report.total_bytes,
        "env_states": nbytes(state.env_state),
        "observations": nbytes(state.obs),
        "carry": nbytes(state.carry),
        "loop_other": nbytes((state.first, state.key, state.step, state.ep_return)),
    }
    parts = {name: parts[name] * copies for name in PARTS}
    total = sum(parts.values())
    out = {
        "seeds": num_seeds,
        "devices": devices,
        "data_parallel": bool(data_parallel),
        "bytes_by_part": parts,
        "replay_by_field": {f.name: f.total_bytes * copies for f in report.fields},
        "total_bytes": total,
        "bytes_per_seed": total / num_seeds,
        "bytes_per_device": total / devices,
    }
    if peak:
        per_device_seeds = num_seeds if data_parallel else num_seeds // devices
        programs = program_memory(trainer, per_device_seeds)
        name = max(programs, key=programs.get)
        out["program_bytes"] = programs
        out["peak_program"] = name
        out["peak_bytes_per_device"] = out["bytes_per_device"] + programs[name]
        out["runtime_bytes"] = _peak_rss()
        if jax.default_backend() == "cpu":
            out["expected_peak_rss_bytes"] = (
                out["peak_bytes_per_device"] * devices + out["runtime_bytes"]
            )
    if budget_bytes is not None:
        seeds_per_device = num_seeds if data_parallel else num_seeds // devices
        other = (total - report.total_bytes * copies) / (num_seeds * copies)
        out["largest_capacity"] = _largest_capacity(
            config, env, env_params, budget_bytes / seeds_per_device, other
        )
    return out


def program_memory(trainer, num_seeds: int) -> dict:
    """program -> bytes it adds to the state while it runs, for ``num_seeds`` vmapped seeds
    on one device, from XLA's memory analysis of the compiled (never run) programs: ``init``
    its temporaries (its output is the state); ``collect`` (the warm-up), ``chunk`` and
    ``final_chunk`` (the state donated, as the driver runs them) and ``evaluate`` their
    temporaries plus the outputs not written in place of an argument."""
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), num_seeds))
    state = jax.eval_shape(jax.vmap(trainer.init), keys)
    programs = {
        "init": (jax.vmap(trainer.init), (keys,), ()),
        "collect": (jax.vmap(trainer.collect), (state,), (0,)),
        "chunk": (jax.vmap(trainer.chunk), (state,), (0,)),
        "evaluate": (jax.vmap(trainer.evaluate), (state.agent, keys), ()),
    }
    if trainer.final_chunk is not None:
        programs["final_chunk"] = (jax.vmap(trainer.final_chunk), (state,), (0,))
    out = {}
    for name, (fn, args, donate) in programs.items():
        stats = jax.jit(fn, donate_argnums=donate).lower(*args).compile().memory_analysis()
        temp = int(stats.temp_size_in_bytes)
        fresh = int(stats.output_size_in_bytes) - int(stats.alias_size_in_bytes)
        out[name] = temp if name == "init" else temp + fresh
    return out


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (Linux: ru_maxrss is in KiB)."""
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _largest_capacity(config, env, env_params, budget_bytes, other_bytes_per_seed):
    left = budget_bytes - other_bytes_per_seed
    try:
        return capacity_for_budget(config, int(left), env=env, env_params=env_params)
    except ValueError:
        return None


def format_plan(result: dict) -> str:
    """The plan as a table of MiB by part (all seeds), with per-seed and per-device totals."""
    mib = 2.0**20
    where = "each one agent data-parallel over" if result["data_parallel"] else "sharded over"
    lines = [
        f"memory plan: {result['seeds']} seeds {where} {result['devices']} device(s), "
        "before allocation (jax.eval_shape)",
        f"{'part':<14} {'MiB':>10}",
    ]
    for name, value in result["bytes_by_part"].items():
        lines.append(f"{name:<14} {value / mib:>10.3f}")
        if name == "replay":
            for field, size in result["replay_by_field"].items():
                lines.append(f"  {field:<12} {size / mib:>10.3f}")
    lines.append(
        f"{'total':<14} {result['total_bytes'] / mib:>10.3f}   "
        f"({result['bytes_per_seed'] / mib:.3f} per seed, "
        f"{result['bytes_per_device'] / mib:.3f} per device)"
    )
    if "peak_bytes_per_device" in result:
        lines.append(
            f"{'peak':<14} {result['peak_bytes_per_device'] / mib:>10.3f}   per device: the "
            f"state + {result['program_bytes'][result['peak_program']] / mib:.3f} while "
            f"{result['peak_program']} runs (XLA's memory analysis of the compiled programs)"
        )
        if "expected_peak_rss_bytes" in result:
            lines.append(
                f"{'peak RSS':<14} {result['expected_peak_rss_bytes'] / mib:>10.3f}   on this "
                f"CPU: the peak + {result['runtime_bytes'] / mib:.0f} MiB of runtime "
                "(Python, JAX, compiled programs: this process after compiling)"
            )
    if "largest_capacity" in result:
        cap = result["largest_capacity"]
        each = "per seed and device shard" if result["data_parallel"] else "per seed"
        lines.append(
            f"largest replay capacity {each} (--capacity) with which the whole state "
            "fits the budget of each device: "
            + (f"{cap:,}" if cap else "none (not even one batch fits)")
        )
    return "\n".join(lines)


__all__ = ["PARTS", "plan", "format_plan", "nbytes", "program_memory"]
