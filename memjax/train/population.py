"""Populations: hyperparameter sweeps and population-based training in one compiled program.

A population is a grid of *members*, each a set of values of some numeric settings (``lr``,
``gamma``, ...), trained with ``num_seeds`` seeds each. Every (member, seed) pair is one
*lane* of the same vmapped program, with its own agent, replay buffer and environments, so a
sweep of 8 learning rates x 2 seeds compiles once and runs as 16 lanes side by side::

    import memjax as mj

    config = mj.train.TrainConfig(total_steps=20_000, learning_starts=1_000)
    summary = mj.train.run(config, num_seeds=2, sweep={"lr": [1e-4, 1e-3]})
    summary["members"]  # [{"lr": 0.0001, "final_return_mean": ...}, {"lr": 0.001, ...}]

The swept settings become traced values: each lane carries its values (float32 scalars,
``PopulationState.hparams``) and the loop builds the member's agent, optimizer and schedules
from the config with those values in place of the Python constants (:func:`member_trainer`),
so a member trains exactly as a single run with its values does (to float round-off where
XLA folded constants in the single run). Only settings that leave the program's shapes and
structure alone can be swept (:data:`DYNAMIC`, and an agent's float knobs whose program
traces with a value in place of the constant); :data:`STATIC` says why the others cannot.

Lanes are member-major: lane ``member * num_seeds + seed``. Seed ``s`` of every member starts
from the same key as seed ``s`` of a single run (the same initial parameters, exploration
and environments: common random numbers across members), and its greedy evaluations use the
single run's evaluation keys too.

**Population-based training** (Jaderberg et al., 2017) with ``pbt_every``: after the first
chunk boundary at or past each multiple of ``pbt_every`` env steps (per seed), inside the
compiled chunk, the members of each seed are ranked by the mean return of the training
episodes that finished since the last exploit; the bottom quarter (at least one member
when there are two or more) each copy a uniformly drawn member of the top quarter: its
agent state (parameters, target parameters, optimizer state), its values and, with
``copy_buffer``, its replay buffer (environments, observations and carries stay the
copier's own). Then each copier *explores*: ``"perturb"`` multiplies each value by 0.8 or
1.25 (a fair coin per value, clipped to the setting's range), ``"resample"`` draws each
value from the swept ones. PBT works within a seed: seed ``s``'s population is its own and
never copies from another seed's, so seeds stay independent repetitions of the whole
population-based run. Each chunk's metrics record the values every lane trained with
(``hp_<name>``) and the member it copied at the chunk's end (``pbt_parent``, its own index
when it did not), from which :func:`lineage` rebuilds each member's history.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from memjax.train import devices
from memjax.train.build import make_agent
from memjax.train.config import TrainConfig, canonical_name, split_settings
from memjax.train.loop import Trainer, TrainState

EXPLORE_KINDS = ("perturb", "resample")
"""The values of ``explore``: multiply by 0.8 or 1.25, or draw from the swept values."""
PERTURB_FACTORS = (0.8, 1.25)

UNIT = (0.0, 1.0)
DYNAMIC = {
    "lr": (0.0, math.inf),
    "lr_end": (0.0, math.inf),
    "adam_eps": (0.0, math.inf),
    "max_grad_norm": (0.0, math.inf),
    "gamma": UNIT,
    "tau": UNIT,
    "eps_start": UNIT,
    "eps_end": UNIT,
    "beta_start": (0.0, math.inf),
    "beta_end": (0.0, math.inf),
    "priority_eps": (0.0, math.inf),
}
"""TrainConfig fields a population can sweep (traced per lane), with the range PBT's
perturbations are clipped to. An agent's float knobs can be swept too when its program
traces with a value in their place (e.g. dqn's ``huber_delta``)."""

_SHAPES = "it sets array shapes of the program"
_LENGTHS = "it sets loop lengths of the compiled program (a Python integer)"
STATIC = {
    "num_envs": _SHAPES + " (environments per seed)",
    "buffer_capacity": _SHAPES + " (the replay buffer)",
    "batch_size": _SHAPES + " (the sampled batch)",
    "n_step": _SHAPES + " (replayed windows of n steps)",
    "frame_stack": _SHAPES + " (stacked observations)",
    "side_fraction": _SHAPES + " (the side store of final observations)",
    "eval_episodes": _SHAPES + " (evaluation episodes)",
    "total_steps": _LENGTHS,
    "learning_starts": _LENGTHS,
    "train_every": _LENGTHS,
    "chunk_steps": _LENGTHS,
    "eval_max_steps": _LENGTHS,
    "calibration_steps": "it calibrates the storage codecs on the host, once for the run",
    "calibration_margin": "it calibrates the storage codecs on the host, once for the run",
    "samples_per_insert": "it sets the rate limiter's static schedule of learner steps",
    "rate_error_buffer": "it sets the rate limiter's static schedule of learner steps",
    "target_update_every": "it sets the target period, a whole number of updates fixed in "
    "the program",
    "eps_decay_steps": "it sets the length of optax's exploration schedule, a Python integer",
    "alpha": "the prioritized buffer's exponent is fixed when the buffer is built",
    "eval_epsilon": "every member is evaluated alike, so that their returns compare",
    "compact_fields": "it sets the stored dtypes",
}
"""Why each numeric TrainConfig field that is not in :data:`DYNAMIC` cannot be swept."""


# --------------------------------------------------------------------------- the grid


def parse_sweep(items: Sequence[str]) -> dict:
    """``{"lr": [1e-4, 3e-4]}`` from command-line items ``["lr=1e-4,3e-4", ...]``.

    Raises:
      ValueError: an item without ``=``, a name given twice, an empty list or a value that
        is not a number, naming the item.
    """
    sweep = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--sweep {item}: give NAME=V1,V2,... (e.g. lr=1e-4,3e-4)")
        if canonical_name(name) in {canonical_name(k) for k in sweep}:
            raise ValueError(f"--sweep {item}: {name} is swept twice; give its values once")
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise ValueError(f"--sweep {item}: {name} has no values (e.g. {name}=1e-4,3e-4)")
        values = []
        for p in parts:
            try:
                values.append(float(p))
            except ValueError:
                raise ValueError(f"--sweep {item}: {p!r} is not a number") from None
        sweep[name] = values
    return sweep


def _sweepable_knob(config: TrainConfig, name: str) -> str:
    """Why the agent's knob ``name`` cannot be swept ("" when it can, as far as its type
    tells: a float; :func:`check_traceable` then tries its program)."""
    value = getattr(config.agent_config, name)
    if isinstance(value, bool) or not isinstance(value, float):
        kind = "switch" if isinstance(value, bool) else type(value).__name__
        return (
            f"it is a {kind} knob of agent {config.agent!r}, not a float that leaves the "
            "program's shapes alone"
        )
    return ""


def check_sweep(config: TrainConfig, sweep: Mapping[str, Sequence]) -> dict:
    """The sweep with canonical names and float values, checked against ``config``.

    Args:
      config: the run's base :class:`TrainConfig`.
      sweep: setting name (a field, an agent knob, or their option spelling) -> values.

    Returns:
      ``{name: tuple of floats}`` in the order given.

    Raises:
      ValueError: one line naming the setting: an unknown one, one that sets the program's
        shapes or structure (and why), an empty or non-numeric list, or a value the config
        refuses (e.g. ``lr=-1``).
    """
    if not isinstance(sweep, Mapping) or not sweep:
        raise ValueError("sweep must be a non-empty dict of setting name -> list of values")
    out = {}
    for raw, values in sweep.items():
        name = canonical_name(str(raw))
        option = f"--sweep {name}"
        try:
            loop, knobs = split_settings({name: None}, config.agent)
        except ValueError as e:
            raise ValueError(f"{option}: {e}") from None
        if name in loop:
            if name in STATIC:
                raise ValueError(f"{option}: cannot be swept: {STATIC[name]}")
            if name not in DYNAMIC:
                raise ValueError(
                    f"{option}: cannot be swept: not a number (sweep one of "
                    f"{', '.join(sorted(DYNAMIC))}, or an agent's float knob)"
                )
            if getattr(config, name) is None:
                raise ValueError(
                    f"{option}: cannot be swept: it is off (None) in the base config, and "
                    f"turning it on changes the program; set --{name.replace('_', '-')} first"
                )
        elif (why := _sweepable_knob(config, name)) != "":
            raise ValueError(f"{option}: cannot be swept: {why}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"{option}: give a non-empty list of numbers, got {values!r}")
        numbers = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"{option}: {v!r} is not a number")
            if not math.isfinite(float(v)):
                raise ValueError(f"{option}: {v!r} is not a finite number")
            numbers.append(float(v))
        if name in out:
            raise ValueError(f"{option}: swept twice; give its values once")
        out[name] = tuple(numbers)
    for values in itertools.product(*out.values()):
        member = dict(zip(out, values, strict=True))
        try:
            config.replace(**member).validate()
        except ValueError as e:
            shown = ", ".join(f"{k}={v:g}" for k, v in member.items())
            raise ValueError(f"--sweep: the member {shown} is not a valid config: {e}") from None
    return out


@dataclasses.dataclass(frozen=True)
class Population:
    """A population's settings: the grid of members, the seeds per member and PBT's options.

    Attributes:
      sweep: ``{name: values}``, the swept settings (canonical names) and their values.
      num_seeds: seeds per member.
      pbt_every: env steps per seed between PBT's exploit-and-explore steps (None: a sweep).
      explore: ``"perturb"`` or ``"resample"`` (see the module docstring).
      copy_buffer: with PBT, a copier takes its parent's replay buffer too.
    """

    sweep: dict
    num_seeds: int
    pbt_every: int | None = None
    explore: str = "perturb"
    copy_buffer: bool = False

    @property
    def names(self) -> tuple:
        return tuple(self.sweep)

    @property
    def grid(self) -> np.ndarray:
        """float64 ``[members, names]``: each member's starting values (the first setting
        varies slowest)."""
        return np.array(list(itertools.product(*self.sweep.values())), np.float64).reshape(
            -1, len(self.sweep)
        )

    @property
    def num_members(self) -> int:
        return int(np.prod([len(v) for v in self.sweep.values()]))

    @property
    def num_lanes(self) -> int:
        return self.num_members * self.num_seeds

    @property
    def pbt(self) -> bool:
        return self.pbt_every is not None

    def member_values(self, member: int) -> dict:
        """The starting values of ``member`` by name."""
        return dict(zip(self.names, self.grid[member].tolist(), strict=True))

    def to_json(self) -> dict:
        return {
            "sweep": {k: list(v) for k, v in self.sweep.items()},
            "members": self.num_members,
            "pbt_every": self.pbt_every,
            "explore": self.explore,
            "copy_buffer": self.copy_buffer,
        }

    @classmethod
    def from_json(cls, d: dict, num_seeds: int) -> Population:
        return cls(
            {k: tuple(v) for k, v in d["sweep"].items()},
            num_seeds,
            d.get("pbt_every"),
            d.get("explore", "perturb"),
            bool(d.get("copy_buffer", False)),
        )


def make_population(
    config: TrainConfig,
    sweep: Mapping[str, Sequence],
    num_seeds: int,
    pbt_every: int | None = None,
    explore: str = "perturb",
    copy_buffer: bool = False,
) -> Population:
    """A checked :class:`Population` for ``config`` (see :func:`check_sweep`).

    Raises:
      ValueError: a bad sweep, ``pbt_every`` not a positive integer, an unknown
        ``explore``, or ``copy_buffer`` without ``pbt_every``; one line naming the option.
    """
    checked = check_sweep(config, sweep)
    if pbt_every is not None and (
        isinstance(pbt_every, bool) or not isinstance(pbt_every, (int, np.integer)) or pbt_every < 1
    ):
        raise ValueError(f"--pbt-every must be a positive integer of env steps, got {pbt_every!r}")
    if explore not in EXPLORE_KINDS:
        raise ValueError(f"--pbt-explore must be one of {EXPLORE_KINDS}, got {explore!r}")
    if copy_buffer and pbt_every is None:
        raise ValueError("--pbt-copy-buffer goes with --pbt-every")
    return Population(
        checked, num_seeds, None if pbt_every is None else int(pbt_every), explore, copy_buffer
    )


# --------------------------------------------------------------------------- one member


def member_config(config: TrainConfig, hparams: Mapping[str, Any]) -> TrainConfig:
    """``config`` with ``hparams`` (loop fields and agent knobs, values or tracers) in place,
    unvalidated (a tracer cannot be compared in Python)."""
    loop, knobs = split_settings(dict(hparams), config.agent)
    out = dataclasses.replace(config, **loop)
    if knobs:
        out = dataclasses.replace(out, agent_config=dataclasses.replace(out.agent_config, **knobs))
    return out


def member_trainer(trainer: Trainer, hparams: Mapping[str, Any]) -> Trainer:
    """``trainer`` with its agent (optimizer, schedules, discount, ...) rebuilt from its
    config with ``hparams`` in place of the swept settings; environment, network and replay
    buffer are the base trainer's. Called inside the traced program, where the values are
    the lane's float32 scalars."""
    cfg = member_config(trainer.config, hparams)
    agent = make_agent(cfg, trainer.network, trainer.num_actions)
    return dataclasses.replace(trainer, config=cfg, agent=agent)


def check_traceable(trainer: Trainer, population: Population) -> None:
    """``ValueError`` naming the first swept agent knob that the agent's program uses as a
    Python constant (in a shape, a branch or a check), found by tracing one chunk with the
    knob as a traced value (``jax.eval_shape``: nothing runs)."""
    state = jax.eval_shape(trainer.init, jax.random.key(0))
    for name in population.names:
        if name in DYNAMIC:
            continue

        def chunk(s, value, name=name):
            return member_trainer(trainer, {name: value}).chunk(s)

        try:
            jax.eval_shape(chunk, state, jax.ShapeDtypeStruct((), jnp.float32))
        except (jax.errors.ConcretizationTypeError, TypeError, ValueError) as e:
            why = str(e).strip().splitlines()[0][:120]
            raise ValueError(
                f"--sweep {name}: cannot be swept: agent {trainer.config.agent!r} uses it as "
                f"a Python constant of its program ({type(e).__name__}: {why})"
            ) from None


# --------------------------------------------------------------------------- lanes


@struct.dataclass
class PopulationState:
    """One lane's state (vmapped: every lane's).

    Attributes:
      train: the lane's :class:`memjax.train.TrainState`.
      hparams: ``{name: float32 []}``, the values the lane trains with.
      return_sum: float32 [], returns of the training episodes finished since the last
        exploit step; ``episodes``: int32 [], their number (PBT ranks lanes by the mean).
    """

    train: TrainState
    hparams: dict
    return_sum: jax.Array
    episodes: jax.Array

    @property
    def agent(self):
        """The agent state (what the driver evaluates and saves)."""
        return self.train.agent

    @property
    def buffer(self):
        """The replay buffer state (what the driver reports on)."""
        return self.train.buffer


@dataclasses.dataclass(frozen=True, eq=False)
class PopulationTrainer:
    """The lane functions of a population, shaped like a :class:`memjax.train.Trainer` for
    the host driver: ``collect``, ``chunk`` and ``final_chunk`` map a
    :class:`PopulationState` through the member's trainer (:func:`member_trainer` with the
    lane's values); evaluation is the base trainer's (greedy, the same for every member).
    Environment, network, buffer and config are the base trainer's."""

    base: Trainer
    population: Population

    def __getattr__(self, name):  # config, env, env_params, buffer, network, num_tasks, ...
        if name in ("base", "population"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def init(self, key, hparams) -> PopulationState:
        return PopulationState(
            train=self.base.init(key),
            hparams=hparams,
            return_sum=jnp.zeros((), jnp.float32),
            episodes=jnp.zeros((), jnp.int32),
        )

    def _lane(self, pick: Callable) -> Callable:
        def run(state: PopulationState):
            fn = pick(member_trainer(self.base, state.hparams))
            train, metrics = fn(state.train)
            metrics = {**metrics, **{f"hp_{k}": v for k, v in state.hparams.items()}}
            finished = metrics["episodes"]
            return_sum = state.return_sum + jnp.where(
                finished > 0, metrics["episode_return"] * finished, 0.0
            )
            return state.replace(
                train=train, return_sum=return_sum, episodes=state.episodes + finished
            ), metrics

        return run

    @property
    def collect(self) -> Callable:
        return self._lane(lambda t: t.collect)

    @property
    def chunk(self) -> Callable:
        return self._lane(lambda t: t.chunk)

    @property
    def final_chunk(self) -> Callable | None:
        return None if self.base.final_chunk is None else self._lane(lambda t: t.final_chunk)

    def evaluate(self, agent_state, key):
        return self.base.evaluate(agent_state, key)


# --------------------------------------------------------------------------- PBT


def exploit_explore(population: Population, state: PopulationState, key):
    """PBT's step on every lane's state (leading axis: lanes, member-major).

    Args:
      population: the :class:`Population` (``explore``, ``copy_buffer``, the grid).
      state: the population's :class:`PopulationState`, ``[lanes, ...]`` leaves.
      key: a PRNG key.

    Returns:
      ``(state, parents)``: the state after the exploit (bottom quarter of each seed's
      members copy a random top-quarter member: agent state, values and, with
      ``copy_buffer``, the buffer) and explore steps, its recent-return counters reset;
      ``parents`` int32 ``[lanes]``, the member each lane copied (its own index when it
      did not).
    """
    m, s = population.num_members, population.num_seeds
    quarter = max(1, m // 4) if m >= 2 else 0
    mean = state.return_sum / jnp.maximum(state.episodes, 1)
    score = jnp.where(state.episodes > 0, mean, -jnp.inf).reshape(m, s)
    k_pick, k_explore = jax.random.split(key)

    def parents_of_seed(score, key):  # [m] -> [m]
        order = jnp.argsort(score, stable=True)  # ascending: the worst first
        bottom, top = order[:quarter], order[m - quarter :]
        picked = top[jax.random.randint(key, (quarter,), 0, quarter)]
        return jnp.arange(m).at[bottom].set(picked)

    parents = jax.vmap(parents_of_seed, in_axes=(1, 0), out_axes=1)(
        score, jax.random.split(k_pick, s)
    )  # [m, s]
    source = (parents * s + jnp.arange(s)[None]).reshape(-1)  # the lane each lane copies
    copied = source != jnp.arange(m * s)
    take = lambda tree: jax.tree.map(lambda x: x[source], tree)  # noqa: E731
    train = state.train.replace(agent=take(state.train.agent))
    if population.copy_buffer:
        train = train.replace(buffer=take(state.train.buffer))
    hparams = _explore(population, take(state.hparams), copied, k_explore)
    zeros = jnp.zeros_like
    state = state.replace(
        train=train,
        hparams=hparams,
        return_sum=zeros(state.return_sum),
        episodes=zeros(state.episodes),
    )
    return state, parents.reshape(-1).astype(jnp.int32)


def _explore(population: Population, hparams: dict, copied, key) -> dict:
    out = {}
    for j, (name, values) in enumerate(population.sweep.items()):
        k = jax.random.fold_in(key, j)
        current = hparams[name]
        if population.explore == "perturb":
            low, high = DYNAMIC.get(name, (0.0, math.inf))
            up = jax.random.bernoulli(k, 0.5, current.shape)
            factor = jnp.where(up, PERTURB_FACTORS[1], PERTURB_FACTORS[0]).astype(current.dtype)
            new = jnp.clip(current * factor, low, high)
        else:
            choices = jnp.asarray(values, current.dtype)
            new = choices[jax.random.randint(k, current.shape, 0, len(values))]
        out[name] = jnp.where(copied, new, current)
    return out


# --------------------------------------------------------------------------- placement


@dataclasses.dataclass(frozen=True)
class PopulationLayout:
    """A population's lanes sharded over a :class:`memjax.train.devices.Layout`'s devices,
    with the pieces the host driver compiles: ``init``, ``chunk`` (with PBT's step, taken
    inside the same program where a ``pbt_every`` boundary falls) and ``evaluate``.
    ``num_seeds`` is the lanes' count (what the driver vmaps)."""

    place: devices.Layout
    population: Population
    pbt_key: Any
    config: TrainConfig

    @property
    def num_seeds(self) -> int:
        return self.population.num_lanes

    @property
    def mesh(self):
        return self.place.mesh

    @property
    def num_devices(self) -> int:
        return self.place.num_devices

    @property
    def data_parallel(self) -> bool:
        return False

    @property
    def sharded(self) -> NamedSharding:
        return self.place.sharded

    def _map(self, fn, in_specs, out_specs):
        return jax.shard_map(
            fn, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
        )

    def _lane_keys(self, key):
        """Lane ``m * seeds + s`` gets seed ``s``'s key of a single run: ``split(key,
        seeds)[s]``."""
        return jnp.tile(
            jax.random.split(key, self.population.num_seeds), self.population.num_members
        )

    def init(self, trainer: PopulationTrainer, key) -> Callable:
        """``init() -> state``: every lane's state, placed (see :meth:`init_from_key`)."""
        from_key = self.init_from_key(trainer)
        return lambda: from_key(key)

    def init_from_key(self, trainer: PopulationTrainer) -> Callable:
        """``init(key) -> state`` with the base key an argument (what the driver compiles:
        a key baked into the program would fold the whole state into constants)."""
        pop, spec = self.population, P(self.place.axis)
        hparams = {
            name: np.repeat(pop.grid[:, j], pop.num_seeds).astype(np.float32)
            for j, name in enumerate(pop.names)
        }
        mapped = self._map(jax.vmap(trainer.init), (spec, spec), spec)
        return lambda key: mapped(self._lane_keys(key), hparams)

    def chunk(self, fn: Callable) -> Callable:
        """``state -> (state, metrics, buffer sizes)``: ``fn`` on every lane, then, when the
        chunk crossed a multiple of ``pbt_every`` (after the warm-up, before the run's end),
        :func:`exploit_explore`; ``metrics["pbt_parent"]`` [lanes] says whom each copied."""
        pop, spec, cfg = self.population, P(self.place.axis), self.config
        own = jnp.repeat(jnp.arange(pop.num_members, dtype=jnp.int32), pop.num_seeds)

        def per_lane(state):
            state, metrics = fn(state)
            return state, metrics, state.train.buffer.count

        mapped = self._map(jax.vmap(per_lane), spec, (spec, spec, spec))

        def run(state):
            before = state.train.step[0] * cfg.num_envs
            state, metrics, sizes = mapped(state)
            if not pop.pbt:
                return state, {**metrics, "pbt_parent": own}, sizes
            after = state.train.step[0] * cfg.num_envs
            due = (
                (after // pop.pbt_every > before // pop.pbt_every)
                & (before >= cfg.warmup_vec_steps * cfg.num_envs)
                & (after < cfg.steps_done)
            )
            key = jax.random.fold_in(self.pbt_key, after)
            state, parents = jax.lax.cond(
                due,
                lambda s: exploit_explore(pop, s, key),
                lambda s: (s, own),
                state,
            )
            return state, {**metrics, "pbt_parent": parents}, sizes

        return run

    def evaluate(self, trainer: PopulationTrainer, key) -> Callable:
        """``(agent_state, index) -> Episodes`` [lanes, episodes]; lane ``m * seeds + s``
        uses a single run's evaluation keys of seed ``s``."""
        spec = P(self.place.axis)
        mapped = self._map(jax.vmap(trainer.evaluate), (spec, spec), spec)
        return lambda agent, index: mapped(agent, self._lane_keys(jax.random.fold_in(key, index)))


def layout(population: Population, devices_per_process=None) -> devices.Layout:
    """The devices' layout of a population's lanes (members x seeds, sharded like seeds).

    Raises:
      ValueError: members x seeds not a multiple of the devices, naming both.
    """
    try:
        return devices.layout(population.num_lanes, devices_per_process)
    except ValueError as e:
        if "must be a multiple" not in str(e):
            raise
        n = len(devices.select_devices(devices_per_process))
        raise ValueError(
            f"--sweep: {population.num_members} members x {population.num_seeds} seeds = "
            f"{population.num_lanes} lanes must be a multiple of the {n} devices that shard "
            "them: choose --seeds or --devices so that it divides"
        ) from None


# --------------------------------------------------------------------------- results


def lanes_by_member(x, population: Population) -> np.ndarray:
    """``[..., lanes, ...]`` (lanes on axis -1 or the given layout) as ``[..., members, seeds]``:
    lanes on the last axis."""
    x = np.asarray(x)
    return x.reshape(*x.shape[:-1], population.num_members, population.num_seeds)


def lineage(population: Population, curves: Mapping[str, Any]) -> list:
    """Each member's history, per seed: ``[member][seed]`` -> list of events ``{"step",
    "copied_from", "values"}`` (the env steps per seed at the exploit, the member copied and
    the values explored from its), from ``curves``' ``pbt_parent`` and ``hp_<name>``
    [points, lanes] (a value's row at the next point is what the lane trained with after)."""
    parents = lanes_by_member(np.asarray(curves["pbt_parent"]), population)  # [points, m, s]
    hp = {n: lanes_by_member(np.asarray(curves[f"hp_{n}"]), population) for n in population.names}
    steps = list(curves["steps"])
    m, s = population.num_members, population.num_seeds
    out = [[[] for _ in range(s)] for _ in range(m)]
    for i in range(len(steps) - 1):
        for member, seed in itertools.product(range(m), range(s)):
            parent = int(parents[i, member, seed])
            if parent != member:
                out[member][seed].append(
                    {
                        "step": int(steps[i]),
                        "copied_from": parent,
                        "values": {n: float(hp[n][i + 1, member, seed]) for n in hp},
                    }
                )
    return out


def final_values(population: Population, state_hparams: Mapping[str, Any]) -> dict:
    """``{name: float64 [members, seeds]}``: the values every lane ended with."""
    return {
        n: lanes_by_member(np.asarray(state_hparams[n], np.float64), population)
        for n in population.names
    }


def members_summary(population: Population, curves: Mapping[str, Any], finals: dict) -> list:
    """summary.json's ``members``: one dict per member with its values by name (a sweep:
    its values; PBT: its final values, one per seed, and its starting ones under
    ``"start"``), ``final_return_mean``, ``final_return_per_seed`` and, with PBT, its
    ``lineage`` per seed (:func:`lineage`)."""
    final = lanes_by_member(np.asarray(curves["eval_return"][-1], np.float64), population)
    history = lineage(population, curves) if population.pbt else None
    out = []
    for member in range(population.num_members):
        start = population.member_values(member)
        entry = {"member": member}
        if population.pbt:
            entry.update({n: finals[n][member].tolist() for n in population.names})
            entry["start"] = start
        else:
            entry.update(start)
        entry["final_return_mean"] = float(final[member].mean())
        entry["final_return_per_seed"] = final[member].tolist()
        if history is not None:
            entry["lineage"] = history[member]
        out.append(entry)
    return out


def summarize(
    summary: dict, population: Population, curves: Mapping[str, Any], hparams=None
) -> dict:
    """The driver's summary of a population run: ``seeds`` per member, ``members``
    (:func:`members_summary`), ``best_member`` and ``population`` (its settings, ``lanes``
    and the mean return over every lane); ``final_return_mean``, ``final_return_std`` and
    ``final_return_per_seed`` become the best member's. ``hparams``: the lanes' final values
    (None: those the curves' last point recorded, for an interrupted run)."""
    if hparams is None:
        hparams = {n: np.asarray(curves[f"hp_{n}"])[-1] for n in population.names}
    members = members_summary(population, curves, final_values(population, hparams))
    best = best_member(members)
    per_seed = np.asarray(best["final_return_per_seed"], np.float64)
    lanes = np.asarray(curves["eval_return"][-1], np.float64)
    return {
        **summary,
        "seeds": population.num_seeds,
        "final_return_mean": float(per_seed.mean()),
        "final_return_std": float(per_seed.std()),
        "final_return_per_seed": per_seed.tolist(),
        "best_member": best["member"],
        "members": members,
        "population": {
            **population.to_json(),
            "lanes": population.num_lanes,
            "final_return_mean_all_members": float(lanes.mean()),
        },
    }


def format_population_plan(result: dict, members: int, seeds: int, budget_bytes=None) -> str:
    """The population lines of ``--plan``: members x seeds lanes, bytes per member and per
    lane (:func:`memjax.train.plan.plan` of ``members * seeds`` seeds) and, with a device
    budget, the most lanes that fit one device with this config."""
    mib = 2.0**20
    per_lane = result["total_bytes"] / result["seeds"]
    lines = [
        f"population: {members} members x {seeds} seeds = {members * seeds} lanes "
        f"({per_lane * seeds / mib:.3f} MiB per member, {per_lane / mib:.3f} MiB per lane)"
    ]
    if budget_bytes is not None:
        lines.append(
            f"largest population that fits {budget_bytes / 1e9:.3g} GB per device with "
            f"this capacity: {int(budget_bytes // per_lane):,} lanes per device"
        )
    return "\n".join(lines)


def pbt_key(seed: int):
    """The PRNG key of PBT's choices in a run with base seed ``seed`` (folded with the env
    steps done at each exploit step)."""
    return jax.random.fold_in(jax.random.key(seed), 0x5EED_9B7)


def best_member(members: list) -> dict:
    """The member with the highest ``final_return_mean`` (the first of equals)."""
    return max(members, key=lambda e: (e["final_return_mean"], -e["member"]))


def describe(population: Population, member: dict) -> str:
    """``"lr=0.0003, gamma=0.99"`` for a member of ``members`` (PBT: its starting values and
    its final values per seed)."""
    start = member.get("start", member)
    text = ", ".join(f"{n}={start[n]:g}" for n in population.names)
    if population.pbt:
        finals = "; ".join(
            f"{n} " + ", ".join(f"{v:.3g}" for v in member[n]) for n in population.names
        )
        text = f"started {text}; final per seed: {finals}"
    return text


__all__ = [
    "DYNAMIC",
    "STATIC",
    "EXPLORE_KINDS",
    "Population",
    "PopulationState",
    "PopulationTrainer",
    "PopulationLayout",
    "parse_sweep",
    "check_sweep",
    "make_population",
    "member_config",
    "member_trainer",
    "check_traceable",
    "exploit_explore",
    "layout",
    "lineage",
    "members_summary",
    "best_member",
    "describe",
    "summarize",
    "pbt_key",
    "format_population_plan",
]
