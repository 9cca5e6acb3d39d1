"""The README's own-loop DQN (docs/replay.md, "A whole DQN in your own vectorised loop":
PureJaxRL's style, ``jax.jit(jax.vmap(train))``) with memjax's uniform buffer and with
flashbax 0.1.3's, side by side in ONE process, at several vmapped seed counts.

    python experiments/bench_own_loop.py [--seeds 1,2,4,8,16,32] [--rounds 7] [--quick]

The loop is the docs' (CartPole-v1 from gymnax, 8 environments, batch 64, an MLP Q-network,
Adam, one update per vector step), with uniform replay (the learner's loss unweighted, no
priority update) and the buffer swapped:

  ours            ``mj.replay.uniform`` storing whole transitions
  ours_one_copy   ``mj.replay.uniform`` with ``one_copy(8)`` (each observation stored once)
  flashbax        ``make_flat_buffer`` storing the same transitions
                  (experiments/flashbax_adapter.py: the first element of each sampled pair)

Each side's state starts after the same 125 vector steps of random actions (the same keys:
the same transitions); the timed program is ``--chunk`` training steps (``jax.jit(jax.vmap)``
over seeds, donated, AOT compiled apart). Sides are interleaved in every round (order
rotated); the ratio is the median over rounds of (ours time / flashbax time) within a round,
with its per-round range. Only ratios mean anything on a shared machine.
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

import flax.linen as nn  # noqa: E402
import gymnax  # noqa: E402
import optax  # noqa: E402

import memjax as mj  # noqa: E402
from experiments import flashbax_adapter  # noqa: E402
from experiments._common import (  # noqa: E402
    banner,
    log,
    machine_info,
    positive_ints,
    results_path,
    write_json,
)

NUM_ENVS, BATCH, WARMUP, CAPACITY = 8, 64, 125, 8 * 2_500
env, env_params = gymnax.make("CartPole-v1")
q_net = nn.Sequential([nn.Dense(64), nn.relu, nn.Dense(64), nn.relu, nn.Dense(2)])
optimizer = optax.adam(1e-3)
vector_reset = jax.vmap(env.reset, in_axes=(0, None))
vector_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))


def buffers() -> dict:
    return {
        "ours": mj.replay.uniform(CAPACITY, sample_batch_size=BATCH),
        "ours_one_copy": mj.replay.uniform(
            CAPACITY, sample_batch_size=BATCH, layout=mj.replay.one_copy(NUM_ENVS)
        ),
        "flashbax": flashbax_adapter.flat_uniform(CAPACITY, NUM_ENVS, BATCH),
    }


def make_loop(buf):
    """(start(key) -> runner after the warm-up, chunk(runner, ts) -> runner): the docs' loop."""

    def env_step(runner, epsilon):
        params, target, opt_state, buf_state, env_state, obs, key = runner
        key, k_explore, k_random, k_env = jax.random.split(key, 4)
        greedy = q_net.apply(params, obs).argmax(-1)
        random = jax.random.randint(k_random, (NUM_ENVS,), 0, 2)
        action = jnp.where(jax.random.uniform(k_explore, (NUM_ENVS,)) < epsilon, random, greedy)
        next_obs, env_state, reward, terminated, _, info = vector_step(
            jax.random.split(k_env, NUM_ENVS), env_state, action, env_params
        )
        item = {
            "obs": obs,
            "action": action,
            "reward": reward,
            "next_obs": info["final_observation"],
            "terminated": terminated.astype(jnp.float32),
        }
        buf_state = buf.add(buf_state, item)
        return (params, target, opt_state, buf_state, env_state, next_obs, key), None

    def train_step(runner, t):
        runner, _ = env_step(runner, jnp.maximum(0.05, 1.0 - t / 1000.0))
        params, target, opt_state, buf_state, env_state, obs, key = runner
        key, k_learn = jax.random.split(key)
        batch = buf.sample(buf_state, k_learn, BATCH)

        def loss_fn(p):
            x = batch.items
            q = q_net.apply(p, x["obs"])[jnp.arange(BATCH), x["action"]]
            next_q = q_net.apply(target, x["next_obs"]).max(-1)
            td = x["reward"] + 0.99 * (1.0 - x["terminated"]) * next_q - q
            return jnp.mean(optax.huber_loss(td))

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
        target = optax.periodic_update(params, target, t, 100)
        return (params, target, opt_state, buf_state, env_state, obs, key), None

    def start(key):
        k_env, k_net, key = jax.random.split(key, 3)
        obs, env_state = vector_reset(jax.random.split(k_env, NUM_ENVS), env_params)
        params = q_net.init(k_net, obs[0])
        example = {
            "obs": obs[0],
            "action": jnp.int32(0),
            "reward": jnp.float32(0),
            "next_obs": obs[0],
            "terminated": jnp.float32(0),
        }
        runner = (params, params, optimizer.init(params), buf.init(example), env_state, obs, key)
        return jax.lax.scan(env_step, runner, jnp.ones(WARMUP))[0]

    def chunk(runner, ts):
        return jax.lax.scan(train_step, runner, ts)[0]

    return start, chunk


