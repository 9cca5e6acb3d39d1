"""The ``memjax`` command line: ``memjax train ...`` and ``memjax compress ...``.

Invalid options get one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path

from memjax import _argtypes as types


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The ``memjax`` parser; ``argv`` (the command line) decides which agent's knobs
    ``train`` offers as options (see :func:`chosen_agent`)."""
    parser = argparse.ArgumentParser(
        prog="memjax", description="Memory-efficient replay and fused RL training loops in JAX."
    )
    sub = parser.add_subparsers(dest="command", metavar="{train,compress,export}")
    sub.required = True
    # memjax.compress registers the distillation agent (also an entry point when installed)
    from memjax.agents import names
    from memjax.compress.cli import add_parser as _add_compress  # `memjax compress`

    agents = ", ".join(names())
    train = sub.add_parser(
        "train",
        usage="memjax train [--config FILE | --resume DIR] [options] "
        "(memjax train --help lists them)",
        help=f"train an agent ({agents}) on a gymnax environment, vmapped over seeds",
        description=f"Train a registered agent ({agents}; yours with "
        "memjax.agents.register or a memjax.agents entry point) on a gymnax environment with "
        "several vmapped seeds; --agent NAME --help lists that agent's own options; "
        "writes returns.csv, returns.json, curve.png and summary.json (with the "
        "resolved config) to --out, and whole-state checkpoints to "
        "--out/checkpoints/<step>/, from which --resume continues a killed run.",
    )
    _add_train_options(train, chosen_agent(argv or []))
    _add_compress(sub)
    _add_export(sub)
    return parser


def _add_export(sub) -> None:
    """``memjax export SOURCE --out FILE [--format jax|onnx] [--quantize none|int8]``."""
    from memjax.export import FORMATS, QUANTIZE

    e = sub.add_parser(
        "export",
        usage="memjax export SOURCE --out FILE [--format jax|onnx] [--quantize none|int8] "
        "[--seed I] [--platforms cpu,cuda]",
        help="write a trained or compressed greedy Q-network as a file that runs without memjax",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Write one seed's greedy Q-network as a file: q_values = f(obs), obs float32
[batch, *obs_shape] for any batch, q_values float32 [batch, num_actions].

SOURCE is a run (RUN_DIR of memjax train --out RUN_DIR, holding checkpoint.msgpack) or one
method's folder of a compress result (DIR/<method> of memjax compress --out DIR, e.g.
DIR/prune_0.9+int8: a pruned, low-rank, shared, quantized or distilled network).

formats:
  jax   serialized StableHLO; needs only jax to run (no flax, no memjax):
        jax.export.deserialize(bytearray(open(FILE, 'rb').read())).call(obs)
        JAX promises exports load in the releases of the next 6 months (and a release
        runs exports up to 6 months older).
  onnx  an ONNX model (opset 17) for onnxruntime, no JAX needed:
        onnxruntime.InferenceSession(FILE).run(None, {'obs': obs})[0]

Agents that carry a state take and return it: (obs, carry, first) -> (q_values, carry);
first (bool [batch]) True where an episode starts puts the agent's initial state there, so
zeros are a valid first carry. drqn: jax or onnx (inputs obs, h (gru) or c, h (lstm),
first; outputs q_values, next_h (next_c, next_h); lru and mingru as gru; the ffm cell and
stacked layers: jax only); memnet: jax or onnx (inputs obs, ring, count, first; outputs
q_values, next_ring, next_count); ntm: jax or onnx (inputs obs, controller (not with the
feedforward one), memory, weights, reads, first; outputs q_values, next_...; ffm: jax only).

--quantize int8 stores kernels as int8 with per-output-channel float32 scales (a
compress-quantized network keeps its own); a file about a quarter to a third the size.

