"""DQN (Mnih et al., 2015) and Double DQN (van Hasselt et al., 2016) as an :class:`Agent`,
with n-step targets from replayed windows.

```python
agent = make_dqn(MLPQNetwork(num_actions=2), num_actions=2,
                 optimizer=optax.adam(2.5e-4),
                 epsilon=optax.linear_schedule(1.0, 0.05, 250_000))
```

The number of steps n of the targets is the replay's: transitions give 1-step targets,
windows of n steps (``memjax.replay.sequence(num_envs, length=n)``) give n-step targets
``sum_k gamma^k r_{t+k} + gamma^n max_a Q_target(s_{t+n}, a)``, cut at termination and
bootstrapped through truncation (see :mod:`memjax.agents.losses`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from memjax.agents import losses
from memjax.agents.base import Agent, no_carry
from memjax.agents.networks import make_network, network_kind
from memjax.agents.policies import epsilon_greedy
from memjax.agents.spec import AgentSpec, QNetworkConfig, q_learning_settings, register


@struct.dataclass
class DQNState:
    """The state of a DQN agent.

    Attributes:
      params: the online Q-network's parameters.
      target_params: the target network's parameters.
      opt_state: the optimizer's state.
      updates: int32 scalar, gradient updates done.
    """

    params: Any
    target_params: Any
    opt_state: Any
    updates: jax.Array


def gradient_step(
    state, grads, optimizer: optax.GradientTransformation, *, target_period: int, tau: float = 1.0
):
    """One optimizer step on ``state.params`` and the target network's update.

    Args:
      state: a :class:`DQNState` (or a subclass: the same type comes back).
      grads: the loss's gradients with respect to ``state.params``.
      optimizer: the optax transformation whose state is ``state.opt_state``.
      target_period: updates between target-network updates.
      tau: 1 copies the online parameters at a target update; less moves the target one
        Polyak step of size ``tau``.

    Returns:
      The new state, ``updates`` counted up by one.
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    count = state.updates + 1
    # a traced tau (a population's lane value) always takes the Polyak step; at 1 it is the copy
    hard = isinstance(tau, (int, float)) and tau == 1.0
    moved = params if hard else optax.incremental_update(params, state.target_params, tau)
    target_params = optax.periodic_update(moved, state.target_params, count, target_period)
    return state.replace(
        params=params, target_params=target_params, opt_state=opt_state, updates=count
    )


def make_dqn(
    network: nn.Module,
    num_actions: int,
    optimizer: optax.GradientTransformation,
    *,
    epsilon: Callable,
    gamma: float = 0.99,
    double: bool = False,
    loss: str = "mse",
    huber_delta: float = 1.0,
    target_period: int = 25,
    tau: float = 1.0,
    priority_eps: float = 1e-6,
) -> Agent:
    """A DQN or Double DQN agent.

    ``act`` is epsilon-greedy in the online Q-values (greedy when ``greedy=True``) and keeps no
    carry. ``learn`` takes transitions or windows of n steps (n-step targets, see
    :func:`memjax.agents.td_errors`) and returns priorities ``|TD| + priority_eps`` float32 ``[B]``
    and the metrics ``loss`` (the weighted loss) and ``q`` (mean online Q at the sampled
    observations).

    Args:
      network: flax module, ``obs [B, *obs_shape] -> Q-values float32 [B, num_actions]``.
      num_actions: the size of the discrete action space.
      optimizer: any optax transformation (learning-rate schedules and clipping inside).
      epsilon: exploration schedule, environment steps -> probability of a random action
        (e.g. ``optax.linear_schedule(1.0, 0.05, 250_000)``).
      gamma: discount.
      double: Double-DQN targets (the online network picks the bootstrap action).
      loss: ``"mse"`` (``0.5 td^2``) or ``"huber"``, weighted by the sample's importance weights.
      huber_delta: the Huber loss threshold.
      target_period: gradient updates between target-network updates, >= 1.
      tau: 1 copies the online parameters at a target update; less moves the target one
        Polyak step of size ``tau``.
      priority_eps: added to ``|TD|`` for the returned priorities (never 0).

    Returns:
      An :class:`Agent` whose state is a :class:`DQNState`.

    Raises:
      ValueError: ``target_period`` < 1 (an unknown ``loss`` raises when ``learn`` is traced).
    """
    if target_period < 1:
        raise ValueError(f"target_period must be >= 1 update, got {target_period}")

    def init(key, obs) -> DQNState:
        params = network.init(key, jnp.asarray(obs)[None])
        return DQNState(
            params=params,
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=optimizer.init(params),
            updates=jnp.zeros((), jnp.int32),
        )

    def act(state: DQNState, carry, obs, key, step, greedy: bool = False):
        q_values = network.apply(state.params, obs)
        if greedy:
            return jnp.argmax(q_values, axis=-1).astype(jnp.int32), carry, {}
        return epsilon_greedy(key, q_values, epsilon(step)), carry, {}

    def loss_fn(params, target_params, sample):
        td, q_tm1 = losses.td_errors(
            params, target_params, network.apply, sample.items, gamma=gamma, double=double
        )
        value = losses.weighted_loss(td, sample.weights, loss=loss, huber_delta=huber_delta)
        return value, (td, jnp.mean(q_tm1))

    def learn(state: DQNState, sample, key):
        (value, (td, mean_q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.target_params, sample
        )
        state = gradient_step(state, grads, optimizer, target_period=target_period, tau=tau)
        return state, jnp.abs(td) + priority_eps, {"loss": value, "q": mean_q}

    return Agent(init=init, initial_carry=no_carry, act=act, learn=learn)


@dataclasses.dataclass(frozen=True)
class DQNConfig(QNetworkConfig):
    """DQN's knobs: the Q-network's torso (``network``, ``hidden``), Double-Q and the loss.
    The loop's settings (discount, n-step, target updates, exploration) are
    :class:`memjax.train.TrainConfig`'s."""


def dqn_network(config: DQNConfig, obs, num_actions: int) -> nn.Module:
    """The MLP or conv Q-network of ``config.network`` for observations like ``obs`` (a
    ``jax.ShapeDtypeStruct`` of one observation); see :func:`memjax.agents.network_kind`."""
    return make_network(network_kind(config.network, tuple(obs.shape)), num_actions, config.hidden)


def dqn_agent(
    train_config, network: nn.Module, num_actions: int, optimizer: optax.GradientTransformation
) -> Agent:
    """:func:`make_dqn` with the settings of ``train_config`` and its :class:`DQNConfig`."""
    return make_dqn(network, num_actions, optimizer, **q_learning_settings(train_config))


def check_dqn(train_config) -> None:
    """``ValueError`` for bad :class:`DQNConfig` knobs."""
    train_config.agent_config.check()


DQN = register(
    AgentSpec(
        name="dqn",
        config=DQNConfig,
        make_network=dqn_network,
        make_agent=dqn_agent,
        validate=check_dqn,
    )
)
"""The DQN / Double DQN agent's spec, registered as ``"dqn"``."""


__all__ = ["DQN", "DQNConfig", "DQNState", "gradient_step", "make_dqn"]
