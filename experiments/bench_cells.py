"""Parallel memory cells against the GRU: DRQN's training update and the whole loop.

    python experiments/bench_cells.py [--quick] [--cells gru,lru,mingru,ffm] [--windows 32,64]
                                      [--batch 128] [--seeds 8] [--env MemoryChain-20]
                                      [--rounds N] [--compare-autodiff] [--out PATH]

What is measured (issue 30, "Speed"), side by side in one process, all programs of a part
interleaved in every round (order rotated), ratios the medians of per-round ratios:

  update  DRQN's ``learn`` (burn-in 8, n-step 1, Double-Q, Adam) on one fixed batch of
          ``--batch`` random windows of each length in ``--windows`` (``--updates`` updates
          per call in a ``lax.scan``), for each cell with the DRQN defaults otherwise
          (``memory`` 64, torso 120-84): the GRU steps each window with ``lax.scan`` (forward
          and backward), the parallel cells scan it with ``jax.lax.associative_scan``.
  loop    the fused training loop's env steps/s on ``--env`` at ``--seeds`` vmapped seeds
          (``memjax.train.make_train`` with ``TrainConfig(agent=DRQNConfig(cell=...))``'s
          defaults: 10 envs per seed, one update of 128 windows of 40 steps per vector step),
          timed from the state after the loop's own warm-up (``trainer.collect``).

``--compare-autodiff`` adds, for each parallel cell, the same programs with the scan's gradient
by JAX's autodiff of ``associative_scan`` (``cells.linear_scan_autodiff``, the implementation
before the custom VJP; "<cell>/autodiff") and builds every program one at a time, so that each
one's compile seconds are its own; ``custom_vs_autodiff`` is then the autodiff variant's time
over the cell's (> 1: the custom VJP is faster). Each update's XLA flop count
(``cost_analysis``; a ``lax.scan`` body counted once, so the GRU's recurrence is undercounted)
is recorded too.

``--breakdown`` times, per cell and window, what bounds the update (one online window forward
and backward, the update's largest part): the whole Q-network over the window
(``unroll``: torso, cell, head), the cell alone on the torso's output, and (parallel cells)
the scan alone, custom VJP and autodiff; the cell's share of the network's time is the
bound: a free cell makes the network at most ``1 / (1 - share)`` faster.

``--train-compile STEPS`` instead runs ``memjax train`` in this process, one after another, for
each program name (with ``--compare-autodiff`` the autodiff variants too) on RepeatFirst with
``experiments/memory_table.py``'s recipe and 2 seeds for STEPS env steps (> its 5000 of
warm-up, so that every program of a run is compiled), and records each run's compile seconds
by function (the memory table's "compile s").

``--compile-rounds N`` instead lowers and compiles the fused loop's chunk (``--env``, DRQN's
defaults, one seed) of every program name N times, names in rotated order each round, and
gives each one's median compile seconds and (with ``--compare-autodiff``) the median of the
per-round ratios autodiff / custom VJP: compile seconds drift with the host's load, which
one sequential run per name confounds with the order.

Protocol: bench_loop's (``experiments/_common.py``): AOT-compiled, donated programs, compile
time reported apart (the cells' programs compile in threads at once, so a program's compile
seconds include waiting for the others on a small host). ``speed-up`` is the GRU's time over
the cell's (> 1: the cell is faster).
Target (issue 30): the update >= 3x faster than the GRU's at window 64 on the 2-core CPU; on a
GPU the loop >= 10x the GRU's 18.2k env steps/s at 8 seeds on MemoryChain-20 (H200).

The default run prints one table; on an H200 it takes under 2 minutes (compiles included).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

from experiments._common import (  # noqa: E402
    LoopProgram,
    Program,
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
    zero,
)
from memjax import agents as mj_agents  # noqa: E402
from memjax import replay as mj_replay  # noqa: E402
from memjax import train as mj_train  # noqa: E402
from memjax.agents import cells as mj_cells  # noqa: E402
from memjax.agents.cells import PARALLEL_CELLS  # noqa: E402

FULL = dict(windows=(32, 64), batch=128, updates=4, seeds=(8,), chunk_steps=400, rounds=5)
QUICK = dict(windows=(8,), batch=8, updates=1, seeds=(1,), chunk_steps=20, rounds=2)
ROUND_SECONDS = {"full": 0.5, "quick": 0.02}
CELLS = ("gru", *PARALLEL_CELLS)
BURN_IN = 8
TARGET = 3.0
AUTODIFF = "/autodiff"


def variants(cells, compare_autodiff: bool) -> tuple:
    """Program names: the cells, then (``compare_autodiff``) "<cell>/autodiff" per parallel
    cell."""
    extra = tuple(c + AUTODIFF for c in cells if c in PARALLEL_CELLS) if compare_autodiff else ()
    return (*cells, *extra)


@contextlib.contextmanager
def scan_for(name: str):
    """Trace with the scan the program ``name`` asks for: "<cell>/autodiff" swaps in
    ``linear_scan_autodiff`` for the cells' ``linear_scan`` (the cells look it up when
    traced); the cell name itself."""
    if not name.endswith(AUTODIFF):
        yield name
        return
    saved = mj_cells.linear_scan
    mj_cells.linear_scan = mj_cells.linear_scan_autodiff
    try:
        yield name[: -len(AUTODIFF)]
    finally:
        mj_cells.linear_scan = saved


def config(cell: str, env: str, window: int | None = None, **loop) -> mj_train.TrainConfig:
    """DRQN's defaults with ``cell``; with ``window``, windows of that many steps starting
    every 8 rows (burn-in 8; shorter windows keep a burn-in of ``window - 1``)."""
    agent = mj_agents.DRQNConfig(cell=cell)
    if window is not None:
        agent = dataclasses.replace(
            agent,
            sequence_length=window,
            sequence_period=min(8, window),  # the default 1000 buffer rows hold whole periods
            burn_in=min(BURN_IN, window - 1),
        )
    return mj_train.TrainConfig(agent=agent, env=env, **loop)


def random_windows(trainer, batch: int, window: int, key) -> dict:
    """``batch`` windows of ``window`` steps shaped as the trainer's replay gives them: random
    observations and rewards, episode starts at random steps (about one in 10), the per-window
    carry random too."""
    per_window = set(trainer.config.windows.per_window)
    items = {}
    for k, (name, spec) in zip(jax.random.split(key, 16), sorted(trainer.example.items())):
        shape = (batch, *spec.shape) if name in per_window else (batch, window, *spec.shape)
        if spec.dtype == jnp.bool_:
            items[name] = jax.random.uniform(k, shape) < 0.1
        elif jnp.issubdtype(spec.dtype, jnp.integer):
            items[name] = jax.random.randint(k, shape, 0, trainer.num_actions, spec.dtype)
        elif name == "terminated":
            items[name] = (jax.random.uniform(k, shape) < 0.05).astype(spec.dtype)
        else:
            items[name] = jax.random.normal(k, shape, spec.dtype)
    return items


def update_program(name: str, cell: str, env: str, window: int, opts) -> Program:
    """``opts["updates"]`` DRQN updates of ``cell`` on one fixed batch of random windows."""
    trainer = mj_train.make_train(config(cell, env, window, batch_size=opts["batch"]))
    agent = trainer.agent
    obs = trainer.example["obs"]
    state = agent.init(jax.random.key(0), jnp.zeros(obs.shape, obs.dtype))
    batch = opts["batch"]
    sample = mj_replay.Sample(
        items=random_windows(trainer, batch, window, jax.random.key(1)),
        indices=jnp.arange(batch, dtype=jnp.int32),
        weights=jnp.ones(batch, jnp.float32),
        probabilities=jnp.full(batch, 1.0 / batch, jnp.float32),
    )

    def run(carry, sample):
        def step(carry, key):
            state, acc = carry
            state, priorities, metrics = agent.learn(state, sample, key)
            return (state, acc + metrics["loss"] + priorities[0]), None

        state, acc, key = carry
        key, sub = jax.random.split(key)
        (state, acc), _ = jax.lax.scan(step, (state, acc), jax.random.split(sub, opts["updates"]))
        return state, acc, key

    side = Side(name, (state, zero(), jax.random.key(2)))
    return Program(name, run, side, consts=(sample,), ops_per_call=opts["updates"])


def loop_program(name: str, cell: str, env: str, seeds: int, opts) -> LoopProgram:
    """The fused loop's chunk of ``opts["chunk_steps"]`` env steps per seed, after warm-up."""
    cfg = config(cell, env, chunk_steps=opts["chunk_steps"])
    if opts["quick"]:
        cfg = config(
            cell,
            env,
            16,
            chunk_steps=opts["chunk_steps"],
            batch_size=8,
            learning_starts=160,
            buffer_capacity=320,
        )
    trainer = mj_train.make_train(cfg)
    keys = jax.random.split(jax.random.key(0), seeds)
    state = jax.jit(jax.vmap(lambda k: trainer.collect(trainer.init(k))[0]))(keys)
    metrics = jax.eval_shape(jax.vmap(trainer.chunk), state)[1]
    metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metrics)
    program = LoopProgram(
        name,
        as_carry_fn(trainer.chunk),
        Side(name, (state, metrics)),
        ops_per_call=cfg.chunk_iters * cfg.train_every,
    )
    program.env_steps_per_vector_step = seeds * cfg.num_envs
    return program


