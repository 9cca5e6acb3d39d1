"""A tournament tree: the smallest of ``capacity`` keys, kept up to date in O(log capacity).

The ordered eviction policies (:mod:`memjax.replay.eviction`) keep one key per slot and
overwrite the slot with the smallest key. Keys are pairs ``(p, q)``, ordered by ``p``
ascending and then ``q`` descending: ``p`` int32 below ``INT32_MAX``, ``q`` uint32, unique
per slot. The tree
has the sum-tree's layout (:func:`memjax.sumtree.geometry`, fan-out 8): every level stored
in one flat array, each node's children one contiguous row, and every internal node holds
the smallest key of its children (see ``set_p`` for the top levels), so the root holds the
smallest key. Padding leaves hold
``(INT32_MAX, 0)``, larger than every real key.

* :func:`build`: a tree over given leaf keys, O(capacity).
* :func:`set_p`: new ``p`` for some leaves (``q`` kept); each entry walks up its path, but
  only to the *top*: the levels above the deepest level at most ``TOP_WIDTH`` nodes wide
  are left as they were (for 10k leaves: the walk recomputes the leaf's parent among the
  1,250 nodes of level 4; levels 3 to 0, 181 nodes, wait for ``refresh``).
* :func:`refresh`: recompute the top from the level below it (one vectorised reduction
  per level, O(TOP_WIDTH) in all, about 2 us at 10k leaves on a 2-core CPU); :func:`take`
  starts with it, so after ``set_p`` the tree is exact again before anything reads its root.
  Between ``set_p`` and ``take`` only the top is stale; ``refresh(set_p(build(p, q), ...))``
  is bit-identical to a fresh ``build``.
* :func:`take`: k times, read the smallest key's leaf (every node records the leaf its key
  came from), give that leaf a new key, walk up (the whole path). A new key larger than every
  other makes ``take`` return the k smallest in order.

Why the top is left to ``take``: the policies re-key a batch of sampled items after every
learner step (128 entries) but take only a few slots per add (one per new item), and most of
a walk's cost is recomputing nodes (one reduction each); at 10k leaves stopping below the top
saves 4 of 5 recomputations per entry, and ``take`` pays for the top once per add: ``set_p``
of 128 entries plus a ``take`` of 10 run in 0.54x the time of full walks (0.67x with a top
of 512 nodes, 0.62x with 4096).

On CPU both run as one ``fori_loop`` over the entries with 2-D dynamic slices, like
``memjax.sumtree.set`` (vmapped trees add leading axes instead of batching the slices); a
node is recomputed by one variadic reduction over its 8 children (about 0.05 us per node
at capacity 10k on a 2-core CPU; other forms measured slower inside the loop: three plain
reductions, a where-tournament, fan-out 4 or 16, and early exits through ``cond`` or a
nested ``while_loop``, which make XLA copy the keys). On other platforms ``set_p``
recomputes the touched nodes level by level (a vectorised gather/scatter per level) and
``take`` keeps its loop (k is small).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _pytree as struct
from memjax._batching import vmap_as_leading_axis
from memjax._fusion import materialise
from memjax.sumtree import geometry

K = 8
BIG = np.iinfo(np.int32).max
TOP_WIDTH = 2048
"""``set_p`` stops below the first level (from the root) wider than this many nodes."""


@struct.dataclass
class MinTree:
    """Tournament-tree state.

    Attributes:
      keys: int32 [3 M], every node's key and winner, all levels root first, interleaved:
        node ``i``'s ``p`` at ``3 i``, its ``q`` at ``3 i + 1`` (stored as ``q ^ 2**31`` so
        that int32 order is uint32 order) and the leaf holding that key at ``3 i + 2``. One
        array, so that recomputing a node reads its children (one contiguous slice) before
        anything is written, and writes the node with one update.
      capacity: static int, the number of leaves.
    """

    keys: jax.Array
    capacity: int = struct.field(pytree_node=False)

    @property
    def p(self) -> jax.Array:
        """int32 [M]: the primary keys."""
        return self.keys[..., 0::3]

    @property
    def q(self) -> jax.Array:
        """uint32 [M]: the secondary keys."""
        return _to_q(self.keys[..., 1::3])

    @property
    def winner(self) -> jax.Array:
        """int32 [M]: the leaf holding each node's key."""
        return self.keys[..., 2::3]


