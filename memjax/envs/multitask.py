"""Several tasks as one gymnax environment: one environment class, one set of parameters per
task, the task of each episode in the state.

```python
env = mj.envs.MultiTask(CartPole(), [cartpole_variant(), cartpole_variant(length=1.0)])
params = env.default_params            # MultiTaskParams: the tasks' parameters stacked
obs, state = env.reset(key, params)    # obs [4 + 2]: CartPole's, then the task's one-hot
```

Every task is the same environment class with other parameters (CartPole-v1 with another
pole length, gravity or mass), so the parameters stack into one pytree with a leading task
axis and a step gathers its task's row: one compiled program steps environments of every
task, vmapped like any gymnax environment. Tasks of different classes (CartPole and
Acrobot, MinAtar games with other action sets) are refused; padding action sets is not
done here.

**The task input.** The agent sees the task: the observation is the environment's with the
task's one-hot appended along the last axis (for an image ``[H, W, C]``, ``num_tasks``
constant planes). One Q-network with a task input, rather than one head per task, keeps
every agent, network, replay layout and the training loop unchanged (the one-hot is just
part of the observation, and replay stores it with each step); per-task heads would pay off
when the tasks' action sets differ, which is out of scope. ``task_input=False`` hides the
task (task-agnostic continual learning).

**Which task an episode plays** (decided at its reset; the state keeps it to the end):

* ``params.task >= 0`` (:meth:`MultiTask.for_task`): every episode plays that task, and no
  switch happens (evaluation on one task);
* else, without ``switch_every``: a task uniformly at random per episode (multi-task
  training);
* else, with ``switch_every=K``: the tasks in turn (continual learning). The state counts
  the environment's steps since its first reset (``clock``, kept through resets); steps
  ``[pK, (p+1)K)`` are played in task ``p mod num_tasks``. At a switch the running episode is
  cut (``truncated``, like a time limit, so learners bootstrap through it) and the next one
  starts in the next task. With ``num_envs`` environments in lockstep the run switches
  every ``K * num_envs`` env steps.

``step`` is gymnax's (the inner environment's ``step_env`` with the task's parameters,
auto-reset, ``info["final_observation"]``) with the clock carried through resets, and
``info["task"]``, the task of the step. Keep ``MultiTask`` outermost: a wrapper around it
(``FrameStack``) auto-resets through ``reset_env``, which restarts the clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces
from gymnax.environments.classic_control import cartpole

from memjax._checks import check_positive_int


@struct.dataclass
class MultiTaskParams:
    """Parameters of a :class:`MultiTask` environment.

    Attributes:
      tasks: the inner environment's parameters, each leaf with a leading ``[num_tasks]``
        axis (row ``t``: task ``t``).
      max_steps_in_episode: the largest of the tasks' episode limits (static; evaluation caps
        episodes with it).
      task: int32 scalar: ``>= 0``, every episode plays this task and no switch happens;
        ``-1`` (default), the environment's schedule decides.
    """

    tasks: Any
    max_steps_in_episode: int = struct.field(pytree_node=False)
    task: Any = -1


@struct.dataclass
class MultiTaskState:
    """The state of a :class:`MultiTask` environment.

    Attributes:
      inner: the running episode's state in the inner environment.
      task: int32 scalar, the running episode's task.
      clock: int32 scalar, steps taken since the first reset (kept through resets).
      time: the inner state's step counter (gymnax reads ``state.time``).
    """

    inner: Any
    task: jax.Array
    clock: jax.Array
    time: jax.Array


class MultiTask(environment.Environment):
    """Tasks that share one gymnax environment class, differing in parameters (see the module
    docstring).

    Args:
      env: a gymnax environment.
      task_params: one parameter pytree of ``env`` per task (at least one), all with the
        structure of ``env.default_params``.
      names: a name per task (default ``task0``, ``task1``, ...).
      switch_every: None (each episode's task uniformly at random), or a Python int K >= 1:
        the tasks in turn, switching every K steps of each environment.
      task_input: append the task's one-hot to the observation.
      name: the environment's name (default ``MultiTask-<env name>``).

    Raises:
      TypeError: a task's parameters have another structure than ``env.default_params``, or a
        bad ``switch_every``.
      ValueError: no tasks, names of another length or repeated, tasks with different
        observation shapes or dtypes, or different action spaces.
    """

    def __init__(
        self,
        env: environment.Environment,
        task_params: Sequence,
        names=None,
        switch_every: int | None = None,
        task_input: bool = True,
        name: str | None = None,
    ):
        super().__init__()
        task_params = list(task_params)
        if not task_params:
            raise ValueError("MultiTask: give at least one task's parameters")
        names = [f"task{t}" for t in range(len(task_params))] if names is None else list(names)
        if len(names) != len(task_params):
            raise ValueError(f"MultiTask: {len(names)} names for {len(task_params)} tasks")
        if len(set(names)) != len(names):
            raise ValueError(f"MultiTask: task names must differ, got {names}")
        self.env = env
        self.names = tuple(str(n) for n in names)
        self.switch_every = (
            None if switch_every is None else check_positive_int("switch_every", switch_every)
        )
        self.task_input = bool(task_input)
        self._name = name
        _check_tasks([env] * len(task_params), task_params, self.names)
        self._tasks = jax.tree.map(
            lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *task_params
        )
        self._max_steps = max(int(getattr(p, "max_steps_in_episode", 0)) for p in task_params)

    # -- static facts ------------------------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        """The number of tasks."""
        return len(self.names)

    @property
    def name(self) -> str:
        inner = getattr(self.env, "name", type(self.env).__name__)
        return self._name or f"MultiTask-{inner}"

    @property
    def num_actions(self) -> int:
        return self.env.num_actions

    @property
    def default_params(self) -> MultiTaskParams:
        return MultiTaskParams(tasks=self._tasks, max_steps_in_episode=self._max_steps)

    def action_space(self, params=None):
        return self.env.action_space(None if params is None else self.task_params(params, 0))

    def observation_space(self, params: MultiTaskParams):
        inner = self.env.observation_space(self.task_params(params, 0))
        if not self.task_input:
            return inner
        shape = tuple(inner.shape)
        planes = (*shape[:-1], self.num_tasks)
        low = jnp.concatenate(
            [
                jnp.broadcast_to(jnp.asarray(inner.low, jnp.float32), shape),
                jnp.zeros(planes, jnp.float32),
            ],
            axis=-1,
        )
        high = jnp.concatenate(
            [
                jnp.broadcast_to(jnp.asarray(inner.high, jnp.float32), shape),
                jnp.ones(planes, jnp.float32),
            ],
            axis=-1,
        )
        return spaces.Box(low, high, (*shape[:-1], shape[-1] + self.num_tasks), inner.dtype)

    # -- tasks -------------------------------------------------------------------------------
    def task_params(self, params: MultiTaskParams, task) -> Any:
        """The inner environment's parameters of ``task`` (a Python int or int32 scalar)."""
        return jax.tree.map(lambda x: x[task], params.tasks)

    def for_task(self, params: MultiTaskParams, task) -> MultiTaskParams:
        """``params`` with every episode on ``task`` (an int or int32 scalar, may be traced:
        ``jax.vmap(lambda t: evaluate(..., env.for_task(params, t)))(jnp.arange(T))``)."""
        return params.replace(task=jnp.asarray(task, jnp.int32))

    def scheduled_task(self, clock, key, params: MultiTaskParams) -> jax.Array:
        """The task of an episode that starts at ``clock`` (int32 scalar): ``params.task`` if
        set, else ``(clock // switch_every) % num_tasks``, else uniform from ``key``."""
        if self.switch_every is None:
            scheduled = jax.random.randint(key, (), 0, self.num_tasks, jnp.int32)
        else:
            scheduled = (clock // self.switch_every % self.num_tasks).astype(jnp.int32)
        forced = jnp.asarray(params.task, jnp.int32)
        return jnp.where(forced >= 0, forced, scheduled)

    def _switch_due(self, clock, params: MultiTaskParams) -> jax.Array:
        if self.switch_every is None:
            return jnp.zeros((), bool)
        return (clock % self.switch_every == 0) & (jnp.asarray(params.task) < 0)

    def _observe(self, obs, task):
        if not self.task_input:
            return obs
        one_hot = jax.nn.one_hot(task, self.num_tasks, dtype=obs.dtype)
        return jnp.concatenate(
            [obs, jnp.broadcast_to(one_hot, (*obs.shape[:-1], self.num_tasks))], axis=-1
        )

    # -- gymnax API --------------------------------------------------------------------------
    def _reset_at(self, key, params: MultiTaskParams, clock):
        """A new episode at ``clock``: the inner reset gets ``key`` itself (so a task's resets
        are the inner environment's under the same keys); the task draw uses a fold of it."""
        task = self.scheduled_task(clock, jax.random.fold_in(key, 1), params)
        obs, inner = self.env.reset_env(key, self.task_params(params, task))
        clock = jnp.asarray(clock, jnp.int32)
        return self._observe(obs, task), MultiTaskState(inner, task, clock, inner.time)

    def reset_env(self, key, params: MultiTaskParams):
        return self._reset_at(key, params, jnp.zeros((), jnp.int32))

    def reset(self, key, params: MultiTaskParams | None = None):
        return self.reset_env(key, self.default_params if params is None else params)

    def step_env(self, key, state: MultiTaskState, action, params: MultiTaskParams):
        obs, inner, reward, terminated, info = self.env.step_env(
            key, state.inner, action, self.task_params(params, state.task)
        )
        new = MultiTaskState(inner, state.task, state.clock + 1, inner.time)
        return self._observe(obs, state.task), new, reward, terminated, info

    def is_truncated(self, state: MultiTaskState, params: MultiTaskParams) -> jax.Array:
        """The inner time limit of the episode's task, or (continual) a task switch due."""
        inner = self.env.is_truncated(state.inner, self.task_params(params, state.task))
        return jnp.logical_or(inner, self._switch_due(state.clock, params))

    def step(self, key, state: MultiTaskState, action, params: MultiTaskParams | None = None):
        """gymnax's ``step`` (split key, ``step_env``, auto-reset) with the clock kept through
        the reset; ``info["task"]`` is the task of this step."""
        params = self.default_params if params is None else params
        key_step, key_reset = jax.random.split(key)
        obs_st, state_st, reward, terminated, info = self.step_env(key_step, state, action, params)
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs_re, state_re = self._reset_at(key_reset, params, state_st.clock)
        new_state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_re, state_st)
        obs = jax.lax.select(done, obs_re, obs_st)
        info = {
            **info,
            "terminated": terminated,
            "truncated": truncated,
            "final_observation": obs_st,
            "task": state.task,
        }
        return obs, new_state, reward, terminated, truncated, info


def from_envs(
    tasks: Sequence,
    names=None,
    switch_every: int | None = None,
    task_input: bool = True,
    name: str | None = None,
) -> MultiTask:
    """A :class:`MultiTask` from ``(env, params)`` pairs, e.g. ``[memjax.envs.make(n) for n in
    names]``, checking that they can be one.

    Args:
      tasks: ``(env, params)`` per task.
      names, switch_every, task_input, name: as for :class:`MultiTask`.

    Returns:
      ``MultiTask(tasks[0][0], [params ...])``.

    Raises:
      ValueError: no tasks; tasks with different observation shapes or dtypes, or different
        action spaces (checked in this order, naming the tasks); or environments of different
        classes or configurations (only the parameters may differ).
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("MultiTask: give at least one task")
    names = [getattr(e, "name", type(e).__name__) for e, _ in tasks] if names is None else names
    envs_, params = [e for e, _ in tasks], [p for _, p in tasks]
    _check_tasks(envs_, params, [str(n) for n in names])
    first = envs_[0]
    for n, e in zip(names[1:], envs_[1:]):
        if (
            type(e) is not type(first)
            or vars(e).keys() != vars(first).keys()
            or any(not _same(vars(e)[k], vars(first)[k]) for k in vars(first))
        ):
            raise ValueError(
                f"MultiTask: task {n!r} is a {type(e).__name__} "
                f"({getattr(e, 'name', '')}), task {names[0]!r} a "
                f"{type(first).__name__} ({getattr(first, 'name', '')}); the tasks "
                "must be one environment class with one configuration, differing "
                "only in their parameters"
            )
    return MultiTask(
        first, params, names=names, switch_every=switch_every, task_input=task_input, name=name
    )


def _same(a, b) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b)))
    except Exception:  # noqa: BLE001 - objects without a comparable value: identity
        return a is b


def _check_tasks(envs_: list, task_params: list, names) -> None:
    """Same observation shape/dtype and action space for every task, and parameters with the
    structure of the first environment's ``default_params``, else an error naming the tasks."""
    specs = [
        jax.eval_shape(lambda k, e=e, p=p: e.reset_env(k, p), jax.random.key(0))[0]
        for e, p in zip(envs_, task_params)
    ]
    for name, spec in zip(names[1:], specs[1:]):
        if (spec.shape, spec.dtype) != (specs[0].shape, specs[0].dtype):
            raise ValueError(
                f"MultiTask: task {name!r} observes {spec.dtype}{list(spec.shape)}, "
                f"task {names[0]!r} {specs[0].dtype}{list(specs[0].shape)}; "
                "every task must have the same observation shape and dtype"
            )
    spaces_ = [e.action_space(p) for e, p in zip(envs_, task_params)]
    for name, space in zip(names[1:], spaces_[1:]):
        if getattr(space, "n", None) != getattr(spaces_[0], "n", None):
            raise ValueError(
                f"MultiTask: task {name!r} has {getattr(space, 'n', space)} "
                f"actions, task {names[0]!r} {getattr(spaces_[0], 'n', spaces_[0])};"
                " every task must have the same actions (padding is not "
                "supported)"
            )
    structure = jax.tree.structure(envs_[0].default_params)
    for name, p in zip(names, task_params):
        if jax.tree.structure(p) != structure:
            raise TypeError(
                f"MultiTask: task {name!r}'s parameters are a {type(p).__name__} "
                f"with structure {jax.tree.structure(p)}, expected that of "
                f"{type(envs_[0]).__name__}'s default_params ({structure})"
            )


def cartpole_variant(
    length: float = 0.5,
    gravity: float = 9.8,
    masspole: float = 0.1,
    masscart: float = 1.0,
    force_mag: float = 10.0,
) -> cartpole.EnvParams:
    """gymnax CartPole-v1's parameters with another pole half-length, gravity, masses or push
    (a negative ``force_mag`` swaps the actions), with the derived ``total_mass`` and
    ``polemass_length`` consistent. Defaults: CartPole-v1."""
    return cartpole.EnvParams(
        gravity=gravity,
        masscart=masscart,
        masspole=masspole,
        total_mass=masscart + masspole,
        length=length,
        polemass_length=masspole * length,
        force_mag=force_mag,
    )


CARTPOLE_VARIANTS = {
    "default": {},
    "long": {"length": 1.0},
    "short": {"length": 0.25},
    "heavy": {"masspole": 0.5},
    "low-gravity": {"gravity": 4.9},
    "high-gravity": {"gravity": 19.6},
    "reversed": {"force_mag": -10.0},
}
"""CartPole-v1 variants by name -> :func:`cartpole_variant` arguments (``long``: a pole twice
as long; ``heavy``: five times as heavy; ``*-gravity``: half and twice Earth's; ``reversed``:
the actions swapped)."""

DEFAULT_CARTPOLE_TASKS = ("default", "long", "high-gravity", "reversed")
"""The variants of ``MultiCartPole`` and ``ContinualCartPole-<K>``, in this order."""


def multi_cartpole(
    tasks: Sequence[str] = DEFAULT_CARTPOLE_TASKS,
    switch_every: int | None = None,
    task_input: bool = True,
    name: str | None = None,
) -> MultiTask:
    """CartPole-v1 variants (:data:`CARTPOLE_VARIANTS`) as one :class:`MultiTask`.

    Args:
      tasks: variant names, in task order.
      switch_every: None (a random task per episode) or K (the tasks in turn, every K steps
        of each environment).
      task_input: append the task's one-hot to the observation.
      name: the environment's name.

    Returns:
      A :class:`MultiTask` over gymnax's CartPole-v1.

    Raises:
      ValueError: an unknown variant name (the known ones are listed).
    """
    tasks = list(tasks)
    for t in tasks:
        if t not in CARTPOLE_VARIANTS:
            raise ValueError(
                f"unknown CartPole variant {t!r}; known: {', '.join(CARTPOLE_VARIANTS)}"
            )
    return MultiTask(
        cartpole.CartPole(),
        [cartpole_variant(**CARTPOLE_VARIANTS[t]) for t in tasks],
        names=tasks,
        switch_every=switch_every,
        task_input=task_input,
        name=name,
    )


NAMES = (
    "MultiCartPole",
    "MultiCartPole:<variants>",
    "ContinualCartPole-<K>",
    "ContinualCartPole-<K>:<variants>",
)
"""The registry's multi-task names (``<variants>``: comma-separated :data:`CARTPOLE_VARIANTS`
names; ``<K>``: ``switch_every``)."""

_NAME = re.compile(r"(MultiCartPole|ContinualCartPole-([1-9][0-9]*))(?::(.*))?")


def make(name: str):
    """``(env, env.default_params)`` for a name of :data:`NAMES`, or None for another name.

    ``MultiCartPole``: :data:`DEFAULT_CARTPOLE_TASKS`, a random task per episode;
    ``ContinualCartPole-<K>``: the same in turn, switching every K steps of each environment;
    ``...:<variants>`` (e.g. ``MultiCartPole:default,reversed``): those variants instead.

    Raises:
      ValueError: an unknown or repeated variant name.
    """
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    tasks = DEFAULT_CARTPOLE_TASKS if match.group(3) is None else match.group(3).split(",")
    switch = None if match.group(2) is None else int(match.group(2))
    env = multi_cartpole(tasks, switch_every=switch, name=name)
    return env, env.default_params


def task_means(returns, tasks, num_tasks: int) -> np.ndarray:
    """Mean return per task over the last axis (NaN for a task without episodes).

    Args:
      returns: float array ``[..., E]``, e.g. ``metrics["eval_return"]`` [seeds, E].
      tasks: int array ``[E]``, each episode's task (e.g. ``metrics["eval_task"]``).
      num_tasks: the number of tasks.

    Returns:
      float64 ``[..., num_tasks]``.
    """
    returns = np.asarray(returns, np.float64)
    tasks = np.asarray(tasks)
    if tasks.shape != returns.shape[-1:]:
        raise ValueError(
            f"task_means: tasks {tasks.shape} for returns {returns.shape}; give "
            "one task per episode (the last axis)"
        )
    out = np.full(returns.shape[:-1] + (num_tasks,), np.nan)
    for t in range(num_tasks):
        if np.any(tasks == t):
            out[..., t] = returns[..., tasks == t].mean(axis=-1)
    return out


__all__ = [
    "MultiTask",
    "MultiTaskParams",
    "MultiTaskState",
    "from_envs",
    "cartpole_variant",
    "multi_cartpole",
    "task_means",
    "make",
    "NAMES",
    "CARTPOLE_VARIANTS",
    "DEFAULT_CARTPOLE_TASKS",
]
