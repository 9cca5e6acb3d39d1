"""The storage interface of the replay layouts: what :func:`memjax.replay.uniform` and
:func:`memjax.replay.prioritized` call on a store, so that every layout (flat, one copy,
sequence) and every eviction policy works with both sampling schemes.

A store owns the items: how they are laid out, written, gathered and named by ids. The flat
store (:class:`memjax.replay.flat.FlatStore`) is the reference implementation; the row
layouts (:class:`memjax.replay.row_ring.RowRingStore`) and the eviction policies'
(:class:`memjax.replay.evicting_store.EvictingStore`) implement the same protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax


@runtime_checkable
class Store(Protocol):
    """The protocol of a replay store (shapes per seed; every method is pure and jittable).

    Attributes:
      capacity: the items the buffer was asked to hold.
      num_slots: sum-tree leaves the store addresses (``capacity`` for the flat layout;
        the row layouts' sampleable window starts).
      codecs: dict field name -> codec, the storage codecs of the fields.
      records_sampling: whether ``update`` must tell the store what was sampled
        (:meth:`sampled`), as the eviction policies that count samples need.
      uniform_state: the state class of a uniform buffer over this store.
      prioritized_state: the state class of a prioritized one (with ``tree`` and
        ``max_priority``).
    """

    capacity: int
    num_slots: int
    codecs: dict
    records_sampling: bool
    uniform_state: type
    prioritized_state: type

    def fields(self, example) -> dict:
        """The store's state fields for ONE example item (no batch axis)."""

    def check_items(self, state, items) -> tuple:
        """``(items, batch)``: the items of an ``add``, checked at trace time against the
        stored fields (``ValueError`` naming a wrong field, shape or dtype)."""

    def write(self, state, items, batch: int) -> tuple:
        """``(state, slots int32 [m], live bool [m])``: the sum-tree leaves to set, to the new
        items' priority where ``live`` and to 0 where not (later entries win)."""

    def zero_dropped(self, tree, before, after) -> Any:
        """The sum-tree with the leaves of items that stopped being sampleable between the
        states ``before`` and ``after`` of an add set to 0."""

    def random_slots(self, state, key: jax.Array, n: int) -> jax.Array:
        """int32 [n]: uniform draws over the sampleable items."""

    def gather(self, state, slots: jax.Array) -> Any:
        """The items at ``slots`` ``[n, ...]`` as they were added (decoded)."""

    def ids_of(self, state, slots: jax.Array) -> jax.Array:
        """int32 [n]: the ids of the items at ``slots`` (what ``Sample.indices`` holds)."""

    def resolve(self, state, ids: jax.Array) -> tuple:
        """``(slots, live)``: where the items of ``ids`` are, and whether each is still there
        and sampleable (a stale id's item has been overwritten)."""

    def sampleable(self, state, slots: jax.Array) -> jax.Array:
        """bool [n]: whether the items at ``slots`` can be sampled now."""

    def sampled(self, state, slots: jax.Array, live: jax.Array, new_leaves=None) -> tuple:
        """``(state, retired bool [n])`` after telling the store that the items at ``slots``
        were sampled; a store without an eviction policy retires nothing."""

    def count(self, state) -> jax.Array:
        """int32: the sampleable items."""

    def report(self, state) -> Any:
        """The :class:`memjax.replay.MemoryReport` of ``state``."""


__all__ = ["Store"]
