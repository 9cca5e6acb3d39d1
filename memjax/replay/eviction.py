"""Eviction policies: which item a full buffer overwrites (and when an item leaves early).

A policy is a small NamedTuple of pure functions, like an optax transform, passed as
``eviction=`` to :func:`memjax.replay.uniform` or :func:`memjax.replay.prioritized`::

    buf = mj.replay.uniform(100_000, eviction=mj.replay.eviction.reservoir())
    state = buf.add(state, items)                          # the policy picks the slots
    state = buf.update(state, sample.indices, priorities)  # and records what was sampled

Policies (each new item takes a free slot while there is one, lowest slot first):

* :func:`fifo` (the default): the oldest item is overwritten. No extra state and no extra
  work: the buffer is exactly the FIFO ring it always was.
* :func:`reservoir`: Vitter's Algorithm R. Item ``n`` (counting from 0 over the buffer's
  life) is kept with probability ``capacity / (n + 1)``, replacing a uniformly chosen item,
  so every item ever added is equally likely to be in the buffer.
* :func:`least_recently_sampled`: the item sampled longest ago (an item never sampled
  counts from when it was added) is overwritten.
* :func:`lowest_priority`: the item with the lowest priority is overwritten (prioritized
  buffers only).
* :func:`max_times_sampled`: an item leaves the buffer after ``n`` samples (it can no
  longer be drawn, and its slot is free); a full buffer overwrites its oldest item.

**Sampling history** reaches the state through ``update(state, indices, priorities)``,
which the training loop calls after every learner step for every buffer (``priorities``
may be None for uniform buffers). An update counts each position of ``indices`` as one
sample; ids of overwritten items and -1 are ignored, as ever.

**Ties and time.** The ordered policies (least recently sampled, lowest priority, max times
sampled) keep a ``uint32`` clock: every item added advances it by one (item ``i`` of a
batch is stamped ``clock + i``), and so does every ``update`` of
:func:`least_recently_sampled`, which stamps all the items it names with the same time.
Ties are broken deterministically: least recently sampled by the lowest slot, lowest
priority and max times sampled by age (the oldest item first; no two items share an age).
Times are absolute: the order is exact for the first ``2**32 - capacity`` ticks (4e9 items
added and updates).

**Batched adds** give the same state as adding the items one at a time: in a batch the
later items see the earlier ones (an item added in the batch is the least evictable, so
it is overwritten only when the batch is larger than the capacity; reservoir draws depend
on the item's number and content, never on how items were grouped into adds).

**Layouts.** Non-FIFO policies need ``layout=None``: the one-copy and sequence layouts pair
each step with the next row of the same environment, which only exists in FIFO order;
another layout raises ``ValueError`` at construction.

**Cost.** :func:`reservoir`: O(batch) per add. The ordered policies keep a tournament tree
of one key per slot (``memjax.replay.mintree``, about 14 bytes per item): an add takes the
smallest key ``batch`` times, an update re-keys the items it names, each in O(log capacity);
:func:`max_times_sampled` also counts its items in O(capacity) per update. Every non-FIFO
policy keeps an int32 write counter per slot (the item ids) and its own state below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _pytree as struct
from memjax import sumtree
from memjax._checks import check_positive_int
from memjax.replay import mintree, ring

_PAIRWISE = 64  # duplicate resolution by an all-pairs comparison up to this batch size


class Occupancy(NamedTuple):
    """What a policy sees of the buffer when it places new items.

    Attributes:
      capacity: the buffer's capacity (a Python int).
      count: int32 scalar, the number of items stored before the add.
      new_leaf: float32 scalar, the stored priority new items get (a prioritized buffer's
        running maximum); None for uniform buffers.
    """

    capacity: int
    count: jax.Array
    new_leaf: jax.Array | None


class EvictionPolicy(NamedTuple):
    """An eviction policy: a bundle of pure functions (see the module docstring). Make one
    with :func:`fifo`, :func:`reservoir`, :func:`least_recently_sampled`,
    :func:`lowest_priority` or :func:`max_times_sampled`.

    Attributes:
      name: the policy's name as it is made, e.g. ``"reservoir()"`` (for messages).
      init: ``init(capacity, prioritized) -> state``: the policy's state (a pytree of arrays).
      place: ``place(state, occupancy, items, batch) -> (state, slots, bumps, count)``: the slot
        of each of ``batch`` new items (int32 [batch], distinct; ``capacity`` for an item that
        is not stored, or is overwritten later in the same batch), how often each slot was
        written in the batch (int32 [batch]), and the number of stored items after the add.
        ``occupancy`` is an :class:`Occupancy`, ``items`` the raw items [batch, ...].
      sampled: ``sampled(state, slots, live, new_leaves) -> (state, retired, count)`` records
        that the items at ``slots`` (int32 [n], where ``live``) were sampled once per
        position; ``new_leaves`` (float32 [n], prioritized buffers; None for uniform ones)
        are the stored priorities ``update`` gives them (negative: unchanged). ``retired``
        (bool [n]) marks the items that leave the buffer now, ``count`` is the number of
        stored items after, or None when it does not change. None for a policy without
        sampling history.
      live: ``live(state, slots) -> bool [n]``: whether the items at those slots are still
        stored, or None when the stored items are the slots ``[0, count)``.
      draw: ``draw(state, key, n) -> int32 [n]``: uniform draws over the stored items (for
        uniform buffers), or None when they are ``[0, count)``.
      needs_priorities: the policy orders items by priority (prioritized buffers only).
      is_fifo: the default FIFO ring (every other field is unused).
    """

    name: str
    init: Callable | None = None
    place: Callable | None = None
    sampled: Callable | None = None
    live: Callable | None = None
    draw: Callable | None = None
    needs_priorities: bool = False
    is_fifo: bool = False


# ------------------------------------------------------------------------------ states


@struct.dataclass
class ReservoirState:
    """The state of :func:`reservoir`.

    Attributes:
      key: uint32 [2], the raw data of the policy's threefry PRNG key (from ``seed``;
        replace it, e.g. with ``jax.random.key_data(key)``, for other streams).
      seen: uint32 [2], the number of items ever added as (low word, high word).
    """

    key: jax.Array
    seen: jax.Array


@struct.dataclass
class OrderState:
    """The state of :func:`least_recently_sampled` and :func:`lowest_priority`.

    Attributes:
      tree: a ``memjax.replay.mintree.MinTree`` (a tournament tree) of one key per slot;
        the smallest key is overwritten next. Least recently sampled: (the time the item was
        last sampled or added, the slot). Lowest priority: (the stored priority, the time the
        item was added). Empty slots hold time ``slot``, older than every item.
      clock: uint32 scalar, the time (see the module docstring); starts at ``capacity``.
    """

    tree: mintree.MinTree
    clock: jax.Array


@struct.dataclass
class MaxTimesState(OrderState):
    """The state of :func:`max_times_sampled`: :class:`OrderState` with keys (the slot holds
    an item: 1, else 0; the time the item was added), plus

    Attributes:
      times: int32 [capacity], how often each slot's item was sampled.
      draws: a :class:`memjax.sumtree.SumTree` with leaf 1 per stored item, for uniform
        draws (uniform buffers; ``()`` in prioritized ones, whose priorities are zeroed).
    """

    times: jax.Array
    draws: Any


# ---------------------------------------------------------------------------- policies


def fifo() -> EvictionPolicy:
    """First in, first out: the oldest item is overwritten (the default).

    Returns:
      The :class:`EvictionPolicy` that leaves a buffer exactly as without ``eviction=``: the
      same state, results and speed.
    """
    return EvictionPolicy("fifo()", is_fifo=True)


def reservoir(seed: int = 0) -> EvictionPolicy:
    """Reservoir sampling (Vitter's Algorithm R): every item ever added is equally likely
    to be stored.

    The first ``capacity`` items fill the buffer; item ``n`` (0-based, over the buffer's
    life) then draws ``j`` uniformly from ``[0, n]`` and replaces the item in slot ``j`` if
    ``j < capacity``, else it is dropped. So after ``N`` adds each of the ``N`` items is
    stored with probability ``capacity / N``.

    The draw of item ``n`` comes from the policy key folded with ``n`` and with a hash of
    the item's content, so a batched add equals adding the items one at a time, and
    buffers that receive different items (vmapped seeds of one training program, whose
    states start from the same key) make independent draws.

    Args:
      seed: the seed of the policy key stored in the state
        (``state.eviction.key``; replace it to draw other streams for the same items).

    Returns:
      The :class:`EvictionPolicy`. Item numbers are counted on 64 bits; the draw is exact
      for the first ``2**32 - 1`` items, after which items are kept with probability
      ``capacity / (2**32 - 1)``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"reservoir: seed must be a python int, got {seed!r}")
    seed = int(seed)

    def init(capacity, prioritized):
        return ReservoirState(
            key=jax.random.key_data(jax.random.key(seed, impl="threefry2x32")),
            seen=jnp.zeros((2,), jnp.uint32),
        )

    return EvictionPolicy("reservoir()", init, _reservoir_place)


