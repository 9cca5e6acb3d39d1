"""DQN-family TD losses as pure functions.

Shapes (B = batch, A = number of actions):
  q_tm1        float32 [B, A]   online Q-values at the sampled observation ``obs``
  a_tm1        int32   [B]      action taken
  r_t          float32 [B]      reward received
  discount_t   float32 [B]      ``gamma * (1 - terminated)``: 0 at a true terminal state,
                                 ``gamma`` otherwise, *including* time-limit truncation
  q_t_target   float32 [B, A]   target-network Q-values at ``next_obs``
  q_t_online   float32 [B, A]   online Q-values at ``next_obs`` (Double DQN's action selector)
  weights      float32 [B]      importance weights (PER), or None for ones

Every loss returns ``(loss, abs_td)``: ``loss`` is a float32 scalar,
``mean_i(weights_i * l(td_i))`` with ``l`` Huber or ``0.5 * x**2``; ``abs_td`` is
float32 [B], ``|td_i|`` without gradient, to be used as new PER priorities.
The bootstrap target never carries gradient.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

LOSS_KINDS = ("huber", "mse")


def huber(x: jax.Array, delta: float = 1.0) -> jax.Array:
    """Elementwise Huber: ``0.5 x^2`` for ``|x| <= delta``, else ``delta (|x| - delta/2)``."""
    ax = jnp.abs(x)
    quad = jnp.minimum(ax, delta)
    return 0.5 * quad**2 + delta * (ax - quad)


def l2(x: jax.Array) -> jax.Array:
    """Elementwise squared error ``0.5 x^2`` (same curvature as Huber near 0)."""
    return 0.5 * jnp.square(x)


def _check(q_tm1, a_tm1, r_t, discount_t, q_t):
    if q_tm1.ndim != 2:
        raise ValueError(f"q_tm1 must be [B, A], got shape {q_tm1.shape}")
    b, a = q_tm1.shape
    for name, x, shape in (("a_tm1", a_tm1, (b,)), ("r_t", r_t, (b,)),
                           ("discount_t", discount_t, (b,)), ("q_t", q_t, (b, a))):
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
    if not jnp.issubdtype(a_tm1.dtype, jnp.integer):
        raise ValueError(f"a_tm1 must be an integer array, got dtype {a_tm1.dtype}")


def _reduce(td, weights, loss, huber_delta):
    if loss == "huber":
        per_item = huber(td, huber_delta)
    elif loss == "mse":
        per_item = l2(td)
    else:
        raise ValueError(f"unknown loss {loss!r}: expected one of {LOSS_KINDS}")
    if weights is not None:
        if tuple(weights.shape) != tuple(td.shape):
            raise ValueError(f"weights must have shape {tuple(td.shape)}, got {tuple(weights.shape)}")
        per_item = weights.astype(per_item.dtype) * per_item
    return jnp.mean(per_item), jax.lax.stop_gradient(jnp.abs(td))


def q_learning_target(r_t, discount_t, q_t_target):
    """DQN target ``r_t + discount_t * max_a q_t_target[:, a]``, float32 [B], no gradient."""
    return jax.lax.stop_gradient(r_t + discount_t * jnp.max(q_t_target, axis=-1))


def double_q_learning_target(r_t, discount_t, q_t_target, q_t_online):
    """Double-DQN target ``r_t + discount_t * q_t_target[argmax_a q_t_online]``, [B]."""
    a_star = jnp.argmax(q_t_online, axis=-1)
    v = jnp.take_along_axis(q_t_target, a_star[:, None], axis=-1)[:, 0]
    return jax.lax.stop_gradient(r_t + discount_t * v)


def dqn_loss(q_tm1, a_tm1, r_t, discount_t, q_t_target, weights=None, *,
             loss: str = "huber", huber_delta: float = 1.0):
    """DQN loss. See the module docstring for shapes; returns ``(loss, abs_td)``."""
    _check(q_tm1, a_tm1, r_t, discount_t, q_t_target)
    target = q_learning_target(r_t, discount_t, q_t_target)
    q_sa = jnp.take_along_axis(q_tm1, a_tm1[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return _reduce(target - q_sa, weights, loss, huber_delta)


def double_dqn_loss(q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_online, weights=None, *,
                    loss: str = "huber", huber_delta: float = 1.0):
    """Double-DQN loss (van Hasselt et al., 2016): the online net picks the next action, the
    target net evaluates it. See the module docstring for shapes; returns ``(loss, abs_td)``."""
    _check(q_tm1, a_tm1, r_t, discount_t, q_t_target)
    if tuple(q_t_online.shape) != tuple(q_t_target.shape):
        raise ValueError(f"q_t_online must have shape {tuple(q_t_target.shape)}, "
                         f"got {tuple(q_t_online.shape)}")
    target = double_q_learning_target(r_t, discount_t, q_t_target, q_t_online)
    q_sa = jnp.take_along_axis(q_tm1, a_tm1[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return _reduce(target - q_sa, weights, loss, huber_delta)


def td_loss(params: Any, target_params: Any, apply_fn: Callable, batch: Mapping[str, jax.Array],
            weights: jax.Array | None = None, *, gamma: float = 0.99, double: bool = True,
            loss: str = "huber", huber_delta: float = 1.0):
    """Loss of a Q-network on a batch of transitions; differentiable w.r.t. ``params``.

    ``batch`` is a transition pytree with a leading axis B:
    ``{"obs": [B, *obs_shape], "action": int32 [B], "reward": f32 [B],
    "next_obs": [B, *obs_shape], "terminated": f32 or bool [B]}``.
    ``apply_fn(params, obs) -> [B, A]``. The bootstrap discount is ``gamma * (1 - terminated)``:
    time-limit truncations are stored with ``terminated = 0`` and are bootstrapped.

    Returns ``(loss, (abs_td [B], mean_q scalar))``.
    """
    q_tm1 = apply_fn(params, batch["obs"])
    q_t_target = apply_fn(target_params, batch["next_obs"])
    discount_t = gamma * (1.0 - batch["terminated"].astype(jnp.float32))
    r_t = batch["reward"].astype(jnp.float32)
    a_tm1 = batch["action"].astype(jnp.int32)
    if double:
        q_t_online = apply_fn(params, batch["next_obs"])
        value, abs_td = double_dqn_loss(q_tm1, a_tm1, r_t, discount_t, q_t_target, q_t_online,
                                        weights, loss=loss, huber_delta=huber_delta)
    else:
        value, abs_td = dqn_loss(q_tm1, a_tm1, r_t, discount_t, q_t_target, weights,
                                 loss=loss, huber_delta=huber_delta)
    return value, (abs_td, jnp.mean(q_tm1))
