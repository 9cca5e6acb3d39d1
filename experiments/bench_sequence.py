"""Sequence replay benchmark: memjax's ``sequence`` layout against flashbax 0.1.3's trajectory
buffers, side by side in ONE process.

    python experiments/bench_sequence.py [--quick] [--out PATH] [--only add,sample,per,memory]

What is measured (E = 16 environments, windows of L = 80 steps, batches of 64 windows):

  add     one row (one vector step of E steps) at a large capacity: memjax ``uniform`` with
          ``sequence(E, L)`` vs ``flashbax.make_trajectory_buffer`` (add of [E, 1, ...]) vs a
          bare ``dynamic_update_slice`` of the row into plain [E, T, ...] arrays.
  sample  uniform sample of 64 windows, fields obs (4,) or (10,10,4) float32, action int32,
          reward float32, first bool. memjax returns obs, next_obs, first, action, reward
          [64, L, ...]; flashbax stores the same per-step fields and samples L + 1 steps (its
          only way to get each step's next observation, and without the final observation of
          truncated episodes). The *floor* is a bare gather of the same windows (L + 1 rows of
          obs, L of the rest) from flashbax's own [E, T, ...] arrays.
  per     prioritized sample + update of 64 windows at ~2^20 steps, obs (4,): sample, TD-like
          errors from the sampled obs/next_obs, importance weights, R2D2 priorities
          (``mj.replay.sequence_priorities``), update. flashbax
          ``make_prioritised_trajectory_buffer`` with the same period and L + 1 steps, both of
          its set-priorities paths (device="cpu" scan; the bincount path).
  memory  bytes per step from ``jax.eval_shape`` (nothing allocated): flashbax's stored layout
          vs ours, and a Stoix-style store that keeps an LSTM state (2 x 128 float32) at every
          step vs ours storing it once per window start (``per_window``, period 40).

The protocol is experiments/bench_replay.py's (experiments/_common.py): every program is
``jax.jit(fn, donate_argnums=0)``, AOT compiled (compile time reported apart), every sampled
field reduced into the carry, sides interleaved over rounds in rotated order; ratios are
medians of per-round ratios. Only ratios mean anything on a shared machine.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

import memjax as mj  # noqa: E402
import memjax.codecs as mc  # noqa: E402
from experiments._common import (  # noqa: E402
    Side,
    banner,
    chunked_fill,
    consume,
    flashbax_modules,
    log,
    machine_info,
    results_path,
    run_modes,
    sampling_step,
    shape_str,
    write_json,
    zero,
)
from memjax.replay.memory import nbytes  # noqa: E402
from memjax.replay.ring import random_slots  # noqa: E402

E, L, BATCH = 16, 80, 64
ALPHA, BETA, ETA = 0.6, 0.4, 0.9
EPISODE_END = 0.02  # per step, in the fill data
CARRY = (2, 128)  # an LSTM state (h, c) of 128 units

FULL = dict(
    add=(((4,), 2**20), ((10, 10, 4), 2**17)),
    sample=(((4,), 2**18), ((10, 10, 4), 2**16)),
    per=((2**20, 1), (E * 40 * 1638, 40)),  # (capacity, period): rows divisible by period
    memory_capacity=2**20,
    rounds=7,
    modes=("call", "fused"),
    round_seconds=0.05,
    fused_ops=16,
)
QUICK = dict(
    add=(((4,), 2**14),),
    sample=(((4,), 2**14),),
    per=((E * 40 * 32, 40),),
    memory_capacity=2**20,
    rounds=3,
    modes=("call",),
    round_seconds=0.01,
    fused_ops=4,
)
TARGETS = {
    "sample_flashbax_over_ours_min": 1.0,
    "sample_ours_over_floor_max": 1.2,
    "per_flashbax_over_ours_min": 5.0,
    "state_bytes_ratio_min": 20.0,
}


# ----------------------------------------------------------------------------- data


def example(shape):
    """ONE step as the sequence layout takes it."""
    return {
        "obs": jnp.zeros(shape),
        "next_obs": jnp.zeros(shape),
        "first": jnp.bool_(False),
        "action": jnp.int32(0),
        "reward": jnp.float32(0),
    }


def fbx_example(shape):
    """ONE step as the flashbax trajectory buffers store it (no next_obs)."""
    return {k: v for k, v in example(shape).items() if k != "next_obs"}


def steps(key, n, shape):
    """n rows of E steps: episodes end with probability EPISODE_END per step (next_obs is
    then a final observation, and the next obs a fresh start). Fields [E, n, ...]."""
    k_obs, k_end, k_final, k_act = jax.random.split(key, 4)
    obs = jax.random.normal(k_obs, (E, n + 1, *shape))
    ended = jax.random.uniform(k_end, (E, n)) < EPISODE_END
    final = jax.random.normal(k_final, (E, n, *shape))
    mask = ended.reshape(ended.shape + (1,) * len(shape))
    return {
        "obs": obs[:, :n],
        "next_obs": jnp.where(mask, final, obs[:, 1:]),
        "first": jnp.concatenate([jnp.zeros((E, 1), bool), ended[:, :-1]], axis=1),
        "action": jax.random.randint(k_act, (E, n), 0, 4),
        "reward": ended.astype(jnp.float32),
    }


def ours_fill(buf, shape):
    """add_chunk(state, key, n) for chunked_fill: n rows through ``buf.add`` in a scan."""

    def add_chunk(state, key, n):
        rows = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), steps(key, n, shape))
        return jax.lax.scan(lambda s, row: (buf.add(s, row), None), state, rows)[0]

    return add_chunk


def fbx_fill(add, shape):
    def add_chunk(state, key, n):
        return add(state, {k: v for k, v in steps(key, n, shape).items() if k != "next_obs"})

    return add_chunk


def fbx_windows(exp) -> dict:
    """flashbax's L + 1 sampled steps as the L steps ours returns (obs, next_obs, ...)."""
    out = {k: v[:, :L] for k, v in exp.items()}
    out["next_obs"] = exp["obs"][:, 1:]
    return out


