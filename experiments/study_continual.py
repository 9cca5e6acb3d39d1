"""Continual learning under a small replay budget: which eviction policy forgets least?

    python experiments/study_continual.py [--quick] [--seeds 4] [--steps-per-task 50000]
                                          [--budget 4000] [--policies fifo,reservoir,...]
                                          [--out PATH] [--plot PATH]

The task sequence (issue 11, item 4): CartPole-v1 variants in turn (``ContinualCartPole``:
by default ``default``, ``long`` pole, ``high-gravity``, ``reversed`` actions; see
``memjax.envs.multitask``), each for ``--steps-per-task`` env steps per seed, the agent seeing
the task's one-hot. One DQN per seed (vmapped), the same settings for every policy; only the
replay differs, all within the same total budget of ``--budget`` transitions:

  fifo                    uniform sampling, the oldest item overwritten (the default)
  reservoir               uniform sampling, reservoir eviction (every item ever added equally
                          likely kept; Isele & Cosgun 2018)
  least_recently_sampled  uniform sampling, the item sampled longest ago overwritten
  lowest_priority         prioritized sampling (alpha 0.6), the lowest priority overwritten
  mixer                   one FIFO buffer of budget / num_tasks per task, each batch drawn
                          in equal parts from the tasks seen so far (memjax.replay.mixer; the
                          buffer of the current task receives the new items)

After every ``--eval-every`` env steps each seed's greedy policy plays ``--eval-episodes``
episodes of EVERY task (``Trainer.evaluate``: episode i on task i % num_tasks). The final
row is what is left of each task at the end: the first tasks show what was forgotten.

Every policy's program is compiled once (the mixer: once per task, since which buffer
receives items and which are sampled changes at the switches, which fall on chunk
boundaries). Writes ``experiments/results/study_continual_<tag>.json`` and a PNG of the
curves (one panel per task) and the final returns.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import memjax as mj  # noqa: E402
from memjax.envs import multitask  # noqa: E402
from memjax.replay import eviction  # noqa: E402
from memjax.replay.mixer import as_buffer  # noqa: E402

POLICIES = ("fifo", "reservoir", "least_recently_sampled", "lowest_priority", "mixer")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The study's settings (env steps are per seed)."""

    tasks: tuple = multitask.DEFAULT_CARTPOLE_TASKS
    steps_per_task: int = 50_000
    budget: int = 4_000
    num_envs: int = 10
    learning_starts: int = 1_000
    batch_size: int = 64
    lr: float = 5e-4
    eps_decay_steps: int = 10_000
    chunk_steps: int = 1_000
    eval_every: int = 5_000
    eval_episodes: int = 5  # per task
    alpha: float = 0.6

    def check(self) -> Settings:
        """ValueError unless the switches and evaluations fall on chunk boundaries."""
        if self.chunk_steps % self.num_envs or self.learning_starts % self.chunk_steps:
            raise ValueError(
                f"learning_starts ({self.learning_starts}) must be a multiple of "
                f"chunk_steps ({self.chunk_steps}), itself of num_envs "
                f"({self.num_envs}), so that task switches fall between chunks"
            )
        for name in ("steps_per_task", "eval_every"):
            if getattr(self, name) % self.chunk_steps:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of "
                    f"chunk_steps ({self.chunk_steps})"
                )
        if self.learning_starts >= self.steps_per_task:
            raise ValueError("learning_starts must be shorter than one task")
        if self.budget % len(self.tasks):
            raise ValueError(
                f"budget ({self.budget}) must split evenly over the "
                f"{len(self.tasks)} tasks (the mixer's buffers)"
            )
        return self

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def total_steps(self) -> int:
        return self.steps_per_task * self.num_tasks

    @property
    def switch_every(self) -> int:
        """Steps of each environment per task (the env's ``switch_every``)."""
        return self.steps_per_task // self.num_envs


