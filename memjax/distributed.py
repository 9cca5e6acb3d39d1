"""Multi-process runs with JAX's own runtime (``jax.distributed``), CPU collectives by gloo.

Every process runs the same ``memjax train`` command; the run's seeds are sharded over the
devices of all processes (:mod:`memjax.train.devices`), process 0 writes the one result
directory and the checkpoints (the directory must be on a filesystem every process sees).
This module imports nothing that starts jax's backend (gymnax does), so the CLI joins the
run before anything else.

On one machine ``memjax train --processes N ...`` starts the N processes itself (a
coordinator on a free local port) and watches them; across machines start one process per
machine yourself with the coordinator's address (process 0's host)::

    memjax train --coordinator HOST:PORT --num-processes N --process-id I ...

A process that dies ends the run: the local launcher stops the others at once and says
which process died and how to resume; processes started by hand stop when JAX's
coordination service misses the dead one's heartbeats (:data:`HEARTBEAT_SECONDS`), and a
process that cannot reach the coordinator gives up after :data:`CONNECT_SECONDS`. The run
then continues from its last checkpoint with ``--resume``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

CONNECT_SECONDS = 300
"""How long a process waits for all the others to join (``initialization_timeout``)."""
HEARTBEAT_SECONDS = 30
"""How long the coordination service waits for a silent process before ending the run."""


def initialize(
    coordinator: str, num_processes: int, process_id: int, connect_seconds: int = CONNECT_SECONDS
) -> None:
    """Join the run's processes: gloo CPU collectives, then ``jax.distributed.initialize``.
    Call it before anything else touches jax's devices.

    Args:
      coordinator: ``HOST:PORT`` of process 0's coordination service.
      num_processes: the processes of the run.
      process_id: this process, ``0 <= process_id < num_processes``.
      connect_seconds: how long to wait for the others to join.

    Raises:
      ValueError: a malformed address or process id.
    """
    import jax

    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process-id must be in [0, {num_processes}) for --num-processes "
            f"{num_processes}, got {process_id}"
        )
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        initialization_timeout=connect_seconds,
        heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
    )
    from jax.experimental import multihost_utils

    # the first collective sets up gloo's context, which gives up when a process is 30 s
    # late (one still compiling); here, just after joining, they are all in step
    multihost_utils.sync_global_devices("memjax: processes joined")


def shutdown() -> None:
    """Leave the run (waits for the other processes at the shutdown barrier)."""
    import jax

    jax.distributed.shutdown()


def free_port() -> int:
    """A TCP port free on localhost now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_argv(
    argv: Sequence[str], coordinator: str, num_processes: int, process_id: int
) -> list:
    """The command line of one process of a local launch: ``argv`` (the ``memjax`` arguments,
    ``train ...``) without ``--processes`` and with the coordinator's address and this
    process's id."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--processes":
            skip = True
            continue
        if arg.startswith("--processes="):
            continue
        out.append(arg)
    return out + [
        "--coordinator",
        coordinator,
        "--num-processes",
        str(num_processes),
        "--process-id",
        str(process_id),
    ]


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def launch(
    argv: Sequence[str],
    num_processes: int,
    *,
    resume_hint: str | None = None,
    poll_seconds: float = 0.1,
    grace_seconds: float = 3.0,
) -> int:
    """Run ``memjax ARGV`` as ``num_processes`` local processes of one run and wait for them.

    Starts the processes with a coordinator on a free local port; when one fails (a non-zero
    status or a signal), stops the others (SIGTERM, then SIGKILL after ``grace_seconds``),
    says which one failed and how to resume, and returns 1. Returns 0 when all succeed.

    Args:
      argv: the ``memjax`` command line (``["train", ...]``) with ``--processes``.
      num_processes: how many processes.
      resume_hint: the run directory to name in the message (``--resume DIR``).
      poll_seconds: how often to look at the processes.
      grace_seconds: how long a stopped process has to exit before SIGKILL.
    """
    coordinator = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-c", "import sys; from memjax.cli import main; sys.exit(main())"]
    procs = [
        subprocess.Popen(command + process_argv(argv, coordinator, num_processes, i))
        for i in range(num_processes)
    ]
    print(
        f"memjax train: {num_processes} processes (pids "
        f"{', '.join(str(p.pid) for p in procs)}), coordinator {coordinator}",
        flush=True,
    )
    failed = None
    try:
        while True:
            codes = [p.poll() for p in procs]  # every one: a reaped death is seen at once
            failed = next((i for i, c in enumerate(codes) if c not in (None, 0)), None)
            if failed is not None or all(c == 0 for c in codes):
                break
            time.sleep(poll_seconds)
    finally:
        _stop(procs, grace_seconds)
    if failed is None:
        return 0
    code = procs[failed].returncode
    if code == 2:  # the CLI's usage errors: the process said what is wrong
        then = ""
    else:
        where = (
            f"`memjax train --resume {resume_hint} --processes {num_processes}`"
            if resume_hint
            else "`memjax train --resume OUT --processes N`"
        )
        then = f" The run's checkpoints are kept: continue it with {where}"
    print(
        f"memjax train: process {failed} of {num_processes} {_describe(code)}; stopped the "
        f"other processes.{then}",
        file=sys.stderr,
        flush=True,
    )
    return 1


def _stop(procs, grace_seconds: float) -> None:
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + grace_seconds
    for p in running:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


__all__ = [
    "initialize",
    "shutdown",
    "launch",
    "free_port",
    "process_argv",
    "CONNECT_SECONDS",
    "HEARTBEAT_SECONDS",
]
