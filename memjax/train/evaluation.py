"""Greedy evaluation: the returns of a policy over whole episodes, one per parallel
environment. Training (``Trainer.evaluate``) and ``memjax.compress`` both use it, so a
compressed network and its teacher are measured the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memjax.agents import explore

DEFAULT_MAX_STEPS = 1000
"""The cap of an evaluation episode in an environment without ``max_steps_in_episode``."""


class Episodes(NamedTuple):
    """Evaluation episodes, one per parallel environment.

    Attributes:
      returns: float32 ``[episodes]``, the return of each environment's first episode (up to
        the cap); an unfinished episode's return is a partial one.
      finished: bool ``[episodes]``, whether that episode ended (terminated or truncated by the
        environment) within the cap.
    """

    returns: jax.Array
    finished: jax.Array


def episode_cap(env_params, max_steps: int | None = None) -> int:
    """The step cap of an evaluation episode.

    Args:
      env_params: the environment's parameters.
      max_steps: a positive int, or None.

    Returns:
      ``max_steps``, else the environment's ``max_steps_in_episode``, else
      :data:`DEFAULT_MAX_STEPS`.

    Raises:
      ValueError: ``max_steps`` is not a positive integer or None.
    """
    if max_steps is not None:
        if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
        return int(max_steps)
    return int(getattr(env_params, "max_steps_in_episode", DEFAULT_MAX_STEPS))


def evaluate(
    policy: Callable,
    carry,
    env,
    env_params,
    key: jax.Array,
    episodes: int,
    num_actions: int,
    epsilon: float = 0.0,
    max_steps: int | None = None,
) -> Episodes:
    """Returns of ``episodes`` episodes of ``policy``, each in its own environment.

    Args:
      policy: ``policy(carry, obs [episodes, ...], key) -> (actions int32 [episodes], carry)``,
        e.g. the greedy action of a Q-network.
      carry: the policy's initial carry for ``episodes`` environments (``()`` if none).
      env: a gymnax environment.
      env_params: its parameters.
      key: PRNG key (resets, environment steps, exploration).
      episodes: number of episodes (= parallel environments).
      num_actions: size of the discrete action space.
      epsilon: probability of a uniform random action instead of the policy's.
      max_steps: cap per episode (see :func:`episode_cap`); rewards after an episode's end,
        or past the cap, are not counted.

    Returns:
      :class:`Episodes`: each environment's return and whether its episode finished.
    """
    vreset = jax.vmap(env.reset, in_axes=(0, None))
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))
    k_reset, key = jax.random.split(key)
    obs, env_state = vreset(jax.random.split(k_reset, episodes), env_params)

    def body(loop, _):
        obs, env_state, carry, key, returns, alive = loop
        key, k_act, k_env = jax.random.split(key, 3)
        actions, carry = policy(carry, obs, jax.random.fold_in(k_act, 1))
        actions = explore(k_act, actions, num_actions, epsilon)
        obs, env_state, reward, terminated, truncated, _ = vstep(
            jax.random.split(k_env, episodes), env_state, actions, env_params
        )
        returns = returns + jnp.where(alive, reward.astype(jnp.float32), 0.0)
        alive = alive & ~(terminated | truncated)
        return (obs, env_state, carry, key, returns, alive), None

    loop = (
        obs,
        env_state,
        carry,
        key,
        jnp.zeros((episodes,), jnp.float32),
        jnp.ones((episodes,), bool),
    )
    cap = episode_cap(env_params, max_steps)
    (*_, returns, alive), _ = jax.lax.scan(body, loop, None, length=cap)
    return Episodes(returns=returns, finished=~alive)


__all__ = ["Episodes", "evaluate", "episode_cap", "DEFAULT_MAX_STEPS"]
