"""Whole-state run checkpoints: everything a training run carries, so that a killed run
resumes bit-exactly (``memjax train --checkpoint-every N`` / ``memjax train --resume DIR``).

Layout, written through orbax's ``CheckpointManager`` (async saves, ``max_to_keep``, atomic
commits: a step directory appears only once complete)::

    DIR/checkpoints/run.json         the run record, written (atomically) when the run starts:
                                     format, memjax version, TrainConfig, seeds, base seed,
                                     period
    DIR/checkpoints/<step>/state     every leaf of the vmapped TrainState (agent params, target
                                     params, optimizer state, replay buffer with its codec state
                                     and sum-tree, env states, observations, carries, PRNG keys,
                                     counters) as global arrays: each process writes its own
                                     shards to ``state/ocdbt.process_<i>/`` (OCDBT, zstd)
    DIR/checkpoints/<step>/results   the results so far (evaluation and training returns,
                                     learner metrics, buffer sizes per chunk), by process 0
    DIR/checkpoints/<step>/meta      JSON: format, versions, config, the state's leaf paths,
                                     shapes and dtypes, the CRC-32 of every row of every leaf
                                     and of the results, where in the run, the processes and
                                     devices that wrote it

In a multi-process run nothing is gathered: every process hands orbax its own shards of the
global ``jax.Array`` s and orbax writes them side by side (the directory must be on a
filesystem every process sees); a restore reads, in each process, only the parts of the
stored arrays that its devices hold under the resuming run's sharding, so a seed-sharded run
resumes on another number of processes or devices (the seeds must still divide over them).

``<step>`` is env steps per seed done. Checkpoints are taken only at chunk boundaries (the
run's chunks depend on its config alone, and evaluation keys on the chunk's index), so a
resumed run executes the same compiled programs on the same inputs as an uninterrupted one.
``DIR/checkpoint.msgpack`` (:mod:`memjax.train.params_file`, the trained parameters that
``memjax compress`` reads) is a different, smaller file and is still written at the end.

Reading falls back from an unreadable latest checkpoint (a file missing, cut short or
changed: every row of every leaf is checked against its CRC-32, :func:`row_crc32s`, which
does not depend on how the leaf is sharded) to the newest one that reads, the processes of a run
agreeing on which, saying so on stderr (one line per checkpoint tried), and moves the
unreadable ones aside as ``<step>.unreadable``. When none reads, that is an error
(:class:`NoReadableCheckpoint`, nothing moved) unless the caller asks to start over
(``restart_if_unreadable``). A checkpoint written by another config, seed count, memjax
version or state layout is an error (:class:`IncompatibleCheckpoint`), never mixed into a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from memjax import __version__ as MEMJAX_VERSION
from memjax.train.config import TrainConfig
from memjax.train.results import config_to_dict

FORMAT = "memjax-run-checkpoint"
# 2: per-process shards, a CRC-32 per row (leading index) of every leaf; 3: sequence replay's
# items stored [envs, rows, ...] and the side-store flag of a one-copy entry on its next row
VERSION = 3
DIRNAME = "checkpoints"
RUN_FILE = "run.json"
MAX_TO_KEEP = 3
DEFAULT_SAVES = 10  # "auto": a checkpoint every tenth of the run


class IncompatibleCheckpoint(ValueError):
    """A checkpoint (or run record) that belongs to another config, seed count, memjax
    version or state layout."""


class NoReadableCheckpoint(ValueError):
    """A run's checkpoints exist but none of them can be read (resume would start over)."""


def checkpoint_dir(out_dir) -> Path:
    return Path(out_dir).absolute() / DIRNAME  # orbax refuses relative paths


