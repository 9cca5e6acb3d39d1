"""The row ring shared by the one-copy and sequence layouts.

Items come from ``E = num_envs`` vectorised environments, one row of E steps per ``add``.
Row ``r`` (a global row number) lives in physical row ``r % A`` of ``A = R + h`` rows,
``R = capacity / E``, with ``h`` extra rows of history that a layout may keep (frame
stacks). Per-step arrays are stored *env-major*: step (physical row p, env e) is at index
``e * A + p`` of the flat view (``flat``), so consecutive steps of one environment are
adjacent in memory (a window of steps is one contiguous run). A ``grid`` store keeps
them as [E, A, ...] so that an add writes a row with one in-place (strided)
dynamic-update-slice per array, as flashbax does; a flat [E*A, ...] store writes it with a
scatter, which XLA:CPU runs as thread-pool tasks over the whole ring. (Time-major
storage, rows contiguous, makes the add as cheap but a window's steps E apart: windowed
sampling got 1.3-1.5x slower.) Per step:

* ``items[obs]``: the stored (newest) frame of ``obs``, encoded by the ``obs`` codec, and
  each other per-step field, encoded by its codec (``next_obs`` is not stored);
* ``flags`` uint8: bit 0 ``FIRST`` (this obs starts an episode); bit 1 ``SIDE`` (the
  ``next_obs`` of the step before, same env, previous row, is in the side store: the add
  that finds it writes only its own row) and bits 2-7 that entry's rank among the SIDE
  entries of lower envs in its row and group of 64 envs.

``next_obs`` of row r is normally the ``obs`` of row r + 1. Whether it is, is *checked*:
the ``next_obs`` of the newest row waits raw in ``pending`` [E, ...]; the next ``add``
compares it with the new ``obs``, and where they differ (an episode ended and the
auto-reset replaced the observation; or anything else) its stored frame goes to the side
store (a ring of K entries, in row order, then env order), tagged with its row ``r mod T``
in ``side_ids`` [K]. The frames ``side`` [K + E, ...] are written as ONE slice of E
entries at physical ``side_pos`` (the row's n entries first, the rest keep what they
held); a row whose entries pass position K runs on into the E slots past it, so ring
position q < E lives at physical q or K + q, whichever was written last (the other is an
evicted entry's). ``side_start[r % A, g]`` is the physical position (< K + E, not
wrapped) of the first entry of row r's envs ``64 g ... 64 g + 63``, so an entry is found
at ``side_start + rank`` without a search and without reading the rest of the row. So a
step is never paired with the next episode's first observation, truncated episodes
bootstrap from their true final observation, and nothing depends on done flags.

The sampleable rows are the newest ``live_rows`` ones, ``[lo, rows)`` with ``lo = rows -
live_rows``: at most R, and none at or before a row whose side entry was evicted when the
side store wrapped (FIFO). The newest row is sampleable: its ``next_obs`` is ``pending``.
With prioritized replay each add zeroes the sum-tree leaves of the rows that stop being
sampleable (``dropped``: usually the one leaving the ring; after an eviction any number),
so the tree never holds mass for an item that cannot be returned.

Wrap-safe row numbers: rows are kept modulo ``T < 2**31``, a multiple of ``M`` (the modulus
of row numbers in the layouts' ids, a multiple of A with ``M * E < 2**31``), so no row
number, tag or id overflows int32 however many rows are added. ``lo`` and the other row
numbers derived from ``rows`` are representatives (``lo`` may be negative); everything
computed from them is a difference, a comparison within the last A rows, or a residue
modulo a divisor of T. A tag's age ``(rows - 1 - tag) mod T`` is its row's true age because
no tag grows old: the E - n envs of a row that push no entry check the tags at a pointer that
sweeps the side store, and clear those whose row has left the ring. Within any
``ceil(2K / E)`` adds either K entries are pushed or the pointer passes every entry, so every
stored tag is younger than ``A + ceil(2K / E) + 1 < T`` rows.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _pytree as struct
from memjax import sumtree
from memjax._batching import vmap_as_leading_axis
from memjax._checks import check_batch_like
from memjax._fusion import materialise_on_cpu
from memjax.replay import encoding, ring
from memjax.replay.memory import FieldMemory, field_memory, nbytes, report_from_fields

FIRST = 1
SIDE = 2
RANK_SHIFT = 2
GROUP = 64  # envs per side_start entry: a rank in [0, 64) fits the flags' six high bits
NEXT_ROW, PENDING = -1, -2  # next_obs sources besides a side-store position


@struct.dataclass
class RowState:
    """items: dict of per-step fields [E*A, ...] as stored ([E, A, ...] in a ``grid``
    store; env-major; ``obs``: encoded frames; no ``next_obs``); flags: uint8 [E*A] ([E,
    A]); side: encoded frames [K + E, ...]; side_ids:
    int32 [K] (-1: empty); side_start: int32 [A, ceil(E/64)]; pending: raw ``next_obs`` of
    the newest row [E, ...]; cursor: int32 [6] = (rows mod T, live_rows, side_pos, errors,
    count, side_check: the next tag to check); codecs: codec states."""

    items: dict
    flags: jax.Array
    side: object
    side_ids: jax.Array
    side_start: jax.Array
    pending: jax.Array
    cursor: jax.Array
    codecs: dict
    item_type: type | None = struct.field(pytree_node=False, default=None, kw_only=True)
    """The class of the items given to ``init`` when they are dataclasses (a flax.struct or
    chex dataclass such as PureJaxRL's ``TimeStep``); None for dicts. Static."""

    @property
    def rows(self):
        """Rows written so far, modulo the store's T (int32)."""
        return self.cursor[..., 0]

    @property
    def live_rows(self):
        """Sampleable rows, the newest ones (int32 in [0, R]; 0 only before the first add)."""
        return self.cursor[..., 1]

    @property
    def count(self):
        """Sampleable items (int32): transitions or windows, depending on the layout."""
        return self.cursor[..., 4]


def rows_equal(a, b):
    """bool [n]: a[i] == b[i] over all trailing axes."""
    return jnp.all((a == b).reshape(a.shape[0], -1), axis=1)


def expand(mask, like):
    """``mask`` [...] reshaped to broadcast against ``like`` [..., *trailing]."""
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


SMALL_ROW = 128  # rows of at most this many envs count entries with [E, E] masks


def _compact(differ):
    """(before int32 [E]: the entries of lower envs, n: all entries, src int32 [E]: the env
    of the i-th entry, E - 1 past the n-th) for entries where ``differ`` (bool [E]). Small
    rows count with [E, E] masks (one fused kernel on CPU, where a cumsum and a scatter are
    kernels of their own)."""
    e = differ.shape[0]
    if e > SMALL_ROW:
        n = jnp.sum(differ, dtype=jnp.int32)
        before = jnp.cumsum(differ, dtype=jnp.int32) - differ
        env = jnp.arange(e, dtype=jnp.int32)
        src = (
            jnp.full((e,), e - 1, jnp.int32).at[jnp.where(differ, before, e)].set(env, mode="drop")
        )
        return before, n, src
    idx = jnp.arange(e, dtype=jnp.int32)
    lower = idx[None, :] < idx[:, None]  # [e, e']: e' < e
    before = jnp.sum(lower & differ[None, :], axis=1, dtype=jnp.int32)
    upto = before + differ  # entries up to and including each env
    n = upto[-1]  # from the same reduce: no kernel of its own
    src = jnp.sum(upto[None, :] <= idx[:, None], axis=1, dtype=jnp.int32)  # envs before entry i
    return before, n, jnp.minimum(src, e - 1)


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


class RowRingStore:
    """Rows of ``num_envs`` steps with obs stored once (see the module docstring); a
    :class:`memjax.replay.store_api.Store`.

    A layout subclasses this, sets ``num_slots`` and the state classes, and defines
    ``count_of(rows, lo)`` (its sampleable items), ``row_slots(rows)`` (the slots of the
    items that start at those rows) and the sampling side of the store interface
    (``memjax.replay.flat``). ``newest_frame`` maps a stored observation to what
    is kept per step (the observation itself unless a layout de-duplicates frames).
    """

    grid = False
    """Per-step arrays stored as [E, A, ...] (an add writes each with ONE in-place
    dynamic-update-slice, as flashbax's [E, T, ...]), rather than flat [E*A, ...] (written
    with a scatter). Both env-major: a window of one env is one contiguous run."""

    def __init__(self, capacity: int, codecs: dict, layout, history: int = 0):
        self.capacity = capacity
        self.layout = layout
        self.E = layout.num_envs
        self.R = layout.rows(capacity)
        self.A = self.R + history
        self.K = layout.side_slots(capacity)
        self.G = -(-self.E // GROUP)
        if self.A * self.E > ring.INT32_MAX:
            raise ValueError(f"{layout.kind}: {self.A * self.E} steps do not fit int32 indices")
        self.M = (ring.INT32_MAX // (self.A * self.E)) * self.A  # row numbers in ids are mod M
        self.T = (ring.INT32_MAX // self.M) * self.M  # rows are kept mod T
        if self.A + -(-2 * self.K // self.E) + 1 >= self.T:
            raise ValueError(
                f"{layout.kind}: {self.A} rows and {self.K} side entries are too many for "
                f"int32 row numbers (rows + 2 * side entries / num_envs must be below {self.T})"
            )
        if layout.next_obs in codecs:
            raise ValueError(
                f"{layout.kind}: '{layout.next_obs}' is not stored separately (it is the "
                f"next row's '{layout.obs}'); give the codec for '{layout.obs}' only"
            )
        self.codecs = codecs
        self.obs_codec = codecs.get(layout.obs)

    def newest_frame(self, x):
        return x

    def index(self, phys, env):
        """Storage index of step (physical row, env) in a flat view (``flat``): env-major."""
        return env * self.A + phys

    def flat(self, buf):
        """A per-step array [E*A, ...] (env-major, indexed by ``index``): as stored, or the
        free reshape of a ``grid`` store's [E, A, ...]."""
        return buf.reshape((self.E * self.A, *buf.shape[2:])) if self.grid else buf

    def flat_spec(self, leaf, seeds: int):
        """ShapeDtypeStruct of a per-step array with its physical axes as ``flat``'s."""
        lead = leaf.shape[:seeds]
        rest = leaf.shape[seeds + 2 :] if self.grid else leaf.shape[seeds + 1 :]
        return jax.ShapeDtypeStruct((*lead, self.E * self.A, *rest), leaf.dtype)

    def lo(self, state):
        """The oldest sampleable row (int32; a representative, as ``rows``)."""
        return state.rows - state.live_rows

    def row_of(self, state, phys):
        """The row now stored at physical row ``phys`` (int32, a representative in
        ``[rows - A, rows)``; sampleable iff ``>= lo``)."""
        newest = state.rows - 1
        return newest - jnp.mod(newest - phys, self.A)

    # -- items: dicts or dataclasses -----------------------------------------------------
    def item_fields(self, item) -> dict:
        """The fields of an item (or a batch of items) by name: a dict as it is, a
        dataclass's (flax.struct, chex) as a dict of its fields. TypeError for anything else,
        or a dataclass with static (non-pytree) fields."""
        if isinstance(item, dict):
            return item
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            fields = dataclasses.fields(item)
            static = [f.name for f in fields if not f.metadata.get("pytree_node", True)]
            if static:
                raise TypeError(
                    f"{self.layout.kind} layout: {type(item).__name__}'s static fields "
                    f"{static} cannot be stored; make them pytree fields or leave them out"
                )
            return {f.name: getattr(item, f.name) for f in fields}
        raise TypeError(
            f"{self.layout.kind} layout: items must be a dict or a dataclass (flax.struct, "
            f"chex) with fields '{self.layout.obs}' and '{self.layout.next_obs}', got "
            f"{type(item).__name__}"
        )

    def item_type_of(self, example):
        """The static ``item_type`` of a state made from ``example`` (None for a dict)."""
        return None if isinstance(example, dict) else type(example)

    def as_items(self, state, fields: dict):
        """Sampled ``fields`` as the type of the items given to ``init``."""
        return fields if state.item_type is None else state.item_type(**fields)

    # -- init ------------------------------------------------------------------------------
    def obs_spec(self, example) -> jax.ShapeDtypeStruct:
        """Spec of ``obs`` in ONE example item; TypeError/ValueError unless the item (a dict
        or a dataclass) has ``obs`` and ``next_obs`` of equal shape and dtype."""
        lay = self.layout
        example = self.item_fields(example)
        if lay.obs not in example or lay.next_obs not in example:
            raise TypeError(
                f"{lay.kind} layout: items must have fields '{lay.obs}' and "
                f"'{lay.next_obs}', got {type(example).__name__} with fields {sorted(example)}"
            )
        o, n = (encoding.spec_of(example[k]) for k in (lay.obs, lay.next_obs))
        if o != n:
            raise ValueError(
                f"{lay.kind} layout: '{lay.obs}' {o.shape} {o.dtype} and "
                f"'{lay.next_obs}' {n.shape} {n.dtype} must match"
            )
        return o

    def ring_fields(self, per_step: dict, obs: jax.ShapeDtypeStruct) -> dict:
        """State fields of an empty ring. per_step: ONE item's per-step fields (``obs``: the
        stored frame); obs: the whole observation (for ``pending``)."""
        states = encoding.init_states(self.codecs, per_step)
        stored = encoding.stored_example(self.codecs, per_step, states)
        zeros = lambda n, s: jnp.zeros((n, *s.shape), s.dtype)  # noqa: E731
        steps = (self.E, self.A) if self.grid else (self.E * self.A,)
        return dict(
            items=jax.tree.map(lambda s: jnp.zeros((*steps, *s.shape), s.dtype), stored),
            flags=jnp.zeros(steps, jnp.uint8),
            side=jax.tree.map(lambda s: zeros(self.K + self.E, s), stored[self.layout.obs]),
            side_ids=jnp.full((self.K,), -1, jnp.int32),
            side_start=jnp.zeros((self.A, self.G), jnp.int32),
            pending=zeros(self.E, obs),
            cursor=jnp.zeros((6,), jnp.int32),
            codecs=states,
        )

    # -- specs and checks --------------------------------------------------------------------
    def raw_spec(self, state) -> dict:
        """Per-item ShapeDtypeStructs of the per-step fields and obs/next_obs as given to
        ``add`` (state may be vmapped)."""
        seeds = state.cursor.ndim - 1
        items = jax.tree.map(lambda x: self.flat_spec(x, seeds), state.items)
        items, codecs, pending = encoding.strip_axes((items, state.codecs, state.pending), seeds)
        spec = dict(encoding.raw_spec(self.codecs, items, codecs))
        obs = jax.ShapeDtypeStruct(pending.shape[1:], pending.dtype)
        spec[self.layout.obs] = spec[self.layout.next_obs] = obs
        return spec

    def check_items(self, state, items):
        if state.item_type is not None:
            if type(items) is not state.item_type:
                raise TypeError(
                    f"add: items are a {type(items).__name__}, the buffer was initialised "
                    f"with {state.item_type.__name__} items"
                )
            items = self.item_fields(items)
        items, batch = check_batch_like(self.raw_spec(state), items, "add")
        if batch != self.E:
            raise ValueError(
                f"add: the {self.layout.kind} layout takes one row of num_envs={self.E} "
                f"items per add, got a batch of {batch}"
            )
        return items, batch

    # -- write -----------------------------------------------------------------------------
    def write_row(self, state, per_step: dict, obs, next_obs, first, errors=0):
        """Add one row: keep the previous row's ``next_obs`` in the side store where it is not
        this row's ``obs``, then write ``per_step`` (raw; ``obs`` its stored frame) and the
        FIRST flags (bool [E]) at row ``rows``. ``errors`` adds to the error counter."""
        rows, side_pos = state.rows, state.cursor[2]
        differ = (state.live_rows > 0) & ~rows_equal(state.pending, obs)
        state, rank, live_rows = self._push_side(state, differ)
        stored, codec_states = encoding.encode(self.codecs, per_step, state.codecs)
        # this row's FIRST bits, and where the previous row's next_obs went to the side store
        side_flags = jnp.where(differ, SIDE | (rank << RANK_SHIFT), 0)
        row_flags = (jnp.where(first, FIRST, 0) | side_flags).astype(jnp.uint8)
        phys = jnp.mod(rows, self.A)
        if self.grid:  # column ``phys`` of each [E, A, ...] array: in place, no scatter

            def put(buf, x):
                start = (0, phys) + (0,) * (buf.ndim - 2)
                return jax.lax.dynamic_update_slice(buf, x.astype(buf.dtype)[:, None], start)

        else:
            at = self.index(phys, jnp.arange(self.E, dtype=jnp.int32))

            def put(buf, x):
                return buf.at[at].set(x, unique_indices=True, mode="promise_in_bounds")

        flags = put(state.flags, row_flags)
        items = jax.tree.map(put, state.items, stored)
        rows = jnp.mod(rows + 1, self.T)
        count = self.count_of(rows, rows - live_rows)
        n = jnp.sum(differ, dtype=jnp.int32)
        cursor = jnp.stack(
            [
                rows,
                live_rows,
                jnp.mod(side_pos + n, self.K),
                state.cursor[3] + errors,
                count,
                jnp.mod(state.cursor[5] + self.E - n, self.K),
            ]
        )
        # The new pending reads the old one and one value of the new side store (``keep`` is
        # never true: rows are >= 0), so XLA writes it in place after the old one's last
        # reads instead of copying the old one through the loop carry.
        probe = jax.tree.leaves(state.side)[0].reshape(-1)[0]
        keep = expand(jnp.broadcast_to((state.rows < 0) & (probe != probe), (self.E,)), next_obs)
        return state.replace(
            items=items,
            flags=flags,
            pending=jnp.where(keep, state.pending, next_obs),
            codecs=codec_states,
            cursor=cursor.astype(jnp.int32),
        )

    def _push_side(self, state, differ):
        """Move the pending frames of the previous row where ``differ`` (bool [E]) to the side
        store; returns (state with side, side_ids, side_start and codecs updated, each entry's
        rank in its group int32 [E], the sampleable rows after this add)."""
        rows, side_pos = state.rows, state.cursor[2]
        frames = self.newest_frame(state.pending)
        codec_states = dict(state.codecs)
        if self.obs_codec is not None:
            frames, codec_states[self.layout.obs] = _encode_rows(
                self.obs_codec, frames, codec_states[self.layout.obs], differ
            )
        env = jnp.arange(self.E, dtype=jnp.int32)
        before, n, src_env = _compact(differ)
        # each env's tag: the one its entry replaces, or one it checks (module docstring)
        pos = jnp.mod(jnp.where(differ, side_pos + before, state.cursor[5] + env - before), self.K)
        read = state.side_ids[pos]
        age = lambda tag: jnp.mod(rows - 1 - tag, self.T)  # noqa: E731  rows since the tag's row
        evicted = jnp.max(jnp.where(differ & (before == n - 1), read, -1))  # the newest; -1: none
        live_rows = jnp.minimum(
            jnp.minimum(state.live_rows + 1, self.R),
            jnp.where(evicted >= 0, age(evicted) + 1, self.R),
        )
        gone = (read >= 0) & (age(read) >= self.A) & (jnp.mod(pos - side_pos, self.K) >= n)
        target = jnp.where(differ, pos, self.K)  # K: dropped
        # The frames go in as ONE slice at physical side_pos (in place): entry i of the row
        # (env order) at side_pos + i, which may run into the E extra slots past K; the
        # slots past the row's n entries keep what they held.
        new_entry = env < n

        def put(buf, x):
            old = jax.lax.dynamic_slice_in_dim(buf, side_pos, self.E)
            return jax.lax.dynamic_update_slice_in_dim(
                buf, jnp.where(expand(new_entry, x), x[src_env], old), side_pos, 0
            )

        # Tags are >= -1, so this is the new tags (-1 where a checked one is cleared); it makes
        # the write depend on the read, so XLA updates side_ids in place (a read that does not
        # feed the write makes it copy the whole array).
        tags = jnp.where(read < -1, read, jnp.where(differ, jnp.mod(rows - 1, self.T), -1))
        group_first = before[::GROUP]  # entries before each group of 64 envs
        group_start = side_pos + group_first  # physical: < K + E, not wrapped
        return (
            state.replace(
                side=jax.tree.map(put, state.side, frames),
                side_ids=state.side_ids.at[jnp.where(gone, pos, target)].set(tags, mode="drop"),
                side_start=jax.lax.dynamic_update_slice(
                    state.side_start, group_start[None], (jnp.mod(rows - 1, self.A), 0)
                ),
                codecs=codec_states,
            ),
            before - group_first[env // GROUP],
            live_rows,
        )

    # -- sum-tree leaves of the rows that stop being sampleable --------------------------------
    def dropped(self, before, after):
        """(the oldest row, how many rows) that stopped being sampleable in the add from
        ``before`` to ``after`` (int32 scalars; the row a representative, as ``rows``). More
        than one when the side store dropped rows: any number (rows without side entries
        go with the next evicted entry's row)."""
        return self.lo(before), before.live_rows + 1 - after.live_rows

    def zero_dropped(self, tree, before, after):
        """``tree`` with the leaves of the items of all but the oldest row that stopped being
        sampleable in the add from ``before`` to ``after`` set to 0 (``write`` returns the
        oldest's): a loop of one row per step that usually takes none."""
        first, n = self.dropped(before, after)
        loop = _zero_rows_loop(self.row_slots, tree.capacity, tree.branching)
        return tree.replace(nodes=loop(tree.nodes, first + 1, n - 1))

    # -- sample ----------------------------------------------------------------------------
    records_sampling = False

    def sampled(self, state, slots, live, new_leaves=None):
        return state, jnp.zeros(slots.shape, bool)  # no policy: sampling retires nothing

    def count(self, state):
        return state.count

    def draw(self, key, n: int, base, count):
        """Uniform over the item numbers [base, base + count), drawn as ``base + (i - base)
        mod count`` for i uniform in [0, count), returned mod ``num_slots``: when the numbers
        cover the whole ring, slot == i, exactly the flat layout's draw, so the layouts
        sample the same items from the same key."""
        count = jnp.maximum(count, 1)
        i = ring.random_slots(key, n, count)
        return jnp.mod(base + jnp.mod(i - base, count), self.num_slots)

    def next_sources(self, state, phys, env, flags):
        """Where the ``next_obs`` of steps (phys, env) is (int32, the shape of ``phys``): a
        side-store position, ``NEXT_ROW`` or ``PENDING`` (the newest row). ``flags``: those of
        the steps of the NEXT physical row ``(phys + 1) % A``, which hold the SIDE bits.
        Computed once per step on CPU, where a per-element select would otherwise redo this
        index arithmetic for every element of the frame."""
        pos = state.side_start[phys, env // GROUP] + (flags >> RANK_SHIFT).astype(jnp.int32)
        src = jnp.where((flags & SIDE) > 0, pos, NEXT_ROW)
        src = jnp.where(self.row_of(state, phys) == state.rows - 1, PENDING, src)
        return materialise_on_cpu(src, (state.rows >= 0).astype(jnp.int32))

    def next_stored(self, state, src, following):
        """Stored next frames [..., *frame]: the side entries at ``src`` (from
        ``next_sources``) where it is one, else ``following`` (the next row's frames)."""
        return jax.tree.map(
            lambda entries, f: jnp.where(expand(src >= 0, f), entries[jnp.maximum(src, 0)], f),
            state.side,
            following,
        )

    def with_pending(self, state, src, env, next_frames):
        """Decoded next frames, those of the newest row (``src == PENDING``) from
        ``pending``."""
        newest = expand(src == PENDING, next_frames)
        return jnp.where(newest, self.newest_frame(state.pending)[env], next_frames)

    def decode_obs(self, state, stored, lead: int = 1):
        """Decoded frames [*lead_shape, *frame] from stored ones [*lead_shape, *stored_frame]."""
        codecs = {self.layout.obs: self.obs_codec} if self.obs_codec else {}
        return decode_steps(codecs, {self.layout.obs: stored}, state.codecs, lead)[self.layout.obs]

    def gather_fields(self, state, at, skip=()):
        """Decoded per-step fields except those in ``skip`` at storage indices ``at`` [...]."""
        names = [n for n in state.items if n not in skip]
        codecs = {n: c for n, c in self.codecs.items() if n in names}
        stored = {n: self.flat(state.items[n])[at] for n in names}
        return decode_steps(codecs, stored, state.codecs, at.ndim)

    # -- memory ----------------------------------------------------------------------------
    def report(self, state, extra=()):
        """Per field: raw bytes per step as given to ``add`` vs stored bytes per step.
        ``next_obs`` is charged the side store and ``pending``; ``extra``: the layout's own
        FieldMemory entries; everything else (flags, counters) is overhead."""
        seeds = state.cursor.ndim - 1
        copies = math.prod(state.cursor.shape[:-1])
        raw = self.raw_spec(state)
        fields = [
            field_memory(name, self.flat_spec(leaf, seeds), seeds, self.capacity, raw[name])
            for name, leaf in state.items.items()
        ]
        side_bytes = sum(
            nbytes(x) for x in [state.side_ids, state.pending, *jax.tree.leaves(state.side)]
        )
        frame = jax.tree.leaves(state.side)[0]
        nxt = raw[self.layout.next_obs]
        fields.append(
            FieldMemory(
                self.layout.next_obs,
                tuple(frame.shape[seeds + 1 :]),
                str(np.dtype(frame.dtype)),
                side_bytes / (copies * self.capacity),
                side_bytes,
                nxt.shape,
                str(np.dtype(nxt.dtype)),
                nbytes(nxt),
            )
        )
        fields += list(extra)
        return report_from_fields(
            state, self.capacity, copies, sorted(fields, key=lambda f: f.name)
        )


@functools.lru_cache(maxsize=64)  # keyed by the store's bound row_slots: bounded
def _zero_rows_loop(row_slots, capacity: int, branching: int):
    """``loop(nodes [..., M], first [...], count [...]) -> nodes``: in each tree the leaves
    ``row_slots(r)`` (int32 [..., E], -1: none) of rows ``first .. first + count - 1`` set to
    0, one row per step of ONE while loop over all the trees (as many steps as the largest
    count), also under vmap (see ``vmap_as_leading_axis``)."""

    def zero(nodes, slots):
        return sumtree.set(
            sumtree.SumTree(nodes, capacity, branching), slots, jnp.zeros(slots.shape)
        ).nodes

    @vmap_as_leading_axis
    def loop(nodes, first, count):
        trees, first, count = (
            nodes.reshape(-1, nodes.shape[-1]),
            first.reshape(-1),
            count.reshape(-1),
        )

        def body(carry):
            i, trees = carry
            return i + 1, jax.vmap(zero)(
                trees, jnp.where((i < count)[:, None], row_slots(first + i), -1)
            )

        steps = jnp.max(count)
        return jax.lax.while_loop(lambda c: c[0] < steps, body, (jnp.int32(0), trees))[1].reshape(
            nodes.shape
        )

    return jax.jit(
        loop
    )  # compiled once when called eagerly (a loop's body is traced anew per call)


def decode_steps(codecs: dict, stored: dict, states: dict, lead: int) -> dict:
    """``encoding.decode`` for fields [*lead_shape, *item] with ``lead`` leading axes."""
    if not codecs or lead == 1:
        return encoding.decode(codecs, stored, states)
    shape = next(iter(stored.values())).shape[:lead]
    flat = {n: x.reshape((-1, *x.shape[lead:])) for n, x in stored.items()}
    return {
        n: x.reshape((*shape, *x.shape[1:]))
        for n, x in encoding.decode(codecs, flat, states).items()
    }
