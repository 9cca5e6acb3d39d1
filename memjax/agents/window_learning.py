"""What the agents that learn from replayed windows share (DRQN, the memory network): their
common knobs (:class:`WindowConfig`), n-step TD errors of a window's steps, and the ``learn``
that turns them into an importance-weighted loss, a gradient step and window priorities
(R2D2's ``eta * max + (1 - eta) * mean``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from memjax.agents import losses
from memjax.agents.dqn import gradient_step
from memjax.agents.spec import QNetworkConfig, positive_ints
from memjax.replay.prioritized import sequence_priorities


@dataclasses.dataclass(frozen=True)
class WindowConfig(QNetworkConfig):
    """The knobs of an agent that learns from replayed windows (DRQN, memnet)."""

    memory: int = 64  # drqn: recurrent state size; memnet: width of queries, keys and values
    sequence_length: int = 40  # steps per replayed window, burn-in or context included
    sequence_period: int = 20  # rows between the starts of replayed windows
    eta: float = 0.9  # window priority: eta * max |TD| + (1 - eta) * mean |TD|

    def check(self) -> None:
        super().check()
        positive_ints(self, ("memory", "sequence_length", "sequence_period"))
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta!r}")


def check_windows(train_config, name: str, lead: str, why: str, hint: str = "") -> None:
    """``ValueError`` unless a window of ``sequence_length`` steps holds the agent's ``lead``
    steps (the knob: DRQN's burn-in, memnet's context) and an n-step return after them, and
    the buffer's rows fit whole periods (:func:`check_window_rows`)."""
    agent = train_config.agent_config
    lead_steps, n_step = getattr(agent, lead), train_config.n_step
    if agent.sequence_length < lead_steps + n_step:
        raise ValueError(
            f"agent {name!r}: sequence_length ({agent.sequence_length}) is shorter than {lead} "
            f"({lead_steps}) + n_step ({n_step}): {why}; use --sequence-length "
            f"{lead_steps + n_step} or more{hint}"
        )
    check_window_rows(train_config, name)


def check_window_rows(train_config, name: str) -> None:
    """``ValueError`` unless the buffer's rows (``buffer_capacity / num_envs``) are a multiple
    of ``sequence_period`` (windows start on the same rows on every lap of the ring)."""
    rows = train_config.buffer_capacity // train_config.num_envs
    period = train_config.agent_config.sequence_period
    if rows % period:
        raise ValueError(
            f"agent {name!r}: the buffer's {rows} rows (buffer_capacity "
            f"{train_config.buffer_capacity} / num_envs {train_config.num_envs}) "
            f"must be a multiple of sequence_period ({period})"
        )


def window_learner(
    td_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    loss: str,
    huber_delta: float,
    target_period: int,
    tau: float,
    eta: float,
    priority_eps: float,
) -> Callable:
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
            state.params, state.target_params, sample
        )
        state = gradient_step(state, grads, optimizer, target_period=target_period, tau=tau)
        priorities = sequence_priorities(jnp.abs(td), eta=eta) + priority_eps
        return state, priorities, {"loss": value, "q": mean_q}

    return learn


def window_n_step_td(
    q, q_next_online, q_next_target, windows, *, steps: int, n_step: int, gamma: float, double: bool
):
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
    offsets = jnp.arange(steps)[:, None] + jnp.arange(n_step)[None]  # [S, n]
    per_step = jax.vmap(
        jax.vmap(losses.n_step_bootstrap, in_axes=(0, 0, 0, None)), in_axes=(0, 0, 0, None)
    )
    partial, discount, last = per_step(
        windows["reward"][:, offsets],
        windows["terminated"][:, offsets],
        windows["first"][:, offsets],
        gamma,
    )  # [B, S] each
    at = jnp.arange(steps)[None] + last  # bootstrap step
    pick = jax.vmap(lambda values, index: values[index])
    value_fn = jax.vmap(jax.vmap(losses.bootstrap_value))
    bootstrap = pick(q_next_target, at)
    if double:
        values = value_fn(bootstrap, pick(jax.lax.stop_gradient(q_next_online), at))
    else:
        values = value_fn(bootstrap)
    actions = windows["action"][:, :steps].astype(jnp.int32)
    return jax.vmap(jax.vmap(losses.q_learning_td))(
        q[:, :steps], actions, partial + discount * values
    )


__all__ = [
    "WindowConfig",
    "check_windows",
    "check_window_rows",
    "window_learner",
    "window_n_step_td",
]
