"""Where a run's seeds live: sharded over devices, or one agent data-parallel over them.

Two layouts of the vmapped training state over a 1-D ``jax.sharding.Mesh`` of devices
(all local devices, or ``devices_per_process`` of each process's in a multi-process run):

* **seeds** (default): the seed axis is sharded (``NamedSharding(mesh, P("seeds"))``); each
  device runs ``vmap(trainer.chunk)`` on its own seeds' states, buffers included, with no
  communication (``shard_map``). The per-seed program is the unsharded one, so a run gives
  the results of the same seeds on one device. ``num_seeds`` must be a multiple of the
  devices.
* **data parallel** (Podracer's Anakin): every seed is ONE agent replicated over the devices
  (axis ``"data"``); the state gains a leading device axis ``[devices, seeds, ...]``. Each
  device steps its own ``num_envs`` environments into its own buffer shard, samples its own
  batch, and the gradients are averaged over the devices (:func:`mean_gradients`, a
  ``lax.pmean`` in front of the optimizer) so the parameters stay identical. Per update the
  agent sees ``devices x batch_size`` samples and ``devices x num_envs`` environments step.

Everything compiles to one program per piece (``jit`` of ``shard_map``); per-seed metrics
and evaluation returns come back sharded like the state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from memjax.train.build import make_agent, make_optimizer
from memjax.train.loop import Trainer

SEEDS_AXIS = "seeds"
DATA_AXIS = "data"


def mean_gradients(axis_name: str) -> optax.GradientTransformation:
    """An optax transformation that averages the gradients over the mapped axis
    ``axis_name`` (``lax.pmean``); chain it in front of an optimizer to train one agent
    data-parallel. Only usable where ``axis_name`` is bound (``shard_map``, ``vmap``).

    Args:
      axis_name: the mesh (or vmap) axis to average over.

    Returns:
      A stateless ``GradientTransformation``.
    """

    def update(updates, state, params=None):
        del params
        return jax.lax.pmean(updates, axis_name), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def data_parallel_trainer(trainer: Trainer, axis_name: str = DATA_AXIS) -> Trainer:
    """``trainer`` with its agent rebuilt so that its gradients are averaged over
    ``axis_name`` before the optimizer step (:func:`mean_gradients`).

    Raises:
      ValueError: the trainer's agent was passed in (not built from its config).
    """
    if trainer.network is None:
        raise ValueError(
            "data-parallel training rebuilds the agent from its config; an "
            "agent passed to make_train must average its own gradients "
            "(chain memjax.train.devices.mean_gradients in its optimizer)"
        )
    cfg = trainer.config
    optimizer = optax.chain(mean_gradients(axis_name), make_optimizer(cfg))
    agent = make_agent(cfg, trainer.network, trainer.num_actions, optimizer=optimizer)
    return dataclasses.replace(trainer, agent=agent)


def select_devices(devices_per_process: int | None = None) -> list:
    """``devices_per_process`` local devices of every process (all of them when None), in
    process order: the devices of a run's mesh.

    Raises:
      ValueError: more devices than a process has, or fewer than 1.
    """
    local = jax.local_device_count()
    n = local if devices_per_process is None else devices_per_process
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= local:
        raise ValueError(
            f"--devices (devices per process) must be between 1 and the "
            f"{local} local device(s) of this process, got {devices_per_process!r}"
            "; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "(set before jax starts) makes N host devices"
        )
    by_process = {}
    for d in jax.devices():
        by_process.setdefault(d.process_index, []).append(d)
    return [d for p in sorted(by_process) for d in by_process[p][:n]]


@dataclasses.dataclass(frozen=True)
class Layout:
    """A run's placement: its mesh, its seeds and whether the seeds are data-parallel
    agents. Build it with :func:`layout`."""

    mesh: Mesh
    num_seeds: int
    data_parallel: bool

    @property
    def axis(self) -> str:
        return DATA_AXIS if self.data_parallel else SEEDS_AXIS

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def sharded(self) -> NamedSharding:
        """The state's sharding: its leading axis (seeds, or devices) over the mesh."""
        return NamedSharding(self.mesh, P(self.axis))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def _map(self, fn: Callable, in_specs, out_specs) -> Callable:
        # check_vma off: the per-seed programs carry unvarying constants through scans
        return jax.shard_map(
            fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
        )

    def init(self, trainer: Trainer, key) -> Callable:
        """``init() -> state``: the run's whole vmapped state, placed; the seeds' keys are
        ``jax.random.split(key, num_seeds)`` (the unsharded run's). To compile, use
        :meth:`init_from_key`: a key baked into the program makes XLA fold the whole state
        into constants at compile time (a second copy of the state in memory)."""
        from_key = self.init_from_key(trainer)
        return lambda: from_key(key)

    def init_from_key(self, trainer: Trainer) -> Callable:
        """``init(key) -> state``, as :meth:`init` with the base key an argument."""
        spec = P(self.axis)
        if not self.data_parallel:
            mapped = self._map(jax.vmap(trainer.init), spec, spec)
            return lambda key: mapped(jax.random.split(key, self.num_seeds))

        def replica(keys):  # this device's copy of every seed: shared agent, own envs
            d = jax.lax.axis_index(DATA_AXIS)

            def one(k):
                state = trainer.init(jax.random.fold_in(k, d))
                return state.replace(agent=trainer.init(k).agent)

            return jax.tree.map(lambda x: x[None], jax.vmap(one)(keys))

        mapped = self._map(replica, P(), spec)
        return lambda key: mapped(jax.random.split(key, self.num_seeds))

    def chunk(self, fn: Callable) -> Callable:
        """``state -> (state, metrics, buffer sizes)`` for a per-seed ``fn(state) ->
        (state, metrics)``; metrics and sizes are ``[seeds]`` (data parallel:
        ``[devices, seeds]``)."""

        def per_seed(state):
            state, metrics = fn(state)
            return state, metrics, state.buffer.count

        inner = jax.vmap(per_seed)
        if self.data_parallel:
            inner = jax.vmap(inner)
        spec = P(self.axis)
        return self._map(inner, spec, (spec, spec, spec))

    def evaluate(self, trainer: Trainer, key) -> Callable:
        """``(agent_state, index) -> Episodes`` of every seed, with the keys
        ``split(fold_in(key, index), num_seeds)``: returns ``[seeds, episodes]`` (data
        parallel: each device evaluates its copy on its own keys, ``[devices, seeds,
        episodes]``)."""
        spec = P(self.axis)
        if not self.data_parallel:
            mapped = self._map(jax.vmap(trainer.evaluate), (spec, spec), spec)
        else:

            def replica(agent, keys):
                keys = jax.vmap(jax.random.fold_in, (0, None))(keys, jax.lax.axis_index(DATA_AXIS))
                return jax.tree.map(
                    lambda x: x[None],
                    jax.vmap(trainer.evaluate)(jax.tree.map(lambda x: x[0], agent), keys),
                )

            mapped = self._map(replica, (spec, P()), spec)
        return lambda agent, index: mapped(
            agent, jax.random.split(jax.random.fold_in(key, index), self.num_seeds)
        )


