"""The DQN loop as it was before the Agent interface (memjax commit b5f5dd2), frozen here
only so that experiments/bench_loop.py can time the new loop against it in one process.

The agent helpers it used (TD loss, schedules, target updates) are inlined below as they
were; environment, buffer and codecs come from today's memjax so both loops run the same
replay code. Not part of the library; do not import it elsewhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from memjax.agents import epsilon_greedy, make_network
from memjax.train import (TrainConfig, example_transition, make_buffer, make_env_for,
                          make_optimizer)


def _linear_schedule(start, end, steps, begin=0):
    def schedule(count):
        frac = jnp.clip((jnp.asarray(count, jnp.float32) - begin) / steps, 0.0, 1.0)
        return jnp.asarray(start + frac * (end - start), jnp.float32)
    return schedule


def _periodic_update(target, online, before, after, period, tau=1.0):
    do = (after // period) > (before // period)
    moved = online if tau == 1.0 else jax.tree.map(
        lambda t, o: (tau * o + (1.0 - tau) * t).astype(t.dtype), target, online)
    return jax.tree.map(lambda t, o: jnp.where(do, o, t), target, moved)


def _td_loss(params, target_params, apply_fn, batch, weights, *, gamma, double, loss,
             huber_delta):
    q_tm1 = apply_fn(params, batch["obs"])
    q_t_target = apply_fn(target_params, batch["next_obs"])
    discount_t = gamma * (1.0 - batch["terminated"].astype(jnp.float32))
    r_t = batch["reward"].astype(jnp.float32)
    a_tm1 = batch["action"].astype(jnp.int32)
    if double:
        a_star = jnp.argmax(apply_fn(params, batch["next_obs"]), axis=-1)
        v = jnp.take_along_axis(q_t_target, a_star[:, None], axis=-1)[:, 0]
    else:
        v = jnp.max(q_t_target, axis=-1)
    target = jax.lax.stop_gradient(r_t + discount_t * v)
    td = target - jnp.take_along_axis(q_tm1, a_tm1[:, None], axis=-1)[:, 0]
    if loss == "huber":
        ax = jnp.abs(td)
        quad = jnp.minimum(ax, huber_delta)
        per_item = 0.5 * quad**2 + huber_delta * (ax - quad)
    else:
        per_item = 0.5 * jnp.square(td)
    if weights is not None:
        per_item = weights * per_item
    return jnp.mean(per_item), (jax.lax.stop_gradient(jnp.abs(td)), jnp.mean(q_tm1))


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
    env, env_params = make_env_for(config, env, env_params)
    if config.n_step != 1 or config.agent != "dqn":
        raise ValueError("the legacy loop is 1-step DQN only")

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
    network = make_network(kind, num_actions, config.hidden)
    apply_fn = network.apply

    if buffer is None:
        from memjax.train.storage import make_codecs

        buffer = make_buffer(config, make_codecs(config, env, env_params))
    per = config.replay == "prioritized"

    tx = make_optimizer(config)

    eps_fn = _linear_schedule(config.eps_start, config.eps_end, config.eps_decay_steps)
    beta_fn = _linear_schedule(config.beta_start, config.beta_end,
                               max(config.train_iters * config.train_every * num_envs, 1),
                               begin=config.warmup_vec_steps * num_envs)

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
            actions = epsilon_greedy(k_act, q, eps_fn(state.step * num_envs))
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
        return _td_loss(params, target_params, apply_fn, batch, weights,
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
        target_params = _periodic_update(state.target_params, params, before, now,
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
            actions = epsilon_greedy(k_act, apply_fn(params, obs), config.eval_epsilon)
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
