"""This checkout's training loop against the loop of another revision, in one process.

    python experiments/bench_agent_loop.py [--before REV] [--quick] [--seeds 1,8] [--rounds 7]
    python experiments/bench_agent_loop.py --learn [--before REV] [--seed-sets 0,1]

Contenders, each with the CartPole-v1 defaults of ``TrainConfig`` (uniform and prioritized):

  agent     ``memjax.train.make_train(config)`` of this checkout
  before    the same of git revision ``--before`` (default ``da0a727``, the last commit before
            agents became specs), imported beside it (``experiments/revision.py``)
  agent_n3  (information) this checkout's loop with 3-step targets (sequence replay of windows
            of 3)

Both loops start from their own ``init`` + warm-up with the same keys, which give the same
network, environments and buffer contents. Before timing, one chunk from those states checks
that the two loops compute the same thing (identical parameters after it, for a change that
only moves code).

``--learn`` trains both loops to the end (CartPole-v1 defaults, 8 seeds x 5e5 env steps, uniform
and prioritized, one 8-seed set per base key in ``--seed-sets``) and reports the final greedy
return of every seed (10 episodes each) and whether the two loops' returns are identical.

Timing follows experiments/bench_replay.py: the vmapped training chunk (``--chunk-steps`` env
steps per seed), ``jax.jit(..., donate_argnums=0)``, compiled ahead of time (compile reported
apart), programs of one seed count interleaved in each round with the order rotated; ratios are
medians of per-round ratios. Only ratios mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

from experiments._common import (  # noqa: E402
    LoopProgram,
    Side,
    as_carry_fn,
    ints,
    machine_info,
    measure,
    options,
    paired_ratio,
    positive_ints,
    results_path,
    time_stats,
    write_json,
)
from experiments.revision import config_for, import_revision  # noqa: E402
from memjax.train import TrainConfig, make_train  # noqa: E402

TARGET_TIME_RATIO_MAX = 1.03  # this loop's time per step / the revision's
BEFORE = "da0a727"  # the last commit before agents became specs

FULL = dict(seeds=(1, 8), rounds=7, chunk_steps=1000, round_seconds=0.5)
QUICK = dict(seeds=(1,), rounds=2, chunk_steps=200, round_seconds=0.05)


def warm_state(trainer, keys):
    """The vmapped state right after the random-action warm-up."""
    state = jax.jit(jax.vmap(trainer.init))(keys)
    return jax.jit(jax.vmap(trainer.collect))(state)[0]


def before_trainer(before, trainer):
    """The revision's ``make_train`` for the settings ``trainer`` runs with (its storage
    settings resolved: the revision knows no ``auto``)."""
    return before.train.make_train(config_for(before.train, trainer.config.settings()))


def same_computation(new_trainer, old_trainer, new_state, old_state) -> dict:
    """One chunk of each loop from the same start: largest parameter difference."""
    new_after = jax.jit(jax.vmap(new_trainer.chunk))(new_state)[0].agent.params
    old_after = jax.jit(jax.vmap(old_trainer.chunk))(old_state)[0].agent.params
    diffs = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree.leaves(new_after), jax.tree.leaves(old_after))
    ]
    return {"max_abs_param_diff": max(diffs), "identical": max(diffs) == 0.0}


def bench_replay_kind(replay: str, seeds: int, opts, log, before=None) -> dict:
    before = import_revision(BEFORE) if before is None else before
    # plain: transitions stored whole, as every revision stores them; lossless: the default
    # storage, resolved here and given to the revision as explicit settings
    cfg = TrainConfig(
        replay=replay, chunk_steps=opts["chunk_steps"], storage=opts.get("storage", "plain")
    )
    keys = jax.random.split(jax.random.key(0), seeds)
    agent = make_train(cfg)
    trainers = {"agent": agent, "before": before_trainer(before, agent)}
    if replay == "uniform":
        trainers["agent_n3"] = make_train(cfg.replace(n_step=3))
    states = {name: warm_state(tr, keys) for name, tr in trainers.items()}
    check = same_computation(
        trainers["agent"], trainers["before"], states["agent"], states["before"]
    )
    vec_steps = cfg.chunk_iters * cfg.train_every
    programs = {}
    for name, tr in trainers.items():
        carry = (states[name], jax.eval_shape(jax.vmap(tr.chunk), states[name])[1])
        carry = (carry[0], jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), carry[1]))
        programs[name] = LoopProgram(
            name, as_carry_fn(tr.chunk), Side(name, carry), ops_per_call=vec_steps
        )
    times = measure(programs, opts["rounds"], opts["round_seconds"])
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "replay": replay,
        "seeds": seeds,
        "storage": cfg.storage,
        "same_computation": check,
        "steps_per_s": {k: round(seeds * cfg.num_envs / v, 1) for k, v in med.items()},
        "us_per_vector_step": {k: time_stats(v) for k, v in times.items()},
        "compile_s": {k: round(p.lower_s + p.compile_s, 2) for k, p in programs.items()},
        "before": before.__name__.removeprefix("memjax_"),
        "time_ratio_agent_over_before": paired_ratio(times["agent"], times["before"]),
    }
    if "agent_n3" in times:
        row["time_ratio_n3_over_n1"] = paired_ratio(times["agent_n3"], times["agent"])
    log(format_row(row))
    return row


def format_row(row) -> str:
    sps = row["steps_per_s"]
    n3 = (
        f", 3-step {sps['agent_n3']:,.0f} ({row['time_ratio_n3_over_n1']:.3f}x time of 1-step)"
        if "agent_n3" in sps
        else ""
    )
    same = row["same_computation"]
    params = "identical" if same["identical"] else f"max diff {same['max_abs_param_diff']:.1e}"
    return (
        f"  {row['replay']:11} x{row['seeds']}: this loop {sps['agent']:,.0f} steps/s, "
        f"{row['before']} {sps['before']:,.0f}; time this/{row['before']} "
        f"{row['time_ratio_agent_over_before']:.3f}"
        f"{n3}; one chunk: params {params}"
    )


def markdown(rows) -> str:
    lines = [
        "| replay | seeds | this loop steps/s | before steps/s | time this / before | "
        "params after one chunk |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        same = r["same_computation"]
        lines.append(
            f"| {r['replay']} | {r['seeds']} | {r['steps_per_s']['agent']:,.0f} | "
            f"{r['steps_per_s']['before']:,.0f} | {r['time_ratio_agent_over_before']:.3f} | "
            + (
                "identical |"
                if same["identical"]
                else f"max diff {same['max_abs_param_diff']:.1e} |"
            )
        )
    return "\n".join(lines)


def learn_comparison(seed_sets, seeds: int, log, before) -> list:
    """Whole runs of both loops: one row per (replay, base key, loop) with per-seed returns."""
    rows = []
    for replay in ("uniform", "prioritized"):
        agent = make_train(TrainConfig(replay=replay, storage="plain"))
        loops = {"agent": agent, "before": before_trainer(before, agent)}
        for base in seed_sets:
            keys = jax.random.split(jax.random.key(base), seeds)
            for name, trainer in loops.items():
                t0 = time.perf_counter()
                _, metrics = jax.jit(jax.vmap(trainer))(keys)
                per_seed = np.asarray(metrics["eval_return"]).mean(axis=1)
                rows.append(
                    {
                        "replay": replay,
                        "base_key": base,
                        "loop": name,
                        "per_seed": [round(float(x), 1) for x in per_seed],
                        "mean": round(float(per_seed.mean()), 1),
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
                log(
                    f"  {replay:11} key {base} {name:6}: mean {rows[-1]['mean']:6.1f} "
                    f"per seed {rows[-1]['per_seed']} ({rows[-1]['seconds']:.0f} s)"
                )
    return rows


def learn_markdown(rows) -> str:
    lines = [
        "| replay | loop | seeds | final greedy return, mean | seeds at 500 | lowest seed |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for replay in ("uniform", "prioritized"):
        for loop in ("agent", "before"):
            per_seed = [
                x
                for r in rows
                if r["replay"] == replay and r["loop"] == loop
                for x in r["per_seed"]
            ]
            if per_seed:
                lines.append(
                    f"| {replay} | {loop} | {len(per_seed)} | {np.mean(per_seed):.1f} | "
                    f"{sum(x >= 500 for x in per_seed)} | {min(per_seed):.1f} |"
                )
    return "\n".join(lines)


def identical_returns(rows) -> dict:
    """replay -> whether both loops gave the same per-seed returns for every base key."""
    out = {}
    for replay in ("uniform", "prioritized"):
        runs = {(r["base_key"], r["loop"]): r["per_seed"] for r in rows if r["replay"] == replay}
        keys = {k for k, _ in runs}
        out[replay] = all(runs.get((k, "agent")) == runs.get((k, "before")) for k in keys)
    return out


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a few seconds: smoke test")
    p.add_argument("--seeds", type=positive_ints, default=None, help="seed counts, e.g. 1,8")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--chunk-steps", type=int, default=None)
    p.add_argument(
        "--before", default=BEFORE, help=f"the git revision to compare with (default {BEFORE})"
    )
    p.add_argument(
        "--storage",
        choices=("plain", "lossless"),
        default="plain",
        help="the loops' replay storage (default plain: what every revision stores; lossless: "
        "this checkout's default, resolved and given to the revision as explicit settings)",
    )
    p.add_argument(
        "--learn", action="store_true", help="train both loops to the end and compare the returns"
    )
    p.add_argument(
        "--seed-sets", type=ints, default=(0, 1), help="--learn: base keys, one set of 8 seeds each"
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON path (default experiments/results/bench_agent_loop_TAG.json)",
    )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    opts = options(args, QUICK, FULL, ("seeds", "rounds", "chunk_steps"))
    opts["storage"] = args.storage
    t0 = time.perf_counter()
    before = import_revision(args.before)
    if args.learn:
        rows = learn_comparison(args.seed_sets, 8, print, before)
        print(learn_markdown(rows))
        same = identical_returns(rows)
        print("identical per-seed returns: " + ", ".join(f"{k}: {v}" for k, v in same.items()))
        doc = {
            "benchmark": "bench_agent_loop --learn",
            "before": args.before,
            "rows": rows,
            "identical_returns": same,
            "machine": machine_info(),
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
        out = args.out or results_path("agent_loop_learn")
        write_json(doc, out)
        return 0
    rows = []
    for seeds in opts["seeds"]:
        for replay in ("uniform", "prioritized"):
            rows.append(bench_replay_kind(replay, seeds, opts, print, before))
    worst = max(r["time_ratio_agent_over_before"] for r in rows)
    verdict = "MET" if worst <= TARGET_TIME_RATIO_MAX else "NOT MET"
    print(markdown(rows))
    print(
        f"target: this loop's time <= {TARGET_TIME_RATIO_MAX}x {args.before}'s: {verdict} "
        f"(worst {worst:.3f})"
    )
    doc = {
        "benchmark": "bench_agent_loop",
        "options": opts,
        "rows": rows,
        "target": {
            "time_ratio_max": TARGET_TIME_RATIO_MAX,
            "worst": worst,
            "met": worst <= TARGET_TIME_RATIO_MAX,
        },
        "machine": machine_info(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    if not args.quick or args.out:
        out = args.out or results_path("bench_agent_loop")
        write_json(doc, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
