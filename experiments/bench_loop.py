"""Loop benchmark: memjax's fused DQN loop on memjax buffers vs the SAME loop on flashbax 0.1.3.

    python experiments/bench_loop.py [--quick] [--out PATH] [--seeds 1,8] [--rounds N]
                                     [--chunk-steps N] [--sides a,b,...] [--no-breakdown] ...
    python experiments/bench_loop.py --learn [--guard drop|none]   # does PER on flashbax learn?

What is measured (issue 3, item 5). One loop, ``memjax.train.make_train(config, buffer=...)``,
with the CartPole-v1 defaults of ``TrainConfig`` (10 envs, buffer 10k, batch 128, lr 2.5e-4
decaying, epsilon 1 -> 0.05 over 250k steps, learning starts 10k, one update per vector step,
target copy every 250 env steps), run with different buffers:

  ours_uniform / fbx_uniform     memjax ``uniform`` vs flashbax ``make_flat_buffer``
  ours_uniform_1copy             memjax ``uniform`` with the one-copy layout (each observation
                                 stored once; ``next_obs`` read from the next row)
  ours_per / fbx_per_cpu         memjax ``prioritized`` vs flashbax ``make_prioritised_flat_buffer``
                                 (device="cpu": lax.scan set, its best on CPU)
  fbx_per_bincount               flashbax's GPU/TPU set path (O(capacity) per set), on CPU
  floor_uniform / floor_per      the floor: a fake buffer whose ``add`` is a no-op and whose
                                 ``sample`` returns a fixed batch of 128 real transitions from
                                 its state (weights ones): environment + acting + learner alone
  gather_uniform / gather_per    the floor of any replay of stored transitions: ``add`` a no-op,
                                 ``sample`` one ``jax.random.randint`` draw of 128 rows and one
                                 gather of them from a store of 10k real transitions (weights
                                 ones): what a buffer cannot avoid paying, beyond the floor
  *_2^20                         the prioritized loop with a buffer of 2**20 (flashbax: 1,048,570)
  env / act / add_*              the time breakdown (below)

flashbax is wrapped in memjax's ReplayBuffer contract by experiments/flashbax_adapter.py; both
sides store the same transition pytree, so they run the same algorithm (see its docstring; its
PER adapter guards against flashbax's zero-probability draws by DROPPING them: weight 0,
priority kept at 0).

Protocol (bench_replay's, experiments/_common.py): the timed program is the vmapped training
``chunk`` (S seeds, ``chunk_steps`` env steps per seed, one update per vector step), ``jax.jit(...,
donate_argnums=0)``, AOT compiled (``lower`` and ``compile`` timed separately, never mixed into
run times), started from the state right after the 10k-step warm-up (the same transitions on
every side: the warm-up acts uniformly at random from the same keys). All programs of one seed
count are interleaved in each round (order rotated); times are per vector step of all seeds,
ratios the median over rounds of the ratio within a round. Only ratios mean anything on a
shared machine.

The timed chunk is shorter than ``TrainConfig.chunk_steps`` (``--chunk-steps``, default 1000
env steps = 100 updates per call) so that a shared machine can be sampled in more, shorter
rounds; the per-step cost does not depend on the scan length, and the compiled program is the
same up to the trip count (compile times are those of that program).

Time breakdown (per vector step, each a scan of the same length over pieces of the loop):
  env      ``trainer.env_step(random_actions=True)`` with the floor buffer (add is a no-op)
  act      ``trainer.env_step()``: + Q-network forward and epsilon-greedy
  add_X    ``trainer.env_step()`` with buffer X: + insertion
  floor    ``trainer.chunk`` with the floor buffer: + learner (loss, grads, Adam, targets)
  X        the full chunk with buffer X
  shares:  environment = env, acting = act - env, add = add_X - act, learner = floor - act,
           sample (+ priority update) = X - floor - (add_X - act); they sum to X.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

import memjax as mj  # noqa: E402
from experiments._common import (  # noqa: E402
    LoopProgram,
    Side,
    as_carry_fn,
    banner,
    flashbax_modules,
    hlo_copies,
    log,
    machine_info,
    measure,
    options,
    paired_ratio,
    positive_ints,
    results_path,
    time_stats,
    us,
    write_json,
)
from memjax import train as mj_train  # noqa: E402
from memjax.replay.base import ReplayBuffer, Sample  # noqa: E402
from memjax.replay.memory import FieldMemory, MemoryReport, nbytes  # noqa: E402

BIG = 2**20

FULL = dict(
    seeds=(1, 8),
    rounds=7,
    chunk_steps=1000,
    round_seconds=0.5,
    big_capacity=BIG,
    breakdown=True,
    bincount=True,
    big_bincount_max_seeds=0,
)
QUICK = dict(
    seeds=(1,),
    rounds=2,
    chunk_steps=500,
    round_seconds=0.05,
    big_capacity=0,
    breakdown=False,
    bincount=False,
    big_bincount_max_seeds=0,
)

BREAKDOWN_SIDES = (
    ("ours_uniform", "floor_uniform"),
    ("ours_uniform_1copy", "floor_uniform"),
    ("fbx_uniform", "floor_uniform"),
    ("ours_per", "floor_per"),
    ("fbx_per_cpu", "floor_per"),
)

TARGETS = {
    "loop_over_floor_max": 1.1,
    # issue 28: within 5% of the least a random-sampling replay pays (the gather floor)
    "loop_over_gather_floor_max": 1.05,
    "uniform_fbx_over_ours_min": 1.1,
    "per_fbx_over_ours_min": 1.2,
    "per_big_fbx_over_ours_min": 3.0,
}


# ----------------------------------------------------------------------------- floor buffer


@struct.dataclass
class FloorState:
    """items: pytree [batch_size, ...], the fixed batch every ``sample`` returns."""

    items: Any


def floor_buffer(batch_size: int) -> ReplayBuffer:
    """The floor: ``add`` and ``update`` are no-ops, ``sample`` returns the batch stored in the
    state (indices 0..batch-1, weights ones). A loop on it costs environment + learner alone."""

    def init(example):
        return FloorState(
            items=jax.tree.map(
                lambda x: jnp.zeros((batch_size, *jnp.shape(x)), jnp.asarray(x).dtype), example
            )
        )

    def add(state, items):
        return state

    def sample(state, key, batch_size_: int, beta=None) -> Sample:
        if batch_size_ != batch_size:
            raise ValueError(f"floor buffer holds a batch of {batch_size}, asked {batch_size_}")
        return Sample(
            items=state.items,
            indices=jnp.arange(batch_size, dtype=jnp.int32),
            weights=jnp.ones((batch_size,), jnp.float32),
            probabilities=jnp.full((batch_size,), 1.0 / batch_size, jnp.float32),
        )

    def update(state, indices, priorities):
        return state

    def can_sample(state, batch_size_: int):
        return jnp.asarray(batch_size_ <= batch_size)

    def memory(state):
        leaves = jax.tree_util.tree_leaves_with_path(state.items)
        copies = int(np.prod(state.items["reward"].shape[:-1]))  # seed axes, if vmapped
        fields = tuple(
            FieldMemory(
                jax.tree_util.keystr(p),
                tuple(x.shape[1:]),
                str(x.dtype),
                nbytes(x) // (batch_size * copies),
                nbytes(x),
            )
            for p, x in leaves
        )
        total = sum(f.total_bytes for f in fields)
        return MemoryReport(batch_size, copies, fields, 0, total)

    return ReplayBuffer(init, add, sample, update, can_sample, memory)


def gather_floor_buffer(capacity: int, batch_size: int) -> ReplayBuffer:
    """The floor of any replay that samples stored transitions: ``add`` and ``update`` are
    no-ops, ``sample`` draws ``batch_size`` rows uniformly (``jax.random.randint``) from the
    ``capacity`` transitions held in the state ([capacity, ...], filled once) and gathers them
    (weights ones). A loop on it costs environment + learner + one draw and one gather."""
    fixed = floor_buffer(capacity)  # the same state, memory report and no-op add/update

    def sample(state, key, batch_size_: int, beta=None) -> Sample:
        if batch_size_ != batch_size:
            raise ValueError(f"gather floor samples {batch_size}, asked {batch_size_}")
        rows = jax.random.randint(key, (batch_size,), 0, capacity, dtype=jnp.int32)
        return Sample(
            items=jax.tree.map(lambda x: x[rows], state.items),
            indices=rows,
            weights=jnp.ones((batch_size,), jnp.float32),
            probabilities=jnp.full((batch_size,), 1.0 / capacity, jnp.float32),
        )

    def can_sample(state, batch_size_: int):
        return jnp.asarray(True)

    return fixed._replace(sample=sample, can_sample=can_sample)


# ---------------------------------------------------------------------------- the contenders


def base_config(chunk_steps=None) -> mj_train.TrainConfig:
    # the CartPole-v1 defaults, transitions stored whole as flashbax stores them (plain)
    cfg = mj_train.TrainConfig(storage="plain")
    if chunk_steps is not None:
        cfg = dataclasses.replace(cfg, chunk_steps=int(chunk_steps))
    return cfg


def make_sides(cfg, big_capacity, bincount: bool, big_bincount: bool):
    """name -> (config, buffer or None for memjax's own, fill_from) for every full loop."""
    from experiments import flashbax_adapter as fa

    u = dataclasses.replace(cfg, replay="uniform")
    p = dataclasses.replace(cfg, replay="prioritized")
    cap, n, b, a = cfg.buffer_capacity, cfg.num_envs, cfg.batch_size, cfg.alpha
    sides = {
        "ours_uniform": (u, None, None),
        "ours_uniform_1copy": (dataclasses.replace(u, layout="one_copy"), None, None),
        "fbx_uniform": (u, fa.flat_uniform(cap, n, b), None),
        "floor_uniform": (u, floor_buffer(b), None),
        "gather_uniform": (u, gather_floor_buffer(cap, b), None),
        "ours_per": (p, None, None),
        "fbx_per_cpu": (p, fa.flat_prioritised(cap, n, b, a, set_path="cpu"), None),
    }
    if bincount:
        sides["fbx_per_bincount"] = (
            p,
            fa.flat_prioritised(cap, n, b, a, set_path="bincount"),
            "fbx_per_cpu",
        )
    sides["floor_per"] = (p, floor_buffer(b), None)
    sides["gather_per"] = (p, gather_floor_buffer(cap, b), None)
    if big_capacity:
        pb = dataclasses.replace(p, buffer_capacity=int(big_capacity))
        tag = big_tag(big_capacity)
        sides[f"ours_per_{tag}"] = (pb, None, None)
        sides[f"fbx_per_cpu_{tag}"] = (pb, fa.flat_prioritised(big_capacity, n, b, a), None)
        if big_bincount:
            sides[f"fbx_per_bincount_{tag}"] = (
                pb,
                fa.flat_prioritised(big_capacity, n, b, a, set_path="bincount"),
                f"fbx_per_cpu_{tag}",
            )
    return sides


def big_tag(capacity: int) -> str:
    return f"2^{capacity.bit_length() - 1}" if capacity & (capacity - 1) == 0 else str(capacity)


# ------------------------------------------------------------------------------ programs


def scan_env_steps(trainer, length: int, random_actions: bool):
    """``length`` vector steps of ``trainer.env_step`` (acting + inserting, no learning)."""

    def f(state):
        def body(s, _):
            s, (_, done, finished) = trainer.env_step(s, random_actions=random_actions)
            return s, (jnp.sum(finished), jnp.sum(done).astype(jnp.int32))

        state, (ret, eps) = jax.lax.scan(body, state, None, length=length)
        return state, {"return_sum": jnp.sum(ret), "episodes": jnp.sum(eps)}

    return f


def buffer_copy_check(prog, buffer_state, capacity: int) -> dict:
    """Copies (outside fusions) of a whole buffer array: the size of one of the buffer state's
    arrays that scale with ``capacity`` (items, sum-tree), or larger than all of them. Inside a
    loop such a copy is paid every vector step: O(capacity) work per step."""
    seeds = int(np.prod(jnp.shape(jax.tree.leaves(buffer_state)[0])[:1] or [1]))
    sizes = {
        x.size * x.dtype.itemsize
        for x in jax.tree.leaves(buffer_state)
        if x.size >= capacity * seeds // 2
    }  # flashbax rounds capacity down
    # every copy of at least 4 KiB outside fusions, largest first ("loop": while bodies,
    # conditions, calls)
    copies = sorted(hlo_copies(prog.exe.as_text(), min_bytes=4096), key=lambda c: -c.nbytes)
    whole = [c for c in copies if sizes and (c.nbytes in sizes or c.nbytes >= max(sizes))]
    return {
        "buffer_array_bytes": sorted(sizes),
        "whole_buffer_array_copies": [
            {"where": c.where, "bytes": c.nbytes, "shape": c.shape} for c in whole
        ],
        "largest_copies": [
            {"where": c.where, "bytes": c.nbytes, "shape": c.shape} for c in copies[:5]
        ],
    }


# -------------------------------------------------------------------------------- states


def warm_states(sides, trainers, keys, log):
    """Per side, the vmapped TrainState right after the warm-up (``learning_starts`` env steps
    of uniform-random actions). The environment part is computed once (same keys -> the same
    transitions on every side, exactly what ``trainer.collect`` produces); each buffer is then
    filled with those transitions through its own ``add``. Returns (states, seconds)."""
    t0 = time.perf_counter()
    any_cfg = next(iter(sides.values()))[0]
    floor_tr = mj_train.make_train(
        dataclasses.replace(any_cfg, replay="uniform"), buffer=floor_buffer(any_cfg.batch_size)
    )

    def env_part(key):
        st = floor_tr.init(key)

        def body(s, _):
            s, (trans, _, _) = floor_tr.env_step(s, random_actions=True)
            return s, trans

        return jax.lax.scan(body, st, None, length=any_cfg.warmup_vec_steps)

    base, trans = jax.jit(jax.vmap(env_part))(keys)
    example = mj_train.example_transition(floor_tr.env, floor_tr.env_params)
    uniform = mj.replay.uniform(any_cfg.buffer_capacity)

    def fill(buffer):
        def one(t):
            b = buffer.init(example)
            return jax.lax.scan(lambda b, x: (buffer.add(b, x), None), b, t)[0]

        return jax.jit(jax.vmap(one))(trans)

    filled = fill(uniform)

    def floor_batch(key, size):
        ks = jax.random.split(key, keys.shape[0])
        return jax.jit(jax.vmap(lambda b, k: FloorState(items=uniform.sample(b, k, size).items)))(
            filled, ks
        )

    states = {}
    floor_items = floor_batch(jax.random.key(123), any_cfg.batch_size)
    gather_items = None
    for name, (_, _, fill_from) in sides.items():
        if name.startswith("floor"):
            bstate = jax.tree.map(jnp.copy, floor_items)
        elif name.startswith("gather"):
            if gather_items is None:  # the warm-up's transitions, drawn into a plain store
                gather_items = floor_batch(jax.random.key(321), any_cfg.buffer_capacity)
            bstate = jax.tree.map(jnp.copy, gather_items)
        elif fill_from is not None and fill_from in states:
            bstate = jax.tree.map(jnp.copy, states[fill_from].buffer)
        else:
            buf = trainers[name].buffer  # the side's own buffer (its storage resolved)
            bstate = fill(buf)
        states[name] = jax.tree.map(jnp.copy, base).replace(buffer=bstate)
    jax.block_until_ready(states)
    return states, base, floor_items, time.perf_counter() - t0


# --------------------------------------------------------------------------------- bench


def bench_seeds(S: int, cfg_base, opts, log) -> dict:
    sides = make_sides(
        cfg_base, opts["big_capacity"], opts["bincount"], S <= opts["big_bincount_max_seeds"]
    )
    if opts.get("sides"):
        unknown = set(opts["sides"]) - set(sides)
        if unknown:
            raise ValueError(f"--sides: unknown {sorted(unknown)}; known: {sorted(sides)}")
        sides = {k: v for k, v in sides.items() if k in opts["sides"]}
    breakdown_sides = (
        [(a, b) for a, b in BREAKDOWN_SIDES if a in sides and b in sides]
        if opts["breakdown"]
        else []
    )
    keys = jax.random.split(jax.random.key(0), S)
    trainers = {name: mj_train.make_train(c, buffer=b) for name, (c, b, _) in sides.items()}
    states, base, floor_items, warm_s = warm_states(sides, trainers, keys, log)
    vec_steps = cfg_base.chunk_iters * cfg_base.train_every  # per chunk call, per seed

    def metrics0(f, state):
        out = jax.eval_shape(jax.vmap(f), state)[1]
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out)

    programs, buf_states, capacities = {}, {}, {}

    def add_program(name, f, state, buf_state, capacity=None):
        side = Side(name, (state, metrics0(f, state)))
        programs[name] = LoopProgram(name, as_carry_fn(f), side, ops_per_call=vec_steps)
        # shapes only (the arrays are donated): for the HLO copy check and memory report
        buf_states[name] = None if buf_state is None else jax.eval_shape(lambda x: x, buf_state)
        capacities[name] = capacity

    for name, tr in trainers.items():
        floor = name.startswith(("floor", "gather"))
        add_program(
            name,
            tr.chunk,
            states[name],
            None if floor else states[name].buffer,
            sides[name][0].buffer_capacity,
        )
    if breakdown_sides:
        floor_tr = mj_train.make_train(
            dataclasses.replace(cfg_base, replay="uniform"),
            buffer=floor_buffer(cfg_base.batch_size),
        )
        for name, random_actions in (("env", True), ("act", False)):
            st = jax.tree.map(jnp.copy, base).replace(buffer=jax.tree.map(jnp.copy, floor_items))
            add_program(name, scan_env_steps(floor_tr, vec_steps, random_actions), st, None)
        for side, _ in breakdown_sides:
            st = jax.tree.map(jnp.copy, states[side])
            add_program(
                f"add_{side}",
                scan_env_steps(trainers[side], vec_steps, False),
                st,
                st.buffer,
                sides[side][0].buffer_capacity,
            )
    del states
    compile_s = {k: p.lower_s + p.compile_s for k, p in programs.items()}
    log(
        f"  [{S} seed{'s' if S > 1 else ''}] warm-up {warm_s:.1f} s; compiled {len(programs)} "
        f"programs in {sum(compile_s.values()):.1f} s; timing {opts['rounds']} rounds ..."
    )

    t = measure(programs, opts["rounds"], opts["round_seconds"])
    med = {k: statistics.median(v) for k, v in t.items()}

    def ratio(a, b):
        return paired_ratio(t[a], t[b]) if a in t and b in t else None

    progs = {}
    for k, p in programs.items():
        info = p.info()
        info["hlo"] = {
            kk: info["hlo"][kk]
            for kk in ("kernels", "ops", "largest_copy_bytes_entry", "largest_copy_bytes_in_loops")
        }
        if buf_states[k] is not None:
            info["buffer_copies"] = buffer_copy_check(p, buf_states[k], capacities[k])
        info["us_per_vector_step"] = time_stats(t[k])
        info["steps_per_s"] = round(S * cfg_base.num_envs / med[k], 1)
        info["compile_total_s"] = round(compile_s[k], 3)
        info["buffer_bytes_per_transition"] = (
            trainers[k].buffer.memory(buf_states[k]).bytes_per_item
            if k in trainers and buf_states[k] is not None
            else None
        )
        progs[k] = info

    ratios = {key: ratio(num, den) for key, num, den in ratio_specs(opts["big_capacity"])}
    if "fbx_per_cpu" in t and "fbx_per_bincount" in t and "ours_per" in t:
        best = [min(x, y) for x, y in zip(t["fbx_per_cpu"], t["fbx_per_bincount"])]
        ratios["fbx_per_best_over_ours"] = paired_ratio(best, t["ours_per"])
    ratios = {k: v for k, v in ratios.items() if v is not None}

    breakdown = breakdown_from_rounds(t, breakdown_sides) if breakdown_sides else None
    return {
        "seeds": S,
        "rounds_us": {k: [us(x) for x in v] for k, v in t.items()},
        "programs": progs,
        "ratios": ratios,
        "breakdown": breakdown,
        "warm_up_s": round(warm_s, 2),
    }


