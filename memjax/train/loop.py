"""The fused training loop for any :class:`memjax.agents.Agent` on gymnax environments.

One XLA program per *chunk* of training steps the vectorised environments, acts, inserts
into the replay buffer, samples, and lets the agent learn; everything is a pure function of
a :class:`TrainState`, so it vmaps over seeds::

    import jax, memjax as mj
    trainer = mj.train.make_train(mj.train.TrainConfig())   # DQN, CartPole-v1 defaults
    keys = jax.random.split(jax.random.key(0), 8)
    state, metrics = jax.jit(jax.vmap(trainer))(keys)       # == trainer.train

The pieces, all pure and vmappable (``state`` is one seed's state; vmap adds the seed axis):

* ``trainer.init(key) -> TrainState``
* ``trainer.env_step(state, random_actions=False) -> (state, (item, done, finished))``:
  one vector step, its replay item inserted.
* ``trainer.learner_step(state) -> (state, metrics)``: sample, ``agent.learn``, and
  ``buffer.update`` with the priorities ``learn`` returned.
* ``trainer.collect(state) -> (state, metrics)``: the warm-up, ``learning_starts`` env steps
  of uniform-random actions inserted into the buffer, no learning.
* ``trainer.chunk(state) -> (state, metrics)``: ``chunk_steps`` env steps of acting and
  inserting, with one learner step every ``train_every`` vector steps (with
  ``samples_per_insert``: after each vector step the learner steps Reverb's
  ``SampleToInsertRatio`` limiter allows, a static schedule; the warm-up ends with its backlog).
* ``trainer.final_chunk`` (or None): the same for the remainder when ``chunk_steps`` does not
  divide the training steps.
* ``trainer.evaluate(agent_state, key) -> Episodes``: greedy episode returns (float32
  [eval_episodes]) and whether each episode finished within the cap.
* ``trainer.train(key) -> (state, metrics)``: the whole run.

The learning schedule is static: warm-up chunks never learn, training chunks always do, so
there is no ``lax.cond`` on a per-seed predicate (under vmap it would run both branches).
The loop resets an environment's agent carry where its observation starts an episode.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from memjax import envs
from memjax.agents import Agent, reset_where
from memjax.train.build import (
    beta_schedule,
    example_transition,
    make_agent,
    make_buffer,
    make_env_for,
    make_network_for,
)
from memjax.train.config import TrainConfig
from memjax.train.evaluation import Episodes
from memjax.train.evaluation import evaluate as evaluate_policy
from memjax.train.storage import make_codecs, resolve_storage, stores_episode_starts


@struct.dataclass
class TrainState:
    """Everything one seed's run carries (a pytree of arrays only).

    Attributes:
      agent: the agent's state (DQN: :class:`memjax.agents.DQNState`, DRQN:
        :class:`memjax.agents.DRQNState`).
      buffer: the replay buffer's state.
      env_state: the ``num_envs`` environments' states.
      obs: their observations ``[num_envs, *obs_shape]``.
      carry: the agent's carry ``[num_envs, ...]`` (``()`` for DQN).
      first: bool ``[num_envs]``, where ``obs`` starts an episode.
      key: the PRNG key.
      step: int32 scalar, vector steps taken.
      ep_return: float32 ``[num_envs]``, the returns of the running episodes.
    """

    agent: Any
    buffer: Any
    env_state: Any
    obs: Any
    carry: Any
    first: jax.Array
    key: jax.Array
    step: jax.Array
    ep_return: jax.Array


def _episode_stats(done, finished, tasks=None, num_tasks: int = 0):
    stats = {"return_sum": jnp.sum(finished), "episodes": jnp.sum(done).astype(jnp.int32)}
    if num_tasks:  # a MultiTask environment: the same sums per task of the ending episodes
        stats["task_return_sum"] = jax.ops.segment_sum(finished, tasks, num_tasks)
        stats["task_episodes"] = jax.ops.segment_sum(done.astype(jnp.int32), tasks, num_tasks)
    return stats


def _summarise(stats, metrics):
    """Mean return of the episodes that finished (NaN if none), their number, and the mean
    of each learner metric over the chunk."""
    episodes = jnp.sum(stats["episodes"])
    mean_return = jnp.sum(stats["return_sum"]) / jnp.maximum(episodes, 1)
    out = {"episode_return": jnp.where(episodes > 0, mean_return, jnp.nan), "episodes": episodes}
    if "task_episodes" in stats:  # float32 / int32 [num_tasks]
        count = jnp.sum(stats["task_episodes"], axis=0)
        out["task_episode_return"] = jnp.where(
            count > 0, jnp.sum(stats["task_return_sum"], axis=0) / jnp.maximum(count, 1), jnp.nan
        )
        out["task_episodes"] = count
    out.update({name: jnp.mean(value) for name, value in metrics.items()})
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """The pure pieces of a training run (see the module docstring). Calling a Trainer is
    ``train(key)``, so ``jax.jit(jax.vmap(make_train(config)))(keys)`` runs many seeds.
    ``network`` is the agent's Q-network when the loop built the agent from the config
    (None for an agent passed in). ``config`` has its storage settings resolved (no
    ``"auto"``); ``storage`` says what each is and why (setting ->
    :class:`memjax.train.storage.StorageChoice`)."""

    config: TrainConfig
    env: Any
    env_params: Any
    agent: Agent
    buffer: Any
    network: nn.Module | None = None
    storage: dict = dataclasses.field(default_factory=dict)

    def __call__(self, key):
        return self.train(key)

    @property
    def __name__(self):  # for jax.jit / vmap naming
        return "train"

    # -- static facts ------------------------------------------------------------------------
    @functools.cached_property
    def num_actions(self) -> int:
        return envs.num_actions(self.env, self.env_params)

    @functools.cached_property
    def num_tasks(self) -> int:
        """The tasks of a :class:`memjax.envs.MultiTask` environment (0 for another): the
        chunk metrics then add ``task_episode_return`` and ``task_episodes`` [num_tasks], and
        evaluation episode ``i`` plays task ``i % num_tasks``."""
        return self.env.num_tasks if isinstance(self.env, envs.MultiTask) else 0

    @functools.cached_property
    def _vector_env(self):
        return (
            jax.vmap(self.env.reset, in_axes=(0, None)),
            jax.vmap(self.env.step, in_axes=(0, 0, 0, None)),
        )

    @functools.cached_property
    def _shapes(self):
        """ShapeDtypeStructs of the agent's state, carry, extras and learn metrics."""
        obs, _ = jax.eval_shape(lambda k: self.env.reset(k, self.env_params), jax.random.key(0))
        state = jax.eval_shape(self.agent.init, jax.random.key(0), obs)
        carry = jax.eval_shape(lambda: self.agent.initial_carry(self.config.num_envs))
        many = jax.ShapeDtypeStruct((self.config.num_envs, *obs.shape), obs.dtype)
        _, _, extras = jax.eval_shape(
            lambda s, c, o: self.agent.act(s, c, o, jax.random.key(0), 0, False), state, carry, many
        )
        return (
            state,
            carry,
            {name: jax.ShapeDtypeStruct(x.shape[1:], x.dtype) for name, x in extras.items()},
        )

    @functools.cached_property
    def example(self) -> dict:
        """ONE replay item as the loop adds it (see :func:`example_transition`)."""
        return example_transition(
            self.env, self.env_params, self._shapes[2], stores_episode_starts(self.config)
        )

    @functools.cached_property
    def _acts_in_warmup(self) -> bool:
        """The warm-up calls ``act`` (and ignores its actions) only for agents with a carry
        or extras to keep up to date."""
        _, carry, extras = self._shapes
        return bool(jax.tree.leaves(carry)) or bool(extras)

    # -- init ------------------------------------------------------------------------------
    def init(self, key) -> TrainState:
        cfg = self.config
        k_agent, k_env, k_run = jax.random.split(key, 3)
        reset, _ = self._vector_env
        obs, env_state = reset(jax.random.split(k_env, cfg.num_envs), self.env_params)
        return TrainState(
            agent=self.agent.init(k_agent, obs[0]),
            buffer=self.buffer.init(self.example),
            env_state=env_state,
            obs=obs,
            carry=self.agent.initial_carry(cfg.num_envs),
            first=jnp.ones((cfg.num_envs,), bool),
            key=k_run,
            step=jnp.zeros((), jnp.int32),
            ep_return=jnp.zeros((cfg.num_envs,), jnp.float32),
        )

    # -- acting + inserting ------------------------------------------------------------------
    def _act(self, state: TrainState, key, random_actions: bool):
        """(actions int32 [E], next carry, extras) for ``state.obs``."""
        cfg = self.config
        carry = reset_where(state.first, state.carry, self.agent.initial_carry(cfg.num_envs))
        if random_actions:
            actions = jax.random.randint(key, (cfg.num_envs,), 0, self.num_actions, dtype=jnp.int32)
            if not self._acts_in_warmup:
                return actions, carry, {}
            _, carry, extras = self.agent.act(
                state.agent, carry, state.obs, key, state.step * cfg.num_envs, False
            )
            return actions, carry, extras
        return self.agent.act(state.agent, carry, state.obs, key, state.step * cfg.num_envs, False)

    def env_step(self, state: TrainState, random_actions: bool = False):
        """One vector step: act, step the environments, insert the step into replay.

        Args:
          state: one seed's :class:`TrainState`.
          random_actions: act uniformly at random (the warm-up), else with the agent.

        Returns:
          ``(state, (item, done, finished_return))``: the item inserted (``next_obs`` is
          ``info["final_observation"]``, the observation before any auto-reset;
          ``terminated`` excludes truncation), bool ``[num_envs]`` where episodes ended, and
          float32 ``[num_envs]`` their returns (0 elsewhere).
        """
        key, k_act, k_env = jax.random.split(state.key, 3)
        actions, carry, extras = self._act(state, k_act, random_actions)
        _, step = self._vector_env
        obs, env_state, reward, terminated, truncated, info = step(
            jax.random.split(k_env, self.config.num_envs), state.env_state, actions, self.env_params
        )
        item = {
            "obs": state.obs,
            "action": actions.astype(jnp.int32),
            "reward": reward.astype(jnp.float32),
            "next_obs": info["final_observation"],
            "terminated": terminated.astype(jnp.float32),
            **extras,
        }
        if "first" in self.example:
            item["first"] = state.first
        done = jnp.logical_or(terminated, truncated)
        ep_return = state.ep_return + item["reward"]
        state = state.replace(
            buffer=self.buffer.add(state.buffer, item),
            env_state=env_state,
            obs=obs,
            carry=carry,
            first=done,
            key=key,
            step=state.step + 1,
            ep_return=jnp.where(done, 0.0, ep_return),
        )
        return state, (item, done, jnp.where(done, ep_return, 0.0))

    def _step_stats(self, state: TrainState, random_actions: bool = False):
        """:meth:`env_step` and its episode statistics (per task for a MultiTask env)."""
        tasks = state.env_state.task if self.num_tasks else None
        state, (_, done, finished) = self.env_step(state, random_actions)
        return state, _episode_stats(done, finished, tasks, self.num_tasks)

    # -- learning --------------------------------------------------------------------------
    @functools.cached_property
    def _beta(self) -> Callable:
        return beta_schedule(self.config)

    def learner_step(self, state: TrainState):
        """Sample a batch, let the agent learn from it, and hand the priorities it returns
        to ``buffer.update`` (a uniform buffer ignores them).

        Args:
          state: one seed's :class:`TrainState`.

        Returns:
          ``(state, metrics)``: the new state and the agent's dict of scalar metrics.
        """
        key, k_sample = jax.random.split(state.key)
        beta = self._beta(state.step * self.config.num_envs)
        sample = self.buffer.sample(state.buffer, k_sample, self.config.batch_size, beta=beta)
        agent_state, priorities, metrics = self.agent.learn(
            state.agent, sample, jax.random.fold_in(k_sample, 1)
        )
        buffer_state = self.buffer.update(state.buffer, sample.indices, priorities)
        return state.replace(agent=agent_state, buffer=buffer_state, key=key), metrics

    # -- chunks ----------------------------------------------------------------------------
    def collect(self, state: TrainState):
        """Warm-up: ``learning_starts`` env steps of uniform-random actions, no learning."""

        def body(s, _):
            return self._step_stats(s, random_actions=True)

        state, stats = jax.lax.scan(body, state, None, length=self.config.warmup_vec_steps)
        schedule = self.config.rate_schedule
        if schedule and schedule[0]:  # the limiter's backlog (a static count, not unrolled)
            state = jax.lax.fori_loop(0, schedule[0], lambda _, s: self.learner_step(s)[0], state)
        no_metrics = {name: jnp.full((1,), jnp.nan) for name in self._metric_names}
        return state, _summarise(stats, no_metrics)

    @functools.cached_property
    def _metric_names(self) -> tuple:
        state = jax.eval_shape(self.init, jax.random.key(0))
        return tuple(jax.eval_shape(self.learner_step, state)[1])

    def _train_iteration(self, state: TrainState, _):
        if self.config.samples_per_insert is not None:
            return self._rate_iteration(state)
        stats = []
        for _ in range(self.config.train_every):  # static, small
            state, step_stats = self._step_stats(state)
            stats.append(step_stats)
        state, metrics = self.learner_step(state)
        return state, ({name: sum(s[name] for s in stats) for name in stats[0]}, metrics)

    def _rate_iteration(self, state: TrainState):
        """One period of the rate limiter's schedule: after each vector step the learner steps
        it allows (the same for every seed, so a static pattern fed to the scan: the inner
        loop's trip count is not per seed). Metrics: the mean over the period's updates."""
        pattern = self.config.rate_schedule[1]
        metric_shapes = jax.eval_shape(self.learner_step, state)[1]
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), metric_shapes)

        def vector_step(carry, count):
            state, sums = carry
            state, step_stats = self._step_stats(state)

            def learn(_, inner):
                s, m = inner
                s, metrics = self.learner_step(s)
                return s, jax.tree.map(jnp.add, m, metrics)

            state, sums = jax.lax.fori_loop(0, count, learn, (state, sums))
            return (state, sums), step_stats

        (state, sums), stats = jax.lax.scan(
            vector_step, (state, zeros), jnp.asarray(pattern, jnp.int32)
        )
        metrics = jax.tree.map(lambda x: x / sum(pattern), sums)
        return state, ({name: jnp.sum(value, axis=0) for name, value in stats.items()}, metrics)

    def _make_chunk(self, iterations: int) -> Callable:
        def chunk(state: TrainState):
            state, (stats, metrics) = jax.lax.scan(
                self._train_iteration, state, None, length=iterations
            )
            return state, _summarise(stats, metrics)

        return chunk

    @functools.cached_property
    def chunk(self) -> Callable:
        """``chunk(state) -> (state, metrics)``: ``chunk_iters`` learner steps."""
        return self._make_chunk(self.config.chunk_iters)

    @functools.cached_property
    def final_chunk(self) -> Callable | None:
        """The remainder chunk, or None when ``chunk_steps`` divides the training."""
        remainder = self.config.remainder_iters
        return self._make_chunk(remainder) if remainder else None

    # -- evaluation and the whole run --------------------------------------------------------
    def evaluate(self, agent_state, key) -> Episodes:
        """``eval_episodes`` episodes of the greedy policy (a random action with probability
        ``eval_epsilon``), one per parallel environment, each cut at ``eval_max_steps``:
        their returns float32 [E] and whether each finished, bool [E]. With a MultiTask
        environment episode ``i`` plays task ``i % num_tasks``."""
        cfg = self.config

        def policy(carry, obs, policy_key):
            actions, carry, _ = self.agent.act(agent_state, carry, obs, policy_key, 0, True)
            return actions, carry

        def run(env_params, key, episodes):
            return evaluate_policy(
                policy,
                self.agent.initial_carry(episodes),
                self.env,
                env_params,
                key,
                episodes,
                self.num_actions,
                epsilon=cfg.eval_epsilon,
                max_steps=cfg.eval_max_steps,
            )

        if not self.num_tasks:
            return run(self.env_params, key, cfg.eval_episodes)
        per_task = -(-cfg.eval_episodes // self.num_tasks)
        tasks = jnp.arange(self.num_tasks)
        done = jax.vmap(lambda t, k: run(self.env.for_task(self.env_params, t), k, per_task))(
            tasks, jax.random.split(key, self.num_tasks)
        )  # [num_tasks, per_task]
        return jax.tree.map(lambda x: x.T.reshape(-1)[: cfg.eval_episodes], done)

    def train(self, key):
        """The whole run for one seed.

        Args:
          key: the seed's PRNG key.

        Returns:
          ``(state, metrics)`` with ``metrics["warmup"]`` (dict of scalars),
          ``metrics["train"]`` (dict of ``[num_chunks(+1)]`` arrays, one entry per chunk),
          ``metrics["eval_return"]`` (float32 ``[eval_episodes]``, greedy returns of the final
          policy) and ``metrics["eval_finished"]`` (bool ``[eval_episodes]``); with a MultiTask
          environment also ``metrics["eval_task"]`` (int32 ``[eval_episodes]``, each episode's
          task) and per-task chunk metrics (see :attr:`num_tasks`).
        """
        state, warmup = self.collect(self.init(key))
        chunk = self.chunk
        state, per_chunk = jax.lax.scan(
            lambda s, _: chunk(s), state, None, length=self.config.num_chunks
        )
        if self.final_chunk is not None:
            state, last = self.final_chunk(state)
            per_chunk = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), per_chunk, last)
        key, k_eval = jax.random.split(state.key)
        state = state.replace(key=key)
        episodes = self.evaluate(state.agent, k_eval)
        metrics = {
            "warmup": warmup,
            "train": per_chunk,
            "eval_return": episodes.returns,
            "eval_finished": episodes.finished,
        }
        if self.num_tasks:
            metrics["eval_task"] = jnp.arange(self.config.eval_episodes) % self.num_tasks
        return state, metrics


