"""Epsilon-greedy action selection (pure, jit/vmap-safe).

Exploration schedules are optax schedules (``optax.linear_schedule`` of the env-step count).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def explore(key: jax.Array, actions: jax.Array, num_actions: int, epsilon) -> jax.Array:
    """Replace each action with a uniform random one with probability ``epsilon``.

    ``actions``: int32 [...]; ``epsilon``: float scalar or broadcastable to ``[...]``.
    Returns int32 [...]. ``key`` is split as :func:`epsilon_greedy` splits it, so
    ``explore(key, argmax(q), A, eps) == epsilon_greedy(key, q, eps)``.
    """
    k_explore, k_action = jax.random.split(key)
    random = jax.random.randint(k_action, actions.shape, 0, num_actions, dtype=jnp.int32)
    replace = jax.random.uniform(k_explore, actions.shape) < epsilon
    return jnp.where(replace, random, actions.astype(jnp.int32))


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon) -> jax.Array:
    """Epsilon-greedy actions from ``q_values`` float [..., A]: with probability ``epsilon``
    an action uniform over all A actions, else ``argmax``. Returns int32 [...]."""
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    return explore(key, greedy, q_values.shape[-1], epsilon)