def bench(seeds: int, rounds: int, steps: int) -> dict:
    keys = jax.random.split(jax.random.key(0), seeds)
    ts = jnp.arange(steps, dtype=jnp.float32)
    runners, programs, compile_s = {}, {}, {}
    for name, buf in buffers().items():
        start, chunk = make_loop(buf)
        runners[name] = jax.block_until_ready(jax.jit(jax.vmap(start))(keys))
        t0 = time.perf_counter()
        fn = jax.jit(jax.vmap(chunk, in_axes=(0, None)), donate_argnums=0)
        programs[name] = fn.lower(runners[name], ts).compile()
        compile_s[name] = round(time.perf_counter() - t0, 2)
        runners[name] = jax.block_until_ready(programs[name](runners[name], ts))  # warm
    times = {name: [] for name in programs}
    names = list(programs)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            runners[name] = jax.block_until_ready(programs[name](runners[name], ts))
            times[name].append((time.perf_counter() - t0) / steps)
    base = times["flashbax"]
    out = {}
    for name, t in times.items():
        ratios = [a / b for a, b in zip(t, base)]
        out[name] = {
            "median_us_per_step": round(statistics.median(t) * 1e6, 1),
            "over_flashbax": round(statistics.median(ratios), 3),
            "over_flashbax_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "compile_s": compile_s[name],
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_own_loop.py", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=positive_ints, default=(1, 2, 4, 8, 16, 32))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=100, help="training steps per timed call")
    parser.add_argument("--quick", action="store_true", help="1 and 2 seeds, 2 rounds, 5 steps")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.chunk = (1, 2), 2, 5
    warnings.filterwarnings("ignore", message="`sample_sequence_length` greater than")
    info = machine_info()
    log(banner("the docs' own-loop DQN, uniform replay: memjax vs flashbax", info))
    results = {}
    for seeds in args.seeds:
        results[seeds] = bench(seeds, args.rounds, args.chunk)
        results[seeds]["load_average_1m"] = round(os.getloadavg()[0], 2)
        log(
            f"--- {seeds} seeds (load {results[seeds]['load_average_1m']}): us per training "
            f"step of all seeds (median of {args.rounds} rounds); time / flashbax's (median of "
            "per-round ratios, range)"
        )
        for name, r in results[seeds].items():
            if isinstance(r, dict):
                lo, hi = r["over_flashbax_range"]
                log(
                    f"  {name:14s} {r['median_us_per_step']:9.1f} us  {r['over_flashbax']:6.3f}"
                    f"  [{lo:.3f}, {hi:.3f}]"
                )
    out = args.out or results_path("bench_own_loop", args.quick)
    write_json(
        {
            "benchmark": "bench_own_loop",
            "machine": info,
            "rounds": args.rounds,
            "chunk_steps": args.chunk,
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
