"""Runs past one machine: per-process checkpoint shards restored onto another number of
processes, and processes that a cluster launcher started (memjax.distributed.detect).

* ``memjax train --processes auto`` started twice with a SLURM-like environment (what
  ``srun -n 2`` sets) finds its coordinator, process count and id there, says so in one
  line, and the two processes train and checkpoint together: each writes its own shards.
* That run's checkpoint (2 seeds per process) restored onto 1 process and onto 4
  (``--resume DIR --processes N``) reads back bit for bit: each process checks the CRC-32 of
  every row (seed) of every leaf it holds against the one saved. On 1 process with 2 devices
  (2 seeds per device, as saved) the resumed run ends with the 2-process run's returns files
  byte for byte; on 4 processes (1 seed per device) with its returns byte for byte and its
  learner metrics to float32 round-off (XLA:CPU tiles a vmap over 1 seed differently from one
  over 2).
* When one process cannot read its shards of the newest checkpoint, the processes agree to
  fall back to the one before (none is left waiting for the others), and the run still ends
  with the files of the uninterrupted one.
* An incomplete launcher environment, and a coordinator that does not answer within
  ``--connect-timeout``, are one error line each (exit 2).
* The CRC-32 of every row (seed) of a leaf is zlib's, so any changed bit is seen in its row.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from memjax import cli, distributed
from memjax.train import checkpoints
from test_resume import cut_data_files

# 4 seeds: 2 per process, then 4 on 1 process or 1 on each of 4; 4 chunks after the warm-up
RUN_ARGS = [
    "--steps",
    "4400",
    "--seeds",
    "4",
    "--num-envs",
    "4",
    "--capacity",
    "1000",
    "--batch-size",
    "16",
    "--learning-starts",
    "400",
    "--chunk-steps",
    "1000",
    "--eval-episodes",
    "2",
    "--hidden",
    "32",
    "--eps-decay-steps",
    "2000",
    "--no-progress",
]
RESUME_FROM = 2400  # the checkpoints: 1400, 2400, 3400, 4400 (the newest 3 kept)
LAUNCHER_VARIABLES = ("SLURM_", "OMPI_", "PMIX_", "KUBERNETES_", "MEMJAX_", "JAX_COORDINATOR")


def _clean_environ() -> dict:
    """This process's environment without any launcher's variables or forced devices."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(LAUNCHER_VARIABLES) and k not in ("XLA_FLAGS", "JOB_COMPLETION_INDEX")
    }


def _slurm_port() -> int:
    """A free port where JAX's SLURM detection puts the coordinator (61440 + job id % 4096)."""
    for port in range(61440 + os.getpid() % 2048, 65536):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 61440-65535")


def _slurm(ntasks: int, procid: int, port: int) -> dict:
    """What ``srun -n NTASKS`` sets for task PROCID on one node (the variables JAX reads)."""
    return {
        "SLURM_JOB_ID": str(port - 61440 + 4096 * 7),
        "SLURM_NTASKS": str(ntasks),
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(procid),
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_STEP_NUM_NODES": "1",
    }


def _memjax(args, log: Path, cache: Path, extra: dict):
    env = {
        **_clean_environ(),
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **extra,
    }
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "memjax.cli", "train", *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _finish(procs, logs, timeout=500) -> list:
    deadline = time.monotonic() + timeout
    try:
        for p, log in zip(procs, logs):
            code = p.wait(timeout=max(deadline - time.monotonic(), 1))
            assert code == 0, log.read_text()[-4000:]
    finally:
        for p in procs:  # bounded: nothing outlives the fixture
            if p.poll() is None:
                p.kill()
                p.wait()
    return [log.read_text() for log in logs]


def _steps(out: Path) -> list:
    d = out / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _interrupted_copy(run: Path, dest: Path, step: int) -> Path:
    """``run`` as if killed right after its checkpoint at ``step`` was committed."""
    shutil.copytree(run, dest)
    for s in _steps(dest):
        if s > step:
            shutil.rmtree(dest / "checkpoints" / str(s))
    for name in ("returns.csv", "returns.json", "summary.json", "curve.png", "checkpoint.msgpack"):
        (dest / name).unlink(missing_ok=True)
    return dest


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``slurm``: 2 processes with SLURM's variables, checkpointing; ``one``/``four``: that run
    killed after its checkpoint at RESUME_FROM and resumed on 1 and on 4 processes."""
    tmp = tmp_path_factory.mktemp("cluster")
    cache, slurm = tmp / "jax-cache", tmp / "slurm"
    port = _slurm_port()
    args = [*RUN_ARGS, "--processes", "auto", "--out", str(slurm), "--checkpoint-every", "1000"]
    logs = [tmp / f"slurm-{i}.log" for i in range(2)]
    procs = [_memjax(args, logs[i], cache, _slurm(2, i, port)) for i in range(2)]
    out = {"slurm": slurm, "slurm_logs": _finish(procs, logs), "port": port}
    out["slurm_steps"] = _steps(slurm)
    out["meta"] = json.loads(
        (slurm / "checkpoints" / str(RESUME_FROM) / "meta" / "metadata").read_text()
    )
    for name, n, extra in (
        ("one", 1, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}),
        ("four", 4, {}),
    ):
        run = _interrupted_copy(slurm, tmp / name, RESUME_FROM)
        log = tmp / f"{name}.log"
        out[f"{name}_log"] = _finish(
            [_memjax(["--resume", str(run), "--processes", str(n)], log, cache, extra)], [log]
        )[0]
        out[name] = run
    # the newest checkpoint with process 1's data cut short: process 0 reads its own alone
    run = _interrupted_copy(slurm, tmp / "damaged", 4400)
    cut_data_files(run / "checkpoints" / "4400" / "state" / "ocdbt.process_1")
    log = tmp / "damaged.log"
    out["damaged_log"] = _finish(
        [_memjax(["--resume", str(run), "--processes", "2"], log, cache, {})], [log]
    )[0]
    out["damaged"] = run
    return out


def _shard_bytes(step_dir: Path) -> dict:
    """Bytes of array data each process wrote to a checkpoint's state (OCDBT, per process)."""
    return {
        p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        for p in sorted((step_dir / "state").glob("ocdbt.process_*"))
    }


