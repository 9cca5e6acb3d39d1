"""The host driver behind ``memjax train``: AOT-compiled, donated, vmapped chunks in a
Python loop with a progress bar, greedy evaluation between chunks, and the results files.
Also the byte-budget helpers (capacity for a memory budget, bytes per transition)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
import sys
import threading
import time
from collections.abc import Callable

import jax
import numpy as np
from flax import struct

from memjax import envs
from memjax.train import checkpoints, devices, params_file, results
from memjax.train import population as populations
from memjax.train.build import observation_spec, run_warnings
from memjax.train.config import TrainConfig
from memjax.train.evaluation import episode_cap
from memjax.train.loop import Trainer, make_train
from memjax.train.memory import carry_bytes_per_env, storage_summary
from memjax.train.storage import format_choices


def _aot(fn, *args, donate=False, in_shardings=None, out_shardings=None):
    t0 = time.perf_counter()
    kwargs = {} if in_shardings is None else {"in_shardings": in_shardings}
    jitted = jax.jit(
        fn, donate_argnums=(0,) if donate else (), out_shardings=out_shardings, **kwargs
    )
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


@dataclasses.dataclass
class _Compiled:
    """The vmapped, AOT-compiled pieces of a run and their compile times (seconds).
    ``init()`` makes the placed state; ``evaluate(agent, index)`` and the schedule's
    ``chunk(state) -> (state, metrics, buffer sizes)`` return results sharded like it."""

    init: Callable
    evaluate: Callable
    schedule: list  # (name, compiled chunk, env steps per seed) in run order
    seconds: dict


def _compile(trainer: Trainer, place: devices.Layout, k_train, k_eval) -> _Compiled:
    cfg, seconds = trainer.config, {}
    sharded = place.sharded
    # the key is an argument (host data, the same in every process): XLA would fold an init
    # over a constant key into the whole state as constants, a second copy of the state
    # held by the compiled program (64 seeds x 1M Breakout transitions: 4 GiB more)
    from_key, impl = place.init_from_key(trainer), jax.random.key_impl(k_train)
    key_data = np.asarray(jax.random.key_data(k_train))
    init_from_data, seconds["init"] = _aot(
        lambda data: from_key(jax.random.wrap_key_data(data, impl=impl)),
        key_data,
        out_shardings=sharded,
    )
    init = functools.partial(init_from_data, key_data)
    state = jax.eval_shape(place.init(trainer, k_train))

    # results stay sharded like the state (a replicated output of the state's shape would
    # be handed a donated shard by jit's aliasing); the host gathers them
    def chunk_of(fn):  # the state's sharding in and out, or the donation is unusable
        return _aot(
            place.chunk(fn), state, donate=True, in_shardings=(sharded,), out_shardings=sharded
        )

    collect, seconds["collect"] = chunk_of(trainer.collect)
    chunk, seconds["chunk"] = chunk_of(trainer.chunk)
    evaluate, seconds["evaluate"] = _aot(
        place.evaluate(trainer, k_eval), state.agent, np.int32(0), out_shardings=sharded
    )
    per_update = cfg.iter_vec_steps * cfg.num_envs
    schedule = [("warmup", collect, cfg.warmup_vec_steps * cfg.num_envs)]
    schedule += [("chunk", chunk, cfg.chunk_iters * per_update)] * cfg.num_chunks
    if trainer.final_chunk is not None:
        final, seconds["final_chunk"] = chunk_of(trainer.final_chunk)
        schedule.append(("final", final, cfg.remainder_iters * per_update))
    return _Compiled(init, evaluate, schedule, seconds)


def _progress_bar(cfg: TrainConfig, num_seeds: int, done_steps: int = 0):
    from tqdm.auto import tqdm

    # the bar counts env steps per seed; sps_all_seeds = steps/s summed over seeds,
    # ret = latest training (epsilon-greedy) return, greedy = latest evaluation return
    return tqdm(
        total=cfg.steps_done,
        initial=done_steps,
        unit="step",
        desc=f"{cfg.env} x{num_seeds}",
        dynamic_ncols=True,
    )


def _run_schedule(
    compiled: _Compiled,
    state,
    place: devices.Layout,
    bar,
    start=None,
    checkpoint=None,
    num_tasks: int = 0,
    live: dict | None = None,
):
    """Run the compiled chunks in order, evaluating after each. Returns the final state,
    the curves, the seconds spent training and evaluating, and the buffer sizes.

    ``num_tasks`` (a :class:`memjax.envs.MultiTask` environment; evaluation episode ``i``
    plays task ``i % num_tasks``): each evaluation's greedy return per task is kept too
    (``eval_task_return`` [seeds, tasks]).

    ``start``: a :class:`memjax.train.checkpoints.Snapshot` to continue from (its state is
    ``state``): the entries it has done are skipped and its results are kept.
    ``checkpoint(i, done_steps, state, points, sizes, times, stopping)`` is called after every
    entry, before the next one takes the (donated) state; ``stopping``: the run stops after
    this entry (a Ctrl-C asked for it).

    ``live``: a dict kept up to date with the results so far (``points``, ``sizes``,
    ``done_steps``, ``train_seconds``, ``eval_seconds``), for a run interrupted in the
    middle (see :class:`Interrupted`)."""
    points = {
        "steps": [],
        "eval_return": [],
        "eval_unfinished": [],
        "train_return": [],
        "metrics": [],
    }
    sizes, train_seconds, eval_seconds, done_steps, first = [], 0.0, 0.0, 0, 0
    if start is not None:
        points, sizes, done_steps, first = start.points, start.sizes, start.step, start.index + 1
        train_seconds = start.times.get("train_seconds", 0.0)
        eval_seconds = start.times.get("eval_seconds", 0.0)
    live = {} if live is None else live
    live.update(
        points=points,
        sizes=sizes,
        done_steps=done_steps,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
    )
    with _stop_between_chunks(live):
        for i, (_, fn, n_steps) in enumerate(compiled.schedule):
            if i < first:
                continue
            t0 = time.perf_counter()
            state, metrics, size = fn(state)
            jax.block_until_ready(metrics)
            train_seconds += time.perf_counter() - t0
            done_steps += n_steps
            t0 = time.perf_counter()
            episodes, metrics, size = checkpoints.gather(
                (compiled.evaluate(state.agent, np.int32(i)), metrics, size)
            )
            ev, finished = np.asarray(episodes.returns), np.asarray(episodes.finished)
            if place.data_parallel:  # [devices, seeds, ...] -> [seeds, ...]
                ev = np.concatenate(list(ev), axis=-1)
                metrics, size = devices.merge_replicas(metrics), size.sum(axis=0)
            eval_seconds += time.perf_counter() - t0  # ev: [seeds, episodes]
            points["steps"].append(done_steps)
            points["eval_return"].append(ev.mean(axis=1))
            if num_tasks:
                points.setdefault("eval_task_return", []).append(
                    envs.task_means(ev, np.arange(ev.shape[-1]) % num_tasks, num_tasks)
                )
            points["eval_unfinished"].append(int(np.sum(~finished)))
            points["train_return"].append(np.asarray(metrics["episode_return"], np.float64))
            points["metrics"].append(metrics)
            sizes.append(np.asarray(size).tolist())
            live.update(
                done_steps=done_steps, train_seconds=train_seconds, eval_seconds=eval_seconds
            )
            # read once: a Ctrl-C after this line stops the run after the next chunk instead
            stopping = bool(live.get("stop")) and i + 1 < len(compiled.schedule)
            if checkpoint is not None:
                checkpoint(
                    i,
                    done_steps,
                    state,
                    points,
                    sizes,
                    {"train_seconds": train_seconds, "eval_seconds": eval_seconds},
                    stopping,
                )
            if bar is not None:
                bar.update(n_steps)
                train = points["train_return"][-1]
                bar.set_postfix(
                    sps_all_seeds=f"{done_steps * place.num_seeds / max(train_seconds, 1e-9):,.0f}",
                    ret=f"{np.nanmean(train):.1f}" if np.isfinite(train).any() else "nan",
                    greedy=f"{ev.mean():.1f}",
                )
            if stopping:
                raise KeyboardInterrupt  # asked for between chunks: the checkpoint is on its way
        return state, points, train_seconds, eval_seconds, sizes


@contextlib.contextmanager
def _stop_between_chunks(live: dict):
    """While the chunks run, a first Ctrl-C (SIGINT) asks the run to stop after the chunk in
    flight and its checkpoint (``live["stop"]``), so that an interrupt never lands inside a
    checkpoint save; a second one stops at once. Only where signals can be handled (the main
    thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def request_stop(signum, frame):
        if live.get("stop"):
            raise KeyboardInterrupt
        live["stop"] = True
        print(
            "memjax: stopping after this chunk and its checkpoint (Ctrl-C again to stop now)",
            file=sys.stderr,
            flush=True,
        )

    signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _curves(points: dict) -> dict:
    """``steps``, ``eval_return`` / ``train_return`` [points, seeds], ``eval_unfinished``
    [points] (evaluation episodes of all seeds cut by the cap), each learner metric (e.g.
    ``loss``) [points, seeds] and, for a multi-task run, ``eval_task_return`` [points, seeds,
    tasks] (absent when resumed from a checkpoint written before it existed)."""
    curves = {
        "steps": points["steps"],
        "eval_return": np.stack(points["eval_return"]),
        "train_return": np.stack(points["train_return"]),
        "eval_unfinished": points["eval_unfinished"],
    }
    if len(points.get("eval_task_return", ())) == len(points["steps"]):
        curves["eval_task_return"] = np.stack(points["eval_task_return"])
    names = [n for n in points["metrics"][0] if n not in ("episode_return", "episodes")]
    for name in names:
        curves[name] = np.stack([np.asarray(m[name], np.float64) for m in points["metrics"]])
    return curves


def _summary(
    trainer: Trainer, place: devices.Layout, curves, mem, times, final_buffer, sizes
) -> dict:
    cfg, (compile_seconds, train_seconds, eval_seconds) = trainer.config, times
    final, num_seeds = curves["eval_return"][-1], place.num_seeds
    # env steps per seed: a data-parallel agent steps num_envs environments on every device
    replicas = place.num_devices if place.data_parallel else 1
    return {
        "env": cfg.env,
        "agent": cfg.agent,
        "seeds": num_seeds,
        "steps": int(cfg.steps_done),
        "replay": cfg.replay,
        "buffer_capacity": cfg.buffer_capacity,
        "n_step": cfg.n_step,
        "final_return_mean": float(np.mean(final)),
        "final_return_std": float(np.std(final)),
        "final_return_per_seed": [float(x) for x in final],
        **return_range(trainer),
        "steps_per_second": cfg.steps_done * replicas * num_seeds / train_seconds,
        "steps_per_second_per_seed": cfg.steps_done * replicas / train_seconds,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "compile_seconds": sum(compile_seconds.values()),
        "compile_seconds_by_function": compile_seconds,
        "bytes_per_transition": mem.bytes_per_item,
        "buffer_bytes_per_seed": mem.total_bytes / num_seeds,
        "carry_bytes_per_env": carry_bytes_per_env(trainer),
        "replay_memory": mem.as_dict(),
        "replay_storage": {
            **storage_summary(cfg, final_buffer, trainer.storage),
            "size_after_each_chunk": sizes,
        },
        "eval_episodes": cfg.eval_episodes,
        "eval_max_steps": episode_cap(trainer.env_params, cfg.eval_max_steps),
        "eval_unfinished_final": curves["eval_unfinished"][-1],
        "eval_unfinished_total": int(sum(curves["eval_unfinished"])),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "processes": jax.process_count(),
        "devices": place.num_devices,
        "data_parallel": place.data_parallel,
        "config": results.config_to_dict(cfg),
    }


def return_range(trainer: Trainer) -> dict:
    """``chance_return`` and ``best_return`` of the run's environment (each where known,
    :func:`memjax.envs.return_range`): a uniformly random policy's expected return and the
    largest one, from the task's rules."""
    try:
        chance, best = envs.return_range(trainer.env, trainer.env_params)
    except (AttributeError, TypeError, ValueError):  # a caller's env whose params do not fit
        chance, best = None, None
    return {k: v for k, v in (("chance_return", chance), ("best_return", best)) if v is not None}


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (``KeyboardInterrupt``). Its checkpoints are kept, and the
    results so far are written (``summary.json`` with ``"interrupted": true`` and
    ``steps_done``) when any evaluation was done.

    Attributes: ``out_dir``; ``steps_done`` (env steps per seed done when it stopped, as
    far as the results go); ``steps`` (the run's); ``paths`` (the result files written);
    ``resumable`` (it has a run record: ``memjax train --resume OUT`` continues it from its
    newest checkpoint, or from step 0 when it has none yet)."""

    def __init__(self, out_dir, steps_done: int, steps: int, paths=(), resumable=False):
        super().__init__(f"interrupted at step {steps_done:,} of {steps:,}")
        self.out_dir, self.steps_done, self.steps = out_dir, steps_done, steps
        self.paths, self.resumable = list(paths), resumable


def _interrupted_results(
    trainer: Trainer, place: devices.Layout, compiled: _Compiled, live: dict, out_dir
) -> list:
    """Write the results so far of an interrupted run (process 0); returns the paths."""
    points = live.get("points")
    if out_dir is None or jax.process_index() != 0 or not points or not points["steps"]:
        return []
    # an interrupt between two appends leaves some lists one longer (eval_task_return may
    # also be shorter: resumed from a checkpoint written before it existed; _curves drops it)
    k = min(
        len(points[name])
        for name in ("steps", "eval_return", "eval_unfinished", "train_return", "metrics")
    )
    points = {name: v[:k] for name, v in points.items()}
    if not k:
        return []
    cfg, curves = trainer.config, _curves(points)
    final = curves["eval_return"][-1]
    summary = {
        "env": cfg.env,
        "agent": cfg.agent,
        "seeds": place.num_seeds,
        "steps": int(cfg.steps_done),
        "interrupted": True,
        "steps_done": int(points["steps"][-1]),
        "replay": cfg.replay,
        "buffer_capacity": cfg.buffer_capacity,
        "n_step": cfg.n_step,
        "final_return_mean": float(np.mean(final)),
        "final_return_std": float(np.std(final)),
        "final_return_per_seed": [float(x) for x in final],
        **return_range(trainer),
        "train_seconds": live.get("train_seconds", 0.0),
        "eval_seconds": live.get("eval_seconds", 0.0),
        "compile_seconds": sum(compiled.seconds.values()),
        "eval_episodes": cfg.eval_episodes,
        "processes": jax.process_count(),
        "devices": place.num_devices,
        "data_parallel": place.data_parallel,
        "config": results.config_to_dict(cfg),
    }
    if isinstance(place, populations.PopulationLayout):
        summary = populations.summarize(summary, place.population, curves)
    return results.write_all(out_dir, summary, curves)


def _checkpoint_hook(compiled: _Compiled, snaps) -> Callable | None:
    """The ``checkpoint`` callback of :func:`_run_schedule` that saves ``snaps`` at the
    chunk boundaries its period picks, and where a Ctrl-C stops the run, so that a resume
    loses none of the work done (None when checkpoints are off)."""
    if snaps is None or not snaps.every:
        return None
    boundaries = np.cumsum([n for _, _, n in compiled.schedule]).tolist()
    save_at = checkpoints.save_indices(boundaries, snaps.every)

    def checkpoint(i, done_steps, state, points, sizes, times, stopping):
        if i in save_at or stopping:
            snaps.save(
                i, done_steps, state, points, sizes, {**times, "checkpoint_seconds": snaps.seconds}
            )

    return checkpoint


def run(
    config: TrainConfig = TrainConfig(),
    num_seeds: int = 8,
    out_dir=None,
    seed: int = 0,
    progress: bool = True,
    env=None,
    env_params=None,
    log: Callable = print,
    checkpoint_every=None,
    resume: bool = False,
    devices_per_process=None,
    data_parallel: bool = False,
    restart_if_unreadable: bool = False,
    sweep: dict | None = None,
    pbt_every: int | None = None,
    pbt_explore: str = "perturb",
    pbt_copy_buffer: bool = False,
) -> dict:
    """Train ``num_seeds`` independent seeds (vmapped, sharded over devices) with the host
    loop.

    Compiles (AOT) the warm-up and training chunks with the state donated, runs them with a
    tqdm bar (steps, SPS, latest training and greedy returns), evaluates greedily after every
    chunk, and, when ``out_dir`` is given, writes ``returns.csv``, ``returns.json``,
    ``curve.png``, ``summary.json`` and ``checkpoint.msgpack`` there. In a multi-process run
    (``jax.distributed`` initialised, see :mod:`memjax.distributed`) every process calls
    ``run`` alike; process 0 writes the files.

    Args:
      config: the run's :class:`TrainConfig`.
      num_seeds: independent seeds, vmapped.
      out_dir: the directory for the results and checkpoints (None: nothing written).
      seed: the base PRNG seed.
      progress: show a tqdm progress bar.
      env: optionally a gymnax environment instead of ``config.env``.
      env_params: its parameters.
      log: where progress lines go (None: nowhere).
      checkpoint_every: env steps per seed between whole-state checkpoints in
        ``out_dir/checkpoints/<step>/`` (:mod:`memjax.train.checkpoints`), taken at the first
        chunk boundary at or past each multiple and at the end; ``"auto"``: a tenth of the
        run; 0: none; None (default): none, or the resumed run's own period.
      resume: continue the checkpointed run in ``out_dir`` from its newest readable
        checkpoint; ``config``, ``num_seeds`` and ``seed`` must be the run's own. The results
        are those of an uninterrupted run, bit for bit, timing fields aside.
      devices_per_process: local devices of each process to run on (None: all); the seeds
        are sharded over them (:mod:`memjax.train.devices`), so ``num_seeds`` must be a
        multiple of the devices of all processes.
      data_parallel: every seed is one agent data-parallel over the devices (Anakin): each
        device steps its own ``num_envs`` environments into its own buffer shard and samples
        its own batch, and the gradients are averaged over the devices.
      restart_if_unreadable: with ``resume``, when the run has checkpoints and none of them
        can be read, train it again from step 0 (the unreadable ones moved aside) instead of
        raising :class:`memjax.train.checkpoints.NoReadableCheckpoint`.
      sweep: ``{setting: [values]}``: train the grid of members these values make, each
        with ``num_seeds`` seeds, as lanes of one program (:mod:`memjax.train.population`);
        the summary gains ``members`` and its top-level returns are the best member's.
      pbt_every: with ``sweep``: population-based training, an exploit-and-explore step
        every ``pbt_every`` env steps per seed (at the first chunk boundary at or past it).
      pbt_explore: ``"perturb"`` (x0.8 or x1.25) or ``"resample"`` (from the swept values).
      pbt_copy_buffer: a member that copies another takes its replay buffer too.

    Ctrl-C (``KeyboardInterrupt``) stops the run with :class:`Interrupted`, after the
    checkpoints already taken are committed and the results so far are written to
    ``out_dir`` (``summary.json`` with ``"interrupted": true`` and ``steps_done``).

    Returns:
      The summary dict (as in ``summary.json``) plus ``"curves"`` and ``"params"`` (the final
      parameters, leading seed axis; data parallel: device 0's copy).

    Raises:
      ValueError: invalid settings (seeds not divisible by the devices, too many devices),
        or checkpoints without ``out_dir``.
      memjax.train.checkpoints.IncompatibleCheckpoint: ``resume`` with another config, seed
        count, seed, data-parallel layout or memjax version.
      FileExistsError: a fresh run into an ``out_dir`` whose checkpoints belong to an
        unfinished run.
      memjax.train.checkpoints.NoReadableCheckpoint: ``resume`` where no checkpoint reads
        (without ``restart_if_unreadable``).
      Interrupted: Ctrl-C.
    """
    if not isinstance(num_seeds, int) or num_seeds <= 0:
        raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
    trainer = make_train(config, env=env, env_params=env_params)
    population = _population(
        trainer, num_seeds, sweep, pbt_every, pbt_explore, pbt_copy_buffer, data_parallel
    )
    if log is not None and jax.process_index() == 0:
        for warning in run_warnings(trainer.config, trainer.env, trainer.env_params):
            log(f"memjax: warning: {warning}")
    if population is not None:
        place = populations.PopulationLayout(
            populations.layout(population, devices_per_process),
            population,
            populations.pbt_key(seed),
            trainer.config,
        )
        trainer = populations.PopulationTrainer(trainer, population)
    else:
        place = devices.layout(num_seeds, devices_per_process, data_parallel)
    if data_parallel:
        trainer = devices.data_parallel_trainer(trainer)
    if out_dir is None and (checkpoint_every or resume):
        raise ValueError("checkpoints (checkpoint_every, resume) need out_dir")
    if checkpoint_every is None and resume:
        checkpoint_every = checkpoints.read_run(out_dir).checkpoint_every
    every = checkpoints.resolve_every(checkpoint_every, trainer.config)
    k_train, k_eval = jax.random.split(jax.random.key(seed))
    if jax.process_index() != 0:
        log, progress = None, False
    snaps, start = None, None
    if out_dir is not None:
        record = checkpoints.RunRecord(
            config,  # as given: a resumed run chooses its auto storage again, alike
            num_seeds,
            seed,
            every,
            data_parallel=place.num_devices if data_parallel else 0,
            population=None if population is None else population.to_json(),
        )
        template = jax.eval_shape(place.init(trainer, k_train))
        snaps, start = checkpoints.open_run(
            out_dir,
            record,
            template,
            jax.random.key_impl(k_train),
            resume=resume,
            log=log,
            sharding=place.sharded,
            restart_if_unreadable=restart_if_unreadable,
        )
        snaps.start()
    live, compiled = {"done_steps": start.step if start else 0}, None
    try:
        compiled = _compile(trainer, place, k_train, k_eval)
        return _run(trainer, place, compiled, out_dir, progress, log, snaps, start, seed, live)
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted):
            raise
        if snaps is not None:
            snaps.close()  # the checkpoints already taken are committed
        paths = (
            []
            if compiled is None
            else _interrupted_results(trainer, place, compiled, live, out_dir)
        )
        raise Interrupted(
            out_dir,
            int(live["done_steps"]),
            int(trainer.config.steps_done),
            paths,
            resumable=bool(snaps is not None and snaps.every),
        ) from None
    finally:
        if snaps is not None:
            snaps.close()


def _population(trainer, num_seeds, sweep, pbt_every, explore, copy_buffer, data_parallel):
    """The checked :class:`memjax.train.population.Population` of ``run``'s arguments, or
    None without ``sweep``."""
    if sweep is None:
        if pbt_every is not None:
            raise ValueError("--pbt-every needs --sweep: the starting population")
        return None
    if data_parallel:
        raise ValueError(
            "--sweep shards members x seeds over the devices; --data-parallel is not "
            "supported with it"
        )
    population = populations.make_population(
        trainer.config, sweep, num_seeds, pbt_every, explore, copy_buffer
    )
    populations.check_traceable(trainer, population)
    return population


def _run(trainer, place, compiled, out_dir, progress, log, snaps, start, seed, live=None) -> dict:
    state = compiled.init() if start is None else start.state
    mem = trainer.buffer.memory(state.buffer)  # all seeds; bytes_per_item is per seed
    if log is not None:
        log(f"{mem}\n{format_choices(trainer.storage)}" if trainer.storage else str(mem))
    if start is not None:
        snaps.seconds = start.times.get("checkpoint_seconds", 0.0)
    checkpoint = _checkpoint_hook(compiled, snaps)
    bar = (
        _progress_bar(trainer.config, place.num_seeds, start.step if start else 0)
        if progress
        else None
    )
    try:
        state, points, train_seconds, eval_seconds, sizes = _run_schedule(
            compiled, state, place, bar, start, checkpoint, trainer.num_tasks, live
        )
    finally:
        if bar is not None:
            bar.close()
    if snaps is not None:
        snaps.close()  # the last save committed; its wait counts in checkpoint_seconds
    curves = _curves(points)
    # what the host reads of the final state, from every process; a data-parallel run's
    # parameters are the same on every device: device 0's copy
    final = checkpoints.gather(
        {
            "agent": state.agent,
            "buffer": _buffer_counters(state.buffer),
            "hparams": getattr(state, "hparams", None),
        }
    )
    if place.data_parallel:
        buffer = final["buffer"]
        final = {
            "agent": jax.tree.map(lambda x: x[0], final["agent"]),
            "buffer": buffer.replace(count=buffer.count.sum(axis=0)),
        }
    summary = _summary(
        trainer,
        place,
        curves,
        mem,
        (compiled.seconds, train_seconds, eval_seconds),
        final["buffer"],
        sizes,
    )
    if isinstance(place, populations.PopulationLayout):
        summary = populations.summarize(summary, place.population, curves, final["hparams"])
    summary["checkpoint_seconds"] = snaps.seconds if snaps is not None else 0.0
    summary["seed"] = seed  # with "seeds" and "config": `--config summary.json` reruns the run
    if out_dir is not None and jax.process_index() == 0:
        paths = results.write_all(out_dir, summary, curves)
        if trainer.network is not None:  # the trained Q-networks, read by `memjax compress`
            paths.append(
                params_file.save(
                    out_dir,
                    trainer.config,
                    final["agent"].params,
                    obs=observation_spec(trainer.env, trainer.env_params),
                    num_actions=trainer.num_actions,
                    meta={"final_return_per_seed": summary["final_return_per_seed"]},
                )
            )
        if log is not None:
            log("wrote " + ", ".join(str(p) for p in paths))
    summary["curves"] = curves
    summary["params"] = getattr(final["agent"], "params", None)
    summary["agent_state"] = final["agent"]
    return summary


@struct.dataclass
class _BufferCounters:
    """The parts of a buffer state that :func:`storage_summary` reads."""

    codecs: dict
    count: jax.Array
    layout_errors: jax.Array | None = None


def _buffer_counters(buffer_state) -> _BufferCounters:
    return _BufferCounters(
        buffer_state.codecs, buffer_state.count, getattr(buffer_state, "layout_errors", None)
    )