def least_recently_sampled() -> EvictionPolicy:
    """Overwrite the item sampled longest ago; an item not sampled since it was added counts
    from its addition. Items named in one ``update`` share a time; ties go to the lowest slot.

    Returns:
      The :class:`EvictionPolicy`. Its state is an :class:`OrderState`; every ``update``
      (uniform buffers included, ``priorities`` may be None) stamps the items it names.
    """

    def init(capacity, prioritized):
        slots = jnp.arange(capacity, dtype=jnp.uint32)
        return OrderState(
            tree=mintree.build(_ascending(slots), ~slots), clock=jnp.asarray(capacity, jnp.uint32)
        )

    def place(state, occupancy, items, batch):
        times = state.clock + jnp.arange(batch, dtype=jnp.uint32)
        tree, slots = mintree.take(state.tree, _ascending(times), times, q_is_slot=True)
        return _placed(
            state.replace(tree=tree, clock=state.clock + jnp.uint32(batch)), occupancy, slots, batch
        )

    def sampled(state, slots, live, new_leaves):
        now = jnp.broadcast_to(_ascending(state.clock), slots.shape)
        tree = mintree.set_p(state.tree, jnp.where(live, slots, -1), now)
        return state.replace(tree=tree, clock=state.clock + 1), jnp.zeros(slots.shape, bool), None

    return EvictionPolicy("least_recently_sampled()", init, place, sampled)


