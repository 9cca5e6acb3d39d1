"""A memory-network Q-agent: MQN (Oh et al., 2016, "Control of Memory, Active Perception, and
Action in Minecraft") on the context of the last M observations, read from replay storage.

```python
network = MemoryQNetwork(num_actions=4, obs_shape=(5,), context_length=32)
agent = make_memnet(network, num_actions=4, optimizer=optax.adam(1e-3),
                    epsilon=optax.linear_schedule(1.0, 0.05, 100_000), n_step=1)
layout = memjax.replay.sequence(num_envs, length=40, period=8)   # no per-window fields
```

The network (MQN, the paper's feedforward variant; shapes for N queries, M = ``context_length``,
H = the last encoder width, d = ``memory``):

```
e_t   = encoder(obs_t)                                  [N, H]   (ReLU MLP; one conv for images)
query = W_c e_t                                         [N, d]
keys  = W_key e_{t-M..t-1} + age                        [N, M, d]  age: a learned vector per slot
vals  = W_val e_{t-M..t-1}                              [N, M, d]
per head h of G (the d features split in G groups of d/G):
p^h   = softmax over the valid slots and a null slot of (query^h . keys^h) / sqrt(d/G)
read^h = sum_i p^h_i vals^h_i + p^h_null v^h_null       [N, d/G]
q     = W_q relu(W_h query + concat_h read^h)          [N, A]
```

Slots whose step belongs to another episode than the query are masked out (weight exactly 0),
so no context crosses an episode boundary; the null slot (a learned key and value) is always
there, so the first step of an episode (no valid slot) reads ``v_null``.

Where the context comes from:

* **Acting**: the carry holds, per environment, a ring of the last M *raw observations* (in
  the environment's dtype) and how many of them belong to the running episode (int32);
  ``act`` reads them, then pushes the current observation. The loop resets the carry (count
  0) where an episode starts. Raw observations, not embeddings: the ring then gives exactly
  the Q-values the learner computes for the same steps with the same parameters (embeddings
  from older parameters would go stale), and for the suite's small vector observations they
  are also smaller than the embeddings (5 floats against 84 on the card games). The price
  is re-encoding M observations per environment and step while acting.
* **Learning**: replay stores each step once (the sequence layout, no extra field: the agent
  returns no extras) and samples windows of L = ``sequence_length`` steps; the first M steps
  of a window are context only, and each of the ``S = L - M - n_step + 1`` steps after them
  gets a TD error, its query and bootstrap reading the M steps before them from the same
  window. Steps of a window before an episode start are masked with ``first``. With the
  layout's ``period = S`` every stored step is trained in exactly one window position.

Differences from the paper: vector observations get an MLP encoder, not the paper's
convolutional one (image observations get one 3x3 conv, as
:class:`memjax.agents.RecurrentQNetwork`); keys get a learned vector per slot age (the
paper's memory has no order; without it the read cannot tell "8 steps ago" from "7 steps
ago", which ``RepeatPrevious`` needs); the read has G = ``heads`` attention heads (default 4;
the paper's is one: with one head, one of 4 seeds on ``RepeatPrevious-5`` spread its
attention over the wrong slots and stayed at chance for 1.5e5 steps, while the other three
attended to the card k - 1 steps back; with 4 heads all 4 seeds of the same run were at
>= 0.95 from 9.5e4 steps on); the dot products are scaled by 1/sqrt(d/G); a learned
null slot takes the attention where nothing else fits (an episode's first step; it also
lets the weights on the real slots sum to less than 1); M defaults to 32; training uses
Adam, n-step Double-Q targets and optional window priorities as
:func:`memjax.agents.make_drqn` does. It is MQN, not FRMQN: FRMQN's LSTM, fed back the
previous read, would make the query depend on the whole past, which brings back a recurrent
state to store and burn in (DRQN's scheme); the point of this agent is that its Q-values are
a function of the last M observations only.

The limitation that follows: nothing older than M steps is ever seen. With M = 32 that covers
whole episodes of the card games (31 steps), ``RepeatPrevious`` (k = 8: the card 7 steps
back) and ``MemoryChain-<L>`` for L <= 33 (the context bit is on the episode's first two
observations, the second L - 1 steps before the decision); ``MemoryChain-40`` needs
``context_length`` >= 39. A task whose memory outlives any affordable M (a bit kept for
thousands of steps) is DRQN's, not this agent's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from memjax.agents.base import Agent
from memjax.agents.dqn import DQNState
from memjax.agents.networks import network_kind
from memjax.agents.policies import epsilon_greedy
from memjax.agents.spec import AgentSpec, Windows, positive_ints, q_learning_settings, register
from memjax.agents.window_learning import (
    WindowConfig,
    check_windows,
    window_learner,
    window_n_step_td,
)


@struct.dataclass
class MemnetState(DQNState):
    """The state of a memory-network agent: the fields of :class:`memjax.agents.DQNState`
    (online and target parameters of the :class:`MemoryQNetwork`, optimizer state, updates
    done)."""


class MemoryQNetwork(nn.Module):
    """MQN (Oh et al., 2016) for vector or image observations: an encoder, a soft-attention
    read of the last ``context_length`` observations' keys and values with a query from the
    current observation, and a Q-head on the query and the read (see the module docstring).

    Call it as ``network.apply(params, obs [N, *obs_shape], context [N, M, *obs_shape],
    valid bool [N, M]) -> q float32 [N, A]``: ``context[:, M - 1]`` is the step just before
    ``obs``, ``context[:, 0]`` the oldest, and ``valid`` marks the slots of the query's own
    episode. The methods ``embed``, ``memory_slots`` and ``read`` split the call for callers
    that encode and project each observation once (the learner).

    Attributes:
      num_actions: size of the discrete action space, A.
      obs_shape: the shape of ONE observation (the carry's ring holds M of them).
      obs_dtype: the observations' dtype (the ring stores them in it).
      context_length: M, the observations before the current one that the read sees.
      hidden: widths of the encoder's ReLU layers (the embedding is the last one).
      memory: d, the width of queries, keys and values.
      heads: G, the attention heads (each reads with d / G of the features; G divides d).
      channels: conv filters for image observations ``[H, W, C]`` (0: no conv).
    """

    num_actions: int
    obs_shape: Sequence[int]
    obs_dtype: Any = jnp.float32
    context_length: int = 32
    hidden: Sequence[int] = (64,)
    memory: int = 64
    heads: int = 4
    channels: int = 0

    def setup(self):
        if self.context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {self.context_length}")
        if not self.hidden:
            raise ValueError("MemoryQNetwork needs at least one encoder layer (hidden)")
        if self.heads < 1 or self.memory % self.heads:
            raise ValueError(
                f"heads ({self.heads}) must be a positive divisor of memory ({self.memory})"
            )
        self.conv = nn.Conv(self.channels, (3, 3), padding="VALID") if self.channels else None
        self.encoder = [nn.Dense(width) for width in self.hidden]
        self.query = nn.Dense(self.memory)
        self.key = nn.Dense(self.memory, use_bias=False)
        self.value = nn.Dense(self.memory, use_bias=False)
        normal = nn.initializers.normal(1.0 / self.memory**0.5)
        self.age = self.param("age", normal, (self.context_length, self.memory))
        self.null_key = self.param("null_key", normal, (self.memory,))
        self.null_value = self.param("null_value", normal, (self.memory,))
        self.combine = nn.Dense(self.memory)
        self.head = nn.Dense(self.num_actions)

    def initial_carry(self, batch: int) -> dict:
        """The empty ring of ``batch`` environments: ``{"obs": [batch, M, *obs_shape]`` zeros
        of ``obs_dtype``, ``"count": int32 [batch]`` zeros} (``count``: how many of the newest
        slots belong to the running episode)."""
        return {
            "obs": jnp.zeros((batch, self.context_length, *self.obs_shape), self.obs_dtype),
            "count": jnp.zeros((batch,), jnp.int32),
        }

    def embed(self, obs):
        """float32 ``[N, H]``: the encoder's embedding of ``obs`` ``[N, *obs_shape]``."""
        x = jnp.asarray(obs, jnp.float32)
        if self.conv is not None:
            x = nn.relu(self.conv(x))
        x = x.reshape((x.shape[0], -1))
        for layer in self.encoder:
            x = nn.relu(layer(x))
        return x

    def memory_slots(self, embeddings):
        """``(keys, values)``, float32 ``[..., d]`` each: ``W_key e`` (before the slot's age
        vector) and ``W_val e`` of embeddings ``[..., H]``."""
        return self.key(embeddings), self.value(embeddings)

    def read(self, query_embedding, keys, values, valid):
        """Q-values from the current observation's embedding and its context's slots.

        Args:
          query_embedding: float32 ``[N, H]``, the current observation's embedding.
          keys: float32 ``[N, M, d]``, ``W_key e`` of the M observations before it, oldest
            first (see ``memory_slots``).
          values: float32 ``[N, M, d]``, their ``W_val e``.
          valid: bool ``[N, M]``, the slots of the query's episode.

        Returns:
          ``(q, weights)``: float32 ``[N, A]`` and the attention weights float32
          ``[N, G, M + 1]`` (per head; the null slot last; exactly 0 on invalid slots).
        """
        chex.assert_rank([query_embedding, keys, values, valid], [2, 3, 3, 2])
        chex.assert_equal_shape([keys, values])
        chex.assert_equal_shape_prefix([query_embedding, keys, valid], 1)
        split = lambda x: x.reshape((*x.shape[:-1], self.heads, -1))  # noqa: E731 [..., G, d/G]
        query = self.query(query_embedding)  # [N, d]
        heads_query, heads_keys = split(query), split(keys + self.age)  # [N, (M,) G, d/G]
        scale = (self.heads / self.memory) ** 0.5
        logits = jnp.einsum("ngd,nmgd->ngm", heads_query, heads_keys) * scale
        logits = jnp.where(valid[:, None], logits, -jnp.inf)
        null = jnp.einsum("ngd,gd->ng", heads_query, split(self.null_key))[..., None] * scale
        weights = jax.nn.softmax(jnp.concatenate([logits, null], axis=2), axis=2)
        read = jnp.einsum("ngm,nmgd->ngd", weights[..., :-1], split(values)) + weights[
            ..., -1:
        ] * split(self.null_value)  # [N, G, d/G]
        hidden = nn.relu(self.combine(query) + read.reshape(query.shape))
        return self.head(hidden), weights

    def step(self, carry: dict, obs):
        """One acting step, as the agent acts: ``(carry, obs [N, *obs_shape]) -> (carry after
        obs, q float32 [N, A])``, reading the ring ``carry`` (:meth:`initial_carry`), then
        pushing ``obs`` into it (what ``memjax export`` exports)."""
        q = self(obs, carry["obs"], ring_valid(carry["count"], self.context_length))
        return push(carry, obs), q

    def __call__(self, obs, context, valid):
        n, m = context.shape[:2]
        embedded = self.embed(jnp.concatenate([obs, context.reshape((n * m, *obs.shape[1:]))]))
        keys, values = self.memory_slots(embedded[n:].reshape((n, m, -1)))
        q, _ = self.read(embedded[:n], keys, values, valid)
        return q


def ring_valid(count, context_length: int):
    """bool ``[E, M]``: the newest ``count`` (int32 ``[E]``) slots of rings of M, oldest first."""
    return jnp.arange(context_length)[None] >= context_length - count[:, None]


def push(carry: dict, obs) -> dict:
    """The ring ``carry`` after ``obs`` ``[E, *obs_shape]``: the oldest slot dropped, ``obs``
    the newest, ``count`` up by one (at most M)."""
    ring = jnp.concatenate([carry["obs"][:, 1:], obs[:, None].astype(carry["obs"].dtype)], 1)
    return {"obs": ring, "count": jnp.minimum(carry["count"] + 1, ring.shape[1])}


def context_trained_steps(window: int, context_length: int, n_step: int) -> int:
    """Steps of a window of ``window`` steps that get a TD error:
    ``window - context_length - n_step + 1``.

    Raises:
      ValueError: the window has no such step (shorter than ``context_length + n_step``).
    """
    count = window - context_length - n_step + 1
    if count < 1:
        raise ValueError(
            f"a replay window of {window} steps (sequence_length) is shorter than "
            f"context_length ({context_length}) + n_step ({n_step}): no step "
            f"would have its whole context; use windows of at least "
            f"{context_length + n_step} steps"
        )
    return count


def window_contexts(first, context_length: int):
    """Where the queries of a window read: the context slots of each step's observation and
    of its next observation, and which of them are in the query's episode.

    For the observation of step ``t`` (``M <= t < L``) the context is steps ``t - M .. t - 1``;
    for the next observation of step ``s`` (``M <= s < L``) it is ``s - M + 1 .. s`` (an
    episode's final observation reads its own episode). A slot is valid when no episode
    starts after it up to the query: for step t's observation no ``first`` in
    ``(p, t]``, for step s's next observation none in ``(p, s]``.

    Args:
      first: bool ``[B, L]``, True where the step's observation starts an episode.
      context_length: M, ``1 <= M < L``.

    Returns:
      ``(positions, valid)``: int32 ``[2 (obs, next_obs), L - M, M]`` window positions of
      each query's slots, oldest first, and bool ``[B, 2, L - M, M]``.
    """
    chex.assert_rank(first, 2)
    length = first.shape[1]
    m = context_length
    episode = jnp.cumsum(first.astype(jnp.int32), axis=1)  # [B, L]
    positions = jnp.arange(length - m)[:, None] + jnp.arange(m)[None]  # t - M + j
    positions = jnp.stack([positions, positions + 1])  # [2, L-M, M]
    owner = jnp.stack([jnp.arange(m, length)] * 2)  # t, then s
    valid = episode[:, positions] == episode[:, owner][..., None]
    return positions.astype(jnp.int32), valid


def memnet_td_errors(
    network: MemoryQNetwork,
    params,
    target_params,
    windows,
    *,
    n_step: int,
    gamma: float,
    double: bool,
):
    """TD errors of a memory network on replayed windows (the module docstring's learning);
    differentiable with respect to ``params``.

    Args:
      network: the :class:`MemoryQNetwork` (its ``context_length`` is M).
      params: the online network's parameters.
      target_params: the target network's parameters.
      windows: ``{"obs" [B, L, ...], "action" int [B, L], "reward" [B, L], "next_obs"
        [B, L, ...], "terminated" [B, L], "first" bool [B, L]}``.
      n_step: steps of the return before bootstrapping.
      gamma: the discount.
      double: Double-Q targets.

    Returns:
      ``(td, q)``: float32 ``[B, S]`` the TD errors of the ``S = L - M - n_step + 1`` trained
      steps (window steps ``M .. M + S - 1``), and float32 ``[B, L - M, A]`` the online
      Q-values of the observations of steps ``M .. L - 1``.

    Raises:
      ValueError: ``L < M + n_step`` (see :func:`context_trained_steps`).
    """
    m = network.context_length
    batch, length = windows["reward"].shape
    steps = context_trained_steps(length, m, n_step)
    positions, valid = window_contexts(windows["first"], m)
    obs_shape = windows["obs"].shape[2:]

    def q_values(p):
        """float32 [B, L - M, A] x 2: Q at the observations and at the next observations.
        Only the first has a gradient: the next observations are embedded and read in calls
        of their own, behind ``stop_gradient``, so the backward pass skips them (a Double-Q
        argmax and the target need their values only)."""
        embed = lambda x: network.apply(
            p,
            x.reshape((-1, *obs_shape)),  # noqa: E731
            method=MemoryQNetwork.embed,
        )
        window_e = embed(windows["obs"]).reshape((batch, length, -1))
        # each step projected once, then gathered into the contexts that read it
        slots = network.apply(p, window_e, method=MemoryQNetwork.memory_slots)  # [B, L, d] x2

        def read(queries, which: int):  # queries [B, L - M, H]; 0: obs
            keys, values = (x[:, positions[which]].reshape((-1, m, x.shape[-1])) for x in slots)
            q, _ = network.apply(
                p,
                queries.reshape((-1, queries.shape[-1])),
                keys,
                values,
                valid[:, which].reshape((-1, m)),
                method=MemoryQNetwork.read,
            )
            return q.reshape((batch, length - m, -1))

        next_e = embed(windows["next_obs"][:, m:]).reshape((batch, length - m, -1))
        q_next = read(next_e, 1)
        return read(window_e[:, m:], 0), jax.lax.stop_gradient(q_next)

    (q, q_next_online), (_, q_next_target) = q_values(params), q_values(target_params)
    rest = {k: windows[k][:, m:] for k in ("action", "reward", "terminated", "first")}
    td = window_n_step_td(
        q,
        q_next_online,
        q_next_target,
        rest,
        steps=steps,
        n_step=n_step,
        gamma=gamma,
        double=double,
    )
    return td, q


def make_memnet(
    network: MemoryQNetwork,
    num_actions: int,
    optimizer: optax.GradientTransformation,
    *,
    epsilon: Callable,
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
    """A memory-network (MQN) agent acting from a ring of the last M observations and learning
    from replayed windows whose first M steps are context.

    ``act`` is epsilon-greedy in the Q-values of the current observations read against the
    carry's ring, pushes them into the ring, and returns no extras (replay stores nothing
    but the steps). ``learn`` takes windows ``[B, L, ...]`` with ``first`` (``L >= M +
    n_step``) and returns window priorities float32 ``[B]`` (``eta * max |TD| + (1 - eta) *
    mean |TD|`` over the trained steps, + ``priority_eps``) and the metrics ``loss`` and
    ``q``.

    Args:
      network: a :class:`MemoryQNetwork`.
      num_actions: the size of the discrete action space.
      optimizer: any optax transformation.
      epsilon: exploration schedule, environment steps -> probability of a random action.
      n_step: steps of the return before bootstrapping.
      gamma: discount.
      double: Double-Q targets (the online network picks the bootstrap action).
      loss: ``"mse"`` or ``"huber"``, weighted by the sample's importance weights.
      huber_delta: the Huber loss threshold.
      target_period: gradient updates between target-network updates, >= 1.
      tau: 1 copies the online parameters at a target update; less moves the target one
        Polyak step.
      eta: the weight of the max in a window's priority.
      priority_eps: added to the window priorities (never 0).

    Returns:
      An :class:`Agent` whose state is a :class:`MemnetState` and whose carry is the ring
      ``{"obs": [E, M, *obs_shape], "count": int32 [E]}``.

    Raises:
      ValueError: ``target_period`` < 1, ``n_step`` < 1 or ``eta`` outside [0, 1]; at trace
        time, windows shorter than ``M + n_step`` or a batch without ``first``.
    """
    if target_period < 1:
        raise ValueError(f"target_period must be >= 1 update, got {target_period}")
    if n_step < 1:
        raise ValueError(f"n_step must be >= 1, got {n_step}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    m = network.context_length

    def init(key, obs) -> MemnetState:
        ring = network.initial_carry(1)
        params = network.init(
            key, jnp.asarray(obs)[None], ring["obs"], ring_valid(ring["count"], m)
        )
        return MemnetState(
            params=params,
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=optimizer.init(params),
            updates=jnp.zeros((), jnp.int32),
        )

    def act(state: MemnetState, carry, obs, key, step, greedy: bool = False):
        q_values = network.apply(state.params, obs, carry["obs"], ring_valid(carry["count"], m))
        if greedy:
            actions = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
        else:
            actions = epsilon_greedy(key, q_values, epsilon(step))
        return actions, push(carry, obs), {}

    def td_fn(params, target_params, items):
        td, q = memnet_td_errors(
            network,
            params,
            target_params,
            checked_windows(items),
            n_step=n_step,
            gamma=gamma,
            double=double,
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


def checked_windows(items) -> dict:
    """The replay batch as windows, or ``ValueError`` naming what a memnet batch lacks."""
    missing = [
        k for k in ("obs", "action", "reward", "next_obs", "terminated", "first") if k not in items
    ]
    if missing:
        raise ValueError(
            f"the memory-network agent learns from windows of the sequence layout "
            f"with the field 'first'; the batch lacks {missing}"
        )
    if items["reward"].ndim != 2:
        raise ValueError(
            f"the memory-network agent learns from windows [B, L]; got reward of "
            f"shape {items['reward'].shape} (transitions, not windows?)"
        )
    return dict(items)


@dataclasses.dataclass(frozen=True)
class MemnetConfig(WindowConfig):
    """The memory-network agent's knobs: the context it reads, the attention (``memory``
    features split over ``attention_heads``), its torso and the replayed windows."""

    context_length: int = 32  # past observations it reads (M; a window's first M: context only)
    attention_heads: int = 4  # heads of the read, memory / heads features each (must divide memory)

    def check(self) -> None:
        super().check()
        positive_ints(self, ("context_length", "attention_heads"))
        if self.memory % self.attention_heads:
            raise ValueError(
                f"agent 'memnet': attention_heads ({self.attention_heads}) must divide memory "
                f"({self.memory}), the width the heads split"
            )


def memnet_network(config: MemnetConfig, obs, num_actions: int) -> MemoryQNetwork:
    """The memory Q-network of ``config`` for observations like ``obs`` (its context ring
    holds them as they come, dtype included)."""
    conv = network_kind(config.network, tuple(obs.shape)) == "conv"
    return MemoryQNetwork(
        num_actions,
        obs_shape=tuple(obs.shape),
        obs_dtype=obs.dtype,
        context_length=config.context_length,
        hidden=tuple(config.hidden),
        memory=config.memory,
        heads=config.attention_heads,
        channels=16 if conv else 0,
    )


def memnet_agent(train_config, network, num_actions: int, optimizer) -> Agent:
    """:func:`make_memnet` with the settings of ``train_config`` and its :class:`MemnetConfig`."""
    return make_memnet(
        network,
        num_actions,
        optimizer,
        n_step=train_config.n_step,
        eta=train_config.agent_config.eta,
        **q_learning_settings(train_config),
    )


def memnet_windows(train_config) -> Windows:
    """Windows of ``sequence_length`` steps every ``sequence_period`` rows; nothing stored per
    window (a window's context is its own first ``context_length`` steps)."""
    agent = train_config.agent_config
    return Windows(agent.sequence_length, agent.sequence_period)


def check_memnet(train_config) -> None:
    """``ValueError`` for bad :class:`MemnetConfig` knobs, alone or with the loop's n-step."""
    train_config.agent_config.check()
    check_windows(
        train_config,
        "memnet",
        "context_length",
        "no step of a window would have its whole context",
        hint=" (or a shorter --context-length)",
    )


def memnet_reach(config: MemnetConfig) -> int:
    """The most steps back memnet can read: its ``context_length``."""
    return config.context_length


MEMNET = register(
    AgentSpec(
        name="memnet",
        config=MemnetConfig,
        make_network=memnet_network,
        make_agent=memnet_agent,
        windows=memnet_windows,
        validate=check_memnet,
        feedforward=False,
        reach=memnet_reach,
    )
)
"""The memory-network agent's spec, registered as ``"memnet"``."""


__all__ = [
    "MEMNET",
    "MemnetConfig",
    "MemnetState",
    "MemoryQNetwork",
    "context_trained_steps",
    "make_memnet",
    "memnet_td_errors",
    "push",
    "ring_valid",
    "window_contexts",
]
