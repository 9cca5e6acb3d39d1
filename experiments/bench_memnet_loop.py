"""Memory agents' loop speed: env steps/s of the fused memnet and NTM loops against DRQN's
(and DQN's) on the same task with the same loop settings, in one process, interleaved rounds.

    python experiments/bench_memnet_loop.py [--quick] [--env MemoryChain-20] [--seeds 2]
                                            [--rounds 7] [--chunk-steps 200] [--out PATH]
                                            [--sides memnet,drqn,ntm,dqn] [--floors ntm,drqn]

The loop settings are the README's memory-agent commands (10 envs, buffer 10k steps, batch 32
windows, one update per vector step). The sides:

  memnet    ``--agent memnet``: M = 32, windows of 40 steps every 8 rows (8 trained steps
            per window); acting re-encodes the ring's 32 observations per environment.
  memnet-1head  the same with ``--attention-heads 1`` (MQN's single read; the default is 4):
            what the heads cost.
  drqn      ``--agent drqn``: GRU of 64, windows of 40 every 20 rows, burn-in 8 (32 trained
            steps per window), the carry stored once per window.
  ntm       ``--agent ntm``: its defaults (LSTM controller of 64, a 16 x 16 memory, one read
            head, DRQN's windows and burn-in), its state stored once per window.
  dqn       ``--agent dqn``: the feedforward agent on the one-copy layout (batch 32
            transitions), for scale.
  X-floor   side X (any of the above) on its replay-free floor (``--floors``): the same loop
            with a buffer whose ``add`` and ``update`` do nothing and whose ``sample``
            returns one batch drawn once from X's filled buffer (:func:`frozen_sample_buffer`).
            It costs environment, acting and learner alone, so ``1 - floor / X`` (the ratio
            ``X_buffer_share``) is the share of X's loop its buffer takes (add, sample,
            priority update).

Protocol (``experiments/_common.py``): the timed program is the vmapped training ``chunk``
(``--chunk-steps`` env steps per seed), jitted with the state donated and AOT compiled
(compile time reported apart), started from the state after the loop's own warm-up. All
sides run in every round (order rotated); ratios are medians of per-round ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

from experiments._common import (  # noqa: E402
    LoopProgram,
    Side,
    as_carry_fn,
    log,
    machine_info,
    measure,
    paired_ratio,
    results_path,
    time_stats,
    write_json,
)
from memjax import train as mj_train  # noqa: E402
from memjax.replay import MemoryReport, ReplayBuffer  # noqa: E402

BASE = dict(
    num_envs=10,
    buffer_capacity=10_000,
    batch_size=32,
    learning_starts=5_000,
    lr=1e-3,
    target_update_every=1_000,
    eps_decay_steps=30_000,
)
SIDES = {
    "memnet": dict(agent="memnet", context_length=32, sequence_length=40, sequence_period=8),
    "memnet-1head": dict(
        agent="memnet", context_length=32, sequence_length=40, sequence_period=8, attention_heads=1
    ),
    "drqn": dict(agent="drqn"),
    "ntm": dict(agent="ntm"),
    "dqn": dict(agent="dqn", layout="one_copy"),
}
RATIOS = {  # name -> (numerator side, denominator side): time per step
    "memnet_over_drqn_time": ("memnet", "drqn"),
    "memnet_over_memnet_1head_time": ("memnet", "memnet-1head"),
    "memnet_over_dqn_time": ("memnet", "dqn"),
    "drqn_over_dqn_time": ("drqn", "dqn"),
    "ntm_over_drqn_time": ("ntm", "drqn"),
    "ntm_over_dqn_time": ("ntm", "dqn"),
}


def frozen_sample_buffer(buffer: ReplayBuffer, batch_size: int) -> ReplayBuffer:
    """A replay-free floor for any layout: ``add`` and ``update`` return the state unchanged,
    ``sample`` returns the :class:`memjax.replay.Sample` held in the state (for the timed
    runs: one batch that ``buffer`` drew from its filled state, see :func:`frozen_state`).
    ``init`` holds zeros of ``buffer``'s sample shapes (windows and their stored state alike)."""

    def init(example):
        key = jax.random.key(0)
        shapes = jax.eval_shape(lambda: buffer.sample(buffer.init(example), key, batch_size))
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

    def sample(state, key, batch_size_: int, beta=None):
        if batch_size_ != batch_size:
            raise ValueError(
                f"the frozen sample holds a batch of {batch_size}, asked {batch_size_}"
            )
        return state

    def memory(state):
        return MemoryReport(batch_size, 1, (), 0, 0)

    keep = lambda state, *args: state  # noqa: E731
    return ReplayBuffer(
        init, keep, sample, keep, lambda state, batch_size_: jnp.asarray(True), memory
    )


def frozen_state(trainer, state, key):
    """``state`` (vmapped over seeds) with its buffer replaced by one batch that
    ``trainer``'s buffer samples from it, per seed: the floor's state."""
    size = trainer.config.batch_size
    draw = jax.vmap(lambda b, k: trainer.buffer.sample(b, k, size))
    return state.replace(buffer=draw(state.buffer, jax.random.split(key, len(state.step))))


