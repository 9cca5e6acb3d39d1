"""Where the time of a vmapped uniform sample goes: memjax vs flashbax 0.1.3 at several seed
counts, the sample alone (no learner), side by side in ONE process.

    python experiments/bench_vmapped_sample.py [--seeds 1,2,4,8,16,32] [--rounds 9] [--quick]

The loop benchmark (bench_loop.py) times the sample inside the whole DQN loop, where the
learner takes 70-85% of a step and a shared machine's noise is larger than the sample's
share. This one times ``OPS`` vmapped samples of 128 CartPole transitions from full buffers
of 10k (10 environments) in one ``lax.scan``, every sampled leaf reduced into the result so
that no gather is dropped. Programs, interleaved in every round (order rotated):

  ours_flat           memjax ``uniform`` (whole transitions: obs and next_obs stored)
  ours_one_copy       memjax ``uniform`` with ``one_copy(10)`` (obs stored once)
  fbx_same_items      flashbax ``make_flat_buffer`` storing the same transitions (bench_loop's
                      adapter: the first element of each sampled pair)
  fbx_native_pairs    flashbax storing single timesteps, sampling (t, t+1) pairs (PureJaxRL's
                      way; a different algorithm at episode ends, timed for reference)
  draw_only           memjax's draw of 128 slots alone (``ring.random_slots``)
  draw_randint        ``jax.random.randint`` alone (flashbax's kind of draw)
  draw_bits           the draw memjax used before: the same multiply-shift from
                      ``jax.random.bits(key, (2, 128))`` (partitionable threefry: one
                      evaluation per word, where ``draw_only`` makes one per draw)
  gather_only         memjax's gather of 128 slots (a fixed pattern moved by an offset read
                      from the key's bits: no random-bit generation)

Ratios are the median over rounds of (program time / fbx_same_items time) within a round;
only ratios mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

import memjax as mj  # noqa: E402
from experiments import flashbax_adapter  # noqa: E402
from experiments._common import (  # noqa: E402
    banner,
    consume,
    flashbax_modules,
    log,
    machine_info,
    positive_ints,
    results_path,
    write_json,
)
from memjax.replay import ring  # noqa: E402

NUM_ENVS, CAPACITY, BATCH = 10, 10_000, 128
TRANSITION = {
    "obs": jnp.zeros(4),
    "action": jnp.int32(0),
    "reward": jnp.float32(0),
    "next_obs": jnp.zeros(4),
    "terminated": jnp.float32(0),
}
TIMESTEP = {
    "obs": jnp.zeros(4),
    "action": jnp.int32(0),
    "reward": jnp.float32(0),
    "done": jnp.float32(0),
}


def transition_row(t):
    obs = jnp.full((NUM_ENVS, 4), float(t))
    return {
        "obs": obs,
        "action": jnp.zeros(NUM_ENVS, jnp.int32),
        "reward": jnp.ones(NUM_ENVS),
        "next_obs": obs + 1.0,
        "terminated": jnp.zeros(NUM_ENVS),
    }


def timestep_row(t):
    return {
        "obs": jnp.full((NUM_ENVS, 4), float(t)),
        "action": jnp.zeros(NUM_ENVS, jnp.int32),
        "reward": jnp.ones(NUM_ENVS),
        "done": jnp.zeros(NUM_ENVS),
    }


def filled(buffer, example, seeds: int, make_row):
    """``seeds`` vmapped states, each full (capacity // NUM_ENVS + 5 vector steps added)."""
    state = jax.vmap(lambda _: buffer.init(example))(jnp.arange(seeds))
    add = jax.jit(jax.vmap(buffer.add), donate_argnums=0)
    for t in range(CAPACITY // NUM_ENVS + 5):
        state = add(
            state, jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *x.shape)), make_row(t))
        )
    return jax.block_until_ready(state)


def shifted(slots, key, count):
    """``slots`` moved by an offset taken from the key's raw bits (no random-bit generation),
    so a gather of them cannot be hoisted out of the timed scan."""
    offset = (jax.random.key_data(key)[-1] % 1024).astype(jnp.int32)
    return (slots + offset) % jnp.maximum(count, 1)


def draw_from_bits(key, n: int, count):
    """memjax's draw before it took threefry's two words per evaluation: the multiply-shift
    of ``ring.random_slots`` on ``jax.random.bits(key, (2, n))``."""
    span = jnp.maximum(count, 1).astype(jnp.uint32)
    high, low = jax.random.bits(key, (2, n), jnp.uint32)
    top, bottom = ring._mul_wide(high, span)
    carry = (bottom + ring._mul_wide(low, span)[0]) < bottom
    return (top + carry.astype(jnp.uint32)).astype(jnp.int32)


