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

On a cluster, start ``memjax train --processes auto ...`` once per process with the cluster's
launcher: :func:`detect` reads the coordinator, the process count and this process's id from
the launcher's environment (SLURM's ``srun``, Open MPI's ``mpirun``, a Kubernetes indexed Job;
JAX's own cluster detection, which ``jax.distributed.initialize()`` runs without arguments)
and the CLI prints one line saying what it found.

A process that dies ends the run: the local launcher stops the others at once and says
which process died and how to resume; processes started by hand stop when JAX's
coordination service misses the dead one's heartbeats (:data:`HEARTBEAT_SECONDS`), and a
process that cannot reach the coordinator gives up after :data:`CONNECT_SECONDS`. The run
then continues from its last checkpoint with ``--resume``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

CONNECT_SECONDS = 300
"""How long a process waits for all the others to join (``initialization_timeout``)."""
HEARTBEAT_SECONDS = 30
"""How long the coordination service waits for a silent process before ending the run."""


def initialize(
    coordinator: str,
    num_processes: int,
    process_id: int,
    connect_seconds: float = CONNECT_SECONDS,
    local_device_ids: Sequence[int] | None = None,
) -> None:
    """Join the run's processes: gloo CPU collectives, then ``jax.distributed.initialize``.
    Call it before anything else touches jax's devices.

    Args:
      coordinator: ``HOST:PORT`` of process 0's coordination service.
      num_processes: the processes of the run.
      process_id: this process, ``0 <= process_id < num_processes``.
      connect_seconds: how long to wait for the coordinator to answer (processes other than
        0) and for the others to join.
      local_device_ids: the local devices this process uses (None: all, or
        ``JAX_LOCAL_DEVICE_IDS``).

    Raises:
      ValueError: a malformed address or process id.
      ConnectionError: the coordinator did not answer within ``connect_seconds`` (JAX's own
        timeout would abort the process with a stack trace instead).
    """
    import jax

    host, port = _address(coordinator, "--coordinator")
    if not 0 <= process_id < num_processes:
        raise ValueError(
            f"--process-id must be in [0, {num_processes}) for --num-processes "
            f"{num_processes}, got {process_id}"
        )
    if process_id != 0:
        wait_for_coordinator(host, port, connect_seconds)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        local_device_ids=None if local_device_ids is None else list(local_device_ids),
        initialization_timeout=max(int(connect_seconds), 1),
        heartbeat_timeout_seconds=HEARTBEAT_SECONDS,
    )
    from jax.experimental import multihost_utils

    # the first collective sets up gloo's context, which gives up when a process is 30 s
    # late (one still compiling); here, just after joining, they are all in step
    multihost_utils.sync_global_devices("memjax: processes joined")


def _address(coordinator: str, what: str) -> tuple:
    host, _, port = coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{what} must be HOST:PORT, got {coordinator!r}")
    return host.strip("[]"), int(port)


def wait_for_coordinator(host: str, port: int, seconds: float) -> None:
    """Return once ``host:port`` accepts a TCP connection; retried (a name that does not
    resolve yet too: a Kubernetes pod's DNS record comes late) until ``seconds`` pass.

    Raises:
      ConnectionError: it did not answer in time, with the last reason.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(max(seconds, 0.1), 5)):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"the coordinator {host}:{port} did not answer within {seconds:g} s "
                    f"({e.strerror or e}): is process 0 running there, and is the port open "
                    "between the machines? (--connect-timeout SECONDS waits longer)"
                ) from None
        time.sleep(0.2)


class Launch(NamedTuple):
    """One process of a run as a cluster launcher started it (:func:`detect`)."""

    launcher: str  # "SLURM", "Open MPI", "Kubernetes", ...
    coordinator: str  # HOST:PORT of process 0's coordination service
    num_processes: int
    process_id: int
    local_device_ids: tuple | None = None  # the devices this process uses; None: all

    def describe(self) -> str:
        """The line the CLI prints."""
        devices = (
            ""
            if self.local_device_ids is None
            else f", local device(s) {','.join(map(str, self.local_device_ids))}"
        )
        return (
            f"memjax train: {self.launcher}: process {self.process_id} of "
            f"{self.num_processes}, coordinator {self.coordinator}{devices}"
        )


SLURM_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)
"""What ``srun`` sets and JAX's SLURM detection reads (the coordinator: the step's first node,
port ``61440 + SLURM_JOB_ID % 4096`` unless ``JAX_COORDINATOR_PORT`` is set)."""
JOB_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "MEMJAX_NUM_PROCESSES")
"""A run described by variables (a Kubernetes indexed Job without the ``kubernetes`` package,
or any launcher): the coordinator, the process count, and the process id from
``MEMJAX_PROCESS_ID`` or else the indexed Job's ``JOB_COMPLETION_INDEX``."""
_LAUNCHER_NAMES = {
    "SlurmCluster": "SLURM",
    "OmpiCluster": "Open MPI",
    "K8sCluster": "Kubernetes",
    "GkeTpuCluster": "Cloud TPU (GKE)",
    "GceTpuCluster": "Cloud TPU (GCE)",
}
_INTEGERS = {  # the variables a launcher's detection reads as integers, and their minimum
    "SlurmCluster": {"SLURM_JOB_ID": 0, "SLURM_NTASKS": 1, "SLURM_PROCID": 0, "SLURM_LOCALID": 0},
    "OmpiCluster": {"OMPI_COMM_WORLD_SIZE": 1, "OMPI_COMM_WORLD_RANK": 0},
}
_AUTO = "--processes auto"


def _integer(environ: Mapping, name: str, minimum: int = 0) -> int:
    text = environ[name]
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"{_AUTO}: {name}={text!r} is not an integer >= {minimum}")
    return value


