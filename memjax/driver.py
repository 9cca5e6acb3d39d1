"""The host driver behind ``memjax train``: AOT-compiled, donated, vmapped chunks in a
Python loop with a progress bar, greedy evaluation between chunks, and the results files.
Also the byte-budget helpers (capacity for a memory budget, bytes per transition)."""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from memjax.train import Trainer, example_transition, make_env_for, make_train
from memjax.train_config import TrainConfig


# ---------------------------------------------------------------------------------------------
# Host driver
# ---------------------------------------------------------------------------------------------


def buffer_bytes_per_transition(trainer: Trainer) -> float:
    """Bytes of one seed's whole replay state (items, sum-tree, counters) divided by its
    capacity, from ``jax.eval_shape`` (nothing is allocated)."""
    state = jax.eval_shape(trainer.init, jax.random.key(0))
    return trainer.buffer.memory(state.buffer).bytes_per_item


def capacity_for_budget(config: TrainConfig, budget_bytes: int, env=None,
                        env_params=None) -> int:
    """The largest replay capacity whose buffer state (one seed, with ``config``'s replay
    kind, codecs and layout, on its environment) fits in ``budget_bytes``, measured with
    ``jax.eval_shape`` (no allocation); see :func:`memjax.replay.capacity_for`. Raises
    ``ValueError`` if not even ``batch_size`` transitions fit."""
    from memjax import replay
    from memjax.train_storage import make_codecs, make_layout

    env, env_params = make_env_for(config, env, env_params)
    kwargs = {"alpha": config.alpha} if config.replay == "prioritized" else {}
    return replay.capacity_for(budget_bytes, example_transition(env, env_params),
                               codecs=make_codecs(config, env, env_params),
                               layout=make_layout(config), kind=config.replay,
                               minimum=max(config.batch_size, config.num_envs), **kwargs)


def storage_summary(config: TrainConfig, buffer_state) -> dict:
    """Codecs, layout and their end-of-run counters: values clipped / invalid per field
    (summed over seeds), and per-seed buffer sizes (the one-copy layout may hold fewer
    than the capacity when its side store overflowed) and frame-stack errors. ``run`` adds
    ``size_after_each_chunk`` ([chunks][seeds])."""
    from memjax import codecs as mc

    out = {"obs_codec": config.obs_codec, "reward_codec": config.reward_codec,
           "compact_fields": config.compact_fields, "layout": config.layout,
           "frame_stack": config.frame_stack,
           "codec_counters": {name: mc.counters(st) for name, st in buffer_state.codecs.items()},
           "final_size_per_seed": np.asarray(buffer_state.count).tolist()}
    if hasattr(buffer_state, "layout_errors"):
        out["layout_errors"] = int(np.sum(buffer_state.layout_errors))
    return out


