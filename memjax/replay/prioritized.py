"""Proportional prioritized replay (Schaul et al., 2016) on a drift-free sum-tree.

Priorities. ``update`` takes raw priorities p >= 0 (typically |TD error|). The tree
stores ``max(p, min_priority) ** alpha``, so P(i) = p_i^alpha / sum_j p_j^alpha.
New items get the running maximum of all raw priorities seen so far (1.0 at first).

Bad priorities:
  * eager (non-traced) input that is NaN, inf or negative raises ValueError;
  * traced input: NaN and inf entries are ignored (the item keeps its priority),
    negative ones are clamped up to ``min_priority``.

Stale updates: ``sample`` returns item ids (see ``ring``); ``update`` ignores an id
whose slot was overwritten after the sample was drawn, or whose item the layout can no
longer return (``add`` zeroed its leaf: the tree never holds mass for such an item).

Importance weights: w_i = (N * P(i)) ** -beta, divided by the largest w in the
batch, with N = number of valid items. ``beta`` is a sample-time argument so it can
be annealed (a traced scalar is fine).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax import sumtree
from memjax._checks import check_positive_int
from memjax.replay import encoding
from memjax.replay.base import ReplayBuffer, Sample
from memjax.replay.checks import (
    check_priorities,
    check_sample_args,
    check_sample_batch_size,
    resolve_batch_size,
)
from memjax.replay.evicting_store import make_policy_store
from memjax.replay.flat import PrioritizedState


def prioritized(
    capacity: int,
    alpha: float = 0.6,
    min_priority: float = 1e-6,
    stratified: bool = True,
    codecs=None,
    layout=None,
    sample_batch_size=None,
    eviction=None,
) -> ReplayBuffer:
    """A FIFO buffer of exactly ``capacity`` items with proportional prioritized sampling.

    Args:
      capacity: number of items (exact, any positive int).
      alpha: priority exponent, >= 0 (0 is uniform).
      min_priority: floor applied to raw priorities before ``** alpha``; >= 0. With 0,
        an item given priority 0 is never sampled again.
      stratified: draw the batch from equal slices of the total (lower variance).
      codecs: storage codecs per field, as for :func:`memjax.replay.uniform`.
      layout: the storage layout, as for :func:`memjax.replay.uniform`.
      sample_batch_size: the batch size ``sample`` and ``can_sample`` use when the call
        gives none (so that ``jax.jit(buf.sample)(state, key)`` works).
      eviction: which item a full buffer overwrites: None or
        :func:`memjax.replay.eviction.fifo` (the oldest), or another policy of
        :mod:`memjax.replay.eviction` (``reservoir()``, ``least_recently_sampled()``,
        ``lowest_priority()``, ``max_times_sampled(n)``); a non-FIFO policy needs
        ``layout=None``. ``update`` also records the sampling history those policies use.

    Returns:
      A :class:`ReplayBuffer`. Under jit, sampling a buffer with nothing to draw (empty, or
      every priority 0) returns weights 0, probabilities 0 and indices -1 (which ``update``
      ignores), never NaN; an eager call on an empty buffer raises ``ValueError``.

    Raises:
      ValueError: ``alpha`` or ``min_priority`` below 0, or a non-FIFO ``eviction`` with a
        ``layout``.
    """
    capacity = check_positive_int("capacity", capacity)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not min_priority >= 0:
        raise ValueError(f"min_priority must be >= 0, got {min_priority}")

    def stored(raw):
        return jnp.maximum(raw, min_priority) ** alpha

    store = make_policy_store(
        capacity,
        encoding.check_codecs(codecs),
        layout,
        eviction,
        new_leaf=lambda state: stored(state.max_priority),
    )
    records_sampling = store.records_sampling
    default_batch = check_sample_batch_size(sample_batch_size, capacity)

    def init(example):
        return store.prioritized_state(
            **store.fields(example),
            tree=sumtree.init(store.num_slots),
            max_priority=jnp.ones((), jnp.float32),
        )

    def add(state, items):
        items, batch = store.check_items(state, items)
        new, slots, live = store.write(state, items, batch)
        tree = sumtree.set(state.tree, slots, jnp.where(live, stored(state.max_priority), 0.0))
        return new.replace(tree=store.zero_dropped(tree, state, new))

    def sample(state, key, batch_size=None, beta=0.4) -> Sample:
        """Items with weights (N P(i))^-beta / max. ``add`` keeps the tree's mass on the items
        the layout can return, so every draw is one (a draw the layout rejects would get
        weight 0, as would every draw from a tree with no mass)."""
        batch_size = resolve_batch_size(batch_size, default_batch)
        check_sample_args(state, batch_size, capacity)
        slots, prob = sumtree.sample_with_probs(state.tree, key, batch_size, stratified)
        drawn = store.sampleable(state, slots) & (prob > 0)  # prob is NaN for a massless tree
        prob = jnp.where(drawn, prob, 0.0)
        count = store.count(state).astype(jnp.float32)
        weights = jnp.where(drawn, (count * prob) ** (-jnp.asarray(beta, jnp.float32)), 0.0)
        return Sample(
            items=store.gather(state, slots),
            indices=jnp.where(drawn, store.ids_of(state, slots), -1),
            weights=weights / jnp.maximum(jnp.max(weights), jnp.finfo(jnp.float32).tiny),
            probabilities=prob,
        )

    def update(state, indices, priorities):
        """Set raw priorities (float [n], >= 0) of the items named by ids ``indices``
        (int32 [n])."""
        if priorities is None:
            raise TypeError(
                "update: a prioritized buffer needs priorities (float [n], e.g. |TD error|), "
                "got None; for an agent without priorities use memjax.replay.uniform"
            )
        indices = jnp.asarray(indices, jnp.int32)
        priorities = jnp.asarray(priorities, jnp.float32)
        if indices.shape != priorities.shape or indices.ndim != 1:
            raise ValueError(
                "update: indices and priorities must both be [n], got "
                f"{indices.shape} and {priorities.shape}"
            )
        check_priorities(priorities)
        slots, live = store.resolve(state, indices)
        raw = jnp.maximum(priorities, 0.0)
        if records_sampling:  # the policy learns what was sampled; items may leave now
            value = stored(raw)
            value = jnp.where(
                jnp.isfinite(value) & (value > 0), value, 0.0
            )  # as the tree stores it
            new_leaves = jnp.where(live & jnp.isfinite(priorities), value, -1.0)
            state, retired = store.sampled(state, slots, live, new_leaves)
            live = live & jnp.isfinite(priorities)
            tree = sumtree.set(
                state.tree, jnp.where(live | retired, slots, -1), jnp.where(retired, 0.0, value)
            )
        else:
            live = live & jnp.isfinite(priorities)
            tree = sumtree.set(state.tree, jnp.where(live, slots, -1), stored(raw))
        max_priority = jnp.maximum(state.max_priority, jnp.max(jnp.where(live, raw, 0.0)))
        return state.replace(tree=tree, max_priority=max_priority)

    def can_sample(state, batch_size=None) -> jax.Array:
        batch_size = resolve_batch_size(batch_size, default_batch, "can_sample", static=False)
        return (store.count(state) >= batch_size) & (sumtree.total(state.tree) > 0)

    def memory(state):
        return store.report(state)

    return ReplayBuffer(init, add, sample, update, can_sample, memory)


def sequence_priorities(abs_td, mask=None, eta: float = 0.9) -> jax.Array:
    """Priorities of sequences from per-step |TD errors| (R2D2, Kapturowski et al., 2019):
    ``eta * max_t + (1 - eta) * mean_t`` over the steps (where ``mask``).

    Args:
      abs_td: float32 [B, L] absolute TD errors of B windows of L steps.
      mask: optional bool [B, L], the steps to count (e.g. the burn-in excluded). A window
        with no counted step gets priority 0.
      eta: weight of the max, in [0, 1].

    Returns:
      float32 [B], one priority per window (pass to ``update`` with the sample's indices).
    """
    abs_td = jnp.asarray(abs_td, jnp.float32)
    if abs_td.ndim != 2:
        raise ValueError(f"sequence_priorities: abs_td must be [B, L], got shape {abs_td.shape}")
    if not 0 <= eta <= 1:
        raise ValueError(f"sequence_priorities: eta must be in [0, 1], got {eta}")
    mask = jnp.ones(abs_td.shape, bool) if mask is None else jnp.asarray(mask, bool)
    if mask.shape != abs_td.shape:
        raise ValueError(f"sequence_priorities: mask has shape {mask.shape}, abs_td {abs_td.shape}")
    steps = jnp.sum(mask, axis=1)
    largest = jnp.max(jnp.where(mask, abs_td, 0.0), axis=1)
    mean = jnp.sum(jnp.where(mask, abs_td, 0.0), axis=1) / jnp.maximum(steps, 1)
    return eta * largest + (1 - eta) * mean


__all__ = ["prioritized", "PrioritizedState", "sequence_priorities"]
