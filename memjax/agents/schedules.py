"""Schedules and epsilon-greedy action selection (pure, jit/vmap-safe)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def linear_schedule(start: float, end: float, steps: int, begin: int = 0) -> Callable:
    """``f(count) -> float32``: ``start`` until ``begin``, then linear to ``end`` over ``steps``
    counts, then ``end``. ``count`` is any int/float scalar or array (e.g. env steps)."""
    if steps <= 0:
        raise ValueError(f"linear_schedule needs steps > 0, got {steps}")

    def schedule(count):
        frac = jnp.clip((jnp.asarray(count, jnp.float32) - begin) / steps, 0.0, 1.0)
        return jnp.asarray(start + frac * (end - start), jnp.float32)

    return schedule


def epsilon_schedule(start: float = 1.0, end: float = 0.05, steps: int = 250_000) -> Callable:
    """Linear epsilon decay from ``start`` to ``end`` over ``steps`` environment steps."""
    return linear_schedule(start, end, steps)


def beta_schedule(start: float = 0.4, end: float = 1.0, begin: int = 0,
                  steps: int = 1) -> Callable:
    """PER importance-sampling exponent: ``start`` at count ``begin``, linearly to ``end``
    (normally 1) at ``begin + steps``."""
    return linear_schedule(start, end, max(int(steps), 1), begin=begin)


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon) -> jax.Array:
    """Epsilon-greedy actions.

    ``q_values``: float [..., A]; ``epsilon``: float scalar or broadcastable to ``[...]``.
    With probability ``epsilon`` an action uniform over all A actions, else ``argmax``.
    Returns int32 [...].
    """
    k_explore, k_action = jax.random.split(key)
    batch_shape = q_values.shape[:-1]
    greedy = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
    random = jax.random.randint(k_action, batch_shape, 0, q_values.shape[-1], dtype=jnp.int32)
    explore = jax.random.uniform(k_explore, batch_shape) < epsilon
    return jnp.where(explore, random, greedy)
