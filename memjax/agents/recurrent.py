"""Recurrent Q-networks (flax.linen) for agents that remember: DRQN (Hausknecht & Stone, 2015)
with R2D2's training scheme (Kapturowski et al., 2019).

A recurrent Q-network maps ``(carry, obs)`` for one step of a batch of environments to
``(carry, q_values)``. Episode starts are the caller's business: :func:`reset_where` puts
the initial carry back where an observation starts an episode, and :func:`unroll` does it
for every step of a window.

Shapes (B = batch, L = window length, A = actions, H = ``memory``):

```
obs      [B, *obs_shape]      any real or bool dtype (cast to float32 inside)
carry    GRU and the parallel cells: float32 [B, H];  LSTM: a tuple (c, h) of float32 [B, H]
q        float32 [B, A]
```

The parallel cells (``lru``, ``mingru``, ``ffm``; :mod:`memjax.agents.cells`) also run a whole
window in one call, ``network.apply(params, carry, obs [B, L, ...], first [B, L])``, by a
parallel scan; ``unroll(..., parallel=True)`` uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from memjax.agents.cells import PARALLEL_CELLS, check_cell, make_cell

CELL_KINDS = ("gru", "lstm", *PARALLEL_CELLS)
"""The recurrent cells :class:`RecurrentQNetwork` takes: stepped by ``lax.scan`` in training
(``gru``, ``lstm``) or scanned in parallel (:data:`memjax.agents.cells.PARALLEL_CELLS`)."""


class RecurrentQNetwork(nn.Module):
    """An encoder, a recurrent cell and an MLP Q-head.

    The encoder is a ReLU MLP of widths ``hidden`` over the flattened observation, after one
    3x3 conv of ``channels`` filters for image observations ``[B, H, W, C]`` (MinAtar). Call it
    as ``network.apply(params, carry, obs) -> (carry, q)`` on ONE step of B environments.

    Attributes:
      num_actions: size of the discrete action space, A.
      hidden: widths of the encoder's ReLU layers.
      memory: the recurrent state's size, H.
      head: widths of the ReLU layers between the cell's output and the linear Q layer (as
        R2D2's MLP head). The cell's output is bounded (tanh), so without them the Q layer's
        weights must grow to the returns' scale (CartPole's ~100) at Adam's pace of about
        ``lr`` per update; ReLU layers let the scale grow in every layer at once.
      cell: ``"gru"`` (carry ``[B, H]``), ``"lstm"`` (carry ``(c, h)``), or a parallel cell
        ``"lru"``, ``"mingru"``, ``"ffm"`` (carry ``[B, layers * H]``;
        :mod:`memjax.agents.cells`).
      channels: conv filters for image observations (0: no conv).
      layers: parallel cells stacked (1 for ``gru`` and ``lstm``). Between two layers a
        residual block ``y + Dense(ReLU(Dense(LayerNorm(y))))`` of width H, as the memoroid
        models stack linear recurrences: the state of one linear recurrence is a weighted sum
        of its encoded inputs, and the block lets the next recur over nonlinear features of
        the first's output (which also sees the current input). The carry holds the layers'
        states side by side, first layer first.
    """

    num_actions: int
    hidden: Sequence[int] = (64,)
    memory: int = 64
    head: Sequence[int] = (64,)
    cell: str = "gru"
    channels: int = 16
    layers: int = 1

    def initial_carry(self, batch: int):
        """The zero carry of ``batch`` environments: float32 ``[batch, H]`` (GRU), ``[batch,
        layers * H]`` (the parallel cells) or a tuple of two ``[batch, H]`` (LSTM)."""
        self.check()
        zeros = jnp.zeros((batch, self.memory * self.layers), jnp.float32)
        return (zeros, zeros) if self.cell == "lstm" else zeros

    def check(self) -> None:
        """``ValueError`` naming the setting: an unknown cell, a ``memory`` the cell cannot
        hold (:func:`memjax.agents.cells.check_cell`), or layers a cell cannot stack."""
        check_cell(self.cell, self.memory, CELL_KINDS)
        check_cell_layers(self.cell, self.layers)

    @nn.compact
    def __call__(self, carry, obs, first=None, initial=None):
        """One step ``(carry, obs [B, ...]) -> (carry, q [B, A])``; with ``first`` (bool
        ``[B, L]``, parallel cells only) a whole window: ``obs [B, L, ...]`` ->
        ``(carries [B, L, H], q [B, L, A])``, the carry after each step, reset to ``initial``
        (None: zeros) before the steps where ``first``."""
        self.check()
        window = first is not None
        if window and self.cell not in PARALLEL_CELLS:
            raise ValueError(
                f"cell {self.cell!r} steps one observation at a time; only {PARALLEL_CELLS} "
                f"run a whole window in one call"
            )
        x = jnp.asarray(obs, jnp.float32)
        lead = x.shape[:2] if window else x.shape[:1]
        x = x.reshape((-1, *x.shape[len(lead) :]))
        if x.ndim == 4 and self.channels:
            x = nn.relu(nn.Conv(self.channels, (3, 3), padding="VALID")(x))
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))

        # recurrent kernels: lecun_normal, not flax's orthogonal default: its QR (a LAPACK
        # custom call) made the vmapped TrainState init hang on XLA:CPU (jax 0.10.2; 2 seeds
        # of DRQN on MemoryChain-20 waited forever with no CPU use)
        recurrent_init = nn.initializers.lecun_normal()
        if self.cell in PARALLEL_CELLS:
            size, carries = self.memory, []
            for layer in range(self.layers):
                cell, state = make_cell(self.cell, size), layer_part(carry, layer, size)
                if window:
                    inputs = x.reshape((*lead, x.shape[-1]))
                    after, y = cell.window(state, inputs, first, layer_part(initial, layer, size))
                    y = y.reshape((-1, y.shape[-1]))  # rows for the dense layers
                else:
                    after, y = cell(state, x)
                carries.append(after)
                if layer + 1 < self.layers:
                    block = nn.Dense(size)(nn.relu(nn.Dense(size)(nn.LayerNorm()(y))))
                    x = y + block
            carry = carries[0] if self.layers == 1 else jnp.concatenate(carries, axis=-1)
        elif self.cell == "gru":
            carry, y = nn.GRUCell(features=self.memory, recurrent_kernel_init=recurrent_init)(
                carry, x
            )
        elif self.cell == "lstm":
            carry, y = nn.OptimizedLSTMCell(
                features=self.memory, recurrent_kernel_init=recurrent_init
            )(carry, x)
        else:
            raise ValueError(f"cell must be one of {CELL_KINDS}, got {self.cell!r}")
        for width in self.head:
            y = nn.relu(nn.Dense(width)(y))
        return carry, nn.Dense(self.num_actions)(y).reshape((*lead, self.num_actions))


def layer_part(carry, layer: int, size: int):
    """Layer ``layer``'s state ``[..., size]`` in a stacked carry ``[..., layers * size]``
    (None stays None)."""
    return None if carry is None else carry[..., layer * size : (layer + 1) * size]


def check_cell_layers(cell: str, layers) -> None:
    """``ValueError`` naming the setting: ``layers`` not a positive integer, or more than one
    layer of a stepped cell (only the parallel cells stack)."""
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ValueError(f"cell_layers must be an integer >= 1, got {layers!r}")
    if layers > 1 and cell not in PARALLEL_CELLS:
        raise ValueError(
            f"cell_layers {layers} stacks parallel cells {PARALLEL_CELLS}; cell {cell!r} is "
            f"stepped and runs as one layer: use --cell-layers 1 or a parallel --cell"
        )


def reset_where(first, carry, initial):
    """``carry`` with the rows where ``first`` (bool [B]) replaced by ``initial``'s rows."""

    def pick(initial_leaf, leaf):
        mask = first.reshape(first.shape + (1,) * (leaf.ndim - 1))
        return jnp.where(mask, initial_leaf, leaf)

    return jax.tree.map(pick, initial, carry)