def breakdown_from_rounds(t, sides) -> dict:
    """Per loop X: environment, acting, buffer add, learner, buffer sample(+update), from
    the variants' times (module docstring), computed within each round (all variants of a
    round ran back to back) and then the median over rounds, in us per vector step of all
    seeds and as a share of X."""
    parts = ("environment", "acting", "buffer_add", "learner", "buffer_sample_update")
    out = {}
    for side, floor in sides:
        per_round = []
        for i in range(len(t[side])):
            env, act, add = t["env"][i], t["act"][i], t[f"add_{side}"][i]
            fl, full = t[floor][i], t[side][i]
            per_round.append(
                {
                    "environment": env,
                    "acting": act - env,
                    "buffer_add": add - act,
                    "learner": fl - act,
                    "buffer_sample_update": full - fl - (add - act),
                    "total": full,
                }
            )
        out[side] = {
            "us_per_vector_step": {
                k: round(statistics.median(r[k] for r in per_round) * 1e6, 2)
                for k in parts + ("total",)
            },
            "share": {
                k: round(statistics.median(r[k] / r["total"] for r in per_round), 3) for k in parts
            },
        }
    return out


# -------------------------------------------------------------------------------- output


def ratio_specs(big_capacity):
    """(key, numerator, denominator): time ratios, so "fbx_X_over_ours" = ours' speed-up."""
    specs = [
        ("uniform_loop_over_floor", "ours_uniform", "floor_uniform"),
        ("per_loop_over_floor", "ours_per", "floor_per"),
        ("uniform_loop_over_gather_floor", "ours_uniform", "gather_uniform"),
        ("uniform_1copy_loop_over_gather_floor", "ours_uniform_1copy", "gather_uniform"),
        ("per_loop_over_gather_floor", "ours_per", "gather_per"),
        ("gather_uniform_over_floor", "gather_uniform", "floor_uniform"),
        ("gather_per_over_floor", "gather_per", "floor_per"),
        ("fbx_uniform_over_ours", "fbx_uniform", "ours_uniform"),
        ("fbx_per_cpu_over_ours", "fbx_per_cpu", "ours_per"),
        ("fbx_per_bincount_over_ours", "fbx_per_bincount", "ours_per"),
        ("fbx_uniform_loop_over_floor", "fbx_uniform", "floor_uniform"),
        ("fbx_per_cpu_loop_over_floor", "fbx_per_cpu", "floor_per"),
    ]
    if big_capacity:
        tag = big_tag(big_capacity)
        specs += [
            (f"fbx_per_cpu_over_ours_{tag}", f"fbx_per_cpu_{tag}", f"ours_per_{tag}"),
            (f"fbx_per_bincount_over_ours_{tag}", f"fbx_per_bincount_{tag}", f"ours_per_{tag}"),
            (f"per_loop_over_floor_{tag}", f"ours_per_{tag}", "floor_per"),
            (f"fbx_per_cpu_loop_over_floor_{tag}", f"fbx_per_cpu_{tag}", "floor_per"),
        ]
    return specs


