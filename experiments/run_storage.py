"""Memory vs return: DQN with compressed replay storage (issue 4's table and plots).

    python experiments/run_storage.py --env CartPole-v1 --seeds 8 \\
        --variants float32,int8,int4,kmeans16,float16
    python experiments/run_storage.py --env Breakout-MinAtar --seeds 3 --steps 250000 \\
        --variants float32,bitpack
    python experiments/run_storage.py --env CartPole-v1 --seeds 8 --budget 64KiB \\
        --variants float32,int8          # fixed memory: capacity from the byte budget
    python experiments/run_storage.py --report-only

Variants (observation storage; every compressed variant also stores actions and
``terminated`` as uint8, rewards as int8 — exact for CartPole and MinAtar — and uses the
one-copy layout, so each observation is stored once):

  float32    the default replay: flat layout, everything float32/int32 as given
  one_copy   float32 observations, but the one-copy layout and compact small fields
  bitpack    1 bit per value (0/1 observations: MinAtar); lossless
  int8/int4/int2, kmeans16, float16, bfloat16   see ``memjax.train.storage``

Runs go through :func:`memjax.train.run` (the ``memjax train`` host loop) into
``experiments/results/storage/<env>-<variant>[-budget]/``. The report (also
``--report-only``) writes ``experiments/results/storage/storage_table.md`` and per env
``<env>-return-vs-bytes.png`` and ``<env>-curves.png``.

``--check-identical N`` runs every lossless variant for N steps (3 seeds) and checks that
their final parameters equal the float32 run's bit for bit (the same seeds), printing the
result; the report quotes it from ``identical_<env>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from experiments._common import git_state, update_summary  # noqa: E402
from experiments.run_results import minatar_preset, read_eval_curve  # noqa: E402
from memjax._argtypes import positive  # noqa: E402

OUT = _ROOT / "experiments" / "results" / "storage"
COMPACT = dict(compact_fields=True, reward_codec="int8", layout="one_copy")
VARIANTS = {
    "float32": {},
    "one_copy": dict(**COMPACT),  # float32 observations, stored once; small fields compacted
    "bitpack": dict(obs_codec="bitpack", **COMPACT),
    # a side store of 1/8 of the capacity: enough for Breakout's ~10-step random episodes
    "bitpack_side8": dict(obs_codec="bitpack", **COMPACT, side_fraction=1 / 8),
    "int8": dict(obs_codec="int8", **COMPACT),
    "int4": dict(obs_codec="int4", **COMPACT),
    "int2": dict(obs_codec="int2", **COMPACT),
    "kmeans16": dict(obs_codec="kmeans16", **COMPACT),
    "float16": dict(obs_codec="float16", **COMPACT),
    "bfloat16": dict(obs_codec="bfloat16", **COMPACT),
}


def config_for(env: str, steps: int, variant: str, budget=None):
    from memjax.train import TrainConfig, capacity_for_budget

    kw = {"env": env, "total_steps": steps}
    if env.endswith("-MinAtar"):
        kw.update(minatar_preset(steps))
    # float32 is "plain" storage (before lossless storage became the default); every other
    # variant sets what it stores
    cfg = dataclasses.replace(TrainConfig(storage="plain"), **kw, **VARIANTS[variant])
    if cfg.layout == "one_copy":
        cfg = dataclasses.replace(
            cfg, buffer_capacity=cfg.buffer_capacity - cfg.buffer_capacity % cfg.num_envs
        )
    if budget is not None:
        cfg = dataclasses.replace(cfg, buffer_capacity=capacity_for_budget(cfg, budget))
    return cfg.validate()


def run_dir(env: str, variant: str, budget=None) -> Path:
    return OUT / (f"{env}-{variant}" + (f"-budget{budget}" if budget else ""))


def run_one(args, variant: str) -> dict:
    from memjax import train as mj_train

    cfg = config_for(args.env, args.steps, variant, args.budget)
    out = run_dir(args.env, variant, args.budget)
    print(
        f"== {cfg.env} / {variant}: {args.seeds} seeds x {cfg.steps_done:,} steps, capacity "
        f"{cfg.buffer_capacity:,} -> {out}",
        flush=True,
    )
    git = git_state(short=True)
    t0 = time.perf_counter()
    summary = mj_train.run(
        cfg, num_seeds=args.seeds, out_dir=out, seed=args.seed, progress=not args.no_progress
    )
    wall = time.perf_counter() - t0
    command = (
        f"python experiments/run_storage.py --env {args.env} --seeds {args.seeds} "
        f"--steps {args.steps} --variants {variant}"
        + (f" --budget {args.budget}" if args.budget else "")
    )
    data = update_summary(
        out, variant=variant, budget_bytes=args.budget, wall_seconds=wall, command=command, **git
    )
    print(
        f"   final greedy return {summary['final_return_mean']:.2f} ± "
        f"{summary['final_return_std']:.2f}; {summary['bytes_per_transition']:.1f} B/transition; "
        f"{summary['steps_per_second']:,.0f} steps/s; storage {data['replay_storage']}",
        flush=True,
    )
    return data


def check_identical(args) -> dict:
    """Final params of each lossless variant vs float32 (same seeds), bit for bit."""
    import jax

    from memjax.train import make_train

    result = {"env": args.env, "steps": args.check_identical, "seeds": 3, "identical": {}}
    ref = None
    for variant in ["float32"] + [v for v in args.variants if v != "float32"]:
        cfg = config_for(args.env, args.check_identical, variant)
        cfg = dataclasses.replace(cfg, side_fraction=1.0, chunk_steps=args.check_identical)
        trainer = make_train(cfg)
        t0 = time.perf_counter()
        state, metrics = jax.jit(jax.vmap(trainer.train))(
            jax.random.split(jax.random.key(args.seed), 3)
        )
        params = jax.device_get(state.agent.params)
        if ref is None:
            ref = params
            continue
        same = all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref))
        )
        result["identical"][variant] = bool(same)
        print(
            f"   {variant}: final params {'IDENTICAL to' if same else 'differ from'} float32 "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"identical_{args.env}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def load(root: Path) -> list:
    runs = []
    for path in sorted(root.glob("*/summary.json")):
        data = json.loads(path.read_text())
        data["dir"] = path.parent
        runs.append(data)
    return runs


def _save(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid and save a report figure (120 dpi), then close it."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(root: Path = OUT) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load(root)
    written = []
    lines = [
        "| env | storage | capacity | bytes / transition | vs float32 | final greedy return "
        "(mean ± std over seeds) | % of float32 | values clipped | steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for env in sorted({r["env"] for r in runs}):
        env_runs = [r for r in runs if r["env"] == env]
        base = next(
            (r for r in env_runs if r["variant"] == "float32" and not r.get("budget_bytes")), None
        )
        order = list(VARIANTS)
        env_runs.sort(key=lambda r: (bool(r.get("budget_bytes")), order.index(r["variant"])))
        for r in env_runs:
            bpt = r["bytes_per_transition"]
            ratio = f"{base['bytes_per_transition'] / bpt:.1f}x smaller" if base else ""
            ratio = "baseline" if r is base else ratio
            pct = f"{100 * r['final_return_mean'] / base['final_return_mean']:.1f}%" if base else ""
            clipped = sum(c["clipped"] for c in r["replay_storage"]["codec_counters"].values())
            name = r["variant"] + (
                f" @ {r['budget_bytes'] / 1024:,.0f} KiB" if r.get("budget_bytes") else ""
            )
            lines.append(
                f"| {env} | {name} | {r['buffer_capacity']:,} | {bpt:,.1f} | {ratio} | "
                f"{r['final_return_mean']:.1f} ± {r['final_return_std']:.1f} ({r['seeds']} seeds x "
                f"{r['steps']:,}) | {pct} | {clipped:,} | {r['steps_per_second']:,.0f} |"
            )

        # return vs bytes per transition
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in env_runs:
            if r.get("budget_bytes"):
                continue
            ax.errorbar(
                r["bytes_per_transition"],
                r["final_return_mean"],
                yerr=r["final_return_std"],
                fmt="o",
                capsize=3,
            )
            ax.annotate(
                r["variant"],
                (r["bytes_per_transition"], r["final_return_mean"]),
                textcoords="offset points",
                xytext=(5, 5),
            )
        ax.set_xscale("log")
        written.append(
            _save(
                fig,
                ax,
                root / f"{env}-return-vs-bytes.png",
                "replay bytes per transition (log)",
                "final greedy return",
                f"{env}: return vs replay memory",
            )
        )

        fig, ax = plt.subplots(figsize=(7, 4))
        for r in env_runs:
            steps, ret = read_eval_curve(r["dir"])
            mean = ret.mean(axis=1)
            label = r["variant"] + (
                f" @ {r['budget_bytes'] / 1024:,.0f} KiB (cap {r['buffer_capacity']:,})"
                if r.get("budget_bytes")
                else f" ({r['bytes_per_transition']:,.1f} B)"
            )
            ax.plot(steps, mean, label=label, ls="--" if r.get("budget_bytes") else "-")
        ax.legend(fontsize=8)
        written.append(
            _save(
                fig,
                ax,
                root / f"{env}-curves.png",
                "env steps per seed",
                "greedy return (mean over seeds)",
                f"{env}: replay storage",
            )
        )

    notes = []
    for path in sorted(root.glob("identical_*.json")):
        d = json.loads(path.read_text())
        same = ", ".join(
            f"{k}: {'identical' if v else 'DIFFERENT'}" for k, v in d["identical"].items()
        )
        notes.append(
            f"- {d['env']}, {d['seeds']} seeds x {d['steps']:,} steps, final parameters "
            f"vs float32 storage: {same}."
        )
    table = root / "storage_table.md"
    table.write_text("\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n")
    written.append(table)
    return written


def memory_table(root: Path) -> Path:
    """Bytes per transition (one seed, capacity 1e5, uniform replay, from jax.eval_shape) for
    each variant with and without a 4-frame stack: what the layouts and codecs store."""
    import jax

    from memjax.train import example_transition, make_buffer, make_env_for
    from memjax.train.storage import make_codecs

    lines = [
        "| env | frame stack | storage | stored bytes / transition | raw bytes / transition | "
        "ratio |",
        "|---|---|---|---|---|---|",
    ]
    for env_name in ("CartPole-v1", "Breakout-MinAtar"):
        for k in (1, 4):
            for variant in VARIANTS:
                if variant == "bitpack" and env_name == "CartPole-v1":
                    continue
                cfg = dataclasses.replace(
                    config_for(env_name, 500_000, variant),
                    frame_stack=k,
                    buffer_capacity=100_000,
                    calibration_steps=2_000,
                )
                env, params = make_env_for(cfg)
                buf = make_buffer(cfg, make_codecs(cfg, env, params))
                rep = buf.memory(jax.eval_shape(buf.init, example_transition(env, params)))
                lines.append(
                    f"| {env_name} | {k} | {variant} | {rep.bytes_per_item:,.1f} | "
                    f"{rep.raw_bytes_per_item:,.0f} | {rep.compression_ratio:,.1f}x |"
                )
    path = root / "memory_table.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    global OUT
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=positive, default=500_000)
    p.add_argument("--variants", default="float32,int8,int4,kmeans16,float16")
    p.add_argument("--budget", default=None, help="fixed memory per seed, e.g. 64KiB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-identical", type=positive, default=None, metavar="STEPS")
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--memory-table",
        action="store_true",
        help="only write memory_table.md (bytes per transition, no training)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out-root", default=str(OUT), help="results folder")
    args = p.parse_args(argv)
    OUT = Path(args.out_root)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variants {bad}; known: {', '.join(VARIANTS)}")
    if args.budget is not None:
        from memjax.cli import parse_size

        args.budget = parse_size(args.budget)
    if args.memory_table:
        print("wrote", memory_table(OUT))
        return 0
    if not args.report_only:
        if args.check_identical:
            check_identical(args)
        else:
            for variant in args.variants:
                run_one(args, variant)
    for path in write_report(OUT):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
