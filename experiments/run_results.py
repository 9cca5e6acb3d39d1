"""Reproduce the README's DQN results: uniform vs prioritized replay, several vmapped seeds.

    python experiments/run_results.py --env CartPole-v1 --replay uniform,prioritized --seeds 8
    python experiments/run_results.py --env Breakout-MinAtar --replay uniform,prioritized \\
        --seeds 3 --steps 500000
    python experiments/run_results.py --env CartPole-v1 --replay uniform --n-step 3 --seeds 8
    python experiments/run_results.py --report-only     # table and plots from what is there

Each (env, replay) run goes through :func:`memjax.train.run` (the same host loop as
``memjax train``: AOT-compiled chunks, tqdm progress bar, greedy evaluation after every chunk)
and writes ``summary.json``, ``returns.csv``, ``returns.json`` and ``curve.png`` into
``experiments/results/<env>-<replay>/`` (``<env>-<replay>-n<N>/`` for N-step targets).
``summary.json`` gets three extra keys here: ``wall_seconds`` (the whole run, compile and
evaluation included), ``command`` (how to reproduce it) and ``note``.

After the runs (or with ``--report-only``) the script rewrites, from every
``experiments/results/*/summary.json``:

* ``experiments/results/results_table.md``: the README-ready table and image links;
* ``experiments/results/<env>-uniform-vs-prioritized.png``: mean greedy return over seeds
  against env steps, one line per replay kind (1-step targets), with a +-1 std band over seeds;
* ``experiments/results/<env>-n-step.png`` where an env has N-step runs: 1-step vs N-step.

Settings: the ``TrainConfig`` defaults (tuned for CartPole-v1), and for MinAtar games
(``*-MinAtar``) the preset below unless overridden on the command line: replay capacity 1e5,
epsilon decaying over the first half of the steps, learning starts at 10k, one compiled chunk
(and one greedy evaluation) per 50k steps. Any other ``TrainConfig`` field can be set with
``--set NAME=VALUE`` (e.g. ``--set double_dqn=true --set target_update_every=1000``).
Runs are sequential (one replay kind after the other), never concurrent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
import typing
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from experiments._common import git_state, update_summary  # noqa: E402
from memjax._argtypes import positive  # noqa: E402

RESULTS = _ROOT / "experiments" / "results"
REPLAYS = ("uniform", "prioritized")
COLORS = {"uniform": "C0", "prioritized": "C3"}
N_STEP_COLORS = {1: "C0", 3: "C2", 5: "C4"}


def run_name(env: str, replay: str, n_step: int) -> str:
    """The run's directory name: ``<env>-<replay>``, plus ``-n<N>`` for N-step targets."""
    return f"{env}-{replay}" + (f"-n{n_step}" if n_step > 1 else "")


def run_label(run: dict) -> str:
    n = run.get("n_step", 1)
    return run["replay"] + (f", {n}-step" if n > 1 else "")