def floor_windows(experience, key) -> dict:
    """The floor: windows drawn uniformly from plain [E, T, ...] arrays, gathered bare."""
    T = experience["obs"].shape[1]
    w = random_slots(key, BATCH, E * (T - L))
    env, t = (w % E)[:, None], (w // E)[:, None] + jnp.arange(L + 1)
    out = {k: v[env, t[:, :L]] for k, v in experience.items() if k != "obs"}
    obs = experience["obs"][env, t]
    return dict(out, obs=obs[:, :L], next_obs=obs[:, 1:])


# -------------------------------------------------------------------------------- add


def add_inputs(data) -> dict:
    """What each side adds, from rows ``data`` [E, K, ...]: one row per call (``name``) and K
    rows stacked on a leading axis for a scan (``name_fused``)."""
    stored = {k: v for k, v in data.items() if k != "next_obs"}
    first_row = lambda tree: jax.tree.map(lambda x: x[:, 0], tree)  # noqa: E731
    stacked = lambda tree: jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), tree)  # noqa: E731
    as_fbx = {k: v[:, :, None] for k, v in stored.items()}  # [E, K, 1, ...]: time axis of 1
    return {
        "ours": (first_row(data),),
        "ours_fused": (stacked(data),),
        "flashbax": (first_row(as_fbx),),
        "flashbax_fused": (stacked(as_fbx),),
        "bare": (first_row(stored),),
        "bare_fused": (stacked(stored),),
    }


def uniform_buffers(cap):
    """(ours, flashbax's) uniform buffers of windows of L steps over E environments, capacity
    ``cap`` steps (flashbax samples L + 1 steps: the last one gives the L-th next_obs)."""
    fbx, _ = flashbax_modules()
    fbuf = fbx.make_trajectory_buffer(
        add_batch_size=E,
        sample_batch_size=BATCH,
        sample_sequence_length=L + 1,
        period=1,
        min_length_time_axis=L + 1,
        max_length_time_axis=cap // E,
    )
    return mj.replay.uniform(cap, layout=mj.replay.sequence(E, L)), fbuf


def bench_add(cfg, log) -> list:
    rows = []
    for shape, cap in cfg["add"]:
        T = cap // E
        buf, fbuf = uniform_buffers(cap)

        def bare_add(carry, row):
            arrays, pos = carry
            put = lambda a, v: jax.lax.dynamic_update_slice_in_dim(a, v[:, None], pos, axis=1)  # noqa: E731
            return {k: put(a, row[k]) for k, a in arrays.items()}, (pos + 1) % T

        sides = {
            "ours": Side("ours", buf.init(example(shape))),
            "flashbax": Side("flashbax", fbuf.init(fbx_example(shape))),
        }
        sides["bare"] = Side(
            "bare",
            (jax.tree.map(jnp.copy, sides["flashbax"].carry.experience), jnp.zeros((), jnp.int32)),
        )
        result = run_modes(
            cfg,
            {"ours": buf.add, "flashbax": fbuf.add, "bare": bare_add},
            sides,
            {"flashbax_over_ours": ("flashbax", "ours"), "ours_over_bare": ("ours", "bare")},
            add_inputs(steps(jax.random.key(0), cfg["fused_ops"], shape)),
            fused_ops=cfg["fused_ops"],
        )
        rows.append({"obs_shape": list(shape), "capacity": cap, **result})
        log(format_row("add", rows[-1]))
        del sides
    return rows


