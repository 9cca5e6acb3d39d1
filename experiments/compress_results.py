"""Model compression of trained Q-networks (issue 5): the README's table and plots.

    python experiments/compress_results.py --env CartPole-v1
    python experiments/compress_results.py --env Breakout-MinAtar
    python experiments/compress_results.py --report-only        # table + plots from the JSONs

For each environment it loads the teacher checkpoint from
``experiments/results/compress/teachers/<env>/`` (written by ``memjax train --out``; the
commands are in ``COMMANDS``), applies every method (``memjax.compress.pipeline`` specs) to every
seed, reads each artefact back from its serialized bytes and evaluates it: greedy return over
``--episodes`` episodes per seed (the trainer's evaluation) and action agreement with the
teacher on the states its greedy policy visits. It writes, under
``experiments/results/compress/``:

* ``<env>.json``: every row (parameters, serialized and kernel bytes, return per seed,
  agreement, timings) plus the settings and the command;
* ``<env>-size-vs-return.png``: return (% of float32) against serialized bytes;
* ``compress_table.md``: one markdown table per environment (rebuilt from all JSONs).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from experiments._common import git_state  # noqa: E402

OUT = _ROOT / "experiments" / "results" / "compress"
TEACHERS = OUT / "teachers"

COMMANDS = {
    "CartPole-v1": "memjax train --env CartPole-v1 --seeds 4 --steps 500000 --no-progress "
    "--out experiments/results/compress/teachers/CartPole-v1",
    "Breakout-MinAtar": "memjax train --env Breakout-MinAtar --seeds 3 --steps 250000 "
    "--capacity 100000 --eps-decay-steps 125000 --chunk-steps 25000 "
    "--no-progress --out experiments/results/compress/teachers/"
    "Breakout-MinAtar",
}

COMMON = [
    "int8",
    "int8:tensor",
    "int4",
    "int2",
    "prune:0.5",
    "prune:0.9",
    "prune:0.5+int8",
    "prune:0.9+int8",
    "gprune:0.9",
    "gprune:0.9+int8",
    "lowrank:0.999",
    "lowrank:0.99",
    "lowrank:0.95",
    "lowrank:0.9",
    "share:16",
    "share:4",
]
STUDENTS = {
    "CartPole-v1": ["distill:32,32", "distill:32,32+int8"],
    "Breakout-MinAtar": ["distill:8/32", "distill:8/32+int8"],
}
DISTILL_STEPS = {"CartPole-v1": 100_000, "Breakout-MinAtar": 200_000}
# gymnax Breakout's only randomness is the ball's first direction: the greedy policy has two
# trajectories per seed, so we also report epsilon-greedy returns (0.05) there
EXTRA_EPSILON = {"Breakout-MinAtar": 0.05}


def run_env(
    env: str,
    episodes: int,
    methods=None,
    distill_steps=None,
    epsilon: float = 0.0,
    extra_epsilon=None,
):
    from memjax.compress import pipeline
    from memjax.compress.distill import distill_train_config
    from memjax.train import params_file
    from memjax.train.results import json_safe as _clean

    ck = params_file.load(TEACHERS / env)
    steps = distill_steps or DISTILL_STEPS.get(env, 200_000)
    dcfg = distill_train_config(
        total_steps=steps, chunk_steps=min(20_000, steps), buffer_capacity=50_000
    )
    t0 = time.perf_counter()
    commit = git_state(short=True)["memjax_commit"] or "unknown"
    if extra_epsilon is None:
        extra_epsilon = EXTRA_EPSILON.get(env)
    ctx = pipeline.make_context(
        ck,
        episodes=episodes,
        epsilon=epsilon,
        distill_config=dcfg,
        log=lambda s: print(s, flush=True),
        extra_epsilon=extra_epsilon,
    )
    specs = methods or COMMON + STUDENTS.get(env, [])
    rows = pipeline.run_specs(ctx, specs)
    doc = {
        "env": env,
        "seeds": ctx.seeds,
        "episodes_per_seed": episodes,
        "epsilon": epsilon,
        "teacher_command": COMMANDS.get(env),
        "teacher_summary_return": ck.meta.get("final_return_per_seed"),
        "distill_config": dcfg.to_dict(),
        "agreement_states": int(np.prod(ctx.states.shape[1:2])),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "memjax_commit": commit,
        "wall_seconds": time.perf_counter() - t0,
        "cpu_count": os.cpu_count(),
        "load_average_after": list(os.getloadavg()),
        "rows": rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{env}.json").write_text(json.dumps(_clean(doc), indent=2) + "\n")
    print(pipeline.format_table(rows), flush=True)
    return doc


def plot_env(doc) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(9.0, 5.0), dpi=120)
    families = {
        "float32": "k",
        "int": "C0",
        "prune": "C1",
        "gprune": "C3",
        "lowrank": "C2",
        "share": "C4",
        "distill": "C5",
    }
    offsets = [(4, 3), (4, -9), (-10, 4), (-10, -10)]  # stagger numbers of nearby points
    for i, r in enumerate(rows, start=1):
        m = r["method"]
        fam = m.split(":")[0].split("+")[0]
        fam = "int" if fam.startswith("int") else fam
        marker = "s" if "+int8" in m else "o"
        ax.scatter(
            r["serialized_bytes"],
            r["pct_return"],
            color=families.get(fam, "C7"),
            marker=marker,
            s=30,
            zorder=3,
            label=f"{i}: {m}",
        )
        ax.annotate(
            str(i),
            (r["serialized_bytes"], r["pct_return"]),
            fontsize=7,
            xytext=offsets[i % len(offsets)],
            textcoords="offset points",
        )
    ax.axhline(100, color="k", lw=0.6, ls=":")
    ax.axhline(95, color="C3", lw=0.6, ls="--")
    ax.text(ax.get_xlim()[0], 95, " 95%", color="C3", fontsize=7, va="top")
    ax.set_xscale("log")
    ax.set_xlabel("serialized artefact (bytes, log scale; mean over seeds)")
    ax.set_ylabel("greedy return, % of float32")
    n = len(doc["seeds"])
    ax.set_title(
        f"{doc['env']}: compressed Q-networks ({n} seeds x {doc['episodes_per_seed']} episodes)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=6.5,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        title="method (square: + int8)",
        title_fontsize=7,
    )
    fig.tight_layout()
    path = OUT / f"{doc['env']}-size-vs-return.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def report():
    from memjax.compress.pipeline import format_table

    parts = [
        "# Model compression of trained DQN Q-networks\n",
        "Generated by `experiments/compress_results.py` from the JSON files here. "
        "Return: greedy, mean over seeds of the mean over episodes per seed (± std over "
        "seeds); % of the float32 row. Agreement: greedy actions equal to the original's "
        "on states its own greedy policy visits. Serialized bytes: the msgpack artefact "
        "(`memjax.compress.serialize`), read back before evaluation; kernels: the stored "
        "kernel arrays (integers, scales, masks, codebooks), biases excluded.\n",
    ]
    for path in sorted(OUT.glob("*.json")):
        doc = json.loads(path.read_text())
        png = plot_env(doc)
        parts.append(f"## {doc['env']}\n")
        parts.append(
            f"{len(doc['seeds'])} seeds x {doc['episodes_per_seed']} episodes, "
            f"epsilon {doc['epsilon']}; teacher: `{doc['teacher_command']}`; "
            f"this table: `{doc['command']}` (commit {doc['memjax_commit']}, "
            f"{doc['wall_seconds'] / 60:.1f} min).\n"
        )
        parts.append(format_table(doc["rows"]) + "\n")
        parts.append(f"![{doc['env']} size vs return]({png.name})\n")
    (OUT / "compress_table.md").write_text("\n".join(parts))
    print(f"wrote {OUT / 'compress_table.md'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--env",
        action="append",
        default=None,
        help="environment(s) with a teacher checkpoint (repeatable)",
    )
    p.add_argument("--episodes", type=int, default=100, help="greedy episodes per seed")
    p.add_argument("--epsilon", type=float, default=0.0)
    p.add_argument("--method", action="append", default=None, help="override the method list")
    p.add_argument("--distill-steps", type=int, default=None)
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    if not args.report_only:
        for env in args.env or ["CartPole-v1", "Breakout-MinAtar"]:
            run_env(env, args.episodes, args.method, args.distill_steps, args.epsilon)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
