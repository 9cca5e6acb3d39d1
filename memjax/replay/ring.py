"""FIFO ring storage shared by the uniform and prioritized buffers.

A ring state is a dataclass with two fields, ``items`` and ``cursor``, that mixes
in ``RingFields`` (the buffers' states do):
  items:  pytree of arrays [capacity, ...], the stored items.
  cursor: int32 [3] = (pos, count, lap), read through the properties
    pos:   the slot the next item goes to;
    count: number of valid items (<= capacity);
    lap:   how many times the ring wrapped, modulo ``num_laps(capacity)``.
  The three counters share one array because each donated buffer costs about a
  microsecond of dispatch per call; with one array an ``add`` is as cheap as a bare
  ``dynamic_update_slice`` (see experiments/bench_replay.py).

Item ids. ``sample`` returns ids, not raw slots: ``id = lap_written * capacity + slot``
where ``lap_written`` is the lap (mod ``num_laps``) in which the slot was last
written. A slot below ``pos`` was written in the current lap, one at or above it in
the previous lap, so ids need no per-slot storage. An id whose slot has been
overwritten since decodes to a different lap and is recognised as stale. Ids fit
in int32: ``num_laps = (2**31 - 1) // capacity``, so staleness is exact unless a slot
was overwritten a multiple of ``num_laps`` times (2047 at capacity 2**20) between
sample and update. For capacities above 2**30 there is one lap and ids are slots.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.random import threefry_2x32

INT32_MAX = 2**31 - 1


def num_laps(capacity: int) -> int:
    """How many laps ids distinguish before they repeat (>= 1)."""
    return max(1, INT32_MAX // capacity)


class RingFields:
    """Named views of ``cursor`` (works for vmapped states: leading axes are kept)."""

    @property
    def pos(self) -> jax.Array:
        """int32: the slot the next add writes first."""
        return self.cursor[..., 0]

    @property
    def count(self) -> jax.Array:
        """int32: the number of valid items (at most the capacity)."""
        return self.cursor[..., 1]

    @property
    def lap(self) -> jax.Array:
        """int32: how often the ring wrapped, modulo ``num_laps(capacity)``."""
        return self.cursor[..., 2]


def init_fields(example, capacity: int) -> dict:
    """Fields of an empty ring: zeroed items [capacity, ...] and cursor."""
    return dict(items=empty_items(example, capacity), cursor=jnp.zeros((3,), jnp.int32))


def empty_items(example, capacity: int):
    """Zeroed storage [capacity, ...] for each leaf of ONE example item."""
    return jax.tree.map(
        lambda x: jnp.zeros(
            (capacity, *jnp.shape(x)), x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype
        ),
        example,
    )


def write(state, items, batch: int, capacity: int):
    """Write ``batch`` items at ``pos`` (wrapping), oldest first; return (state, slots).

    If batch > capacity only the newest ``capacity`` items are kept, exactly as if
    they had been added one by one. ``slots`` int32 [min(batch, capacity)] are the
    slots written, in item order.
    """
    keep = min(batch, capacity)
    if keep < batch:
        items = jax.tree.map(lambda x: x[batch - keep :], items)
    slots = (state.pos + (batch - keep) + jnp.arange(keep, dtype=jnp.int32)) % capacity
    stored = jax.tree.map(
        lambda buf, x: buf.at[slots].set(x, unique_indices=True, mode="promise_in_bounds"),
        state.items,
        items,
    )
    advanced = state.pos + batch
    cursor = jnp.stack(
        [
            advanced % capacity,
            jnp.minimum(state.count + batch, capacity),
            (state.lap + advanced // capacity) % num_laps(capacity),
        ]
    ).astype(jnp.int32)
    new_state = state.replace(items=stored, cursor=cursor)
    return new_state, slots


def random_slots(key, n: int, count) -> jax.Array:
    """int32 [n] drawn uniformly from [0, count) (count: int32 scalar, 1 <= count < 2**31).

    Each draw is ``floor(u * count / 2**64)`` for ``u`` uniform on the 64 bits of two 32-bit
    words (``random_words``). Each value is hit by ``floor(2**64 / count)`` or one more of
    the 2**64 words: a relative bias below count / 2**64. The product is formed exactly in
    uint32 arithmetic from 16-bit halves (no 64-bit types, no division).
    """
    span = jnp.maximum(count, 1).astype(jnp.uint32)
    high, low = random_words(key, n)
    top, bottom = _mul_wide(high, span)
    carry = (bottom + _mul_wide(low, span)[0]) < bottom  # the sum wrapped past 2**32
    return (top + carry.astype(jnp.uint32)).astype(jnp.int32)


def random_words(key, n: int):
    """(high, low): two uint32 [n] random words per draw.

    For a threefry key (JAX's default), ONE evaluation of Threefry-2x32 per draw gives both
    words: ``threefry_2x32(key, [0, 1, ..., 2n - 1])``, split in halves, which is JAX's
    non-partitionable ``jax.random.bits(key, (2n,))`` stream. ``jax.random.bits`` in the
    default partitionable mode evaluates Threefry once per word (and XORs its two outputs):
    twice the work, and on XLA:CPU a program of 2n words at 8 vmapped seeds ran 5-8x slower
    than at 4 (see docs/benchmarks.md). Other key kinds use ``jax.random.bits(key, (2, n))``.
    """
    if str(jax.random.key_impl(key)) != "threefry2x32":
        high, low = jax.random.bits(key, (2, n), jnp.uint32)
        return high, low
    words = threefry_2x32(jax.random.key_data(key), jnp.arange(2 * n, dtype=jnp.uint32))
    return words[:n], words[n:]


def _mul_wide(a, b):
    """(high, low) uint32 words of the 64-bit product of uint32 ``a`` and ``b``."""
    mask = jnp.uint32(0xFFFF)
    a1, a0, b1, b0 = a >> 16, a & mask, b >> 16, b & mask
    low_low, cross1, cross2 = a0 * b0, a1 * b0, a0 * b1  # each < 2**32
    middle = (low_low >> 16) + (cross1 & mask) + (cross2 & mask)  # < 3 * 2**16
    high = a1 * b1 + (cross1 >> 16) + (cross2 >> 16) + (middle >> 16)
    return high, a * b


def gather(state, slots):
    """Items at ``slots`` (int32 [n], all in [0, capacity)) -> pytree [n, ...]."""
    return jax.tree.map(lambda buf: buf.at[slots].get(mode="promise_in_bounds"), state.items)


def ids_of(state, slots, capacity: int):
    """Ids (int32 [n]) of the items now stored at ``slots``."""
    laps = num_laps(capacity)
    lap = jnp.where(slots < state.pos, state.lap, (state.lap + laps - 1) % laps)
    return (lap * capacity + slots).astype(jnp.int32)


def slots_of(state, ids, capacity: int):
    """(slots int32 [n], live bool [n]): the slot of each id, and whether the item
    that id named is still stored there (not overwritten, not out of range)."""
    ids = jnp.asarray(ids, jnp.int32)
    slots = ids % capacity
    live = (ids >= 0) & (slots < state.count) & (ids_of(state, slots, capacity) == ids)
    return slots, live
