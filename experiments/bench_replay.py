"""Replay benchmark: memjax against flashbax 0.1.3, side by side in ONE process.

    python experiments/bench_replay.py [--quick] [--out PATH] [--only add,sample,per]

What is measured (issue 2, item 5):

  add     uniform add of a batch of B items (B = 8, 32, 64) at capacities 1e4, 1e5,
          1e6, item shapes (4,) and (10,10,4) float32: memjax ``uniform`` vs flashbax
          ``make_flat_buffer`` vs a bare ``lax.dynamic_update_slice`` into an array
          [capacity, *item] with its position advanced mod capacity.
  sample  uniform sample of 256 transitions (observation and next observation).
          memjax stores transitions {obs, next_obs} (an item is 2x the observation);
          flashbax's flat buffer stores observations and returns (first, second)
          pairs. A bare gather of 256 random rows from two [capacity, *item] arrays
          is shown as a floor.
  per     prioritized sample + update of 256 at capacities 2**16, 2**20, 2**22,
          observation (4,): one step samples, computes TD-like errors and importance
          weights from the sampled items, and writes the new priorities back.
          flashbax ``make_prioritised_flat_buffer`` is run with both of its
          set-priorities implementations: device="cpu" (a lax.scan over the batch)
          and the bincount path used for "gpu"/"tpu" (O(capacity) per call).

Protocol (both sides identical):
  * Every timed program is ``jax.jit(fn, donate_argnums=0)`` over a carry that holds
    the buffer state, AOT compiled with ``.lower(...).compile()``; compile times are
    reported separately and never mixed into run times.
  * Every sampled field is reduced into a scalar that the program returns, so XLA
    cannot drop the gathers.
  * Two modes. ``call``: one op per dispatch (what a Python loop calling a jitted
    ``add`` pays, dispatch included). ``fused``: K ops inside one ``lax.scan`` in one
    dispatch (what the fused training loop pays); the figure is per op.
  * The sides are interleaved within each round (order rotated), several rounds;
    times are the per-round minimum and median, ratios the median over rounds of the
    ratio measured within the same round. Only ratios mean anything on a shared
    machine.
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
from experiments._common import (  # noqa: E402
    Side,
    banner,
    chunked_fill,
    flashbax_modules,
    ints,
    log,
    machine_info,
    results_path,
    run_modes,
    sampling_step,
    shape_str,
    shapes,
    write_json,
    zero,
)

SAMPLE_BATCH = 256
PER_BATCH = 256
ALPHA = 0.6
BETA = 0.4
FBX_ROWS = 8  # flashbax add_batch_size for the sample / PER buffers (rows of its [rows, T] layout)

FULL = dict(
    add_capacities=(10**4, 10**5, 10**6),
    add_batches=(8, 32, 64),
    shapes=((4,), (10, 10, 4)),
    sample_shapes=((4,), (10, 10, 4)),
    sample_capacities=(10**4, 10**5, 10**6),
    per_capacities=(2**16, 2**20, 2**22),
    rounds=7,
    modes=("call", "fused"),
    round_seconds=0.05,
    fused_add=64,
    fused_sample=16,
    fused_per=16,
)
QUICK = dict(
    add_capacities=(10**4, 10**5),
    add_batches=(8, 64),
    shapes=((4,), (10, 10, 4)),
    sample_shapes=((4,),),
    sample_capacities=(10**4,),
    per_capacities=(2**16,),
    rounds=3,
    modes=("call", "fused"),
    round_seconds=0.01,
    fused_add=16,
    fused_sample=4,
    fused_per=4,
)

TARGETS = {
    "add_ours_over_bare_max": 1.2,
    "add_flashbax_over_ours_min": 1.0,
    "sample_flashbax_over_ours_min": 1.3,
    "per_flashbax_over_ours_min": 10.0,
}


# ---------------------------------------------------------------------------- helpers


def fill_data(key, batch_shape, item_shape):
    """Cheap distinct float32 data [*batch_shape, *item_shape] for filling buffers:
    one random number per item plus a fixed pattern over the item (values do not
    affect the timings, and drawing 10^9 normals would dominate the run)."""
    per_item = jax.random.normal(key, (*batch_shape, *(1,) * len(item_shape)), jnp.float32)
    pattern = jnp.arange(int(np.prod(item_shape)), dtype=jnp.float32).reshape(item_shape)
    return per_item + 1e-3 * pattern


def fill_ours(buf, shape, total: int, chunk: int, key):
    """A memjax buffer holding ``total`` transitions {obs, next_obs} of ``shape``, added
    through its own ``add`` in chunks: (state, seconds)."""
    obs0 = jnp.zeros(shape, jnp.float32)

    def add_chunk(state, k, n):
        a, b = jax.random.split(k)
        return buf.add(
            state, {"obs": fill_data(a, (n,), shape), "next_obs": fill_data(b, (n,), shape)}
        )

    t0 = time.perf_counter()
    state = chunked_fill(add_chunk, buf.init({"obs": obs0, "next_obs": obs0}), total, chunk, key)
    return state, time.perf_counter() - t0


def fill_flashbax(add, state, shape, total: int, chunk: int, key):
    """A flashbax state given ``total`` observations of ``shape``, ``[FBX_ROWS, n]`` per
    ``add`` (``n`` up to ``chunk // FBX_ROWS``): (state, seconds)."""

    def add_chunk(state, k, n):
        return add(state, {"obs": fill_data(k, (FBX_ROWS, n), shape)})

    t0 = time.perf_counter()
    state = chunked_fill(add_chunk, state, total // FBX_ROWS, max(1, chunk // FBX_ROWS), key)
    return state, time.perf_counter() - t0


def make_row(shape, cap, batch, fcap, result, setup=None) -> dict:
    """One configuration's JSON row: settings, then run_modes' times and programs."""
    row = {
        "item_shape": list(shape),
        "capacity": cap,
        "batch": batch,
        "flashbax_capacity": fcap,
        **result,
    }
    if setup is not None:
        row["setup_s"] = {k: round(v, 3) for k, v in setup.items()}
    return row


# ------------------------------------------------------------------------------- add


def bench_add(cfg, log) -> list:
    fbx, _ = flashbax_modules()
    rows = []
    key = jax.random.key(0)
    for shape in cfg["shapes"]:
        for cap in cfg["add_capacities"]:
            example = {"obs": jnp.zeros(shape, jnp.float32)}
            ours_buf = mj.replay.uniform(cap)
            ours = Side("ours", ours_buf.init(example))
            bare = Side("bare", (jnp.zeros((cap, *shape), jnp.float32), jnp.zeros((), jnp.int32)))
            for batch in cfg["add_batches"]:
                key, k1, k2 = jax.random.split(key, 3)
                items = {"obs": jax.random.normal(k1, (batch, *shape), jnp.float32)}
                K = cfg["fused_add"]
                stack = {"obs": jax.random.normal(k2, (K, batch, *shape), jnp.float32)}

                fbuf = fbx.make_flat_buffer(
                    max_length=cap,
                    min_length=1,
                    sample_batch_size=SAMPLE_BATCH,
                    add_batch_size=batch,
                )
                fstate = fbuf.init({"obs": jnp.zeros(shape, jnp.float32)})
                fcap = int(np.prod(fstate.experience["obs"].shape[:2]))
                flash = Side("flashbax", fstate)

                def bare_add(carry, x, cap=cap, batch=batch):
                    arr, pos = carry
                    start = (pos,) + (0,) * (arr.ndim - 1)
                    return jax.lax.dynamic_update_slice(arr, x["obs"], start), (pos + batch) % cap

                steps = {"ours": ours_buf.add, "flashbax": fbuf.add, "bare": bare_add}
                sides = {"ours": ours, "flashbax": flash, "bare": bare}
                inputs = {
                    **{name: (items,) for name in steps},
                    **{f"{name}_fused": (stack,) for name in steps},
                }
                result = run_modes(
                    cfg,
                    steps,
                    sides,
                    {
                        "ours_over_bare": ("ours", "bare"),
                        "flashbax_over_ours": ("flashbax", "ours"),
                    },
                    inputs,
                    fused_ops=K,
                )
                rows.append(make_row(shape, cap, batch, fcap, result))
                log(format_row("add", rows[-1], cfg["modes"]))
                del flash, fstate, steps, sides
            del ours, bare
    return rows


# ---------------------------------------------------------------------------- sample


def bench_sample(cfg, log) -> list:
    fbx, _ = flashbax_modules()
    rows = []
    key = jax.random.key(1)
    for shape in cfg["sample_shapes"]:
        for cap in cfg["sample_capacities"]:
            ours_buf = mj.replay.uniform(cap)
            chunk = max(1, min(cap, (256 << 20) // (8 * int(np.prod(shape)))))
            key, kf1, kf2 = jax.random.split(key, 3)
            setup = {}
            ostate, setup["ours_fill_s"] = fill_ours(ours_buf, shape, cap, chunk, kf1)
            fbuf = fbx.make_flat_buffer(
                max_length=cap,
                min_length=SAMPLE_BATCH,
                sample_batch_size=SAMPLE_BATCH,
                add_sequences=True,
                add_batch_size=FBX_ROWS,
            )
            fstate, setup["flashbax_fill_s"] = fill_flashbax(
                fbuf.add, fbuf.init({"obs": jnp.zeros(shape, jnp.float32)}), shape, cap, chunk, kf2
            )
            fcap = FBX_ROWS * (cap // FBX_ROWS)

            def ours_draw(state, k, buf=ours_buf):
                return buf.sample(state, k, SAMPLE_BATCH).items  # {obs, next_obs}

            def fbx_draw(state, k, buf=fbuf):
                e = buf.sample(state, k).experience
                return e.first["obs"], e.second["obs"]

            def bare_draw(state, k, cap=cap):
                # The floor: 256 uniform rows gathered straight from memjax's own arrays
                # (same memory, none of the buffer's bookkeeping). Runs on ours' carry.
                i = jax.random.randint(k, (SAMPLE_BATCH,), 0, cap)
                return state.items["obs"][i], state.items["next_obs"][i]

            sides = {
                "ours": Side("ours", (ostate, jax.random.key(10), zero())),
                "flashbax": Side("flashbax", (fstate, jax.random.key(11), zero())),
            }
            sides["bare"] = sides["ours"]
            steps = {
                "ours": sampling_step(ours_draw),
                "flashbax": sampling_step(fbx_draw),
                "bare": sampling_step(bare_draw),
            }
            del ostate, fstate
            result = run_modes(
                cfg,
                steps,
                sides,
                {"flashbax_over_ours": ("flashbax", "ours"), "ours_over_bare": ("ours", "bare")},
                fused_ops=cfg["fused_sample"],
            )
            rows.append(make_row(shape, cap, SAMPLE_BATCH, fcap, result, setup))
            log(format_row("sample", rows[-1], cfg["modes"]))
            del sides
    return rows


# ------------------------------------------------------------------------------- PER


def bench_per(cfg, log) -> list:
    fbx, fbx_pt = flashbax_modules()
    rows = []
    key = jax.random.key(2)
    shape = (4,)
    obs0 = jnp.zeros(shape, jnp.float32)
    for cap in cfg["per_capacities"]:
        key, kf1, kf2, kp1, kp2, ks = jax.random.split(key, 6)
        chunk = min(cap, 2**18)

        # memjax: transitions {obs, next_obs}, filled through add in big chunks, then
        # every item given a random priority (ids from one stratified draw of capacity).
        ours_buf = mj.replay.prioritized(cap, alpha=ALPHA)
        setup = {}
        ostate, setup["ours_fill_s"] = fill_ours(ours_buf, shape, cap, chunk, kf1)

        @functools.partial(jax.jit, donate_argnums=0)
        def ours_randomise(state, k1, k2, buf=ours_buf, cap=cap):
            ids = buf.sample(state, k1, cap).indices
            return buf.update(state, ids, jax.random.uniform(k2, (cap,), minval=0.05, maxval=2.0))

        t_setup = time.perf_counter()
        ostate = jax.block_until_ready(ours_randomise(ostate, ks, kp1))
        setup["ours_priorities_s"] = time.perf_counter() - t_setup

        # flashbax: observations, pairs (t, t+1) along each of FBX_ROWS rows. Filled with
        # prioritised_add on the bincount path (the scan path would take minutes at 2**22),
        # then every item given a random priority with one bincount set.
        fbx_cpu = fbx.make_prioritised_flat_buffer(
            max_length=cap,
            min_length=PER_BATCH,
            sample_batch_size=PER_BATCH,
            add_sequences=True,
            add_batch_size=FBX_ROWS,
            priority_exponent=ALPHA,
            device="cpu",
        )
        fbx_add_bincount = functools.partial(
            fbx_pt.prioritised_add, sample_sequence_length=2, period=1, device="gpu"
        )
        # validate_device() turns "gpu" into "cpu" on a machine without a GPU, so the
        # bincount set function is reached by calling set_priorities with device="gpu"
        # directly (it indexes SET_BATCH_FN["gpu"] = sum_tree.set_batch_bincount).
        fbx_set_bincount = functools.partial(
            fbx_pt.set_priorities, priority_exponent=ALPHA, device="gpu"
        )
        fstate, setup["flashbax_fill_s"] = fill_flashbax(
            fbx_add_bincount, fbx_cpu.init({"obs": obs0}), shape, cap, chunk, kf2
        )
        fcap = int(fstate.sum_tree_state.capacity)

        @functools.partial(jax.jit, donate_argnums=0)
        def fbx_randomise(state, k, cap=fcap):
            idx = jnp.arange(cap)
            p = jax.random.uniform(k, (cap,), minval=0.05, maxval=2.0)
            # Items flashbax marks invalid (pairs across the write head) keep priority 0.
            valid = fbx_pt.sum_tree.get_batch(state.sum_tree_state, idx) > 0
            return fbx_set_bincount(state, idx, jnp.where(valid, p, 0.0))

        t_setup = time.perf_counter()
        fstate = jax.block_until_ready(fbx_randomise(fstate, kp2))
        setup["flashbax_priorities_s"] = time.perf_counter() - t_setup

        def ours_step(carry, _=None, buf=ours_buf):
            state, k, acc = carry
            k, sub = jax.random.split(k)
            s = buf.sample(state, sub, PER_BATCH, beta=BETA)
            td = jnp.sum(s.items["next_obs"], -1) - jnp.sum(s.items["obs"], -1)
            loss = jnp.mean(s.weights * td**2)
            state = buf.update(state, s.indices, jnp.abs(td) + 1e-3)
            return state, k, acc + loss

        # Parts of ours_step, to see where its time goes: the draw (sum-tree descent, weights
        # and the gather, consumed as the loss), and the update alone (ids of slots drawn
        # uniformly; every slot holds its first item, so each id is live).
        def ours_draw_step(carry, _=None, buf=ours_buf):
            state, k, acc = carry
            k, sub = jax.random.split(k)
            s = buf.sample(state, sub, PER_BATCH, beta=BETA)
            td = jnp.sum(s.items["next_obs"], -1) - jnp.sum(s.items["obs"], -1)
            return state, k, acc + jnp.mean(s.weights * td**2) + jnp.sum(s.indices)

        def ours_update_step(carry, _=None, buf=ours_buf, cap=cap):
            state, k, acc = carry
            k, sub, sub2 = jax.random.split(k, 3)
            ids = jax.random.randint(sub, (PER_BATCH,), 0, cap)
            priorities = jax.random.uniform(sub2, (PER_BATCH,), minval=0.05, maxval=2.0)
            return buf.update(state, ids, priorities), k, acc

        def make_fbx_step(set_fn, n_items=fcap):
            def fbx_step(carry, _=None):
                state, k, acc = carry
                k, sub = jax.random.split(k)
                s = fbx_cpu.sample(state, sub)
                td = jnp.sum(s.experience.second["obs"], -1) - jnp.sum(
                    s.experience.first["obs"], -1
                )
                w = (n_items * s.probabilities) ** -BETA
                loss = jnp.mean(w / jnp.max(w) * td**2)
                state = set_fn(state, s.indices, jnp.abs(td) + 1e-3)
                return state, k, acc + loss

            return fbx_step

        # The two flashbax variants share one state (same layout), each has its own carry.
        fstate_b = jax.tree.map(jnp.copy, fstate)
        sides = {
            "ours": Side("ours", (ostate, jax.random.key(20), zero())),
            "ours_draw": Side(
                "ours_draw", (jax.tree.map(jnp.copy, ostate), jax.random.key(23), zero())
            ),
            "ours_update": Side(
                "ours_update", (jax.tree.map(jnp.copy, ostate), jax.random.key(24), zero())
            ),
            "flashbax_cpu": Side("flashbax_cpu", (fstate, jax.random.key(21), zero())),
            "flashbax_bincount": Side("flashbax_bincount", (fstate_b, jax.random.key(22), zero())),
        }
        steps = {
            "ours": ours_step,
            "ours_draw": ours_draw_step,
            "ours_update": ours_update_step,
            "flashbax_cpu": make_fbx_step(fbx_cpu.set_priorities),
            "flashbax_bincount": make_fbx_step(fbx_set_bincount),
        }
        del ostate, fstate, fstate_b
        result = run_modes(
            cfg,
            steps,
            sides,
            {
                "flashbax_cpu_over_ours": ("flashbax_cpu", "ours"),
                "flashbax_bincount_over_ours": ("flashbax_bincount", "ours"),
                "flashbax_best_over_ours": (("flashbax_cpu", "flashbax_bincount"), "ours"),
                "ours_draw_over_ours": ("ours_draw", "ours"),
                "ours_update_over_ours": ("ours_update", "ours"),
            },
            fused_ops=cfg["fused_per"],
        )
        rows.append(make_row(shape, cap, PER_BATCH, fcap, result, setup))
        log(format_row("per", rows[-1], cfg["modes"]))
        del sides
    return rows


# ---------------------------------------------------------------------------- output


def _t(side, width=7, prec=2):
    def cell(r, mode):
        return f"{r['modes'][mode]['times'][side]['min_us']:{width}.{prec}f}"

    return cell


def _r(key, width=8, prec=2):
    def cell(r, mode):
        return f"{r['modes'][mode][key]:{width}.{prec}f}"

    return cell


def _label_add(r):
    star = "*" if r["flashbax_capacity"] != r["capacity"] else " "
    return f"{shape_str(r['item_shape']):>10} {r['capacity']:>7}{star} {r['batch']:>3}"


def _label_sample(r):
    return f"{shape_str(r['item_shape']):>10} {r['capacity']:>8}"


def _label_per(r):
    cap = r["capacity"]
    return f"{(f'2^{cap.bit_length() - 1}' if cap & (cap - 1) == 0 else str(cap)):>9}"


SECTIONS = {
    "add": dict(
        title=[
            "uniform add of B items: us per add (min over rounds), ratios = median of "
            "per-round ratios",
            "  call: one jitted donated call per add; fused: K adds in one lax.scan, per add",
        ],
        label=(f"{'item':>10} {'cap':>8} {'B':>3}", _label_add),
        cols=[
            ("ours", _t("ours")),
            ("fbx", _t("flashbax")),
            ("bare", _t("bare")),
            ("ours/bare", _r("ours_over_bare", 9)),
            ("fbx/ours", _r("flashbax_over_ours")),
        ],
        compile=("ours", "flashbax", "bare"),
    ),
    "sample": dict(
        title=[
            "uniform sample of 256 transitions (obs + next obs): us per sample (min over rounds)",
            "  memjax stores {obs, next_obs} per item (2x an observation); flashbax stores",
            f"  observations in [{FBX_ROWS}, capacity/{FBX_ROWS}] "
            "and returns (first, second) pairs;",
            "  bare = 256 random rows gathered straight from memjax's two arrays (the floor)",
        ],
        label=(f"{'item':>10} {'cap':>8}", _label_sample),
        cols=[
            ("ours", _t("ours")),
            ("fbx", _t("flashbax")),
            ("bare", _t("bare")),
            ("fbx/ours", _r("flashbax_over_ours")),
            ("ours/bare", _r("ours_over_bare", 9)),
        ],
        compile=("ours", "flashbax", "bare"),
    ),
    "per": dict(
        title=[
            "PER sample+update of 256 (sample, TD from the sampled items, weights, set "
            "priorities): us per step",
            "  fbx-cpu = flashbax device='cpu' (scan set); fbx-bc = flashbax bincount set "
            "(its gpu/tpu path,",
            "  reached via set_priorities(device='gpu')); ratios = flashbax / ours; draw, "
            "update = ours's parts alone",
        ],
        label=(f"{'cap':>9}", _label_per),
        cols=[
            ("ours", _t("ours", 8, 1)),
            ("fbx-cpu", _t("flashbax_cpu", 9, 1)),
            ("fbx-bc", _t("flashbax_bincount", 9, 1)),
            ("cpu/ours", _r("flashbax_cpu_over_ours", 8, 1)),
            ("bc/ours", _r("flashbax_bincount_over_ours", 8, 1)),
            ("draw", _t("ours_draw", 6, 1)),
            ("update", _t("ours_update", 6, 1)),
        ],
        compile=("ours", "flashbax_cpu", "flashbax_bincount"),
    ),
}


def format_head(section, modes) -> str:
    sec = SECTIONS[section]
    label_head = sec["label"][0]
    blocks, rules = [], []
    for mode in modes:
        block = " ".join(f"{name:>{max(len(name), 7)}}" for name, _ in sec["cols"])
        blocks.append(block)
        rules.append(f" {mode} ".center(len(block), "-"))
    comp = "compile s " + "/".join(sec["compile"])
    return "\n".join(
        sec["title"]
        + [
            f"{label_head} | " + " | ".join(blocks) + f" | {comp}",
            f"{'':>{len(label_head)}} | " + " | ".join(rules) + " |",
        ]
    )


def format_row(section, r, modes) -> str:
    sec = SECTIONS[section]
    blocks = []
    for mode in modes:
        cells = []
        for name, fn in sec["cols"]:
            cells.append(f"{fn(r, mode):>{max(len(name), 7)}}")
        blocks.append(" ".join(cells))
    comp = "/".join(f"{r['programs'][modes[0]][s]['compile_s']:.2f}" for s in sec["compile"])
    return f"{sec['label'][1](r)} | " + " | ".join(blocks) + f" | {comp}"


def copy_warnings(section, rows) -> list:
    """Programs whose compiled HLO copies a whole state array per call."""
    out = []
    for r in rows:
        for mode, progs in r["programs"].items():
            for side, p in progs.items():
                for where in p["full_state_copy"]:
                    nbytes = p["hlo"][f"largest_copy_bytes_{where}"]
                    per = (
                        "per op"
                        if (where == "in_loops" or mode == "call")
                        else f"once per call of {p['ops_per_call']} ops"
                    )
                    out.append(
                        f"  ! {section} cap={r['capacity']} {mode}/{side}: copies a whole state "
                        f"array ({nbytes} bytes, {where.replace('_', ' ')}) {per}: not in place"
                    )
    return out


def evaluate_targets(results) -> dict:
    """Each issue-2 target, per mode: met or not, and the worst ratio."""
    out = {}
    modes = [
        m
        for m in ("call", "fused")
        if any(m in r["modes"] for rows in results.values() for r in rows)
    ]
    for mode in modes:
        t = {}
        if "add" in results:
            rs = results["add"]
            worst_bare = max(r["modes"][mode]["ours_over_bare"] for r in rs)
            worst_fbx = min(r["modes"][mode]["flashbax_over_ours"] for r in rs)
            t["add_within_1.2x_of_bare"] = {
                "met": worst_bare <= TARGETS["add_ours_over_bare_max"],
                "worst_ours_over_bare": worst_bare,
            }
            t["add_no_slower_than_flashbax"] = {
                "met": worst_fbx >= TARGETS["add_flashbax_over_ours_min"],
                "worst_flashbax_over_ours": worst_fbx,
            }
        if "sample" in results:
            worst = min(r["modes"][mode]["flashbax_over_ours"] for r in results["sample"])
            t["sample_1.3x_faster_than_flashbax"] = {
                "met": worst >= TARGETS["sample_flashbax_over_ours_min"],
                "worst_flashbax_over_ours": worst,
            }
        if "per" in results:
            per = {}
            for r in results["per"]:
                ratio = r["modes"][mode]["flashbax_best_over_ours"]
                per[str(r["capacity"])] = {
                    "met": ratio >= TARGETS["per_flashbax_over_ours_min"],
                    "flashbax_best_over_ours": ratio,
                }
            t["per_10x_faster_than_flashbax_best"] = per
        out[mode] = t
    return out


def format_targets(targets) -> str:
    lines = ["targets (issue 2); 'flashbax best' = the faster of its two set paths, per round"]
    for mode, t in targets.items():
        for name, v in t.items():
            if name.startswith("per_"):
                for cap, vv in v.items():
                    lines.append(
                        f"  [{mode:5}] {name} @ {cap}: {'MET' if vv['met'] else 'NOT MET'} "
                        f"({vv['flashbax_best_over_ours']:.1f}x)"
                    )
            else:
                worst = {k: x for k, x in v.items() if k != "met"}
                ((wk, wv),) = worst.items()
                lines.append(
                    f"  [{mode:5}] {name}: {'MET' if v['met'] else 'NOT MET'} ({wk} = {wv:.2f})"
                )
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(
        prog="memjax bench" if Path(sys.argv[0]).name == "memjax" else "bench_replay.py",
        description="memjax vs flashbax 0.1.3 replay benchmark (uniform add, uniform sample, "
        "PER sample+update), side by side in one process.",
    )
    p.add_argument("--quick", action="store_true", help="reduced grid, well under a minute")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default experiments/results/bench_replay_<cpu|gpu-name>[_quick].json)",
    )
    p.add_argument("--only", default="add,sample,per", help="comma list of add,sample,per")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per config")
    p.add_argument("--add-capacities", type=ints, default=None, help="e.g. 1e4,1e5")
    p.add_argument("--add-batches", type=ints, default=None, help="e.g. 8,32,64")
    p.add_argument(
        "--shapes", type=shapes, default=None, help="item shapes for add and sample, e.g. 4,10x10x4"
    )
    p.add_argument(
        "--modes",
        default=None,
        help="comma list of call (one op per dispatch), fused (K ops per lax.scan)",
    )
    p.add_argument("--sample-capacities", type=ints, default=None)
    p.add_argument("--per-capacities", type=ints, default=None, help="e.g. 65536,1048576")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in ("add", "sample", "per")]
    if bad or not only:
        parser.error(f"--only: expected a comma list of add,sample,per, got {args.only!r}")
    cfg = dict(QUICK if args.quick else FULL)
    for name in (
        "rounds",
        "add_capacities",
        "add_batches",
        "shapes",
        "sample_capacities",
        "per_capacities",
    ):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    if args.shapes is not None:
        cfg["sample_shapes"] = args.shapes
    if args.modes is not None:
        cfg["modes"] = tuple(m.strip() for m in args.modes.split(",") if m.strip())
        if not cfg["modes"] or any(m not in ("call", "fused") for m in cfg["modes"]):
            parser.error(f"--modes: expected a comma list of call,fused, got {args.modes!r}")
    if cfg["rounds"] < 1:
        parser.error("--rounds must be >= 1")
    flashbax_modules()  # fail early, in words, without the peer
    warnings.filterwarnings(
        "ignore", message="`sample_sequence_length` greater than", category=UserWarning
    )

    out = args.out or results_path("bench_replay", args.quick)
    info = machine_info()
    log(banner("replay benchmark", info))
    log(
        f"mode: {'quick' if args.quick else 'full'}; rounds {cfg['rounds']}; "
        "times in microseconds; only ratios are comparable across runs\n"
    )
    results = {}
    load_start = [round(x, 2) for x in os.getloadavg()]  # 1, 5, 15 min: a shared machine
    t_start = time.perf_counter()
    benches = {"add": bench_add, "sample": bench_sample, "per": bench_per}
    for name in ("add", "sample", "per"):
        if name not in only:
            continue
        log(format_head(name, cfg["modes"]))
        results[name] = benches[name](cfg, log)
        for line in copy_warnings(name, results[name]):
            log(line)
        if name == "add" and any(r["flashbax_capacity"] != r["capacity"] for r in results[name]):
            log(
                "  * flashbax's flat buffer rounds capacity down to a multiple of B "
                "(flashbax_capacity in the JSON)"
            )
        log("")
    targets = evaluate_targets(results)
    log(format_targets(targets))
    notes = [
        "Every program is jax.jit(fn, donate_argnums=0) over a carry holding the buffer state, "
        "AOT compiled (lower().compile() timed separately), warmed up, then the sides are "
        "interleaved over rounds; ratios are medians of per-round ratios.",
        "call = one op per dispatch; fused = K ops in one lax.scan, time per op.",
        "Sampled leaves are summed into a scalar carried by the program, so the gathers run.",
        "sample: memjax stores {obs, next_obs} per item (2x an observation); flashbax stores "
        f"observations in a [{FBX_ROWS}, capacity/{FBX_ROWS}] layout and samples (t, t+1) pairs.",
        "per: flashbax 'bincount' = prioritised_trajectory_buffer.set_priorities with "
        "device='gpu' (SET_BATCH_FN['gpu'] = sum_tree.set_batch_bincount), called through "
        "functools.partial because validate_device() replaces 'gpu' by 'cpu' on a machine "
        "without a GPU; sampling is the same flashbax buffer's sample. flashbax is filled with "
        "its prioritised_add on the bincount path (the scan path is too slow for 2^22 items).",
        "per: both sides start with random priorities in [0.05, 2) on every item.",
    ]
    doc = {
        "benchmark": "bench_replay",
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "settings": {
            k: (list(map(list, v)) if k == "shapes" else list(v) if isinstance(v, tuple) else v)
            for k, v in cfg.items()
        }
        | {
            "sample_batch": SAMPLE_BATCH,
            "per_batch": PER_BATCH,
            "alpha": ALPHA,
            "beta": BETA,
            "flashbax_rows": FBX_ROWS,
        },
        "notes": notes,
        "targets": targets,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
        **results,
    }
    write_json(doc, out, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
