"""A Neural Turing Machine Q-agent (Graves, Wayne & Danihelka, 2014, "Neural Turing Machines",
arXiv:1410.5401), acting with its whole state in the carry and trained as DRQN is (R2D2's
stored state, burn-in, n-step Double-Q targets and window priorities; see
:mod:`memjax.agents.drqn`).

```python
network = NTMQNetwork(num_actions=2, memory=64, memory_rows=16, memory_width=16)
agent = make_ntm(network, num_actions=2, optimizer=optax.adam(1e-3),
                 epsilon=optax.linear_schedule(1.0, 0.05, 100_000), burn_in=8, n_step=3)
layout = memjax.replay.sequence(num_envs, length=40, period=20, per_window=("carry", "memory"))
```

One step of the network (B environments; N = ``memory_rows``, W = ``memory_width``, R =
``read_heads``, s = ``shift_range``; head 0 writes, heads 1..R read):

```
x_t        = encoder(obs_t)                                ReLU MLP (one conv for images)
h_t, c_t   = controller(c_{t-1}, [x_t, r_{t-1}])       LSTM | GRU | LRU | minGRU | FFM | ReLU layer
per head   = Dense(h_t) -> k (W), beta, g, s (2s+1), gamma; the write head also e, a (W)
             beta = softplus(.), g = sigmoid(.), s = softmax(.), gamma = 1 + softplus(.),
             e = sigmoid(.), a = tanh(.)
addressing (content, interpolation, shift, sharpening), for a head with last weighting w':
  K_i      = k . M_i / (sqrt(|k|^2 + eps) sqrt(|M_i|^2 + eps))        cosine similarity
  wc_i     = softmax_i(beta K_i)                                      content
  wg       = g wc + (1 - g) w'                                        interpolation
  ws_i     = sum_{j=-s..s} s_j wg_{(i - j) mod N}                     circular shift
  w_i      = (ws_i + eps)^gamma / sum_k (ws_k + eps)^gamma            sharpening
write (head 0 addresses M_{t-1}):  M_t(i) = M_{t-1}(i) (1 - w_i e) + w_i a   erase, then add
read  (heads 1..R address M_t):    r_t = sum_i w_i M_t(i)                    [B, R, W]
q_t        = MLP head([h_t, r_t])                                  [B, A]
```

The carry (per environment) is the whole state: the controller's (LSTM ``[c, h]``, GRU
``h``, a linear recurrent cell's carry, none for the feed-forward one), the memory ``M``
``[N, W]``, the heads' last weightings ``[R + 1, N]`` and the last read vectors ``[R, W]``.
The loop puts :meth:`NTMQNetwork.initial_carry` back where an episode starts, and so does
the learner's unroll where ``first`` is set inside a window. Replay stores the carry before
each window's first step once per window (the sequence layout's ``per_window`` fields):
``carry`` (float32, the controller state, weightings and read vectors concatenated) and
``memory`` (``[N, W]``, stored through ``memory_codec``: bfloat16 by default, or int8 with a
float32 scale per row, :func:`row_int8`). Learning from a window is DRQN's (burn-in from the
stored state without gradient, then n-step TD errors of the steps after it).

Where this departs from the paper, and why:

* **Order of reading and writing.** The paper does not fix it. Here the write head addresses
  and writes first, then the read heads address (by content) and read the memory after the
  write, as the DNC (Graves et al., 2016) orders them: the Q-values of a step can use what
  that step wrote.
* **Initial state.** Memory: the constant 1e-6 (Collier & Beel, 2018, "Implementing Neural
  Turing Machines", found constant initialisation the most reliable); weightings: one-hot on
  row 0 (a uniform weighting is a fixed point of shifting and sharpening, so a head steered
  by location alone could never leave it); read vectors: the read of that memory with those
  weightings. They are constants, not learned: ``Agent.initial_carry`` takes no parameters
  (the loop resets carries with it), and a constant start is what the stored windows replay.
* **Epsilons.** ``eps = 1e-8`` inside the square roots of the cosine's norms (a zero key or an
  all-zero memory row gives similarity 0, not NaN, and the norms' gradients stay finite) and
  in the sharpening (``log(ws + eps)``: a weight that underflowed to 0 has a finite gradient
  with respect to ``gamma``). Sharpening is computed as ``softmax(gamma log(ws + eps))``, the
  same value, without overflow for a large ``gamma``.
* **Bounded head outputs.** The paper leaves the add vector unconstrained; here ``a = tanh(.)``
  so one write moves a memory entry by at most 1 (bounded memory also keeps its bfloat16 or
  int8 storage accurate). The key is linear (cosine similarity ignores its scale).
* **Controller and output.** An LSTM by default (the paper used LSTM and feed-forward
  controllers; GRU and the linear recurrent cells LRU, minGRU and FFM are offered too), its
  input the encoded observation and the last read vectors, as the paper's. The paper's
  outputs come from the controller alone (a read reaches them through the controller's next
  input); here the Q-head also takes the current read vectors, as common implementations do,
  so that a step's Q-values use what it reads without waiting a step.
* **One write head.** The paper allows several; with one, erase-then-add needs no ordering
  of heads.
* **Training.** The paper trains by backpropagation through whole sequences with RMSProp and
  gradient clipping on supervised tasks; here the agent learns Q-values from replayed windows
  as R2D2 does (Adam, n-step Double-Q targets, burn-in from the state stored with the window,
  no gradient through the burn-in or into the stored state).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import memjax.codecs as mc
from memjax import _pytree
from memjax.agents.base import Agent
from memjax.agents.cells import PARALLEL_CELLS, check_cell, make_cell
from memjax.agents.dqn import DQNState
from memjax.agents.drqn import window_td_errors
from memjax.agents.networks import network_kind
from memjax.agents.policies import epsilon_greedy
from memjax.agents.spec import AgentSpec, Windows, positive_ints, q_learning_settings, register
from memjax.agents.window_learning import (
    WindowConfig,
    check_windows,
    window_learner,
)
from memjax.codecs.base import add_count, check_input, check_stored, example_spec, zero_count

CONTROLLER_KINDS = ("lstm", "gru", "feedforward", *PARALLEL_CELLS)
"""The controllers :class:`NTMQNetwork` takes: the stepped cells, a ReLU layer without state,
and the linear recurrent cells of :mod:`memjax.agents.cells` (stepped here too: each step's
controller input holds the reads of the step before, so the steps cannot be scanned in
parallel)."""
MEMORY_CODECS = ("none", "bfloat16", "int8")
"""How replay may store the memory matrix (``NTMConfig.memory_codec``)."""
CARRY_FIELD = "carry"
"""The per-window replay field (and ``act`` extra) with the controller state, the heads' last
weightings and read vectors, float32 ``[E, K]``."""
MEMORY_FIELD = "memory"
"""The per-window replay field (and ``act`` extra) with the memory matrix ``[E, N, W]``."""
EPS = 1e-8
"""The epsilon of the cosine similarity's norms and of the sharpening's logarithm."""
INITIAL_MEMORY = 1e-6
"""Every entry of the memory at an episode's start (Collier & Beel, 2018)."""