def minatar_preset(total_steps: int) -> dict:
    """TrainConfig overrides for MinAtar games (conv net chosen by network='auto')."""
    return {
        "buffer_capacity": 100_000,
        "eps_decay_steps": max(1, total_steps // 2),
        "learning_starts": 10_000,
        "chunk_steps": 50_000,
    }


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _replays(text: str) -> list:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in REPLAYS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(
            f"--replay takes a comma-separated list of {REPLAYS}, got {text!r}"
        )
    return kinds


def _field_value(name: str, text: str):
    """Parse ``text`` for setting ``name`` (a TrainConfig field or a DQNConfig knob) from the
    field's annotated type."""
    from memjax.agents import DQNConfig
    from memjax.train import TrainConfig

    hints = {**typing.get_type_hints(DQNConfig), **typing.get_type_hints(TrainConfig)}
    fields = [f.name for cls in (TrainConfig, DQNConfig) for f in dataclasses.fields(cls)]
    if name not in fields or name == "agent_config":
        raise argparse.ArgumentTypeError(
            f"--set: no setting {name!r}; TrainConfig and DQNConfig have: {', '.join(fields)}"
        )
    hint = hints[name]
    t = text.strip()
    if t.lower() == "none" and type(None) in typing.get_args(hint):
        return None
    base = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = base[0] if base else hint
    if kind is bool:
        if t.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"--set {name}: expected true/false, got {t!r}")
        return t.lower() in ("true", "1", "yes")
    if kind is int:
        v = float(t.replace("_", ""))
        if not v.is_integer():
            raise argparse.ArgumentTypeError(f"--set {name}: expected an integer, got {t!r}")
        return int(v)
    if kind is float:
        return float(t)
    if kind is str:
        return t
    if typing.get_origin(kind) in (typing.Sequence, list, tuple) or "Sequence" in str(kind):
        return tuple(int(w) for w in t.split(",") if w.strip())
    raise argparse.ArgumentTypeError(f"--set {name}: cannot parse type {hint}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run DQN (uniform and/or prioritized replay) on one environment with "
        "several vmapped seeds, write experiments/results/<env>-<replay>/, and "
        "regenerate results_table.md and the comparison plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env", default="CartPole-v1", help="gymnax environment id")
    p.add_argument(
        "--replay",
        type=_replays,
        default=list(REPLAYS),
        help="comma-separated replay kinds, run one after the other",
    )
    p.add_argument("--seeds", type=positive, default=8, help="vmapped seeds per run")
    p.add_argument("--steps", type=positive, default=500_000, help="env steps per seed")
    p.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    p.add_argument("--n-step", type=positive, default=1, help="N-step targets")
    g = p.add_argument_group("config overrides (default: TrainConfig, plus the MinAtar preset)")
    g.add_argument("--capacity", type=positive, default=None, help="replay capacity")
    g.add_argument("--eps-decay-steps", type=positive, default=None)
    g.add_argument("--learning-starts", type=int, default=None)
    g.add_argument(
        "--chunk-steps",
        type=positive,
        default=None,
        help="env steps per compiled chunk (one greedy evaluation per chunk)",
    )
    g.add_argument("--num-envs", type=positive, default=None)
    g.add_argument("--batch-size", type=positive, default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--target-update-every", type=positive, default=None)
    g.add_argument("--eval-episodes", type=positive, default=None)
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other TrainConfig field, repeatable",
    )
    p.add_argument(
        "--note", default="", help="free text stored in summary.json and shown under the table"
    )
    p.add_argument("--out-root", default=str(RESULTS), help="results directory")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="no training: rewrite the table and the comparison plots",
    )
    p.add_argument(
        "--replot",
        action="store_true",
        help="also redraw every run's curve.png from its returns.json",
    )
    return p


def config_for(args, replay: str):
    from memjax.train import TrainConfig

    kw = {"env": args.env, "total_steps": args.steps, "replay": replay, "n_step": args.n_step}
    if args.env.endswith("-MinAtar"):
        kw.update(minatar_preset(args.steps))
    flags = {
        "capacity": "buffer_capacity",
        "eps_decay_steps": "eps_decay_steps",
        "learning_starts": "learning_starts",
        "chunk_steps": "chunk_steps",
        "num_envs": "num_envs",
        "batch_size": "batch_size",
        "lr": "lr",
        "target_update_every": "target_update_every",
        "eval_episodes": "eval_episodes",
    }
    for flag, field in flags.items():
        v = getattr(args, flag)
        if v is not None:
            kw[field] = v
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        kw[name.strip()] = _field_value(name.strip(), value)
    return TrainConfig().replace(**kw).validate()


def reproduce_command(args, replay: str) -> str:
    """The command line that reruns exactly this (env, replay) run."""
    parts = [
        "python",
        "experiments/run_results.py",
        "--env",
        args.env,
        "--replay",
        replay,
        "--seeds",
        str(args.seeds),
        "--steps",
        str(args.steps),
    ]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    if args.n_step > 1:
        parts += ["--n-step", str(args.n_step)]
    for flag in (
        "capacity",
        "eps_decay_steps",
        "learning_starts",
        "chunk_steps",
        "num_envs",
        "batch_size",
        "lr",
        "target_update_every",
        "eval_episodes",
    ):
        v = getattr(args, flag)
        if v is not None:
            parts += ["--" + flag.replace("_", "-"), str(v)]
    for item in args.set:
        parts += ["--set", item]
    return " ".join(shlex.quote(a) for a in parts)


