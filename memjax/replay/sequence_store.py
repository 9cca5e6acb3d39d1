"""The sequence layout: windows of consecutive steps of one environment, each step stored once.

Steps live in the row ring of :mod:`memjax.replay.row_ring` (read its docstring first:
rows of ``E = num_envs`` steps, env-major storage, here as [E, A, ...] (``grid``), flags,
the side store of final observations, ``pending``, the sampleable rows ``[lo, rows)``),
with ``A = R`` physical rows. Per step: ``obs`` once (``next_obs`` is the next row's
``obs``, or the side store's entry where the episode ended, or ``pending`` for the newest
row), every other per-step field once, and ``first`` as the ``FIRST`` bit of the flags.
Fields named in ``per_window`` are stored only for rows whose global number is a multiple
of ``period``: ``windows[name]`` [W*E, ...], ``W = R / period``, at ``env * W + (r /
period) % W``.

A *window* is ``L = length`` consecutive steps of one environment starting at a global
row ``s = j * period``. It is sampleable when all its rows are sampleable:
``s >= lo`` and ``s + L - 1 <= rows - 1``; so the window starts ``j`` in
``[ceil(lo / period), floor((rows - L) / period)]`` are sampleable, for every env, and
``count = E * (number of such j)``. Windows may cross episode ends (``first`` marks them).

Slots and ids: window (j, env) has slot ``(j % W) * E + env`` (one sum-tree leaf per
window start) and id ``(j mod M') * E + env`` (``M' = M / P``, a multiple of W, with ``M``
the row ring's modulus of row numbers in ids; ``M' * E < 2**31``). A
slot holds the newest window start ``j <= floor((rows - L) / period)`` congruent to it;
an id is live while that is still its window and the window is sampleable. With
``length = period = 1`` slots, ids and uniform draws are exactly the one-copy layout's.

Prioritized replay: a window gets the running max priority in the ``add`` that writes its
last row, and priority 0 in the ``add`` after which its first row is no longer sampleable
(overwritten, or dropped with the side store's evicted entries).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax import _pytree as struct
from memjax import sumtree
from memjax.replay import encoding
from memjax.replay.layouts import Sequence
from memjax.replay.memory import field_memory
from memjax.replay.row_ring import FIRST, RowRingStore, RowState, decode_steps


@struct.dataclass
class SequenceState(RowState):
    """The row ring's state (see :class:`memjax.replay.row_ring.RowState`) plus windows:
    dict of per-window fields [W*E, ...] as stored; ``count``: sampleable windows."""

    windows: dict


@struct.dataclass
class PrioritizedSequenceState(SequenceState):
    tree: sumtree.SumTree
    max_priority: jax.Array


def _check_layout(capacity: int, codecs: dict, layout: Sequence) -> None:
    rows = layout.rows(capacity)
    if layout.length > rows:
        raise ValueError(
            f"sequence layout: length {layout.length} is longer than the buffer's "
            f"{rows} rows (capacity {capacity} / num_envs {layout.num_envs})"
        )
    if rows % layout.period:
        raise ValueError(
            f"sequence layout: rows {rows} (capacity {capacity} / num_envs "
            f"{layout.num_envs}) must be a multiple of period={layout.period}"
        )
    if layout.first in codecs:
        raise ValueError(
            f"sequence layout: '{layout.first}' is kept as a flag bit, it takes no codec"
        )


class SequenceStore(RowRingStore):
    uniform_state = SequenceState
    prioritized_state = PrioritizedSequenceState
    grid = True  # items and flags [E, A, ...]: an add writes one column of each in place

    def __init__(self, capacity: int, codecs: dict, layout: Sequence):
        _check_layout(capacity, codecs, layout)
        self.window_codecs = {n: c for n, c in codecs.items() if n in layout.per_window}
        super().__init__(
            capacity, {n: c for n, c in codecs.items() if n not in layout.per_window}, layout
        )
        self.L, self.P = layout.length, layout.period
        self.W = self.R // self.P
        self.num_slots = self.W * self.E
        self.M_starts = self.M // self.P  # window starts in ids are mod M'

    # -- windows ---------------------------------------------------------------------------
    def _starts(self, rows, lo):
        """(first, last) sampleable window start j (last < first: none)."""
        return -(-lo // self.P), (rows - self.L) // self.P

    def count_of(self, rows, lo):
        first, last = self._starts(rows, lo)
        return jnp.maximum(last - first + 1, 0) * self.E

    def row_slots(self, rows):
        """Slots int32 [*rows.shape, E] of the windows starting at ``rows`` (-1 where a row
        starts none: not a multiple of the period)."""
        starts = (jnp.mod(rows, self.P) == 0)[..., None]
        return jnp.where(
            starts, jnp.mod(rows // self.P, self.W)[..., None] * self.E + jnp.arange(self.E), -1
        )

    def _window_of(self, state, j_phys):
        """(global window start j now at physical start ``j_phys``, its first sampleable j)."""
        first, last = self._starts(state.rows, self.lo(state))
        return last - jnp.mod(last - j_phys, self.W), first

    # -- init ------------------------------------------------------------------------------
    def _split_example(self, example):
        """(obs spec, per-step fields, per-window fields) of ONE item; TypeError/ValueError
        for a missing or malformed field."""
        lay = self.layout
        obs = self.obs_spec(example)
        missing = [n for n in (lay.first, *lay.per_window) if n not in example]
        if missing:
            raise TypeError(
                f"sequence layout: items must also hold {missing} ('{lay.first}': bool, "
                f"one per step; per_window fields), got fields {sorted(example)}"
            )
        first = encoding.spec_of(example[lay.first])
        if first.shape != () or first.dtype != jnp.bool_:
            raise ValueError(
                f"sequence layout: '{lay.first}' must be a bool scalar per step, got "
                f"{first.shape} {first.dtype}"
            )
        skip = (lay.next_obs, lay.first, *lay.per_window)
        per_step = {n: v for n, v in example.items() if n not in skip}
        return obs, per_step, {n: example[n] for n in lay.per_window}

    def fields(self, example) -> dict:
        obs, per_step, per_window = self._split_example(self.item_fields(example))
        fields = dict(self.ring_fields(per_step, obs), item_type=self.item_type_of(example))
        states = encoding.init_states(self.window_codecs, per_window)
        stored = encoding.stored_example(self.window_codecs, per_window, states)
        windows = jax.tree.map(lambda s: jnp.zeros((self.num_slots, *s.shape), s.dtype), stored)
        return dict(fields, codecs={**fields["codecs"], **states}, windows=windows)

    def raw_spec(self, state) -> dict:
        spec = super().raw_spec(state)
        seeds = state.cursor.ndim - 1
        windows, codec_states = encoding.strip_axes((state.windows, state.codecs), seeds)
        spec.update(encoding.raw_spec(self.window_codecs, windows, codec_states))
        spec[self.layout.first] = jax.ShapeDtypeStruct((), jnp.bool_)
        return spec

    # -- write -----------------------------------------------------------------------------
    def write(self, state, items, batch: int):
        lay = self.layout
        skip = (lay.next_obs, lay.first, *lay.per_window)
        per_step = {n: v for n, v in items.items() if n not in skip}
        new = self.write_row(state, per_step, items[lay.obs], items[lay.next_obs], items[lay.first])
        new = self._write_window_fields(new, {n: items[n] for n in lay.per_window}, state.rows)
        return (new, *self._leaves(state, new))

    def _write_window_fields(self, state, values: dict, row):
        """Store ``values`` ([E, ...] per field) when ``row`` starts windows (row % period
        == 0); otherwise drop them (the codecs' counters unchanged)."""
        if not values:
            return state
        starts = jnp.mod(row, self.P) == 0
        stored, codecs = encoding.encode(self.window_codecs, values, state.codecs)
        if self.P > 1:  # values of rows that start no window are not stored: not counted
            codecs = {
                **codecs,
                **{
                    n: jax.tree.map(
                        lambda new, old: jnp.where(starts, new, old), codecs[n], state.codecs[n]
                    )
                    for n in self.window_codecs
                },
            }
        env = jnp.arange(self.E, dtype=jnp.int32)
        at = jnp.where(starts, env * self.W + jnp.mod(row // self.P, self.W), self.num_slots)
        windows = {n: state.windows[n].at[at].set(stored[n], mode="drop") for n in values}
        return state.replace(windows={**state.windows, **windows}, codecs=codecs)

    def _leaves(self, before, after):
        """Sum-tree leaves set by the add from ``before`` to ``after`` (slots int32 [2E], live
        bool [2E]): the windows of the oldest row that stopped being sampleable to 0, then the
        windows the add completes (starting L - 1 rows before it), live if sampleable: all L
        rows among the ``live_rows`` newest (later entries win)."""
        oldest, dropped = self.dropped(before, after)
        out = jnp.concatenate(
            [
                jnp.where(dropped > 0, self.row_slots(oldest), -1),
                self.row_slots(before.rows - self.L + 1),
            ]
        )
        return out, (jnp.arange(2 * self.E) >= self.E) & (after.live_rows >= self.L)

    # -- sample ----------------------------------------------------------------------------
    def random_slots(self, state, key, n: int):
        first, _ = self._starts(state.rows, self.lo(state))
        return self.draw(key, n, first * self.E, state.count)

    def gather(self, state, slots):
        """Windows at ``slots`` (int32 [B]): per-step fields [B, L, ...] (obs, next_obs,
        first and the rest, decoded) and per-window fields [B, ...]."""
        lay = self.layout
        j_phys, env = slots // self.E, slots % self.E
        phys = jnp.mod(j_phys[:, None] * self.P + jnp.arange(self.L + 1), self.A)  # [B, L+1]
        at = self.index(phys, env[:, None])
        flags = self.flat(state.flags)[at]  # FIRST of each step; SIDE of the one before
        out = dict(self.gather_fields(state, at[:, : self.L], skip=(lay.obs,)))
        out[lay.obs], out[lay.next_obs] = self._window_obs(
            state, phys, env[:, None], at, flags[:, 1:]
        )
        out[lay.first] = (flags[:, : self.L] & FIRST) > 0
        per_window = {n: b[env * self.W + j_phys] for n, b in state.windows.items()}
        out.update(decode_steps(self.window_codecs, per_window, state.codecs, 1))
        return self.as_items(state, out)

    def _window_obs(self, state, phys, env, at, next_flags):
        """(obs, next_obs) [B, L, ...] from ONE read of the windows' L + 1 rows of obs: the
        next row's obs, or the side entry where SIDE (``next_flags``: the flags of the next
        rows), or ``pending`` for the newest row."""
        stored = jax.tree.map(lambda b: self.flat(b)[at], state.items[self.layout.obs])
        now = jax.tree.map(lambda s: s[:, : self.L], stored)
        following = jax.tree.map(lambda s: s[:, 1:], stored)
        src = self.next_sources(state, phys[:, : self.L], env, next_flags)
        nxt = self.decode_obs(state, self.next_stored(state, src, following), 2)
        return self.decode_obs(state, now, 2), self.with_pending(state, src, env, nxt)

    # -- ids -------------------------------------------------------------------------------
    def ids_of(self, state, slots):
        j, _ = self._window_of(state, slots // self.E)
        return (jnp.mod(j, self.M_starts) * self.E + slots % self.E).astype(jnp.int32)

    def resolve(self, state, ids):
        ids = jnp.asarray(ids, jnp.int32)
        j_mod, env = ids // self.E, ids % self.E
        j_phys = jnp.mod(j_mod, self.W)
        j, first = self._window_of(state, j_phys)
        live = (ids >= 0) & (jnp.mod(j, self.M_starts) == j_mod) & (j >= first)
        return j_phys * self.E + env, live

    def sampleable(self, state, slots):
        j, first = self._window_of(state, slots // self.E)
        return j >= first

    # -- memory ----------------------------------------------------------------------------
    def report(self, state):
        """As the row ring's report, plus ``first`` (charged the flags, 1 byte per step) and
        each per-window field (charged per step: its bytes / period)."""
        seeds = state.cursor.ndim - 1
        raw = self.raw_spec(state)
        extra = [
            field_memory(
                self.layout.first,
                self.flat_spec(state.flags, seeds),
                seeds,
                self.capacity,
                raw[self.layout.first],
            )
        ]
        extra += [
            field_memory(n, leaf, seeds, self.capacity, raw[n]) for n, leaf in state.windows.items()
        ]
        return super().report(state, extra)