def _from_variables(environ: Mapping) -> Launch:
    missing = [v for v in JOB_VARIABLES if v not in environ]
    ids = ("MEMJAX_PROCESS_ID", "JOB_COMPLETION_INDEX")
    id_name = next((v for v in ids if v in environ), None)
    if missing or id_name is None:
        missing += (
            [] if id_name else ["MEMJAX_PROCESS_ID (or an indexed Job's JOB_COMPLETION_INDEX)"]
        )
        raise ValueError(
            f"{_AUTO}: MEMJAX_NUM_PROCESSES is set but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not"
        )
    coordinator = environ["JAX_COORDINATOR_ADDRESS"]
    _address(coordinator, "JAX_COORDINATOR_ADDRESS")
    num = _integer(environ, "MEMJAX_NUM_PROCESSES", 1)
    pid = _integer(environ, id_name)
    if pid >= num:
        raise ValueError(f"{_AUTO}: {id_name}={pid} is not below MEMJAX_NUM_PROCESSES={num}")
    launcher = "Kubernetes indexed Job" if id_name == "JOB_COMPLETION_INDEX" else "environment"
    return Launch(launcher, coordinator, num, pid)


def _not_found(environ: Mapping) -> str:
    """Why no launcher was found: the variables a partial environment lacks."""
    if "SLURM_JOB_ID" in environ:
        missing = [v for v in SLURM_VARIABLES if v not in environ]
        return (
            f"{_AUTO}: a SLURM job, but not a task started by srun (no {', '.join(missing)}): "
            "start every process with `srun memjax train --processes auto ...`"
        )
    if any(k.startswith("OMPI_COMM_WORLD_") for k in environ):
        return (
            f"{_AUTO}: an Open MPI process without OMPI_MCA_orte_hnp_uri (Open MPI 5 does "
            "not set it): set JAX_COORDINATOR_ADDRESS=HOST:PORT (process 0's host), "
            "MEMJAX_NUM_PROCESSES=$OMPI_COMM_WORLD_SIZE and MEMJAX_PROCESS_ID="
            "$OMPI_COMM_WORLD_RANK"
        )
    if "JOB_COMPLETION_INDEX" in environ or "KUBERNETES_SERVICE_HOST" in environ:
        return (
            f"{_AUTO}: a Kubernetes pod without {' and '.join(JOB_VARIABLES)}: set them in "
            "the indexed Job's container (or install the `kubernetes` package and let JAX "
            "ask the API server)"
        )
    return (
        f"{_AUTO}: no cluster launcher in the environment (SLURM's srun, Open MPI's mpirun, a "
        f"Kubernetes indexed Job with {' and '.join(JOB_VARIABLES)}); on one machine use "
        "--processes N, by hand --coordinator/--num-processes/--process-id"
    )


def detect(connect_seconds: float = CONNECT_SECONDS) -> Launch:
    """This process's place in a run started by a cluster launcher, from its environment.

    ``MEMJAX_NUM_PROCESSES`` set: the run is described by variables (:data:`JOB_VARIABLES`).
    Otherwise JAX's own cluster detection (what ``jax.distributed.initialize()`` runs without
    arguments: SLURM, Open MPI, Kubernetes through its API with the ``kubernetes`` package,
    Cloud TPU); ``JAX_COORDINATOR_ADDRESS`` / ``JAX_COORDINATOR_PORT`` override the
    coordinator it derives. The devices: as JAX picks them (the launcher's local rank where it
    has one, for one process per GPU; ``JAX_LOCAL_DEVICE_IDS`` overrides).

    Args:
      connect_seconds: how long JAX's detection may wait for a launcher's service (DNS).

    Raises:
      ValueError: no launcher, or an incomplete or malformed environment: one line naming
        the variables.
    """
    environ = os.environ
    if "MEMJAX_NUM_PROCESSES" in environ:
        return _from_variables(environ)
    from jax._src import clusters  # what jax.distributed.initialize() detects with

    found = next(
        (
            c
            for c in clusters.ClusterEnv._cluster_types
            if not c.opt_in_only_method and c.is_env_present()
        ),
        None,
    )
    if found is None:
        raise ValueError(_not_found(environ))
    name = _LAUNCHER_NAMES.get(found.__name__, found.__name__)
    for variable, minimum in _INTEGERS.get(found.__name__, {}).items():
        if variable not in environ:
            raise ValueError(f"{_AUTO}: a {name} environment without {variable}")
        _integer(environ, variable, minimum)
    try:
        coordinator = environ.get("JAX_COORDINATOR_ADDRESS") or found.get_coordinator_address(
            timeout_secs=int(connect_seconds),
            override_coordinator_port=environ.get("JAX_COORDINATOR_PORT"),
        )
        num, pid = found.get_process_count(), found.get_process_id()
        local = None if "JAX_LOCAL_DEVICE_IDS" in environ else found.get_local_process_id()
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        text = str(e).strip().splitlines()
        raise ValueError(
            f"{_AUTO}: the {name} environment is incomplete or malformed: "
            f"{type(e).__name__}: {text[0] if text else ''}"
        ) from None
    _address(coordinator, f"the {name} coordinator")
    if not (isinstance(num, int) and isinstance(pid, int) and 0 <= pid < num):
        raise ValueError(f"{_AUTO}: {name} gives process {pid} of {num}")
    return Launch(name, coordinator, num, pid, None if local is None else (int(local),))


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
    "detect",
    "Launch",
    "wait_for_coordinator",
    "SLURM_VARIABLES",
    "JOB_VARIABLES",
    "shutdown",
    "launch",
    "free_port",
    "process_argv",
    "CONNECT_SECONDS",
    "HEARTBEAT_SECONDS",
]
