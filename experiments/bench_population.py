"""Populations benchmark: a sweep in one program vs separate runs, PBT vs its grid, bytes.

    python experiments/bench_population.py [--parts throughput,pbt,memory] [--quick]
                                           [--rounds 2] [--out PATH] [--plot PATH]

What is measured (issue 24):

* **throughput**: a sweep of 8 learning rates x 2 seeds, ``memjax.train.run(config, 2,
  sweep={"lr": [...]})`` (16 lanes of one program), against 8 separate ``run(config.replace(
  lr=...), 2)`` calls, one per learning rate, in the same process. Whole wall time of each
  side, compiles and greedy evaluations included (each separate run compiles its own
  programs, as separate commands would). CartPole-v1 with the defaults of TrainConfig except
  ``--throughput-steps`` env steps per seed (a tenth for warm-up, half for the epsilon
  decay) and chunks of a quarter of the run. Rounds are interleaved (the order alternates);
  the ratio is the median over rounds of separate / sweep.
* **pbt**: PBT (``pbt_every``, perturb) against the grid it starts from (the same sweep
  without PBT), the same env steps per member and seed, ``--pbt-seeds`` seeds: CartPole-v1
  with 8 learning rates of which most are poor (too small to learn in the run, or large
  enough to diverge). Reported: the best member's final greedy return (mean over seeds) of
  each, and the mean over all members.
* **memory**: bytes per lane (one member's seed: agent, optimizer, replay, environments and
  the lane's values) from ``jax.eval_shape`` of the population's init, per member at 2 seeds,
  and the largest population (lanes) whose states fit 16 GB, with the default storage, for
  CartPole-v1 and Breakout-MinAtar.

Results go to ``experiments/results/bench_population_<tag>.json`` and the PBT plot to
``experiments/results/population-pbt-cartpole.png``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import memjax as mj  # noqa: E402
from experiments._common import RESULTS, machine_info, results_path, write_json  # noqa: E402
from memjax.train import population as pop  # noqa: E402
from memjax.train.plan import nbytes  # noqa: E402

LRS = [1e-4, 1.6e-4, 2.5e-4, 4e-4, 6.3e-4, 1e-3, 1.6e-3, 2.5e-3]
POOR_LRS = [1e-6, 3e-6, 1e-5, 3e-5, 3e-4, 1e-2, 3e-2, 1e-1]
BUDGET = 16e9


def short_config(steps: int, env: str = "CartPole-v1", **values) -> mj.train.TrainConfig:
    return mj.train.TrainConfig(env=env).replace(
        total_steps=steps,
        learning_starts=steps // 10,
        eps_decay_steps=steps // 2,
        chunk_steps=steps // 4,
        **values,
    )


def quiet_run(config, seeds, **kw) -> dict:
    return mj.train.run(config, num_seeds=seeds, progress=False, log=None, **kw)


def throughput(steps: int, rounds: int, seeds: int = 2) -> dict:
    cfg = short_config(steps)

    def sweep():
        t0 = time.perf_counter()
        s = quiet_run(cfg, seeds, sweep={"lr": LRS})
        return time.perf_counter() - t0, s["compile_seconds"], s["final_return_mean"]

    def separate():
        t0, compile_s, best = time.perf_counter(), 0.0, -np.inf
        for lr in LRS:
            s = quiet_run(cfg.replace(lr=lr), seeds)
            compile_s += s["compile_seconds"]
            best = max(best, s["final_return_mean"])
        return time.perf_counter() - t0, compile_s, best

    sides = {"sweep": sweep, "separate": separate}
    walls = {name: [] for name in sides}
    compiles = {name: [] for name in sides}
    for r in range(rounds):
        for name in list(sides)[:: 1 if r % 2 == 0 else -1]:
            wall, compile_s, best = sides[name]()
            walls[name].append(wall)
            compiles[name].append(compile_s)
            print(
                f"round {r} {name:>8}: {wall:7.1f} s wall ({compile_s:5.1f} s compiling), "
                f"best return {best:.1f}",
                flush=True,
            )
    ratios = [a / b for a, b in zip(walls["separate"], walls["sweep"], strict=True)]
    out = {
        "config": {"env": cfg.env, "steps": cfg.steps_done, "seeds": seeds, "lrs": LRS},
        "wall_seconds": walls,
        "compile_seconds": compiles,
        "ratio_separate_over_sweep": ratios,
        "ratio_median": statistics.median(ratios),
    }
    print(f"separate / sweep wall time: {out['ratio_median']:.2f}x (median of {rounds})")
    return out


def pbt(
    steps: int,
    seeds: int,
    every: int,
    plot=None,
    env: str = "CartPole-v1",
    lrs=POOR_LRS,
    chunk_steps: int | None = None,
) -> dict:
    cfg = short_config(steps, env)
    if chunk_steps is not None:
        cfg = cfg.replace(chunk_steps=chunk_steps)
    out = {
        "config": {
            "env": cfg.env,
            "steps": cfg.steps_done,
            "seeds": seeds,
            "lrs": lrs,
            "pbt_every": every,
            "chunk_steps": cfg.chunk_steps,
            "explore": "perturb",
        }
    }
    for name, kw in (("grid", {}), ("pbt", {"pbt_every": every})):
        t0 = time.perf_counter()
        s = quiet_run(cfg, seeds, sweep={"lr": lrs}, **kw)
        means = [m["final_return_mean"] for m in s["members"]]
        out[name] = {
            "best_member": s["best_member"],
            "best_return_mean": s["final_return_mean"],
            "best_return_per_seed": s["final_return_per_seed"],
            "member_return_means": means,
            "all_members_mean": float(np.mean(means)),
            "best_per_seed_mean": float(
                np.max(
                    np.asarray([m["final_return_per_seed"] for m in s["members"]]), axis=0
                ).mean()
            ),
            "final_lr": [m["lr"] for m in s["members"]],
            "wall_seconds": time.perf_counter() - t0,
        }
        out[name]["curves"] = s["curves"]
        print(
            f"{name:>4}: best member {s['best_member']} {s['final_return_mean']:.1f} "
            f"(all members {np.mean(means):.1f}), {out[name]['wall_seconds']:.0f} s",
            flush=True,
        )
    if plot is not None:
        plot_pbt(plot, out, seeds, env, lrs)
    for name in ("grid", "pbt"):
        out[name].pop("curves")
    return out


def plot_pbt(path, out: dict, seeds: int, env: str, lrs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(6.4, 6.0), dpi=120, sharex=True)
    members = len(lrs)
    for name, color in (("grid", "C0"), ("pbt", "C3")):
        curves = out[name]["curves"]
        steps = np.asarray(curves["steps"])
        ev = np.asarray(curves["eval_return"]).reshape(len(steps), members, seeds).mean(axis=2)
        best = out[name]["best_member"]
        ax.plot(steps, ev.max(axis=1), color=color, lw=2, label=f"{name}: best member")
        ax.plot(steps, ev.mean(axis=1), color=color, ls="--", label=f"{name}: mean of members")
        if name == "pbt":
            hp = np.asarray(curves["hp_lr"]).reshape(len(steps), members, seeds)
            for m in range(members):
                ax_lr.plot(
                    steps,
                    hp[:, m, 0],
                    color=plt.get_cmap("viridis")(m / members),
                    drawstyle="steps-pre",
                    lw=1.5 if m == best else 0.8,
                )
    ax.set_ylabel("greedy return (mean over seeds)")
    ax.set_title(f"PBT vs its grid: {env}, {members} learning rates, {seeds} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("lr of each PBT member (seed 0)")
    ax_lr.set_xlabel("environment steps (per seed)")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


def memory(seeds: int = 2) -> dict:
    out = {}
    for env in ("CartPole-v1", "Breakout-MinAtar"):
        cfg = mj.train.TrainConfig(env=env)
        trainer = mj.train.make_train(cfg)
        population = pop.make_population(cfg, {"lr": [1e-4, 1e-3]}, 1)
        lane = jax.eval_shape(
            pop.PopulationTrainer(trainer, population).init,
            jax.random.key(0),
            {"lr": jax.ShapeDtypeStruct((), np.float32)},
        )
        per_lane = nbytes(lane)
        agent = nbytes(lane.train.agent)
        replay = nbytes(lane.train.buffer)
        out[env] = {
            "capacity": cfg.buffer_capacity,
            "obs_codec": cfg.obs_codec,
            "layout": cfg.storage_layout,
            "bytes_per_lane": per_lane,
            "agent_bytes_per_lane": agent,
            "replay_bytes_per_lane": replay,
            "other_bytes_per_lane": per_lane - agent - replay,
            f"bytes_per_member_{seeds}_seeds": per_lane * seeds,
            "largest_population_lanes_16GB": int(BUDGET // per_lane),
            f"largest_population_members_16GB_{seeds}_seeds": int(BUDGET // (per_lane * seeds)),
        }
        print(
            f"{env}: {per_lane / 2**20:.2f} MiB per lane (agent {agent / 2**20:.2f}, replay "
            f"{replay / 2**20:.2f}); 16 GB holds {int(BUDGET // per_lane):,} lanes",
            flush=True,
        )
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="throughput,pbt,memory")
    p.add_argument("--quick", action="store_true", help="tiny runs (a smoke test)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--throughput-steps", type=int, default=20_000)
    p.add_argument("--pbt-steps", type=int, default=50_000)
    p.add_argument("--pbt-seeds", type=int, default=4)
    p.add_argument("--pbt-every", type=int, default=5_000)
    p.add_argument("--pbt-env", default="CartPole-v1")
    p.add_argument(
        "--pbt-lrs",
        default=",".join(map(str, POOR_LRS)),
        help="the starting population's learning rates (comma-separated)",
    )
    p.add_argument(
        "--pbt-chunk-steps",
        type=int,
        default=None,
        help="chunk length of the PBT runs (default: a quarter of --pbt-steps); PBT acts at "
        "the first chunk boundary at or past each multiple of --pbt-every",
    )
    p.add_argument("--out", default=None)
    p.add_argument("--plot", default=str(RESULTS / "population-pbt-cartpole.png"))
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    if args.quick:
        args.rounds, args.throughput_steps, args.pbt_steps = 1, 4_000, 4_000
        args.pbt_every, args.pbt_seeds, args.plot = 1_000, 1, None
    t0 = time.perf_counter()
    doc = {"machine": machine_info(), "args": vars(args)}
    if "throughput" in parts:
        doc["throughput"] = throughput(args.throughput_steps, args.rounds)
    if "pbt" in parts:
        lrs = [float(v) for v in args.pbt_lrs.split(",")]
        doc["pbt"] = pbt(
            args.pbt_steps,
            args.pbt_seeds,
            args.pbt_every,
            args.plot,
            args.pbt_env,
            lrs,
            args.pbt_chunk_steps,
        )
    if "memory" in parts:
        doc["memory"] = memory()
    doc["wall_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(doc, args.out or results_path("bench_population", args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