_FLIP = np.uint32(0x80000000)
_LOW = np.int32(-(2**31))


def _from_q(q):
    """The stored (int32) form of uint32 ``q``."""
    return jax.lax.bitcast_convert_type(jnp.asarray(q, jnp.uint32) ^ _FLIP, jnp.int32)


def _to_q(stored):
    return jax.lax.bitcast_convert_type(stored, jnp.uint32) ^ _FLIP


def _interleave(*parts):
    """int32 [..., 3 n] from three [..., n] arrays."""
    return jnp.stack(parts, axis=-1).reshape(*parts[0].shape[:-1], len(parts) * parts[0].shape[-1])


def _smaller(a, b):
    """The smaller of keys ``a = (p, q, winner)`` and ``b`` (p ascending, then q descending)."""
    pa, qa, wa = a
    pb, qb, wb = b
    take_b = (pb < pa) | ((pb == pa) & (qb > qa))
    return jnp.where(take_b, pb, pa), jnp.where(take_b, qb, qa), jnp.where(take_b, wb, wa)


def _row_min(p, q, w):
    """The smallest key of each row of [..., K] keys: (p, stored q, winner), each [...].

    One variadic reduction: on CPU two plain reductions per node cost about 8x more inside
    the update loops."""
    return jax.lax.reduce((p, q, w), (np.int32(BIG), _LOW, np.int32(0)), _smaller, (p.ndim - 1,))


def _min_of_rows(rows):
    """Interleaved nodes [..., 3 K] -> the smallest, interleaved [..., 3]."""
    return jnp.stack(_row_min(rows[..., 0::3], rows[..., 1::3], rows[..., 2::3]), axis=-1)


@functools.cache
def top_level(capacity: int) -> int:
    """The level ``t`` whose nodes ``set_p`` recomputes last: the deepest level whose stored
    width is at most ``TOP_WIDTH`` (the leaves themselves for a small tree, where ``set_p``
    only writes leaves). :func:`refresh` recomputes levels ``t - 1, ..., 0`` from level ``t``."""
    _, widths = geometry(capacity, K)
    return max(d for d in range(len(widths)) if d == 0 or widths[d] <= TOP_WIDTH)


def refresh(tree: MinTree) -> MinTree:
    """Recompute the levels above :func:`top_level` from the level below them (what
    :func:`set_p` leaves stale); a tree from :func:`build` or :func:`take` is unchanged.

    Args:
      tree: a :class:`MinTree` (any leading axes on ``keys``).

    Returns:
      The tree with an exact root: bit-identical to ``build`` of its leaves.
    """
    if top_level(tree.capacity) == 0:
        return tree
    return tree.replace(keys=_refresh_keys(tree.capacity)(tree.keys))


@functools.cache
def _refresh_keys(capacity: int):
    """``refresh`` on the flat keys [..., 3 M]. Vmapped as a leading axis: under a plain vmap
    the one-trip ``materialise`` loop gets a per-tree trip count, its carry becomes a select
    between old and new values, and the write of the head then copies every tree's keys
    (about 0.1 ms per add for 8 trees of 10k leaves on a 2-core CPU)."""
    top = top_level(capacity)
    offsets, widths = geometry(capacity, K)

    @vmap_as_leading_axis
    def run(keys):
        level = keys[..., 3 * offsets[top] : 3 * (offsets[top] + widths[top])]
        parts = []
        for d in range(top - 1, -1, -1):  # as in build: real nodes, then padding
            best = _min_of_rows(level.reshape(*level.shape[:-1], -1, 3 * K))  # [..., n, 3]
            pad = jnp.broadcast_to(
                jnp.asarray([BIG, _LOW, capacity - 1], jnp.int32),
                (*best.shape[:-2], widths[d] - best.shape[-2], 3),
            )
            level = jnp.concatenate([best, pad], axis=-2).reshape(*best.shape[:-2], 3 * widths[d])
            parts.append(level)
        # levels 0 .. top-1 are the start of ``keys``: one write, of values computed before it
        # (fused into the write, the reads of level ``top`` would make XLA copy the keys)
        head = materialise(
            jnp.concatenate(parts[::-1], axis=-1), (keys.reshape(-1)[2] >= 0).astype(jnp.int32)
        )
        return jax.lax.dynamic_update_slice_in_dim(keys, head, 0, axis=keys.ndim - 1)

    return run