def built(names, make, one_at_a_time: bool = False) -> dict:
    """name -> ``make(name, cell)``, the programs traced and compiled in threads at once (XLA
    compiles outside the GIL: on a many-core GPU host the compiles overlap), or
    ``one_at_a_time`` (each under :func:`scan_for`: the autodiff variants swap a module
    global while they are traced)."""

    def one(name):
        with scan_for(name) as cell:
            return make(name, cell)

    if one_at_a_time:
        return {n: one(n) for n in names}
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return dict(zip(names, pool.map(one, names)))


def flops(program) -> float | None:
    """XLA's flop count of the compiled program (None where it gives none). XLA counts a loop's
    body once: an update program's count is ONE update (its ``lax.scan`` over updates), and
    the GRU's recurrence is counted for one step of the window."""
    try:
        cost = program.exe.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend answers
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return None if not cost or "flops" not in cost else cost["flops"]


def against_autodiff(t: dict, name: str):
    """The autodiff variant's time over ``name``'s (paired), where both were timed."""
    other = name + AUTODIFF
    return paired_ratio(t[other], t[name]) if other in t else None


def timed(programs: dict, opts) -> tuple:
    """Interleaved rounds of ``programs``; their per-round times and compile seconds."""
    t = measure(programs, opts["rounds"], opts["round_seconds"])
    compile_s = {k: round(p.lower_s + p.compile_s, 2) for k, p in programs.items()}
    return t, compile_s