def run_one(args, replay: str) -> dict:
    from memjax import train as mj_train

    cfg = config_for(args, replay)
    out = Path(args.out_root) / run_name(cfg.env, replay, cfg.n_step)
    command = reproduce_command(args, replay)

    print(
        f"== {cfg.env} / {replay} / {cfg.n_step}-step: {args.seeds} "
        f"seeds x {cfg.steps_done:,} steps, capacity "
        f"{cfg.buffer_capacity:,}, eps decay {cfg.eps_decay_steps:,}, learning starts "
        f"{cfg.learning_starts:,}, chunk {cfg.chunk_steps:,} -> {out}",
        flush=True,
    )
    git = git_state(short=True)  # at the start: the code this process imported
    t0 = time.perf_counter()
    summary = mj_train.run(
        cfg, num_seeds=args.seeds, out_dir=out, seed=args.seed, progress=not args.no_progress
    )
    wall = time.perf_counter() - t0
    summary.pop("curves", None)

    # the extra keys of this script, added to the summary.json that run() wrote
    data = update_summary(
        out,
        wall_seconds=wall,
        command=command,
        note=args.note,
        **git,
        load_average_after=list(os.getloadavg()),
        cpu_count=os.cpu_count(),
    )

    curves = json.loads((out / "returns.json").read_text())
    loss = np.asarray([[np.nan if v is None else v for v in row] for row in curves["loss"]])
    per_seed = ", ".join(f"{x:.1f}" for x in summary["final_return_per_seed"])
    print(
        f"   final greedy return {summary['final_return_mean']:.2f} ± "
        f"{summary['final_return_std']:.2f} (per seed: {per_seed}); "
        f"{summary['steps_per_second']:,.0f} steps/s (all seeds), compile "
        f"{summary['compile_seconds']:.1f} s, wall {wall:.0f} s; "
        f"non-finite losses: {int(np.sum(~np.isfinite(loss[1:])))}",
        flush=True,
    )
    return data


# ---------------------------------------------------------------------------------------------
# Report: table and comparison plots
# ---------------------------------------------------------------------------------------------


def load_runs(root: Path) -> list:
    runs = []
    for spath in sorted(root.glob("*/summary.json")):
        data = json.loads(spath.read_text())
        if "env" not in data or "replay" not in data:
            continue
        data["_dir"] = spath.parent
        data.setdefault("n_step", 1)  # runs from before n-step targets
        runs.append(data)

    def order(r):
        return (
            0 if not r["env"].endswith("-MinAtar") else 1,
            r["env"],
            r["n_step"],
            REPLAYS.index(r["replay"]) if r["replay"] in REPLAYS else 9,
        )

    return sorted(runs, key=order)


def read_eval_curve(run_dir: Path, column: str = "eval_return"):
    """(steps [P], returns [P, seeds]) from returns.csv; ``column`` is ``eval_return`` (greedy)
    or ``train_return`` (epsilon-greedy training episodes finished in the chunk; NaN if none)."""
    import csv

    rows = {}
    with open(run_dir / "returns.csv") as f:
        for row in csv.DictReader(f):
            v = float(row[column]) if row[column] != "" else float("nan")
            rows.setdefault(int(row["step"]), {})[int(row["seed"])] = v
    steps = sorted(rows)
    seeds = sorted(rows[steps[0]])
    return np.asarray(steps, np.float64), np.asarray([[rows[s][k] for k in seeds] for s in steps])


def plot_comparison(
    env: str,
    runs: list,
    path: Path,
    color=lambda r: COLORS.get(r["replay"]),
    title: str = "uniform vs prioritized replay",
) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from memjax.train.results import fill_seed_bands, nanmean_over_seeds, save_curve_plot

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for r in runs:
        steps, ev = read_eval_curve(r["_dir"])
        c = color(r)
        mean = fill_seed_bands(ax, steps, ev, c, alpha=0.2, lw=0)
        ax.plot(
            steps,
            mean,
            color=c,
            marker="." if len(steps) <= 20 else None,
            label=f"{run_label(r)}, greedy ({ev.shape[1]} seeds): final "
            f"{r['final_return_mean']:.1f} ± {r['final_return_std']:.1f}",
        )
        tsteps, tr = read_eval_curve(r["_dir"], "train_return")
        ax.plot(
            tsteps,
            nanmean_over_seeds(tr),
            color=c,
            ls="--",
            lw=1,
            label=f"{run_label(r)}, training episodes (ε-greedy), mean",
        )
    return save_curve_plot(
        fig,
        ax,
        path,
        f"DQN on {env}: {title}",
        "episode return (mean over seeds; band ±1 std,\nclipped to the seeds' range)",
        fontsize=9,
    )