# ----------------------------------------------------------------------------- sample


def bench_sample(cfg, log) -> list:
    rows = []
    for shape, cap in cfg["sample"]:
        T = cap // E
        buf, fbuf = uniform_buffers(cap)
        chunk = max(1, min(T, (64 << 20) // (E * 4 * int(np.prod(shape)))))
        t0 = time.perf_counter()
        ostate = chunked_fill(
            ours_fill(buf, shape), buf.init(example(shape)), T, chunk, jax.random.key(1)
        )
        t1 = time.perf_counter()
        fstate = chunked_fill(
            fbx_fill(fbuf.add, shape), fbuf.init(fbx_example(shape)), T, chunk, jax.random.key(1)
        )
        setup = {
            "ours_fill_s": round(t1 - t0, 2),
            "flashbax_fill_s": round(time.perf_counter() - t1, 2),
        }

        draws = {
            "ours": lambda state, key: buf.sample(state, key, BATCH).items,
            "flashbax": lambda state, key: fbx_windows(fbuf.sample(state, key).experience),
            "floor": lambda state, key: floor_windows(state.experience, key),
        }
        sides = {
            "ours": Side("ours", (ostate, jax.random.key(10), zero())),
            "flashbax": Side("flashbax", (fstate, jax.random.key(11), zero())),
        }
        sides["floor"] = sides["flashbax"]  # the floor gathers from flashbax's own arrays
        del ostate, fstate
        result = run_modes(
            cfg,
            {k: sampling_step(d) for k, d in draws.items()},
            sides,
            {"flashbax_over_ours": ("flashbax", "ours"), "ours_over_floor": ("ours", "floor")},
            fused_ops=cfg["fused_ops"],
        )
        rows.append({"obs_shape": list(shape), "capacity": cap, "setup_s": setup, **result})
        log(format_row("sample", rows[-1]))
    return rows


# -------------------------------------------------------------------------------- PER


def randomise_ours(buf, state, key):
    """Every sampleable window gets a random priority in [0.05, 2) (setup: the tree is a
    pure function of its leaves, so it is rebuilt from them)."""
    leaves = mj.sumtree.leaves(state.tree)
    raw = jax.random.uniform(key, leaves.shape, minval=0.05, maxval=2.0)
    tree = mj.sumtree.build(jnp.where(leaves > 0, raw**ALPHA, 0.0))
    return state.replace(tree=tree, max_priority=jnp.max(raw))


def randomise_fbx(fbx_pt, state, key):
    """The same for flashbax (its invalid items keep priority 0), on its bincount path."""
    n = int(state.sum_tree_state.capacity)
    idx = jnp.arange(n)
    raw = jax.random.uniform(key, (n,), minval=0.05, maxval=2.0)
    valid = fbx_pt.sum_tree.get_batch(state.sum_tree_state, idx) > 0
    return fbx_pt.set_priorities(
        state, idx, jnp.where(valid, raw, 0.0), priority_exponent=ALPHA, device="gpu"
    )


def td_errors(obs, next_obs):
    """A TD-like error per step [B, L] from the sampled observations."""
    return jnp.abs(jnp.sum(next_obs, -1) - jnp.sum(obs, -1))


def bench_per(cfg, log) -> list:
    fbx, fbx_pt = flashbax_modules()
    rows = []
    shape = (4,)
    for cap, period in cfg["per"]:
        T = cap // E
        buf = mj.replay.prioritized(
            cap, alpha=ALPHA, layout=mj.replay.sequence(E, L, period=period)
        )
        fbuf = fbx.make_prioritised_trajectory_buffer(
            add_batch_size=E,
            sample_batch_size=BATCH,
            sample_sequence_length=L + 1,
            period=period,
            min_length_time_axis=L + 1,
            max_length_time_axis=T,
            priority_exponent=ALPHA,
            device="cpu",
        )
        fbx_add = functools.partial(
            fbx_pt.prioritised_add, sample_sequence_length=L + 1, period=period, device="gpu"
        )  # the bincount path (the scan path takes minutes here)
        chunk = min(T, 2**13)
        t0 = time.perf_counter()
        ostate = chunked_fill(
            ours_fill(buf, shape), buf.init(example(shape)), T, chunk, jax.random.key(2)
        )
        ostate = jax.jit(functools.partial(randomise_ours, buf), donate_argnums=0)(
            ostate, jax.random.key(3)
        )
        t1 = time.perf_counter()
        fstate = chunked_fill(
            fbx_fill(fbx_add, shape), fbuf.init(fbx_example(shape)), T, chunk, jax.random.key(2)
        )
        fstate = jax.jit(functools.partial(randomise_fbx, fbx_pt), donate_argnums=0)(
            fstate, jax.random.key(3)
        )
        setup = {
            "ours_fill_s": round(t1 - t0, 2),
            "flashbax_fill_s": round(time.perf_counter() - t1, 2),
        }
        n_fbx = int(fstate.sum_tree_state.capacity)

        def ours_step(carry, _=None):
            state, key, acc = carry
            key, sub = jax.random.split(key)
            s = buf.sample(state, sub, BATCH, beta=BETA)
            td = td_errors(s.items["obs"], s.items["next_obs"])
            loss = jnp.mean(s.weights[:, None] * td**2) + consume(s.items)
            return (
                buf.update(state, s.indices, mj.replay.sequence_priorities(td, eta=ETA)),
                key,
                acc + loss,
            )

        def make_fbx_step(set_fn):
            def fbx_step(carry, _=None):
                state, key, acc = carry
                key, sub = jax.random.split(key)
                s = fbuf.sample(state, sub)
                items = fbx_windows(s.experience)
                td = td_errors(items["obs"], items["next_obs"])
                w = (n_fbx * s.probabilities) ** -BETA
                loss = jnp.mean((w / jnp.max(w))[:, None] * td**2) + consume(items)
                priorities = mj.replay.sequence_priorities(td, eta=ETA)
                return set_fn(state, s.indices, priorities), key, acc + loss

            return fbx_step

        fbx_bincount = functools.partial(
            fbx_pt.set_priorities, priority_exponent=ALPHA, device="gpu"
        )
        sides = {
            "ours": Side("ours", (ostate, jax.random.key(20), zero())),
            "flashbax_cpu": Side("flashbax_cpu", (fstate, jax.random.key(21), zero())),
            "flashbax_bincount": Side(
                "flashbax_bincount", (jax.tree.map(jnp.copy, fstate), jax.random.key(22), zero())
            ),
        }
        del ostate, fstate
        result = run_modes(
            cfg,
            {
                "ours": ours_step,
                "flashbax_cpu": make_fbx_step(fbuf.set_priorities),
                "flashbax_bincount": make_fbx_step(fbx_bincount),
            },
            sides,
            {
                "flashbax_cpu_over_ours": ("flashbax_cpu", "ours"),
                "flashbax_bincount_over_ours": ("flashbax_bincount", "ours"),
                "flashbax_best_over_ours": (("flashbax_cpu", "flashbax_bincount"), "ours"),
            },
            fused_ops=cfg["fused_ops"],
        )
        rows.append(
            {
                "obs_shape": list(shape),
                "capacity": cap,
                "period": period,
                "flashbax_windows": n_fbx,
                "setup_s": setup,
                **result,
            }
        )
        log(format_row("per", rows[-1]))
    return rows


# ----------------------------------------------------------------------------- memory


def state_bytes(init, ex) -> int:
    return sum(nbytes(x) for x in jax.tree.leaves(jax.eval_shape(init, ex)))


def memory_variants(shape, cap, period) -> dict:
    """name -> (init, example): flashbax's trajectory buffer with and without an LSTM state at
    every step (Stoix's recurrent systems store it so), ours with it once per window start."""
    fbuf = uniform_buffers(cap)[1]
    with_carry = lambda ex: dict(ex, carry=jnp.zeros(CARRY))  # noqa: E731
    ours = lambda codecs=None, per_window=(): (
        mj.replay.uniform(  # noqa: E731
            cap,
            codecs=codecs,
            layout=mj.replay.sequence(E, L, period=period, per_window=per_window),
        ).init
    )
    return {
        "flashbax": (fbuf.init, fbx_example(shape)),
        "flashbax_lstm_every_step": (fbuf.init, with_carry(fbx_example(shape))),
        "ours": (ours(), example(shape)),
        "ours_lstm_per_window": (ours(per_window=("carry",)), with_carry(example(shape))),
        "ours_lstm_per_window_bf16": (
            ours({"carry": mc.cast(jnp.bfloat16)}, ("carry",)),
            with_carry(example(shape)),
        ),
    }


def bench_memory(cfg, log) -> list:
    """Bytes per step of whole states (from eval_shape), and of the LSTM state alone."""
    period = 40
    cap = cfg["memory_capacity"] - cfg["memory_capacity"] % (E * period)
    rows = []
    for shape in ((4,), (10, 10, 4)):
        per_step = {
            name: state_bytes(init, ex) / cap
            for name, (init, ex) in memory_variants(shape, cap, period).items()
        }
        lstm = {
            name: b - per_step[name.split("_lstm")[0]]
            for name, b in per_step.items()
            if "lstm" in name
        }
        every_step = lstm["flashbax_lstm_every_step"]
        rows.append(
            {
                "obs_shape": list(shape),
                "capacity": cap,
                "period": period,
                "bytes_per_step": {k: round(v, 3) for k, v in per_step.items()},
                "lstm_bytes_per_step": {k: round(v, 3) for k, v in lstm.items()},
                "lstm_ratio": round(every_step / lstm["ours_lstm_per_window"], 2),
                "lstm_ratio_bf16": round(every_step / lstm["ours_lstm_per_window_bf16"], 2),
                "ours_over_flashbax": round(per_step["ours"] / per_step["flashbax"], 3),
            }
        )
        log(format_row("memory", rows[-1]))
    return rows


# ----------------------------------------------------------------------------- output

COLUMNS = {
    "add": ("ours", "flashbax", "bare", ("flashbax_over_ours", "ours_over_bare")),
    "sample": ("ours", "flashbax", "floor", ("flashbax_over_ours", "ours_over_floor")),
    "per": (
        "ours",
        "flashbax_cpu",
        "flashbax_bincount",
        ("flashbax_cpu_over_ours", "flashbax_bincount_over_ours", "flashbax_best_over_ours"),
    ),
}


def format_head(section) -> str:
    if section == "memory":
        head = (
            "| obs | flashbax | ours | ours / flashbax | LSTM state: flashbax every step | "
            "ours per window | ratio | ours bf16 | ratio |"
        )
        return f"\n### bytes per step (eval_shape)\n\n{head}\n|" + "---|" * 9
    a, b, c, ratios = COLUMNS[section]
    head = f"| config | mode | {a} µs | {b} µs | {c} µs | " + " | ".join(ratios) + " | compile s |"
    return f"\n### {section}\n\n{head}\n|" + "---|" * (6 + len(ratios))


def format_row(section, row) -> str:
    if section == "memory":
        b, lstm = row["bytes_per_step"], row["lstm_bytes_per_step"]
        return (
            f"| {shape_str(row['obs_shape'])} | {b['flashbax']:.2f} | {b['ours']:.2f} | "
            f"{row['ours_over_flashbax']:.3f} | {lstm['flashbax_lstm_every_step']:.1f} | "
            f"{lstm['ours_lstm_per_window']:.1f} | {row['lstm_ratio']:.1f}x | "
            f"{lstm['ours_lstm_per_window_bf16']:.1f} | {row['lstm_ratio_bf16']:.1f}x |"
        )
    a, b, c, ratios = COLUMNS[section]
    config = f"{shape_str(row['obs_shape'])} cap {row['capacity']:,}"
    if section == "per":
        config += f" period {row['period']}"
    lines = []
    for mode, m in row["modes"].items():
        t = m["times"]
        comp = "/".join(f"{row['programs'][mode][s]['compile_s']:.1f}" for s in (a, b, c))
        times = " | ".join(f"{t[side]['median_us']:,.1f}" for side in (a, b, c))
        lines.append(
            f"| {config} | {mode} | {times} | "
            + " | ".join(f"{m[r]:.2f}" for r in ratios)
            + f" | {comp} |"
        )
    return "\n".join(lines)


def _target(met: bool, **values) -> dict:
    return {"met": bool(met), **values}


def sample_targets(rows, mode) -> dict:
    fbx = min(r["modes"][mode]["flashbax_over_ours"] for r in rows)
    floor = max(r["modes"][mode]["ours_over_floor"] for r in rows)
    return {
        "sample_no_slower_than_flashbax": _target(
            fbx >= TARGETS["sample_flashbax_over_ours_min"], worst_flashbax_over_ours=fbx
        ),
        "sample_within_1.2x_of_floor": _target(
            floor <= TARGETS["sample_ours_over_floor_max"], worst_ours_over_floor=floor
        ),
    }


def per_targets(rows, mode) -> dict:
    ratio = {f"period {r['period']}": r["modes"][mode]["flashbax_best_over_ours"] for r in rows}
    met = {
        k: _target(v >= TARGETS["per_flashbax_over_ours_min"], flashbax_best_over_ours=v)
        for k, v in ratio.items()
    }
    return {"per_5x_faster_than_flashbax_best": met}


def evaluate_targets(results) -> dict:
    """Each target, per timing mode (and for memory): met or not, with the worst ratio."""
    out = {}
    for mode in {
        m for name in ("sample", "per") for r in results.get(name, []) for m in r["modes"]
    }:
        out[mode] = {
            **(sample_targets(results["sample"], mode) if "sample" in results else {}),
            **(per_targets(results["per"], mode) if "per" in results else {}),
        }
    if "memory" in results:
        worst = min(r["lstm_ratio"] for r in results["memory"])
        out["memory"] = {
            "lstm_state_20x_smaller": _target(
                worst >= TARGETS["state_bytes_ratio_min"], worst_ratio=worst
            )
        }
    return out


def format_targets(targets) -> str:
    lines = ["\ntargets:"]
    for mode, t in sorted(targets.items()):
        for name, v in t.items():
            items = v.items() if "met" not in v else [("", v)]
            for sub, vv in items:
                ratio = {k: x for k, x in vv.items() if k != "met"}
                lines.append(
                    f"  [{mode}] {name} {sub}: {'MET' if vv['met'] else 'NOT MET'} {ratio}"
                )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def build_parser():
    p = argparse.ArgumentParser(prog="bench_sequence.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one small config per section (seconds)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default experiments/results/bench_sequence_<cpu|gpu>[_quick].json)",
    )
    p.add_argument(
        "--only", default="add,sample,per,memory", help="comma list of add,sample,per,memory"
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per config")
    p.add_argument("--modes", default=None, help="comma list of call,fused")
    return p


def parse(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not only or any(s not in SECTIONS for s in only):
        parser.error(f"--only: expected a comma list of {','.join(SECTIONS)}, got {args.only!r}")
    cfg = dict(QUICK if args.quick else FULL)
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be >= 1")
        cfg["rounds"] = args.rounds
    if args.modes is not None:
        cfg["modes"] = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        if not cfg["modes"] or any(m not in ("call", "fused") for m in cfg["modes"]):
            parser.error(f"--modes: expected a comma list of call,fused, got {args.modes!r}")
    return args, only, cfg


SECTIONS = {"add": bench_add, "sample": bench_sample, "per": bench_per, "memory": bench_memory}


def main(argv=None) -> int:
    args, only, cfg = parse(argv)
    flashbax_modules()  # fail early, in words, without the peer
    warnings.filterwarnings(
        "ignore", message="`sample_sequence_length` greater than", category=UserWarning
    )
    out = args.out or results_path("bench_sequence", args.quick)
    info = machine_info()
    log(
        f"{banner('sequence replay', info)}\nE={E}, L={L}, batch {BATCH} windows | "
        f"{'quick' if args.quick else 'full'}, {cfg['rounds']} "
        "rounds; medians in µs; only ratios compare"
    )
    t_start, results, load_before = time.perf_counter(), {}, os.getloadavg()
    for name in SECTIONS:
        if name in only:
            log(format_head(name))
            results[name] = SECTIONS[name](cfg, log)
    targets = evaluate_targets(results)
    log(format_targets(targets))
    doc = {
        "benchmark": "bench_sequence",
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "settings": {
            "num_envs": E,
            "length": L,
            "batch": BATCH,
            "alpha": ALPHA,
            "beta": BETA,
            "eta": ETA,
            "episode_end_per_step": EPISODE_END,
            "carry": list(CARRY),
            **{k: v for k, v in cfg.items() if k not in ("add", "sample", "per")},
        },
        "notes": [__doc__.split("What is measured")[1].strip()],
        "targets": targets,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        **results,
    }
    write_json(doc, out, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