# --------------------------------------------------------------------------- addressing
# Each function takes any leading batch axes (environments, heads) that broadcast together.


def content_weights(memory, key, beta):
    """``softmax_i(beta * cos(key, memory_i))``: memory ``[..., N, W]``, key ``[..., W]``,
    beta ``[...]`` -> ``[..., N]``; ``eps`` inside the norms (a zero key or row: cosine 0)."""
    dot = jnp.sum(memory * key[..., None, :], axis=-1)
    rows = jnp.sqrt(jnp.sum(memory**2, axis=-1) + EPS)
    norm = jnp.sqrt(jnp.sum(key**2, axis=-1) + EPS)
    return jax.nn.softmax(beta[..., None] * dot / (rows * norm[..., None]), axis=-1)


def interpolate(content, previous, gate):
    """``g * content + (1 - g) * previous``: weightings ``[..., N]``, gate ``[...]``."""
    return gate[..., None] * content + (1.0 - gate[..., None]) * previous


def shift(weights, shifts):
    """Circular convolution ``out_i = sum_{j=-s..s} shifts_j w_{(i - j) mod N}``: weights
    ``[..., N]``, shifts ``[..., 2s + 1]`` (index 0 is the shift ``-s``)."""
    s = (shifts.shape[-1] - 1) // 2
    rolled = jnp.stack([jnp.roll(weights, j, axis=-1) for j in range(-s, s + 1)], axis=-2)
    return jnp.sum(shifts[..., None] * rolled, axis=-2)


