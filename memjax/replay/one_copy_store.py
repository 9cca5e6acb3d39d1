"""The one-copy layout: each observation stored once, frame stacks de-duplicated.

Items come from ``E = num_envs`` vectorised environments, one row of E transitions per
``add``. Row ``r`` (a global row number) lives in physical row ``r % A`` of ``A = R + k - 1``
rows, ``R = capacity / E``, k = frame stack; slot ``s = (r % A) * E + env``. Per slot:

* ``items[obs]``: the newest frame of ``obs`` (the whole observation when k = 1), encoded
  by the ``obs`` codec, and every other field except ``next_obs``, encoded by its codec;
* ``flags`` uint8: ``FIRST`` (this obs starts an episode: its stack repeats its first
  frame, so the stack is not rebuilt from the rows before) and ``SIDE`` (``next_obs`` is
  in the side store).

``next_obs`` of row r is normally the ``obs`` of row r + 1. Whether it is, is *checked*:
the ``next_obs`` of the newest row waits raw in ``pending`` [E, ...]; the next ``add``
compares it with the new ``obs``, and where they differ (an episode ended and the
auto-reset replaced the observation; or anything else) its newest frame goes to the side
store ``side`` [K, ...] (a ring, entries in row order, then env order), tagged with the
transition number ``r * E + env`` in ``side_ids``; ``side_start[r % A]`` is where row r's
entries begin, so ``sample`` finds an entry at ``side_start + (SIDE flags of lower envs in
the row)`` without a search. So a transition is never paired with the next episode's first
observation, truncated episodes bootstrap from their true final observation, and nothing
depends on done flags.

The sampleable rows are ``[lo, rows)``, ``lo = max(rows - R, valid_from)``: the newest R
rows (older rows are kept only as frame history), minus rows whose side entry was evicted
when the side store wrapped (``valid_from`` moves past them: FIFO). The newest row is
sampleable: its ``next_obs`` is ``pending``.

Stacks (k > 1): observation stacks must be ``next_obs = obs[frames 1:] + new frame`` and an
episode's first stack must repeat its first frame (:class:`memjax.wrappers.FrameStack`).
An add that breaks this raises ValueError when eager; under jit it is counted in the
state (``errors``, see ``layout_errors``) and those stacks come back wrong.

Ids: ``(r mod M) * E + env`` with ``M`` a multiple of A and ``M * E < 2**31``; an id is
live while its row is still stored and sampleable. Global row numbers are int32: a buffer
takes up to ``2**31 / E`` adds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from memjax import sumtree
from memjax._checks import check_batch_like, is_concrete
from memjax.replay import encoding, ring
from memjax.replay.layouts import OneCopy
from memjax.replay.memory import FieldMemory, field_memory, nbytes, report_from_fields

FIRST = 1
SIDE = 2


@struct.dataclass
class OneCopyState:
    """items: dict of stored fields [A*E, ...] (``obs``: encoded newest frames; no
    ``next_obs``); flags: uint8 [A*E]; side: encoded frames [K, ...]; side_ids: int32 [K]
    (-1: empty); side_start: int32 [A], the side position of each row's first entry;
    pending: raw ``next_obs`` of the newest row [E, ...]; cursor: int32 [5] =
    (rows, valid_from, side_pos, errors, count); codecs: codec states."""

    items: dict
    flags: jax.Array
    side: object
    side_ids: jax.Array
    side_start: jax.Array
    pending: jax.Array
    cursor: jax.Array
    codecs: dict

    @property
    def rows(self):
        return self.cursor[..., 0]

    @property
    def valid_from(self):
        return self.cursor[..., 1]

    @property
    def count(self):
        """Sampleable transitions (int32)."""
        return self.cursor[..., 4]

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
    return [x[..., j * c:(j + 1) * c] for j in range(k)]


def _rows_equal(a, b):
    """bool [n]: a[i] == b[i] over all trailing axes."""
    return jnp.all((a == b).reshape(a.shape[0], -1), axis=1)


def _encode_rows(codec, frames, state, keep):
    """Encode ``frames`` [E, ...] one row at a time; only the rows where ``keep`` (bool [E])
    add to the codec's integer counters (clipped / invalid values), so a candidate that is
    not stored is not counted."""
    stored, per_row = jax.vmap(lambda f: codec.encode(f[None], state))(frames)

    def merge(old, new):
        if not jnp.issubdtype(old.dtype, jnp.integer):
            return old  # fitted constants: unchanged by encode
        delta = jnp.where(keep.reshape((-1,) + (1,) * old.ndim), new - old, 0)
        return (old + jnp.sum(delta, axis=0)).astype(old.dtype)

    return jax.tree.map(lambda x: x[:, 0], stored), jax.tree.map(merge, state, per_row)


class OneCopyStore:
    uniform_state = OneCopyState
    prioritized_state = PrioritizedOneCopyState

    def __init__(self, capacity: int, codecs: dict, layout: OneCopy):
        self.capacity = capacity
        self.layout = layout
        self.E = layout.num_envs
        self.k = layout.frame_stack
        self.R = layout.rows(capacity)
        self.A = self.R + self.k - 1
        self.K = layout.side_slots(capacity)
        self.num_slots = self.A * self.E
        if self.num_slots > ring.INT32_MAX:
            raise ValueError(f"one_copy: {self.num_slots} slots do not fit int32 ids")
        self.M = (ring.INT32_MAX // self.num_slots) * self.A  # row numbers in ids are mod M
        if layout.next_obs in codecs:
            raise ValueError(f"one_copy: '{layout.next_obs}' is not stored separately (it is the next "
                             f"row's '{layout.obs}'); give the codec for '{layout.obs}' only")
        self.codecs = codecs
        self.obs_codec = codecs.get(layout.obs)

    # -- init ------------------------------------------------------------------------------
    def _split_example(self, example):
        lay = self.layout
        if not isinstance(example, dict) or lay.obs not in example or lay.next_obs not in example:
            raise TypeError(f"one_copy layout: items must be a dict with fields '{lay.obs}' and "
                            f"'{lay.next_obs}', got {type(example).__name__}"
                            + (f" with fields {sorted(example)}" if isinstance(example, dict) else ""))
        o, n = example[lay.obs], example[lay.next_obs]
        if jnp.shape(o) != jnp.shape(n) or jnp.result_type(o) != jnp.result_type(n):
            raise ValueError(f"one_copy layout: '{lay.obs}' {jnp.shape(o)} {jnp.result_type(o)} and "
                             f"'{lay.next_obs}' {jnp.shape(n)} {jnp.result_type(n)} must match")
        if self.k > 1 and (jnp.ndim(o) == 0 or jnp.shape(o)[-1] % self.k):
            raise ValueError(f"one_copy layout: frame_stack={self.k} needs '{lay.obs}' with a last axis "
                             f"divisible by {self.k}, got shape {jnp.shape(o)}")
        return o

    def fields(self, example) -> dict:
        o = self._split_example(example)
        spec = jax.ShapeDtypeStruct(jnp.shape(o), jnp.result_type(o))
        frame = jax.ShapeDtypeStruct((*spec.shape[:-1], spec.shape[-1] // self.k) if self.k > 1
                                     else spec.shape, spec.dtype)
        per_slot = {name: v for name, v in example.items() if name != self.layout.next_obs}
        per_slot[self.layout.obs] = frame
        states = encoding.init_states(self.codecs, per_slot)
        stored = encoding.stored_example(self.codecs, per_slot, states)
        zeros = lambda n, s: jnp.zeros((n, *s.shape), s.dtype)  # noqa: E731
        return dict(
            items=jax.tree.map(lambda s: zeros(self.num_slots, s), stored),
            flags=jnp.zeros((self.num_slots,), jnp.uint8),
            side=jax.tree.map(lambda s: zeros(self.K, s), stored[self.layout.obs]),
            side_ids=jnp.full((self.K,), -1, jnp.int32),
            side_start=jnp.zeros((self.A,), jnp.int32),
            pending=zeros(self.E, spec),
            cursor=jnp.zeros((5,), jnp.int32),
            codecs=states,
        )

    # -- specs and checks --------------------------------------------------------------------
    def raw_spec(self, state):
        """Per-item ShapeDtypeStructs of the items as given to ``add`` (state may be vmapped)."""
        seeds = state.cursor.ndim - 1
        items, codec_states, pending = encoding.strip_axes((state.items, state.codecs, state.pending), seeds)
        spec = dict(encoding.raw_spec(self.codecs, items, codec_states))
        obs = jax.ShapeDtypeStruct(pending.shape[1:], pending.dtype)
        spec[self.layout.obs] = obs
        spec[self.layout.next_obs] = obs
        return spec

    def check_items(self, state, items):
        items, batch = check_batch_like(self.raw_spec(state), items, "add")
        if batch != self.E:
            raise ValueError(f"add: the one_copy layout takes one row of num_envs={self.E} items per "
                             f"add, got a batch of {batch}")
        return items, batch

    # -- rows ------------------------------------------------------------------------------
    def _lo(self, rows, valid_from):
        return jnp.maximum(jnp.maximum(rows - self.R, valid_from), 0)

    def _row_of(self, state, phys):
        """Global row now stored at physical row ``phys`` (negative: never written)."""
        newest = state.rows - 1
        return newest - jnp.mod(newest - phys, self.A)

    # -- write -----------------------------------------------------------------------------
    def write(self, state, items, batch: int):
        lay, E, k = self.layout, self.E, self.k
        obs, nxt = items[lay.obs], items[lay.next_obs]
        rows, valid_from, side_pos, errors, _ = (state.cursor[i] for i in range(5))
        env = jnp.arange(E, dtype=jnp.int32)
        has_prev = rows > 0

        # 1. did last row's next_obs come true? If not, keep it in the side store.
        differ = has_prev & ~_rows_equal(state.pending, obs)
        if k > 1:
            older_obs, older_pending = (jnp.concatenate(_frames(x, k)[:-1], axis=-1) for x in (obs, state.pending))
            first = ~has_prev | ~_rows_equal(older_obs, older_pending)
            frames_obs = _frames(obs, k)
            padded = jnp.all(jnp.stack([_rows_equal(f, frames_obs[-1]) for f in frames_obs[:-1]]), axis=0)
            shifted = _rows_equal(jnp.concatenate(_frames(nxt, k)[:-1], axis=-1),
                                  jnp.concatenate(frames_obs[1:], axis=-1))
            bad = (first & ~padded) | ~shifted
        else:
            first = ~has_prev & jnp.ones((E,), bool)
            bad = jnp.zeros((E,), bool)
        if is_concrete(bad) and bool(jnp.any(bad)):
            raise ValueError(
                f"add: frame_stack={k}: {int(jnp.sum(bad))} of {E} observations break the frame-stack "
                f"convention (next_obs must be obs shifted by one frame plus the new frame, and an "
                f"episode's first stack must repeat its first frame; see memjax.wrappers.FrameStack)")

        codec_states = dict(state.codecs)
        side_frames = _frames(state.pending, k)[-1] if k > 1 else state.pending
        if self.obs_codec is not None:
            side_frames, codec_states[lay.obs] = _encode_rows(self.obs_codec, side_frames,
                                                              codec_states[lay.obs], differ)
        n_push = jnp.sum(differ, dtype=jnp.int32)
        pos = jnp.mod(side_pos + jnp.cumsum(differ, dtype=jnp.int32) - 1, self.K)
        target = jnp.where(differ, pos, self.K)  # K: dropped
        evicted = jnp.max(jnp.where(differ, state.side_ids[pos], -1))
        valid_from = jnp.maximum(valid_from, jnp.where(evicted >= 0, evicted // E + 1, 0))
        tags = (rows - 1) * E + env
        side_ids = state.side_ids.at[target].set(tags, mode="drop")
        side_start = state.side_start.at[jnp.mod(rows - 1, self.A)].set(side_pos)
        side = jax.tree.map(lambda buf, x: buf.at[target].set(x, mode="drop"), state.side, side_frames)

        # 2. write row `rows`: the newest frame of obs and the other fields, encoded.
        per_slot = {name: v for name, v in items.items() if name != lay.next_obs}
        per_slot[lay.obs] = _frames(obs, k)[-1] if k > 1 else obs
        stored, codec_states = encoding.encode(self.codecs, per_slot, codec_states)
        phys = jnp.mod(rows, self.A)
        slots = phys * E + env
        new_items = jax.tree.map(
            lambda buf, x: buf.at[slots].set(x, unique_indices=True, mode="promise_in_bounds"),
            state.items, stored)
        flags = state.flags.at[slots].set(jnp.where(first, FIRST, 0).astype(jnp.uint8))
        prev_slots = jnp.mod(rows - 1, self.A) * E + env
        prev_flags = flags[prev_slots] | jnp.uint8(SIDE)
        flags = flags.at[jnp.where(differ, prev_slots, self.num_slots)].set(prev_flags, mode="drop")

        rows = rows + 1
        lo = self._lo(rows, valid_from)
        cursor = jnp.stack([rows, valid_from, jnp.mod(side_pos + n_push, self.K),
                            errors + jnp.sum(bad, dtype=jnp.int32), (rows - lo) * E]).astype(jnp.int32)
        state = state.replace(items=new_items, flags=flags, side=side, side_ids=side_ids,
                              side_start=side_start, pending=nxt, cursor=cursor,
                              codecs=codec_states)
        # sum-tree leaves: the row leaving the window (k > 1) to 0, then the new row live
        if k > 1:
            old = rows - 1 - self.R
            leaving = jnp.where(old >= 0, jnp.mod(old, self.A) * E + env, -1)
            return state, jnp.concatenate([leaving, slots]), jnp.arange(2 * E) >= E
        return state, slots, jnp.ones((E,), bool)

    # -- sample ----------------------------------------------------------------------------
    def random_slots(self, state, key, n: int):
        """Uniform over the window's transition numbers [base, base + count), drawn as
        ``base + (i - base) mod count`` for i uniform in [0, count): when the window is the
        whole ring (k = 1, no side overflow) slot == i, exactly the flat layout's draw, so
        the two layouts sample the same transitions from the same key."""
        count = jnp.maximum(state.count, 1)
        i = ring.random_slots(key, n, count)
        base = self._lo(state.rows, state.valid_from) * self.E
        number = base + jnp.mod(i - base, count)
        return jnp.mod(number, self.num_slots)

    def _side_position(self, state, phys, env):
        """Side-store position of the entry of slot (phys, env) (which has the SIDE flag):
        its row's first position plus the row's SIDE entries of lower env index."""
        row_flags = state.flags[phys[:, None] * self.E + jnp.arange(self.E)]  # [n, E]
        before = ((row_flags & SIDE) > 0) & (jnp.arange(self.E) < env[:, None])
        return jnp.mod(state.side_start[phys] + jnp.sum(before, axis=1, dtype=jnp.int32), self.K)

    def _decode_frames(self, state, stored):
        if self.obs_codec is None:
            return stored
        return self.obs_codec.decode(stored, state.codecs[self.layout.obs])

    def gather(self, state, slots):
        lay, E, k, A = self.layout, self.E, self.k, self.A
        n = slots.shape[0]
        phys, env = slots // E, slots % E
        row = self._row_of(state, phys)
        # frame history, newest first: step back unless this frame starts its episode
        idx = [phys]
        for _ in range(k - 1):
            prev = idx[-1]
            starts = (state.flags[prev * E + env] & FIRST) > 0
            idx.append(jnp.where(starts, prev, jnp.mod(prev - 1, A)))
        frames_at = jnp.concatenate([i * E + env for i in reversed(idx)])  # oldest first
        side_flag = (state.flags[slots] & SIDE) > 0
        side_pos = self._side_position(state, phys, env)
        next_slot = jnp.mod(phys + 1, A) * E + env
        obs_store = state.items[lay.obs]
        next_stored = jax.tree.map(
            lambda buf, side: jnp.where(side_flag.reshape((n,) + (1,) * (buf.ndim - 1)),
                                        side[side_pos], buf[next_slot]), obs_store, state.side)
        stored = jax.tree.map(lambda buf, nx: jnp.concatenate([buf[frames_at], nx]), obs_store, next_stored)
        decoded = self._decode_frames(state, stored)  # [(k + 1) * n, *frame]
        frames = [decoded[j * n:(j + 1) * n] for j in range(k + 1)]
        newest = (row == state.rows - 1).reshape((n,) + (1,) * (decoded.ndim - 1))
        pending_frame = _frames(state.pending, k)[-1] if k > 1 else state.pending
        frames[k] = jnp.where(newest, pending_frame[env], frames[k])
        cat = (lambda fs: jnp.concatenate(fs, axis=-1)) if k > 1 else (lambda fs: fs[0])
        others = {name: v for name, v in state.items.items() if name != lay.obs}
        other_codecs = {name: c for name, c in self.codecs.items() if name != lay.obs}
        out = dict(encoding.decode(other_codecs, jax.tree.map(lambda b: b[slots], others), state.codecs))
        out[lay.obs] = cat(frames[:k])
        out[lay.next_obs] = cat(frames[1:])
        return out

    # -- ids -------------------------------------------------------------------------------
    def ids_of(self, state, slots):
        row = self._row_of(state, slots // self.E)
        return (jnp.mod(row, self.M) * self.E + slots % self.E).astype(jnp.int32)

    def resolve(self, state, ids):
        ids = jnp.asarray(ids, jnp.int32)
        row_mod, env = ids // self.E, ids % self.E
        phys = jnp.mod(row_mod, self.A)
        row = self._row_of(state, phys)
        match = (ids >= 0) & (row >= 0) & (jnp.mod(row, self.M) == row_mod)
        live = match & (row >= self._lo(state.rows, state.valid_from))
        return phys * self.E + env, live, match & ~live

    def sampleable(self, state, slots):
        row = self._row_of(state, slots // self.E)
        return row >= self._lo(state.rows, state.valid_from)

    def count(self, state):
        return state.count

    # -- memory ----------------------------------------------------------------------------
    def report(self, state):
        """Per field: raw bytes per transition as given to ``add`` vs stored bytes per
        transition. ``next_obs`` is charged the side store and ``pending``; ``obs`` its
        frames (incl. the k - 1 rows of frame history); flags and counters are overhead."""
        seeds = state.cursor.ndim - 1
        copies = math.prod(state.cursor.shape[:-1])
        raw = self.raw_spec(state)
        fields = [field_memory(name, leaf, seeds, self.capacity, raw[name])
                  for name, leaf in state.items.items()]
        side = [state.side_ids, state.pending, *jax.tree.leaves(state.side)]
        side_bytes = sum(nbytes(x) for x in side)
        per_item = side_bytes / (copies * self.capacity)
        frame = jax.tree.leaves(state.side)[0]
        fields.append(FieldMemory(self.layout.next_obs, tuple(frame.shape[seeds + 1:]), str(np.dtype(frame.dtype)),
                                  per_item, side_bytes, raw[self.layout.next_obs].shape,
                                  str(np.dtype(raw[self.layout.next_obs].dtype)), nbytes(raw[self.layout.next_obs])))
        return report_from_fields(state, self.capacity, copies, sorted(fields, key=lambda f: f.name))