def evaluate_targets(results, big_capacity) -> dict:
    """Issues 3 and 28's targets per seed count: {name: {"value", "met"}} (absent sides
    are skipped)."""
    tag = big_tag(big_capacity) if big_capacity else None
    specs = [
        (
            "uniform_loop_over_floor_le_1.1",
            "uniform_loop_over_floor",
            "le",
            TARGETS["loop_over_floor_max"],
        ),
        ("per_loop_over_floor_le_1.1", "per_loop_over_floor", "le", TARGETS["loop_over_floor_max"]),
        (
            "uniform_loop_over_gather_floor_le_1.05",
            "uniform_loop_over_gather_floor",
            "le",
            TARGETS["loop_over_gather_floor_max"],
        ),
        (
            "per_loop_over_gather_floor_le_1.05",
            "per_loop_over_gather_floor",
            "le",
            TARGETS["loop_over_gather_floor_max"],
        ),
        (
            "uniform_vs_flashbax_ge_1.1",
            "fbx_uniform_over_ours",
            "ge",
            TARGETS["uniform_fbx_over_ours_min"],
        ),
        (
            "per_vs_flashbax_cpu_ge_1.2",
            "fbx_per_cpu_over_ours",
            "ge",
            TARGETS["per_fbx_over_ours_min"],
        ),
        (
            "per_vs_flashbax_best_ge_1.2",
            "fbx_per_best_over_ours",
            "ge",
            TARGETS["per_fbx_over_ours_min"],
        ),
    ]
    pairs = [("ours_uniform", "fbx_uniform"), ("ours_per", "fbx_per_cpu")]
    if tag:
        specs.append(
            (
                f"per_{tag}_vs_flashbax_cpu_ge_3",
                f"fbx_per_cpu_over_ours_{tag}",
                "ge",
                TARGETS["per_big_fbx_over_ours_min"],
            )
        )
        pairs.append((f"ours_per_{tag}", f"fbx_per_cpu_{tag}"))
    out = {}
    for S, r in results.items():
        q, p = r["ratios"], r["programs"]
        t = {}
        for name, key, op, bound in specs:
            if key in q:
                v = q[key]
                t[name] = {"value": v, "met": bool(v <= bound if op == "le" else v >= bound)}
        for a, b in pairs:
            if a in p and b in p:
                ca, cb = p[a]["compile_total_s"], p[b]["compile_total_s"]
                t[f"compile_{a}_le_{b}"] = {"value": [ca, cb], "met": bool(ca <= cb)}
        out[str(S)] = t
    return out


