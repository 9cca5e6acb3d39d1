"""Whole-state checkpoints (memjax.train.checkpoints) and bit-exact resume: a run killed with
SIGKILL and resumed ends with the files of an uninterrupted run; an unreadable latest
checkpoint falls back to the one before; another config, seed count or memjax version is an
error; the trained-model checkpoint that `memjax compress` reads is still written."""

import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from memjax import cli
from memjax.train import TrainConfig, checkpoints, driver, params_file, run

TIMING = {
    "steps_per_second",
    "steps_per_second_per_seed",
    "train_seconds",
    "eval_seconds",
    "compile_seconds",
    "compile_seconds_by_function",
    "checkpoint_seconds",
}

TINY = TrainConfig(num_envs=4, total_steps=2_000, learning_starts=400)


def _summary(out: Path) -> dict:
    return {
        k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k not in TIMING
    }


def assert_same_run(a: Path, b: Path) -> None:
    """Same returns files byte for byte, same summary but for timing, same final params."""
    for name in ("returns.csv", "returns.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _summary(a) == _summary(b)
    ca, cb = params_file.load(a), params_file.load(b)
    assert ca.config == cb.config and ca.meta == cb.meta
    la, lb = jax.tree.leaves(ca.params), jax.tree.leaves(cb.params)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def _steps(out: Path) -> list:
    return sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())


# --------------------------------------------------------------------------- the period


def test_checkpoints_are_taken_at_chunk_boundaries():
    boundaries = [400, 800, 1200, 1600, 2000]
    assert checkpoints.save_indices(boundaries, 0) == set()
    assert checkpoints.save_indices(boundaries, 400) == {0, 1, 2, 3, 4}
    # the first boundary at or past each multiple of 700 (700, 1400), and the end
    assert checkpoints.save_indices(boundaries, 700) == {1, 3, 4}
    assert checkpoints.save_indices(boundaries, 10**9) == {4}
    assert checkpoints.resolve_every("auto", TINY) == 200  # a tenth of 2000 steps
    assert checkpoints.resolve_every(None, TINY) == 0
    with pytest.raises(ValueError, match="checkpoint_every must be"):
        checkpoints.resolve_every(-1, TINY)


# --------------------------------------------------------------------------- SIGKILL + resume

# 20 chunks of 5000 steps (about 1 s of training here), so that the run is still going when
# it is killed after its first checkpoint (5400 steps); compiled programs are shared between
# the subprocesses through JAX's persistent cache (the same programs, compiled once).
CHUNK = 5_000
STEPS = 20 * CHUNK + 400
RUN_ARGS = [
    "--steps",
    str(STEPS),
    "--seeds",
    "2",
    "--num-envs",
    "4",
    "--capacity",
    "1000",
    "--batch-size",
    "32",
    "--learning-starts",
    "400",
    "--chunk-steps",
    str(CHUNK),
    "--eval-episodes",
    "2",
    "--hidden",
    "32",
    "--eps-decay-steps",
    "50000",
    "--replay",
    "prioritized",
    "--obs-codec",
    "int8",
    "--calibration-steps",
    "200",
    "--no-progress",
]


def _memjax(args, log: Path, cache: Path):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "memjax.cli", *args], stdout=f, stderr=subprocess.STDOUT, env=env
        )


