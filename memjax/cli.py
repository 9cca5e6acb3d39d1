"""The ``memjax`` command line: ``memjax train ...`` and ``memjax bench ...``.

Invalid options get one clear line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from memjax import _argtypes as types


def _obs_codec(text: str) -> str:
    from memjax.train.storage import check_obs_codec

    try:
        check_obs_codec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memjax", description="Memory-efficient replay and fused RL training loops in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="{train,bench,compress}")
    sub.required = True
    train = sub.add_parser(
        "train", help="train an agent (DQN) on a gymnax environment, vmapped over seeds",
        description="Train an agent (DQN) on a gymnax environment with several vmapped seeds; "
                    "writes returns.csv, returns.json, curve.png and summary.json to --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_train_options(train)
    _add_storage_options(train.add_argument_group("replay storage (memory)"))
    b = sub.add_parser("bench", help="replay benchmarks (experiments/bench_replay.py)",
                       add_help=False)
    b.add_argument("rest", nargs=argparse.REMAINDER)
    from memjax.compress.cli import add_parser as _add_compress  # `memjax compress`

    _add_compress(sub)
    return parser


def _add_train_options(t) -> None:
    from memjax.train import AGENT_KINDS, TrainConfig

    d = TrainConfig()
    t.add_argument("--env", default=d.env, help="gymnax environment id")
    t.add_argument("--agent", choices=AGENT_KINDS, default=d.agent,
                   help="the learning agent (dqn; --double-dqn for Double DQN)")
    t.add_argument("--seeds", type=types.positive, default=8, help="independent seeds (vmapped)")
    t.add_argument("--steps", type=types.positive, default=d.total_steps,
                   help="environment steps per seed")
    t.add_argument("--replay", choices=("uniform", "prioritized"), default=d.replay)
    size = t.add_mutually_exclusive_group()
    size.add_argument("--capacity", type=types.positive, default=None,
                      help=f"replay capacity in transitions (default {d.buffer_capacity})")
    size.add_argument("--memory-budget", type=types.parse_size, default=None, metavar="SIZE",
                      help="replay memory per seed, e.g. 64MB; sets the largest capacity "
                           "that fits")
    t.add_argument("--out", default=None, help="output directory (default runs/ENV-REPLAY)")
    t.add_argument("--network", choices=("auto", "mlp", "conv"), default=d.network,
                   help="Q-network; auto: conv for image observations, else mlp")
    t.add_argument("--hidden", type=types.hidden, default=d.hidden, help="MLP hidden widths")
    t.add_argument("--num-envs", type=types.positive, default=d.num_envs)
    t.add_argument("--batch-size", type=types.positive, default=d.batch_size)
    t.add_argument("--lr", type=types.positive_float, default=d.lr)
    t.add_argument("--lr-end", type=types.optional_float, default=d.lr_end,
                   help="decay the learning rate linearly to this over training; "
                        "'none' keeps it constant")
    t.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm,
                   help="global gradient-norm clip; 0 disables")
    t.add_argument("--gamma", type=types.fraction, default=d.gamma)
    t.add_argument("--loss", choices=("huber", "mse"), default=d.loss)
    t.add_argument("--double-dqn", action=argparse.BooleanOptionalAction, default=d.double_dqn)
    t.add_argument("--n-step", type=types.positive, default=d.n_step,
                   help="n-step targets, computed from stored windows of n steps (n > 1 "
                        "stores replay in the sequence layout)")
    t.add_argument("--target-update-every", type=types.positive, default=d.target_update_every,
                   help="env steps between target-network updates")
    t.add_argument("--tau", type=types.fraction, default=d.tau,
                   help="1: hard target copy; <1: Polyak step at each target update")
    t.add_argument("--learning-starts", type=types.non_negative, default=d.learning_starts)
    t.add_argument("--train-every", type=types.positive, default=d.train_every,
                   help="vector steps per gradient update")
    t.add_argument("--eps-start", type=types.fraction, default=d.eps_start)
    t.add_argument("--eps-end", type=types.fraction, default=d.eps_end)
    t.add_argument("--eps-decay-steps", type=types.positive, default=d.eps_decay_steps)
    t.add_argument("--alpha", type=float, default=d.alpha, help="PER priority exponent")
    t.add_argument("--beta-start", type=float, default=d.beta_start,
                   help="PER importance exponent, annealed linearly to 1")
    t.add_argument("--chunk-steps", type=types.positive, default=d.chunk_steps,
                   help="env steps per compiled chunk; greedy evaluation after each")
    t.add_argument("--eval-episodes", type=types.positive, default=d.eval_episodes)
    t.add_argument("--seed", type=types.non_negative, default=0, help="base PRNG seed")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_storage_options(st) -> None:
    from memjax.train import TrainConfig
    from memjax.train.storage import LAYOUTS

    d = TrainConfig()
    st.add_argument("--obs-codec", type=_obs_codec, default=d.obs_codec,
                    help="observation storage: none, bitpack, int8, int4, int2, kmeans16 (any "
                         "kmeansK), float16, bfloat16")
    st.add_argument("--reward-codec", choices=("none", "int8", "float16"), default=d.reward_codec,
                    help="reward storage; int8 is exact for integer rewards")
    st.add_argument("--compact-fields", action=argparse.BooleanOptionalAction,
                    default=d.compact_fields, help="store actions and terminated as uint8")
    st.add_argument("--layout", choices=LAYOUTS, default=d.layout,
                    help="one_copy: each observation stored once; sequence: each step stored "
                         "once, sampled as windows of --n-step steps")
    st.add_argument("--frame-stack", type=types.positive, default=d.frame_stack,
                    help="stack the last k frames (one_copy stores single frames)")
    st.add_argument("--side-fraction", type=types.fraction, default=d.side_fraction,
                    help="one_copy: side-store entries for final observations per transition")
    st.add_argument("--calibration-steps", type=types.positive, default=d.calibration_steps,
                    help="random-policy observations used to fit int*/kmeans codecs")


def _config_from_args(args):
    import dataclasses

    from memjax.train import TrainConfig

    kw = dict(
        env=args.env, agent=args.agent, n_step=args.n_step, total_steps=args.steps, replay=args.replay, network=args.network,
        hidden=tuple(args.hidden), num_envs=args.num_envs, batch_size=args.batch_size,
        lr=args.lr, lr_end=args.lr_end,
        max_grad_norm=None if not args.max_grad_norm else args.max_grad_norm,
        gamma=args.gamma, loss=args.loss, double_dqn=args.double_dqn,
        target_update_every=args.target_update_every, tau=args.tau,
        learning_starts=args.learning_starts, train_every=args.train_every,
        eps_start=args.eps_start, eps_end=args.eps_end, eps_decay_steps=args.eps_decay_steps,
        alpha=args.alpha, beta_start=args.beta_start, chunk_steps=args.chunk_steps,
        eval_episodes=args.eval_episodes, obs_codec=args.obs_codec,
        reward_codec=args.reward_codec, compact_fields=args.compact_fields, layout=args.layout,
        frame_stack=args.frame_stack, side_fraction=args.side_fraction,
        calibration_steps=args.calibration_steps)
    if args.capacity is not None:
        kw["buffer_capacity"] = args.capacity
    cfg = dataclasses.replace(TrainConfig(), **kw)
    if cfg.storage_layout != "flat" and args.capacity is None and cfg.buffer_capacity % cfg.num_envs:
        cfg = dataclasses.replace(cfg, buffer_capacity=cfg.buffer_capacity
                                  - cfg.buffer_capacity % cfg.num_envs)
    if args.memory_budget is not None:
        from memjax.train import capacity_for_budget

        cfg = dataclasses.replace(cfg, buffer_capacity=capacity_for_budget(cfg,
                                                                           args.memory_budget))
    return cfg


def _train(args, parser) -> int:
    from memjax import train as mj_train

    try:
        cfg = _config_from_args(args)
        mj_train.make_train(cfg)  # validates config, env and network before compiling
    except ValueError as e:
        parser.error(str(e))
    out = args.out or os.path.join("runs", f"{cfg.env}-{cfg.replay}")
    print(f"memjax train: {cfg.env}, {args.seeds} seeds x {cfg.steps_done:,} steps, "
          f"{cfg.replay} replay (capacity {cfg.buffer_capacity:,}), out={out}", flush=True)
    summary = mj_train.run(cfg, num_seeds=args.seeds, out_dir=out, seed=args.seed,
                           progress=not args.no_progress)
    per_seed = ", ".join(f"{x:.1f}" for x in summary["final_return_per_seed"])
    print(f"final greedy return: {summary['final_return_mean']:.1f} (per seed: {per_seed})\n"
          f"{summary['steps_per_second']:,.0f} steps/s over {args.seeds} seeds "
          f"({summary['train_seconds']:.1f} s training, {summary['eval_seconds']:.1f} s eval), "
          f"compile {summary['compile_seconds']:.1f} s, "
          f"{summary['bytes_per_transition']:.1f} bytes/transition", flush=True)
    storage = summary.get("replay_storage", {})
    lossy = {name: c for name, c in storage.get("codec_counters", {}).items()
             if c["clipped"] or c["invalid"]}
    if lossy:
        print("replay codecs: " + "; ".join(f"{name}: {c['clipped']:,} values clipped, "
                                            f"{c['invalid']:,} invalid" for name, c in lossy.items())
              + " (all seeds; see summary.json replay_storage)", flush=True)
    if storage.get("layout_errors"):
        print(f"replay layout: {storage['layout_errors']:,} frame stacks broke the frame-stack "
              "convention and come back wrong from the buffer", flush=True)
    return 0


def _find_bench(package_dir: Path = Path(__file__).resolve().parent):
    """experiments/bench_replay.py of the memjax source checkout this package runs from, or
    None (an installed wheel has no experiments/). Never a file from the working directory:
    ``memjax bench`` runs only memjax's own benchmark."""
    root = package_dir.parent
    pyproject = root / "pyproject.toml"
    script = root / "experiments" / "bench_replay.py"
    if script.is_file() and pyproject.is_file() and 'name = "memjax"' in pyproject.read_text():
        return script
    return None