def format_table(results, cfg, big_capacity) -> str:
    tag = big_tag(big_capacity) if big_capacity else None
    rows = [
        ("uniform, cap 10k", "ours_uniform", "fbx_uniform", "floor_uniform", "gather_uniform"),
        (
            "uniform 1-copy, 10k",
            "ours_uniform_1copy",
            "fbx_uniform",
            "floor_uniform",
            "gather_uniform",
        ),
        ("prioritized, cap 10k", "ours_per", "fbx_per_cpu", "floor_per", "gather_per"),
    ]
    if tag:
        rows.append(
            (f"prioritized, cap {tag}", f"ours_per_{tag}", f"fbx_per_cpu_{tag}", "floor_per", "-")
        )
    lines = [
        f"fused DQN loop, {cfg.env}, {cfg.num_envs} envs, batch {cfg.batch_size}: env steps/s "
        "summed over seeds (median round); x = median of per-round ratios; gather = the floor "
        "plus one uniform draw and one gather of the batch from 10k stored transitions",
        f"{'replay':<22} {'seeds':>5} | {'memjax':>8} {'flashbax':>8} {'floor':>8} | "
        f"{'vs fbx':>6} {'loop/floor':>10} {'loop/gather':>11} {'fbx/floor':>9} | "
        "compile s memjax/fbx",
    ]

    def cell(r, k, key="steps_per_s"):
        return f"{r['programs'][k][key]:>8,.0f}" if k in r["programs"] else f"{'-':>8}"

    def x(r, a, b, width):
        ok = a in r["_t"] and b in r["_t"]
        return (
            f"{paired_ratio(r['_t'][a], r['_t'][b]):>{width - 1}.2f}x" if ok else f"{'-':>{width}}"
        )

    def comp(r, k):
        return f"{r['programs'][k]['compile_total_s']:.1f}" if k in r["programs"] else "-"

    for S, r in results.items():
        for label, ours, fbx, floor, gather in rows:
            if ours not in r["programs"] and fbx not in r["programs"]:
                continue
            lines.append(
                f"{label:<22} {S:>5} | {cell(r, ours)} {cell(r, fbx)} {cell(r, floor)} | "
                f"{x(r, fbx, ours, 6)} {x(r, ours, floor, 10)} {x(r, ours, gather, 11)} "
                f"{x(r, fbx, floor, 9)} | {comp(r, ours)}/{comp(r, fbx)}"
            )
        for gather, floor in (("gather_uniform", "floor_uniform"), ("gather_per", "floor_per")):
            if gather in r["programs"]:
                lines.append(
                    f"{'  ' + gather:<22} {S:>5} | {'':>8} {'':>8} {cell(r, gather)} | "
                    f"{'':>6} {x(r, gather, floor, 10)} {'':>11} {'':>9} |"
                )
        for k in [k for k in r["programs"] if "bincount" in k]:
            base = k.replace("fbx_per_bincount", "ours_per")
            floor = "floor_per"
            where = "10k" if k == "fbx_per_bincount" else tag
            lines.append(
                f"{'  fbx bincount ' + where:<22} {S:>5} | {'':>8} {cell(r, k)} {'':>8} | "
                f"{x(r, k, base, 6)} {'':>10} {x(r, k, floor, 9)} | -/{comp(r, k)}"
            )
    return "\n".join(lines)


