"""The one-copy layout: each observation stored once, frame stacks de-duplicated.

Items come from ``E = num_envs`` vectorised environments, one row of E transitions per
``add``, kept in the row ring of :mod:`memjax.replay.row_ring` (read its docstring first:
rows, env-major storage, flags, the side store of final observations, ``pending``, and the
sampleable rows ``[lo, rows)``). One item is one transition; its *slot* is
``(r % A) * E + env`` (a sum-tree leaf), ``A = R + k - 1`` rows for a frame stack of k:
the k - 1 rows before the oldest sampleable row are kept as frame history.

* ``items[obs]`` holds the newest frame of ``obs`` (the whole observation when k = 1); the
  side store holds the newest frame of the final observations;
* ``FIRST`` marks an obs whose stack starts an episode: it repeats its first frame, so the
  stack is not rebuilt from the rows before. With k = 1 only the very first row has it.

Stacks (k > 1): observation stacks must be ``next_obs = obs[frames 1:] + new frame`` and an
episode's first stack must repeat its first frame (:class:`memjax.envs.FrameStack`).
An add that breaks this raises ValueError when eager; under jit it is counted in the
state (``errors``, see ``layout_errors``) and those stacks come back wrong.

Ids: ``(r mod M) * E + env`` (``M``: the row ring's modulus of row numbers in ids, a
multiple of A with ``M * E < 2**31``); an id is live while its row is still stored and
sampleable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax import _pytree as struct
from memjax import sumtree
from memjax._checks import is_concrete
from memjax.replay.layouts import OneCopy
from memjax.replay.row_ring import FIRST, RowRingStore, RowState, rows_equal


@struct.dataclass
class OneCopyState(RowState):
    """The row ring's state (see :class:`memjax.replay.row_ring.RowState`); ``count``:
    sampleable transitions."""

    @property
    def layout_errors(self):
        """Stacked observations that broke the frame-stack convention (int32)."""
        return self.cursor[..., 3]


@struct.dataclass
class PrioritizedOneCopyState(OneCopyState):
    tree: sumtree.SumTree
    max_priority: jax.Array


def _frames(x, k: int):
    """[..., k*C] -> list of k frames [..., C], oldest first."""
    c = x.shape[-1] // k
    return [x[..., j * c : (j + 1) * c] for j in range(k)]


class OneCopyStore(RowRingStore):
    uniform_state = OneCopyState
    prioritized_state = PrioritizedOneCopyState

    def __init__(self, capacity: int, codecs: dict, layout: OneCopy):
        self.k = layout.frame_stack
        super().__init__(capacity, codecs, layout, history=self.k - 1)
        self.num_slots = self.A * self.E

    def newest_frame(self, x):
        return _frames(x, self.k)[-1] if self.k > 1 else x

    def count_of(self, rows, lo):
        return (rows - lo) * self.E

    def row_slots(self, rows):
        """Slots int32 [*rows.shape, E] of the transitions of ``rows``."""
        return jnp.mod(rows, self.A)[..., None] * self.E + jnp.arange(self.E, dtype=jnp.int32)

    # -- init ------------------------------------------------------------------------------
    def fields(self, example) -> dict:
        obs = self.obs_spec(example)
        item_type, example = self.item_type_of(example), self.item_fields(example)
        if self.k > 1 and (len(obs.shape) == 0 or obs.shape[-1] % self.k):
            raise ValueError(
                f"one_copy layout: frame_stack={self.k} needs '{self.layout.obs}' with a "
                f"last axis divisible by {self.k}, got shape {obs.shape}"
            )
        frame = jax.eval_shape(self.newest_frame, obs)
        per_step = {name: v for name, v in example.items() if name != self.layout.next_obs}
        per_step[self.layout.obs] = frame
        return dict(self.ring_fields(per_step, obs), item_type=item_type)

    # -- write -----------------------------------------------------------------------------
    def _stack_flags(self, state, obs, nxt):
        """(first bool [E], bad bool [E]): which stacks start an episode, which break the
        frame-stack convention (ValueError when eager)."""
        has_prev = state.live_rows > 0
        if self.k == 1:
            return ~has_prev & jnp.ones((self.E,), bool), jnp.zeros((self.E,), bool)
        older = lambda x: jnp.concatenate(_frames(x, self.k)[:-1], axis=-1)  # noqa: E731
        first = ~has_prev | ~rows_equal(older(obs), older(state.pending))
        frames = _frames(obs, self.k)
        padded = jnp.all(jnp.stack([rows_equal(f, frames[-1]) for f in frames[:-1]]), axis=0)
        shifted = rows_equal(older(nxt), jnp.concatenate(frames[1:], axis=-1))
        bad = (first & ~padded) | ~shifted
        if is_concrete(bad) and bool(jnp.any(bad)):
            raise ValueError(
                f"add: frame_stack={self.k}: {int(jnp.sum(bad))} of "
                f"{self.E} observations break the "
                "frame-stack convention (next_obs must be obs "
                "shifted by one frame plus the new frame, "
                "and an episode's first stack must repeat its first "
                "frame; see memjax.envs.FrameStack)"
            )
        return first, bad

    def write(self, state, items, batch: int):
        lay = self.layout
        obs, nxt = items[lay.obs], items[lay.next_obs]
        first, bad = self._stack_flags(state, obs, nxt)
        per_step = {name: v for name, v in items.items() if name != lay.next_obs}
        per_step[lay.obs] = self.newest_frame(obs)
        new = self.write_row(state, per_step, obs, nxt, first, jnp.sum(bad, dtype=jnp.int32))
        # sum-tree leaves: the oldest row that stopped being sampleable to 0, then the new row
        oldest, dropped = self.dropped(state, new)
        slots = jnp.concatenate(
            [jnp.where(dropped > 0, self.row_slots(oldest), -1), self.row_slots(state.rows)]
        )
        return new, slots, jnp.arange(2 * self.E) >= self.E

    # -- sample ----------------------------------------------------------------------------
    def random_slots(self, state, key, n: int):
        return self.draw(key, n, self.lo(state) * self.E, state.count)

    def _history(self, state, phys, env):
        """Physical rows of the k frames of each stack, oldest first: step back unless the
        frame starts its episode."""
        rows = [phys]
        for _ in range(self.k - 1):
            starts = (state.flags[self.index(rows[-1], env)] & FIRST) > 0
            rows.append(jnp.where(starts, rows[-1], jnp.mod(rows[-1] - 1, self.A)))
        return rows[::-1]

    def gather(self, state, slots):
        lay, k = self.layout, self.k
        phys, env = slots // self.E, slots % self.E
        obs_store = state.items[lay.obs]
        following = jax.tree.map(lambda b: b[self.index(jnp.mod(phys + 1, self.A), env)], obs_store)
        next_flags = state.flags[self.index(jnp.mod(phys + 1, self.A), env)]
        src = self.next_sources(state, phys, env, next_flags)
        next_stored = self.next_stored(state, src, following)
        frames = [
            jax.tree.map(lambda b: b[self.index(p, env)], obs_store)
            for p in self._history(state, phys, env)
        ]
        decoded = self.decode_obs(
            state, jax.tree.map(lambda *x: jnp.stack(x), *frames, next_stored), 2
        )
        nxt = self.with_pending(state, src, env, decoded[k])
        cat = (lambda fs: jnp.concatenate(fs, axis=-1)) if k > 1 else (lambda fs: fs[0])
        out = dict(self.gather_fields(state, self.index(phys, env), skip=(lay.obs,)))
        out[lay.obs] = cat(list(decoded[:k]))
        out[lay.next_obs] = cat(list(decoded[1:k]) + [nxt])
        return self.as_items(state, out)

    # -- ids -------------------------------------------------------------------------------
    def ids_of(self, state, slots):
        row = self.row_of(state, slots // self.E)
        return (jnp.mod(row, self.M) * self.E + slots % self.E).astype(jnp.int32)

    def resolve(self, state, ids):
        ids = jnp.asarray(ids, jnp.int32)
        row_mod, env = ids // self.E, ids % self.E
        phys = jnp.mod(row_mod, self.A)
        row = self.row_of(state, phys)
        live = (ids >= 0) & (jnp.mod(row, self.M) == row_mod) & (row >= self.lo(state))
        return phys * self.E + env, live

    def sampleable(self, state, slots):
        row = self.row_of(state, slots // self.E)
        return row >= self.lo(state)
