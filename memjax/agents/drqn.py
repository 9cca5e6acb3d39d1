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

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from memjax.agents.base import Agent
from memjax.agents.cells import PARALLEL_CELLS, check_cell
from memjax.agents.dqn import DQNState
from memjax.agents.networks import network_kind
from memjax.agents.policies import epsilon_greedy
from memjax.agents.recurrent import (
    CELL_KINDS,
    RecurrentQNetwork,
    check_cell_layers,
    unroll,
)
from memjax.agents.spec import AgentSpec, Windows, q_learning_settings, register
from memjax.agents.window_learning import (
    WindowConfig,
    check_windows,
    window_learner,
    window_n_step_td,
)

CARRY_FIELD = "carry"
"""The replay field (and ``act`` extra) that holds the carry before each step."""


@struct.dataclass
class DRQNState(DQNState):
    """The state of a DRQN agent: the fields of :class:`memjax.agents.DQNState` (online and
    target parameters of the recurrent Q-network, optimizer state, updates done)."""


def stored_carry(carry) -> jax.Array:
    """A carry as ONE array for replay: GRU and the parallel cells ``[E, H]`` as is (a complex
    state is already real and imaginary parts), LSTM ``(c, h)`` as ``[E, 2, H]``."""
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
        raise ValueError(
            f"a replay window of {window} steps is shorter than burn_in ({burn_in}) "
            f"+ n_step ({n_step}): no step would be trained; use windows of at "
            f"least {burn_in + n_step} steps"
        )
    return count


def make_drqn(
    network: RecurrentQNetwork,
    num_actions: int,
    optimizer: optax.GradientTransformation,
    *,
    epsilon: Callable,
    burn_in: int = 0,
    n_step: int = 1,
    gamma: float = 0.99,
    double: bool = True,
    loss: str = "mse",
    huber_delta: float = 1.0,
    target_period: int = 25,
    tau: float = 1.0,
    eta: float = 0.9,
    priority_eps: float = 1e-6,
) -> Agent:
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
    parallel = cell in PARALLEL_CELLS

    def init(key, obs) -> DRQNState:
        params = network.init(key, network.initial_carry(1), jnp.asarray(obs)[None])
        return DRQNState(
            params=params,
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=optimizer.init(params),
            updates=jnp.zeros((), jnp.int32),
        )

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
        td, q = window_td_errors(
            network.apply,
            params,
            target_params,
            windows,
            start,
            burn_in=burn_in,
            n_step=n_step,
            gamma=gamma,
            double=double,
            parallel=parallel,
        )
        return td, q[:, : td.shape[1]]

    learn = window_learner(
        td_fn,
        optimizer,
        loss=loss,
        huber_delta=huber_delta,
        target_period=target_period,
        tau=tau,
        eta=eta,
        priority_eps=priority_eps,
    )
    return Agent(init=init, initial_carry=network.initial_carry, act=act, learn=learn)


def window_td_errors(
    apply_fn,
    params,
    target_params,
    windows,
    start,
    *,
    burn_in: int,
    n_step: int,
    gamma: float,
    double: bool,
    initial=None,
    parallel: bool = False,
):
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
      initial: the carry at an episode's start, put back where ``first`` (pytree
        ``[B, ...]``); None: zeros (see :func:`memjax.agents.unroll`).
      parallel: ``apply_fn`` runs a whole window in one call (a parallel cell; see
        :func:`memjax.agents.unroll`).

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
        burn_obs, burn_first = burn(windows["obs"]), burn(windows["first"])
        online_start, _, _ = unroll(
            apply_fn, params, start, burn_obs, burn_first, None, initial, parallel
        )
        online_start = jax.lax.stop_gradient(online_start)
        target_start, _, _ = unroll(
            apply_fn, target_params, start, burn_obs, burn_first, None, initial, parallel
        )
    obs, first, next_obs = (rest(windows[k]) for k in ("obs", "first", "next_obs"))
    _, q, q_next_online = unroll(
        apply_fn, params, online_start, obs, first, next_obs, initial, parallel
    )
    _, _, q_next_target = unroll(
        apply_fn, target_params, target_start, obs, first, next_obs, initial, parallel
    )
    rest_windows = {k: rest(windows[k]) for k in ("action", "reward", "terminated", "first")}
    td = window_n_step_td(
        q,
        q_next_online,
        q_next_target,
        rest_windows,
        steps=steps,
        n_step=n_step,
        gamma=gamma,
        double=double,
    )
    return td, q