def layout(
    num_seeds: int, devices_per_process: int | None = None, data_parallel: bool = False
) -> Layout:
    """The placement of ``num_seeds`` seeds over ``devices_per_process`` devices of every
    process (default: all local devices).

    Raises:
      ValueError: a device count out of range, or seeds not divisible by the devices
        (seeds layout), naming the settings.
    """
    devices = select_devices(devices_per_process)
    if not data_parallel and num_seeds % len(devices):
        per = (
            ""
            if jax.process_count() == 1
            else f" ({len(devices) // jax.process_count()} per process x {jax.process_count()} "
            "processes)"
        )
        raise ValueError(
            f"--seeds {num_seeds} must be a multiple of the {len(devices)} "
            f"devices{per} that shard them: choose --seeds or --devices so that "
            "it divides (or --data-parallel, which replicates every seed)"
        )
    return Layout(
        Mesh(np.array(devices), (DATA_AXIS if data_parallel else SEEDS_AXIS,)),
        num_seeds,
        bool(data_parallel),
    )


def merge_replicas(metrics: dict) -> dict:
    """Per-seed chunk metrics from a data-parallel run's ``[devices, seeds]`` ones: the
    episodes' return weighted by each device's episodes (NaN where none finished), the
    episodes summed, every learner metric averaged."""
    episodes = np.asarray(metrics["episodes"])
    returns = np.nan_to_num(np.asarray(metrics["episode_return"], np.float64))
    total = episodes.sum(axis=0)
    out = {
        "episode_return": np.where(
            total > 0, (returns * episodes).sum(axis=0) / np.maximum(total, 1), np.nan
        ).astype(np.asarray(metrics["episode_return"]).dtype),
        "episodes": total.astype(episodes.dtype),
    }
    for name, value in metrics.items():
        if name not in out:
            value = np.asarray(value)
            out[name] = value.mean(axis=0).astype(value.dtype)
    return out


__all__ = [
    "Layout",
    "layout",
    "select_devices",
    "mean_gradients",
    "data_parallel_trainer",
    "merge_replicas",
    "SEEDS_AXIS",
    "DATA_AXIS",
]