def test_slurm_environment_starts_the_processes_of_one_run(runs):
    lines = [
        next(line for line in log.splitlines() if line.startswith("memjax train: SLURM"))
        for log in runs["slurm_logs"]
    ]
    assert lines == [
        f"memjax train: SLURM: process {i} of 2, coordinator localhost:{runs['port']}, "
        f"local device(s) {i}"
        for i in range(2)
    ]
    summary = json.loads((runs["slurm"] / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 2 and summary["seeds"] == 4
    assert runs["slurm_steps"] == [2400, 3400, 4400]


def test_each_process_writes_its_own_shards(runs):
    assert runs["meta"]["processes"] == 2 and runs["meta"]["devices"] == 2
    shards = _shard_bytes(runs["slurm"] / "checkpoints" / str(RESUME_FROM))
    assert set(shards) == {"ocdbt.process_0", "ocdbt.process_1"}
    total = sum(shards.values())
    for name, n in shards.items():  # 2 seeds each: about half of the data, never all of it
        assert 0.3 * total < n < 0.7 * total, shards
    four = _shard_bytes(runs["four"] / "checkpoints" / "4400")
    assert set(four) == {f"ocdbt.process_{i}" for i in range(4)}


@pytest.mark.parametrize("name,processes,devices", [("one", 1, 2), ("four", 4, 4)])
def test_a_two_process_checkpoint_resumes_on_another_number_of_processes(
    runs, name, processes, devices
):
    run, log = runs[name], runs[f"{name}_log"]
    assert f"resuming {run} from step {RESUME_FROM:,} of 4,400" in log  # CRC-32s checked
    assert "unreadable" not in log
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == processes and summary["devices"] == devices
    assert (run / "returns.csv").read_bytes() == (runs["slurm"] / "returns.csv").read_bytes()
    got = json.loads((run / "returns.json").read_text())
    want = json.loads((runs["slurm"] / "returns.json").read_text())
    if name == "one":  # the saving run's per-device program: the same bits
        assert got == want
        return
    assert set(got) == set(want) and {"loss", "q"} <= set(got)
    for key in want:
        a, b = (np.array(x[key], dtype=np.float64) for x in (got, want))
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0, err_msg=key)
        if key not in ("loss", "q"):
            np.testing.assert_array_equal(a, b, err_msg=key)


def test_processes_agree_to_fall_back_when_one_cannot_read_its_shards(runs):
    run, log = runs["damaged"], runs["damaged_log"]
    where = run / "checkpoints" / "4400"
    assert f"memjax: checkpoint {where} is unreadable (process(es) 1 could not read it); " in log
    assert log.count(f"memjax: checkpoint {where} is unreadable (") == 2  # process 1: its reason
    assert f"resuming {run} from step 3,400 of 4,400" in log
    assert (run / "checkpoints" / "4400.unreadable").is_dir()
    for f in ("returns.csv", "returns.json"):
        assert (run / f).read_bytes() == (runs["slurm"] / f).read_bytes(), f


def test_a_coordinator_that_does_not_answer_is_one_error_line(tmp_path):
    port = _slurm_port()  # nobody listens there
    env = {**_clean_environ(), "JAX_PLATFORMS": "cpu", **_slurm(2, 1, port)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "memjax.cli", "train", "--processes", "auto"]
        + ["--connect-timeout", "2", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - t0 < 60
    assert proc.stdout.strip() == "memjax train: SLURM: process 1 of 2, coordinator " + (
        f"localhost:{port}, local device(s) 1"
    )
    assert proc.stderr.strip().splitlines() == [
        f"memjax train: error: the coordinator localhost:{port} did not answer within 2 s "
        "(Connection refused): is process 0 running there, and is the port open between "
        "the machines? (--connect-timeout SECONDS waits longer)"
    ]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- detection


@pytest.fixture
def launcher_env(monkeypatch):
    """No launcher variables from the machine running the tests."""
    for k in list(os.environ):
        if k.startswith(LAUNCHER_VARIABLES) or k == "JOB_COMPLETION_INDEX":
            monkeypatch.delenv(k)
    return monkeypatch


def test_detect_reads_slurm_and_kubernetes_variables(launcher_env):
    for k, v in {**_slurm(8, 5, 61440), "SLURM_STEP_NODELIST": "gpu[017-020],cpu3"}.items():
        launcher_env.setenv(k, v)
    launcher_env.setenv("SLURM_LOCALID", "1")
    assert distributed.detect() == distributed.Launch(
        "SLURM", f"gpu017:{61440 + (4096 * 7) % 4096}", 8, 5, (1,)
    )
    launcher_env.setenv("JAX_COORDINATOR_PORT", "1234")
    assert distributed.detect().coordinator == "gpu017:1234"
    for k in list(os.environ):
        if k.startswith("SLURM_"):
            launcher_env.delenv(k)
    launcher_env.setenv("JAX_COORDINATOR_ADDRESS", "memjax-0.memjax:12345")
    launcher_env.setenv("MEMJAX_NUM_PROCESSES", "4")
    launcher_env.setenv("JOB_COMPLETION_INDEX", "3")
    assert distributed.detect() == distributed.Launch(
        "Kubernetes indexed Job", "memjax-0.memjax:12345", 4, 3
    )
    launcher_env.setenv("MEMJAX_PROCESS_ID", "2")
    assert distributed.detect().process_id == 2


@pytest.mark.parametrize(
    "variables,message",
    [
        ({}, "--processes auto: no cluster launcher in the environment"),
        (
            {"SLURM_JOB_ID": "17", "SLURM_NTASKS": "2"},
            "--processes auto: a SLURM job, but not a task started by srun (no "
            "SLURM_STEP_NODELIST, SLURM_PROCID, SLURM_LOCALID)",
        ),
        (
            {**_slurm(2, 0, 61440), "SLURM_NTASKS": "two"},
            "--processes auto: SLURM_NTASKS='two' is not an integer >= 1",
        ),
        (
            {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"},
            "--processes auto: an Open MPI process without OMPI_MCA_orte_hnp_uri",
        ),
        (
            {"MEMJAX_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "0"},
            "--processes auto: MEMJAX_NUM_PROCESSES is set but JAX_COORDINATOR_ADDRESS is not",
        ),
        (
            {
                "MEMJAX_NUM_PROCESSES": "2",
                "JOB_COMPLETION_INDEX": "2",
                "JAX_COORDINATOR_ADDRESS": "h:1",
            },
            "--processes auto: JOB_COMPLETION_INDEX=2 is not below MEMJAX_NUM_PROCESSES=2",
        ),
    ],
)
def test_incomplete_launcher_environments_are_one_error_line(
    launcher_env, capsys, tmp_path, variables, message
):
    for k, v in variables.items():
        launcher_env.setenv(k, v)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--processes", "auto", "--out", str(tmp_path / "run")])
    assert e.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"memjax train: error: {message}"), lines
    assert not captured.out and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- CRC-32s


DTYPES = [np.float32, np.int32, np.uint32, np.int8, np.uint8, np.float16, np.int16, np.bool_]


@given(
    dtype=st.sampled_from(DTYPES),
    shape=st.tuples(st.integers(1, 5), st.integers(0, 7), st.integers(1, 3)),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_row_crc32s_are_zlibs_of_each_row_and_see_every_bit(dtype, shape, seed, data):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(*shape, np.dtype(dtype).itemsize), dtype=np.uint8)
    x = raw.view(dtype).reshape(shape) if dtype != np.bool_ else raw[..., 0].reshape(shape) > 127
    want = [[zlib.crc32(np.ascontiguousarray(row).tobytes()) for row in x]]
    assert checkpoints.row_crc32s([jnp.asarray(x)]) == checkpoints.row_crc32s([x]) == want
    if not x.size:
        return
    y = x.copy()
    flat = y.reshape(-1)
    i = data.draw(st.integers(0, flat.size - 1))
    if dtype == np.bool_:
        flat[i] = ~flat[i]
    else:
        bit = data.draw(st.integers(0, 8 * np.dtype(dtype).itemsize - 1))
        flat[i : i + 1].view(np.uint8)[bit // 8] ^= np.uint8(1 << (bit % 8))
    changed = i // (flat.size // shape[0])
    got = checkpoints.row_crc32s([jnp.asarray(y)])[0]
    assert [r for r in range(shape[0]) if got[r] != want[0][r]] == [changed]


def test_row_crc32s_of_key_data_and_scalars():
    keys = jax.random.key_data(jax.random.split(jax.random.key(0), 4))
    assert checkpoints.row_crc32s([keys, jnp.float32(1.5)]) == [
        [zlib.crc32(np.asarray(k).tobytes()) for k in keys],
        [zlib.crc32(np.float32(1.5).tobytes())],
    ]
