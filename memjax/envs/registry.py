"""Environments by name: the partially observable suite (:mod:`memjax.envs.pomdp`) and
gymnax's own, with clear errors for unknown or non-discrete ones."""

from __future__ import annotations

import gymnax
import jax

from memjax.envs import multitask, pomdp


def make(name: str):
    """A discrete-action environment by name: one of the partially observable suite
    (``StatelessCartPole``, ``NoisyStatelessCartPole``, ``RepeatFirst``, ``RepeatPrevious``,
    ``CountRecall``, ``MemoryChain-<L>`` such as ``MemoryChain-20``), a multi-task one
    (``MultiCartPole``, ``ContinualCartPole-<K>``, see :func:`memjax.envs.multitask.make`),
    else ``gymnax.make(name)``. Returns ``(env, env_params)``.

    Raises ``ValueError`` naming the known environments when ``name`` is unknown, and when
    the action space is not discrete (the agents here pick among discrete actions)."""
    made = pomdp.make(name) or multitask.make(name)
    if made is None:
        if name not in gymnax.registered_envs:
            known = ", ".join(gymnax.registered_envs)
            raise ValueError(f"unknown environment {name!r}; memjax's partially observable "
                             f"suite: {', '.join(pomdp.names())}; multi-task: "
                             f"{', '.join(multitask.NAMES)}; gymnax knows: {known}")
        made = gymnax.make(name)
    env, env_params = made
    check_discrete(env, env_params, name)
    return env, env_params


def check_discrete(env, env_params, name: str) -> None:
    """``ValueError`` unless ``env`` has a ``Discrete`` action space."""
    space = env.action_space(env_params)
    if not isinstance(space, gymnax.environments.spaces.Discrete):
        raise ValueError(f"environment {name!r} has a {type(space).__name__} action space; "
                         "the agents need discrete actions")


def num_actions(env, env_params) -> int:
    """Size of the discrete action space."""
    return int(env.action_space(env_params).n)


def observation_shape(env, env_params) -> tuple:
    """Shape of one observation, from ``jax.eval_shape`` of a reset (nothing runs)."""
    obs, _ = jax.eval_shape(lambda key: env.reset(key, env_params), jax.random.key(0))
    return tuple(obs.shape)
