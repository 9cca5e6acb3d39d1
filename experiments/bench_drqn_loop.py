"""DRQN loop benchmark: env steps/s of the fused DRQN loop and the replay buffer's share of it.

    python experiments/bench_drqn_loop.py [--quick] [--env MemoryChain-20] [--seeds 1]
                                          [--replay uniform,prioritized] [--rounds N] [--out PATH]

What is measured (issue 10, "Speed"). One loop, ``memjax.train.make_train(config, buffer=...)``
with the DRQN defaults of ``TrainConfig(agent="drqn")`` (10 envs, GRU of 64 units, buffer 10k
steps in the sequence layout with the carry stored once per window, windows of 40 steps every
20 rows, burn-in 8, batch 128 windows, one update per vector step), on ``--env``. Per replay
kind three buffers, the same compiled loop otherwise:

  drqn_X        the real buffer X (uniform or prioritized): add every vector step, sample 128
                windows, update (prioritized: R2D2 window priorities; uniform: a no-op).
  floor_add_X   add kept (the real buffer's add), sample REPLACED by one fixed batch of 128
                windows pre-sampled from the filled real buffer (weights ones), update removed.
  floor_X       add, sample and update all removed: add is a no-op, sample returns the fixed
                batch, update is a no-op. Environment + acting (with the carry) + learner
                (burn-in, loss, gradients, Adam, target) alone: bench_loop's floor
                (``experiments/bench_loop.py``), with windows.

  buffer share  = 1 - floor / drqn   (what add + sample + update cost of the loop's time)
  add share     = (floor_add - floor) / drqn
  sample share  = (drqn - floor_add) / drqn   (sample + priority update)

and, as a check that does not subtract two noisy loop times,

  buffer_X      the buffer alone, as the loop calls it each vector step: sample 128 windows
                (every field read), update, add one row of 10 steps, on the filled state;
                buffer alone share = buffer_X / drqn_X (per round, median).

Protocol: bench_loop's (``experiments/_common.py``): the timed program is the vmapped training
``chunk`` (``--chunk-steps`` env steps per seed, default 100 = 10 updates per call),
``jax.jit(..., donate_argnums=0)``, AOT compiled (compile time reported apart, never in run
times), started from the state after the loop's own warm-up (``trainer.collect``:
``learning_starts`` env steps of random actions from the same keys, so every buffer holds the
same transitions). All programs of one seed count are interleaved in every round (order
rotated); ratios are medians of per-round ratios.

Target (issue 10): the buffer <= 10% of the loop's time, checked both ways (the loop's
learner costs ~100x the buffer here, so the loop-minus-floor share is within the rounds' noise;
the buffer-alone share is the precise one).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

from experiments._common import (  # noqa: E402
    LoopProgram,
    Side,
    as_carry_fn,
    consume,
    log,
    machine_info,
    measure,
    options,
    paired_ratio,
    positive_ints,
    results_path,
    time_stats,
    write_json,
)
from experiments.bench_loop import FloorState, buffer_copy_check, floor_buffer  # noqa: E402
from memjax import train as mj_train  # noqa: E402
from memjax.replay.base import ReplayBuffer  # noqa: E402

FULL = dict(seeds=(1,), rounds=9, chunk_steps=100, round_seconds=1.0)
QUICK = dict(seeds=(1,), rounds=2, chunk_steps=20, round_seconds=0.05)
TARGET = 0.10
KINDS = ("uniform", "prioritized")


@struct.dataclass
class AddFloorState:
    """``real``: the real buffer's state (written by ``add``); ``items``: the fixed batch."""

    real: Any
    items: Any


def zeros_like_spec(spec):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), spec)


def window_floor(batch_size: int, spec) -> ReplayBuffer:
    """bench_loop's floor buffer (add and update no-ops, sample = the stored batch) holding a
    batch of windows shaped like ``spec`` (the real buffer's sample items)."""
    floor = floor_buffer(batch_size)
    return floor._replace(
        init=lambda example: FloorState(items=zeros_like_spec(spec)), memory=lambda state: None
    )


def add_floor(real: ReplayBuffer, batch_size: int, spec) -> ReplayBuffer:
    """The real buffer's ``add``; ``sample`` returns the fixed batch; ``update`` is a no-op."""
    floor = floor_buffer(batch_size)

    def init(example):
        return AddFloorState(real=real.init(example), items=zeros_like_spec(spec))

    def add(state, items):
        return state.replace(real=real.add(state.real, items))

    def sample(state, key, batch_size_=None, beta=None):
        return floor.sample(FloorState(items=state.items), key, batch_size_)

    return ReplayBuffer(
        init,
        add,
        sample,
        lambda state, i, p: state,
        lambda state, b=None: jnp.asarray(True),
        lambda state: real.memory(state.real),
    )