def task_at(step: int, s: Settings) -> int:
    """The task played at env step ``step`` (per seed) of the run: the continual schedule
    (``ContinualCartPole``: each environment's step ``step // num_envs``)."""
    return (step // s.num_envs) // s.switch_every % s.num_tasks


def config_for(s: Settings, policy: str) -> mj.train.TrainConfig:
    return mj.train.TrainConfig(
        env=f"ContinualCartPole-{s.switch_every}:{','.join(s.tasks)}",
        num_envs=s.num_envs,
        total_steps=s.total_steps,
        learning_starts=s.learning_starts,
        replay="prioritized" if policy == "lowest_priority" else "uniform",
        buffer_capacity=s.budget,
        alpha=s.alpha,
        batch_size=s.batch_size,
        lr=s.lr,
        lr_end=None,
        eps_decay_steps=s.eps_decay_steps,
        chunk_steps=s.chunk_steps,
        eval_episodes=s.eval_episodes * s.num_tasks,
    )


def buffers_for(policy: str, s: Settings) -> list:
    """One replay buffer per task phase (the same one throughout, except for the mixer)."""
    if policy == "fifo":
        return [mj.replay.uniform(s.budget)] * s.num_tasks
    if policy == "reservoir":
        return [mj.replay.uniform(s.budget, eviction=eviction.reservoir())] * s.num_tasks
    if policy == "least_recently_sampled":
        return [
            mj.replay.uniform(s.budget, eviction=eviction.least_recently_sampled())
        ] * s.num_tasks
    if policy == "lowest_priority":
        return [
            mj.replay.prioritized(s.budget, alpha=s.alpha, eviction=eviction.lowest_priority())
        ] * s.num_tasks
    if policy == "mixer":
        per_task = [mj.replay.uniform(s.budget // s.num_tasks) for _ in range(s.num_tasks)]
        return [
            as_buffer(
                mj.replay.mixer(per_task, [1] * (p + 1) + [0] * (s.num_tasks - p - 1)), add_to=p
            )
            for p in range(s.num_tasks)
        ]
    raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")


def run_policy(policy: str, s: Settings, seeds: int, seed: int = 0, log=C.log) -> dict:
    """Train ``seeds`` seeds with ``policy``'s replay; greedy returns per task over training.

    Returns a dict with ``steps`` [points], ``eval`` [points][seeds][tasks] (mean greedy
    return of ``eval_episodes`` episodes per task), ``final`` [seeds][tasks], the compile
    and run seconds."""
    config = config_for(s, policy)
    env, env_params = mj.envs.make(config.env)
    trainers = [
        mj.train.make_train(config, env=env, env_params=env_params, buffer=b)
        for b in buffers_for(policy, s)
    ]
    first = trainers[0]
    assert first.num_tasks == s.num_tasks and config.remainder_iters == 0
    k_train, k_eval = jax.random.split(jax.random.key(seed))
    keys = jax.random.split(k_train, seeds)
    t0 = time.perf_counter()
    state = jax.jit(jax.vmap(first.init))(keys)
    collect = jax.jit(jax.vmap(first.collect), donate_argnums=0).lower(state).compile()
    evaluate = jax.jit(jax.vmap(first.evaluate)).lower(state.agent, keys).compile()
    chunks = {}
    for p in sorted(
        {task_at(step, s) for step in range(s.learning_starts, s.total_steps, s.chunk_steps)}
    ):
        chunks[p] = jax.jit(jax.vmap(trainers[p].chunk), donate_argnums=0).lower(state).compile()
    compile_seconds = time.perf_counter() - t0

    def greedy(step):
        episodes = evaluate(state.agent, jax.random.split(jax.random.fold_in(k_eval, step), seeds))
        returns = np.asarray(episodes.returns).reshape(seeds, s.eval_episodes, s.num_tasks)
        return returns.mean(axis=1)  # [seeds, tasks]

    t0 = time.perf_counter()
    state, _ = collect(state)
    step, steps, curve = s.learning_starts, [], []
    while step < s.total_steps:
        state, _ = chunks[task_at(step, s)](state)
        step += s.chunk_steps
        if step % s.eval_every == 0 or step == s.total_steps:
            steps.append(step)
            curve.append(greedy(step))
            if log is not None:
                log(
                    f"  {policy:>22} step {step:>7}: greedy per task "
                    f"{np.round(curve[-1].mean(axis=0), 1).tolist()}"
                )
    jax.block_until_ready(state)
    seconds = time.perf_counter() - t0
    sizes = [
        np.asarray(jax.device_get(mj.replay.size(b))).tolist()
        for b in (state.buffer if isinstance(state.buffer, tuple) else (state.buffer,))
    ]
    return {
        "steps": steps,
        "eval": np.stack(curve).tolist(),
        "final": curve[-1].tolist(),
        "compile_seconds": compile_seconds,
        "run_seconds": seconds,
        "final_buffer_sizes": sizes,
    }


def summarise(result: dict, s: Settings) -> dict:
    final = np.asarray(result["final"])  # [seeds, tasks]
    return {
        "final_mean_per_task": final.mean(axis=0).tolist(),
        "final_std_per_task": final.std(axis=0).tolist(),
        "final_mean_all_tasks": float(final.mean()),
        "final_mean_all_tasks_std_over_seeds": float(final.mean(axis=1).std()),
        "area_under_curve_per_task": np.asarray(result["eval"]).mean(axis=(0, 1)).tolist(),
    }


def plot(results: dict, s: Settings, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from memjax.train.results import fill_seed_bands

    fig, axes = plt.subplots(1, s.num_tasks + 1, figsize=(3.2 * (s.num_tasks + 1), 3.3), dpi=110)
    for t, ax in enumerate(axes[:-1]):
        for i, (policy, r) in enumerate(results.items()):
            steps = np.asarray(r["steps"]) / 1000
            ret = np.asarray(r["eval"])[:, :, t]  # [points, seeds]
            mean = fill_seed_bands(ax, steps, ret, f"C{i}", alpha=0.12)
            ax.plot(steps, mean, color=f"C{i}", lw=1.2, label=policy)
        for p in range(1, s.num_tasks):
            ax.axvline(p * s.steps_per_task / 1000, color="grey", lw=0.6, ls=":")
        ax.axvspan(
            t * s.steps_per_task / 1000, (t + 1) * s.steps_per_task / 1000, color="grey", alpha=0.08
        )
        ax.set_title(f"task {t}: {s.tasks[t]}", fontsize=9)
        ax.set_xlabel("env steps per seed (1000s)", fontsize=8)
        ax.set_ylim(0, 520)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("greedy return")
    axes[0].legend(fontsize=6, loc="upper right")
    ax = axes[-1]
    width = 0.8 / len(results)
    for i, (policy, r) in enumerate(results.items()):
        final = np.asarray(r["final"])
        ax.bar(
            np.arange(s.num_tasks) + i * width,
            final.mean(axis=0),
            width,
            yerr=final.std(axis=0),
            color=f"C{i}",
            label=policy,
            capsize=2,
        )
    ax.set_xticks(np.arange(s.num_tasks) + 0.4 - width / 2)
    ax.set_xticklabels(s.tasks, fontsize=7, rotation=20)
    ax.set_title("final greedy return per task", fontsize=9)
    ax.set_ylim(0, 520)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def table(summaries: dict, s: Settings) -> str:
    head = (
        "| replay | "
        + " | ".join(f"task {t}: {n}" for t, n in enumerate(s.tasks))
        + " | mean over tasks |"
    )
    rows = [head, "|---|" + "---:|" * (s.num_tasks + 1)]
    for policy, m in summaries.items():
        cells = [
            f"{x:.0f} ± {sd:.0f}"
            for x, sd in zip(m["final_mean_per_task"], m["final_std_per_task"])
        ]
        rows.append(
            f"| {policy} | " + " | ".join(cells) + f" | **{m['final_mean_all_tasks']:.0f}** |"
        )
    return "\n".join(rows)


QUICK = dict(
    steps_per_task=2_000,
    budget=400,
    learning_starts=500,
    chunk_steps=500,
    eval_every=1_000,
    eval_episodes=1,
    batch_size=32,
)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps-per-task", type=int, default=None)
    ap.add_argument("--budget", type=int, default=None, help="replay transitions in all")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--out", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    over = dict(QUICK) if args.quick else {}
    for name in ("steps_per_task", "budget"):
        if getattr(args, name) is not None:
            over[name] = getattr(args, name)
    s = Settings(**over).check()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        if p not in POLICIES:
            ap.error(f"unknown policy {p!r}; known: {', '.join(POLICIES)}")
    out = Path(args.out) if args.out else C.results_path("study_continual", args.quick)
    plot_path = Path(args.plot) if args.plot else out.with_suffix(".png")
    load = os.getloadavg()
    C.log(
        f"continual study: tasks {s.tasks}, {s.steps_per_task} steps each, budget "
        f"{s.budget}, {args.seeds} seeds; load {load[0]:.2f}"
    )
    t0 = time.perf_counter()
    results = {p: run_policy(p, s, args.seeds) for p in policies}
    summaries = {p: summarise(r, s) for p, r in results.items()}
    C.log("\n" + table(summaries, s))
    title = (
        f"DQN on CartPole variants in turn ({s.steps_per_task // 1000}k steps each), "
        f"replay budget {s.budget}, {args.seeds} seeds"
    )
    doc = {
        "settings": dataclasses.asdict(s),
        "seeds": args.seeds,
        "policies": policies,
        "summary": summaries,
        "results": results,
        "table": table(summaries, s),
        "load_before": load,
        "load_after": os.getloadavg(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": C.machine_info(),
    }
    C.write_json(doc, out)
    C.log(f"wrote {plot(results, s, plot_path, title)}")
    return doc


if __name__ == "__main__":
    main()
