"""DRQN (Hausknecht & Stone, 2015) trained as R2D2 trains it (Kapturowski et al., 2019): a
recurrent Q-network acting with a carried state per environment, learning from replayed
windows that start from the state stored with them, after a burn-in that carries no gradient.

```python
network = RecurrentQNetwork(num_actions=2, memory=64)
agent = make_drqn(network, num_actions=2, optimizer=optax.adam(1e-3),
                  epsilon=optax.linear_schedule(1.0, 0.05, 100_000), burn_in=8, n_step=3)
layout = memjax.replay.sequence(num_envs, length=40, period=20, per_window=("carry",))
```

Replay holds windows of L steps (the sequence layout) with ``first`` flags and the carry
before each window's first step, stored once per window (``per_window``): the state
``act`` returns as the ``carry`` extra. Learning from a window of L steps:

1. From the stored carry, both networks run over the first ``burn_in`` steps; the carries
   they reach are the starting states of the rest (``stop_gradient``: no gradient flows
   into the burn-in steps).
2. Both run over the remaining ``T = L - burn_in`` steps, resetting the carry where an
   episode starts, and evaluate each step's next observation from the carry after that step
   (so a bootstrap from an episode's final observation keeps that episode's memory).
3. Every step t of the rest whose n-step return fits in the window (``t <= T - n``) gets a
   TD error ``sum_k gamma^k r_{t+k} + gamma^n Q_target(next_obs_{t+n-1}, argmax Q_online)
   - Q(obs_t, a_t)``, cut at episode ends as :func:`memjax.agents.n_step_bootstrap` cuts it
   (Double-Q by default, as R2D2).
4. The loss is the importance-weighted mean over windows of the mean over those steps; each
   window's new priority is ``eta * max_t |TD| + (1 - eta) * mean_t |TD|`` (+ ``priority_eps``).

R2D2 also rescales values (``h(x)``) and trains on overlapping stored sequences; here values
are not rescaled (our tasks' returns are small) and windows overlap by the layout's period
without storing any step twice.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from memjax.agents import losses
from memjax.agents.base import Agent
from memjax.agents.dqn import DQNState, gradient_step
from memjax.agents.policies import epsilon_greedy
from memjax.agents.recurrent import RecurrentQNetwork, unroll
from memjax.replay.prioritized import sequence_priorities

CARRY_FIELD = "carry"
"""The replay field (and ``act`` extra) that holds the carry before each step."""


@struct.dataclass
class DRQNState(DQNState):
    """The state of a DRQN agent: the fields of :class:`memjax.agents.DQNState` (online and
    target parameters of the recurrent Q-network, optimizer state, updates done)."""


def stored_carry(carry) -> jax.Array:
    """A carry as ONE array for replay: GRU ``[E, H]`` as is, LSTM ``(c, h)`` as ``[E, 2, H]``."""
    return jnp.stack(carry, axis=1) if isinstance(carry, tuple) else carry


def carry_from_stored(stored: jax.Array, cell: str):
    """The inverse of :func:`stored_carry` for a network with ``cell``."""
    return (stored[:, 0], stored[:, 1]) if cell == "lstm" else stored


def trained_steps(window: int, burn_in: int, n_step: int) -> int:
    """Steps of a window of ``window`` steps that get a TD error: ``window - burn_in - n_step + 1``.

    Raises:
      ValueError: the window has no such step (shorter than ``burn_in + n_step``).
    """
    count = window - burn_in - n_step + 1
    if count < 1:
        raise ValueError(f"a replay window of {window} steps is shorter than burn_in ({burn_in}) "
                         f"+ n_step ({n_step}): no step would be trained; use windows of at "
                         f"least {burn_in + n_step} steps")
    return count


def make_drqn(network: RecurrentQNetwork, num_actions: int,
              optimizer: optax.GradientTransformation, *, epsilon: Callable, burn_in: int = 0,
              n_step: int = 1, gamma: float = 0.99, double: bool = True, loss: str = "mse",
              huber_delta: float = 1.0, target_period: int = 25, tau: float = 1.0,
              eta: float = 0.9, priority_eps: float = 1e-6) -> Agent:
    """A DRQN agent with R2D2's stored state, burn-in, n-step Double-Q targets and window
    priorities.

    ``act`` is epsilon-greedy in the Q-values of the network's step from the carry, returns
    the next carry, and the extra ``{"carry": the carry before the step}`` (float32 ``[E, H]``,
    LSTM ``[E, 2, H]``) that replay stores once per window. ``learn`` takes windows
    ``[B, L, ...]`` with ``first`` and the per-window ``carry`` ``[B, ...]`` and returns
    priorities float32 ``[B]`` and the metrics ``loss`` and ``q``.

    Args:
      network: a :class:`memjax.agents.RecurrentQNetwork` (or a module with its
        ``initial_carry`` method and ``(carry, obs) -> (carry, q)`` call).
      num_actions: the size of the discrete action space.
      optimizer: any optax transformation.
      epsilon: exploration schedule, environment steps -> probability of a random action.
      burn_in: steps at the start of each window that only warm the carry up (no loss, no
        gradient).
      n_step: steps of the return before bootstrapping.
      gamma: discount.
      double: Double-Q targets (the online network picks the bootstrap action).
      loss: ``"mse"`` or ``"huber"``, weighted by the sample's importance weights.
      huber_delta: the Huber loss threshold.
      target_period: gradient updates between target-network updates, >= 1.
      tau: 1 copies the online parameters at a target update; less moves the target one
        Polyak step.
      eta: the weight of the max in a window's priority (R2D2: 0.9).
      priority_eps: added to the window priorities (never 0).

    Returns:
      An :class:`Agent` whose state is a :class:`DRQNState`.

    Raises:
      ValueError: ``target_period`` < 1, ``burn_in`` < 0, ``n_step`` < 1 or ``eta`` outside
        [0, 1]; at trace time, windows shorter than ``burn_in + n_step`` or a batch without
        ``first`` or ``carry``.
    """
    if target_period < 1:
        raise ValueError(f"target_period must be >= 1 update, got {target_period}")
    if burn_in < 0 or n_step < 1:
        raise ValueError(f"burn_in must be >= 0 and n_step >= 1, got {burn_in} and {n_step}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    cell = getattr(network, "cell", "gru")

    def init(key, obs) -> DRQNState:
        params = network.init(key, network.initial_carry(1), jnp.asarray(obs)[None])
        return DRQNState(params=params, target_params=jax.tree.map(jnp.copy, params),
                         opt_state=optimizer.init(params), updates=jnp.zeros((), jnp.int32))

    def act(state: DRQNState, carry, obs, key, step, greedy: bool = False):
        new_carry, q_values = network.apply(state.params, carry, obs)
        if greedy:
            actions = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
        else:
            actions = epsilon_greedy(key, q_values, epsilon(step))
        return actions, new_carry, {CARRY_FIELD: stored_carry(carry)}

    def td_fn(params, target_params, items):
        windows = checked_windows(items)
        start = carry_from_stored(windows[CARRY_FIELD], cell)
        td, q = window_td_errors(network.apply, params, target_params, windows, start,
                                 burn_in=burn_in, n_step=n_step, gamma=gamma, double=double)
        return td, q[:, :td.shape[1]]

    learn = window_learner(td_fn, optimizer, loss=loss, huber_delta=huber_delta,
                           target_period=target_period, tau=tau, eta=eta,
                           priority_eps=priority_eps)
    return Agent(init=init, initial_carry=network.initial_carry, act=act, learn=learn)


def window_learner(td_fn: Callable, optimizer: optax.GradientTransformation, *, loss: str,
                   huber_delta: float, target_period: int, tau: float, eta: float,
                   priority_eps: float) -> Callable:
    """The ``learn`` of an agent trained on replayed windows (DRQN, the memory network): the
    importance-weighted mean over windows of the mean loss over their trained steps, one
    :func:`memjax.agents.gradient_step`, and window priorities ``eta * max |TD| + (1 - eta) *
    mean |TD| + priority_eps``.

    Args:
      td_fn: ``(params, target_params, items) -> (td float32 [B, S], q float32 [B, S, A])``,
        the TD errors of a batch of windows and the online Q-values of their trained steps.
      optimizer: the optax transformation of the state's ``opt_state``.
      loss: ``"mse"`` or ``"huber"``.
      huber_delta: the Huber loss threshold.
      target_period: gradient updates between target-network updates.
      tau: the target update's step (1: a copy).
      eta: the weight of the max in a window's priority.
      priority_eps: added to the window priorities.

    Returns:
      ``learn(state, sample, key) -> (state, priorities float32 [B], {"loss", "q"})`` for a
      :class:`memjax.agents.DQNState` (or a subclass).
    """
    def loss_fn(params, target_params, sample):
        td, q = td_fn(params, target_params, sample.items)
        weights = jnp.repeat(sample.weights, td.shape[1])
        value = losses.weighted_loss(td.reshape(-1), weights, loss=loss, huber_delta=huber_delta)
        return value, (td, jnp.mean(q))

    def learn(state, sample, key):
        (value, (td, mean_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, sample)
        state = gradient_step(state, grads, optimizer, target_period=target_period, tau=tau)
        priorities = sequence_priorities(jnp.abs(td), eta=eta) + priority_eps
        return state, priorities, {"loss": value, "q": mean_q}

    return learn


def window_td_errors(apply_fn, params, target_params, windows, start, *, burn_in: int,
                     n_step: int, gamma: float, double: bool):
    """TD errors of a recurrent Q-network on replayed windows (steps 1-3 of the module
    docstring); differentiable with respect to ``params`` except through the burn-in.

    Args:
      apply_fn: ``apply_fn(params, carry, obs [B, ...]) -> (carry, q [B, A])``.
      params: the online network's parameters.
      target_params: the target network's parameters.
      windows: ``{"obs" [B, L, ...], "action" int [B, L], "reward" [B, L], "next_obs"
        [B, L, ...], "terminated" [B, L], "first" bool [B, L]}``.
      start: the carry before each window's first step (pytree ``[B, ...]``).
      burn_in: steps that only warm the carries up.
      n_step: steps of the return before bootstrapping.
      gamma: the discount.
      double: Double-Q targets.

    Returns:
      ``(td, q)``: float32 ``[B, S]`` the TD errors of the ``S = L - burn_in - n_step + 1``
      trained steps (the steps after the burn-in, in order), and float32 ``[B, L - burn_in,
      A]`` the online Q-values after the burn-in.

    Raises:
      ValueError: ``L < burn_in + n_step`` (see :func:`trained_steps`).
    """
    steps = trained_steps(windows["reward"].shape[1], burn_in, n_step)
    burn, rest = (lambda x: x[:, :burn_in]), (lambda x: x[:, burn_in:])  # noqa: E731
    online_start, target_start = start, start
    if burn_in:
        online_start, _, _ = unroll(apply_fn, params, start, burn(windows["obs"]),
                                    burn(windows["first"]))
        online_start = jax.lax.stop_gradient(online_start)
        target_start, _, _ = unroll(apply_fn, target_params, start, burn(windows["obs"]),
                                    burn(windows["first"]))
    obs, first, next_obs = (rest(windows[k]) for k in ("obs", "first", "next_obs"))
    _, q, q_next_online = unroll(apply_fn, params, online_start, obs, first, next_obs)
    _, _, q_next_target = unroll(apply_fn, target_params, target_start, obs, first, next_obs)
    rest_windows = {k: rest(windows[k]) for k in ("action", "reward", "terminated", "first")}
    td = window_n_step_td(q, q_next_online, q_next_target, rest_windows, steps=steps,
                          n_step=n_step, gamma=gamma, double=double)
    return td, q


def window_n_step_td(q, q_next_online, q_next_target, windows, *, steps: int, n_step: int,
                     gamma: float, double: bool):
    """n-step TD errors of the first ``steps`` steps of windows, from Q-values at every
    step's observation and next observation (shared by DRQN and the memory-network agent).

    Step t's target is ``sum_k gamma^k r_{t+k} + gamma^n V(next_obs_{t+m})``, cut at the
    window's first episode end ``m`` as :func:`memjax.agents.n_step_bootstrap` cuts it, with
    ``V`` the target Q-values' max (Double-Q: at the online Q-values' argmax, no gradient).

    Args:
      q: float32 ``[B, T, A]``, online Q-values at each step's observation.
      q_next_online: float32 ``[B, T, A]``, online Q-values at each step's next observation.
      q_next_target: float32 ``[B, T, A]``, target Q-values there.
      windows: ``{"action" int [B, T], "reward" [B, T], "terminated" [B, T], "first" bool
        [B, T]}`` of the same T steps.
      steps: S, the steps that get a TD error, ``1 <= S <= T - n_step + 1``.
      n_step: steps of the return before bootstrapping.
      gamma: the discount.
      double: Double-Q targets.

    Returns:
      float32 ``[B, S]``: the TD errors, differentiable with respect to ``q`` only.
    """
    offsets = jnp.arange(steps)[:, None] + jnp.arange(n_step)[None]          # [S, n]
    per_step = jax.vmap(jax.vmap(losses.n_step_bootstrap, in_axes=(0, 0, 0, None)),
                        in_axes=(0, 0, 0, None))
    partial, discount, last = per_step(windows["reward"][:, offsets],
                                       windows["terminated"][:, offsets],
                                       windows["first"][:, offsets], gamma)  # [B, S] each
    at = jnp.arange(steps)[None] + last                                      # bootstrap step
    pick = jax.vmap(lambda values, index: values[index])
    value_fn = jax.vmap(jax.vmap(losses.bootstrap_value))
    bootstrap = pick(q_next_target, at)
    if double:
        values = value_fn(bootstrap, pick(jax.lax.stop_gradient(q_next_online), at))
    else:
        values = value_fn(bootstrap)
    actions = windows["action"][:, :steps].astype(jnp.int32)
    return jax.vmap(jax.vmap(losses.q_learning_td))(q[:, :steps], actions,
                                                    partial + discount * values)


def checked_windows(items) -> dict:
    """The replay batch as windows, or ``ValueError`` naming what a DRQN batch lacks."""
    missing = [k for k in ("obs", "action", "reward", "next_obs", "terminated", "first",
                           CARRY_FIELD) if k not in items]
    if missing:
        raise ValueError(f"DRQN learns from windows of the sequence layout with the fields "
                         f"'first' and a per-window '{CARRY_FIELD}'; the batch lacks {missing}")
    if items["reward"].ndim != 2:
        raise ValueError(f"DRQN learns from windows [B, L]; got reward of shape "
                         f"{items['reward'].shape} (transitions, not windows?)")
    return dict(items)


__all__ = ["CARRY_FIELD", "DRQNState", "carry_from_stored", "make_drqn", "stored_carry",
           "trained_steps", "window_learner", "window_n_step_td", "window_td_errors"]