def bench(
    env: str,
    seeds: int,
    rounds: int,
    chunk_steps: int,
    round_seconds: float,
    sides=tuple(SIDES),
    floors=(),
) -> dict:
    keys = jax.random.split(jax.random.key(0), seeds)
    programs, warm = {}, {}

    def program(name, trainer, state):
        metrics = jax.eval_shape(jax.vmap(trainer.chunk), state)[1]
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics)
        programs[name] = LoopProgram(
            name,
            as_carry_fn(trainer.chunk),
            Side(name, (state, zeros)),
            ops_per_call=trainer.config.chunk_iters,
        )
        log(
            f"  {name}: warm-up {warm[name]:.1f} s, compile "
            f"{programs[name].lower_s + programs[name].compile_s:.1f} s"
        )

    for name in sides:
        settings = SIDES[name]
        cfg = mj_train.TrainConfig(
            env=env,
            chunk_steps=chunk_steps,
            total_steps=BASE["learning_starts"] + 10 * chunk_steps,
            **BASE,
        ).replace(**settings)
        trainer = mj_train.make_train(cfg)
        t0 = time.perf_counter()
        state = jax.block_until_ready(
            jax.jit(jax.vmap(lambda k, tr=trainer: tr.collect(tr.init(k))[0]))(keys)
        )
        warm[name] = time.perf_counter() - t0
        if name in floors:
            floor = f"{name}-floor"
            floor_trainer = dataclasses.replace(
                trainer, buffer=frozen_sample_buffer(trainer.buffer, cfg.batch_size)
            )
            t0 = time.perf_counter()
            floor_state = jax.jit(frozen_state, static_argnums=0)(trainer, state, jax.random.key(7))
            # its own buffers: both sides' programs donate their states
            floor_state = jax.tree.map(lambda x: x.copy(), floor_state)
            warm[floor] = time.perf_counter() - t0
            program(floor, floor_trainer, floor_state)
        program(name, trainer, state)
    times = measure(programs, rounds, round_seconds)
    num_envs = BASE["num_envs"]
    sides = {
        k: {
            "us_per_vector_step": time_stats(t),
            "env_steps_per_s": round(seeds * num_envs / statistics.median(t), 1),
            "compile_s": round(programs[k].lower_s + programs[k].compile_s, 2),
            "donation_ok": programs[k].donation_ok,
        }
        for k, t in times.items()
    }
    ratios = {
        name: paired_ratio(times[a], times[b])
        for name, (a, b) in RATIOS.items()
        if a in times and b in times
    }
    for name in floors:
        ratios[f"{name}_buffer_share"] = round(
            1 - paired_ratio(times[f"{name}-floor"], times[name]), 3
        )
    return {
        "env": env,
        "seeds": seeds,
        "rounds": rounds,
        "chunk_steps": chunk_steps,
        "sides": sides,
        "ratios": ratios,
        "base": BASE,
        "side_settings": {k: dict(SIDES[k.removesuffix("-floor")]) for k in sides},
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="bench_memnet_loop.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short chunks, 2 rounds")
    p.add_argument("--env", default="MemoryChain-20")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--chunk-steps", type=int, default=None, help="env steps per chunk per seed")
    p.add_argument("--out", default=None)
    p.add_argument(
        "--sides",
        default=",".join(SIDES),
        help=f"comma-separated sides to time (default: all of {', '.join(SIDES)})",
    )
    p.add_argument(
        "--floors",
        default="",
        help="comma-separated sides (among --sides) also timed on their replay-free floor",
    )
    a = p.parse_args(argv)
    sides = tuple(s for s in a.sides.split(",") if s)
    floors = tuple(s for s in a.floors.split(",") if s)
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        p.error(f"--sides: unknown {unknown}; known: {', '.join(SIDES)}")
    if set(floors) - set(sides):
        p.error(f"--floors: {sorted(set(floors) - set(sides))} not among --sides {a.sides}")
    rounds = a.rounds or (2 if a.quick else 7)
    chunk = a.chunk_steps or (50 if a.quick else 200)
    t0 = time.perf_counter()
    log(
        f"{', '.join(sides)} loops on {a.env}, {a.seeds} seeds, "
        f"{rounds} rounds, {chunk} env steps per seed per chunk"
    )
    result = bench(a.env, a.seeds, rounds, chunk, 0.2 if a.quick else 2.0, sides, floors)
    for k, s in result["sides"].items():
        log(
            f"{k:<12} {s['env_steps_per_s']:>10,.0f} env steps/s (all seeds)   "
            f"median {s['us_per_vector_step']['median_us']:>10.1f} us/vector step   "
            f"compile {s['compile_s']:.1f} s"
        )
    log(
        "ratios (time per step, median of per-round ratios): "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items())
    )
    doc = {"machine": machine_info(), "wall_seconds": round(time.perf_counter() - t0, 1), **result}
    write_json(doc, a.out or results_path("bench_memnet_loop", a.quick))


if __name__ == "__main__":
    main()