def _finish(proc, log: Path) -> str:
    assert proc.wait(timeout=300) == 0, log.read_text()
    return log.read_text()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``ref``: an uninterrupted run without checkpoints; ``killed``: the same run with a
    checkpoint every CHUNK steps, killed with SIGKILL once its first checkpoint is committed
    and then resumed (``log``: the resumed process's output)."""
    tmp = tmp_path_factory.mktemp("resume")
    cache, ref, killed = tmp / "jax-cache", tmp / "ref", tmp / "killed"
    _finish(
        _memjax(
            ["train", *RUN_ARGS, "--checkpoint-every", "0", "--out", str(ref)],
            tmp / "ref.log",
            cache,
        ),
        tmp / "ref.log",
    )
    victim = _memjax(
        ["train", *RUN_ARGS, "--checkpoint-every", str(CHUNK), "--out", str(killed)],
        tmp / "killed.log",
        cache,
    )
    deadline = time.monotonic() + 300
    while victim.poll() is None and time.monotonic() < deadline:
        if (killed / "checkpoints").is_dir() and _steps(killed):
            break
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, (tmp / "killed.log").read_text()
    at_kill = _steps(killed)
    assert at_kill and not (killed / "summary.json").exists()
    log = _finish(
        _memjax(["train", "--resume", str(killed)], tmp / "resumed.log", cache), tmp / "resumed.log"
    )
    return {
        "ref": ref,
        "killed": killed,
        "at_kill": at_kill,
        "log": log,
        "cache": cache,
        "tmp": tmp,
    }


def test_sigkill_then_resume_is_bit_exact(runs):
    ref, killed = runs["ref"], runs["killed"]
    assert not (ref / "checkpoints").exists()
    resumed_from = int(
        runs["log"].split(f"resuming {killed} from step ")[1].split()[0].replace(",", "")
    )
    assert resumed_from >= runs["at_kill"][-1] > 0
    assert_same_run(ref, killed)
    assert _steps(killed) == [STEPS - 2 * CHUNK, STEPS - CHUNK, STEPS]  # max_to_keep 3


# --------------------------------------------------------------------------- fallback, errors


def _copy(runs, tmp_path) -> Path:
    return Path(shutil.copytree(runs["killed"], tmp_path / "run"))


def cut_data_files(directory: Path) -> None:
    """Cut every data file under ``directory`` (a checkpoint's ``state`` folder, or one
    process's ocdbt folder in it) to half its length: writes cut short. Cutting only the
    largest one is not enough: which of ocdbt's files hold values that a restore reads back
    depends on the state's layout (once the largest held none), and flipping bytes in the
    middle of a file once changed nothing the CRC-32 checks read. Reading past a cut-short
    file always fails."""
    # data files live in ocdbt's d/ folders; _sharding is not read back: a restore places
    # leaves with the resuming run's sharding
    files = [p for p in directory.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def test_unreadable_latest_checkpoint_falls_back(runs, tmp_path):
    out = _copy(runs, tmp_path)
    last, before = STEPS, STEPS - CHUNK
    cut_data_files(out / "checkpoints" / str(last) / "state")
    # a save cut short by a kill leaves only a temporary directory, which is not a step
    shutil.copytree(
        out / "checkpoints" / str(before),
        out / "checkpoints" / f"{last + CHUNK}.orbax-checkpoint-tmp",
    )
    for name in ("returns.csv", "returns.json", "summary.json", "checkpoint.msgpack"):
        (out / name).unlink()
    log = _finish(
        _memjax(["train", "--resume", str(out)], tmp_path / "log", runs["cache"]), tmp_path / "log"
    )
    assert f"checkpoints/{last} is unreadable" in log
    assert f"falling back to step {before}" in log
    assert f"resuming {out} from step {before:,} of {STEPS:,}" in log
    assert (out / "checkpoints" / f"{last}.unreadable").is_dir()
    assert _steps(out)[-1] == last  # saved again
    assert_same_run(runs["ref"], out)


def _config(out: Path) -> TrainConfig:
    return checkpoints.read_run(out).config


def test_incompatible_checkpoints_are_errors(runs, tmp_path, capsys, monkeypatch):
    out = _copy(runs, tmp_path)
    cfg = _config(out)
    with pytest.raises(checkpoints.IncompatibleCheckpoint, match=r"lr: 0.00025 -> 0.001"):
        run(cfg.replace(lr=1e-3), num_seeds=2, out_dir=out, progress=False, log=None, resume=True)
    # the command line: each explicit option that conflicts with the run's own is named
    with pytest.raises(SystemExit) as e:
        cli.main(
            [
                "train",
                "--resume",
                str(out),
                "--lr",
                "0.001",
                "--hidden",
                "32",
                "--seeds",
                "3",
                "--seed",
                "0",
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--lr 0.001 (the run has 0.00025)" in err and "--seeds 3 (the run has 2)" in err
    assert "--hidden" not in err and "--seed " not in err
    # a checkpoint written by another memjax version
    monkeypatch.setattr(checkpoints, "MEMJAX_VERSION", "99.0")
    with pytest.raises(checkpoints.IncompatibleCheckpoint, match="written by memjax 0.1.0"):
        checkpoints.read_run(out)
    with pytest.raises(SystemExit):
        cli.main(["train", "--resume", str(out)])
    assert "written by memjax 0.1.0" in capsys.readouterr().err


def test_fresh_run_refuses_an_unfinished_runs_checkpoints(runs, tmp_path, capsys):
    out = _copy(runs, tmp_path)
    shutil.rmtree(out / "checkpoints" / str(STEPS))
    with pytest.raises(FileExistsError, match=f"unfinished run .step {STEPS - CHUNK:,} of"):
        run(
            _config(out), num_seeds=2, out_dir=out, progress=False, log=None, checkpoint_every=CHUNK
        )
    with pytest.raises(SystemExit):
        cli.main(["train", *RUN_ARGS, "--out", str(out)])
    assert f"memjax train --resume {out}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--resume", str(tmp_path / "empty")])
    assert "holds no checkpointed run" in capsys.readouterr().err


def test_the_compress_checkpoint_is_still_written(runs):
    ck = params_file.load(runs["killed"])  # what `memjax compress DIR` reads
    # the parameter file holds the config that ran (its auto storage settings resolved), the
    # run record the config as given (a resumed run resolves them again)
    given = _config(runs["killed"])
    storage = ("layout", "obs_codec", "reward_codec", "compact_fields", "side_fraction")
    assert ck.config == given.replace(**{name: getattr(ck.config, name) for name in storage})
    assert ck.num_seeds == 2
    assert ck.network().apply(ck.seed_params(1), np.ones((3, 4), np.float32)).shape == (3, 2)


def test_a_relative_out_dir_checkpoints_and_resumes(tmp_path, monkeypatch):
    """The README's `memjax train --out runs/cartpole` is relative; orbax wants absolute
    paths, so the checkpoint directory is made absolute."""
    monkeypatch.chdir(tmp_path)
    config = TINY.replace(chunk_steps=800)
    run(config, num_seeds=1, out_dir="runs/rel", progress=False, log=None, checkpoint_every=800)
    assert _steps(tmp_path / "runs" / "rel") == [1200, 2000]
    run(config, num_seeds=1, out_dir="runs/rel", progress=False, log=None, resume=True)


def test_a_ctrl_c_checkpoints_where_it_stops(tmp_path, monkeypatch):
    """A first Ctrl-C stops the run after the chunk in flight with a checkpoint there, even
    off the period (here only the end saves), and the resume from it ends as the
    uninterrupted run, bit for bit."""
    config = TINY.replace(chunk_steps=400)  # warmup 400, then 4 chunks of 400 steps
    whole = tmp_path / "whole"
    run(config, num_seeds=1, out_dir=whole, progress=False, log=None, checkpoint_every=10**6)
    gather, calls = driver.checkpoints.gather, []

    def gather_then_ctrl_c(tree):  # the signal lands while the run evaluates its 2nd entry
        calls.append(None)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)
        return gather(tree)

    monkeypatch.setattr(driver.checkpoints, "gather", gather_then_ctrl_c)
    cut = tmp_path / "cut"
    with pytest.raises(driver.Interrupted) as stopped:
        run(config, num_seeds=1, out_dir=cut, progress=False, log=None, checkpoint_every=10**6)
    assert stopped.value.steps_done == 800 and stopped.value.resumable
    assert _steps(cut) == [800]  # not on the period: saved because the run stopped there
    monkeypatch.undo()
    run(config, num_seeds=1, out_dir=cut, progress=False, log=None, resume=True)
    assert _steps(cut) == [800, 2000]
    assert_same_run(whole, cut)


# --------------------------------------------------------------------------- none readable

SMALL_RUN = [
    "--steps",
    "1200",
    "--seeds",
    "1",
    "--num-envs",
    "4",
    "--capacity",
    "400",
    "--batch-size",
    "16",
    "--learning-starts",
    "400",
    "--chunk-steps",
    "400",
    "--eval-episodes",
    "2",
    "--hidden",
    "16",
    "--no-progress",
]


def test_no_readable_checkpoint_is_an_error_unless_restart_is_asked(tmp_path, capsys):
    """Every checkpoint damaged: one line per checkpoint tried, then an error (exit 2) that
    names --restart-if-unreadable, nothing moved, and none of the 'Event loop is closed'
    tracebacks of orbax's failed restores; with the option, the run starts over."""
    out = tmp_path / "run"
    assert cli.main(["train", *SMALL_RUN, "--checkpoint-every", "400", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "summary.json").unlink()  # as if killed after its last checkpoint
    for step in _steps(out):
        cut_data_files(out / "checkpoints" / str(step) / "state")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "memjax.cli", "train", "--resume", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Event loop is closed" not in proc.stderr and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line.split(" is unreadable (")[0] for line in lines[:-1]] == [
        f"memjax: checkpoint {out / 'checkpoints' / str(s)}" for s in (1200, 800, 400)
    ], proc.stderr
    assert lines[0].endswith("falling back to step 800") and lines[2].endswith(
        "no older checkpoint"
    )
    assert (
        lines[-1].startswith(f"memjax train: error: --resume {out}: none of the 3 checkpoint(s)")
        and "--restart-if-unreadable" in lines[-1]
    )
    assert _steps(out) == [400, 800, 1200]  # nothing moved aside
    assert cli.main(["train", "--resume", str(out), "--restart-if-unreadable"]) == 0
    err = capsys.readouterr().err
    assert "starting the run again from step 0" in err
    assert json.loads((out / "summary.json").read_text())["steps"] == 1200
    assert (out / "checkpoints" / "400.unreadable").is_dir() and _steps(out) == [400, 800, 1200]


def test_unretrieved_read_errors_of_a_failed_restore_are_silenced_and_only_those(caplog):
    """asyncio logs a future whose exception nobody retrieved when it is collected; after a
    failed restore those are TensorStore read errors (the CI run that printed one on a
    damaged resume): dropped, while any other future's error is still logged."""
    checkpoints._quiet_closed_loop_callbacks()
    before = checkpoints._QUIET["silenced"]
    read_error = ValueError(
        'OUT_OF_RANGE: Error reading "00002/.zarray" in OCDBT database '
        '[tensorstore_spec=\'{"driver":"zarr"}\']'
    )
    loop = asyncio.new_event_loop()
    try:
        for error in (read_error, ValueError("a user's own failure")):
            loop.create_future().set_exception(error)  # dropped unretrieved: logged when collected
            gc.collect()
    finally:
        loop.close()
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert checkpoints._QUIET["silenced"] > before  # earlier tests' leftovers may add to it
    assert len(logged) == 1 and logged[0].startswith("Future exception was never retrieved")
    assert "a user's own failure" in logged[0] and "tensorstore_spec" not in logged[0]


def test_unawaited_read_coroutines_of_a_failed_restore_are_dropped_and_other_warnings_kept():
    """A failed restore closes the reads it had not started: each a 'coroutine ... was never
    awaited' RuntimeWarning (the CI run that printed one between the lines of a damaged
    resume). Inside the restore they are dropped; any other warning comes out after it."""

    async def _read_array():
        return None

    before = checkpoints._QUIET["silenced"]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with checkpoints._unawaited_reads_dropped():
            _read_array()  # created, never awaited: warned when collected
            warnings.warn("a user's own warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in shown] == ["a user's own warning"]
    assert checkpoints._QUIET["silenced"] > before
