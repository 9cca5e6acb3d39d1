"""Writing training results: ``returns.csv``, ``returns.json``, ``curve.png``, ``summary.json``.

``curves`` (as produced by :func:`memjax.train.run`) holds ``steps`` (list of env steps per
seed, one per evaluation point) and ``eval_return`` / ``train_return`` arrays of shape
``[points, seeds]``: greedy evaluation return and mean return of the epsilon-greedy training
episodes that finished in the chunk (NaN where none finished).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import warnings
from collections.abc import Mapping
from itertools import product as itertools_product
from pathlib import Path
from typing import Any

import numpy as np


def config_to_dict(config) -> dict:
    """A dataclass config as a JSON-friendly dict (tuples become lists); a config with its own
    ``to_dict`` (:class:`memjax.train.TrainConfig`: agent knobs nested) gives that."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    d = dataclasses.asdict(config)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def json_safe(x):
    """JSON-safe: numpy to Python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_csv(path, curves: Mapping[str, Any], population: Mapping | None = None) -> Path:
    """One row per (step, seed): ``step,seed,eval_return,train_return``. A population
    (``population``: summary.json's section, with ``sweep``; the curves' columns are its
    lanes, member-major) has one row per (step, member, seed):
    ``step,member,seed,eval_return,train_return`` and a column per swept setting, the value
    the lane trained with up to that step."""
    path = Path(path)
    steps = list(curves["steps"])
    ev = np.asarray(curves["eval_return"], np.float64)
    tr = np.asarray(curves["train_return"], np.float64)
    names = list(population["sweep"]) if population else []
    seeds = ev.shape[1] // population["members"] if population else ev.shape[1]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["step", *(["member"] if population else []), "seed", "eval_return", "train_return"]
            + names
        )
        for i, step in enumerate(steps):
            for lane in range(ev.shape[1]):
                member, s = divmod(lane, seeds)
                w.writerow(
                    [int(step), *([member] if population else []), s]
                    + [
                        f"{ev[i, lane]:.6g}",
                        "" if not np.isfinite(tr[i, lane]) else f"{tr[i, lane]:.6g}",
                    ]
                    + [f"{float(curves[f'hp_{n}'][i][lane]):.6g}" for n in names]
                )
    return path


def seed_band(returns) -> tuple:
    """``(mean, lo, hi)`` over seeds of ``returns`` [points, seeds]: the mean and a +-1 std band
    clipped to the seeds' range (a std band can otherwise poke past a return cap)."""
    returns = np.asarray(returns, np.float64)
    mean, std = returns.mean(axis=1), returns.std(axis=1)
    return (
        mean,
        np.maximum(mean - std, returns.min(axis=1)),
        np.minimum(mean + std, returns.max(axis=1)),
    )


def fill_seed_bands(
    ax,
    steps,
    returns,
    color,
    *,
    alpha: float = 0.3,
    label=None,
    minmax_alpha=None,
    minmax_label=None,
    **kw,
):
    """Draw on ``ax`` the +-1 std band of :func:`seed_band` and, with ``minmax_alpha``, the
    min-max range of the seeds under it; return the mean over seeds. ``kw`` goes to both
    ``fill_between`` calls."""
    returns = np.asarray(returns, np.float64)
    mean, lo, hi = seed_band(returns)
    if minmax_alpha is not None:
        ax.fill_between(
            steps,
            returns.min(axis=1),
            returns.max(axis=1),
            alpha=minmax_alpha,
            color=color,
            label=minmax_label,
            **kw,
        )
    ax.fill_between(steps, lo, hi, alpha=alpha, color=color, label=label, **kw)
    return mean