def lowest_priority() -> EvictionPolicy:
    """Overwrite the item with the lowest priority (prioritized buffers only).

    Priorities are compared as stored (the sum-tree leaves, ``max(p, min_priority) **
    alpha``); among equal priorities the oldest item goes first. New items get the largest
    priority seen so far, so an add never overwrites an item it just added unless the batch
    is larger than the capacity.

    Returns:
      The :class:`EvictionPolicy`. A uniform buffer given it raises ``ValueError``.
    """

    def init(capacity, prioritized):
        slots = jnp.arange(capacity, dtype=jnp.uint32)
        return OrderState(
            tree=mintree.build(jnp.zeros((capacity,), jnp.int32), ~slots),
            clock=jnp.asarray(capacity, jnp.uint32),
        )

    def place(state, occupancy, items, batch):
        times = state.clock + jnp.arange(batch, dtype=jnp.uint32)
        key = jnp.broadcast_to(_priority_key(occupancy.new_leaf), (batch,))
        tree, slots = mintree.take(state.tree, key, ~times)
        return _placed(
            state.replace(tree=tree, clock=state.clock + jnp.uint32(batch)), occupancy, slots, batch
        )

    def sampled(state, slots, live, new_leaves):
        changed = live & (new_leaves >= 0)
        tree = mintree.set_p(state.tree, jnp.where(changed, slots, -1), _priority_key(new_leaves))
        return state.replace(tree=tree), jnp.zeros(slots.shape, bool), None

    return EvictionPolicy("lowest_priority()", init, place, sampled, needs_priorities=True)