def build(p, q) -> MinTree:
    """A tree over leaf keys ``p`` int32 [capacity] and ``q`` uint32 [capacity]."""
    capacity = p.shape[0]
    offsets, widths = geometry(capacity, K)
    lp = jnp.full((widths[-1],), BIG, jnp.int32).at[:capacity].set(jnp.asarray(p, jnp.int32))
    lq = jnp.full((widths[-1],), _LOW, jnp.int32).at[:capacity].set(_from_q(q))
    lw = jnp.minimum(jnp.arange(widths[-1], dtype=jnp.int32), capacity - 1)
    parts = [_interleave(lp, lq, lw)]
    for d in range(len(offsets) - 2, -1, -1):
        bp, bq, bw = _row_min(lp.reshape(-1, K), lq.reshape(-1, K), lw.reshape(-1, K))
        lp = jnp.full((widths[d],), BIG, jnp.int32).at[: bp.shape[0]].set(bp)
        lq = jnp.full((widths[d],), _LOW, jnp.int32).at[: bq.shape[0]].set(bq)
        lw = jnp.full((widths[d],), capacity - 1, jnp.int32).at[: bw.shape[0]].set(bw)
        parts.append(_interleave(lp, lq, lw))
    return MinTree(keys=jnp.concatenate(parts[::-1]), capacity=capacity)


def leaf_p(tree: MinTree, slots) -> jax.Array:
    """``p`` of the leaves at ``slots`` (int32 [n], in range)."""
    offsets, _ = geometry(tree.capacity, K)
    return tree.keys.at[3 * (offsets[-1] + slots)].get(mode="promise_in_bounds")


def set_p(tree: MinTree, slots, values) -> MinTree:
    """Set ``p`` of the leaves ``slots`` (int32 [n]; out of range: skipped) to ``values``
    (int32 [n]; the last of duplicate slots wins), keeping their ``q``. The levels above
    :func:`top_level` are left for :func:`refresh` (which :func:`take` calls)."""
    slots = jnp.asarray(slots, jnp.int32)
    values = jnp.asarray(values, jnp.int32)
    keys = jax.lax.platform_dependent(
        tree.keys,
        slots,
        values,
        cpu=_set_loop(tree.capacity),
        default=functools.partial(_set_vectorised, tree.capacity),
    )
    return tree.replace(keys=keys)


def take(tree: MinTree, new_p, new_q, q_is_slot: bool = False):
    """``len(new_p)`` times: the leaf with the smallest key, which then gets key
    ``(new_p[i], new_q[i])`` (with ``q_is_slot``: ``(new_p[i], ~leaf)``).

    Returns:
      ``(tree, slots int32 [k])``.
    """
    new_p = jnp.asarray(new_p, jnp.int32)
    new = _interleave(new_p, _from_q(new_q))
    tree = refresh(tree)
    keys, slots = _take_loop(tree.capacity, q_is_slot)(tree.keys, new)
    return tree.replace(keys=keys), slots


def _walk_up(capacity, keys, t, leaf, top: int = 0):
    """Recompute the ancestors of ``leaf`` in tree ``t`` of the flat keys [T, 3 M] on levels
    ``top`` and below; returns ``(keys, the last node's winner)`` (with ``top = 0``: the
    root's; ``leaf`` itself when nothing is recomputed)."""
    offsets, _ = geometry(capacity, K)
    node, winner = leaf, leaf
    for level in range(len(offsets) - 1, top, -1):
        node = node // K
        row = jax.lax.dynamic_slice(keys, (t, 3 * (offsets[level] + K * node)), (1, 3 * K))
        best = _min_of_rows(row)
        keys = jax.lax.dynamic_update_slice(keys, best, (t, 3 * (offsets[level - 1] + node)))
        winner = best[0, 2]
    return keys, winner