def bench_updates(names, env: str, opts) -> dict:
    out = {}
    for window in opts["windows"]:
        programs = built(
            names,
            lambda n, c: update_program(n, c, env, window, opts),
            opts["one_at_a_time"],
        )
        log(f"  update, window {window}: compiled {len(programs)} programs; timing ...")
        t, compile_s = timed(programs, opts)
        out[window] = {
            c: {
                "ms_per_update": round(statistics.median(t[c]) * 1e3, 3),
                "rounds": time_stats(t[c]),
                "speedup_vs_gru": paired_ratio(t["gru"], t[c]) if "gru" in t else None,
                "custom_vs_autodiff": against_autodiff(t, c),
                "compile_s": compile_s[c],
                "flops_per_update": flops(programs[c]),
                "hlo_kernels": programs[c].hlo["kernels"],
            }
            for c in names
        }
    return out


def bench_loops(names, env: str, opts) -> dict:
    out = {}
    for seeds in opts["seeds"]:
        programs = built(
            names,
            lambda n, c: loop_program(n, c, env, seeds, opts),
            opts["one_at_a_time"],
        )
        log(f"  loop, {seeds} seed(s): compiled {len(programs)} programs; timing ...")
        t, compile_s = timed(programs, opts)
        out[seeds] = {
            c: {
                "env_steps_per_s": round(
                    programs[c].env_steps_per_vector_step / statistics.median(t[c]), 1
                ),
                "us_per_vector_step": time_stats(t[c]),
                "speedup_vs_gru": paired_ratio(t["gru"], t[c]) if "gru" in t else None,
                "custom_vs_autodiff": against_autodiff(t, c),
                "compile_s": compile_s[c],
            }
            for c in names
        }
    return out