def unroll(apply_fn, params, carry, obs, first, next_obs=None, initial=None, parallel=False):
    """Run a recurrent Q-network over windows, resetting the carry at episode starts.

    Args:
      apply_fn: ``apply_fn(params, carry, obs [B, ...]) -> (carry, q [B, A])``.
      params: the network's parameters.
      carry: the carry before the window's first step (pytree ``[B, ...]``); its zeros are
        the initial carry put back where ``first``.
      obs: ``[B, L, *obs_shape]`` the windows' observations.
      first: bool ``[B, L]``, True where the step's observation starts an episode.
      next_obs: optional ``[B, L, *obs_shape]``, each step's next observation (the episode's
        true final observation where it ended).
      initial: the carry put back where ``first`` (pytree ``[B, ...]``); None: zeros, the
        initial carry of the built-in cells (the NTM's is not zero).
      parallel: the network runs a whole window in one call, ``apply_fn(params, carry, obs
        [B, L, ...], first, initial) -> (carries [B, L, ...], q [B, L, A])`` (the parallel
        cells, :mod:`memjax.agents.cells`); else ``lax.scan`` steps it.

    Returns:
      ``(carry, q, q_next)``: the carry after the last step, float32 ``[B, L, A]`` the
      Q-values at each step, and (with ``next_obs``, else None) float32 ``[B, L, A]`` the
      Q-values at each step's next observation, from the carry after that step, so that a
      bootstrap never uses a carry reset by the next episode.
    """
    if initial is None:
        initial = jax.tree.map(jnp.zeros_like, carry)
    window, batch = obs.shape[1], obs.shape[0]
    rows = lambda x: x.reshape((window * batch,) + x.shape[2:])  # noqa: E731
    if parallel:
        after, q = apply_fn(params, carry, obs, first, initial)
        carry = jax.tree.map(lambda x: x[:, -1], after)
        if next_obs is None:
            return carry, q, None
        _, q_next = apply_fn(params, jax.tree.map(rows, after), rows(next_obs))
        return carry, q, q_next.reshape(batch, window, -1)
    time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731

    def step(carry, inputs):
        step_obs, step_first = inputs
        new, q = apply_fn(params, reset_where(step_first, carry, initial), step_obs)
        return new, (q, new if next_obs is not None else None)

    carry, (q, after) = jax.lax.scan(step, carry, (time_major(obs), time_major(first)))
    if next_obs is None:
        return carry, time_major(q), None
    # The next observations need no scan: each one's carry is the carry after its step, never
    # reset (the final observation belongs to its episode), so all L x B rows go through the
    # network in one call. Only the B rows of each step stay sequential; a Double-Q argmax
    # through these Q-values has no gradient, so the backward pass skips this call.
    _, q_next = apply_fn(params, jax.tree.map(rows, after), rows(time_major(next_obs)))
    return carry, time_major(q), time_major(q_next.reshape(window, batch, -1))


__all__ = ["CELL_KINDS", "RecurrentQNetwork", "check_cell_layers", "reset_where", "unroll"]
