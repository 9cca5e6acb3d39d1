"""Epsilon-greedy action selection (pure, jit/vmap-safe).

Exploration schedules are optax schedules (``optax.linear_schedule`` of the env-step count).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def explore(key: jax.Array, actions: jax.Array, num_actions: int, epsilon) -> jax.Array:
    """Replace each action with a uniform random one with probability ``epsilon``.

    ``key`` is split as :func:`epsilon_greedy` splits it, so
    ``explore(key, argmax(q), A, eps) == epsilon_greedy(key, q, eps)``.

    Args:
      key: a PRNG key.
      actions: int ``[...]``.
      num_actions: A; random actions are uniform over ``[0, A)``.
      epsilon: float scalar, or an array broadcastable to ``[...]``.

    Returns:
      int32 ``[...]``.
    """
    k_explore, k_action = jax.random.split(key)
    random = jax.random.randint(k_action, actions.shape, 0, num_actions, dtype=jnp.int32)
    replace = jax.random.uniform(k_explore, actions.shape) < epsilon
    return jnp.where(replace, random, actions.astype(jnp.int32))


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon) -> jax.Array:
    """Epsilon-greedy actions: with probability ``epsilon`` a uniform random action, else argmax.

    Args:
      key: a PRNG key.
      q_values: float ``[..., A]``.
      epsilon: float scalar, or an array broadcastable to ``[...]``.

    Returns:
      int32 ``[...]``.
    """
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    return explore(key, greedy, q_values.shape[-1], epsilon)