def program(draw, seeds: int, ops: int):
    """``ops`` vmapped calls of ``draw(state, key)`` in one scan, every leaf consumed."""

    def run(state, key):
        def body(acc, k):
            per_seed = jax.vmap(lambda s, kk: consume(draw(s, kk)))(
                state, jax.random.split(k, seeds)
            )
            return acc + per_seed.sum(), None

        return jax.lax.scan(body, jnp.float32(0), jax.random.split(key, ops))[0]

    return jax.jit(run)


def bench(seeds: int, rounds: int, ops: int) -> dict:
    fbx, _ = flashbax_modules("bench_vmapped_sample")
    flat = mj.replay.uniform(CAPACITY)
    one_copy = mj.replay.uniform(CAPACITY, layout=mj.replay.one_copy(NUM_ENVS))
    same = flashbax_adapter.flat_uniform(CAPACITY, NUM_ENVS, BATCH)
    native = fbx.make_flat_buffer(
        max_length=CAPACITY,
        min_length=NUM_ENVS,
        sample_batch_size=BATCH,
        add_sequences=False,
        add_batch_size=NUM_ENVS,
    )
    states = {
        "flat": filled(flat, TRANSITION, seeds, transition_row),
        "one_copy": filled(one_copy, TRANSITION, seeds, transition_row),
        "same": filled(same, TRANSITION, seeds, transition_row),
        "native": filled(native, TIMESTEP, seeds, timestep_row),
    }
    fixed = jnp.arange(BATCH, dtype=jnp.int32) * 7
    cases = {
        "ours_flat": (lambda s, k: flat.sample(s, k, BATCH).items, "flat"),
        "ours_one_copy": (lambda s, k: one_copy.sample(s, k, BATCH).items, "one_copy"),
        "fbx_same_items": (lambda s, k: same.sample(s, k, BATCH).items, "same"),
        "fbx_native_pairs": (lambda s, k: native.sample(s, k).experience, "native"),
        "draw_only": (lambda s, k: ring.random_slots(k, BATCH, s.count), "flat"),
        "draw_randint": (lambda s, k: jax.random.randint(k, (BATCH,), 0, s.count), "flat"),
        "draw_bits": (lambda s, k: draw_from_bits(k, BATCH, s.count), "flat"),
        "gather_only": (lambda s, k: ring.gather(s, shifted(fixed, k, s.count)), "flat"),
    }
    compiled, compile_s = {}, {}
    for name, (draw, which) in cases.items():
        t0 = time.perf_counter()
        compiled[name] = (
            program(draw, seeds, ops).lower(states[which], jax.random.key(0)).compile(),
            which,
        )
        compile_s[name] = time.perf_counter() - t0
        jax.block_until_ready(compiled[name][0](states[which], jax.random.key(0)))
    times = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, which = compiled[name]
            t0 = time.perf_counter()
            jax.block_until_ready(fn(states[which], jax.random.key(r)))
            times[name].append((time.perf_counter() - t0) / ops)
    base = times["fbx_same_items"]
    return {
        name: {
            "median_us": round(statistics.median(t) * 1e6, 2),
            "over_fbx_same_items": round(statistics.median(a / b for a, b in zip(t, base)), 3),
            "compile_s": round(compile_s[name], 2),
        }
        for name, t in times.items()
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench_vmapped_sample.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seeds", type=positive_ints, default=(1, 2, 4, 8, 16, 32))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--ops", type=int, default=200, help="samples per timed call")
    parser.add_argument("--quick", action="store_true", help="1 and 2 seeds, 2 rounds, 10 ops")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.ops = (1, 2), 2, 10
    warnings.filterwarnings("ignore", message="`sample_sequence_length` greater than")
    info = machine_info()
    log(banner("vmapped uniform sample", info))
    results = {}
    for seeds in args.seeds:
        results[seeds] = bench(seeds, args.rounds, args.ops)
        log(
            f"--- {seeds} seeds: us per vmapped sample of {BATCH} (median of {args.rounds} "
            f"rounds); time / fbx_same_items (median of per-round ratios)"
        )
        for name, r in results[seeds].items():
            log(f"  {name:18s} {r['median_us']:9.1f} us  {r['over_fbx_same_items']:6.3f}")
        results[seeds]["load_average_1m"] = round(os.getloadavg()[0], 2)
        log(f"  (load average {results[seeds]['load_average_1m']})")
    out = args.out or results_path("bench_vmapped_sample", args.quick)
    write_json(
        {
            "benchmark": "bench_vmapped_sample",
            "machine": info,
            "rounds": args.rounds,
            "ops": args.ops,
            "batch": BATCH,
            "capacity": CAPACITY,
            "num_envs": NUM_ENVS,
            "results": results,
        },
        out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