def format_breakdown(results) -> str:
    lines = [
        "where the time goes: us per vector step of all seeds (share of the full loop);",
        "  each part from variants timed in the same round, median over rounds",
    ]
    parts = ("environment", "acting", "buffer_add", "learner", "buffer_sample_update")
    lines.append(
        f"{'loop':<14} {'seeds':>5} | " + " ".join(f"{p:>15}" for p in parts) + f" | {'total':>8}"
    )
    for S, r in results.items():
        if not r["breakdown"]:
            continue
        for side, b in r["breakdown"].items():
            cells = " ".join(
                f"{b['us_per_vector_step'][p]:>7.1f} ({b['share'][p]:>4.0%})" for p in parts
            )
            lines.append(f"{side:<14} {S:>5} | {cells} | {b['us_per_vector_step']['total']:>8.1f}")
    return "\n".join(lines)


KERNEL_OPS = ("while", "conditional", "sort", "scatter", "gather", "custom-call")


def format_kernels(results) -> str:
    """Per full-loop side: what its compiled chunk runs at kernel level (static counts in the
    program text: a loop body counts once), and the kernels it adds to the floor's. On an
    accelerator each kernel is a launch and each ``while``/``conditional`` a host round trip
    for its predicate, so these counts bound what replay can cost there."""
    lines = [
        "kernels of each compiled chunk (static counts; the vector step's body once) and the "
        "kernels over its floor",
        f"{'side':<22} {'seeds':>5} | {'kernels':>7} {'+floor':>6} {'fusion':>6} "
        + " ".join(f"{op:>11}" for op in KERNEL_OPS),
    ]
    for S, r in results.items():
        for name, info in r["programs"].items():
            hlo = info.get("hlo") or {}
            if "kernels" not in hlo or name in ("env", "act") or name.startswith("add_"):
                continue
            floor = "floor_per" if "per" in name else "floor_uniform"
            base = r["programs"].get(floor, {}).get("hlo", {}).get("kernels")
            extra = f"{hlo['kernels'] - base:>+6}" if base is not None else f"{'-':>6}"
            ops = hlo.get("ops", {})
            lines.append(
                f"{name:<22} {S:>5} | {hlo['kernels']:>7} {extra} {ops.get('fusion', 0):>6} "
                + " ".join(f"{ops.get(op, 0):>11}" for op in KERNEL_OPS)
            )
    return "\n".join(lines)


