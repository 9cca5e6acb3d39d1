"""The fused DQN training loop on gymnax.

One XLA program per *chunk* of training steps vectorised gymnax environments, inserts into the
replay buffer, samples (uniform or prioritized), updates the Q-network and the target network;
everything is a pure function of a :class:`TrainState`, so it vmaps over seeds::

    import jax, memjax as mj
    trainer = mj.train.make_train(mj.train.TrainConfig())   # CartPole-v1 defaults
    keys = jax.random.split(jax.random.key(0), 8)
    state, metrics = jax.jit(jax.vmap(trainer))(keys)       # == trainer.train

The pieces, all pure and vmappable (``state`` is one seed's state; vmap adds the seed axis):

* ``trainer.init(key) -> TrainState``
* ``trainer.collect(state) -> (state, metrics)``: the warm-up, ``learning_starts`` env steps of
  uniform-random actions inserted into the buffer, no learning.
* ``trainer.chunk(state) -> (state, metrics)``: ``chunk_steps`` env steps of acting + inserting,
  with one gradient update every ``train_every`` vector steps.
* ``trainer.final_chunk`` (or None): the same for the remainder when ``chunk_steps`` does not
  divide the training steps.
* ``trainer.evaluate(params, key) -> float32 [eval_episodes]``: greedy episode returns.
* ``trainer.train(key) -> (state, metrics)``: the whole run.

The learning schedule is static: warm-up chunks never update, training chunks always do, so
there is no ``lax.cond`` on a per-seed predicate (under vmap it would run both branches).

:func:`run` is the host driver behind ``memjax train``: it compiles the chunks ahead of time
(reporting compile time separately), loops over them with the state donated, shows a tqdm bar,
runs greedy evaluation between chunks and writes ``returns.csv``, ``returns.json``,
``curve.png`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from memjax import agents

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

REPLAY_KINDS = ("uniform", "prioritized")
NETWORK_KINDS = ("auto", "mlp", "conv")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """DQN hyperparameters. Defaults solve CartPole-v1: PureJaxRL's DQN settings (10 envs,
    buffer 10k, batch 128, lr 2.5e-4, epsilon 1 -> 0.05 over 250k steps, learning starts at
    10k, one update per vector step, 5e5 steps, gamma 0.99, plain DQN with a squared TD
    loss) with two changes: the learning rate decays linearly to 0, and the target network
    is copied every 250 env steps (25 updates) instead of 500.

    Tuning record (mean final greedy return, 10 episodes per seed): Huber loss diverged
    (Q-values in the thousands). With copies every 500 env steps: 463-500 on 8-seed sets,
    with Double DQN + clipping at 10 + lr decay 463-493; lr 1e-3: 434 (16 seeds); slower
    targets (every 1000 env steps, Polyak tau=0.01 per update) 319 and 291. Copies every 250
    env steps with lr decay: Double DQN + clipping 468 (16 seeds), plain DQN 500 (16 seeds).
    Step counts (``total_steps``, ``learning_starts``, ``eps_decay_steps``,
    ``target_update_every``, ``chunk_steps``) are in *environment* steps, i.e. vector steps
    times ``num_envs``, per seed.
    """

    env: str = "CartPole-v1"
    num_envs: int = 10
    total_steps: int = 500_000
    # replay
    replay: str = "uniform"           # "uniform" | "prioritized"
    buffer_capacity: int = 10_000
    alpha: float = 0.6                # PER priority exponent
    beta_start: float = 0.4           # PER importance exponent, annealed linearly to beta_end
    beta_end: float = 1.0
    priority_eps: float = 1e-6        # added to |TD| so no item gets priority 0
    batch_size: int = 128
    # learner
    lr: float = 2.5e-4
    lr_end: Optional[float] = 0.0     # linear decay to lr_end over training; None: constant
    adam_eps: float = 1e-8
    max_grad_norm: Optional[float] = None  # global-norm clip; None: no clipping
    gamma: float = 0.99
    double_dqn: bool = False
    loss: str = "mse"                 # "mse" (0.5 td^2) | "huber" (diverges on CartPole)
    huber_delta: float = 1.0
    target_update_every: int = 250    # env steps between target updates
    tau: float = 1.0                  # 1: hard copy; < 1: one Polyak step per target update
    network: str = "auto"             # "auto" (conv for image obs) | "mlp" | "conv"
    hidden: Sequence[int] = (120, 84)
    # acting
    eps_start: float = 1.0
    eps_end: float = 0.05
    eps_decay_steps: int = 250_000
    learning_starts: int = 10_000     # env steps of random-action warm-up before any update
    train_every: int = 1              # vector steps per gradient update
    # host loop / evaluation
    chunk_steps: int = 10_000         # env steps per compiled chunk; evaluation after each
    eval_episodes: int = 10
    eval_epsilon: float = 0.0

    # derived schedule (vector steps) ----------------------------------------------------------
    @property
    def warmup_vec_steps(self) -> int:
        return -(-self.learning_starts // self.num_envs)

    @property
    def total_vec_steps(self) -> int:
        return self.total_steps // self.num_envs

    @property
    def chunk_iters(self) -> int:
        """Updates (= iterations of ``train_every`` vector steps) per training chunk."""
        return max(1, self.chunk_steps // (self.num_envs * self.train_every))

    @property
    def train_iters(self) -> int:
        """Total gradient updates in the run."""
        return max(0, self.total_vec_steps - self.warmup_vec_steps) // self.train_every

    @property
    def num_chunks(self) -> int:
        return self.train_iters // self.chunk_iters

    @property
    def remainder_iters(self) -> int:
        return self.train_iters - self.num_chunks * self.chunk_iters

    @property
    def steps_done(self) -> int:
        """Env steps per seed actually run (``total_steps`` rounded to whole vector steps and
        whole ``train_every`` groups)."""
        return (self.warmup_vec_steps + self.train_iters * self.train_every) * self.num_envs

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` with a clear message for invalid settings; return self."""
        positive = ("num_envs", "total_steps", "buffer_capacity", "batch_size", "train_every",
                    "target_update_every", "eps_decay_steps", "chunk_steps", "eval_episodes")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(f"learning_starts must be an integer >= 0, got {self.learning_starts!r}")
        if self.replay not in REPLAY_KINDS:
            raise ValueError(f"replay must be one of {REPLAY_KINDS}, got {self.replay!r}")
        if self.network not in NETWORK_KINDS:
            raise ValueError(f"network must be one of {NETWORK_KINDS}, got {self.network!r}")
        if self.loss not in agents.losses.LOSS_KINDS:
            raise ValueError(f"loss must be one of {agents.losses.LOSS_KINDS}, got {self.loss!r}")
        if self.batch_size > self.buffer_capacity:
            raise ValueError(f"batch_size ({self.batch_size}) is larger than the buffer "
                             f"capacity ({self.buffer_capacity})")
        if self.num_envs > self.buffer_capacity:
            raise ValueError(f"num_envs ({self.num_envs}) is larger than the buffer capacity "
                             f"({self.buffer_capacity}): one vector step would overwrite itself")
        if self.warmup_vec_steps * self.num_envs < self.batch_size:
            raise ValueError(f"learning_starts ({self.learning_starts}) must be at least "
                             f"batch_size ({self.batch_size}) so the first sample is full")
        if self.train_iters <= 0:
            raise ValueError(f"total_steps ({self.total_steps}) leaves no training after "
                             f"learning_starts ({self.learning_starts}) with num_envs="
                             f"{self.num_envs} and train_every={self.train_every}")
        for name in ("lr", "adam_eps", "huber_delta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.lr_end is not None and self.lr_end < 0:
            raise ValueError(f"lr_end must be >= 0, got {self.lr_end!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")
        for name in ("eps_start", "eps_end", "eval_epsilon"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.alpha < 0 or self.beta_start < 0 or self.beta_end < 0:
            raise ValueError("alpha, beta_start and beta_end must be >= 0")
        if not self.priority_eps > 0:
            raise ValueError(f"priority_eps must be > 0, got {self.priority_eps!r}")
        if any((not isinstance(h, int)) or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be positive layer widths, got {tuple(self.hidden)!r}")
        return self


def make_env(name: str):
    """``gymnax.make(name)`` with a clear error for unknown or non-discrete environments.
    Returns ``(env, env_params)``."""
    if name not in gymnax.registered_envs:
        known = ", ".join(e for e in gymnax.registered_envs)
        raise ValueError(f"unknown environment {name!r}; gymnax knows: {known}")
    env, env_params = gymnax.make(name)
    _check_discrete(env, env_params, name)
    return env, env_params


def _check_discrete(env, env_params, name):
    space = env.action_space(env_params)
    if not isinstance(space, gymnax.environments.spaces.Discrete):
        raise ValueError(f"environment {name!r} has a {type(space).__name__} action space; "
                         "DQN needs discrete actions")


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------


@struct.dataclass
class TrainState:
    """Everything one seed's training run carries (a pytree of arrays only).

    params, target_params: Q-network parameters; opt_state: optax state; buffer: replay state;
    env_state / obs: ``num_envs`` environments (obs ``[num_envs, *obs_shape]``);
    key: PRNG key; step: int32 vector steps taken; updates: int32 gradient updates done;
    ep_return: float32 ``[num_envs]`` return of the running episodes.
    """

    params: Any
    target_params: Any
    opt_state: Any
    buffer: Any
    env_state: Any
    obs: Any
    key: jax.Array
    step: jax.Array
    updates: jax.Array
    ep_return: jax.Array


def _tree_bytes(tree) -> int:
    return int(sum(np.dtype(x.dtype).itemsize * math.prod(x.shape)
                   for x in jax.tree.leaves(tree)))


# ---------------------------------------------------------------------------------------------
# make_train
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """The pure pieces of a training run (see the module docstring). Calling a Trainer is
    ``train(key)``, so ``jax.jit(jax.vmap(make_train(config)))(keys)`` runs many seeds."""

    config: TrainConfig
    env: Any
    env_params: Any
    network: nn.Module
    buffer: Any
    optimizer: optax.GradientTransformation
    init: Callable
    env_step: Callable
    collect: Callable
    chunk: Callable
    final_chunk: Optional[Callable]
    learner_step: Callable
    evaluate: Callable
    train: Callable

    def __call__(self, key):
        return self.train(key)

    @property
    def __name__(self):  # for jax.jit / vmap naming
        return "train"


def example_transition(env, env_params) -> dict:
    """One transition (no batch axis) as stored in the buffer:
    ``{"obs", "action" int32 [], "reward" float32 [], "next_obs", "terminated" float32 []}``
    with obs/next_obs of the environment's observation shape and dtype."""
    obs, _ = jax.eval_shape(lambda k: env.reset(k, env_params), jax.random.key(0))
    return {
        "obs": jnp.zeros(obs.shape, obs.dtype),
        "action": jnp.zeros((), jnp.int32),
        "reward": jnp.zeros((), jnp.float32),
        "next_obs": jnp.zeros(obs.shape, obs.dtype),
        "terminated": jnp.zeros((), jnp.float32),
    }


def make_buffer(config: TrainConfig):
    """The replay buffer ``config`` asks for (``memjax.replay.uniform`` or ``prioritized``)."""
    from memjax import replay as mj_replay

    if config.replay == "uniform":
        return mj_replay.uniform(capacity=config.buffer_capacity)
    return mj_replay.prioritized(capacity=config.buffer_capacity, alpha=config.alpha)


def make_train(config: TrainConfig = TrainConfig(), env=None, env_params=None,
               buffer=None) -> Trainer:
    """Build the pure training functions for ``config``.

    ``env``/``env_params``: optionally a gymnax ``Environment`` instance (and params) to use
    instead of ``gymnax.make(config.env)``; tests use a tiny custom environment this way.
    ``buffer``: optionally any replay buffer with the ``memjax.replay.ReplayBuffer`` contract
    (init/add/sample/update/can_sample/memory) to use instead of the one ``config.replay``
    names; ``config.replay == "prioritized"`` still decides whether importance weights and
    priority updates are used. The loop benchmark plugs other libraries' buffers in here.
    """
    config.validate()
    if env is None:
        env, default_params = make_env(config.env)
        env_params = default_params if env_params is None else env_params
    else:
        env_params = env.default_params if env_params is None else env_params
        _check_discrete(env, env_params, getattr(env, "name", type(env).__name__))

    num_envs = config.num_envs
    num_actions = int(env.action_space(env_params).n)

    # probe the observation structure once
    obs0, _ = jax.eval_shape(lambda k: env.reset(k, env_params), jax.random.key(0))
    obs_shape = tuple(obs0.shape)
    kind = config.network
    if kind == "auto":
        kind = "conv" if len(obs_shape) == 3 else "mlp"
    if kind == "conv" and len(obs_shape) != 3:
        raise ValueError(f"network 'conv' needs image observations [H, W, C]; "
                         f"{config.env} observations have shape {obs_shape}: use 'mlp'")
    network = agents.make_network(kind, num_actions, config.hidden)
    apply_fn = network.apply

    buffer = make_buffer(config) if buffer is None else buffer
    per = config.replay == "prioritized"

    lr = config.lr
    if config.lr_end is not None:
        lr = optax.linear_schedule(config.lr, config.lr_end, max(config.train_iters, 1))
    tx = optax.adam(lr, eps=config.adam_eps)
    if config.max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)

    eps_fn = agents.epsilon_schedule(config.eps_start, config.eps_end, config.eps_decay_steps)
    beta_fn = agents.beta_schedule(config.beta_start, config.beta_end,
                                   begin=config.warmup_vec_steps * num_envs,
                                   steps=config.train_iters * config.train_every * num_envs)

    example = example_transition(env, env_params)

    vreset = jax.vmap(env.reset, in_axes=(0, None))
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    # -- init ------------------------------------------------------------------------------
    def init(key) -> TrainState:
        k_net, k_env, k_run = jax.random.split(key, 3)
        obs, env_state = vreset(jax.random.split(k_env, num_envs), env_params)
        params = network.init(k_net, obs)
        return TrainState(
            params=params,
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=tx.init(params),
            buffer=buffer.init(example),
            env_state=env_state,
            obs=obs,
            key=k_run,
            step=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
            ep_return=jnp.zeros((num_envs,), jnp.float32),
        )

    # -- acting + inserting ---------------------------------------------------------------
    def env_step(state: TrainState, random_actions: bool = False):
        """One vector step. Returns ``(state, (transition, done, finished_return))`` where the
        transition is what was inserted: ``next_obs`` is ``info["final_observation"]`` (the
        observation before any auto-reset) and ``terminated`` excludes truncation."""
        key, k_act, k_env = jax.random.split(state.key, 3)
        if random_actions:
            actions = jax.random.randint(k_act, (num_envs,), 0, num_actions, dtype=jnp.int32)
        else:
            q = apply_fn(state.params, state.obs)
            actions = agents.epsilon_greedy(k_act, q, eps_fn(state.step * num_envs))
        obs, env_state, reward, terminated, truncated, info = vstep(
            jax.random.split(k_env, num_envs), state.env_state, actions, env_params)
        transition = {
            "obs": state.obs,
            "action": actions.astype(jnp.int32),
            "reward": reward.astype(jnp.float32),
            "next_obs": info["final_observation"],
            "terminated": terminated.astype(jnp.float32),
        }
        done = jnp.logical_or(terminated, truncated)
        ep_return = state.ep_return + transition["reward"]
        finished = jnp.where(done, ep_return, 0.0)
        state = state.replace(
            buffer=buffer.add(state.buffer, transition),
            env_state=env_state,
            obs=obs,
            key=key,
            step=state.step + 1,
            ep_return=jnp.where(done, 0.0, ep_return),
        )
        return state, (transition, done, finished)

    # -- learning --------------------------------------------------------------------------
    def loss_fn(params, target_params, batch, weights):
        return agents.td_loss(params, target_params, apply_fn, batch, weights,
                              gamma=config.gamma, double=config.double_dqn, loss=config.loss,
                              huber_delta=config.huber_delta)

    def learner_step(state: TrainState, env_steps_before=None):
        """One gradient update from a replay sample, the PER priority update and (every
        ``target_update_every`` env steps, counted from ``env_steps_before`` to now) the
        target update. Returns ``(state, {"loss", "q"})``."""
        key, k_sample = jax.random.split(state.key)
        beta = beta_fn(state.step * num_envs)
        sample = buffer.sample(state.buffer, k_sample, config.batch_size, beta=beta)
        weights = sample.weights if per else None
        (loss, (abs_td, mean_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, sample.items, weights)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        buf_state = state.buffer
        if per:
            buf_state = buffer.update(buf_state, sample.indices, abs_td + config.priority_eps)
        now = state.step * num_envs
        before = now - num_envs * config.train_every if env_steps_before is None \
            else env_steps_before
        target_params = agents.periodic_update(state.target_params, params, before, now,
                                               config.target_update_every, config.tau)
        state = state.replace(params=params, target_params=target_params, opt_state=opt_state,
                              buffer=buf_state, key=key, updates=state.updates + 1)
        return state, {"loss": loss, "q": mean_q}

    def _episode_stats(done, finished):
        return {"return_sum": jnp.sum(finished), "episodes": jnp.sum(done).astype(jnp.int32)}

    def _summarise(stats, extra=None):
        ret_sum = jnp.sum(stats["return_sum"])
        eps_n = jnp.sum(stats["episodes"])
        out = {
            "episode_return": jnp.where(eps_n > 0, ret_sum / jnp.maximum(eps_n, 1), jnp.nan),
            "episodes": eps_n,
        }
        if extra is not None:
            out.update({k: jnp.mean(v) for k, v in extra.items()})
        return out

    def collect(state: TrainState):
        """Warm-up: ``learning_starts`` env steps of uniform-random actions, no learning."""
        def body(s, _):
            s, (_, done, finished) = env_step(s, random_actions=True)
            return s, _episode_stats(done, finished)

        state, stats = jax.lax.scan(body, state, None, length=config.warmup_vec_steps)
        return state, _summarise(stats, {"loss": jnp.full((1,), jnp.nan),
                                         "q": jnp.full((1,), jnp.nan)})

    def _train_iter(s, _):
        before = s.step * num_envs
        stats = []
        for _i in range(config.train_every):  # static, small
            s, (_, done, finished) = env_step(s)
            stats.append(_episode_stats(done, finished))
        s, lm = learner_step(s, before)
        stats = jax.tree.map(lambda *x: sum(x), *stats)
        return s, {**stats, **lm}

    def _make_chunk(iters: int):
        def chunk(state: TrainState):
            state, out = jax.lax.scan(_train_iter, state, None, length=iters)
            stats = {"return_sum": out["return_sum"], "episodes": out["episodes"]}
            return state, _summarise(stats, {"loss": out["loss"], "q": out["q"]})
        return chunk

    chunk = _make_chunk(config.chunk_iters)
    final_chunk = _make_chunk(config.remainder_iters) if config.remainder_iters else None

    # -- evaluation ------------------------------------------------------------------------
    max_eval_steps = int(getattr(env_params, "max_steps_in_episode", 1000))

    def evaluate(params, key) -> jax.Array:
        """Returns of ``eval_episodes`` episodes with the greedy (``eval_epsilon``) policy, one
        per parallel environment, each cut at ``max_steps_in_episode``. float32 [E]."""
        n = config.eval_episodes
        k_reset, key = jax.random.split(key)
        obs, env_state = vreset(jax.random.split(k_reset, n), env_params)

        def body(carry, _):
            obs, env_state, key, ret, alive = carry
            key, k_act, k_env = jax.random.split(key, 3)
            actions = agents.epsilon_greedy(k_act, apply_fn(params, obs), config.eval_epsilon)
            obs, env_state, reward, term, trunc, _ = vstep(
                jax.random.split(k_env, n), env_state, actions, env_params)
            ret = ret + jnp.where(alive, reward.astype(jnp.float32), 0.0)
            alive = jnp.logical_and(alive, jnp.logical_not(jnp.logical_or(term, trunc)))
            return (obs, env_state, key, ret, alive), None

        carry = (obs, env_state, key, jnp.zeros((n,), jnp.float32), jnp.ones((n,), bool))
        (_, _, _, ret, _), _ = jax.lax.scan(body, carry, None, length=max_eval_steps)
        return ret

    # -- the whole run ---------------------------------------------------------------------
    def train(key):
        """The whole run for one seed. Returns ``(state, metrics)`` with
        ``metrics["warmup"]`` (dict of scalars), ``metrics["train"]`` (dict of
        ``[num_chunks(+1)]`` arrays, one entry per chunk) and ``metrics["eval_return"]``
        (float32 [eval_episodes], greedy returns of the final policy)."""
        state = init(key)
        state, warm = collect(state)
        state, per_chunk = jax.lax.scan(lambda s, _: chunk(s), state, None,
                                        length=config.num_chunks)
        if final_chunk is not None:
            state, last = final_chunk(state)
            per_chunk = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), per_chunk, last)
        key, k_eval = jax.random.split(state.key)
        state = state.replace(key=key)
        return state, {"warmup": warm, "train": per_chunk,
                       "eval_return": evaluate(state.params, k_eval)}

    return Trainer(config=config, env=env, env_params=env_params, network=network,
                   buffer=buffer, optimizer=tx, init=init, env_step=env_step, collect=collect,
                   chunk=chunk, final_chunk=final_chunk, learner_step=learner_step,
                   evaluate=evaluate, train=train)


# ---------------------------------------------------------------------------------------------
# Host driver
# ---------------------------------------------------------------------------------------------


def buffer_bytes_per_transition(trainer: Trainer) -> float:
    """Bytes of one seed's whole replay state (items, sum-tree, counters) divided by its
    capacity, from ``jax.eval_shape`` (nothing is allocated)."""
    state = jax.eval_shape(trainer.init, jax.random.key(0))
    return trainer.buffer.memory(state.buffer).bytes_per_item


def capacity_for_budget(config: TrainConfig, budget_bytes: int, env=None,
                        env_params=None) -> int:
    """The largest replay capacity whose buffer state (one seed, ``config``'s replay kind and
    environment) fits in ``budget_bytes``, measured with ``jax.eval_shape`` (no allocation).
    Raises ``ValueError`` if not even ``batch_size`` transitions fit."""

    if env is None:
        env, default_params = make_env(config.env)
        env_params = default_params if env_params is None else env_params
    elif env_params is None:
        env_params = env.default_params
    example = example_transition(env, env_params)

    def nbytes(capacity: int) -> int:
        buf = make_buffer(dataclasses.replace(config, buffer_capacity=capacity))
        return _tree_bytes(jax.eval_shape(buf.init, example))

    lo = max(config.batch_size, config.num_envs)
    if nbytes(lo) > budget_bytes:
        raise ValueError(f"memory budget of {budget_bytes:,} bytes is too small for a buffer "
                         f"of batch_size={config.batch_size} transitions "
                         f"({nbytes(lo):,} bytes)")
    hi = lo
    while nbytes(hi * 2) <= budget_bytes:
        hi *= 2
        if hi > 2**40:
            break
    lo, hi = hi, hi * 2  # nbytes(lo) fits, nbytes(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if nbytes(mid) <= budget_bytes else (lo, mid)
    return lo


def _aot(fn, *args, donate=False):
    t0 = time.perf_counter()
    jitted = jax.jit(fn, donate_argnums=(0,) if donate else ())
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


def run(config: TrainConfig = TrainConfig(), num_seeds: int = 8, out_dir=None, seed: int = 0,
        progress: bool = True, env=None, env_params=None, log: Callable = print) -> dict:
    """Train ``num_seeds`` independent seeds (vmapped) with the host loop.

    Compiles (AOT) the vmapped warm-up and training chunks with the state donated, runs them
    with a tqdm bar (steps, SPS, latest training and greedy returns), evaluates greedily after
    every chunk, and, when ``out_dir`` is given, writes ``returns.csv``, ``returns.json``,
    ``curve.png`` and ``summary.json`` there. Returns the summary dict (plus ``"curves"``).
    """
    from memjax import results

    if not isinstance(num_seeds, int) or num_seeds <= 0:
        raise ValueError(f"num_seeds must be a positive integer, got {num_seeds!r}")
    trainer = make_train(config, env=env, env_params=env_params)
    cfg = trainer.config
    base = jax.random.key(seed)
    k_train, k_eval = jax.random.split(base)
    keys = jax.random.split(k_train, num_seeds)

    compile_times = {}
    init_c, compile_times["init"] = _aot(jax.vmap(trainer.init), keys)
    state = init_c(keys)
    collect_c, compile_times["collect"] = _aot(jax.vmap(trainer.collect), state, donate=True)
    chunk_c, compile_times["chunk"] = _aot(jax.vmap(trainer.chunk), state, donate=True)
    final_c = None
    if trainer.final_chunk is not None:
        final_c, compile_times["final_chunk"] = _aot(jax.vmap(trainer.final_chunk), state,
                                                     donate=True)
    eval_keys0 = jax.random.split(k_eval, num_seeds)
    eval_c, compile_times["evaluate"] = _aot(jax.vmap(trainer.evaluate), state.params,
                                             eval_keys0)
    compile_seconds = sum(compile_times.values())

    mem = trainer.buffer.memory(state.buffer)  # all seeds; bytes_per_item is per seed
    schedule = [("warmup", collect_c, cfg.warmup_vec_steps * cfg.num_envs)]
    schedule += [("chunk", chunk_c, cfg.chunk_iters * cfg.train_every * cfg.num_envs)] \
        * cfg.num_chunks
    if final_c is not None:
        schedule.append(("final", final_c, cfg.remainder_iters * cfg.train_every * cfg.num_envs))

    steps_axis, train_curve, eval_curve = [], [], []
    losses = []
    train_seconds = eval_seconds = 0.0
    done_steps = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        # the bar counts env steps per seed; sps_all_seeds = steps/s summed over seeds,
        # ret = latest training (epsilon-greedy) return, greedy = latest evaluation return
        bar = tqdm(total=cfg.steps_done, unit="step", desc=f"{cfg.env} x{num_seeds}",
                   dynamic_ncols=True)
    last_eval = float("nan")
    try:
        for i, (name, fn, n_steps) in enumerate(schedule):
            t0 = time.perf_counter()
            state, metrics = fn(state)
            jax.block_until_ready(metrics)
            train_seconds += time.perf_counter() - t0
            done_steps += n_steps
            t0 = time.perf_counter()
            ev = eval_c(state.params, jax.random.split(jax.random.fold_in(k_eval, i), num_seeds))
            ev = np.asarray(jax.device_get(ev))                         # [seeds, episodes]
            eval_seconds += time.perf_counter() - t0
            m = jax.device_get(metrics)
            steps_axis.append(done_steps)
            train_curve.append(np.asarray(m["episode_return"], np.float64))
            eval_curve.append(ev.mean(axis=1))
            losses.append(np.asarray(m["loss"], np.float64))
            last_eval = float(ev.mean())
            if bar is not None:
                bar.update(n_steps)
                sps = done_steps * num_seeds / max(train_seconds, 1e-9)
                bar.set_postfix(sps_all_seeds=f"{sps:,.0f}", ret=f"{np.nanmean(train_curve[-1]):.1f}"
                                if np.isfinite(train_curve[-1]).any() else "nan",
                                greedy=f"{last_eval:.1f}")
    finally:
        if bar is not None:
            bar.close()

    final = eval_curve[-1]
    summary = {
        "env": cfg.env,
        "seeds": num_seeds,
        "steps": int(cfg.steps_done),
        "replay": cfg.replay,
        "buffer_capacity": cfg.buffer_capacity,
        "final_return_mean": float(np.mean(final)),
        "final_return_std": float(np.std(final)),
        "final_return_per_seed": [float(x) for x in final],
        "steps_per_second": cfg.steps_done * num_seeds / train_seconds,
        "steps_per_second_per_seed": cfg.steps_done / train_seconds,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "compile_seconds": compile_seconds,
        "compile_seconds_by_function": compile_times,
        "bytes_per_transition": mem.bytes_per_item,
        "buffer_bytes_per_seed": mem.total_bytes / num_seeds,
        "replay_memory": mem.as_dict(),
        "eval_episodes": cfg.eval_episodes,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "config": results.config_to_dict(cfg),
    }
    curves = {
        "steps": steps_axis,
        "eval_return": np.stack(eval_curve),       # [points, seeds]
        "train_return": np.stack(train_curve),     # [points, seeds]
        "loss": np.stack(losses),
    }
    if out_dir is not None:
        paths = results.write_all(out_dir, summary, curves)
        if log is not None:
            log("wrote " + ", ".join(str(p) for p in paths))
    summary["curves"] = curves
    return summary