def nanmean_over_seeds(returns) -> np.ndarray:
    """Mean over seeds (axis 1) ignoring NaN (no training episode finished), NaN where every
    seed is NaN, without the all-NaN warning."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(returns, np.float64), axis=1)


def plot_curve(path, curves: Mapping[str, Any], title: str = "") -> Path:
    """Learning curve: greedy-eval mean over seeds with a +-1 std band and the min-max range,
    and the mean training (epsilon-greedy) return dashed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    steps = np.asarray(curves["steps"], np.float64)
    ev = np.asarray(curves["eval_return"], np.float64)
    tr = np.asarray(curves["train_return"], np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    mean = fill_seed_bands(
        ax,
        steps,
        ev,
        "C0",
        label="±1 std",
        minmax_alpha=0.12,
        minmax_label="greedy eval: min-max over seeds",
    )
    ax.plot(steps, mean, color="C0", label=f"greedy eval: mean of {ev.shape[1]} seeds")
    ax.plot(
        steps,
        nanmean_over_seeds(tr),
        color="C1",
        ls="--",
        lw=1,
        label="training episodes (ε-greedy)",
    )
    return save_curve_plot(fig, ax, path, title)


def plot_members(path, curves: Mapping[str, Any], population: Mapping, title: str = "") -> Path:
    """A population's learning curves: a line per member (greedy evaluation, mean over its
    seeds) and, under PBT, a panel per swept setting with each member's value over the run
    (geometric mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    members, names = population["members"], list(population["sweep"])
    steps = np.asarray(curves["steps"], np.float64)
    ev = np.asarray(curves["eval_return"], np.float64)
    ev = ev.reshape(len(steps), members, -1).mean(axis=2)
    panels = 1 + (len(names) if population.get("pbt_every") else 0)
    fig, axes = plt.subplots(
        panels, 1, figsize=(6.4, 3.2 + 2.0 * (panels - 1)), dpi=120, sharex=True, squeeze=False
    )
    grid = list(itertools_product(*population["sweep"].values()))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, members))
    for m in range(members):
        label = ", ".join(f"{n}={v:g}" for n, v in zip(names, grid[m], strict=True))
        axes[0, 0].plot(steps, ev[:, m], color=colors[m], label=f"{m}: {label}")
    for j, name in enumerate(names if panels > 1 else ()):
        ax = axes[j + 1, 0]
        hp = np.asarray(curves[f"hp_{name}"], np.float64).reshape(len(steps), members, -1)
        for m in range(members):
            values = np.exp(np.log(np.maximum(hp[:, m], 1e-30)).mean(axis=1))
            ax.plot(steps, values, color=colors[m], drawstyle="steps-pre")
        if np.all(hp > 0) and hp.max() / hp.min() > 10:
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    return save_curve_plot(
        fig,
        axes[0, 0],
        path,
        title,
        ylabel="greedy return (mean over seeds)",
        xlabel_ax=axes[-1, 0],  # under PBT, the bottom panel of the shared x axis
    )


def save_curve_plot(
    fig, ax, path, title: str = "", ylabel: str = "episode return", xlabel_ax=None, **ylabel_kw
) -> Path:
    """Finish a learning-curve figure (x axis: environment steps per seed, labelled on
    ``xlabel_ax``, by default ``ax``; grid, legend) and save it to ``path``; the figure is
    closed."""
    import matplotlib.pyplot as plt

    (ax if xlabel_ax is None else xlabel_ax).set_xlabel("environment steps (per seed)")
    ax.set_ylabel(ylabel, **ylabel_kw)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def task_summary(curves: Mapping[str, Any]) -> dict:
    """The per-task section of a multi-task run's summary (``curves`` with
    ``task_episode_return`` and ``task_episodes`` [points, seeds, tasks], the loop's chunk
    metrics for a :class:`memjax.envs.MultiTask` environment): the training (epsilon-greedy)
    episodes that finished in the last chunk, per task, and (with ``eval_task_return``
    [points, seeds, tasks] in ``curves``) the final greedy evaluation per task, whose episode
    ``i`` plays task ``i % tasks`` (``eval_return`` averages them over tasks)."""
    returns = np.asarray(curves["task_episode_return"], np.float64)[-1]  # [seeds, tasks]
    episodes = np.asarray(curves["task_episodes"])[-1]
    section = {"tasks": returns.shape[-1]}
    if "eval_task_return" in curves:
        greedy = np.asarray(curves["eval_task_return"], np.float64)[-1]  # [seeds, tasks]
        section.update(final_return_mean=nanmean_over_seeds(greedy.T), final_return_per_seed=greedy)
    return {
        **section,
        "train_return_last_chunk_mean": nanmean_over_seeds(returns.T),
        "train_return_last_chunk_per_seed": returns,
        "train_episodes_last_chunk": episodes.sum(axis=0),
    }


def plot_task_curves(path, curves: Mapping[str, Any], title: str = "") -> Path:
    """Each task's return over the run, mean over seeds: greedy evaluation (solid, when
    ``eval_task_return`` is in ``curves``) and training episodes (ε-greedy, dotted)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    returns = np.asarray(curves["task_episode_return"], np.float64)  # [points, seeds, tasks]
    greedy = curves.get("eval_task_return")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for t in range(returns.shape[-1]):
        if greedy is not None:
            ax.plot(
                curves["steps"],
                nanmean_over_seeds(np.asarray(greedy, np.float64)[:, :, t]),
                color=f"C{t}",
                label=f"task {t} (greedy)",
            )
        ax.plot(
            curves["steps"],
            nanmean_over_seeds(returns[:, :, t]),
            color=f"C{t}",
            ls=":" if greedy is not None else "-",
            label=f"task {t} (training)" if greedy is not None else f"task {t}",
        )
    return save_curve_plot(fig, ax, path, title, ylabel="episode return")


def write_all(out_dir, summary: Mapping[str, Any], curves: Mapping[str, Any]) -> list[Path]:
    """Write the four result files into ``out_dir`` (created if needed); return their paths.
    A multi-task run (``task_episode_return`` in ``curves``) also gets ``curve_tasks.png`` and
    a ``per_task`` section in ``summary.json`` (:func:`task_summary`)."""
    out = Path(out_dir)
    os.makedirs(out, exist_ok=True)
    if "task_episode_return" in curves:
        summary = {**summary, "per_task": task_summary(curves)}
    population = summary.get("population")
    paths = [write_csv(out / "returns.csv", curves, population)]
    jpath = out / "returns.json"
    with open(jpath, "w") as f:
        json.dump(json_safe({k: v for k, v in curves.items()}), f)
    paths.append(jpath)
    agent = str(summary.get("agent", "dqn")).upper()
    title = f"{agent} on {summary.get('env', '')} ({summary.get('replay', '')} replay)"
    if population:
        paths.append(plot_members(out / "curve.png", curves, population, title=title))
    else:
        paths.append(plot_curve(out / "curve.png", curves, title=title))
    if "task_episode_return" in curves:
        paths.append(plot_task_curves(out / "curve_tasks.png", curves, title=title))
    spath = out / "summary.json"
    with open(spath, "w") as f:
        json.dump(json_safe(dict(summary)), f, indent=2)
        f.write("\n")
    paths.append(spath)
    return paths