def format_targets(targets) -> str:
    lines = ["targets (issues 3 and 28)"]
    for S, t in targets.items():
        for name, v in t.items():
            val = v["value"]
            val = f"{val[0]:.1f} s vs {val[1]:.1f} s" if isinstance(val, list) else f"{val:.3f}x"
            lines.append(
                f"  [{S} seed{'s' if S != '1' else ''}] {name}: "
                f"{'MET' if v['met'] else 'NOT MET'} ({val})"
            )
    return "\n".join(lines)


def copy_notes(results) -> list:
    out = []
    for S, r in results.items():
        for k, p in r["programs"].items():
            bc = p.get("buffer_copies")
            if bc and bc["whole_buffer_array_copies"]:
                big = bc["whole_buffer_array_copies"][0]
                out.append(
                    f"  ! [{S}] {k}: copies {big['shape']} ({big['bytes']:,} bytes, "
                    f"{big['where']}), a whole buffer array: O(capacity) work"
                )
            if p["donation_ok"] is False:
                out.append(f"  ! [{S}] {k}: donation failed")
    return out


# ------------------------------------------------------------------------ learning check


def learn_check(num_seeds: int, guard: str, capacity: int, log, seed: int = 0) -> dict:
    """Train prioritized DQN on flashbax (``flat_prioritised(set_path="cpu", guard=guard)``)
    with the CartPole defaults for the full ``total_steps``, ``num_seeds`` vmapped seeds, driven
    like ``memjax.train.run`` (AOT-compiled donated chunks, greedy evaluation after the last),
    and report final greedy returns, NaN losses, and how often the final buffers still draw
    zero-probability items."""
    from experiments import flashbax_adapter as fa

    cfg = dataclasses.replace(
        mj_train.TrainConfig(storage="plain"), replay="prioritized", buffer_capacity=capacity
    )
    buf = fa.flat_prioritised(
        cfg.buffer_capacity, cfg.num_envs, cfg.batch_size, cfg.alpha, set_path="cpu", guard=guard
    )
    tr = mj_train.make_train(cfg, buffer=buf)
    k_train, k_eval = jax.random.split(jax.random.key(seed))
    keys = jax.random.split(k_train, num_seeds)
    t0 = time.perf_counter()
    state = jax.jit(jax.vmap(tr.init))(keys)
    collect = jax.jit(jax.vmap(tr.collect), donate_argnums=0).lower(state).compile()
    chunk = jax.jit(jax.vmap(tr.chunk), donate_argnums=0).lower(state).compile()
    final = (
        jax.jit(jax.vmap(tr.final_chunk), donate_argnums=0).lower(state).compile()
        if tr.final_chunk is not None
        else None
    )
    evaluate = jax.jit(jax.vmap(tr.evaluate))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, _ = collect(state)
    losses, returns = [], []
    for i in range(cfg.num_chunks):
        state, m = chunk(state)
        m = jax.device_get(m)
        losses.append(np.asarray(m["loss"], np.float64))
        returns.append(np.asarray(m["episode_return"], np.float64))
        if (i + 1) % 10 == 0:
            log(
                f"    chunk {i + 1}/{cfg.num_chunks}: training return "
                f"{np.nanmean(returns[-1]):.1f}, NaN losses in {int(np.isnan(losses[-1]).sum())}"
                f"/{num_seeds} seeds"
            )
    if final is not None:
        state, m = final(state)
        m = jax.device_get(m)
        losses.append(np.asarray(m["loss"], np.float64))
    train_s = time.perf_counter() - t0
    ev = np.asarray(
        jax.device_get(evaluate(state.agent, jax.random.split(k_eval, num_seeds)).returns)
    )  # [S, E]
    # how often do the final buffers still draw probability-0 items? (2,000 batches per seed)
    draws = jax.jit(
        jax.vmap(
            lambda b, k: jax.vmap(lambda kk: buf.sample(b, kk, cfg.batch_size).probabilities)(
                jax.random.split(k, 2000)
            )
        )
    )(state.buffer, jax.random.split(jax.random.key(7), num_seeds))
    zero = np.asarray(draws) == 0
    losses = np.stack(losses)  # [chunks, S]
    per_seed = ev.mean(axis=1)
    return {
        "buffer": f"flashbax flat_prioritised(device='cpu'), guard={guard!r}",
        "seeds": num_seeds,
        "steps": cfg.steps_done,
        "capacity": capacity,
        "final_return_mean": float(per_seed.mean()),
        "final_return_per_seed": [round(float(x), 1) for x in per_seed],
        "chunks_with_nan_loss_per_seed": [int(x) for x in np.isnan(losses).sum(axis=0)],
        "first_nan_chunk_per_seed": [
            int(np.argmax(np.isnan(losses[:, j]))) if np.isnan(losses[:, j]).any() else None
            for j in range(num_seeds)
        ],
        "final_buffer_zero_probability_draw_fraction": float(zero.mean()),
        "final_buffer_batches_with_a_zero_probability_draw": float(zero.any(axis=-1).mean()),
        "compile_s": round(compile_s, 1),
        "train_s": round(train_s, 1),
    }