def resolve_every(every, config: TrainConfig) -> int:
    """Env steps per seed between checkpoints: ``"auto"`` is a tenth of the run (rounded up;
    at most ``DEFAULT_SAVES`` checkpoints), 0 or None is off, else the positive integer."""
    if every is None:
        return 0
    if every == "auto":
        return -(-config.steps_done // DEFAULT_SAVES)
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 0:
        raise ValueError(
            f"checkpoint_every must be an integer >= 0 (env steps per seed; "
            f"0: off) or 'auto', got {every!r}"
        )
    return int(every)


def save_indices(boundaries, every: int) -> set:
    """Indices of the schedule entries after which a checkpoint is taken: ``boundaries`` are
    the env steps per seed done after each entry (warm-up, chunks); a checkpoint follows the
    first boundary at or past each multiple of ``every``, and the last entry (the finished
    run). Empty when ``every`` is 0."""
    if not every:
        return set()
    out, previous = set(), 0
    for i, done in enumerate(boundaries):
        if done // every > previous // every:
            out.add(i)
        previous = done
    out.add(len(boundaries) - 1)
    return out


# --------------------------------------------------------------------------- the run record


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What ``--resume DIR`` needs to restart a run: its config, seeds, base seed,
    checkpoint period (env steps per seed) and data-parallel devices (0 when its seeds are
    sharded: a seed-sharded run resumes on any number of devices and processes), and the
    memjax version that wrote it."""

    config: TrainConfig
    num_seeds: int
    seed: int
    checkpoint_every: int
    memjax_version: str = MEMJAX_VERSION
    data_parallel: int = 0  # devices of a data-parallel run; 0: seeds sharded
    population: dict | None = None  # a population's sweep and PBT options (Population.to_json)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "memjax_version": self.memjax_version,
            "config": config_to_dict(self.config),
            "num_seeds": self.num_seeds,
            "seed": self.seed,
            "checkpoint_every": self.checkpoint_every,
            "data_parallel": self.data_parallel,
            "population": self.population,
        }

    @classmethod
    def from_json(cls, d, where) -> RunRecord:
        _check_format(d, where)
        return cls(
            config=_config_from_dict(d["config"], where),
            num_seeds=int(d["num_seeds"]),
            seed=int(d["seed"]),
            checkpoint_every=int(d["checkpoint_every"]),
            memjax_version=d["memjax_version"],
            data_parallel=int(d.get("data_parallel", 0)),
            population=d.get("population"),
        )


def _config_from_dict(d: dict, where) -> TrainConfig:
    try:
        return TrainConfig.from_dict(d, where=where)
    except ValueError as e:
        raise IncompatibleCheckpoint(
            f"written with settings this memjax does not know: {e}"
        ) from None


def _check_format(d, where) -> None:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise IncompatibleCheckpoint(
            f"{where} is not a memjax run checkpoint (no format tag {FORMAT!r})"
        )
    if d.get("version") != VERSION or d.get("memjax_version") != MEMJAX_VERSION:
        raise IncompatibleCheckpoint(
            f"{where} was written by memjax {d.get('memjax_version')} (checkpoint format "
            f"{d.get('version')}); this is memjax {MEMJAX_VERSION} (format {VERSION}), whose "
            "training loop may not continue it bit-exactly: resume it with that version, or "
            "start the run again"
        )


def config_differences(saved: TrainConfig, given: TrainConfig) -> list:
    """``"name: saved -> given"`` for each setting (loop field or agent knob) that differs."""
    a, b = saved.settings(), given.settings()
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def _manager(directory: Path, *, create=False, alone=False):
    """An orbax ``CheckpointManager`` on ``directory``. Saves involve every process of the run
    (each writes its own shards; process 0 the metadata and the commit); ``alone``: only this
    process, for reading (each process reads what it holds without waiting for the others,
    so that one that fails to read cannot leave the others stuck in orbax's barriers)."""
    import orbax.checkpoint as ocp

    kwargs = {}
    if alone and jax.process_count() > 1:
        me = jax.process_index()
        kwargs["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me}
        )
        create = False  # orbax refuses create= with active_processes
    options = ocp.CheckpointManagerOptions(
        max_to_keep=MAX_TO_KEEP, create=create, enable_async_checkpointing=True, **kwargs
    )
    return ocp.CheckpointManager(directory, options=options)


def write_run(out_dir, record: RunRecord) -> Path:
    """Write ``out_dir``'s run record (``checkpoints/run.json``) atomically."""
    path = checkpoint_dir(out_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def read_run(out_dir) -> RunRecord:
    """The run record of ``out_dir`` (``FileNotFoundError`` when it holds no checkpointed run,
    :class:`IncompatibleCheckpoint` when another format or memjax version wrote it)."""
    path = checkpoint_dir(out_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{out_dir} holds no checkpointed run (no {path}: memjax "
            "train writes it unless --checkpoint-every is 0)"
        )
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IncompatibleCheckpoint(f"run record {path} is unreadable: {e}") from None
    return RunRecord.from_json(d, f"run record {path}")


def run_is_complete(out_dir, record: RunRecord | None = None) -> bool:
    """Whether ``out_dir``'s checkpointed run has finished: a committed checkpoint at its last
    step and the results of a run that was not interrupted (``summary.json`` without
    ``"interrupted": true``). Looks at the directory only (nothing is read by orbax)."""
    record = read_run(out_dir) if record is None else record
    directory = checkpoint_dir(out_dir)
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    if not steps or max(steps) < record.config.steps_done:
        return False
    try:
        summary = json.loads((Path(out_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(summary, dict)
        and not summary.get("interrupted")
        and summary.get("steps") == record.config.steps_done
    )


# --------------------------------------------------------------------------- state <-> leaves


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def state_spec(state) -> list:
    """``[path, shape, dtype]`` of every leaf of ``state`` (arrays or ShapeDtypeStructs)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(state)
    return [[jax.tree_util.keystr(path), list(leaf.shape), str(leaf.dtype)] for path, leaf in flat]


def gather(tree):
    """``tree``'s arrays as NumPy arrays of their global values, on every process (in a
    multi-process run a collective: every process must call it). For small results only:
    checkpoints never gather the state."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def stored_leaves(state) -> list:
    """The leaves of ``state`` as they are stored: PRNG keys as their ``uint32`` key data,
    every array left where it is (global ``jax.Array`` s keep their sharding)."""
    return [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(state)]


def _rows(x) -> int:
    return x.shape[0] if x.ndim else 1


def _as_rows(a: np.ndarray) -> np.ndarray:
    """``a`` as ``[rows, elements per row]`` (a scalar: one row)."""
    return a.reshape(_rows(a), math.prod(a.shape[1:]) if a.ndim else 1)


def _own_rows(x):
    """``(first row, NumPy rows)`` of each block of ``x``'s leading axis that this process
    writes and checks: its addressable shards, one copy of each (``replica_id`` 0); all of a
    NumPy array. On CPU the rows are views of the device buffers, on a GPU host copies."""
    if not isinstance(x, jax.Array):
        yield 0, _as_rows(np.asarray(x))
        return
    for shard in x.addressable_shards:
        if shard.replica_id == 0:
            first = (shard.index[0].start or 0) if x.ndim else 0
            yield first, _as_rows(np.asarray(shard.data))


def _local_crcs(leaves: list) -> tuple:
    """The CRC-32 of every row (leading index) of every leaf that this process holds, as one
    flat ``uint32`` vector over (leaf, row), zeros elsewhere, and the mask of those rows."""
    sizes = [_rows(x) for x in leaves]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    crcs, own = np.zeros(offsets[-1], np.uint32), np.zeros(offsets[-1], bool)
    for x, offset in zip(leaves, offsets[:-1]):
        for first, rows in _own_rows(x):
            for i, row in enumerate(rows):
                crcs[offset + first + i] = _crc(row)
                own[offset + first + i] = True
    return crcs, own, offsets


def row_crc32s(leaves: list) -> list:
    """The CRC-32 of every row of every leaf (a row: one index of the leading axis, the axis
    that a run's state is sharded over, so the values do not depend on how the leaves are
    sharded): ``[[crc of row 0, row 1, ...] per leaf]``. Each process computes the rows it
    holds, with zlib, on the host; in a multi-process run the (small) table is then gathered
    (a collective: every process calls it)."""
    crcs, _, offsets = _local_crcs(leaves)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        # each row is held (replica 0) by exactly one process, zeros elsewhere
        crcs = np.asarray(multihost_utils.process_allgather(crcs)).astype(np.uint64).sum(0)
    return [[int(c) for c in crcs[a:b]] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _crc_mismatch(leaves: list, table: list, spec: list) -> str | None:
    """The first leaf whose rows held here do not match ``table`` (None: all match)."""
    crcs, own, offsets = _local_crcs(leaves)
    for (path, _, _), a, b, saved in zip(spec, offsets[:-1], offsets[1:], table, strict=True):
        if len(saved) != b - a:
            return f"leaf {path} has {len(saved)} stored CRC-32s for {b - a} rows"
        mine = own[a:b]
        if not np.array_equal(crcs[a:b][mine], np.asarray(saved, np.int64)[mine]):
            return f"leaf {path} fails its CRC-32 check"
    return None


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


def _results_arrays(points: dict, sizes: list) -> tuple:
    """The driver's per-chunk results as stacked arrays (dtypes kept) and the metric names in
    their order."""
    names = list(points["metrics"][0])
    arrays = {
        "steps": np.asarray(points["steps"], np.int64),
        "eval_return": np.stack(points["eval_return"]),
        "eval_unfinished": np.asarray(points["eval_unfinished"], np.int64),
        "train_return": np.stack(points["train_return"]),
        "sizes": np.asarray(sizes, np.int64),
        "metrics": {
            f"{i:03d}": np.stack([np.asarray(m[n]) for m in points["metrics"]])
            for i, n in enumerate(names)
        },
    }
    return arrays, names


def _results_from_arrays(arrays: dict, names: list) -> tuple:
    k = len(arrays["steps"])
    metrics = [{n: arrays["metrics"][f"{j:03d}"][i] for j, n in enumerate(names)} for i in range(k)]
    points = {
        "steps": arrays["steps"].tolist(),
        "eval_return": list(arrays["eval_return"]),
        "eval_unfinished": arrays["eval_unfinished"].tolist(),
        "train_return": list(arrays["train_return"]),
        "metrics": metrics,
    }
    return points, arrays["sizes"].tolist()


@dataclasses.dataclass
class Snapshot:
    """A restored checkpoint: ``state`` (the vmapped TrainState, placed as the run's),
    ``index`` (schedule entries done), ``step`` (env steps per seed done), ``points`` and
    ``sizes`` (the driver's results so far) and ``times`` (seconds spent so far)."""

    step: int
    index: int
    state: Any
    points: dict
    sizes: list
    times: dict


class Unreadable(Exception):
    """A checkpoint that is incomplete or damaged (fall back to an older one); ``here``:
    this process found it so (else another process did)."""

    def __init__(self, message: str, here: bool = False):
        super().__init__(message)
        self.here = here


def _failed_processes(failed_here: bool) -> list:
    """The indices of the processes where ``failed_here`` is true (a collective in a
    multi-process run: every process calls it, and all get the same list)."""
    if jax.process_count() == 1:
        return [0] if failed_here else []
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int32(failed_here))
    return [int(i) for i in np.flatnonzero(np.asarray(flags))]


# --------------------------------------------------------------------------- the manager


class Snapshots:
    """The checkpoints of one run in ``DIR/checkpoints``. Use :func:`open_run`.

    In a multi-process run every process saves its own shards of the state (a save is a
    collective: every process calls it) and reads, on a restore, only the shards it holds
    under ``sharding`` (the directory must be on a filesystem they share).

    ``sharding``: the ``NamedSharding`` of the run's state (the leading axis of every leaf
    over its mesh; None: one local device); a restore places the leaves so, whatever the
    sharding of the run that saved them."""

    def __init__(self, out_dir, record: RunRecord, template, key_impl, sharding=None):
        from jax.sharding import SingleDeviceSharding

        self.directory = checkpoint_dir(out_dir)
        self.record, self.template, self.key_impl = record, template, key_impl
        if sharding is None:
            sharding = SingleDeviceSharding(jax.local_devices()[0])
        self.sharding = sharding
        self.writer = jax.process_index() == 0
        self.spec = state_spec(template)
        self.every = record.checkpoint_every
        self._manager = None
        self.seconds = 0.0  # time the run spent blocked on saves

    # -- writing -------------------------------------------------------------------------
    def _writer(self):
        if self._manager is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._manager = _manager(self.directory, create=True)
        return self._manager

    def start(self) -> None:
        """Write the run record now, so a run killed before its first checkpoint can be
        resumed (from the start)."""
        if self.every and self.writer:
            write_run(self.directory.parent, self.record)

    def save(self, index: int, step: int, state, points: dict, sizes: list, times: dict) -> None:
        """Checkpoint the state after schedule entry ``index`` (``step`` env steps per seed
        done) with the results so far. Returns once the state is copied to host memory; the
        write and its commit run in the background."""
        import orbax.checkpoint as ocp

        t0 = time.perf_counter()
        leaves = stored_leaves(state)
        crcs = row_crc32s(leaves)  # before the next chunk takes the state
        results, names = _results_arrays(points, sizes)
        meta = {
            **self.record.to_json(),
            "step": int(step),
            "index": int(index),
            "state_spec": self.spec,
            "crc32": crcs,
            "results_crc32": [_crc(a) for a in jax.tree.leaves(results)],
            "metric_names": names,
            "times": {k: float(v) for k, v in times.items()},
            "processes": jax.process_count(),
            "devices": len(self.sharding.device_set),
        }
        # orbax cannot store zero-size arrays; the spec gives their shape back. Each process
        # hands orbax the global arrays and orbax writes this process's shards (copied to
        # host memory before save returns: on CPU a view, so the next chunk cannot reuse
        # the state's buffers while the write runs and allocates its own); process 0 writes
        # the results and the metadata
        self._writer().save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(
                    {f"{i:05d}": a for i, a in enumerate(leaves) if a.size}
                ),
                results=ocp.args.StandardSave(results),
                meta=ocp.args.JsonSave(meta),
            ),
        )
        self.seconds += time.perf_counter() - t0

    def wait(self) -> None:
        """Block until the last save is committed (saves are asynchronous)."""
        if self._manager is not None:
            t0 = time.perf_counter()
            self._manager.wait_until_finished()
            self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        """Wait for the last save to commit and release orbax's threads."""
        if self._manager is not None:
            t0 = time.perf_counter()
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None
            self.seconds += time.perf_counter() - t0

    # -- reading -------------------------------------------------------------------------
    def steps(self) -> list:
        if not self.directory.is_dir():
            return []
        manager = _manager(self.directory, alone=True)
        try:
            return sorted(manager.all_steps())
        finally:
            manager.close()

    def restore(self, restart_if_unreadable: bool = False) -> Snapshot | None:
        """The newest checkpoint that reads, or None when there is none; each unreadable one
        is reported on stderr (one line: its step and why) and moved aside. Raises
        :class:`NoReadableCheckpoint` when there are checkpoints but none reads (nothing is
        moved), unless ``restart_if_unreadable`` (then None: the run starts over), and
        :class:`IncompatibleCheckpoint` for a checkpoint of another run or version."""
        steps = self.steps()
        if not steps:
            return None
        _quiet_closed_loop_callbacks()
        manager = _manager(self.directory, alone=True)
        bad, found = [], None
        with _unawaited_reads_dropped(), contextlib.closing(manager):
            for step in reversed(steps):
                try:
                    found = self._read(manager, step)
                    break
                except Unreadable as e:
                    bad.append(step)
                    older = [s for s in steps if s < step]
                    then = f"falling back to step {older[-1]}" if older else "no older checkpoint"
                    if not (self.writer or e.here):
                        continue  # another process could not read it: process 0 says so
                    print(
                        f"memjax: checkpoint {self.directory / str(step)} is unreadable "
                        f"({e}); {then}",
                        file=sys.stderr,
                        flush=True,
                    )
        if found is None and not restart_if_unreadable:
            raise NoReadableCheckpoint(
                f"none of the {len(steps)} checkpoint(s) in {self.directory} can be read "
                f"(step(s) {', '.join(f'{s:,}' for s in steps)}): to train the run again from "
                "step 0, moving them aside as <step>.unreadable, add --restart-if-unreadable "
                "(run(..., restart_if_unreadable=True))"
            )
        for step in bad if self.writer else ():  # keep them for inspection, out of orbax's way
            target = self.directory / f"{step}.unreadable"
            n = 1
            while target.exists():
                n += 1
                target = self.directory / f"{step}.unreadable-{n}"
            os.replace(self.directory / str(step), target)
        if found is None and self.writer:
            print(
                f"memjax: no checkpoint of {self.directory.parent} can be read; starting the "
                "run again from step 0 (--restart-if-unreadable)",
                file=sys.stderr,
                flush=True,
            )
        return found

    def _read(self, manager, step: int) -> Snapshot:
        """Read checkpoint ``step``: in each process the shards it holds, checked against
        their CRC-32s, then agreed on by all (a collective): unreadable when any process
        could not read it."""
        try:
            leaves, points, sizes, meta = self._read_here(manager, step)
        except Unreadable as e:
            error = str(e)
        else:
            try:
                error = _crc_mismatch(leaves, meta["crc32"], self.spec)
            except (TypeError, ValueError) as e:  # stored CRCs that are not a table of ints
                error = f"its CRC-32s: {type(e).__name__}: {_first_line(e)}"
        failed = _failed_processes(error is not None)
        if error is not None:
            raise Unreadable(error, here=True)
        if failed:
            raise Unreadable(f"process(es) {', '.join(map(str, failed))} could not read it")
        return Snapshot(
            step=step,
            index=int(meta["index"]),
            state=self._device_state(leaves),
            points=points,
            sizes=sizes,
            times=dict(meta.get("times", {})),
        )

    def _read_here(self, manager, step: int) -> tuple:
        """This process's part of checkpoint ``step``: the stored leaves (global arrays
        placed with ``self.sharding``), the results and the metadata."""
        import orbax.checkpoint as ocp

        where = f"checkpoint {self.directory / str(step)}"
        try:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                "meta"
            ]
        except Exception as e:  # orbax/tensorstore raise many types for damaged files
            raise Unreadable(f"its metadata: {type(e).__name__}: {_first_line(e)}") from None
        missing = [
            k
            for k in (
                "format",
                "version",
                "memjax_version",
                "config",
                "num_seeds",
                "seed",
                "step",
                "index",
                "state_spec",
                "crc32",
                "metric_names",
            )
            if not isinstance(meta, dict) or k not in meta
        ]
        if missing:
            raise Unreadable(f"its metadata lacks {missing}")
        self._check_compatible(meta, where)
        wanted = [_stored_shape(t) for t in jax.tree.leaves(self.template)]
        target = {
            f"{i:05d}": jax.ShapeDtypeStruct(w.shape, w.dtype, sharding=self.sharding)
            for i, w in enumerate(wanted)
            if math.prod(w.shape)
        }
        try:
            tree = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), results=ocp.args.StandardRestore()
                ),
            )
            stored, results = tree["state"], tree["results"]
            leaves = []
            for i, (w, (path, _, _)) in enumerate(zip(wanted, self.spec, strict=True)):
                leaf = stored.get(f"{i:05d}") if math.prod(w.shape) else self._zeros(w)
                if leaf is None or leaf.shape != w.shape or leaf.dtype != w.dtype:
                    raise Unreadable(f"leaf {path} is missing or of another shape")
                leaves.append(leaf)
            stored_results = [np.asarray(a) for a in jax.tree.leaves(results)]
            if [_crc(a) for a in stored_results] != meta.get("results_crc32"):
                raise Unreadable("its results fail their CRC-32 check")
            points, sizes = _results_from_arrays(results, meta["metric_names"])
        except Unreadable:
            raise
        except Exception as e:
            raise Unreadable(f"{type(e).__name__}: {_first_line(e)}") from None
        if len(points["steps"]) != meta["index"] + 1 or points["steps"][-1] != step:
            raise Unreadable("its results do not end at its step")
        return leaves, points, sizes, meta

    def _zeros(self, want):
        """A zero-size leaf (orbax stores none) with the run's sharding."""
        return jax.make_array_from_callback(
            want.shape, self.sharding, lambda i: np.zeros(want.shape, want.dtype)[i]
        )

    def _device_state(self, leaves: list):
        out = [
            jax.random.wrap_key_data(a, impl=self.key_impl) if _is_key(t) else a
            for a, t in zip(leaves, jax.tree.leaves(self.template))
        ]
        return jax.tree.unflatten(jax.tree.structure(self.template), out)

    def _check_compatible(self, meta: dict, where: str) -> None:
        _check_format(meta, where)
        saved = _config_from_dict(meta["config"], where)
        diff = config_differences(saved, self.record.config)
        if diff:
            raise IncompatibleCheckpoint(
                f"{where} belongs to a run with another config "
                f"({'; '.join(diff)}); resume with the run's own "
                "config, or write the new run to another directory"
            )
        for name, mine in (
            ("num_seeds", self.record.num_seeds),
            ("seed", self.record.seed),
            ("data_parallel", self.record.data_parallel),
            ("population", self.record.population),
        ):
            if meta.get(name, None if name == "population" else 0) != mine:
                raise IncompatibleCheckpoint(
                    f"{where} belongs to a run with {name}={meta.get(name)}, not {mine}"
                )
        if meta.get("state_spec") != self.spec:
            old = {p: (s, d) for p, s, d in meta.get("state_spec") or []}
            new = {p: (s, d) for p, s, d in self.spec}
            what = [
                f"{p}: {old.get(p)} -> {new.get(p)}"
                for p in sorted(set(old) | set(new))
                if old.get(p) != new.get(p)
            ]
            raise IncompatibleCheckpoint(
                f"{where} holds a training state of another layout "
                f"({'; '.join(what[:4]) or 'leaf order'}"
                f"{'; ...' if len(what) > 4 else ''})"
            )


