"""The agent interface: a NamedTuple of pure functions, like an optax transform.

An agent owns its networks, optimizer, schedules, loss and target updates; the training
loop (:func:`memjax.train.make_train`) owns the environments, the replay buffer, episode
statistics, chunking, and the recurrent carry's reset at episode starts. Everything is a
pure function of explicit state, so the loop runs under ``jit``, ``vmap`` over seeds and
``lax.scan``, and the agent's state is donated with the rest of the run. The four functions
and the carry's reset rule are documented in :class:`Agent`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Agent(NamedTuple):
    """An agent: four pure functions that the training loop calls.

    ```python
    agent = Agent(init, initial_carry, act, learn)

    state = agent.init(key, obs)             # obs: ONE observation [*obs_shape] (no batch axis)
    carry = agent.initial_carry(num_envs)    # pytree [num_envs, ...]; () when feedforward
    actions, carry, extras = agent.act(state, carry, obs, key, step, greedy)
    state, priorities, metrics = agent.learn(state, sample, key)
    ```

    A user-defined agent plugs into the loop with ``make_train(config, agent=my_agent)``; the
    README's "Agents: one loop for any agent" section has a complete example.

    Attributes:
      init: ``(key, obs) -> state``. ``obs`` is ONE observation ``[*obs_shape]`` (no batch axis);
        the state is any pytree (parameters, optimizer state, counters).
      initial_carry: ``(num_envs) -> carry``, the recurrent state per environment, a pytree
        ``[num_envs, ...]``; :func:`no_carry` (``()``) for feedforward agents.
      act: ``(state, carry, obs, key, step, greedy) -> (actions, carry, extras)``. ``obs`` is
        ``[E, *obs_shape]`` from E environments; ``step`` int32, the environment steps taken so
        far by this seed (for exploration schedules); ``greedy`` a static Python bool, True for
        evaluation (no exploration). Returns ``actions`` int32 ``[E]``, the next carry and
        ``extras``, a dict of per-environment arrays ``[E, ...]`` stored with the step in replay
        (e.g. the recurrent state before the step; ``{}`` when there is nothing to store). The
        loop replaces an environment's carry with ``initial_carry`` where its observation
        starts an episode, before calling ``act``.
      learn: ``(state, sample, key) -> (state, priorities, metrics)``. ``sample`` is a
        :class:`memjax.replay.Sample` from the loop's buffer (transitions ``[B, ...]``, or
        windows ``[B, L, ...]`` from a sequence layout; importance weights are ones for uniform
        replay). Returns the new state, ``priorities`` float32 ``[B]`` (new priorities of the
        sampled items, e.g. ``|TD|``) or None, and a dict of float32 scalar metrics (``loss`` by
        convention). The loop passes the priorities to
        ``buffer.update(buffer_state, sample.indices, priorities)`` for every buffer kind: a
        uniform buffer ignores them, a prioritized one needs them.
    """

    init: Callable
    initial_carry: Callable
    act: Callable
    learn: Callable


def no_carry(num_envs: int) -> tuple:
    """The carry of a feedforward agent: nothing (``()``, for any ``num_envs``)."""
    return ()


__all__ = ["Agent", "no_carry"]