def _bench(rest) -> int:
    path = _find_bench()
    if path is None:
        print("memjax bench: experiments/bench_replay.py not found next to this memjax "
              "package: the benchmarks ship with the source, not the installed package; clone "
              "the repository and `pip install -e .` it, or run "
              "`python experiments/bench_replay.py` there", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("memjax_bench_replay", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except ImportError as e:
        print(f"memjax bench: cannot import {path}: {e}", file=sys.stderr)
        return 2
    fn = getattr(mod, "main", None)
    if fn is None:
        print(f"memjax bench: {path} has no main()", file=sys.stderr)
        return 2
    try:
        takes_argv = len(inspect.signature(fn).parameters) > 0
    except (TypeError, ValueError):
        takes_argv = False
    if takes_argv:
        rc = fn(list(rest))
    else:
        old = sys.argv
        sys.argv = [str(path)] + list(rest)
        try:
            rc = fn()
        finally:
            sys.argv = old
    return int(rc or 0)


def main(argv=None) -> int:
    """Entry point of the ``memjax`` console script. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:  # everything after `bench` belongs to the bench script
            return _bench(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command == "compress":
            from memjax.compress.cli import run as _compress

            return _compress(args, parser)
        return _train(args, parser)
    except KeyboardInterrupt:
        print("memjax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