def _is_closed_loop_callback(unraisable) -> bool:
    """An unraisable ``RuntimeError('Event loop is closed')`` raised in asyncio's
    ``call_soon_threadsafe``."""
    import traceback

    if (
        unraisable.exc_type is not RuntimeError
        or str(unraisable.exc_value) != "Event loop is closed"
    ):
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return any(f.name == "call_soon_threadsafe" for f in frames)


def _is_failed_read_coroutine(unraisable) -> bool:
    """An exception of one of orbax's per-array read coroutines that the failed restore
    left unawaited, reported when the coroutine is closed."""
    coroutine = unraisable.object
    return (
        type(coroutine).__name__ == "coroutine"
        and getattr(coroutine, "__name__", "") == "_read_array_index_and_device_put"
    )


def _is_failed_read_log(record: logging.LogRecord) -> bool:
    """asyncio's log of an orbax read whose exception nobody retrieved (the failed restore's
    ``gather`` raised on the first failed read; the others fail after it): a task of orbax's
    ("Task exception was never retrieved", its coroutine in orbax/checkpoint), or the future
    TensorStore's read resolves ("Future exception was never retrieved", a TensorStore error,
    which names its ``tensorstore_spec``)."""
    message = record.getMessage()
    if message.startswith("Task exception was never retrieved"):
        return "orbax/checkpoint" in message
    return message.startswith("Future exception was never retrieved") and (
        "tensorstore_spec" in message
    )


