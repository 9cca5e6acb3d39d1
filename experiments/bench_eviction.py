"""Eviction-policy benchmark: the fused DQN loop with each policy of memjax.replay.eviction vs FIFO.

    python experiments/bench_eviction.py [--quick] [--seeds 1,8] [--rounds N] [--out PATH]
                                         [--sides fifo_uniform,reservoir_uniform,...]

What is measured (issue 11). One loop, ``memjax.train.make_train(config, buffer=...)`` with the
CartPole-v1 defaults of ``TrainConfig`` (10 envs, buffer 10k, batch 128, one update per vector
step), run with the same buffer under different eviction policies:

  fifo_uniform / fifo_per             the default (no ``eviction=``): the baseline
  reservoir_uniform / reservoir_per   ``reservoir()``
  lrs_uniform / lrs_per               ``least_recently_sampled()``
  lowest_per                          ``lowest_priority()`` (prioritized only)
  max4_uniform / max4_per             ``max_times_sampled(4)``

Protocol: bench_loop's (experiments/_common.py). The timed program is the vmapped training
``chunk`` (``--chunk-steps`` env steps per seed, default 500 = 50 updates per call),
``jax.jit(..., donate_argnums=0)``, AOT compiled, started from the state after the 10k-step
random warm-up (the same transitions on every side, each buffer filled through its own
``add``, so the policies have run during the fill). All programs of one seed count are
interleaved in every round (order rotated); times are per vector step of all seeds, ratios the
median over rounds of the per-round ratio to the FIFO loop of the same replay kind.

Targets (issue 11): reservoir and lowest priority <= 1.15x FIFO, least recently sampled <= 1.3x.
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

import memjax as mj  # noqa: E402
from experiments._common import (  # noqa: E402
    LoopProgram,
    Side,
    as_carry_fn,
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
from experiments.bench_loop import buffer_copy_check, warm_states  # noqa: E402
from memjax import train as mj_train  # noqa: E402
from memjax.replay import eviction as ev  # noqa: E402

# many short rounds: on the shared 2-core CPU the load swings within seconds, and a ratio is
# taken within each round
FULL = dict(seeds=(1, 8), rounds=15, chunk_steps=500, round_seconds=0.3)
QUICK = dict(seeds=(1,), rounds=2, chunk_steps=200, round_seconds=0.05)

# side -> (replay kind, policy factory or None for FIFO, target ratio or None)
SIDES = {
    "fifo_uniform": ("uniform", None, None),
    "reservoir_uniform": ("uniform", ev.reservoir, 1.15),
    "lrs_uniform": ("uniform", ev.least_recently_sampled, 1.3),
    "max4_uniform": ("uniform", lambda: ev.max_times_sampled(4), None),
    "fifo_per": ("prioritized", None, None),
    "reservoir_per": ("prioritized", ev.reservoir, 1.15),
    "lowest_per": ("prioritized", ev.lowest_priority, 1.15),
    "lrs_per": ("prioritized", ev.least_recently_sampled, 1.3),
    "max4_per": ("prioritized", lambda: ev.max_times_sampled(4), None),
}
QUICK_SIDES = ("fifo_uniform", "reservoir_uniform", "fifo_per", "lowest_per")


def make_sides(cfg, names):
    """name -> (config, buffer or None for the config's own FIFO buffer, fill_from)."""
    sides = {}
    for name in names:
        kind, policy, _ = SIDES[name]
        c = dataclasses.replace(cfg, replay=kind)
        if policy is None:
            sides[name] = (c, None, None)
        elif kind == "uniform":
            sides[name] = (c, mj.replay.uniform(c.buffer_capacity, eviction=policy()), None)
        else:
            sides[name] = (
                c,
                mj.replay.prioritized(c.buffer_capacity, alpha=c.alpha, eviction=policy()),
                None,
            )
    return sides


def baseline_of(name: str) -> str:
    return "fifo_" + name.split("_", 1)[1]


def bench_seeds(S: int, cfg, names, opts) -> dict:
    sides = make_sides(cfg, names)
    keys = jax.random.split(jax.random.key(0), S)
    trainers = {n: mj_train.make_train(c, buffer=b) for n, (c, b, _) in sides.items()}
    states, _, _, warm_s = warm_states(sides, keys, log)
    vec_steps = cfg.chunk_iters * cfg.train_every
    programs, shapes = {}, {}
    for name, tr in trainers.items():
        state = states[name]
        metrics0 = jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(jax.vmap(tr.chunk), state)[1]
        )
        shapes[name] = jax.eval_shape(lambda x: x, state.buffer)
        programs[name] = LoopProgram(
            name, as_carry_fn(tr.chunk), Side(name, (state, metrics0)), ops_per_call=vec_steps
        )
    del states
    compile_s = {k: p.lower_s + p.compile_s for k, p in programs.items()}
    log(
        f"  [{S} seed{'s' if S > 1 else ''}] warm-up {warm_s:.1f} s; compiled {len(programs)} "
        f"programs in {sum(compile_s.values()):.1f} s; timing {opts['rounds']} rounds ..."
    )
    t = measure(programs, opts["rounds"], opts["round_seconds"])
    med = {k: statistics.median(v) for k, v in t.items()}
    progs = {}
    for k, p in programs.items():
        progs[k] = {
            "us_per_vector_step": time_stats(t[k]),
            "steps_per_s": round(S * cfg.num_envs / med[k], 1),
            "compile_total_s": round(compile_s[k], 3),
            "donation_ok": p.donation_ok,
            "buffer_copies": buffer_copy_check(p, shapes[k], cfg.buffer_capacity),
            "buffer_bytes_per_transition": trainers[k].buffer.memory(shapes[k]).bytes_per_item,
        }
    ratios = {
        k: paired_ratio(t[k], t[baseline_of(k)])
        for k in t
        if not k.startswith("fifo") and baseline_of(k) in t
    }
    return {
        "seeds": S,
        "programs": progs,
        "ratios_vs_fifo": ratios,
        "rounds_us": {k: [round(x * 1e6, 3) for x in v] for k, v in t.items()},
        "warm_up_s": round(warm_s, 2),
    }