def random_policy_return(env_name: str, episodes: int = 100, seed: int = 0) -> dict:
    """Mean and std of the return of a uniform-random policy over ``episodes`` episodes (each
    cut at ``max_steps_in_episode``), the floor a learning curve should rise above."""
    import jax
    import jax.numpy as jnp

    from memjax.envs import make as make_env

    env, params = make_env(env_name)
    n_actions = int(env.action_space(params).n)
    horizon = int(getattr(params, "max_steps_in_episode", 1000))

    @jax.jit
    def rollout(key):
        k0, key = jax.random.split(key)
        obs, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(k0, episodes), params)

        def body(carry, _):
            state, key, ret, alive = carry
            key, ka, ks = jax.random.split(key, 3)
            a = jax.random.randint(ka, (episodes,), 0, n_actions)
            _, state, r, term, trunc, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(ks, episodes), state, a, params
            )
            ret = ret + jnp.where(alive, r.astype(jnp.float32), 0.0)
            alive = alive & ~(term | trunc)
            return (state, key, ret, alive), None

        init = (state, key, jnp.zeros((episodes,), jnp.float32), jnp.ones((episodes,), bool))
        (_, _, ret, _), _ = jax.lax.scan(body, init, None, length=horizon)
        return ret

    ret = np.asarray(rollout(jax.random.key(seed)), np.float64)
    return {"mean": float(ret.mean()), "std": float(ret.std()), "episodes": episodes}


def random_baselines(root: Path, envs: list) -> dict:
    """Random-policy returns per env, cached in ``root/random_policy.json``."""
    path = root / "random_policy.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    missing = [e for e in envs if e not in cache]
    for env in missing:
        cache[env] = random_policy_return(env)
    if missing:
        path.write_text(json.dumps(cache, indent=2, sort_keys=True) + "\n")
    return cache


def _settings(config: dict) -> str:
    """The TrainConfig fields that differ from the defaults, as text."""
    from memjax.train import TrainConfig

    default = TrainConfig().settings()
    config = (
        {**config, **config["agent"], "agent": config["agent"]["name"]}
        if isinstance(config.get("agent"), dict)
        else config
    )
    skip = {"env", "replay", "total_steps"}
    diff = [
        f"{k}={config[k]}"
        for k in config
        if k not in skip and k in default and config[k] != default[k]
    ]
    return ", ".join(diff) if diff else "TrainConfig defaults"