class _FailedReadLogs(logging.Filter):
    """Drops :func:`_is_failed_read_log` records of the ``asyncio`` logger, counting them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _is_failed_read_log(record):
            _QUIET["silenced"] += 1
            return False
        return True


_QUIET = {"hook": None, "silenced": 0, "log_filter": _FailedReadLogs()}


@contextlib.contextmanager
def _unawaited_reads_dropped():
    """Drop the "coroutine ... was never awaited" warnings of the read coroutines a failed
    orbax restore leaves behind, and re-issue every other warning.

    Inside this block only orbax's restores run coroutines; when one read fails, the reads
    it had not started yet are closed unawaited, each with a ``RuntimeWarning`` printed on
    stderr, at the moment the garbage collector reaches it. A collection at the end makes
    them all arrive inside the block (counted in ``_QUIET["silenced"]``)."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            gc.collect()
    for caught_warning in caught:
        if issubclass(caught_warning.category, RuntimeWarning) and re.fullmatch(
            r"coroutine '[\w.<>]+' was never awaited", str(caught_warning.message)
        ):
            _QUIET["silenced"] += 1
            continue
        warnings.warn_explicit(
            caught_warning.message,
            caught_warning.category,
            caught_warning.filename,
            caught_warning.lineno,
            source=caught_warning.source,
        )


