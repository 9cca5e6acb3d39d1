"""Deploy a policy (issue 25): each exported file's size, latency per action and greedy return.

    python experiments/export_table.py                    # CartPole-v1 and Breakout-MinAtar
    python experiments/export_table.py --envs CartPole-v1 --steps 50000 --episodes 20
    python experiments/export_table.py --quick            # a smoke run (tiny runs, few calls)

For each environment it trains a short run (``memjax.train.run``, ``--seeds`` seeds; kept in
``experiments/results/export/runs/<env>/``, reused when it is there), exports every seed in
the four variants (``--format jax|onnx`` x ``--quantize none|int8``) and measures, on this
machine:

* **greedy return**: ``--episodes`` episodes per seed from the same reset keys, played with
  all episodes of a seed as one batch through each file (onnxruntime's default session; a
  jax file through ``jax.jit(exp.call)``), through the flax network in memory (the run's
  policy) and through memjax's own int8 model (:func:`memjax.compress.apply`); the run's own
  evaluation (``summary.json``'s ``final_return_mean``) is listed beside them;
* **size** of each file (seed 0), and **latency** per call at batch 1 and 256 (seed 0):
  the variants and the flax network under ``jax.jit`` timed side by side in one process,
  interleaved rounds with the order rotated, each call's result brought back as numpy;
  medians over rounds, and the median of per-round ratios to the flax network.

Writes ``experiments/results/export_<tag>.json`` and prints the markdown tables of
``docs/deploy.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments._common import RESULTS, default_tag, machine_info, write_json  # noqa: E402

VARIANTS = (("jax", "none"), ("jax", "int8"), ("onnx", "none"), ("onnx", "int8"))
STEPS = {"CartPole-v1": 50_000, "Breakout-MinAtar": 50_000}


def variant_name(fmt: str, quantize: str) -> str:
    return f"{fmt} {'float32' if quantize == 'none' else quantize}"


def train(env: str, steps: int, seeds: int, out: Path) -> dict:
    """A short run of DQN's defaults on ``env`` into ``out`` (reused when it is there), epsilon
    decaying over half of it."""
    import json

    import memjax as mj

    if not (out / "checkpoint.msgpack").is_file():
        config = mj.train.TrainConfig(
            env=env, total_steps=steps, eval_episodes=20, eps_decay_steps=steps // 2
        )
        if steps < 5 * config.learning_starts:  # a smoke run: learn from the start
            config = config.replace(learning_starts=steps // 3, chunk_steps=steps // 3)
        t0 = time.perf_counter()
        mj.train.run(config, num_seeds=seeds, out_dir=out, progress=False, checkpoint_every=0)
        print(f"{env}: trained {steps:,} steps x {seeds} seeds in {time.perf_counter() - t0:.0f} s")
    return json.loads((out / "summary.json").read_text())


def actors(run: Path, seed: int, folder: Path) -> dict:
    """Name -> ``obs [B, *obs_shape] float32 -> q_values numpy``: the exported files and the
    network in memory (float32, and memjax's int8 model), for one seed; and the file sizes."""
    import onnxruntime

    import memjax.compress as mjc
    from memjax import export
    from memjax.train import params_file

    loaded = params_file.load(run)
    network, params = loaded.network(), jax.tree.map(jnp.asarray, loaded.seed_params(seed))
    int8 = mjc.quantize(params, bits=8, per_channel=True)
    out = {
        "flax (jax.jit)": jax.jit(lambda o: network.apply(params, o)),
        "memjax int8 model": jax.jit(lambda o: mjc.apply(network, int8, o)),
    }
    sizes = {}
    for fmt, quantize in VARIANTS:
        path = folder / f"seed{seed}-{quantize}.{'jaxexport' if fmt == 'jax' else 'onnx'}"
        write = export.export_jax if fmt == "jax" else export.export_onnx
        write(run, path, seed=seed, quantize=quantize)
        sizes[variant_name(fmt, quantize)] = path.stat().st_size
        if fmt == "jax":
            out[variant_name(fmt, quantize)] = jax.jit(export.load_jax(path).call)
        else:
            session = onnxruntime.InferenceSession(str(path))
            out[variant_name(fmt, quantize)] = lambda o, s=session: s.run(None, {"obs": o})[0]
    return {k: (lambda o, f=f: np.asarray(f(o))) for k, f in out.items()}, sizes


def greedy_returns(act, env_name: str, key, episodes: int) -> np.ndarray:
    """float64 ``[episodes]``: the returns of ``episodes`` greedy episodes played as one batch
    through ``act`` (reset keys from ``key``; each episode counts until its first end)."""
    import memjax as mj

    env, params = mj.envs.make(env_name)
    reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
    step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    k_reset, k_step = jax.random.split(key)
    obs, state = reset(jax.random.split(k_reset, episodes), params)
    total, alive = np.zeros(episodes), np.ones(episodes, bool)
    for t in range(int(params.max_steps_in_episode)):
        actions = np.argmax(act(np.asarray(obs, np.float32)), axis=-1).astype(np.int32)
        keys = jax.random.split(jax.random.fold_in(k_step, t), episodes)
        obs, state, reward, terminated, truncated, _ = step(keys, state, actions, params)
        total += np.where(alive, np.asarray(reward), 0.0)
        alive &= ~(np.asarray(terminated) | np.asarray(truncated))
        if not alive.any():
            break
    return total


def latencies(acts: dict, obs_shape, batches, rounds: int, calls: int) -> dict:
    """Per name and batch: seconds per call (medians over rounds) and the median of per-round
    ratios to the flax network; the names interleaved, their order rotated every round."""
    rng = np.random.default_rng(0)
    names = list(acts)
    out = {}
    for batch in batches:
        obs = rng.normal(size=(batch, *obs_shape)).astype(np.float32)
        if len(obs_shape) == 3:
            obs = (obs > 1.0).astype(np.float32)
        n = max(1, calls if batch == 1 else calls // 10)
        for f in acts.values():  # compile, warm up
            f(obs)
        times = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                f = acts[name]
                t0 = time.perf_counter()
                for _ in range(n):
                    f(obs)
                times[name].append((time.perf_counter() - t0) / n)
        ref = times["flax (jax.jit)"]
        out[batch] = {
            name: {
                "median_s": statistics.median(ts),
                "min_s": min(ts),
                "max_s": max(ts),
                "ratio_to_flax": statistics.median(t / f for t, f in zip(ts, ref)),
                "calls_per_round": n,
            }
            for name, ts in times.items()
        }
    return out


def measure_env(env: str, args, runs_dir: Path) -> dict:
    summary = train(env, args.steps or STEPS[env], args.seeds, runs_dir / env)
    run = runs_dir / env
    returns, sizes = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            acts, seed_sizes = actors(run, seed, Path(tmp))
            sizes = sizes or seed_sizes
            key = jax.random.key(1_000 + seed)
            for name, act in acts.items():
                r = greedy_returns(act, env, key, args.episodes)
                returns.setdefault(name, []).append(r.tolist())
            if seed == 0:
                from memjax.train import params_file

                obs_shape = tuple(params_file.load(run).observation_spec().shape)
                timing = latencies(acts, obs_shape, (1, 256), args.rounds, args.calls)
    return summarize(
        {
            "env": env,
            "run": {
                "steps": summary.get("steps"),
                "seeds": args.seeds,
                "final_return_mean": summary.get("final_return_mean"),
                "final_return_per_seed": summary.get("final_return_per_seed"),
                "eval_episodes": summary.get("config", {}).get("eval_episodes"),
            },
            "episodes_per_seed": args.episodes,
            "returns_raw": returns,
            "file_bytes": sizes,
            "latency": {str(b): v for b, v in timing.items()},
        }
    )


def reference_of(name: str) -> str:
    """What a row must score: the flax network (float32 rows), memjax's int8 model (int8)."""
    return "memjax int8 model" if "int8" in name else "flax (jax.jit)"


def summarize(result: dict) -> dict:
    """``result`` with ``returns``: per row, the mean return, per seed, and how many episodes
    end with exactly the return of the row's reference (:func:`reference_of`)."""
    raw = result["returns_raw"]
    result["returns"] = {
        name: {
            "return_mean": float(np.mean(r)),
            "return_per_seed": [float(np.mean(x)) for x in r],
            "reference": reference_of(name),
            "episodes_equal_to_reference": int(
                np.sum(np.array(r) == np.array(raw[reference_of(name)]))
            ),
            "episodes_equal_to_flax": int(np.sum(np.array(r) == np.array(raw["flax (jax.jit)"]))),
        }
        for name, r in raw.items()
    }
    return result


NEEDS = {
    "flax (jax.jit)": "jax, flax, memjax",
    "memjax int8 model": "jax, flax, memjax",
    "jax float32": "jax",
    "jax int8": "jax",
    "onnx float32": "onnxruntime",
    "onnx int8": "onnxruntime",
}


def tables(doc: dict) -> str:
    """The markdown tables of docs/deploy.md from a results document."""
    lines = []
    fmt = lambda s: f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"  # noqa: E731
    for r in doc["envs"]:
        n = r["episodes_per_seed"] * r["run"]["seeds"]
        full = r["file_bytes"]
        lines += [
            f"**{r['env']}**: a run of {r['run']['steps']:,} steps x {r['run']['seeds']} seeds "
            f"(its own evaluation: {r['run']['final_return_mean']:.2f}); greedy return over "
            f"{n} episodes, the same resets for every row:",
            "",
            "| policy | needs at run time | greedy return | episodes scoring as its reference "
            "| file | batch 1 | batch 256 |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for name, ret in r["returns"].items():
            size = full.get(name)
            if size and "int8" in name:
                size_text = f"{size:,} B ({size / full[name.replace('int8', 'float32')]:.2f}x)"
            else:
                size_text = f"{size:,} B" if size else ""
            lat = [r["latency"][b][name] for b in ("1", "256")]
            same = "" if name == ret["reference"] else f"{ret['episodes_equal_to_reference']}/{n}"
            lines.append(
                f"| {name} | {NEEDS[name]} | {ret['return_mean']:.2f} | {same} | {size_text} | "
                + " | ".join(f"{fmt(x['median_s'])} ({x['ratio_to_flax']:.2f}x)" for x in lat)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--envs", default="CartPole-v1,Breakout-MinAtar")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: per env)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--episodes", type=int, default=20, help="greedy episodes per seed")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=300, help="calls per round at batch 1 (/10 at 256)")
    p.add_argument("--runs", default=str(RESULTS / "export" / "runs"))
    p.add_argument("--quick", action="store_true", help="tiny runs and few calls (a smoke run)")
    p.add_argument("--out", default=None)
    p.add_argument("--report", default=None, help="print the tables of a results JSON, no runs")
    args = p.parse_args(argv)
    if args.report:
        import json

        doc = json.loads(Path(args.report).read_text())
        doc["envs"] = [summarize(r) for r in doc["envs"]]
        print(tables(doc))
        return 0
    if args.quick:
        args.steps, args.seeds, args.episodes, args.rounds, args.calls = 3_000, 1, 2, 2, 5
        args.runs = (
            args.runs if args.runs != str(RESULTS / "export" / "runs") else tempfile.mkdtemp()
        )
    t0, load_before = time.time(), os.getloadavg()
    doc = {
        "command": "python experiments/export_table.py " + " ".join(argv or sys.argv[1:]),
        "envs": [measure_env(e, args, Path(args.runs)) for e in args.envs.split(",") if e],
    }
    doc |= {"machine": machine_info(), "wall_seconds": round(time.time() - t0, 1)}
    doc |= {"load_average_before": load_before, "load_average_after": os.getloadavg()}
    print(tables(doc))
    out = args.out or RESULTS / f"export_{default_tag()}{'_quick' if args.quick else ''}.json"
    write_json(doc, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