def buffer_ops(trainer, length: int):
    """``length`` vector steps of the buffer alone, as the loop calls it: sample a batch of
    windows (every field read), update (priorities from the batch), add one row."""
    cfg, buf = trainer.config, trainer.buffer
    row = jax.tree.map(lambda x: jnp.zeros((cfg.num_envs, *x.shape), x.dtype), trainer.example)

    def step(carry, _):
        state, key, acc = carry
        key, k_sample, k_prio = jax.random.split(key, 3)
        sample = buf.sample(state, k_sample, cfg.batch_size, beta=0.4)
        used = consume(sample.items)
        priorities = jax.random.uniform(k_prio, (cfg.batch_size,)) + 0 * used
        state = buf.add(buf.update(state, sample.indices, priorities), row)
        return (state, key, acc + used), None

    def f(carry):
        return jax.lax.scan(step, carry, None, length=length)[0]

    return f


def make_config(env: str, kind: str, chunk_steps: int) -> mj_train.TrainConfig:
    return mj_train.TrainConfig(agent="drqn", env=env, replay=kind, chunk_steps=int(chunk_steps))


def bench_seeds(S: int, env: str, kinds, opts) -> dict:
    keys = jax.random.split(jax.random.key(0), S)
    real = {k: make_config(env, k, opts["chunk_steps"]) for k in kinds}
    programs, shapes, trainers, buffer_alone = {}, {}, {}, {}
    t0 = time.perf_counter()
    for kind, cfg in real.items():
        trainer = mj_train.make_train(cfg)
        # the loop's own warm-up (random actions, the carry kept up to date): the same keys
        # give the same transitions to every replay kind
        full = jax.jit(jax.vmap(lambda k, tr=trainer: tr.collect(tr.init(k))[0]))(keys)
        beta = 0.4
        sample_keys = jax.random.split(jax.random.key(7), S)
        fixed = jax.jit(
            jax.vmap(lambda b, k: trainer.buffer.sample(b, k, cfg.batch_size, beta=beta).items)
        )(full.buffer, sample_keys)
        spec = jax.eval_shape(lambda x: jax.tree.map(lambda a: a[0], x), fixed)
        floors = {
            f"floor_add_{kind}": (
                add_floor(trainer.buffer, cfg.batch_size, spec),
                AddFloorState(
                    real=jax.tree.map(jnp.copy, full.buffer), items=jax.tree.map(jnp.copy, fixed)
                ),
            ),
            f"floor_{kind}": (
                window_floor(cfg.batch_size, spec),
                FloorState(items=jax.tree.map(jnp.copy, fixed)),
            ),
        }
        trainers[f"drqn_{kind}"] = (trainer, full)
        buffer_alone[f"buffer_{kind}"] = (
            trainer,
            (
                jax.tree.map(jnp.copy, full.buffer),
                jax.random.split(jax.random.key(9), S),
                jnp.zeros((S,), jnp.float32),
            ),
        )
        for name, (buf, bstate) in floors.items():
            trainers[name] = (
                mj_train.make_train(cfg, buffer=buf),
                jax.tree.map(jnp.copy, full).replace(buffer=bstate),
            )
    warm_s = time.perf_counter() - t0
    vec_steps = next(iter(real.values())).chunk_iters
    for name, (tr, state) in trainers.items():
        metrics0 = zeros_like_spec(jax.eval_shape(jax.vmap(tr.chunk), state)[1])
        shapes[name] = jax.eval_shape(lambda x: x, state.buffer)
        programs[name] = LoopProgram(
            name, as_carry_fn(tr.chunk), Side(name, (state, metrics0)), ops_per_call=vec_steps
        )
    for name, (tr, carry) in buffer_alone.items():
        shapes[name] = jax.eval_shape(lambda x: x, carry[0])
        programs[name] = LoopProgram(
            name, jax.vmap(buffer_ops(tr, vec_steps)), Side(name, carry), ops_per_call=vec_steps
        )
    trainers.clear()
    buffer_alone.clear()
    compile_s = {k: p.lower_s + p.compile_s for k, p in programs.items()}
    log(
        f"  [{S} seed{'s' if S > 1 else ''}] warm-up {warm_s:.1f} s; compiled {len(programs)} "
        f"programs in {sum(compile_s.values()):.1f} s; timing {opts['rounds']} rounds ..."
    )
    t = measure(programs, opts["rounds"], opts["round_seconds"])
    med = {k: statistics.median(v) for k, v in t.items()}
    cfg0 = next(iter(real.values()))
    progs = {
        k: {
            "us_per_vector_step": time_stats(t[k]),
            "env_steps_per_s": round(S * cfg0.num_envs / med[k], 1),
            "lower_s": round(p.lower_s, 3),
            "compile_s": round(p.compile_s, 3),
            "donation_ok": p.donation_ok,
            "buffer_copies": buffer_copy_check(p, shapes[k], cfg0.buffer_capacity),
        }
        for k, p in programs.items()
    }
    shares = {}
    for kind in kinds:
        full, fa, fl = t[f"drqn_{kind}"], t[f"floor_add_{kind}"], t[f"floor_{kind}"]
        shares[kind] = {
            "loop_over_floor": paired_ratio(full, fl),
            "buffer_share": round(1 - 1 / paired_ratio(full, fl), 4),
            "add_share": round(statistics.median((b - c) / a for a, b, c in zip(full, fa, fl)), 4),
            "sample_update_share": round(
                statistics.median((a - b) / a for a, b in zip(full, fa)), 4
            ),
            "buffer_share_per_round": [round(1 - c / a, 4) for a, c in zip(full, fl)],
            "buffer_alone_share": round(
                statistics.median(b / a for a, b in zip(full, t[f"buffer_{kind}"])), 5
            ),
        }
    return {
        "seeds": S,
        "programs": progs,
        "shares": shares,
        "rounds_us": {k: [round(x * 1e6, 3) for x in v] for k, v in t.items()},
        "warm_up_s": round(warm_s, 2),
    }