def _quiet_closed_loop_callbacks() -> None:
    """Silence the late callbacks of a failed orbax restore, and only those.

    orbax restores a checkpoint in an asyncio event loop that lives as long as the
    ``restore`` call, awaiting one TensorStore read per array; TensorStore delivers each
    read's result from its own threads with ``loop.call_soon_threadsafe``. When one read
    fails (a file cut short), orbax's ``gather`` raises at once and the loop is closed while
    the other reads are still in flight; as they finish, each callback raises
    ``RuntimeError('Event loop is closed')`` in a TensorStore thread, which reports it through
    ``sys.unraisablehook``: a traceback per array (about a hundred for a damaged run
    checkpoint), after the restore has failed and been reported; the per-array read
    coroutines it leaves unawaited report their read errors the same way when they are
    closed (each process reads only its own shards). Their results are discarded
    and nothing else is affected, so this process-wide hook drops exactly those (counting
    them in ``_QUIET["silenced"]``) and hands every other unraisable exception to the hook it
    replaces. When several reads fail (every file of the checkpoint damaged), the failed
    read tasks and futures that nobody awaited are logged by asyncio ("Task/Future exception
    was never retrieved") when they are collected: a filter on the ``asyncio`` logger drops
    those too.
    Installed on a restore, unless it is already installed."""
    asyncio_log = logging.getLogger("asyncio")
    if _QUIET["log_filter"] not in asyncio_log.filters:
        asyncio_log.addFilter(_QUIET["log_filter"])
    if sys.unraisablehook is _QUIET["hook"] and _QUIET["hook"] is not None:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if _is_closed_loop_callback(unraisable) or _is_failed_read_coroutine(unraisable):
            _QUIET["silenced"] += 1
            return
        previous(unraisable)

    sys.unraisablehook = _QUIET["hook"] = hook