examples:
  memjax export runs/cartpole --out cartpole.jaxexport
  memjax export runs/cartpole --format onnx --quantize int8 --seed 3 --out cartpole.onnx
  memjax export runs/cartpole-small/distill_32,32+int8 --format onnx --quantize int8 \\
      --out small.onnx""",
    )
    e.add_argument(
        "run",
        metavar="SOURCE",
        help="a run directory (memjax train --out) or a method's folder of memjax compress --out",
    )
    e.error = _export_error  # argparse's own errors (bad choices, missing --out): one line
    e.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    e.add_argument(
        "--format",
        choices=FORMATS,
        default="jax",
        help="jax (StableHLO, runs with jax) or onnx (runs with onnxruntime) (default: jax)",
    )
    e.add_argument(
        "--quantize",
        choices=QUANTIZE,
        default="none",
        help="int8: kernels stored as int8 with one scale per output channel (default: none)",
    )
    e.add_argument(
        "--seed",
        type=types.non_negative,
        default=0,
        help="which seed (of a compress result: the seed it compressed) (default: 0)",
    )
    e.add_argument(
        "--platforms",
        default="cpu,cuda",
        help="--format jax: the platforms to lower for, comma-separated, of cpu, cuda, rocm, "
        "tpu (default: cpu,cuda)",
    )


def _export_error(message: str):
    """One line on stderr (no usage block), exit status 2."""
    print(f"memjax export: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _export(args, parser) -> int:
    from memjax.export import PLATFORMS, export_jax, export_onnx

    export = _subparser(parser, "export")
    platforms = tuple(p for p in args.platforms.split(",") if p)
    try:
        if any(p not in PLATFORMS for p in platforms) or not platforms:
            raise ValueError(f"--platforms must be some of {PLATFORMS}, got {args.platforms!r}")
        if args.format == "onnx":
            path = export_onnx(args.run, args.out, seed=args.seed, quantize=args.quantize)
            where = "onnxruntime"
        else:
            path = export_jax(
                args.run, args.out, seed=args.seed, quantize=args.quantize, platforms=platforms
            )
            where = f"jax on {','.join(platforms)}"
    except ImportError as e:
        export.exit(
            2,
            f"memjax export: error: {e.name or e} is not installed: pip install onnx "
            f"(or pip install -e '.[dev]')\n",
        )
    except (FileNotFoundError, ValueError, OSError) as e:
        export.exit(2, f"memjax export: error: {e}\n")
    print(
        f"wrote {path} ({path.stat().st_size:,} bytes; {args.format}, {args.quantize}, "
        f"seed {args.seed}; runs in {where})",
        flush=True,
    )
    return 0


DEFAULT_SEEDS = 8


def _checkpoint_every(text: str):
    return "auto" if text.strip().lower() == "auto" else types.non_negative(text)


def chosen_agent(argv) -> str:
    """The agent a ``memjax train`` command line trains: its ``--agent``, else the agent of
    its ``--config FILE`` or of the run it ``--resume``s, else ``dqn``. Unreadable files give
    ``dqn`` here; the run reports them."""
    early = argparse.ArgumentParser(add_help=False)
    for option in ("--agent", "--config", "--resume"):
        early.add_argument(option)
    known, _ = early.parse_known_args(argv[1:] if argv[:1] == ["train"] else argv)
    if known.agent is not None:
        return known.agent
    try:
        if known.config is not None:
            from memjax.cli_config import read_config_file

            return read_config_file(known.config)[0].get("agent", "dqn")
        if known.resume is not None:
            from memjax.train import checkpoints

            return checkpoints.read_run(known.resume).config.agent
    except (OSError, ValueError):
        pass
    return "dqn"


def _check_agent_options(argv, parser) -> None:
    """One clear line for a knob of another agent than the one the command line trains (e.g.
    ``--burn-in`` without ``--agent drqn``), instead of argparse's "unrecognized arguments"."""
    if argv[:1] != ["train"]:
        return
    from memjax.cli_config import agent_options

    agent, owners = chosen_agent(argv), agent_options()
    for token in argv[1:]:
        option = token.split("=", 1)[0]
        if option in owners and agent not in owners[option]:
            others = " or ".join(owners[option])
            _subparser(parser, "train").error(
                f"{option} is a setting of agent {others}: add --agent {owners[option][0]}"
            )


