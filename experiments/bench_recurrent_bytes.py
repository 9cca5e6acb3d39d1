"""Bytes per stored step of DRQN's replay: the recurrent state once per window vs at every step
vs R2D2's overlapping stored sequences.

    python experiments/bench_recurrent_bytes.py [--envs MemoryChain-20,StatelessCartPole]
                                                [--cells gru,lstm] [--out PATH]

Three stores of the same DRQN data (issue 10, "Memory"), each a real memjax buffer whose bytes
come from ``buffer.memory(jax.eval_shape(buffer.init, example))`` (nothing allocated; one
configuration is also allocated and must report the same bytes):

  ours         DRQN's replay as ``memjax train --agent drqn`` builds it (``TrainConfig``
               defaults: capacity 10k steps, 10 envs, GRU or LSTM of ``memory`` = 64 units,
               windows of ``sequence_length`` = 40 steps every ``sequence_period`` = 20 rows):
               the sequence layout, each step stored once, the carry in ``per_window`` (stored
               once per window start, i.e. once every ``period`` steps of an environment).
  every_step   the same sequence layout with the carry stored at EVERY step
               (``per_window=()``): what Stoix's R2D2 does. Its ``RNNTransition`` holds
               ``hstate`` per step and the learner reads ``sequences.hstate[0]``
               (EdanToledo/Stoix, stoix/systems/q_learning/rec_r2d2.py, commit 294de43a:
               ``transition = RNNTransition(..., last_hstates)`` in ``_env_step``, added to a
               flashbax trajectory buffer).
  r2d2         R2D2's replay (Kapturowski et al., 2019): sequences of 80 steps overlapping by
               40 stored whole, the state once per sequence. An item is one sequence (obs,
               action, reward, terminated, first [80, ...] and carry once); a new item every
               40 steps, so a buffer of C steps holds C / 40 items and each step is stored
               twice. Built as ``memjax.replay.uniform(C // 40)`` of such items.

Also ``ours`` at R2D2's geometry (windows of 80 every 40 rows) to compare at equal state
period. Carry dtypes: float32 and bfloat16 (``codecs={"carry": mc.cast(jnp.bfloat16)}``) for
every store ("vs f32": the every-step store keeping float32 states, as Stoix does, over ours
with that carry dtype). The state figure is the ``carry`` field's bytes per step; "all" is the whole
buffer per step (sum-tree absent: uniform replay).

Target (issue 10): the state >= 20x smaller than the every-step store.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

import memjax as mj  # noqa: E402
import memjax.codecs as mc  # noqa: E402
from experiments._common import log, machine_info, results_path, write_json  # noqa: E402
from memjax import train as mj_train  # noqa: E402
from memjax.train.build import make_buffer  # noqa: E402

R2D2_LENGTH, R2D2_PERIOD = 80, 40
TARGET = 20.0
CARRY_DTYPES = ("float32", "bfloat16")


def carry_codecs(dtype: str) -> dict:
    return {} if dtype == "float32" else {"carry": mc.cast(getattr(jnp, dtype))}


def report(buffer, example):
    """``buffer.memory`` of an unallocated state: (carry bytes per item, all bytes per item)."""
    rep = buffer.memory(jax.eval_shape(buffer.init, example))
    carry = {f.name: f.bytes_per_item for f in rep.fields}["carry"]
    return carry, rep.bytes_per_item


def r2d2_example(example: dict) -> dict:
    """One stored R2D2 sequence: every per-step field [80, ...] (``next_obs`` is the next
    step's ``obs`` within the sequence) and the carry once."""
    steps = {k: v for k, v in example.items() if k not in ("carry", "next_obs")}
    seq = {k: jnp.zeros((R2D2_LENGTH, *v.shape), v.dtype) for k, v in steps.items()}
    return {**seq, "carry": example["carry"]}


def measure(env: str, cell: str, dtype: str) -> dict:
    """Bytes per stored step of the three stores for one environment, cell and carry dtype."""
    trainer = mj_train.make_train(
        mj_train.TrainConfig(agent=mj.agents.DRQNConfig(cell=cell), env=env)
    )
    cfg = trainer.config  # its storage settings resolved for the environment
    example = trainer.example
    codecs = carry_codecs(dtype)
    cap, E = cfg.buffer_capacity, cfg.num_envs
    ours = make_buffer(cfg, codecs=codecs)
    knobs = cfg.agent_config
    layout = mj.replay.sequence(
        E,
        length=knobs.sequence_length,
        period=knobs.sequence_period,
        per_window=(),
        side_fraction=cfg.side_fraction,
    )
    every = mj.replay.uniform(cap, codecs=codecs, layout=layout)
    r2d2_cfg = cfg.replace(sequence_length=R2D2_LENGTH, sequence_period=R2D2_PERIOD)
    ours_r2d2 = make_buffer(r2d2_cfg, codecs=codecs)
    r2d2 = mj.replay.uniform(cap // R2D2_PERIOD, codecs=codecs)
    stores = {
        "ours": report(ours, example),
        "every_step": report(every, example),
        "ours_80_40": report(ours_r2d2, example),
    }
    carry, total = report(r2d2, r2d2_example(example))
    stores["r2d2"] = (carry / R2D2_PERIOD, total / R2D2_PERIOD)  # per item -> per new step
    carry_raw = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(example["carry"]))
    return {
        "env": env,
        "cell": cell,
        "carry_dtype": dtype,
        "memory": knobs.memory,
        "carry_shape": list(example["carry"].shape),
        "carry_bytes_raw_float32": carry_raw,
        "capacity_steps": cap,
        "num_envs": E,
        "sequence_length": knobs.sequence_length,
        "sequence_period": knobs.sequence_period,
        "state_bytes_per_step": {k: round(v[0], 3) for k, v in stores.items()},
        "all_bytes_per_step": {k: round(v[1], 3) for k, v in stores.items()},
        "state_every_step_over_ours": round(stores["every_step"][0] / stores["ours"][0], 2),
        # Stoix stores the float32 state at every step, whatever our carry codec
        "state_every_step_float32_over_ours": round(carry_raw / stores["ours"][0], 2),
        "all_every_step_over_ours": round(stores["every_step"][1] / stores["ours"][1], 2),
        "all_r2d2_over_ours_80_40": round(stores["r2d2"][1] / stores["ours_80_40"][1], 2),
    }


def allocated_check(env: str, cell: str) -> dict:
    """Allocate DRQN's real buffer once: its memory report must equal the eval_shape one."""
    trainer = mj_train.make_train(
        mj_train.TrainConfig(agent=mj.agents.DRQNConfig(cell=cell), env=env)
    )
    buf = trainer.buffer
    planned = buf.memory(jax.eval_shape(buf.init, trainer.example)).total_bytes
    state = buf.init(trainer.example)
    allocated = buf.memory(state).total_bytes
    arrays = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    return {
        "env": env,
        "cell": cell,
        "planned_bytes": planned,
        "allocated_report_bytes": allocated,
        "allocated_array_bytes": int(arrays),
        "equal": planned == allocated == arrays,
    }


def format_table(rows) -> str:
    lines = [
        "bytes per stored step (state = the carry field; all = whole buffer)",
        f"{'env':<18} {'cell':<4} {'carry':<8} | {'state: ours':>11} {'every step':>10} "
        f"{'x less':>7} {'vs f32':>7} {'r2d2':>6} "
        f"{'ours 80/40':>10} | {'all: ours':>9} {'every step':>10} "
        f"{'r2d2':>7} {'ours 80/40':>10}",
    ]
    for r in rows:
        s, a = r["state_bytes_per_step"], r["all_bytes_per_step"]
        lines.append(
            f"{r['env']:<18} {r['cell']:<4} {r['carry_dtype']:<8} | {s['ours']:>11.2f} "
            f"{s['every_step']:>10.1f} {r['state_every_step_over_ours']:>6.1f}x "
            f"{r['state_every_step_float32_over_ours']:>6.1f}x {s['r2d2']:>6.2f} "
            f"{s['ours_80_40']:>10.2f} | {a['ours']:>9.2f} {a['every_step']:>10.2f} "
            f"{a['r2d2']:>7.2f} {a['ours_80_40']:>10.2f}"
        )
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="bench_recurrent_bytes.py", description=__doc__.split("\n")[0])
    p.add_argument(
        "--envs",
        default="MemoryChain-20,StatelessCartPole",
        help="comma list of environments (memjax.envs names)",
    )
    p.add_argument("--cells", default="gru,lstm", help="comma list of recurrent cells")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default experiments/results/bench_recurrent_bytes_<tag>.json)",
    )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    t0 = time.perf_counter()
    rows = [measure(env, cell, dtype) for env in envs for cell in cells for dtype in CARRY_DTYPES]
    check = allocated_check(envs[0], cells[0])
    log(format_table(rows))
    worst = min(r["state_every_step_over_ours"] for r in rows)
    met = worst >= TARGET
    log(
        f"\ntarget (issue 10): state >= {TARGET:.0f}x less than the every-step store: "
        f"{'MET' if met else 'NOT MET'} (smallest ratio {worst:.1f}x)"
    )
    log(
        f"allocated {check['env']}/{check['cell']}: {check['allocated_array_bytes']:,} B, "
        f"eval_shape plan {check['planned_bytes']:,} B "
        f"({'equal' if check['equal'] else 'DIFFERENT'})"
    )
    doc = {
        "benchmark": "bench_recurrent_bytes",
        "machine": machine_info(),
        "settings": {
            "envs": envs,
            "cells": cells,
            "carry_dtypes": list(CARRY_DTYPES),
            "r2d2_length": R2D2_LENGTH,
            "r2d2_period": R2D2_PERIOD,
        },
        "sources": {
            "every_step": "EdanToledo/Stoix stoix/systems/q_learning/rec_r2d2.py "
            "(commit 294de43a): RNNTransition stores hstate per step",
            "r2d2": "Kapturowski et al. 2019, R2D2: sequences of 80 overlapping by "
            "40, stored whole, state once per sequence",
        },
        "targets": {
            "state_every_step_over_ours_min": {"value": worst, "bound": TARGET, "met": met}
        },
        "allocated_check": check,
        "rows": rows,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(doc, args.out or results_path("bench_recurrent_bytes"), log=log)
    return 0 if check["equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