def build_parser():
    p = argparse.ArgumentParser(
        prog="bench_loop.py",
        description="memjax's fused DQN loop on memjax vs flashbax 0.1.3 buffers (and on a "
        "fixed-batch floor), CartPole-v1 defaults, side by side in one process.",
    )
    p.add_argument("--quick", action="store_true", help="1 seed, short chunks, well under a minute")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default experiments/results/bench_loop_<cpu|gpu>[_quick].json)",
    )
    p.add_argument(
        "--seeds", type=positive_ints, default=None, help="vmapped seed counts, e.g. 1,8"
    )
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    p.add_argument(
        "--chunk-steps",
        type=int,
        default=None,
        help="env steps per timed chunk per seed (default: TrainConfig's)",
    )
    p.add_argument(
        "--round-seconds", type=float, default=None, help="target seconds per program per round"
    )
    p.add_argument(
        "--big-capacity",
        type=int,
        default=None,
        help="capacity of the large PER loop (default 2^20; 0 leaves it out)",
    )
    p.add_argument("--no-breakdown", action="store_true", help="skip the env/act/add variants")
    p.add_argument(
        "--sides",
        default=None,
        help="comma list of the full loops to run (default all): ours_uniform, "
        "ours_uniform_1copy, fbx_uniform, floor_uniform, gather_uniform, ours_per, fbx_per_cpu, "
        "fbx_per_bincount, floor_per, gather_per, ours_per_2^20, fbx_per_cpu_2^20, "
        "fbx_per_bincount_2^20",
    )
    p.add_argument(
        "--no-bincount",
        action="store_true",
        help="skip flashbax's bincount set path at capacity 10k",
    )
    p.add_argument(
        "--big-bincount-max-seeds",
        type=int,
        default=None,
        help="also time flashbax's bincount path at the big capacity for seed counts "
        "up to this (O(capacity) per set: slow; default 0 = never)",
    )
    p.add_argument(
        "--learn",
        action="store_true",
        help="instead of timing: train prioritized DQN on flashbax (with its guard) "
        "for the full 5e5 steps at the largest --seeds count (default 8) and "
        "report final greedy returns (a few minutes)",
    )
    p.add_argument(
        "--guard",
        choices=("drop", "none"),
        default="drop",
        help="flashbax PER zero-probability guard for --learn (none: as published)",
    )
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    opts = options(
        args,
        QUICK,
        FULL,
        (
            "seeds",
            "rounds",
            "chunk_steps",
            "round_seconds",
            "big_capacity",
            "big_bincount_max_seeds",
        ),
    )
    if args.no_breakdown:
        opts["breakdown"] = False
    if args.no_bincount:
        opts["bincount"] = False
    opts["sides"] = (
        tuple(x.strip() for x in args.sides.split(",") if x.strip()) if args.sides else None
    )
    if opts["rounds"] < 1:
        parser.error("--rounds must be >= 1")
    if opts["big_capacity"] and opts["big_capacity"] < 10_000:
        parser.error("--big-capacity must be 0 or >= 10000 (the warm-up fills 10k)")
    flashbax_modules()  # fail early, in words, without the peer
    warnings.filterwarnings(
        "ignore", message="`sample_sequence_length` greater than", category=UserWarning
    )
    if args.learn:
        seeds = max(args.seeds) if args.seeds else 8
        out = args.out or results_path("bench_loop_learn")
        print(
            f"learning check: prioritized DQN on flashbax, guard={args.guard}, {seeds} seeds, "
            "CartPole-v1 defaults",
            flush=True,
        )
        res = learn_check(seeds, args.guard, mj_train.TrainConfig().buffer_capacity, print)
        print(json.dumps(res, indent=1))
        doc = {"benchmark": "bench_loop --learn", "machine": machine_info(), "learning": res}
        write_json(doc, out)
        return 0
    cfg = base_config(opts["chunk_steps"])
    out = args.out or results_path("bench_loop", args.quick)
    info = machine_info()
    log(banner("loop benchmark", info))
    log(
        f"mode: {'quick' if args.quick else 'full'}; seeds {list(opts['seeds'])}; rounds "
        f"{opts['rounds']}; chunk {cfg.chunk_steps} env steps/seed ({cfg.chunk_iters} updates)"
    )
    t_start = time.perf_counter()
    results = {}
    for S in opts["seeds"]:
        r = bench_seeds(S, cfg, opts, log)
        r["_t"] = {k: [x * 1e-6 for x in v] for k, v in r["rounds_us"].items()}
        results[S] = r
    targets = evaluate_targets(results, opts["big_capacity"])
    log("")
    log(format_table(results, cfg, opts["big_capacity"]))
    if opts["breakdown"]:
        log("")
        log(format_breakdown(results))
    for line in copy_notes(results):
        log(line)
    log("")
    log(format_kernels(results))
    log("")
    log(format_targets(targets))
    for r in results.values():
        del r["_t"]
    notes = [
        "One loop (memjax.train.make_train) with different buffers; flashbax wrapped by "
        "experiments/flashbax_adapter.py, storing the same transition pytree as memjax.",
        "flashbax PER guard: draws of probability 0 are DROPPED (importance weight 0, priority "
        "kept at 0); without it flashbax's float32 delta-propagated sum-tree yields NaN losses.",
        "Timed: jax.jit(vmap(chunk), donate_argnums=0), AOT compiled; compile_total_s = "
        "lower (trace) + XLA compile; us_per_vector_step = per vector step of all seeds; "
        "steps_per_s = env steps per second summed over seeds (median round).",
        "Programs of one seed count are interleaved in every round; ratios are medians of "
        "per-round ratios.",
        "All sides start from the state after the 10k-step random warm-up (same transitions).",
        "breakdown: each part computed within a round from the variants' times (env, act, "
        "add_X, floor, X), then the median over rounds; the us columns are medians of each "
        "part separately, so they need not add up exactly.",
        f"flashbax capacity is num_envs * (capacity // num_envs): {BIG} -> "
        f"{cfg.num_envs * (BIG // cfg.num_envs)}.",
    ]
    doc = {
        "benchmark": "bench_loop",
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
        | {
            "config": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(cfg).items()
            },
            "chunk_updates": cfg.chunk_iters,
        },
        "notes": notes,
        "targets": targets,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "results": {str(S): r for S, r in results.items()},
    }
    write_json(doc, out, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