def format_table(results, env) -> str:
    lines = [
        f"fused DRQN loop on {env}: us per vector step of all seeds (median round); "
        "compile s apart",
        f"{'side':<24} {'seeds':>5} | {'us/step':>9} {'env steps/s':>11} | {'compile s':>9}",
    ]
    for S, r in results.items():
        for k, p in r["programs"].items():
            lines.append(
                f"{k:<24} {S:>5} | {p['us_per_vector_step']['median_us']:>9.1f} "
                f"{p['env_steps_per_s']:>11,.0f} | "
                f"{p['lower_s'] + p['compile_s']:>9.1f}"
            )
    lines.append("")
    lines.append(
        f"{'replay':<12} {'seeds':>5} | {'loop/floor':>10} {'buffer':>7} {'add':>7} "
        f"{'sample+upd':>10} {'alone':>7} | rounds (buffer share)"
    )
    for S, r in results.items():
        for kind, s in r["shares"].items():
            lines.append(
                f"{kind:<12} {S:>5} | {s['loop_over_floor']:>9.3f}x "
                f"{s['buffer_share']:>7.1%} {s['add_share']:>7.1%} "
                f"{s['sample_update_share']:>10.1%} {s['buffer_alone_share']:>7.2%} | "
                + " ".join(f"{x:.1%}" for x in s["buffer_share_per_round"])
            )
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="bench_drqn_loop.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short chunks, 2 rounds")
    p.add_argument("--env", default="MemoryChain-20", help="environment (memjax.envs name)")
    p.add_argument("--replay", default=",".join(KINDS), help="comma list: uniform,prioritized")
    p.add_argument(
        "--seeds", type=positive_ints, default=None, help="vmapped seed counts, e.g. 1,8"
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    p.add_argument(
        "--chunk-steps", type=int, default=None, help="env steps per timed chunk per seed"
    )
    p.add_argument(
        "--round-seconds", type=float, default=None, help="target seconds per program per round"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default experiments/results/bench_drqn_loop_<tag>[_quick].json)",
    )
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    opts = options(args, QUICK, FULL, ("seeds", "rounds", "chunk_steps", "round_seconds"))
    kinds = tuple(k.strip() for k in args.replay.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        parser.error(f"--replay: expected a comma list of {', '.join(KINDS)}, got {args.replay!r}")
    info = machine_info()
    log(
        f"memjax DRQN loop benchmark | jax {info['versions']['jax']} {info['jax_backend']} | "
        f"{info['cpu_count']} CPUs ({info['cpu_model']}) | {info['platform']}"
    )
    log(
        f"env {args.env}; replay {', '.join(kinds)}; seeds {list(opts['seeds'])}; rounds "
        f"{opts['rounds']}; chunk {opts['chunk_steps']} env steps/seed"
    )
    t0 = time.perf_counter()
    results = {S: bench_seeds(S, args.env, kinds, opts) for S in opts["seeds"]}
    log("")
    log(format_table(results, args.env))
    met = {}
    for S, r in results.items():
        for kind, s in r["shares"].items():
            for what in ("buffer_share", "buffer_alone_share"):
                met[f"[{S}] {kind} {what} <= {TARGET:.0%}"] = {
                    "value": s[what],
                    "met": s[what] <= TARGET,
                }
    log("")
    log("targets (issue 10)")
    for name, v in met.items():
        log(f"  {name}: {'MET' if v['met'] else 'NOT MET'} ({v['value']:.1%})")
    doc = {
        "benchmark": "bench_drqn_loop",
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "settings": {
            **opts,
            "env": args.env,
            "replay": list(kinds),
            "config": dataclasses.asdict(make_config(args.env, kinds[0], opts["chunk_steps"])),
        },
        "targets": met,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "results": {str(S): r for S, r in results.items()},
    }
    write_json(doc, args.out or results_path("bench_drqn_loop", args.quick), log=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
