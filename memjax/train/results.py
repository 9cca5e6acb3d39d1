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
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def config_to_dict(config) -> dict:
    """A dataclass config as a JSON-friendly dict (tuples become lists)."""
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


def write_csv(path, curves: Mapping[str, Any]) -> Path:
    """One row per (step, seed): ``step,seed,eval_return,train_return``."""
    path = Path(path)
    steps = list(curves["steps"])
    ev = np.asarray(curves["eval_return"], np.float64)
    tr = np.asarray(curves["train_return"], np.float64)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "seed", "eval_return", "train_return"])
        for i, step in enumerate(steps):
            for s in range(ev.shape[1]):
                w.writerow([int(step), s, f"{ev[i, s]:.6g}",
                            "" if not np.isfinite(tr[i, s]) else f"{tr[i, s]:.6g}"])
    return path


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
    mean, std = ev.mean(axis=1), ev.std(axis=1)
    ax.fill_between(steps, ev.min(axis=1), ev.max(axis=1), alpha=0.12, color="C0",
                    label="greedy eval: min-max over seeds")
    # clipped to the seeds' range: a std band can otherwise poke past a return cap
    ax.fill_between(steps, np.maximum(mean - std, ev.min(axis=1)),
                    np.minimum(mean + std, ev.max(axis=1)), alpha=0.3, color="C0", label="±1 std")
    ax.plot(steps, mean, color="C0", label=f"greedy eval: mean of {ev.shape[1]} seeds")
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tr_mean = np.nanmean(tr, axis=1)
    ax.plot(steps, tr_mean, color="C1", ls="--", lw=1, label="training episodes (ε-greedy)")
    ax.set_xlabel("environment steps (per seed)")
    ax.set_ylabel("episode return")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_all(out_dir, summary: Mapping[str, Any], curves: Mapping[str, Any]) -> list[Path]:
    """Write the four result files into ``out_dir`` (created if needed); return their paths."""
    out = Path(out_dir)
    os.makedirs(out, exist_ok=True)
    paths = [write_csv(out / "returns.csv", curves)]
    jpath = out / "returns.json"
    with open(jpath, "w") as f:
        json.dump(json_safe({k: v for k, v in curves.items()}), f)
    paths.append(jpath)
    agent = str(summary.get("agent", "dqn")).upper()
    title = f"{agent} on {summary.get('env', '')} ({summary.get('replay', '')} replay)"
    paths.append(plot_curve(out / "curve.png", curves, title=title))
    spath = out / "summary.json"
    with open(spath, "w") as f:
        json.dump(json_safe(dict(summary)), f, indent=2)
        f.write("\n")
    paths.append(spath)
    return paths
