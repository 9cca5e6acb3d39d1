"""Q-learning targets and losses, rlax-style: functions on ONE example with chex shape
asserts, vmapped over the batch by :func:`td_errors`.

Per example (n = window length, A = number of actions):

```
rewards      float32 [n]   r_t, ..., r_{t+n-1}
terminated   [n]           1 (or True) where the step ended its episode by termination
first        bool [n]      the step's observation starts an episode
q_tm1        float32 [A]   online Q-values at the window's first observation
q_target     float32 [A]   target-network Q-values at the bootstrap observation
q_online     float32 [A]   online Q-values there (Double DQN's action selector)
```

A window of n = 1 is an ordinary transition, so one code path serves 1-step and n-step
DQN. Termination cuts the return without bootstrapping; truncation (a time limit) cuts it
*with* bootstrapping from the episode's true final observation, which the replay layouts
store as ``next_obs`` of that step. No target carries gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

LOSS_KINDS = ("huber", "mse")
"""The ``loss`` names :func:`weighted_loss` and :func:`memjax.agents.make_dqn` take."""


def n_step_bootstrap(rewards: jax.Array, terminated: jax.Array, first: jax.Array, gamma):
    """The n-step return of one window, cut at the window's first episode end.

    The episode ends after step ``m``, the first ``k`` with ``terminated[k]`` or ``first[k + 1]``
    (``m = n - 1`` when the window holds no end); the target is
    ``partial_return + discount * V(next_obs[m])``.

    Args:
      rewards: float ``[n]``.
      terminated: ``[n]``, 1 or True where the step ended its episode by termination.
      first: bool ``[n]``, True where the step's observation starts an episode.
      gamma: the discount, a float scalar.

    Returns:
      ``(partial_return, discount, m)``: float32 ``sum_{k<=m} gamma^k r_k``, float32
      ``gamma^(m+1) * (1 - terminated[m])`` and int32 ``m``.
    """
    chex.assert_rank([rewards, terminated, first], 1)
    chex.assert_equal_shape([rewards, terminated, first])
    n = rewards.shape[0]
    ended = terminated.astype(bool) | jnp.concatenate(
        [first[1:].astype(bool), jnp.ones((1,), bool)]
    )
    last = jnp.argmax(ended).astype(jnp.int32)
    # gamma^k by a running product, so that n = 1 gives exactly 1 and gamma
    powers = jnp.concatenate(
        [jnp.ones((1,), jnp.float32), jnp.cumprod(jnp.full((n,), gamma, jnp.float32))]
    )
    kept = jnp.arange(n) <= last
    partial = jnp.sum(jnp.where(kept, powers[:n] * rewards.astype(jnp.float32), 0.0))
    discount = powers[last + 1] * (1.0 - terminated[last].astype(jnp.float32))
    return partial, discount, last


def bootstrap_value(q_target: jax.Array, q_online: jax.Array | None = None) -> jax.Array:
    """The value of the bootstrap observation.

    Args:
      q_target: float32 ``[A]``, target-network Q-values.
      q_online: optional float32 ``[A]``, online Q-values at the same observation.

    Returns:
      float32 scalar: ``max_a q_target[a]`` (DQN), or ``q_target[argmax_a q_online[a]]`` (Double
      DQN, van Hasselt et al., 2016) when ``q_online`` is given.
    """
    chex.assert_rank(q_target, 1)
    if q_online is None:
        return jnp.max(q_target)
    chex.assert_equal_shape([q_target, q_online])
    return q_target[jnp.argmax(q_online)]


def q_learning_td(q_tm1: jax.Array, a_tm1: jax.Array, target: jax.Array) -> jax.Array:
    """The TD error of one example, with no gradient through ``target``.

    Args:
      q_tm1: float32 ``[A]``, online Q-values at the observation.
      a_tm1: int scalar, the action taken.
      target: float32 scalar, the (n-step) target.

    Returns:
      float32 scalar ``target - q_tm1[a_tm1]``.
    """
    chex.assert_rank([q_tm1, a_tm1, target], [1, 0, 0])
    chex.assert_type(a_tm1, int)
    return jax.lax.stop_gradient(target) - q_tm1[a_tm1]


def as_windows(batch: Mapping[str, jax.Array]) -> dict:
    """A replay batch as windows ``[B, n, ...]``.

    Transitions (``reward`` of shape ``[B]``) get a window axis of 1 and ``first`` all False;
    windows (``reward`` ``[B, n]``) pass through.

    Args:
      batch: a dict of replay fields.

    Returns:
      A dict of fields ``[B, n, ...]`` with ``first`` bool ``[B, n]``.
    """
    if batch["reward"].ndim == 2:
        return dict(batch)
    windows = {name: value[:, None] for name, value in batch.items()}
    windows.setdefault("first", jnp.zeros(batch["reward"].shape + (1,), bool))
    return windows


def td_errors(
    params: Any,
    target_params: Any,
    apply_fn: Callable,
    batch: Mapping[str, jax.Array],
    *,
    gamma: float,
    double: bool,
):
    """TD errors of a Q-network on a replay batch; differentiable with respect to ``params``.

    Args:
      params: the online network's parameters.
      target_params: the target network's parameters.
      apply_fn: ``apply_fn(params, obs [B, ...]) -> float32 [B, A]``.
      batch: transitions `{"obs" [B, ...], "action" int [B], "reward" [B],
        "next_obs" [B, ...], "terminated" [B]}`, or windows of n steps (every field
        ``[B, n, ...]`` plus ``"first"`` bool ``[B, n]``) for n-step targets.
      gamma: the discount.
      double: Double DQN targets.

    Returns:
      ``(td, q_tm1)``: float32 ``[B]`` and float32 ``[B, A]`` (the online Q-values at the first
      observations).
    """
    windows = as_windows(batch)
    partial, discount, last = jax.vmap(n_step_bootstrap, in_axes=(0, 0, 0, None))(
        windows["reward"], windows["terminated"], windows["first"], gamma
    )
    next_obs = windows["next_obs"]
    if next_obs.shape[1] == 1:
        bootstrap_obs = next_obs[:, 0]
    else:
        bootstrap_obs = jax.vmap(lambda steps, m: steps[m])(next_obs, last)
    q_tm1 = apply_fn(params, windows["obs"][:, 0])
    q_target = apply_fn(target_params, bootstrap_obs)
    if double:
        values = jax.vmap(bootstrap_value)(q_target, apply_fn(params, bootstrap_obs))
    else:
        values = jax.vmap(bootstrap_value)(q_target)
    targets = partial + discount * values
    actions = windows["action"][:, 0].astype(jnp.int32)
    return jax.vmap(q_learning_td)(q_tm1, actions, targets), q_tm1


def weighted_loss(
    td: jax.Array, weights: jax.Array | None = None, *, loss: str = "mse", huber_delta: float = 1.0
) -> jax.Array:
    """The importance-weighted mean loss ``mean_i(weights_i * l(td_i))``.

    Args:
      td: float32 ``[B]``.
      weights: float32 ``[B]`` (a sample's importance weights), or None for ones.
      loss: ``"mse"`` (``optax.l2_loss``, ``0.5 td^2``) or ``"huber"`` (``optax.huber_loss``).
      huber_delta: the Huber threshold.

    Returns:
      float32 scalar.

    Raises:
      ValueError: an unknown ``loss``.
    """
    chex.assert_rank(td, 1)
    if loss == "mse":
        per_item = optax.l2_loss(td)
    elif loss == "huber":
        per_item = optax.huber_loss(td, delta=huber_delta)
    else:
        raise ValueError(f"unknown loss {loss!r}: expected one of {LOSS_KINDS}")
    if weights is not None:
        chex.assert_equal_shape([td, weights])
        per_item = weights.astype(per_item.dtype) * per_item
    return jnp.mean(per_item)