def _fmt_hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def write_report(root: Path, replot: bool = False) -> list:
    runs = load_runs(root)
    if not runs:
        print(f"no runs under {root}")
        return []
    written = []
    if replot:  # redraw each run's curve.png from its returns.json with memjax.train.results
        from memjax.train import results as mj_results

        for r in runs:
            curves = json.loads((r["_dir"] / "returns.json").read_text())
            curves = {
                k: (
                    np.asarray(
                        [[np.nan if v is None else v for v in row] for row in val], np.float64
                    )
                    if k != "steps"
                    else val
                )
                for k, val in curves.items()
            }
            written.append(
                mj_results.plot_curve(
                    r["_dir"] / "curve.png",
                    curves,
                    title=f"DQN on {r['env']} ({r['replay']} replay)",
                )
            )
    envs = list(dict.fromkeys(r["env"] for r in runs))
    for env in envs:
        one_step = [r for r in runs if r["env"] == env and r["n_step"] == 1]
        written.append(plot_comparison(env, one_step, root / f"{env}-uniform-vs-prioritized.png"))
        n_step = [r for r in runs if r["env"] == env and r["replay"] == "uniform"]
        if any(r["n_step"] > 1 for r in n_step):
            written.append(
                plot_comparison(
                    env,
                    n_step,
                    root / f"{env}-n-step.png",
                    title="1-step vs N-step targets",
                    color=lambda r: N_STEP_COLORS.get(r["n_step"]),
                )
            )

    baselines = random_baselines(root, envs)
    lines = [
        "<!-- generated by experiments/run_results.py; do not edit by hand -->",
        "| env | replay | n-step | seeds | steps per seed | final greedy return, mean ± std over "
        "seeds | per seed | steps/s (all seeds) | compile s | bytes per transition |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    notes = list(dict.fromkeys(r["note"] for r in runs if r.get("note")))
    marks = {n: "†‡§¶"[i % 4] * (1 + i // 4) for i, n in enumerate(notes)}
    for r in runs:
        per_seed = ", ".join(f"{x:.1f}" for x in r["final_return_per_seed"])
        mark = f" {marks[r['note']]}" if r.get("note") else ""
        lines.append(
            f"| {r['env']} | {r['replay']} | {r['n_step']} | {r['seeds']} | {r['steps']:,}{mark} | "
            f"**{r['final_return_mean']:.1f} ± {r['final_return_std']:.1f}** | {per_seed} | "
            f"{r['steps_per_second']:,.0f} | {r['compile_seconds']:.1f} | "
            f"{r['bytes_per_transition']:,.1f} |"
        )
    lines += [""] + [f"{marks[n]} {n}" for n in notes] + ([""] if notes else [])
    lines += [
        "Final greedy return: the mean of `eval_episodes` greedy (epsilon 0) episodes per seed "
        "with the final network; mean and (population) std over seeds. Steps/s: env steps of all "
        "seeds together per second of training (compile and evaluation excluded), measured on a "
        "machine shared with other jobs: the load average after each run is given below, and "
        "the speed of uniform against prioritized replay is measured properly by "
        "`experiments/bench_loop.py`, not here. Bytes per "
        "transition: one seed's whole replay state (observation and next observation as stored, "
        "action, reward, flag, and for prioritized replay the sum-tree) divided by its capacity.",
        "",
    ]
    for env in envs:
        env_runs = [r for r in runs if r["env"] == env]
        rel = f"{env}-uniform-vs-prioritized.png"
        rnd = baselines[env]
        lines.append(
            f"**{env}**: settings: {_settings(env_runs[0]['config'])}. "
            f"A uniform-random policy scores {rnd['mean']:.1f} ± {rnd['std']:.1f} "
            f"({rnd['episodes']} episodes)."
        )
        for r in env_runs:
            _, tr = read_eval_curve(r["_dir"], "train_return")
            last = tr[-1][np.isfinite(tr[-1])]
            train_txt = (
                f"epsilon-greedy training return in the last chunk "
                f"{last.mean():.1f} ± {last.std():.1f}; "
                if last.size
                else ""
            )
            lines.append(
                f"- {run_label(r)}: `{r.get('command', '')}`; {train_txt}wall "
                f"{_fmt_hms(r.get('wall_seconds', float('nan')))} (compile "
                f"{r['compile_seconds']:.0f} s, training {r['train_seconds']:.0f} s, "
                f"evaluation {r['eval_seconds']:.0f} s) on "
                + (
                    f"{r.get('cpu_count', '?')} shared CPU cores"
                    if r.get("backend") == "cpu"
                    else f"{r.get('device', '?')}"
                )
                + (
                    f", load average {r['load_average_after'][2]:.1f} (15 min) after the run"
                    if r.get("load_average_after")
                    else ""
                )
                + f"; memjax at {r.get('memjax_commit') or '?'}"
                + (" (with uncommitted changes)" if r.get("memjax_dirty") else "")
                + f"; [curve]({r['_dir'].name}/curve.png)."
            )
        lines.append("")
        lines.append(f"![DQN on {env}: uniform vs prioritized]({rel})")
        lines.append("")
        if (root / f"{env}-n-step.png").exists():
            lines += [f"![DQN on {env}: 1-step vs N-step targets]({env}-n-step.png)", ""]
    table = root / "results_table.md"
    commentary = root / "results_notes.md"
    if commentary.exists():  # hand-written commentary, appended verbatim
        lines += [commentary.read_text().rstrip(), ""]
    table.write_text("\n".join(lines))
    written.append(table)
    print("wrote " + ", ".join(str(p) for p in written))
    return written


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    root = Path(args.out_root)
    if not args.report_only:
        try:
            from memjax.envs import make as make_env

            make_env(args.env)
            for replay in args.replay:
                config_for(args, replay)
        except (ValueError, argparse.ArgumentTypeError) as e:
            parser.error(str(e))
        for replay in args.replay:
            run_one(args, replay)
    write_report(root, replot=args.replot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
