"""The pieces of a run built from a :class:`TrainConfig`: environment, Q-network, optimizer,
agent, replay buffer and the replay item layout."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from memjax import envs, replay
from memjax.agents import Agent, make_dqn, make_network, network_kind
from memjax.train.config import TrainConfig
from memjax.train.storage import make_layout, stores_episode_starts


def make_env_for(config: TrainConfig, env=None, env_params=None):
    """(env, env_params): ``memjax.envs.make(config.env)`` unless given, frame-stacked when
    ``config.frame_stack > 1``."""
    if env is None:
        env, default_params = envs.make(config.env)
        env_params = default_params if env_params is None else env_params
    else:
        env_params = env.default_params if env_params is None else env_params
        envs.check_discrete(env, env_params, getattr(env, "name", type(env).__name__))
    if config.frame_stack > 1:
        env = envs.FrameStack(env, config.frame_stack)
    return env, env_params


def example_transition(env, env_params, extras=None, episode_starts: bool = False) -> dict:
    """One replay item (no batch axis) as the loop adds it: ``{"obs", "action" int32 [],
    "reward" float32 [], "next_obs", "terminated" float32 []}`` with obs/next_obs of the
    environment's observation shape and dtype, plus the agent's ``extras`` (a dict of
    ShapeDtypeStructs or arrays for ONE environment) and, with ``episode_starts``,
    ``"first"`` bool [] (the step's observation starts an episode)."""
    obs, _ = jax.eval_shape(lambda k: env.reset(k, env_params), jax.random.key(0))
    item = {
        "obs": jnp.zeros(obs.shape, obs.dtype),
        "action": jnp.zeros((), jnp.int32),
        "reward": jnp.zeros((), jnp.float32),
        "next_obs": jnp.zeros(obs.shape, obs.dtype),
        "terminated": jnp.zeros((), jnp.float32),
    }
    item.update({name: jnp.zeros(x.shape, x.dtype) for name, x in (extras or {}).items()})
    if episode_starts:
        item["first"] = jnp.zeros((), bool)
    return item


def make_buffer(config: TrainConfig, codecs=None):
    """The replay buffer ``config`` asks for (``memjax.replay.uniform`` or ``prioritized``)
    with its layout and the given ``codecs`` (see :func:`memjax.train.storage.make_codecs`)."""
    layout = make_layout(config)
    if config.replay == "uniform":
        return replay.uniform(config.buffer_capacity, codecs=codecs, layout=layout)
    return replay.prioritized(config.buffer_capacity, alpha=config.alpha, codecs=codecs,
                              layout=layout)


def make_network_for(config: TrainConfig, env, env_params) -> nn.Module:
    """The Q-network for ``config.network`` on ``env``'s observations (see
    :func:`memjax.agents.network_kind` for ``"auto"``)."""
    kind = network_kind(config.network, envs.observation_shape(env, env_params))
    return make_network(kind, envs.num_actions(env, env_params), config.hidden)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam with the learning rate decayed linearly to ``lr_end`` over training (constant
    when ``lr_end`` is None), after a global-norm clip when ``max_grad_norm`` is set."""
    lr = config.lr
    if config.lr_end is not None:
        lr = optax.linear_schedule(config.lr, config.lr_end, max(config.train_iters, 1))
    tx = optax.adam(lr, eps=config.adam_eps)
    if config.max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)
    return tx


def make_agent(config: TrainConfig, network: nn.Module, num_actions: int) -> Agent:
    """The agent ``config.agent`` names, with ``network`` as its Q-network."""
    if config.agent != "dqn":
        raise ValueError(f"unknown agent {config.agent!r}")
    return make_dqn(network, num_actions, make_optimizer(config),
                    epsilon=optax.linear_schedule(config.eps_start, config.eps_end,
                                                  config.eps_decay_steps),
                    gamma=config.gamma, double=config.double_dqn, loss=config.loss,
                    huber_delta=config.huber_delta, target_period=config.target_period,
                    tau=config.tau, priority_eps=config.priority_eps)


def beta_schedule(config: TrainConfig):
    """PER's importance exponent: ``beta_start`` when learning starts, linearly to
    ``beta_end`` at the last update; a function of the env steps taken."""
    begin = config.warmup_vec_steps * config.num_envs
    steps = config.train_iters * config.train_every * config.num_envs
    return optax.linear_schedule(config.beta_start, config.beta_end, max(steps, 1), begin)


__all__ = ["make_env_for", "example_transition", "make_buffer", "make_network_for",
           "make_optimizer", "make_agent", "beta_schedule", "stores_episode_starts"]
