"""Proportional prioritized replay (Schaul et al., 2016) on a drift-free sum-tree.

Priorities. ``update`` takes raw priorities p >= 0 (typically |TD error|). The tree
stores ``max(p, min_priority) ** alpha``, so P(i) = p_i^alpha / sum_j p_j^alpha.
New items get the running maximum of all raw priorities seen so far (1.0 at first).

Bad priorities:
  * eager (non-traced) input that is NaN, inf or negative raises ValueError;
  * traced input: NaN and inf entries are ignored (the item keeps its priority),
    negative ones are clamped up to ``min_priority``.

Stale updates: ``sample`` returns item ids (see ``ring``); ``update`` ignores an id
whose slot was overwritten after the sample was drawn.

Importance weights: w_i = (N * P(i)) ** -beta, divided by the largest w in the
batch, with N = number of valid items. ``beta`` is a sample-time argument so it can
be annealed (a traced scalar is fine).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from memjax import sumtree
from memjax._checks import check_batch_like, check_positive_int
from memjax.replay import ring
from memjax.replay.base import ReplayBuffer, Sample
from memjax.replay.checks import check_priorities, check_sample_args, item_spec
from memjax.replay.memory import memory_report


@struct.dataclass
class PrioritizedState(ring.RingFields):
    """items: pytree [capacity, ...]; cursor: int32 [3] = (pos, count, lap), see ``ring``;
    tree: SumTree of stored priorities p^alpha; max_priority: float32 scalar, raw."""

    items: object
    cursor: jax.Array
    tree: sumtree.SumTree
    max_priority: jax.Array


def prioritized(
    capacity: int,
    alpha: float = 0.6,
    min_priority: float = 1e-6,
    stratified: bool = True,
) -> ReplayBuffer:
    """A FIFO buffer of exactly ``capacity`` items with proportional prioritized sampling.

    Args:
      capacity: number of items (exact, any positive int).
      alpha: priority exponent, >= 0 (0 is uniform).
      min_priority: floor applied to raw priorities before ``** alpha``; >= 0. With 0,
        an item given priority 0 is never sampled again.
      stratified: draw the batch from equal slices of the total (lower variance).
    """
    capacity = check_positive_int("capacity", capacity)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if not min_priority >= 0:
        raise ValueError(f"min_priority must be >= 0, got {min_priority}")

    def stored(raw):
        return jnp.maximum(raw, min_priority) ** alpha

    def init(example) -> PrioritizedState:
        return PrioritizedState(
            **ring.init_fields(example, capacity),
            tree=sumtree.init(capacity),
            max_priority=jnp.ones((), jnp.float32),
        )

    def add(state: PrioritizedState, items) -> PrioritizedState:
        items, batch = check_batch_like(item_spec(state), items, "add")
        state, slots = ring.write(state, items, batch, capacity)
        new = jnp.broadcast_to(stored(state.max_priority), slots.shape)
        return state.replace(tree=sumtree.set(state.tree, slots, new))

    def sample(state: PrioritizedState, key, batch_size: int, beta=0.4) -> Sample:
        check_sample_args(state, batch_size, capacity)
        slots, prob = sumtree.sample_with_probs(state.tree, key, batch_size, stratified)
        weights = (state.count.astype(jnp.float32) * prob) ** (-jnp.asarray(beta, jnp.float32))
        return Sample(
            items=ring.gather(state, slots),
            indices=ring.ids_of(state, slots, capacity),
            weights=weights / jnp.max(weights),
            probabilities=prob,
        )

    def update(state: PrioritizedState, indices, priorities) -> PrioritizedState:
        """Set raw priorities (float [n], >= 0) of the items named by ids ``indices`` (int32 [n])."""
        indices = jnp.asarray(indices, jnp.int32)
        priorities = jnp.asarray(priorities, jnp.float32)
        if indices.shape != priorities.shape or indices.ndim != 1:
            raise ValueError(
                f"update: indices and priorities must both be [n], got {indices.shape} and {priorities.shape}"
            )
        check_priorities(priorities)
        slots, live = ring.slots_of(state, indices, capacity)
        live = live & jnp.isfinite(priorities)
        raw = jnp.maximum(priorities, 0.0)
        tree = sumtree.set(state.tree, jnp.where(live, slots, -1), stored(raw))
        max_priority = jnp.maximum(state.max_priority, jnp.max(jnp.where(live, raw, 0.0)))
        return state.replace(tree=tree, max_priority=max_priority)

    def can_sample(state: PrioritizedState, batch_size: int) -> jax.Array:
        return (state.count >= batch_size) & (sumtree.total(state.tree) > 0)

    def memory(state):
        return memory_report(state, capacity)

    return ReplayBuffer(init, add, sample, update, can_sample, memory)
