"""``memjax compress``: compress a trained checkpoint and measure what it costs.

    memjax compress runs/cartpole --method int8 --method prune:0.9+int8 --episodes 100
    memjax compress runs/cartpole --method distill:32,32+int8 --out runs/cartpole-small

Reads ``CHECKPOINT/checkpoint.msgpack`` (written by ``memjax train --out``), applies each
``--method`` to every seed (see :mod:`memjax.compress.pipeline` for the spec syntax), reads each
artefact back from its serialized bytes, evaluates it (greedy return over ``--episodes``
episodes per seed, action agreement with the original on states its greedy policy visits)
and prints a markdown table; ``--out`` also writes the artefacts and ``results.json``.
Invalid options get one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from memjax import _argtypes as types

DEFAULT_METHODS = (
    "int8",
    "int4",
    "int2",
    "prune:0.5",
    "prune:0.9",
    "prune:0.9+int8",
    "lowrank:0.99",
    "share:16",
    "share:4",
)


def _seeds(text: str) -> list:
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated seed indices like 0,1,2, got {text!r}"
        ) from None
    if not out or any(s < 0 for s in out):
        raise argparse.ArgumentTypeError(f"seed indices must be >= 0, got {text!r}")
    return out


def _error(message: str):
    """One line on stderr, exit status 2 (no usage block, no traceback)."""
    print(f"memjax compress: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


DESCRIPTION = """\
Compress a trained checkpoint (memjax train --out DIR) and measure what it costs: each
method's artefact size, greedy return and action agreement with the original.

examples:
  memjax compress runs/cartpole --method int8 --method prune:0.9+int8 --episodes 100
  memjax compress runs/cartpole --method distill:32,32+int8 --out runs/cartpole-small

methods: float32, int8, int4, int2 (':tensor' for one scale per kernel),
prune:S[:global|uniform|erk], gprune:S (gradual, while distilling), lowrank:E (kept
energy) or lowrank:rR, share:K, distill:H1,H2 (MLP student) or distill:C/H (conv
student); combine them with '+', e.g. prune:0.9+int8, distill:32,32+int8."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; each option's default once, where it has one and its
    help does not already say it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            "(default" in text
            or action.default in (None, argparse.SUPPRESS)
            or action.nargs == 0
            or not action.option_strings
        ):
            return text
        default = f"{action.default:,}" if isinstance(action.default, int) else "%(default)s"
        return f"{text} (default: {default})"


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``compress`` on an argparse subparsers object; returns the parser."""
    c = sub.add_parser(
        "compress",
        help="compress a trained Q-network checkpoint and evaluate it",
        description=DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    c.add_argument("checkpoint", help="directory with checkpoint.msgpack (memjax train --out)")
    c.add_argument(
        "--method",
        action="append",
        default=None,
        metavar="SPEC",
        help=f"compression spec, repeatable (default: {', '.join(DEFAULT_METHODS)})",
    )
    c.add_argument(
        "--episodes", type=types.positive, default=100, help="greedy evaluation episodes per seed"
    )
    c.add_argument(
        "--epsilon", type=types.fraction, default=0.0, help="evaluation epsilon (0: greedy)"
    )
    c.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="checkpoint seeds to use, e.g. 0,1 (default: all)",
    )
    c.add_argument(
        "--distill-steps",
        type=types.positive,
        default=200_000,
        help="env steps of teacher data per seed for distill/gprune",
    )
    c.add_argument("--out", default=None, help="write artefacts and results.json here")
    c.error = _error  # argparse's own errors (bad types, unknown options): one line too
    return c


def run(args, parser=None) -> int:
    """Run ``memjax compress`` for parsed ``args``; errors exit 2 with one line."""
    from memjax.compress import pipeline
    from memjax.compress.distill import distill_train_config
    from memjax.train import params_file

    methods = args.method or list(DEFAULT_METHODS)
    try:
        for m in methods:
            pipeline.parse_spec(m)
        ck = params_file.load(args.checkpoint)
        dcfg = distill_train_config(
            total_steps=args.distill_steps, chunk_steps=min(20_000, args.distill_steps)
        )
        ctx = pipeline.make_context(
            ck,
            seeds=args.seeds,
            episodes=args.episodes,
            epsilon=args.epsilon,
            distill_config=dcfg,
            log=lambda s: print(s, file=sys.stderr, flush=True),
        )
    except (ValueError, FileNotFoundError, IndexError) as e:
        _error(str(e))
    rows = pipeline.run_specs(ctx, methods, out_dir=args.out)
    chance = pipeline.chance_check(ctx)
    if chance["at_chance"]:
        print(
            f"memjax compress: warning: the checkpoint's own return "
            f"({chance['teacher_return']:.3g}) is no better than a uniformly random "
            f"policy's ({chance['random_return']:.3g}, same episodes): it looks untrained, so "
            "'% of float32' compares chance with chance",
            file=sys.stderr,
            flush=True,
        )
    table = pipeline.format_table(rows)
    print(
        f"{ck.config.env}: {len(ctx.seeds)} seeds x {args.episodes} episodes "
        f"(epsilon {args.epsilon})\n{table}",
        flush=True,
    )
    if args.out is not None:
        from pathlib import Path

        from memjax.train.results import json_safe

        p = Path(args.out) / "results.json"
        p.write_text(
            json.dumps(
                json_safe(
                    {
                        "env": ck.config.env,
                        "checkpoint": args.checkpoint,
                        "seeds": ctx.seeds,
                        "episodes": args.episodes,
                        "epsilon": args.epsilon,
                        "random_policy_return": chance["random_return"],
                        "rows": rows,
                        # what memjax export needs to rebuild each artefact's network
                        "teacher": {"config": ck.config.to_dict(), "meta": ck.meta},
                    }
                ),
                indent=2,
            )
        )
        print(f"wrote {p}", flush=True)
    return 0


def main(argv=None) -> int:
    """``python -m memjax.compress.cli CHECKPOINT ...`` (same as ``memjax compress``)."""
    parser = argparse.ArgumentParser(prog="memjax")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["compress", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