def sharpen(weights, gamma):
    """``(w + eps)^gamma / sum (w + eps)^gamma`` (as a softmax of ``gamma log(w + eps)``):
    weights ``[..., N]``, gamma ``[...]`` (>= 1)."""
    return jax.nn.softmax(gamma[..., None] * jnp.log(weights + EPS), axis=-1)


def address(memory, previous, key, beta, gate, shifts, gamma):
    """A head's new weighting ``[..., N]``: content, interpolation with ``previous``, shift,
    sharpening (the module docstring's addressing)."""
    content = content_weights(memory, key, beta)
    return sharpen(shift(interpolate(content, previous, gate), shifts), gamma)


def write(memory, weights, erase, add):
    """Erase then add: ``M_i (1 - w_i e) + w_i a``; memory ``[..., N, W]``, weights ``[..., N]``,
    erase and add ``[..., W]``."""
    w = weights[..., :, None]
    return memory * (1.0 - w * erase[..., None, :]) + w * add[..., None, :]


def read(memory, weights):
    """``sum_i w_i M_i``: memory ``[..., N, W]``, weights ``[..., N]`` -> ``[..., W]``."""
    return jnp.sum(weights[..., :, None] * memory, axis=-2)


def head_sizes(memory_width: int, read_heads: int, shift_range: int) -> int:
    """The controller-output features the heads take: per head ``W + 2s + 4`` (key, beta,
    gate, shifts, gamma), and the write head's erase and add vectors (``2W``)."""
    return (read_heads + 1) * (memory_width + 2 * shift_range + 4) + 2 * memory_width


def split_heads(emitted, memory_width: int, read_heads: int, shift_range: int) -> dict:
    """The heads' parameters from the raw features ``[..., head_sizes]`` of the controller's
    output layer: ``key [..., R + 1, W]``, ``beta``, ``gate``, ``gamma [..., R + 1]``, ``shifts
    [..., R + 1, 2s + 1]`` (head 0 writes), ``erase`` and ``add`` ``[..., W]``."""
    w, s = memory_width, 2 * shift_range + 1
    per_head = w + s + 3
    heads = emitted[..., : (read_heads + 1) * per_head]
    heads = heads.reshape((*emitted.shape[:-1], read_heads + 1, per_head))
    rest = emitted[..., (read_heads + 1) * per_head :]
    return {
        "key": heads[..., :w],
        "beta": jax.nn.softplus(heads[..., w]),
        "gate": jax.nn.sigmoid(heads[..., w + 1]),
        "shifts": jax.nn.softmax(heads[..., w + 2 : w + 2 + s], axis=-1),
        "gamma": 1.0 + jax.nn.softplus(heads[..., w + 2 + s]),
        "erase": jax.nn.sigmoid(rest[..., :w]),
        "add": jnp.tanh(rest[..., w:]),
    }


def memory_step(memory, weights, heads: dict):
    """One step of the memory: the write head (0) addresses ``memory`` and writes, then the
    read heads address the written memory and read.

    Args:
      memory: ``[B, N, W]``, the memory before the step.
      weights: ``[B, R + 1, N]``, the heads' last weightings (the write head's first).
      heads: :func:`split_heads`'s parameters.

    Returns:
      ``(memory, weights, reads)``: ``[B, N, W]``, ``[B, R + 1, N]``, ``[B, R, W]``.
    """
    pick = lambda h: {k: v[:, h] for k, v in heads.items() if k not in ("erase", "add")}  # noqa: E731
    writing = pick(0)
    w_write = address(memory, weights[:, 0], **writing)
    memory = write(memory, w_write, heads["erase"], heads["add"])
    reading = pick(slice(1, None))
    w_read = address(memory[:, None], weights[:, 1:], **reading)
    return (
        memory,
        jnp.concatenate([w_write[:, None], w_read], axis=1),
        read(memory[:, None], w_read),
    )


# --------------------------------------------------------------------------- network