def breakdown_programs(cell: str, env: str, window: int, opts) -> dict:
    """name -> Program, the gradient of a sum of each part's outputs over ``opts["batch"]``
    random windows (parameters the carry): "<cell>:network", "<cell>:cell" and, for a
    parallel cell, "<cell>:scan" and "<cell>:scan/autodiff"."""
    batch = opts["batch"]
    trainer = mj_train.make_train(config(cell, env, window, batch_size=batch))
    network = trainer.network
    k = jax.random.split(jax.random.key(3), 6)
    obs_spec = trainer.example["obs"]
    obs = jax.random.normal(k[0], (batch, window, *obs_spec.shape), jnp.float32)
    first = jax.random.uniform(k[1], (batch, window)) < 0.1
    carry = network.initial_carry(batch)
    parallel = cell in PARALLEL_CELLS
    width = network.hidden[-1]
    x = jax.random.normal(k[2], (batch, window, width), jnp.float32)

    def grad_program(name, loss, params, consts):
        def run(carry, *consts):
            params, acc = carry
            value, grads = jax.value_and_grad(loss)(params, *consts)
            return params, acc + value + sum(jnp.sum(jnp.real(g)) for g in jax.tree.leaves(grads))

        params = jax.tree.map(jnp.copy, params)  # a Side of its own: donated
        return Program(name, run, Side(name, (params, zero())), consts=consts)

    def network_loss(params, obs, first):
        _, q, _ = mj_agents.unroll(network.apply, params, carry, obs, first, parallel=parallel)
        return jnp.sum(q)

    net_params = network.init(k[3], carry, obs[:, 0])
    programs = {
        f"{cell}:network": grad_program(f"{cell}:network", network_loss, net_params, (obs, first))
    }
    if parallel:
        module = mj_cells.make_cell(cell, network.memory)
        cell_params = module.init(k[4], carry, x[:, 0])

        def cell_loss(params, x, first):
            _, y = module.apply(params, carry, x, first, method="window")
            return jnp.sum(y)

        rows = x.reshape((-1, width))
        a, b = module.apply(cell_params, rows, method="coefficients")
        b = b.reshape((batch, window, *b.shape[1:]))
        a = a.reshape(b.shape) if a.shape[0] == rows.shape[0] else a
        start = module.apply(cell_params, carry, method="state")
        weights = jax.random.normal(k[5], b.shape).astype(b.dtype)
        for name, scan in (
            ("scan", mj_cells.linear_scan),
            ("scan/autodiff", mj_cells.linear_scan_autodiff),
        ):

            def scan_loss(ab, first, weights, scan=scan):
                return jnp.sum(jnp.real(weights * scan(ab[0], ab[1], first, ab[2])))

            programs[f"{cell}:{name}"] = grad_program(
                f"{cell}:{name}", scan_loss, (a, b, start), (first, weights)
            )
    else:
        module = nn.GRUCell(features=network.memory)
        cell_params = module.init(k[4], carry, x[:, 0])

        def cell_loss(params, x, first):
            def step(c, inputs):
                x_t, f_t = inputs
                c, y = module.apply(params, jnp.where(f_t[:, None], 0.0, c), x_t)
                return c, y

            _, y = jax.lax.scan(step, carry, (jnp.swapaxes(x, 0, 1), first.T))
            return jnp.sum(y)

    programs[f"{cell}:cell"] = grad_program(f"{cell}:cell", cell_loss, cell_params, (x, first))
    return programs


def bench_breakdown(cells, env: str, opts) -> dict:
    out = {}
    for window in opts["windows"]:
        programs = {}
        for cell in cells:
            programs.update(breakdown_programs(cell, env, window, opts))
        log(f"  breakdown, window {window}: compiled {len(programs)} programs; timing ...")
        t, compile_s = timed(programs, opts)
        rows = {}
        for cell in cells:
            net = t[f"{cell}:network"]
            row = {"network_ms": round(statistics.median(net) * 1e3, 3)}
            for part in ("cell", "scan", "scan/autodiff"):
                if f"{cell}:{part}" in t:
                    part_t = t[f"{cell}:{part}"]
                    row[f"{part}_ms"] = round(statistics.median(part_t) * 1e3, 3)
                    row[f"{part}_share_of_network"] = round(
                        statistics.median(p / n for p, n in zip(part_t, net)), 3
                    )
            row["flops"] = {
                k.split(":", 1)[1]: flops(p)
                for k, p in programs.items()
                if k.startswith(cell + ":")
            }
            rows[cell] = row
        out[window] = rows
    return out


