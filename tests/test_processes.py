"""Multi-process runs on localhost (memjax.distributed): ``memjax train --processes 2`` writes
one result directory; killing one process ends the run at once with a message naming it (no
hang), and the run then resumes from its checkpoint to the files of the same seeds run
uninterrupted in one process (2 host devices).

The compiled programs are shared between the runs through JAX's persistent cache."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memjax import cli

# 2 seeds, one per process; 8 chunks, about 1 s of training per process after its first
# checkpoint
CHUNK = 10_000
STEPS = 8 * CHUNK + 400
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
    "16",
    "--learning-starts",
    "400",
    "--chunk-steps",
    str(CHUNK),
    "--eval-episodes",
    "2",
    "--hidden",
    "32",
    "--eps-decay-steps",
    "20000",
    "--no-progress",
]


def _memjax(args, log: Path, cache: Path, **env):
    env = {
        **{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **env,
    }
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "memjax.cli", "train", *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _finish(proc, log: Path) -> str:
    assert proc.wait(timeout=400) == 0, log.read_text()[-4000:]
    return log.read_text()


def _steps(out: Path) -> list:
    d = out / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``one``: the run in one process on 2 host devices; ``killed``: the same run in 2
    processes with checkpoints, process 1 killed after the first one, then resumed. The
    resumed run's files must equal the one-process run's: one comparison checks both that
    2 processes compute what 1 does and that the resume is exact (a separate uninterrupted
    2-process run would cost another 30 s of the suite)."""
    tmp = tmp_path_factory.mktemp("processes")
    cache = tmp / "jax-cache"
    one, killed = tmp / "one", tmp / "killed"
    out = {"one": one, "killed": killed}
    _finish(
        _memjax(
            [*RUN_ARGS, "--devices", "2", "--out", str(one), "--checkpoint-every", "0"],
            tmp / "one.log",
            cache,
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
        ),
        tmp / "one.log",
    )
    # the run with checkpoints; process 1 is killed after the first one
    log = tmp / "killed.log"
    launcher = _memjax(
        [*RUN_ARGS, "--processes", "2", "--out", str(killed), "--checkpoint-every", str(CHUNK)],
        log,
        cache,
    )
    deadline = time.monotonic() + 300
    pids = None
    while launcher.poll() is None and time.monotonic() < deadline:
        if pids is None:
            m = re.search(r"2 processes \(pids (\d+), (\d+)\)", log.read_text())
            pids = [int(m.group(1)), int(m.group(2))] if m else None
        if pids and _steps(killed):
            break
        time.sleep(0.01)
    assert pids and _steps(killed), log.read_text()[-4000:]
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    code = launcher.wait(timeout=60)
    out["stop_seconds"] = time.monotonic() - t0
    out["killed_code"], out["killed_log"] = code, log.read_text()
    out["at_kill"] = _steps(killed)
    out["summary_at_kill"] = (killed / "summary.json").exists()
    out["resume_log"] = _finish(
        _memjax(["--resume", str(killed), "--processes", "2"], tmp / "resume.log", cache),
        tmp / "resume.log",
    )
    return out


def test_two_processes_write_one_result_directory(runs):
    killed = runs["killed"]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 2 and summary["seeds"] == 2
    assert "on 2 device(s), 2 process(es)" in runs["resume_log"]
    assert (killed / "checkpoint.msgpack").is_file()


def test_a_killed_process_ends_the_run_with_a_clear_message(runs):
    assert runs["killed_code"] == 1
    assert runs["stop_seconds"] < 20  # no hang: stopped at once
    assert (
        "process 1 of 2 was killed by SIGKILL; stopped the other processes." in runs["killed_log"]
    )
    assert f"memjax train --resume {runs['killed']} --processes 2" in runs["killed_log"]
    assert runs["at_kill"] and not runs["summary_at_kill"]


def test_two_processes_killed_and_resumed_match_one_process(runs):
    killed, one = runs["killed"], runs["one"]
    assert f"resuming {killed} from step " in runs["resume_log"]
    for name in ("returns.csv", "returns.json"):
        assert (killed / name).read_bytes() == (one / name).read_bytes(), name
    a = json.loads((killed / "summary.json").read_text())
    b = json.loads((one / "summary.json").read_text())
    assert b["processes"] == 1 and b["devices"] == 2
    assert a["final_return_per_seed"] == b["final_return_per_seed"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--coordinator", "127.0.0.1:1"], "needs --coordinator HOST:PORT, --num-processes N"),
        (["--processes", "2", "--process-id", "0"], "--processes starts the processes itself"),
    ],
)
def test_process_options_are_checked(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


# a population of 4 members x 2 seeds (8 lanes, 4 per process) with PBT: exploit copies
# members across the two processes' devices
POPULATION_ARGS = [
    *(a if a != str(STEPS) else "2400" for a in RUN_ARGS),
    "--sweep",
    "lr=1e-4,3e-4,1e-3,3e-3",
    "--pbt-every",
    "800",
    "--checkpoint-every",
    "0",
]
POPULATION_ARGS[POPULATION_ARGS.index("--chunk-steps") + 1] = "400"


def test_a_population_over_two_processes_trains_as_in_one(tmp_path):
    """``--sweep`` with ``--pbt-every`` over ``--processes 2`` writes the files of the same
    population run in one process on 2 host devices, byte for byte (members x seeds
    sharded over the processes; PBT's exploit reads members of the other process)."""
    cache = tmp_path / "jax-cache"
    one, two = tmp_path / "one", tmp_path / "two"
    _finish(
        _memjax(
            [*POPULATION_ARGS, "--devices", "2", "--out", str(one)],
            tmp_path / "one.log",
            cache,
            XLA_FLAGS="--xla_force_host_platform_device_count=2",
        ),
        tmp_path / "one.log",
    )
    log = _finish(
        _memjax(
            [*POPULATION_ARGS, "--processes", "2", "--out", str(two)], tmp_path / "two.log", cache
        ),
        tmp_path / "two.log",
    )
    assert "on 2 device(s), 2 process(es)" in log
    a = json.loads((two / "summary.json").read_text())
    b = json.loads((one / "summary.json").read_text())
    assert (a["processes"], a["devices"], b["processes"], b["devices"]) == (2, 2, 1, 2)
    assert len(a["members"]) == 4 and a["members"] == b["members"]
    assert a["best_member"] == b["best_member"]
    for name in ("returns.csv", "returns.json"):
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    # lanes are member-major (member * 2 + seed), 4 per process: some lane copied a member
    # that the other process holds
    parents = json.loads((two / "returns.json").read_text())["pbt_parent"]
    assert len(parents[0]) == 8
    assert any(int(p) // 2 != lane // 4 for row in parents for lane, p in enumerate(row)), parents