def max_times_sampled(n: int) -> EvictionPolicy:
    """An item leaves the buffer after it has been sampled ``n`` times (Reverb's
    ``max_times_sampled``): it can no longer be drawn, and its slot is free for new items.

    New items take a free slot (never-used slots first, lowest first, then the slot whose
    last item was added longest ago); when there is none, the oldest item is overwritten
    (FIFO). The ``n``-th sample is counted by the ``update`` that names the item (once per
    position in ``indices``); that update still applies the priority, then zeroes it, and
    later updates for the item are ignored.

    Args:
      n: samples per item, >= 1.

    Returns:
      The :class:`EvictionPolicy`; ``size(state)`` counts the items still stored.
    """
    n = check_positive_int("max_times_sampled: n", n)

    def init(capacity, prioritized):
        slots = jnp.arange(capacity, dtype=jnp.uint32)
        return MaxTimesState(
            tree=mintree.build(jnp.zeros((capacity,), jnp.int32), ~slots),
            clock=jnp.asarray(capacity, jnp.uint32),
            times=jnp.zeros((capacity,), jnp.int32),
            draws=() if prioritized else sumtree.init(capacity),
        )

    def place(state, occupancy, items, batch):
        times = state.clock + jnp.arange(batch, dtype=jnp.uint32)
        tree, slots = mintree.take(state.tree, jnp.ones((batch,), jnp.int32), ~times)
        state = state.replace(
            tree=tree,
            clock=state.clock + jnp.uint32(batch),
            times=state.times.at[slots].set(0, mode="promise_in_bounds"),
        )
        if not isinstance(state.draws, tuple):
            state = state.replace(
                draws=sumtree.set(state.draws, slots, jnp.ones((batch,), jnp.float32))
            )
        return _placed(state, occupancy, slots, batch)  # free slots go first: count + batch

    def sampled(state, slots, live, new_leaves):
        capacity = state.times.shape[0]
        target = jnp.where(live, slots, capacity)
        times = state.times.at[target].add(1, mode="drop")
        retired = live & (times.at[target].get(mode="fill", fill_value=0) >= n)
        gone = jnp.where(retired, slots, -1)
        tree = mintree.set_p(state.tree, gone, jnp.zeros(slots.shape, jnp.int32))
        state = state.replace(tree=tree, times=times)
        if not isinstance(state.draws, tuple):
            state = state.replace(
                draws=sumtree.set(state.draws, gone, jnp.zeros(slots.shape, jnp.float32))
            )
        stored = mintree.leaf_p(tree, jnp.arange(capacity, dtype=jnp.int32))
        return state, retired, jnp.sum(stored).astype(jnp.int32)

    def live(state, slots):
        return mintree.leaf_p(state.tree, slots) == 1

    def draw(state, key, count):
        return sumtree.sample(state.draws, key, count, stratified=False)

    return EvictionPolicy(f"max_times_sampled({n})", init, place, sampled, live, draw)


def resolve(eviction) -> EvictionPolicy:
    """The policy for a buffer's ``eviction=`` argument: None means :func:`fifo`.

    Args:
      eviction: None or an :class:`EvictionPolicy`.

    Returns:
      The :class:`EvictionPolicy`.

    Raises:
      TypeError: anything else (e.g. the function ``reservoir`` instead of ``reservoir()``).
    """
    if eviction is None:
        return fifo()
    if not isinstance(eviction, EvictionPolicy):
        hint = " (call it: reservoir(), not reservoir)" if callable(eviction) else ""
        raise TypeError(
            f"eviction must be a memjax.replay.eviction policy such as fifo() or "
            f"reservoir(), got {eviction!r}{hint}"
        )
    return eviction


def _ascending(u):
    """int32 in the order of uint32 ``u``."""
    return jax.lax.bitcast_convert_type(
        jnp.asarray(u, jnp.uint32) ^ jnp.uint32(0x80000000), jnp.int32
    )


def _priority_key(leaves):
    """int32 in the order of stored priorities (float32 >= 0: their bit patterns)."""
    return jax.lax.bitcast_convert_type(
        jnp.maximum(jnp.asarray(leaves, jnp.float32), 0.0), jnp.int32
    )


def _placed(state, occupancy, slots, batch: int):
    """(state, slots, bumps, count) for ``batch`` items taken in order from the tree: the last
    item written to each slot is stored; ``bumps`` counts each slot's writes."""
    capacity = occupancy.capacity
    count = jnp.minimum(occupancy.count + batch, capacity).astype(jnp.int32)
    if batch <= capacity:  # every slot taken once
        return state, slots, jnp.ones((batch,), jnp.int32), count
    last, bumps = _last_occurrence(slots, capacity)
    return state, jnp.where(last, slots, capacity), bumps, count


# ---------------------------------------------------------------------------- reservoir