def format_breakdown(breakdown: dict, opts) -> str:
    lines = [
        f"{'breakdown (fwd+bwd)':<28} {'cell':<7} | {'network':>10} {'cell':>16} "
        f"{'scan':>16} {'scan autodiff':>16}"
    ]
    for window, rows in breakdown.items():
        what = f"window {window}, B {opts['batch']}"
        for cell, r in rows.items():

            def part(name):
                if f"{name}_ms" not in r:
                    return ""
                return f"{r[f'{name}_ms']:.2f} ms ({r[f'{name}_share_of_network']:.0%})"

            lines.append(
                f"{what:<28} {cell:<7} | {r['network_ms']:>7.2f} ms {part('cell'):>16} "
                f"{part('scan'):>16} {part('scan/autodiff'):>16}"
            )
    return "\n".join(lines)


def compile_rounds(names, env: str, rounds: int) -> dict:
    """name -> the seconds of lowering and compiling the loop's chunk, ``rounds`` times in
    rotated order."""
    seconds = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            with scan_for(name) as cell:
                trainer = mj_train.make_train(config(cell, env, chunk_steps=100))
                state = jax.eval_shape(
                    lambda k: trainer.collect(trainer.init(k))[0], jax.random.key(0)
                )
                t0 = time.perf_counter()
                jax.jit(trainer.chunk).lower(state).compile()
                seconds[name].append(time.perf_counter() - t0)
            log(f"  compile round {r}, {name}: {seconds[name][-1]:.1f} s")
    return {
        n: {
            "median_s": round(statistics.median(seconds[n]), 2),
            "rounds_s": [round(x, 2) for x in seconds[n]],
            "autodiff_over_custom": paired_ratio(seconds[n + AUTODIFF], seconds[n])
            if n + AUTODIFF in seconds
            else None,
        }
        for n in names
    }


def train_compile(names, steps: int) -> dict:
    """name -> the compile seconds (by function, and their sum) of ``memjax train`` on
    RepeatFirst (memory_table's recipe, 2 seeds, ``steps`` env steps), run in this process
    one after another."""
    import tempfile

    from experiments import memory_table
    from memjax import cli

    out = {}
    for name in names:
        with scan_for(name) as cell, tempfile.TemporaryDirectory() as tmp:
            argv = memory_table.command("drqn", "RepeatFirst", 2, Path(tmp) / "run")[3:]
            argv[argv.index("--steps") + 1] = str(steps)
            argv += ["--cell", cell] if cell in PARALLEL_CELLS else []
            t0 = time.perf_counter()
            cli.main(argv)
            wall = time.perf_counter() - t0
            summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
        by_function = {k: round(v, 2) for k, v in summary["compile_seconds_by_function"].items()}
        out[name] = {
            "compile_s": round(summary["compile_seconds"], 2),
            "by_function": by_function,
            "wall_s": round(wall, 1),
        }
        log(f"  train {name}: compile {out[name]['compile_s']} s {by_function}")
    return out