def _aot(fn, *args, donate=False):
    t0 = time.perf_counter()
    jitted = jax.jit(fn, donate_argnums=(0,) if donate else ())
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def run(config: TrainConfig = TrainConfig(), num_seeds: int = 8, out_dir=None, seed: int = 0,
        progress: bool = True, env=None, env_params=None, log: Callable = print) -> dict:
    """Train ``num_seeds`` independent seeds (vmapped) with the host loop.

    Compiles (AOT) the vmapped warm-up and training chunks with the state donated, runs them
    with a tqdm bar (steps, SPS, latest training and greedy returns), evaluates greedily after
    every chunk, and, when ``out_dir`` is given, writes ``returns.csv``, ``returns.json``,
    ``curve.png`` and ``summary.json`` there. Returns the summary dict (plus ``"curves"``).
    """
    from memjax import results

    if not isinstance(num_seeds, int) or num_seeds <= 0:
        raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
    trainer = make_train(config, env=env, env_params=env_params)
    cfg = trainer.config
    base = jax.random.key(seed)
    k_train, k_eval = jax.random.split(base)
    keys = jax.random.split(k_train, num_seeds)

    compile_times = {}
    init_c, compile_times["init"] = _aot(jax.vmap(trainer.init), keys)
    state = init_c(keys)
    collect_c, compile_times["collect"] = _aot(jax.vmap(trainer.collect), state, donate=True)
    chunk_c, compile_times["chunk"] = _aot(jax.vmap(trainer.chunk), state, donate=True)
    final_c = None
    if trainer.final_chunk is not None:
        final_c, compile_times["final_chunk"] = _aot(jax.vmap(trainer.final_chunk), state,
                                                     donate=True)
    eval_keys0 = jax.random.split(k_eval, num_seeds)
    eval_c, compile_times["evaluate"] = _aot(jax.vmap(trainer.evaluate), state.params,
                                             eval_keys0)
    compile_seconds = sum(compile_times.values())

    mem = trainer.buffer.memory(state.buffer)  # all seeds; bytes_per_item is per seed
    if log is not None:
        log(str(mem))
    schedule = [("warmup", collect_c, cfg.warmup_vec_steps * cfg.num_envs)]
    schedule += [("chunk", chunk_c, cfg.chunk_iters * cfg.train_every * cfg.num_envs)] \
        * cfg.num_chunks
    if final_c is not None:
        schedule.append(("final", final_c, cfg.remainder_iters * cfg.train_every * cfg.num_envs))

    steps_axis, train_curve, eval_curve = [], [], []
    losses, sizes = [], []
    train_seconds = eval_seconds = 0.0
    done_steps = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        # the bar counts env steps per seed; sps_all_seeds = steps/s summed over seeds,
        # ret = latest training (epsilon-greedy) return, greedy = latest evaluation return
        bar = tqdm(total=cfg.steps_done, unit="step", desc=f"{cfg.env} x{num_seeds}",
                   dynamic_ncols=True)
    last_eval = float("nan")
    try:
        for i, (name, fn, n_steps) in enumerate(schedule):
            t0 = time.perf_counter()
            state, metrics = fn(state)
            jax.block_until_ready(metrics)
            train_seconds += time.perf_counter() - t0
            done_steps += n_steps
            t0 = time.perf_counter()
            ev = eval_c(state.params, jax.random.split(jax.random.fold_in(k_eval, i), num_seeds))
            ev = np.asarray(jax.device_get(ev))                         # [seeds, episodes]
            eval_seconds += time.perf_counter() - t0
            m = jax.device_get(metrics)
            steps_axis.append(done_steps)
            train_curve.append(np.asarray(m["episode_return"], np.float64))
            eval_curve.append(ev.mean(axis=1))
            losses.append(np.asarray(m["loss"], np.float64))
            sizes.append(np.asarray(jax.device_get(state.buffer.count)).tolist())
            last_eval = float(ev.mean())
            if bar is not None:
                bar.update(n_steps)
                sps = done_steps * num_seeds / max(train_seconds, 1e-9)
                bar.set_postfix(sps_all_seeds=f"{sps:,.0f}", ret=f"{np.nanmean(train_curve[-1]):.1f}"
                                if np.isfinite(train_curve[-1]).any() else "nan",
                                greedy=f"{last_eval:.1f}")
    finally:
        if bar is not None:
            bar.close()

    final = eval_curve[-1]
    summary = {
        "env": cfg.env,
        "seeds": num_seeds,
        "steps": int(cfg.steps_done),
        "replay": cfg.replay,
        "buffer_capacity": cfg.buffer_capacity,
        "final_return_mean": float(np.mean(final)),
        "final_return_std": float(np.std(final)),
        "final_return_per_seed": [float(x) for x in final],
        "steps_per_second": cfg.steps_done * num_seeds / train_seconds,
        "steps_per_second_per_seed": cfg.steps_done / train_seconds,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "compile_seconds": compile_seconds,
        "compile_seconds_by_function": compile_times,
        "bytes_per_transition": mem.bytes_per_item,
        "buffer_bytes_per_seed": mem.total_bytes / num_seeds,
        "replay_memory": mem.as_dict(),
        "replay_storage": {**storage_summary(cfg, state.buffer), "size_after_each_chunk": sizes},
        "eval_episodes": cfg.eval_episodes,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "config": results.config_to_dict(cfg),
    }
    curves = {
        "steps": steps_axis,
        "eval_return": np.stack(eval_curve),       # [points, seeds]
        "train_return": np.stack(train_curve),     # [points, seeds]
        "loss": np.stack(losses),
    }
    if out_dir is not None:
        paths = results.write_all(out_dir, summary, curves)
        from memjax import checkpoint  # final params of every seed + the config
        paths.append(checkpoint.save(out_dir, cfg, state.params, network=trainer.network,
                                     meta={"final_return_per_seed": summary[
                                         "final_return_per_seed"]}))
        if log is not None:
            log("wrote " + ", ".join(str(p) for p in paths))
    summary["curves"] = curves
    summary["params"] = state.params  # final params, leading seed axis (not in summary.json)
    return summary