def checked_windows(items) -> dict:
    """The replay batch as windows, or ``ValueError`` naming what a DRQN batch lacks."""
    missing = [
        k
        for k in ("obs", "action", "reward", "next_obs", "terminated", "first", CARRY_FIELD)
        if k not in items
    ]
    if missing:
        raise ValueError(
            f"DRQN learns from windows of the sequence layout with the fields "
            f"'first' and a per-window '{CARRY_FIELD}'; the batch lacks {missing}"
        )
    if items["reward"].ndim != 2:
        raise ValueError(
            f"DRQN learns from windows [B, L]; got reward of shape "
            f"{items['reward'].shape} (transitions, not windows?)"
        )
    return dict(items)


@dataclasses.dataclass(frozen=True)
class DRQNConfig(WindowConfig):
    """DRQN's knobs: the recurrent Q-network (``cell``, ``memory``, torso ``hidden``), the
    replayed windows and their burn-in, and the window priority's ``eta``."""

    cell: str = "gru"  # recurrent cell: gru | lstm (stepped) | lru | mingru | ffm (parallel scan)
    cell_layers: int = 1  # parallel cells stacked, a residual ReLU block between two (gru, lstm: 1)
    burn_in: int = 8  # window steps that only warm the stored state up (no loss, no gradient)

    def check(self) -> None:
        super().check()
        check_cell(self.cell, self.memory, CELL_KINDS)
        check_cell_layers(self.cell, self.cell_layers)
        if not isinstance(self.burn_in, int) or isinstance(self.burn_in, bool) or self.burn_in < 0:
            raise ValueError(f"burn_in must be an integer >= 0, got {self.burn_in!r}")


def drqn_network(config: DRQNConfig, obs, num_actions: int) -> RecurrentQNetwork:
    """The recurrent Q-network of ``config`` (a conv torso for image observations)."""
    conv = network_kind(config.network, tuple(obs.shape)) == "conv"
    return RecurrentQNetwork(
        num_actions,
        hidden=tuple(config.hidden),
        memory=config.memory,
        cell=config.cell,
        channels=16 if conv else 0,
        layers=config.cell_layers,
    )


def drqn_agent(train_config, network, num_actions: int, optimizer) -> Agent:
    """:func:`make_drqn` with the settings of ``train_config`` and its :class:`DRQNConfig`."""
    agent = train_config.agent_config
    return make_drqn(
        network,
        num_actions,
        optimizer,
        burn_in=agent.burn_in,
        n_step=train_config.n_step,
        eta=agent.eta,
        **q_learning_settings(train_config),
    )


def drqn_windows(train_config) -> Windows:
    """Windows of ``sequence_length`` steps every ``sequence_period`` rows, with the carry
    before each window stored once per window."""
    agent = train_config.agent_config
    return Windows(agent.sequence_length, agent.sequence_period, per_window=(CARRY_FIELD,))


def check_drqn(train_config) -> None:
    """``ValueError`` for bad :class:`DRQNConfig` knobs, alone or with the loop's n-step."""
    train_config.agent_config.check()
    check_windows(train_config, "drqn", "burn_in", "no step of a window would be trained")


DRQN = register(
    AgentSpec(
        name="drqn",
        config=DRQNConfig,
        make_network=drqn_network,
        make_agent=drqn_agent,
        windows=drqn_windows,
        validate=check_drqn,
        feedforward=False,
    )
)
"""The DRQN agent's spec, registered as ``"drqn"``."""


__all__ = [
    "DRQN",
    "DRQNConfig",
    "CARRY_FIELD",
    "DRQNState",
    "carry_from_stored",
    "make_drqn",
    "stored_carry",
    "trained_steps",
    "window_td_errors",
]