def _add_train_options(t, agent: str = "dqn") -> None:
    """The run's own options; every TrainConfig field and the agent's knobs come from
    memjax.cli_config."""
    from memjax.cli_config import add_config_options

    t.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TrainConfig values from a JSON or YAML file (or a run's summary.json); "
        "options given on the command line override them",
    )
    t.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the run in DIR (killed or stopped) from its newest complete "
        "checkpoint, with its own config, seeds and seed; an option that "
        "conflicts with them is an error. The results are those of an "
        "uninterrupted run, bit for bit; a finished run is left as it is",
    )
    t.add_argument(
        "--restart-if-unreadable",
        action="store_true",
        help="with --resume: when none of the run's checkpoints can be read, move "
        "them aside and train the run again from step 0 (without it, that is "
        "an error)",
    )
    t.add_argument(
        "--checkpoint-every",
        type=_checkpoint_every,
        default=None,
        metavar="ENV_STEPS",
        help="env steps per seed between whole-state checkpoints in "
        "OUT/checkpoints/<step>/ (saved asynchronously at the first chunk "
        "boundary at or past each multiple, and at the end); auto: a tenth of "
        "the run; 0: off (default: auto; with --resume, the run's own)",
    )
    t.add_argument(
        "--seeds",
        type=types.positive,
        default=None,
        help=f"independent seeds (vmapped) (default: {DEFAULT_SEEDS})",
    )
    t.add_argument(
        "--memory-budget",
        type=types.parse_size,
        default=None,
        metavar="SIZE",
        help="replay memory per seed, e.g. 64MB; sets the largest capacity that fits "
        "(instead of --capacity)",
    )
    t.add_argument("--out", default=None, help="output directory (default runs/ENV-REPLAY)")
    t.add_argument(
        "--seed", type=types.non_negative, default=None, help="base PRNG seed (default: 0)"
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument(
        "--plan",
        action="store_true",
        help="print the bytes of the whole training state by part (params, "
        "optimizer, replay by field, environments, carries) for these settings, "
        "without allocating or training anything",
    )
    t.add_argument(
        "--device-budget",
        type=types.parse_size,
        default=None,
        metavar="SIZE",
        help="with --plan (only): memory of one device, e.g. 16GB; the plan adds "
        "the largest replay capacity per seed (--capacity) with which the "
        "whole state fits on each device",
    )
    t.add_argument(
        "--devices",
        type=types.positive,
        default=None,
        metavar="N",
        help="local devices (of each process) to run on; the seeds are sharded "
        "over them, so --seeds must be a multiple of all processes' devices "
        "(default: all local devices)",
    )
    t.add_argument(
        "--data-parallel",
        action="store_true",
        help="train every seed as ONE agent data-parallel over the devices "
        "(Podracer's Anakin): each device steps its own --num-envs "
        "environments into its own buffer shard and samples its own batch; "
        "gradients are averaged over the devices",
    )
    t.add_argument(
        "--processes",
        type=_processes,
        default=None,
        metavar="N|auto",
        help="run as N local processes (jax.distributed, gloo CPU collectives, a "
        "coordinator on a free local port), the seeds split between them, one "
        "result directory; a process that dies ends the run (resume it with "
        "--resume OUT --processes N). 'auto': this is one process of a run that "
        "a cluster launcher started (srun, mpirun, a Kubernetes indexed Job); "
        "the coordinator, process count and id come from its environment",
    )
    t.add_argument(
        "--connect-timeout",
        type=types.positive_float,
        default=None,
        metavar="SECONDS",
        help="with several processes: how long a process waits for the coordinator "
        "to answer and for the others to join (default: 300)",
    )
    t.add_argument(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="join a multi-process run started by hand (one process per machine): "
        "process 0's address; with --num-processes and --process-id",
    )
    t.add_argument(
        "--num-processes",
        type=types.positive,
        default=None,
        metavar="N",
        help="with --coordinator: the processes of the run",
    )
    t.add_argument(
        "--process-id",
        type=types.non_negative,
        default=None,
        metavar="I",
        help="with --coordinator: this process (0 writes the results)",
    )
    _add_population_options(t)
    from memjax import agents

    add_config_options(t, agent if agent in agents.names() else "dqn")


def _add_population_options(t) -> None:
    """``--sweep NAME=V1,V2`` (repeatable: a grid) and PBT's options."""
    g = t.add_argument_group(
        "populations",
        "sweeps and population-based training: every member x seed is a lane of one "
        "compiled program (see docs/populations.md)",
    )
    g.add_argument(
        "--sweep",
        action="append",
        default=None,
        metavar="NAME=V1,V2,...",
        help="train a member per value (repeat for a grid of members), each with --seeds "
        "seeds, in one program: numeric settings that leave the program's shapes alone "
        "(lr, lr-end, gamma, tau, eps-start, eps-end, beta-start, beta-end, priority-eps, "
        "adam-eps, max-grad-norm, an agent's float knobs such as huber-delta)",
    )
    g.add_argument(
        "--pbt-every",
        type=types.positive,
        default=None,
        metavar="ENV_STEPS",
        help="population-based training from the --sweep grid: every ENV_STEPS env steps "
        "per seed (at the next chunk boundary) the bottom quarter of each seed's members "
        "copy a top-quarter member and explore",
    )
    g.add_argument(
        "--pbt-explore",
        choices=("perturb", "resample"),
        default=None,
        help="with --pbt-every: perturb each value by x0.8 or x1.25, or resample it from "
        "the swept values (default: perturb)",
    )
    g.add_argument(
        "--pbt-copy-buffer",
        action="store_true",
        help="with --pbt-every: a member that copies another takes its replay buffer too",
    )


def _population_args(args, parser, trainer, seeds) -> dict:
    """``run``'s population keywords from the options (checked: one line, exit 2, before
    anything is written); {} without --sweep."""
    if args.sweep is None:
        for option, value in (
            ("--pbt-every", args.pbt_every),
            ("--pbt-explore", args.pbt_explore),
            ("--pbt-copy-buffer", args.pbt_copy_buffer or None),
        ):
            if value is not None:
                parser.error(f"{option} needs --sweep NAME=V1,V2,...: the starting population")
        return {}
    if args.pbt_every is None:
        for option, value in (
            ("--pbt-explore", args.pbt_explore),
            ("--pbt-copy-buffer", args.pbt_copy_buffer or None),
        ):
            if value is not None:
                parser.error(f"{option} goes with --pbt-every ENV_STEPS")
    if args.data_parallel:
        parser.error("--sweep shards members x seeds over the devices; drop --data-parallel")
    from memjax.train import population

    try:
        sweep = population.parse_sweep(args.sweep)
        pop = population.make_population(
            trainer.config,
            sweep,
            seeds,
            args.pbt_every,
            args.pbt_explore or "perturb",
            args.pbt_copy_buffer,
        )
        population.check_traceable(trainer, pop)
    except ValueError as e:
        parser.error(str(e))
    return {
        "sweep": pop.sweep,
        "pbt_every": pop.pbt_every,
        "pbt_explore": pop.explore,
        "pbt_copy_buffer": pop.copy_buffer,
    }


def _config_from_args(args, parser):
    from memjax.cli_config import config_from_args

    if args.memory_budget is not None and hasattr(args, "buffer_capacity"):
        parser.error("argument --memory-budget: not allowed with argument --capacity")
    cfg = config_from_args(args)
    if (
        cfg.storage_layout != "flat"
        and not hasattr(args, "buffer_capacity")
        and cfg.buffer_capacity % cfg.num_envs
    ):
        cfg = cfg.replace(buffer_capacity=cfg.buffer_capacity - cfg.buffer_capacity % cfg.num_envs)
    if args.memory_budget is not None:
        from memjax.train import capacity_for_budget

        cfg = cfg.replace(buffer_capacity=capacity_for_budget(cfg, args.memory_budget))
    return cfg


def _subparser(parser, name: str):
    """The ``memjax NAME`` subparser of ``parser`` (its errors say ``memjax NAME``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    return parser


def _fail(message: str):
    """One line on stderr (no usage block, no traceback), exit status 2: for errors that are
    not about the command line's syntax (an output directory, a run's checkpoints)."""
    print(f"memjax train: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _train(args, parser) -> int:
    parser = _subparser(parser, "train")  # usage and errors name `memjax train`
    if args.device_budget is not None and not args.plan:
        parser.error(
            "--device-budget is the device memory of a memory plan: it needs --plan "
            "(to size a run's replay buffer, use --memory-budget SIZE per seed)"
        )
    if args.restart_if_unreadable and args.resume is None:
        parser.error("--restart-if-unreadable goes with --resume DIR")
    manual = (args.coordinator, args.num_processes, args.process_id)
    if any(x is not None for x in manual) and args.processes is not None:
        parser.error(
            "--processes starts the processes itself; --coordinator, "
            "--num-processes and --process-id are for processes started by hand"
        )
    if isinstance(args.processes, int) and args.processes > 1 and not args.plan:
        from memjax import distributed

        return distributed.launch(args.argv, args.processes, resume_hint=args.resume or args.out)
    if any(x is not None for x in manual) and not args.plan and None in manual:
        parser.error(
            "a process started by hand needs --coordinator HOST:PORT, "
            "--num-processes N and --process-id I"
        )
    return _train_here(args, parser)


def _processes(text: str):
    """``--processes``: a positive count, or ``auto`` (a cluster launcher's process)."""
    return "auto" if text.strip().lower() == "auto" else types.positive(text)


def _join_run(argv) -> bool:
    """For ``memjax train --coordinator HOST:PORT --num-processes N --process-id I`` or
    ``--processes auto`` (the launcher's environment says them, :func:`distributed.detect`;
    one line says what it found): join the multi-process run before anything starts jax's
    backend (importing gymnax does). Returns whether it joined one."""
    if argv[:1] != ["train"] or "--plan" in argv:
        return False
    early = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    early.add_argument("--coordinator")
    early.add_argument("--num-processes", type=int)
    early.add_argument("--process-id", type=int)
    early.add_argument("--processes")
    early.add_argument("--connect-timeout", type=float)
    try:
        known, _ = early.parse_known_args(argv[1:])
    except argparse.ArgumentError:
        return False  # the full parser says what is wrong
    if known.connect_timeout is not None and not known.connect_timeout > 0:
        return False  # likewise
    given = (known.coordinator, known.num_processes, known.process_id)
    auto = (known.processes or "").strip().lower() == "auto"
    if (None in given or known.processes is not None) and not (auto and given == (None,) * 3):
        return False  # _train says what is missing or conflicts
    from memjax import distributed

    seconds = known.connect_timeout or distributed.CONNECT_SECONDS
    try:
        local = None
        if auto:
            launch = distributed.detect(seconds)
            print(launch.describe(), flush=True)
            given, local = launch[1:4], launch.local_device_ids
        distributed.initialize(*given, connect_seconds=seconds, local_device_ids=local)
    except (ValueError, ConnectionError) as e:
        print(f"memjax train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return True


def _config_file_run(args, parser) -> dict:
    """``seeds`` and ``seed`` of ``--config FILE`` (a run's summary.json records them), so that
    ``--config runs/X/summary.json`` reruns run X."""
    if args.config is None:
        return {}
    from memjax.cli_config import read_config_file

    try:
        return read_config_file(args.config)[1]
    except ValueError as e:
        parser.error(str(e))


def _main_process() -> bool:
    import jax

    return jax.process_index() == 0


def _train_here(args, parser) -> int:
    from memjax import train as mj_train

    if args.resume is not None:
        return _resume(args, parser)
    try:
        cfg = _config_from_args(args, parser)
        trainer = mj_train.make_train(cfg)  # validates config, env and network before compiling
    except ValueError as e:
        parser.error(str(e))
    run = _config_file_run(args, parser)
    seeds = args.seeds if args.seeds is not None else run.get("seeds", DEFAULT_SEEDS)
    seed = args.seed if args.seed is not None else run.get("seed", 0)
    population = _population_args(args, parser, trainer, seeds)
    if args.plan:
        from memjax.train.plan import format_plan, plan

        members = _members(population)
        try:
            result = plan(
                cfg,
                seeds * members,
                budget_bytes=args.device_budget,
                devices=args.devices,
                data_parallel=args.data_parallel,
                peak=True,
            )
        except ValueError as e:
            parser.error(str(e))
        if population:
            from memjax.train.population import format_population_plan

            print(format_population_plan(result, members, seeds, args.device_budget))
        print(format_plan(result))
        return 0
    out = args.out or os.path.join("runs", f"{cfg.env}-{cfg.replay}")
    _check_out(out)
    if _main_process():
        members = _members(population)
        print(
            f"memjax train: {cfg.env}, "
            + (f"{members} members x " if population else "")
            + f"{seeds} seeds x {cfg.steps_done:,} steps, "
            f"{cfg.replay} replay (capacity {cfg.buffer_capacity:,}), out={out}",
            flush=True,
        )
    every = "auto" if args.checkpoint_every is None else args.checkpoint_every
    return _run_and_report(
        parser,
        cfg,
        seeds,
        out,
        seed,
        not args.no_progress,
        every,
        resume=False,
        devices=args.devices,
        data_parallel=args.data_parallel,
        population=population,
    )


def _members(population: dict) -> int:
    """The members of ``run``'s population keywords (1 without a sweep)."""
    sweep = population.get("sweep") or {}
    return math.prod(len(v) for v in sweep.values()) if sweep else 1


def _resume(args, parser) -> int:
    """``memjax train --resume DIR``: the run's own settings; explicit options must agree."""
    from memjax.cli_config import given_values, option_name
    from memjax.train import capacity_for_budget, checkpoints

    where = args.resume
    try:
        record = checkpoints.read_run(where)
        given = given_values(args)
    except (FileNotFoundError, ValueError) as e:
        parser.error(f"--resume {where}: {e}")
    saved, conflicts = record.config.settings(), []
    for name, value in given.items():
        if saved.get(name) != value:
            conflicts.append(
                f"{option_name(name)} {_shown(value)} (the run has {_shown(saved.get(name))})"
            )
    for option, value, own in (
        ("--seeds", args.seeds, record.num_seeds),
        ("--seed", args.seed, record.seed),
    ):
        if value is not None and value != own:
            conflicts.append(f"{option} {value} (the run has {own})")
    if args.out is not None and Path(args.out).resolve() != Path(where).resolve():
        conflicts.append(f"--out {args.out} (the run writes to {where})")
    if args.memory_budget is not None:
        try:
            capacity = capacity_for_budget(record.config, args.memory_budget)
        except ValueError as e:
            parser.error(f"--memory-budget: {e}")
        if capacity != record.config.buffer_capacity:
            conflicts.append(
                f"--memory-budget {args.memory_budget:,} B (capacity {capacity:,}; "
                f"the run has {record.config.buffer_capacity:,})"
            )
    if args.data_parallel and not record.data_parallel:
        conflicts.append("--data-parallel (the run shards its seeds)")
    if (
        any(x is not None for x in (args.sweep, args.pbt_every, args.pbt_explore))
        or args.pbt_copy_buffer
    ):
        conflicts.append("--sweep and --pbt-* (the run keeps its own population)")
    if conflicts:
        parser.error(
            f"--resume {where} continues the run with its own settings, and these "
            f"options conflict with them: {'; '.join(conflicts)}. Drop them, or "
            "start a new run with another --out"
        )
    cfg = record.config
    if checkpoints.run_is_complete(where, record):
        if _main_process():
            print(
                f"memjax train --resume {where}: the run is complete ({cfg.steps_done:,} "
                f"of {cfg.steps_done:,} steps); its results are in {where}, nothing to "
                "resume",
                flush=True,
            )
        return 0
    _check_out(where, "--resume")
    if _main_process():
        print(
            f"memjax train --resume {where}: {cfg.env}, {record.num_seeds} seeds x "
            f"{cfg.steps_done:,} steps, {cfg.replay} replay (capacity "
            f"{cfg.buffer_capacity:,})",
            flush=True,
        )
    return _run_and_report(
        parser,
        cfg,
        record.num_seeds,
        where,
        record.seed,
        not args.no_progress,
        args.checkpoint_every,
        resume=True,
        devices=args.devices,
        data_parallel=record.data_parallel > 0,
        restart_if_unreadable=args.restart_if_unreadable,
        population=_record_population(record),
    )


def _record_population(record) -> dict:
    """``run``'s population keywords of a checkpointed run's record ({} for none)."""
    if not record.population:
        return {}
    p = record.population
    return {
        "sweep": {k: tuple(v) for k, v in p["sweep"].items()},
        "pbt_every": p.get("pbt_every"),
        "pbt_explore": p.get("explore", "perturb"),
        "pbt_copy_buffer": bool(p.get("copy_buffer", False)),
    }


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _unwritable(out) -> str:
    """Why the output directory ``out`` cannot be created or written to ("" when it can):
    checked by creating it and a file in it, before anything is compiled."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        return "it exists and is not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".memjax-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        where = f" ({e.filename})" if e.filename and str(e.filename) != str(out) else ""
        return f"{e.strerror or e}{where}"
    return ""


def _check_out(out, option: str = "--out") -> None:
    """An output directory that cannot be written is an error, before anything compiles."""
    if _main_process() and (why := _unwritable(out)):
        _fail(f"{option} {out}: cannot write the run there: {why}")


def _run_and_report(
    parser,
    cfg,
    seeds,
    out,
    seed,
    progress,
    every,
    resume,
    devices=None,
    data_parallel=False,
    restart_if_unreadable=False,
    population=None,
) -> int:
    from memjax import train as mj_train
    from memjax.train import devices as mj_devices
    from memjax.train.checkpoints import IncompatibleCheckpoint, NoReadableCheckpoint
    from memjax.train.driver import Interrupted
    from memjax.train.results import nanmean_over_seeds

    population = population or {}
    try:  # before compiling anything
        mj_devices.layout(seeds * _members(population), devices, data_parallel)
    except ValueError as e:
        if population:
            e = ValueError(
                f"--sweep: {_members(population)} members x {seeds} seeds must be a multiple "
                f"of the devices that shard them ({e})"
            )
        parser.error(str(e))
    try:
        summary = mj_train.run(
            cfg,
            num_seeds=seeds,
            out_dir=out,
            seed=seed,
            progress=progress,
            checkpoint_every=every,
            resume=resume,
            devices_per_process=devices,
            data_parallel=data_parallel,
            restart_if_unreadable=restart_if_unreadable,
            **population,
        )
    except NoReadableCheckpoint as e:
        _fail(f"--resume {out}: {e}")
    except (FileExistsError, IncompatibleCheckpoint) as e:
        parser.error(str(e))
    except Interrupted as e:
        if _main_process():
            wrote = (
                f"; wrote the results so far to {out} (summary.json: interrupted)"
                if e.paths
                else ""
            )
            then = (
                (
                    f"; continue it from its newest checkpoint with: memjax train --resume "
                    f"{shlex.quote(str(out))}"
                )
                if e.resumable
                else "; it has no checkpoints (--checkpoint-every 0), so it cannot be resumed"
            )
            print(
                f"memjax train: interrupted at step {e.steps_done:,} of {e.steps:,}{wrote}{then}",
                file=sys.stderr,
                flush=True,
            )
        return 130
    if not _main_process():
        return 0
    per_seed = ", ".join(f"{x:.1f}" for x in summary["final_return_per_seed"])
    known = [
        f"{name} {summary[key]:g}"
        for name, key in (("chance", "chance_return"), ("best", "best_return"))
        if summary.get(key) is not None
    ]
    per_seed += f"; {', '.join(known)}" if known else ""
    lanes = seeds * _members(population)
    runs = f"{seeds} seeds" if lanes == seeds else f"{lanes} lanes (members x seeds)"
    print(
        f"final greedy return: {summary['final_return_mean']:.1f} (per seed: {per_seed})\n"
        f"{summary['steps_per_second']:,.0f} steps/s over {runs} on "
        f"{summary['devices']} device(s), {summary['processes']} process(es) "
        f"({summary['train_seconds']:.1f} s training, {summary['eval_seconds']:.1f} s eval), "
        f"compile {summary['compile_seconds']:.1f} s, "
        f"{summary['bytes_per_transition']:.1f} bytes/transition",
        flush=True,
    )
    if "members" in summary:
        from memjax.train.population import Population, describe

        pop = Population.from_json(summary["population"], seeds)
        best = summary["members"][summary["best_member"]]
        print(
            f"best member: {best['member']} of {pop.num_members} ({describe(pop, best)}), "
            f"final greedy return {best['final_return_mean']:.1f}; all members: "
            + ", ".join(f"{m['final_return_mean']:.1f}" for m in summary["members"]),
            flush=True,
        )
    if "eval_task_return" in summary["curves"]:  # a multi-task env: [points, seeds, tasks]
        tasks = nanmean_over_seeds(summary["curves"]["eval_task_return"][-1].T)  # as summary.json
        print(
            "final greedy return per task: "
            + ", ".join(f"{t}: {x:.1f}" for t, x in enumerate(tasks)),
            flush=True,
        )
    if summary["eval_unfinished_final"]:
        print(
            f"evaluation: {summary['eval_unfinished_final']} of "
            f"{lanes * summary['eval_episodes']} final greedy episodes were still running "
            f"at the cap of {summary['eval_max_steps']:,} steps (their returns are partial; "
            "see --eval-max-steps)",
            flush=True,
        )
    storage = summary.get("replay_storage", {})
    lossy = {
        name: c
        for name, c in storage.get("codec_counters", {}).items()
        if c["clipped"] or c["invalid"]
    }
    if lossy:
        print(
            "replay codecs: "
            + "; ".join(
                f"{name}: {c['clipped']:,} values clipped, {c['invalid']:,} invalid"
                for name, c in lossy.items()
            )
            + " (all seeds; see summary.json replay_storage)",
            flush=True,
        )
    if storage.get("layout_errors"):
        print(
            f"replay layout: {storage['layout_errors']:,} frame stacks broke the frame-stack "
            "convention and come back wrong from the buffer",
            flush=True,
        )
    return 0


def main(argv=None) -> int:
    """Entry point of the ``memjax`` console script. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        joined = _join_run(argv)
        try:
            parser = build_parser(argv)
            _check_agent_options(argv, parser)
            args = parser.parse_args(argv)
            args.argv = argv  # `--processes N` starts N copies of this command line
            if args.command == "compress":
                from memjax.compress.cli import run as _compress

                return _compress(args, parser)
            if args.command == "export":
                return _export(args, parser)
            return _train(args, parser)
        finally:
            if joined:
                from memjax import distributed

                distributed.shutdown()
    except KeyboardInterrupt:
        print("memjax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