@functools.cache
def _set_loop(capacity: int):
    offsets, _ = geometry(capacity, K)

    @vmap_as_leading_axis
    def loop(keys, slots, values):
        shape = keys.shape
        trees = int(np.prod(shape[:-1], dtype=np.int64))
        n = slots.shape[-1]
        keys2 = keys.reshape(trees, shape[-1])
        slots2, values2 = slots.reshape(trees, n), values.reshape(trees, n)

        def body(step, keys):
            t, i = step // n, step % n
            slot = slots2[t, i]
            inside = (slot >= 0) & (slot < capacity)
            leaf = jnp.clip(slot, 0, capacity - 1)
            old = jax.lax.dynamic_slice(keys, (t, 3 * (offsets[-1] + leaf)), (1, 1))
            new = jnp.where(inside, values2[t, i].reshape(1, 1), old)
            keys = jax.lax.dynamic_update_slice(keys, new, (t, 3 * (offsets[-1] + leaf)))
            return _walk_up(capacity, keys, t, leaf, top_level(capacity))[0]

        return jax.lax.fori_loop(0, trees * n, body, keys2).reshape(shape)

    return loop


def _set_vectorised(capacity, keys, slots, values):
    offsets, _ = geometry(capacity, K)
    slots, values = jax.lax.sort((slots, values), num_keys=1, is_stable=True)
    last = jnp.concatenate([slots[1:] != slots[:-1], jnp.array([True])])
    write = last & (slots >= 0) & (slots < capacity)
    node = jnp.clip(slots, 0, capacity - 1)
    keys = keys.at[jnp.where(write, 3 * (offsets[-1] + node), keys.shape[0])].set(
        values, mode="drop"
    )
    nodes = keys.reshape(-1, 3)
    for level in range(len(offsets) - 1, top_level(capacity), -1):
        node = node // K
        rows = nodes.reshape(-1, 3 * K)[offsets[level] // K + node]  # [n, 3 K]
        nodes = nodes.at[offsets[level - 1] + node].set(_min_of_rows(rows))
    return nodes.reshape(-1)


@functools.cache
def _take_loop(capacity: int, q_is_slot: bool):
    offsets, _ = geometry(capacity, K)

    @vmap_as_leading_axis
    def loop(keys, new):
        shape = keys.shape
        trees = int(np.prod(shape[:-1], dtype=np.int64))
        k = new.shape[-1] // 2
        keys2 = keys.reshape(trees, shape[-1])
        new2 = new.reshape(trees, 2 * k)

        def body(step, carry):
            # ``root``: the root's winner, carried (reading it from ``keys`` to index a write
            # into ``keys`` makes XLA copy the array); ``roots``: each tree's root before the
            # loop, a carry too, so that it is copied out of ``keys`` before the loop writes
            keys, out, root, roots = carry
            t, i = step // k, step % k
            root = jnp.where(i == 0, roots[t], root)  # a new tree: its root
            out = jax.lax.dynamic_update_slice(out, root.reshape(1, 1), (t, i))
            key = jax.lax.dynamic_slice(new2, (t, 2 * i), (1, 2))
            if q_is_slot:
                key = jnp.stack([key[0, 0], _from_q(~root.astype(jnp.uint32))]).reshape(1, 2)
            keys = jax.lax.dynamic_update_slice(keys, key, (t, 3 * (offsets[-1] + root)))
            keys, root = _walk_up(capacity, keys, t, root)
            return keys, out, root, roots

        roots = keys2[:, 2]
        # one step: a trip count XLA cannot see (with a known count of 1 it removes the loop
        # and then copies ``keys``: the roots read above feed the writes)
        steps = trees * k if trees * k > 1 else (roots[0] > -1).astype(jnp.int32)
        out = jnp.zeros((trees, k), jnp.int32)
        keys2, out, _, _ = jax.lax.fori_loop(0, steps, body, (keys2, out, jnp.int32(0), roots))
        return keys2.reshape(shape), out.reshape(*shape[:-1], k)

    return loop