def format_table(updates: dict, loops: dict, env: str, opts) -> str:
    def ratio(x):
        return "" if x is None else f"{x:.2f}x"

    lines = [
        f"{'part':<28} {'cell':<15} | {'time':>12} {'speed-up vs gru':>15} "
        f"{'vs autodiff':>11} | {'compile s':>9}"
    ]
    for window, rows in updates.items():
        what = f"update, window {window}, B {opts['batch']}"
        for cell, r in rows.items():
            lines.append(
                f"{what:<28} {cell:<15} | {r['ms_per_update']:>9.2f} ms "
                f"{ratio(r['speedup_vs_gru']):>15} {ratio(r['custom_vs_autodiff']):>11} | "
                f"{r['compile_s']:>9.1f}"
            )
    for seeds, rows in loops.items():
        what = f"loop {env}, {seeds} seed{'s' if seeds > 1 else ''}"
        for cell, r in rows.items():
            lines.append(
                f"{what:<28} {cell:<15} | {r['env_steps_per_s']:>7,.0f} st/s "
                f"{ratio(r['speedup_vs_gru']):>15} {ratio(r['custom_vs_autodiff']):>11} | "
                f"{r['compile_s']:>9.1f}"
            )
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(prog="bench_cells.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny windows and batches, 2 rounds")
    p.add_argument("--cells", default=",".join(CELLS), help=f"comma list of {', '.join(CELLS)}")
    p.add_argument("--env", default="MemoryChain-20", help="environment of the loop")
    p.add_argument("--windows", type=positive_ints, default=None, help="update windows, e.g. 32,64")
    p.add_argument("--batch", type=int, default=None, help="windows per update (default 128)")
    p.add_argument("--updates", type=int, default=None, help="updates per timed call")
    p.add_argument("--seeds", type=positive_ints, default=None, help="loop seed counts, e.g. 8")
    p.add_argument("--chunk-steps", type=int, default=None, help="loop env steps per call/seed")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    p.add_argument("--no-loop", action="store_true", help="time the updates only")
    p.add_argument(
        "--compile-rounds",
        type=int,
        default=None,
        metavar="N",
        help="instead: compile the loop's chunk N times per program, interleaved",
    )
    p.add_argument(
        "--train-compile",
        type=int,
        default=None,
        metavar="STEPS",
        help="instead: compile seconds of memjax train runs (RepeatFirst, STEPS steps)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="time the network, the cell alone and the scan alone (fwd+bwd) instead",
    )
    p.add_argument(
        "--compare-autodiff",
        action="store_true",
        help="also each parallel cell with the scan's autodiff gradient (the implementation "
        "before the custom VJP); programs built one at a time",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default experiments/results/bench_cells_<tag>[_quick].json)",
    )
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = ("windows", "batch", "updates", "seeds", "chunk_steps", "rounds")
    opts = options(args, QUICK, FULL, names)
    opts["quick"] = args.quick
    opts["round_seconds"] = ROUND_SECONDS["quick" if args.quick else "full"]
    opts["one_at_a_time"] = args.compare_autodiff
    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    if not cells or set(cells) - set(CELLS):
        parser.error(f"--cells: expected a comma list of {', '.join(CELLS)}, got {args.cells!r}")
    info = machine_info()
    log(
        f"memjax parallel cells vs GRU | jax {info['versions']['jax']} {info['jax_backend']} | "
        f"{info['device_kind']} | {info['cpu_count']} CPUs ({info['cpu_model']})"
    )
    t0 = time.perf_counter()
    load = os.getloadavg()
    names = variants(cells, args.compare_autodiff)
    training = train_compile(names, args.train_compile) if args.train_compile else {}
    compiles = compile_rounds(names, args.env, args.compile_rounds) if args.compile_rounds else {}
    breakdown = bench_breakdown(cells, args.env, opts) if args.breakdown else {}
    other = args.breakdown or bool(training) or bool(compiles)
    updates = {} if other else bench_updates(names, args.env, opts)
    loops = {} if args.no_loop or other else bench_loops(names, args.env, opts)
    load = [round(x, 2) for x in (*load, *os.getloadavg())]
    log(f"load average (1, 5, 15 min) at the start {load[:3]}, at the end {load[3:]}")
    log("")
    if compiles:
        for name, r in compiles.items():
            ratio = r["autodiff_over_custom"]
            log(
                f"chunk compile {name:<15} {r['median_s']:>6.1f} s median"
                + ("" if ratio is None else f", autodiff / custom {ratio:.2f}x")
            )
    elif training:
        for name, r in training.items():
            log(
                f"train RepeatFirst, {name:<15} compile {r['compile_s']:>7.1f} s {r['by_function']}"
            )
    elif breakdown:
        log(format_breakdown(breakdown, opts))
    else:
        log(format_table(updates, loops, args.env, opts))
    met = {}
    if "gru" in cells and 64 in updates:
        best = max(r["speedup_vs_gru"] for c, r in updates[64].items() if c in PARALLEL_CELLS)
        met["update_3x_at_window_64"] = best >= TARGET
        log(f"\nbest update speed-up at window 64: {best:.2f}x (target >= {TARGET:.0f}x)")
    wall = round(time.perf_counter() - t0, 1)
    log(f"wall {wall} s")
    doc = {
        "benchmark": "bench_cells",
        "command": " ".join(["python", "experiments/bench_cells.py", *(argv or sys.argv[1:])]),
        "machine": info,
        "settings": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()},
            "cells": list(cells),
            "env": args.env,
            "burn_in": BURN_IN,
        },
        "updates": {str(w): r for w, r in updates.items()},
        "loops": {str(s): r for s, r in loops.items()},
        "breakdown": {str(w): r for w, r in breakdown.items()},
        "train_compile": training,
        "chunk_compile": compiles,
        "targets_met": met,
        "load_average_start_end": load,
        "wall_seconds": wall,
    }
    write_json(doc, args.out or results_path("bench_cells", args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