def _reservoir_place(state, occupancy, items, batch):
    """Algorithm R for ``batch`` items numbered ``seen, seen + 1, ...``."""
    capacity = occupancy.capacity
    lo0, hi0 = state.seen[0], state.seen[1]
    offsets = jnp.arange(batch, dtype=jnp.uint32)
    lo = lo0 + offsets  # wraps
    hi = hi0 + (lo < lo0).astype(jnp.uint32)
    content = item_hash(items, batch)
    base = jax.random.wrap_key_data(state.key, impl="threefry2x32")

    def bits(h, hi_, lo_):
        key = jax.random.fold_in(jax.random.fold_in(base, h ^ (hi_ * jnp.uint32(0x9E3779B9))), lo_)
        return jax.random.bits(key, (2,), jnp.uint32)

    words = jax.vmap(bits)(content, hi, lo)
    top = jnp.uint32(0xFFFFFFFF)
    span = jnp.where((hi == 0) & (lo < top), lo + 1, top)  # n + 1, saturated
    j = _mul_high(words[:, 0], words[:, 1], span)
    filling = (hi == 0) & (lo < capacity)
    slots = jnp.where(
        filling, lo.astype(jnp.int32), jnp.where(j < capacity, j.astype(jnp.int32), capacity)
    )
    last, bumps = _last_occurrence(slots, capacity)
    slots = jnp.where(last, slots, capacity)
    seen_lo = lo0 + jnp.uint32(batch)  # batch < 2**31
    seen = jnp.stack([seen_lo, hi0 + (seen_lo < lo0).astype(jnp.uint32)])
    count = jnp.minimum(occupancy.count + batch, capacity).astype(jnp.int32)
    return state.replace(seen=seen), slots, bumps, count


def _mul_high(high, low, span):
    """``floor(u * span / 2**64)`` for the 64-bit ``u = high * 2**32 + low`` (uint32 words)."""
    top, bottom = ring._mul_wide(high, span)
    carry = (bottom + ring._mul_wide(low, span)[0]) < bottom
    return top + carry.astype(jnp.uint32)


def item_hash(items, batch: int) -> jax.Array:
    """uint32 [batch]: a hash of each item's bits (every leaf, every element).

    A fixed odd multiplier per 32-bit word, summed: cheap, deterministic, and different for
    items that differ in one word. It only feeds PRNG keys (reservoir draws), which mix it.
    """
    words = [_as_words(leaf, batch) for leaf in jax.tree.leaves(items)]
    words = jnp.concatenate(words, axis=1) if words else jnp.zeros((batch, 1), jnp.uint32)
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(0, 2**31, size=words.shape[1], dtype=np.uint64) * 2 + 1
    return jnp.sum(words * jnp.asarray(mult.astype(np.uint32)), axis=1, dtype=jnp.uint32)


def _as_words(leaf, batch: int) -> jax.Array:
    """A leaf [batch, ...] as uint32 words [batch, W]."""
    x = jnp.asarray(leaf).reshape(batch, -1)
    size = x.dtype.itemsize
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if size == 2:
        return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    if size == 1:
        return jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(batch, -1)  # 8-byte types


def _last_occurrence(slots, capacity: int):
    """(last bool [B]: no later entry has the same slot and the slot is < capacity,
    count int32 [B]: how often the entry's slot occurs in the batch)."""
    batch = slots.shape[0]
    if batch <= _PAIRWISE:
        same = slots[:, None] == slots[None, :]
        later = jnp.any(jnp.triu(same, 1), axis=1)
        return ~later & (slots < capacity), jnp.sum(same, axis=1).astype(jnp.int32)
    order = jnp.argsort(slots, stable=True)
    s = slots[order]
    idx = jnp.arange(batch, dtype=jnp.int32)
    starts = jnp.concatenate([jnp.ones((1,), bool), s[1:] != s[:-1]])
    ends = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])
    first = jax.lax.cummax(jnp.where(starts, idx, 0))
    last = jax.lax.cummin(jnp.where(ends, idx, batch), reverse=True)
    inverse = jnp.zeros((batch,), jnp.int32).at[order].set(idx)
    return (ends[inverse] & (slots < capacity)), (last - first + 1)[inverse]


__all__ = [
    "EvictionPolicy",
    "Occupancy",
    "ReservoirState",
    "OrderState",
    "MaxTimesState",
    "fifo",
    "reservoir",
    "least_recently_sampled",
    "lowest_priority",
    "max_times_sampled",
    "resolve",
    "item_hash",
]