def targets(results) -> dict:
    out = {}
    for S, r in results.items():
        for name, ratio in r["ratios_vs_fifo"].items():
            bound = SIDES[name][2]
            if bound is not None:
                out[f"[{S}] {name} <= {bound}x fifo"] = {"value": ratio, "met": ratio <= bound}
    return out


def format_table(results, cfg) -> str:
    lines = [
        f"fused DQN loop, {cfg.env}, {cfg.num_envs} envs, buffer {cfg.buffer_capacity}, "
        f"batch {cfg.batch_size}: us per vector step of all seeds (median round), "
        "x = median per-round ratio to FIFO",
        f"{'side':<20} {'seeds':>5} | {'us/step':>9} {'steps/s':>9} | {'vs fifo':>8} | "
        f"{'B/item':>7} | {'compile s':>9}",
    ]
    for S, r in results.items():
        for k, p in r["programs"].items():
            x = r["ratios_vs_fifo"].get(k)
            lines.append(
                f"{k:<20} {S:>5} | {p['us_per_vector_step']['median_us']:>9.1f} "
                f"{p['steps_per_s']:>9,.0f} | {(f'{x:.3f}x' if x else '-'):>8} | "
                f"{p['buffer_bytes_per_transition']:>7.1f} | {p['compile_total_s']:>9.1f}"
            )
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="bench_eviction.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 4 sides, short chunks")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default experiments/results/bench_eviction_<cpu|gpu>[_quick].json)",
    )
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
        "--sides", default=None, help="comma list of sides (default all): " + ", ".join(SIDES)
    )
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    opts = options(args, QUICK, FULL, ("seeds", "rounds", "chunk_steps", "round_seconds"))
    names = (
        tuple(x.strip() for x in args.sides.split(","))
        if args.sides
        else (QUICK_SIDES if args.quick else tuple(SIDES))
    )
    unknown = set(names) - set(SIDES)
    if unknown:
        parser.error(f"--sides: unknown {sorted(unknown)}; known: {', '.join(SIDES)}")
    names = tuple(dict.fromkeys(names + tuple(baseline_of(n) for n in names)))  # + baselines
    cfg = dataclasses.replace(mj_train.TrainConfig(), chunk_steps=int(opts["chunk_steps"]))
    out = args.out or results_path("bench_eviction", args.quick)
    info = machine_info()
    log(
        f"memjax eviction benchmark | jax {info['versions']['jax']} {info['jax_backend']} | "
        f"{info['cpu_count']} CPUs ({info['cpu_model']}) | {info['platform']}"
    )
    log(
        f"sides {', '.join(names)}; seeds {list(opts['seeds'])}; rounds {opts['rounds']}; "
        f"chunk {cfg.chunk_steps} env steps/seed ({cfg.chunk_iters} updates)"
    )
    t0 = time.perf_counter()
    results = {S: bench_seeds(S, cfg, names, opts) for S in opts["seeds"]}
    met = targets(results)
    log("")
    log(format_table(results, cfg))
    log("")
    log("targets (issue 11)")
    for name, v in met.items():
        log(f"  {name}: {'MET' if v['met'] else 'NOT MET'} ({v['value']:.3f}x)")
    for S, r in results.items():
        for k, p in r["programs"].items():
            if p["buffer_copies"]["whole_buffer_array_copies"]:
                log(f"  ! [{S}] {k}: copies a whole buffer array (O(capacity) per step)")
    doc = {
        "benchmark": "bench_eviction",
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "settings": {**opts, "sides": list(names), "config": dataclasses.asdict(cfg)},
        "targets": met,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "results": {str(S): r for S, r in results.items()},
    }
    write_json(doc, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