def _stored_shape(template):
    """The shape and dtype a leaf is stored with (a PRNG key as its key data)."""
    return jax.eval_shape(jax.random.key_data, template) if _is_key(template) else template


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    # orbax appends a dump of the TensorStore spec to a failed read: not for a one-line message
    return text[0].split(" See full TensorStore details")[0][:200] if text else ""


def open_run(
    out_dir,
    record: RunRecord,
    template,
    key_impl,
    *,
    resume: bool,
    log: Callable | None = print,
    sharding=None,
    restart_if_unreadable: bool = False,
) -> tuple:
    """The run's :class:`Snapshots` and the checkpoint to continue from (None: start).

    ``resume``: continue ``out_dir``'s checkpointed run, which must have ``record``'s config,
    seeds and base seed (else :class:`IncompatibleCheckpoint`; ``FileNotFoundError`` when
    there is no run to resume). Otherwise a fresh run: checkpoints of an earlier, finished
    run in ``out_dir`` are replaced (its results files are too), and those of an unfinished
    one are an error that says how to resume it. ``sharding``: where a restored state's
    leaves go (the run's ``NamedSharding``; None: the default device).
    ``restart_if_unreadable``: when ``resume`` finds checkpoints but none reads, start the
    run over instead of raising :class:`NoReadableCheckpoint`.
    """
    directory = checkpoint_dir(out_dir)
    snaps = Snapshots(out_dir, record, template, key_impl, sharding)
    if resume:
        saved = read_run(out_dir)
        diff = config_differences(saved.config, record.config)
        for name in ("num_seeds", "seed", "data_parallel", "population"):
            if getattr(saved, name) != getattr(record, name):
                diff.append(f"{name}: {getattr(saved, name)!r} -> {getattr(record, name)!r}")
        if diff:
            raise IncompatibleCheckpoint(
                f"{out_dir} holds a run with other settings "
                f"({'; '.join(diff)}); resume it with its own "
                "settings, or write the new run to another directory"
            )
        found = snaps.restore(restart_if_unreadable)
        if log is not None:
            log(
                f"resuming {out_dir} from step {found.step:,} of {record.config.steps_done:,}"
                if found
                else f"resuming {out_dir}: no complete checkpoint, starting from step 0"
            )
        return snaps, found
    if directory.exists() and snaps.writer:  # process 0 decides (the others would race it)
        try:
            saved = read_run(out_dir)
        except FileNotFoundError:
            saved = None
        if saved is None and any(directory.iterdir()):
            raise FileExistsError(
                f"{directory} exists and does not hold a memjax run's "
                "checkpoints: move it away, or write the run elsewhere"
            )
        steps = snaps.steps() if saved is not None else []
        if saved is not None and (not steps or steps[-1] < saved.config.steps_done):
            where = (
                f"step {steps[-1]:,} of {saved.config.steps_done:,}"
                if steps
                else "killed before its first checkpoint"
            )
            raise FileExistsError(
                f"{directory} holds the checkpoints of an unfinished run ({where}): continue "
                f"it with `memjax train --resume {out_dir}` (run(..., resume=True)), or delete "
                f"{directory} to start over"
            )
        if snaps.writer:
            shutil.rmtree(directory)
        if log is not None and steps:
            log(f"replacing the checkpoints of the earlier, finished run in {directory}")
    if jax.process_count() > 1:  # the others write nothing before process 0 has decided
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("memjax: checkpoints opened")
    return snaps, None


__all__ = [
    "RunRecord",
    "Snapshot",
    "Snapshots",
    "IncompatibleCheckpoint",
    "NoReadableCheckpoint",
    "run_is_complete",
    "open_run",
    "read_run",
    "write_run",
    "resolve_every",
    "save_indices",
    "state_spec",
    "stored_leaves",
    "row_crc32s",
    "gather",
    "config_differences",
    "checkpoint_dir",
    "DIRNAME",
    "MAX_TO_KEEP",
    "DEFAULT_SAVES",
]
