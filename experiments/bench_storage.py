"""What compressed replay storage costs the fused training loop: time per env step of the
whole loop (acting, inserting = encode, sampling = decode, learning) for each storage
variant, relative to float32 storage, side by side in one process.

    python experiments/bench_storage.py                       # CartPole-v1 and Breakout-MinAtar
    python experiments/bench_storage.py --envs CartPole-v1 --seeds 1,8 --rounds 7

Each variant is ``make_train(config)`` with the storage settings of
``experiments/run_storage.py`` (compressed variants: codec + uint8/int8 small fields +
one-copy layout; ``one_copy`` alone isolates the layout's cost). The state is warmed up
(``collect``), then AOT-compiled, donated training chunks of every variant are timed in
interleaved rounds; the ratio per variant is the median over rounds of its time / float32's
time in the same round. Target (issue 4): encode/decode add <= 15% (ratio <= 1.15).
Updates ``experiments/results/bench_storage_<backend>.json`` (entries per env and seed
count, each with the commit it ran at).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import jax  # noqa: E402

from experiments._common import (  # noqa: E402
    LoopProgram,
    Side,
    as_carry_fn,
    git_state,
    measure,
    paired_ratio,
    positive_ints,
    time_stats,
    us,
    write_json,
)
from experiments.run_storage import config_for  # noqa: E402

PER_ENV = {
    "CartPole-v1": ["float32", "one_copy", "int8", "int4", "kmeans16", "float16"],
    "Breakout-MinAtar": ["float32", "one_copy", "bitpack", "int8", "float16"],
}
CHUNK_STEPS = {"CartPole-v1": 2_000, "Breakout-MinAtar": 1_000}


def variant_config(env: str, variant: str):
    cfg = config_for(env, 1_000_000, variant)
    return dataclasses.replace(cfg, chunk_steps=CHUNK_STEPS[env])


def bench_env(env: str, seeds: int, rounds: int, round_seconds: float, log, variants=None) -> dict:
    from memjax.train import make_train

    keys = jax.random.split(jax.random.key(0), seeds)
    programs, info = {}, {}
    for variant in [v for v in PER_ENV[env] if variants is None or v in variants or v == "float32"]:
        cfg = variant_config(env, variant)
        trainer = make_train(cfg)
        state = jax.jit(jax.vmap(trainer.init))(keys)
        state, _ = jax.jit(jax.vmap(trainer.collect), donate_argnums=0)(state)
        carry = jax.jit(jax.vmap(trainer.chunk), donate_argnums=0)(state)
        prog = LoopProgram(variant, as_carry_fn(trainer.chunk), Side(variant, carry))
        programs[variant] = prog
        mem = trainer.buffer.memory(carry[0].buffer)
        info[variant] = {
            "bytes_per_transition": mem.bytes_per_item,
            "compile_s": prog.compile_s,
            "env_steps_per_call": cfg.chunk_iters * cfg.train_every * cfg.num_envs,
        }
        log(
            f"  {env} x{seeds} {variant}: compiled in {prog.compile_s:.1f} s, "
            f"{mem.bytes_per_item:,.1f} B/transition"
        )
    per_round = measure(programs, rounds, round_seconds)
    out = {}
    for variant, times in per_round.items():
        steps = info[variant]["env_steps_per_call"]
        out[variant] = {
            **info[variant],
            **time_stats(times),
            "us_per_env_step_median": us(sorted(times)[len(times) // 2] / steps),
            "ratio_to_float32": paired_ratio(times, per_round["float32"]),
        }
    return out


def format_table(results) -> str:
    lines = [
        "| env | seeds | storage | bytes / transition | µs per env step (median) | "
        "time vs float32 |",
        "|---|---|---|---|---|---|",
    ]
    for key, entry in results.items():
        env, seeds = key.rsplit(" x", 1)
        for variant, r in entry["variants"].items():
            lines.append(
                f"| {env} | {seeds} | {variant} | {r['bytes_per_transition']:,.1f} | "
                f"{r['us_per_env_step_median']:.2f} | {r['ratio_to_float32']:.3f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--envs", default="CartPole-v1,Breakout-MinAtar")
    p.add_argument("--seeds", type=positive_ints, default=(1, 8), help="seed counts, e.g. 1,8")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--round-seconds", type=float, default=1.0)
    p.add_argument("--variants", default=None, help="comma-separated subset (float32 always runs)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    unknown = [e for e in envs if e not in PER_ENV]
    if unknown:
        p.error(f"unknown envs {unknown}; known: {', '.join(PER_ENV)}")
    t0 = time.perf_counter()
    results = {}
    for env in envs:
        for s in args.seeds:
            results[f"{env} x{s}"] = bench_env(
                env,
                s,
                args.rounds,
                args.round_seconds,
                lambda m: print(m, flush=True),
                args.variants and args.variants.split(","),
            )
    out = (
        Path(args.out)
        if args.out
        else _ROOT / "experiments" / "results" / f"bench_storage_{jax.default_backend()}.json"
    )
    previous = json.loads(out.read_text())["results"] if out.exists() else {}
    stamp = {
        "rounds": args.rounds,
        "commit": git_state(short=True)["memjax_commit"],
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    results = {**previous, **{k: {"variants": v, **stamp} for k, v in results.items()}}
    table = format_table(results)
    print(table)
    write_json(
        {"results": results, "table": table, "device": str(jax.devices()[0].device_kind)},
        out,
        indent=2,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
