"""The pieces of a run built from a :class:`TrainConfig`: environment, Q-network, optimizer,
agent, replay buffer and the replay item layout."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from memjax import envs, replay
from memjax.agents import Agent
from memjax.train.config import TrainConfig
from memjax.train.storage import make_layout, stores_episode_starts


def make_env_for(config: TrainConfig, env=None, env_params=None):
    """The run's environment.

    Args:
      config: the run's :class:`TrainConfig`.
      env: optionally a gymnax environment to use instead of ``memjax.envs.make(config.env)``.
      env_params: its parameters (default: the environment's ``default_params``).

    Returns:
      ``(env, env_params)``, wrapped in :class:`memjax.envs.FrameStack` when
      ``config.frame_stack > 1``.

    Raises:
      ValueError: an unknown environment name, or an action space that is not discrete.
    """
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
    """One replay item (no batch axis) as the loop adds it.

    Args:
      env: a gymnax environment.
      env_params: its parameters.
      extras: the agent's ``extras`` for ONE environment (a dict of ``jax.ShapeDtypeStruct`` or
        arrays), stored with each step.
      episode_starts: add the ``"first"`` flag (sequence layouts and n-step targets).

    Returns:
      ``{"obs", "action" int32 [], "reward" float32 [], "next_obs", "terminated" float32 []}``
      of zeros, with ``obs``/``next_obs`` of the environment's observation shape and dtype, plus
      the ``extras`` fields and, with ``episode_starts``, ``"first"`` bool ``[]`` (the step's
      observation starts an episode).
    """
    obs = observation_spec(env, env_params)
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
    """The replay buffer ``config`` asks for.

    Args:
      config: the run's :class:`TrainConfig` (``replay``, ``buffer_capacity``, ``alpha``, and the
        layout from ``layout``, ``n_step``, ``frame_stack``, ``side_fraction``).
      codecs: storage codecs per field (see ``memjax.train.storage.make_codecs``), or None.

    Returns:
      A :func:`memjax.replay.uniform` or :func:`memjax.replay.prioritized` buffer.
    """
    layout = make_layout(config)
    if config.replay == "uniform":
        return replay.uniform(config.buffer_capacity, codecs=codecs, layout=layout)
    return replay.prioritized(
        config.buffer_capacity, alpha=config.alpha, codecs=codecs, layout=layout
    )


def observation_spec(env, env_params) -> jax.ShapeDtypeStruct:
    """Shape and dtype of ONE observation of ``env`` (no batch axis), without stepping it."""
    obs, _ = jax.eval_shape(lambda k: env.reset(k, env_params), jax.random.key(0))
    return jax.ShapeDtypeStruct(tuple(obs.shape), obs.dtype)


def make_network_for(config: TrainConfig, env, env_params) -> nn.Module:
    """The agent's Q-network for ``env``'s observations, built by its spec's ``make_network``
    from ``config.agent_config``.

    Args:
      config: the run's :class:`TrainConfig`.
      env: a gymnax environment.
      env_params: its parameters.

    Returns:
      A flax module (e.g. :class:`memjax.agents.MLPQNetwork` for dqn on CartPole,
      :class:`memjax.agents.RecurrentQNetwork` for drqn).
    """
    return config.spec.make_network(
        config.agent_config, observation_spec(env, env_params), envs.num_actions(env, env_params)
    )


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The run's optimizer: Adam, after a global-norm clip when ``config.max_grad_norm`` is set.

    The learning rate decays linearly from ``lr`` to ``lr_end`` over the run's updates (constant
    when ``lr_end`` is None).

    Args:
      config: the run's :class:`TrainConfig`.

    Returns:
      An optax ``GradientTransformation``.
    """
    lr = config.lr
    if config.lr_end is not None:
        lr = optax.linear_schedule(config.lr, config.lr_end, max(config.total_updates, 1))
    tx = optax.adam(lr, eps=config.adam_eps)
    if config.max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)
    return tx


def make_agent(
    config: TrainConfig,
    network: nn.Module,
    num_actions: int,
    optimizer: optax.GradientTransformation = None,
) -> Agent:
    """The agent ``config.agent`` names, made by its spec's ``make_agent``.

    Args:
      config: the run's :class:`TrainConfig` (the agent's knobs in ``config.agent_config``).
      network: the Q-network (see :func:`make_network_for`).
      num_actions: size of the discrete action space.
      optimizer: optionally the optimizer instead of :func:`make_optimizer`'s.

    Returns:
      An :class:`memjax.agents.Agent`.
    """
    optimizer = make_optimizer(config) if optimizer is None else optimizer
    return config.spec.make_agent(config, network, num_actions, optimizer)


def run_warnings(config: TrainConfig, env, env_params) -> list:
    """What in ``config`` keeps a run on ``env`` from learning what it could, one sentence
    each (empty when nothing does): an exploration schedule or warm-up longer than the run
    (their defaults are step counts made for 5e5-step runs), or a task whose memory span
    (:func:`memjax.envs.memory_span`) is beyond what the agent can remember (its spec's
    ``reach``). ``memjax.train.run`` prints them before compiling."""
    out, steps = [], config.steps_done
    if config.eps_decay_steps > steps:
        final = (
            config.eps_start + (config.eps_end - config.eps_start) * steps / config.eps_decay_steps
        )
        out.append(
            f"epsilon decays over {config.eps_decay_steps:,} env steps but the run has "
            f"{steps:,}: it still acts at random with probability {final:.2f} at the end; "
            f"set --eps-decay-steps (e.g. {steps // 2:,}, half the run)"
        )
    if config.learning_starts > steps // 2:
        out.append(
            f"the random warm-up (--learning-starts {config.learning_starts:,}) is more "
            f"than half of the run's {steps:,} env steps; the agent learns only after it"
        )
    reach = config.spec.reach(config.agent_config)
    span = envs.memory_span(env, env_params)
    if reach is not None and span is not None and span > reach:
        out.append(
            f"{config.env} asks to remember {span} steps back, but agent {config.agent!r} "
            f"reads only {reach} (its reach): it cannot do better than chance there; "
            f"give it a longer one (see memjax train --agent {config.agent} --help)"
        )
    return out


def beta_schedule(config: TrainConfig):
    """PER's importance exponent as a function of the env steps taken.

    Args:
      config: the run's :class:`TrainConfig`.

    Returns:
      An optax schedule: ``beta_start`` when learning starts, linearly to ``beta_end`` at the
      last update.
    """
    begin = config.warmup_vec_steps * config.num_envs
    steps = config.train_iters * config.iter_vec_steps * config.num_envs
    return optax.linear_schedule(config.beta_start, config.beta_end, max(steps, 1), begin)


__all__ = [
    "make_env_for",
    "example_transition",
    "make_buffer",
    "make_network_for",
    "observation_spec",
    "run_warnings",
    "make_optimizer",
    "make_agent",
    "beta_schedule",
    "stores_episode_starts",
]