class NTMQNetwork(nn.Module):
    """A Neural Turing Machine Q-network (the module docstring's step).

    Call it as ``network.apply(params, carry, obs [B, *obs_shape]) -> (carry, q [B, A])`` on ONE
    step of B environments; the carry is a dict of float32 arrays ``{"controller" [B, C],
    "memory" [B, N, W], "weights" [B, R + 1, N], "reads" [B, R, W]}`` (C: ``2 * memory`` for
    an LSTM (``c`` then ``h``), ``memory`` for a GRU or a linear recurrent cell, 0 for the
    feed-forward controller).

    Attributes:
      num_actions: size of the discrete action space, A.
      hidden: widths of the observation encoder's ReLU layers.
      memory: the controller's size (its state and output).
      controller: one of :data:`CONTROLLER_KINDS`: ``"lstm"``, ``"gru"``, ``"feedforward"``
        (a ReLU layer, no state), or a linear recurrent cell (``"lru"``, ``"mingru"``,
        ``"ffm"``; :mod:`memjax.agents.cells`).
      memory_rows: N.
      memory_width: W.
      read_heads: R (there is one write head).
      shift_range: s, the location shifts ``-s..s`` (``2s + 1 <= N``).
      head: widths of the ReLU layers of the Q-head on ``[h_t, r_t]``.
      channels: conv filters for image observations ``[B, H, W, C]`` (0: no conv).
    """

    num_actions: int
    hidden: Sequence[int] = (64,)
    memory: int = 64
    controller: str = "lstm"
    memory_rows: int = 16
    memory_width: int = 16
    read_heads: int = 1
    shift_range: int = 1
    head: Sequence[int] = (64,)
    channels: int = 0

    def check(self) -> None:
        """``ValueError`` naming the setting for a network that cannot be built."""
        check_sizes(self)

    @property
    def controller_size(self) -> int:
        """C, the controller state's features in the carry."""
        if self.controller == "feedforward":
            return 0
        return 2 * self.memory if self.controller == "lstm" else self.memory

    def initial_carry(self, batch: int, dtype=jnp.float32) -> dict:
        """The state at an episode's start (the module docstring's departures say why): zero
        controller state, memory ``INITIAL_MEMORY`` everywhere, weightings one-hot on row 0,
        read vectors the read of that memory with them."""
        self.check()
        n, w, r = self.memory_rows, self.memory_width, self.read_heads
        return {
            "controller": jnp.zeros((batch, self.controller_size), dtype),
            "memory": jnp.full((batch, n, w), INITIAL_MEMORY, dtype),
            "weights": jnp.zeros((batch, r + 1, n), dtype).at[:, :, 0].set(1),
            "reads": jnp.full((batch, r, w), INITIAL_MEMORY, dtype),
        }

    def stored_size(self) -> int:
        """K, the features of the ``carry`` field: C + (R + 1) N + R W."""
        r = self.read_heads
        return self.controller_size + (r + 1) * self.memory_rows + r * self.memory_width

    @nn.compact
    def __call__(self, carry, obs):
        self.check()
        x = jnp.asarray(obs)
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float32, or float64 in checks
        if x.ndim == 4 and self.channels:
            x = nn.relu(nn.Conv(self.channels, (3, 3), padding="VALID")(x))
        batch = x.shape[0]
        x = x.reshape((batch, -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        x = jnp.concatenate([x, carry["reads"].reshape((batch, -1))], axis=-1)
        state = carry["controller"]
        # recurrent kernels: lecun_normal, as RecurrentQNetwork (flax's orthogonal default hung
        # the vmapped init on XLA:CPU)
        recurrent_init = nn.initializers.lecun_normal()
        if self.controller == "lstm":
            (c, h), y = nn.OptimizedLSTMCell(self.memory, recurrent_kernel_init=recurrent_init)(
                (state[:, : self.memory], state[:, self.memory :]), x
            )
            state = jnp.concatenate([c, h], axis=-1)
        elif self.controller == "gru":
            state, y = nn.GRUCell(self.memory, recurrent_kernel_init=recurrent_init)(state, x)
        elif self.controller in PARALLEL_CELLS:
            state, y = make_cell(self.controller, self.memory)(state, x)
        else:
            y = nn.relu(nn.Dense(self.memory)(x))
        sizes = (self.memory_width, self.read_heads, self.shift_range)
        emitted = nn.Dense(head_sizes(*sizes), name="heads")(y)
        memory, weights, reads = memory_step(
            carry["memory"], carry["weights"], split_heads(emitted, *sizes)
        )
        z = jnp.concatenate([y, reads.reshape((batch, -1))], axis=-1)
        for width in self.head:
            z = nn.relu(nn.Dense(width)(z))
        q = nn.Dense(self.num_actions, name="q")(z)
        new = {"controller": state, "memory": memory, "weights": weights, "reads": reads}
        return new, q


def check_sizes(settings) -> None:
    """``ValueError`` naming the setting, for the sizes ``settings`` (an :class:`NTMConfig`
    or an :class:`NTMQNetwork`: the same attribute names) holds: an unknown controller, a
    controller size a linear recurrent cell cannot hold (``memory``), a memory of no rows or
    width, no read head, or a shift range wider than the memory (``2 * shift_range + 1 >
    rows``)."""
    controller, memory, shift_range = settings.controller, settings.memory, settings.shift_range
    memory_rows, memory_width = settings.memory_rows, settings.memory_width
    read_heads = settings.read_heads
    if controller not in CONTROLLER_KINDS:
        raise ValueError(f"controller must be one of {CONTROLLER_KINDS}, got {controller!r}")
    if controller in PARALLEL_CELLS:
        check_cell(controller, memory)
    for name, value in (
        ("memory_rows", memory_rows),
        ("memory_width", memory_width),
        ("read_heads", read_heads),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(shift_range, int) or isinstance(shift_range, bool) or shift_range < 0:
        raise ValueError(f"shift_range must be an integer >= 0, got {shift_range!r}")
    if 2 * shift_range + 1 > memory_rows:
        raise ValueError(
            f"shift_range ({shift_range}) shifts over {2 * shift_range + 1} rows, more than the "
            f"memory's memory_rows ({memory_rows}); use shift_range <= {(memory_rows - 1) // 2}"
        )


# --------------------------------------------------------------------------- stored state


def stored_carry(carry: dict) -> dict:
    """A carry as replay stores it: ``{"carry": float32 [E, K] (controller state, weightings,
    read vectors), "memory": [E, N, W]}``."""
    e = carry["memory"].shape[0]
    flat = [carry[k].reshape((e, -1)) for k in ("controller", "weights", "reads")]
    return {CARRY_FIELD: jnp.concatenate(flat, axis=-1), MEMORY_FIELD: carry["memory"]}


def carry_from_stored(stored: dict, network: NTMQNetwork) -> dict:
    """The inverse of :func:`stored_carry` for ``network``'s sizes."""
    flat, memory = stored[CARRY_FIELD], stored[MEMORY_FIELD]
    e, c = flat.shape[0], network.controller_size
    n, w, r = network.memory_rows, network.memory_width, network.read_heads
    weights_end = c + (r + 1) * n
    return {
        "controller": flat[:, :c],
        "memory": memory.astype(flat.dtype),
        "weights": flat[:, c:weights_end].reshape((e, r + 1, n)),
        "reads": flat[:, weights_end:].reshape((e, r, w)),
    }


@_pytree.dataclass
class RowInt8State:
    """The state of :func:`row_int8`.

    Attributes:
      invalid: int32 scalar, NaN or infinite values (stored as 0).
      shape: the item shape (static).
      dtype: the item dtype (static).
    """

    invalid: jax.Array
    shape: tuple = _pytree.field(pytree_node=False)
    dtype: Any = _pytree.field(pytree_node=False)


def row_int8() -> mc.Codec:
    """A codec storing each row (the last axis) of a float32 item as int8 codes with a scale of
    its own: ``code = round(x / scale)``, ``scale = max |row| / 127``, the float32 scale's 4
    bytes appended to the row's codes. The stored item is int8 ``[..., W + 4]``; decode gives
    ``code * scale``, with ``|x - x_hat| <= max |row| / 254`` (a zero row is exact). NaN and
    infinities are stored as 0 and counted in ``state.invalid``."""
    who = "row_int8"

    def init(example) -> RowInt8State:
        shape, dtype = example_spec(example, who)
        if dtype != np.float32 or not shape:
            raise TypeError(f"{who}.init: needs float32 items with rows, got {dtype}{list(shape)}")
        return RowInt8State(invalid=zero_count(), shape=shape, dtype=dtype)

    def encode(x, state: RowInt8State):
        x, _ = check_input(who, x, state.shape, state.dtype)
        finite = jnp.isfinite(x)
        x = jnp.where(finite, x, 0.0)
        scale = jnp.max(jnp.abs(x), axis=-1) / 127.0
        codes = jnp.round(x / jnp.where(scale > 0, scale, 1.0)[..., None])
        codes = jnp.clip(codes, -127, 127).astype(jnp.int8)
        scale_bytes = jax.lax.bitcast_convert_type(scale.astype(jnp.float32), jnp.int8)
        stored = jnp.concatenate([codes, scale_bytes], axis=-1)
        return stored, state.replace(invalid=add_count(state.invalid, jnp.sum(~finite)))

    def decode(stored, state: RowInt8State):
        shape = (*state.shape[:-1], state.shape[-1] + 4)
        stored, _ = check_stored(who, stored, shape, jnp.int8)
        scale = jax.lax.bitcast_convert_type(stored[..., -4:], jnp.float32)
        return stored[..., :-4].astype(jnp.float32) * scale[..., None]

    return mc.Codec(init, encode, decode)


def memory_codecs(memory_codec: str) -> dict:
    """The per-window fields' codecs for ``memory_codec``: none, bfloat16 or int8 (per row)."""
    if memory_codec == "bfloat16":
        return {MEMORY_FIELD: mc.cast(jnp.bfloat16)}
    if memory_codec == "int8":
        return {MEMORY_FIELD: row_int8()}
    if memory_codec == "none":
        return {}
    raise ValueError(f"memory_codec must be one of {MEMORY_CODECS}, got {memory_codec!r}")


# --------------------------------------------------------------------------- learning


@struct.dataclass
class NTMState(DQNState):
    """The state of an NTM agent: the fields of :class:`memjax.agents.DQNState` (online and
    target parameters of the :class:`NTMQNetwork`, optimizer state, updates done)."""


def checked_windows(items) -> dict:
    """The replay batch as windows, or ``ValueError`` naming what an NTM batch lacks."""
    needed = ("obs", "action", "reward", "next_obs", "terminated", "first")
    missing = [k for k in (*needed, CARRY_FIELD, MEMORY_FIELD) if k not in items]
    if missing:
        raise ValueError(
            f"the NTM agent learns from windows of the sequence layout with the field 'first' "
            f"and the per-window '{CARRY_FIELD}' and '{MEMORY_FIELD}'; the batch lacks {missing}"
        )
    if items["reward"].ndim != 2:
        raise ValueError(
            f"the NTM agent learns from windows [B, L]; got reward of shape "
            f"{items['reward'].shape} (transitions, not windows?)"
        )
    return dict(items)


def make_ntm(
    network: NTMQNetwork,
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
    """An NTM agent acting with its whole state in the carry and learning from replayed windows
    as :func:`memjax.agents.make_drqn` does.

    ``act`` is epsilon-greedy in the Q-values of the network's step from the carry, returns
    the next carry, and the extras ``{"carry": float32 [E, K], "memory": [E, N, W]}``: the
    carry BEFORE the step (:func:`stored_carry`), which replay stores once per window.
    ``learn`` takes windows ``[B, L, ...]`` with ``first`` and the per-window ``carry`` and
    ``memory`` ``[B, ...]`` and returns priorities float32 ``[B]`` and the metrics ``loss``
    and ``q``.

    Args: as :func:`memjax.agents.make_drqn`'s, with ``network`` an :class:`NTMQNetwork`.

    Returns:
      An :class:`Agent` whose state is an :class:`NTMState`.

    Raises:
      ValueError: ``target_period`` < 1, ``burn_in`` < 0, ``n_step`` < 1, ``eta`` outside
        [0, 1] or bad network sizes; at trace time, windows shorter than ``burn_in + n_step``
        or a batch without ``first``, ``carry`` or ``memory``.
    """
    if target_period < 1:
        raise ValueError(f"target_period must be >= 1 update, got {target_period}")
    if burn_in < 0 or n_step < 1:
        raise ValueError(f"burn_in must be >= 0 and n_step >= 1, got {burn_in} and {n_step}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    network.check()

    def init(key, obs) -> NTMState:
        params = network.init(key, network.initial_carry(1), jnp.asarray(obs)[None])
        return NTMState(
            params=params,
            target_params=jax.tree.map(jnp.copy, params),
            opt_state=optimizer.init(params),
            updates=jnp.zeros((), jnp.int32),
        )

    def act(state: NTMState, carry, obs, key, step, greedy: bool = False):
        new_carry, q_values = network.apply(state.params, carry, obs)
        if greedy:
            actions = jnp.argmax(q_values, axis=-1).astype(jnp.int32)
        else:
            actions = epsilon_greedy(key, q_values, epsilon(step))
        return actions, new_carry, stored_carry(carry)

    def td_fn(params, target_params, items):
        windows = checked_windows(items)
        start = carry_from_stored(windows, network)
        initial = network.initial_carry(windows["reward"].shape[0])
        td, q = window_td_errors(
            network.apply,
            params,
            target_params,
            windows,
            start,
            initial=initial,
            burn_in=burn_in,
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


# --------------------------------------------------------------------------- the spec


@dataclasses.dataclass(frozen=True)
class NTMConfig(WindowConfig):
    """The NTM agent's knobs: the controller (``controller`` of ``memory`` units, torso
    ``hidden``), the memory matrix and its heads, the replayed windows and their burn-in,
    how replay stores the memory, and the window priority's ``eta``."""

    memory: int = 64  # ntm: the controller's state and output size
    controller: str = "lstm"  # ntm controller: lstm | gru | feedforward | lru | mingru | ffm
    memory_rows: int = 16  # N, rows of the NTM's memory matrix
    memory_width: int = 16  # W, features per memory row
    read_heads: int = 1  # R, read heads (there is one write head)
    shift_range: int = dataclasses.field(default=1, metadata={"minimum": 0})  # shifts -s..s rows
    burn_in: int = 8  # window steps that only warm the stored state up (no loss, no gradient)
    memory_codec: str = "bfloat16"  # replay's memory matrix: none | bfloat16 | int8 (per row)

    def check(self) -> None:
        super().check()
        positive_ints(self, ("memory",))
        check_sizes(self)
        if not isinstance(self.burn_in, int) or isinstance(self.burn_in, bool) or self.burn_in < 0:
            raise ValueError(f"burn_in must be an integer >= 0, got {self.burn_in!r}")
        if self.memory_codec not in MEMORY_CODECS:
            raise ValueError(
                f"memory_codec must be one of {MEMORY_CODECS}, got {self.memory_codec!r}"
            )


def ntm_network(config: NTMConfig, obs, num_actions: int) -> NTMQNetwork:
    """The NTM Q-network of ``config`` (a conv torso for image observations)."""
    conv = network_kind(config.network, tuple(obs.shape)) == "conv"
    return NTMQNetwork(
        num_actions,
        hidden=tuple(config.hidden),
        memory=config.memory,
        controller=config.controller,
        memory_rows=config.memory_rows,
        memory_width=config.memory_width,
        read_heads=config.read_heads,
        shift_range=config.shift_range,
        channels=16 if conv else 0,
    )


def ntm_agent(train_config, network, num_actions: int, optimizer) -> Agent:
    """:func:`make_ntm` with the settings of ``train_config`` and its :class:`NTMConfig`."""
    agent = train_config.agent_config
    return make_ntm(
        network,
        num_actions,
        optimizer,
        burn_in=agent.burn_in,
        n_step=train_config.n_step,
        eta=agent.eta,
        **q_learning_settings(train_config),
    )


def ntm_windows(train_config) -> Windows:
    """Windows of ``sequence_length`` steps every ``sequence_period`` rows, with the state
    before each window stored once per window (the memory through ``memory_codec``)."""
    agent = train_config.agent_config
    return Windows(
        agent.sequence_length,
        agent.sequence_period,
        per_window=(CARRY_FIELD, MEMORY_FIELD),
        codecs=memory_codecs(agent.memory_codec),
    )


def check_ntm(train_config) -> None:
    """``ValueError`` for bad :class:`NTMConfig` knobs, alone or with the loop's n-step."""
    train_config.agent_config.check()
    check_windows(train_config, "ntm", "burn_in", "no step of a window would be trained")


NTM = register(
    AgentSpec(
        name="ntm",
        config=NTMConfig,
        make_network=ntm_network,
        make_agent=ntm_agent,
        windows=ntm_windows,
        validate=check_ntm,
        feedforward=False,
    )
)
"""The NTM agent's spec, registered as ``"ntm"``."""


__all__ = [
    "NTM",
    "NTMConfig",
    "NTMQNetwork",
    "NTMState",
    "CONTROLLER_KINDS",
    "MEMORY_CODECS",
    "address",
    "carry_from_stored",
    "content_weights",
    "interpolate",
    "make_ntm",
    "memory_step",
    "read",
    "row_int8",
    "sharpen",
    "shift",
    "split_heads",
    "stored_carry",
    "write",
]