def make_train(
    config: TrainConfig = TrainConfig(),
    env=None,
    env_params=None,
    buffer=None,
    agent: Agent | None = None,
) -> Trainer:
    """Build the pure training functions for ``config``.

    Args:
      config: the run's settings (validated here).
      env: optionally a gymnax ``Environment`` instance to use instead of
        ``memjax.envs.make(config.env)``.
      env_params: its parameters (default: the environment's ``default_params``).
      buffer: optionally any replay buffer with the ``memjax.replay.ReplayBuffer`` contract
        (init/add/sample/update/can_sample/memory) instead of the one ``config`` describes;
        its items are ``trainer.example`` (the loop benchmark plugs in other libraries'
        buffers this way).
      agent: optionally any :class:`memjax.agents.Agent` instead of the one ``config.agent``
        names; ``config`` still sets the loop (environments, steps, batch size, replay).

    Returns:
      A :class:`Trainer`: ``trainer.train(key)`` runs one seed, ``jax.vmap`` it over keys.
      ``trainer.config`` is ``config`` with the storage left at ``"auto"`` chosen for the
      environment (:func:`memjax.train.storage.resolve_storage`; a calibration rollout of
      the random policy, once per environment made by name).

    Raises:
      ValueError: invalid settings, an unknown environment, or a continuous action space.
    """
    config.validate()
    named = env is None
    env, env_params = make_env_for(config, env, env_params)
    config, storage = resolve_storage(config, env, env_params, named=named)
    config.validate()  # the resolved layout's own checks
    network = None
    if agent is None:
        network = make_network_for(config, env, env_params)
        agent = make_agent(config, network, envs.num_actions(env, env_params))
    if buffer is None:
        buffer = make_buffer(config, make_codecs(config, env, env_params))
    return Trainer(
        config=config,
        env=env,
        env_params=env_params,
        agent=agent,
        buffer=buffer,
        network=network,
        storage=storage,
    )


__all__ = ["TrainState", "Trainer", "make_train"]
