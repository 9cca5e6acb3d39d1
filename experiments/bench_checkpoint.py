"""What whole-state checkpoints cost: save and restore times, bytes on disk vs in memory, and
the training loop's slowdown with ``--checkpoint-every`` at its default ("auto": a tenth of
the run) against checkpoints off, in one process.

    python experiments/bench_checkpoint.py [--quick] [--rounds 2] [--steps 500000]
        [--processes 1,2,4] [--capacity 4e6] [--out PATH]

Save/restore (``memjax.train.checkpoints``, the code ``memjax train`` runs), per case:

  cartpole  CartPole-v1 defaults (buffer 10k, 8 seeds), the state after the 10k-step warm-up
  minatar   Breakout-MinAtar, buffer 1e5 per seed, 3 seeds, the state after a warm-up that
            fills the buffer (the README's MinAtar runs)

``save_blocking_s`` is what the loop waits for (copying the state to host memory, a CRC-32 per
leaf, handing it to orbax); ``save_commit_s`` is until the checkpoint is committed on disk (the
rest runs in orbax's background thread while training continues); ``restore_s`` reads,
checks and puts the state back on the device. Medians over ``--repeats``.

Loop slowdown at the default period against checkpoints off, CartPole-v1 defaults
(``--steps`` env steps per seed, default the default run's 5e5; 8 seeds), compiled once:

  lockstep    two runs advanced chunk by chunk in turns (order alternating), one saving at the
              default period and waiting for each commit (a synchronous save, the upper bound
              of the async one), the other without checkpoints; external load falls on both
              alike, so this ratio is the robust figure
  whole runs  ``memjax.train.run``'s own loop (``_run_schedule`` with its checkpoint callback,
              async saves), run whole, ``--rounds`` pairs in alternating order: wall and
              process CPU time (all threads), and the time the loop was blocked on saves; on a
              shared machine a pair takes minutes and the wall ratio is at the mercy of others

A shorter run (``--steps 1e5``) takes the same 10 checkpoints over less training, so its ratio
bounds the default run's from above. Only ratios mean anything on a shared machine.

Per process (``--processes 1,2,4``): a run's state (CartPole-v1, 4 seeds, ``--capacity``
transitions per seed, the buffer filled with random bytes: the worst case for zstd) sharded
over N local processes (gloo, one CPU device each), saved and restored by every process with
``memjax.train.checkpoints`` as ``memjax train`` does. Each process reports its share of the
state (the bytes of its own shards), save and restore times, and its peak RSS above what it
held before (``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``) during the
save, during the restore, and, side by side, during a gather of the whole state into every
process (what a multi-process save did before: ``process_allgather`` and a host copy). The
2-process checkpoint is also restored onto 1 and 4 processes (resharding).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

if __name__ == "__main__" and sys.argv[1:2] == ["--worker"] and int(sys.argv[3]) > 1:
    from memjax import distributed  # joins before anything starts jax's backend (gymnax does)

    distributed.initialize(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), connect_seconds=300)

from experiments._common import log, machine_info, results_path, write_json  # noqa: E402
from memjax.agents import DQNConfig  # noqa: E402
from memjax.train import (  # noqa: E402
    TrainConfig,
    checkpoints,
    devices,
    driver,
    make_train,
)

TARGET_SLOWDOWN_MAX = 1.05  # the issue's target at the default period, async saves

CASES = {
    "cartpole": (TrainConfig(), 8),
    "minatar": (
        TrainConfig(
            env="Breakout-MinAtar",
            buffer_capacity=100_000,
            learning_starts=100_000,
            total_steps=250_000,
            chunk_steps=10_000,
        ),
        3,
    ),
}
QUICK_CASES = {
    "cartpole": (
        TrainConfig(
            num_envs=4,
            total_steps=4_000,
            buffer_capacity=1_000,
            learning_starts=1_000,
            chunk_steps=1_000,
            agent=DQNConfig(hidden=(16,)),
        ),
        2,
    ),
}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tree_bytes(tree) -> int:
    return sum(
        x.size * x.dtype.itemsize
        for x in jax.tree.leaves(
            jax.tree.map(lambda a: jax.random.key_data(a) if checkpoints._is_key(a) else a, tree)
        )
    )


def _points(step: int, seeds: int):
    """One evaluation point of results, as the driver keeps them."""
    zeros = np.zeros(seeds, np.float32)
    return (
        {
            "steps": [step],
            "eval_return": [zeros],
            "eval_unfinished": [0],
            "train_return": [zeros.astype(np.float64)],
            "metrics": [{"episode_return": zeros, "episodes": zeros.astype(np.int32)}],
        },
        [[0] * seeds],
    )


def save_restore(name: str, cfg: TrainConfig, seeds: int, repeats: int, work: Path) -> dict:
    """Save/restore times and bytes for the state after ``cfg``'s warm-up."""
    trainer = make_train(cfg)
    keys = jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    state = jax.jit(jax.vmap(trainer.collect))(jax.jit(jax.vmap(trainer.init))(keys))[0]
    jax.block_until_ready(state)
    log(f"[{name}] warm-up state ready ({time.perf_counter() - t0:.1f} s with compile)")
    template = jax.eval_shape(jax.vmap(trainer.init), keys)
    record = checkpoints.RunRecord(cfg, seeds, 0, cfg.steps_done)
    step = cfg.warmup_vec_steps * cfg.num_envs
    points, sizes = _points(step, seeds)
    rows = {"save_blocking_s": [], "save_commit_s": [], "restore_s": [], "crc32_s": []}
    disk = None
    for r in range(repeats):
        out = work / f"{name}-{r}"
        snaps = checkpoints.Snapshots(out, record, template, jax.random.key_impl(keys))
        t0 = time.perf_counter()
        snaps.save(0, step, state, points, sizes, {})
        t1 = time.perf_counter()
        snaps.close()
        t2 = time.perf_counter()
        rows["save_blocking_s"].append(t1 - t0)
        rows["save_commit_s"].append(t2 - t0)
        disk = _dir_bytes(out / checkpoints.DIRNAME / str(step))
        reader = checkpoints.Snapshots(out, record, template, jax.random.key_impl(keys))
        t0 = time.perf_counter()
        found = reader.restore()
        jax.block_until_ready(found.state)
        rows["restore_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        saved = checkpoints.row_crc32s(checkpoints.stored_leaves(state))
        rows["crc32_s"].append(time.perf_counter() - t0)
        same = all(
            np.array_equal(a, b)
            for a, b in zip(
                jax.device_get(checkpoints.stored_leaves(found.state)),
                jax.device_get(checkpoints.stored_leaves(state)),
            )
        )
        assert same and saved == checkpoints.row_crc32s(checkpoints.stored_leaves(found.state)), (
            "restored state differs from the saved one"
        )
        shutil.rmtree(out)
    memory = _tree_bytes(state)
    row = {
        "env": cfg.env,
        "seeds": seeds,
        "buffer_capacity": cfg.buffer_capacity,
        "leaves": len(jax.tree.leaves(state)),
        "memory_bytes": int(memory),
        "disk_bytes": int(disk),
        "disk_over_memory": round(disk / memory, 3),
        **{k: round(statistics.median(v), 4) for k, v in rows.items()},
        "rounds": {k: [round(x, 4) for x in v] for k, v in rows.items()},
    }
    log(
        f"[{name}] state {memory / 2**20:,.1f} MiB in memory ({row['leaves']} leaves), "
        f"{disk / 2**20:,.1f} MiB on disk ({row['disk_over_memory']}x); save blocks the loop "
        f"{row['save_blocking_s']:.3f} s (CRC-32s {row['crc32_s']:.3f} s), committed "
        f"after {row['save_commit_s']:.3f} s; restore {row['restore_s']:.3f} s"
    )
    return row


def _loop(cfg: TrainConfig, seeds: int):
    trainer = make_train(cfg)
    k_train, k_eval = jax.random.split(jax.random.key(0))
    keys = jax.random.split(k_train, seeds)
    place = devices.layout(seeds, 1)
    t0 = time.perf_counter()
    compiled = driver._compile(trainer, place, k_train, k_eval)
    log(
        f"[loop] compiled in {time.perf_counter() - t0:.1f} s; {cfg.steps_done:,} env steps "
        f"per seed x {seeds} seeds, {len(compiled.schedule)} chunks incl. warm-up"
    )
    every = checkpoints.resolve_every("auto", cfg)
    template = jax.eval_shape(compiled.init)

    def fresh(out: Path):
        return checkpoints.Snapshots(
            out,
            checkpoints.RunRecord(cfg, seeds, 0, every),
            template,
            jax.random.key_impl(keys),
            place.sharded,
        )

    boundaries = np.cumsum([n for _, _, n in compiled.schedule]).tolist()
    save_at = checkpoints.save_indices(boundaries, every)
    return compiled, place, every, fresh, save_at


def lockstep_slowdown(cfg: TrainConfig, seeds: int, work: Path, loop) -> dict:
    """Two runs advanced chunk by chunk in turns (the order alternating), one saving at the
    default period and WAITING for each commit (a synchronous save: the async save's upper
    bound), one without checkpoints. Load from other processes falls on both alike."""
    compiled, _, every, fresh, save_at = loop
    snaps = fresh(work / "lockstep")
    states = {"off": compiled.init(), "auto": compiled.init()}
    points = {
        m: {
            "steps": [],
            "eval_return": [],
            "eval_unfinished": [],
            "train_return": [],
            "metrics": [],
        }
        for m in states
    }
    sizes = {m: [] for m in states}
    spent = {m: 0.0 for m in states}
    saving, done = 0.0, 0
    for i, (_, fn, n_steps) in enumerate(compiled.schedule):
        done += n_steps
        for mode in ("off", "auto") if i % 2 else ("auto", "off"):
            t0 = time.perf_counter()
            state, metrics, count = fn(states[mode])
            jax.block_until_ready(metrics)
            episodes = jax.device_get(compiled.evaluate(state.agent, np.int32(i)))
            metrics = jax.device_get(metrics)
            pts = points[mode]
            pts["steps"].append(done)
            pts["eval_return"].append(np.asarray(episodes.returns).mean(axis=1))
            pts["eval_unfinished"].append(int(np.sum(~np.asarray(episodes.finished))))
            pts["train_return"].append(np.asarray(metrics["episode_return"], np.float64))
            pts["metrics"].append(metrics)
            sizes[mode].append(np.asarray(jax.device_get(count)).tolist())
            if mode == "auto" and i in save_at:
                t1 = time.perf_counter()
                snaps.save(i, done, state, pts, sizes[mode], {})
                snaps.wait()
                saving += time.perf_counter() - t1
            spent[mode] += time.perf_counter() - t0
            states[mode] = state
    snaps.close()
    ratio = spent["auto"] / spent["off"]
    row = {
        "checkpoint_every": every,
        "checkpoints_per_run": len(save_at),
        "off_s": round(spent["off"], 3),
        "auto_sync_s": round(spent["auto"], 3),
        "saving_s": round(saving, 3),
        "ratio_sync_auto_over_off": round(ratio, 4),
        "saving_over_off": round(saving / spent["off"], 4),
    }
    log(
        f"[lockstep] synchronous saves at the default period: {spent['auto']:.2f} s vs off "
        f"{spent['off']:.2f} s = {ratio:.4f}; the {len(save_at)} saves took {saving:.2f} s "
        f"({100 * saving / spent['off']:.2f}% of the run)"
    )
    return row


def whole_run_slowdown(cfg: TrainConfig, seeds: int, rounds: int, work: Path, loop) -> dict:
    """The driver's own loop, run whole: async saves at the default period vs off,
    ``rounds`` pairs in alternating order; wall and process CPU time (noisy on a shared
    machine: a pair takes minutes)."""
    compiled, place, every, fresh, save_at = loop
    times, cpu, blocked = {"off": [], "auto": []}, {"off": [], "auto": []}, []
    for r in range(rounds):
        for mode in ("off", "auto") if r % 2 else ("auto", "off"):
            snaps = fresh(work / f"loop-{r}") if mode == "auto" else None
            state = compiled.init()
            jax.block_until_ready(state)
            t0, c0 = time.perf_counter(), time.process_time()
            driver._run_schedule(
                compiled, state, place, None, checkpoint=driver._checkpoint_hook(compiled, snaps)
            )
            if snaps is not None:
                snaps.close()
                blocked.append(snaps.seconds)
                shutil.rmtree(work / f"loop-{r}")
            times[mode].append(time.perf_counter() - t0)
            cpu[mode].append(time.process_time() - c0)
        log(
            f"[whole runs] round {r + 1}: off {times['off'][-1]:.2f} s, auto "
            f"{times['auto'][-1]:.2f} s (blocked on saves {blocked[-1]:.2f} s); CPU off "
            f"{cpu['off'][-1]:.2f} s, auto {cpu['auto'][-1]:.2f} s"
        )
    ratios = [a / b for a, b in zip(times["auto"], times["off"])]
    cpu_ratios = [a / b for a, b in zip(cpu["auto"], cpu["off"])]
    row = {
        "off_s": [round(t, 3) for t in times["off"]],
        "auto_s": [round(t, 3) for t in times["auto"]],
        "blocked_on_saves_s": [round(t, 3) for t in blocked],
        "blocked_over_off": round(
            statistics.median(b / t for b, t in zip(blocked, times["off"])), 5
        ),
        "ratio_auto_over_off": round(statistics.median(ratios), 4),
        "ratios": [round(x, 4) for x in ratios],
        "cpu_off_s": [round(t, 3) for t in cpu["off"]],
        "cpu_auto_s": [round(t, 3) for t in cpu["auto"]],
        "cpu_ratio_auto_over_off": round(statistics.median(cpu_ratios), 4),
    }
    log(
        f"[whole runs] auto / off wall time: {row['ratio_auto_over_off']:.3f} (rounds: "
        f"{', '.join(f'{x:.3f}' for x in ratios)}); CPU time: "
        f"{row['cpu_ratio_auto_over_off']:.3f}; blocked on saves "
        f"{100 * row['blocked_over_off']:.2f}% of the run"
    )
    return row


# --------------------------------------------------------------------------- per process

SHARD_SEEDS = 4  # divides over 1, 2 and 4 processes
SHARD_FROM = 2  # the checkpoint that the other process counts also restore (resharding)


def _memory() -> dict:
    """This process's resident memory now and at its peak since the last reset (bytes)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> int:
    """Reset the peak RSS (VmHWM) to the current RSS; returns it."""
    Path("/proc/self/clear_refs").write_text("5")
    return _memory()["VmRSS"]


def _peak_above(base: int) -> int:
    return _memory()["VmHWM"] - base


def _random_fill(state, sharding):
    """``state`` with every large integer or float leaf of its buffer replaced by random bits
    (computed shard by shard where the leaf lives)."""
    import jax.numpy as jnp

    def fill(buffer, key):
        leaves, tree = jax.tree.flatten(buffer)
        out = []
        for i, x in enumerate(leaves):
            if x.size < 2**16 or not jnp.issubdtype(x.dtype, jnp.number):
                out.append(x)
                continue
            bits = jax.random.bits(
                jax.random.fold_in(key, i), x.shape, f"uint{8 * x.dtype.itemsize}"
            )
            out.append(jax.lax.bitcast_convert_type(bits, x.dtype))
        return jax.tree.unflatten(tree, out)

    buffer = jax.jit(fill, out_shardings=sharding)(state.buffer, jax.random.key(1))
    return state.replace(buffer=buffer)


def _cfg(capacity: int) -> TrainConfig:
    return TrainConfig(buffer_capacity=capacity, agent=DQNConfig(hidden=(64,)))


def process_worker(argv) -> int:
    """One process of the per-process measurement (started by :func:`per_process`)."""
    n, i, work, capacity = int(argv[1]), int(argv[2]), Path(argv[3]), int(argv[4])
    from jax.experimental import multihost_utils

    def sync(name):
        if n > 1:
            multihost_utils.sync_global_devices(name)

    cfg = _cfg(capacity)
    trainer = make_train(cfg)
    place = devices.layout(SHARD_SEEDS, 1)
    key = jax.random.key(0)
    init = jax.jit(place.init(trainer, key), out_shardings=place.sharded)
    state = _random_fill(init(), place.sharded)
    jax.block_until_ready(state)
    template = jax.eval_shape(init)
    leaves = checkpoints.stored_leaves(state)
    share = sum(s.data.nbytes for x in leaves for s in x.addressable_shards)
    total = sum(x.nbytes for x in leaves)
    record = checkpoints.RunRecord(cfg, SHARD_SEEDS, 0, 1)
    points, sizes = _points(1, SHARD_SEEDS)

    def snaps(directory):
        return checkpoints.Snapshots(
            directory, record, template, jax.random.key_impl(key), place.sharded
        )

    row = {"process": i, "processes": n, "state_bytes": int(total), "share_bytes": int(share)}
    # save: every process writes its own shards
    sync("save")
    writer = snaps(work / f"n{n}")
    base = _reset_peak()
    row["rss_before_save_bytes"] = base
    t0 = time.perf_counter()
    writer.save(0, 1, state, points, sizes, {})
    row["save_blocking_s"] = time.perf_counter() - t0
    writer.close()
    row["save_commit_s"] = time.perf_counter() - t0
    row["save_peak_above_bytes"] = _peak_above(base)
    # side by side: the whole state gathered into this process, as a save did before
    sync("gather")
    base = _reset_peak()
    t0 = time.perf_counter()
    gathered = [np.array(x, copy=True) for x in checkpoints.gather(leaves)]
    row["gather_s"] = time.perf_counter() - t0
    row["gather_peak_above_bytes"] = _peak_above(base)
    del gathered
    # restore what this process count saved, and (other counts) the 2-process checkpoint
    sources = [n] + ([SHARD_FROM] if n != SHARD_FROM and (work / f"n{SHARD_FROM}").is_dir() else [])
    saved_sums = checkpoints.row_crc32s(leaves)
    del leaves
    state = None  # only the restored copy is held from here on
    for source in sources:
        sync(f"restore {source}")
        base = _reset_peak()
        t0 = time.perf_counter()
        found = snaps(work / f"n{source}").restore()
        jax.block_until_ready(found.state)
        name = "restore" if source == n else f"restore_from_{source}"
        row[f"{name}_s"] = time.perf_counter() - t0
        row[f"{name}_peak_above_bytes"] = _peak_above(base)
        restored = checkpoints.row_crc32s(checkpoints.stored_leaves(found.state))
        assert restored == saved_sums, f"the state restored from {source} differs"
        del found
    if i == 0:
        step_dir = work / f"n{n}" / checkpoints.DIRNAME / "1"
        row["disk_bytes"] = _dir_bytes(step_dir)
        row["disk_bytes_by_process"] = {
            p.name: _dir_bytes(p) for p in sorted((step_dir / "state").glob("ocdbt.process_*"))
        }
    (work / f"row-{n}-{i}.json").write_text(json.dumps(row))
    sync("done")
    if n > 1:
        from memjax import distributed

        distributed.shutdown()
    return 0


def per_process(counts, capacity: int, work: Path, timeout: float) -> dict:
    """Start ``n`` worker processes for each ``n`` of ``counts`` (2 first: its checkpoint is
    the one the others reshard) and collect their rows."""
    from memjax.distributed import free_port

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    order = sorted(counts, key=lambda n: n != SHARD_FROM)
    out = {}
    for n in order:
        coordinator = f"127.0.0.1:{free_port()}"
        command = [sys.executable, __file__, "--worker", coordinator, str(n)]
        procs = [
            subprocess.Popen([*command, str(i), str(work), str(capacity)], env=env)
            for i in range(n)
        ]
        deadline = time.monotonic() + timeout
        try:
            for p in procs:
                code = p.wait(timeout=max(deadline - time.monotonic(), 1))
                if code:
                    raise SystemExit(
                        f"[per process] a worker of the {n}-process run failed ({code})"
                    )
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        rows = [json.loads((work / f"row-{n}-{i}.json").read_text()) for i in range(n)]
        worst = max(rows, key=lambda r: r["save_peak_above_bytes"])
        share = worst["share_bytes"]
        summary = {
            "processes": n,
            "state_bytes": rows[0]["state_bytes"],
            "share_bytes": share,
            "save_blocking_s": max(r["save_blocking_s"] for r in rows),
            "save_commit_s": max(r["save_commit_s"] for r in rows),
            "restore_s": max(r["restore_s"] for r in rows),
            "save_peak_above_bytes_max": worst["save_peak_above_bytes"],
            "save_peak_over_share": round(worst["save_peak_above_bytes"] / share, 3),
            "gather_peak_over_share": round(
                max(r["gather_peak_above_bytes"] for r in rows) / share, 3
            ),
            "restore_peak_over_share": round(
                max(r["restore_peak_above_bytes"] for r in rows) / share, 3
            ),
            "rows": rows,
        }
        if f"restore_from_{SHARD_FROM}_s" in rows[0]:
            summary[f"restore_from_{SHARD_FROM}_s"] = max(
                r[f"restore_from_{SHARD_FROM}_s"] for r in rows
            )
        log(
            f"[per process] {n} process(es): state {rows[0]['state_bytes'] / 2**20:,.0f} MiB, "
            f"{share / 2**20:,.0f} MiB per process; save {summary['save_blocking_s']:.2f} s "
            f"blocking, {summary['save_commit_s']:.2f} s committed, restore "
            f"{summary['restore_s']:.2f} s; peak RSS above the state during a save "
            f"{summary['save_peak_over_share']:.2f}x its share (a gather: "
            f"{summary['gather_peak_over_share']:.2f}x), during a restore "
            f"{summary['restore_peak_over_share']:.2f}x"
        )
        out[str(n)] = summary
    return {
        "env": "CartPole-v1",
        "seeds": SHARD_SEEDS,
        "buffer_capacity": capacity,
        "contents": "buffer filled with random bytes (incompressible)",
        "by_processes": out,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="pairs of whole runs, off and auto (default 2; quick 1; 0: none)",
    )
    p.add_argument("--repeats", type=int, default=None, help="saves/restores per case (3)")
    p.add_argument(
        "--steps",
        type=float,
        default=None,
        help="env steps per seed of the timed loop (default 5e5, the default run's; quick 4000)",
    )
    p.add_argument(
        "--cases", default=None, help="save/restore cases, e.g. cartpole,minatar ('none': skip)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="results JSON (default experiments/results/bench_checkpoint_<tag>[_quick].json)",
    )
    p.add_argument(
        "--lockstep-off",
        action="store_true",
        help="skip the lockstep loop comparison (with --rounds 0: no loop at all)",
    )
    p.add_argument(
        "--processes",
        default=None,
        help="process counts of the per-process measurement (default 1,2,4; quick 1,2; "
        "'none': skip)",
    )
    p.add_argument(
        "--capacity",
        type=float,
        default=None,
        help="transitions per seed of the per-process state (default 4e6; quick 2e4)",
    )
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return process_worker(argv[1:])
    args = p.parse_args(argv)
    cases = QUICK_CASES if args.quick else CASES
    if args.cases:
        cases = {k: cases[k] for k in args.cases.split(",") if k != "none"}
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    repeats = args.repeats or (1 if args.quick else 3)
    loop_cfg, loop_seeds = (QUICK_CASES if args.quick else CASES)["cartpole"]
    steps = int(args.steps or (4_000 if args.quick else TrainConfig().total_steps))
    loop_cfg = dataclasses.replace(loop_cfg, total_steps=steps)
    info = machine_info()
    log(
        f"memjax checkpoints | jax {info['versions']['jax']} {info['jax_backend']} | "
        f"{info['cpu_count']} CPUs ({info['cpu_model']})"
    )
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_checkpoint_") as tmp:
        work = Path(tmp)
        save_rows = {
            name: save_restore(name, cfg, seeds, repeats, work)
            for name, (cfg, seeds) in cases.items()
        }
        counts = args.processes or ("1,2" if args.quick else "1,2,4")
        capacity = int(args.capacity or (2e4 if args.quick else 4e6))
        sharded = (
            None
            if counts == "none"
            else per_process([int(n) for n in counts.split(",")], capacity, work, 1800)
        )
        loop = _loop(loop_cfg, loop_seeds) if rounds or not args.lockstep_off else None
        lockstep = lockstep_slowdown(loop_cfg, loop_seeds, work, loop) if loop else None
        whole = whole_run_slowdown(loop_cfg, loop_seeds, rounds, work, loop) if rounds else None
    doc = {
        "machine": info,
        "save_restore": save_rows,
        "per_process": sharded,
        "loop": {
            "env": loop_cfg.env,
            "seeds": loop_seeds,
            "steps_per_seed": loop_cfg.steps_done,
            "chunk_steps": loop_cfg.chunk_steps,
            "target_max": TARGET_SLOWDOWN_MAX,
            "lockstep": lockstep,
            "whole_runs": whole,
        },
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json(doc, args.out or results_path("bench_checkpoint", args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
