"""The flat store under a non-FIFO eviction policy (see :mod:`memjax.replay.eviction`).

Items are stored whole, one per slot, as in :mod:`memjax.replay.flat`, but the policy picks
the slot each new item goes to. Ids cannot come from the ring's cursor any more, so each
slot counts its writes: ``version`` int32 [capacity], modulo ``ring.num_laps(capacity)``,
and ``id = version * capacity + slot``. An id is stale once its slot was written again
(exact unless the slot was written a multiple of ``num_laps`` times in between, as for the
ring) or once its item left the buffer (``max_times_sampled``).

``cursor`` keeps the ring's layout so ``size`` works: ``(0, count, 0)``, where ``count`` is
the number of stored items.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax import _pytree as struct
from memjax.replay import encoding, ring
from memjax.replay.eviction import EvictionPolicy, Occupancy, resolve
from memjax.replay.flat import FlatStore, PrioritizedState, UniformState
from memjax.replay.stores import make_store


@struct.dataclass
class EvictingUniformState(UniformState):
    """:class:`memjax.replay.UniformState` of a buffer with a non-FIFO eviction policy.

    Attributes:
      version: int32 [capacity], how often each slot was written (modulo the ids' laps).
      eviction: the policy's state (e.g. :class:`memjax.replay.eviction.OrderState`).
    """

    version: jax.Array
    eviction: object


@struct.dataclass
class EvictingPrioritizedState(PrioritizedState):
    """:class:`memjax.replay.PrioritizedState` of a buffer with a non-FIFO eviction policy.

    Attributes:
      version: int32 [capacity], how often each slot was written (modulo the ids' laps).
      eviction: the policy's state.
    """

    version: jax.Array
    eviction: object


class EvictingStore(FlatStore):
    """A :class:`FlatStore` whose ``write`` asks an eviction policy for the slots."""

    uniform_state = EvictingUniformState
    prioritized_state = EvictingPrioritizedState

    def __init__(self, capacity: int, codecs: dict, policy: EvictionPolicy, new_leaf=None):
        super().__init__(capacity, codecs)
        self.policy = policy
        self.new_leaf = new_leaf  # prioritized: state -> the stored priority of new items
        self.laps = ring.num_laps(capacity)

    @property
    def records_sampling(self) -> bool:
        """Whether ``update`` must pass the sampled ids to the policy."""
        return self.policy.sampled is not None

    def fields(self, example) -> dict:
        return dict(
            **super().fields(example),
            version=jnp.zeros((self.capacity,), jnp.int32),
            eviction=self.policy.init(self.capacity, self.new_leaf is not None),
        )

    def write(self, state, items, batch: int):
        capacity = self.capacity
        new_leaf = self.new_leaf(state) if self.new_leaf is not None else None
        occupancy = Occupancy(capacity, state.count, new_leaf)
        policy_state, slots, bumps, count = self.policy.place(
            state.eviction, occupancy, items, batch
        )
        stored, codec_states = encoding.encode(self.codecs, items, state.codecs)
        written = slots < capacity
        target = jnp.where(written, slots, capacity)
        new_items = jax.tree.map(
            lambda buf, x: buf.at[target].set(x, mode="drop"), state.items, stored
        )
        version = state.version.at[target].get(mode="fill", fill_value=0)
        version = state.version.at[target].set((version + bumps) % self.laps, mode="drop")
        cursor = jnp.stack([jnp.zeros((), jnp.int32), count, jnp.zeros((), jnp.int32)])
        state = state.replace(
            items=new_items,
            cursor=cursor,
            codecs=codec_states,
            version=version,
            eviction=policy_state,
        )
        return state, jnp.where(written, slots, -1), written

    def sampled(self, state, slots, live, new_leaves=None):
        """Record that the items at ``slots`` (where ``live``) were sampled (and, prioritized,
        get the stored priorities ``new_leaves``, negative: unchanged); returns
        ``(state, retired bool [n])``."""
        policy_state, retired, count = self.policy.sampled(state.eviction, slots, live, new_leaves)
        state = state.replace(eviction=policy_state)
        if count is not None:
            state = state.replace(cursor=state.cursor.at[1].set(count))
        return state, retired

    def random_slots(self, state, key, n: int):
        if self.policy.draw is not None:
            return self.policy.draw(state.eviction, key, n)
        return ring.random_slots(key, n, state.count)

    def ids_of(self, state, slots):
        version = state.version.at[slots].get(mode="promise_in_bounds")
        return (version * self.capacity + slots).astype(jnp.int32)

    def resolve(self, state, ids):
        ids = jnp.asarray(ids, jnp.int32)
        slots = jnp.where(ids >= 0, ids % self.capacity, 0)
        version = state.version.at[slots].get(mode="promise_in_bounds")
        live = (ids >= 0) & (version == ids // self.capacity)
        if self.policy.live is not None:
            live = live & self.policy.live(state.eviction, slots)
        else:
            live = live & (slots < state.count)
        return slots, live


def make_policy_store(capacity: int, codecs: dict, layout, eviction, new_leaf=None):
    """The store of a buffer: ``make_store``'s for FIFO (unchanged), an
    :class:`EvictingStore` for another policy. ``new_leaf``: for prioritized buffers, a
    function of the state that gives the stored priority of new items; None for uniform ones.

    Raises:
      TypeError: ``eviction`` is not a policy.
      ValueError: a non-FIFO policy with a layout other than None, or a policy that needs
        priorities on a uniform buffer.
    """
    policy = resolve(eviction)
    if policy.is_fifo:
        return make_store(capacity, codecs, layout)
    if layout is not None:
        kind = getattr(layout, "kind", type(layout).__name__)
        raise ValueError(
            f"eviction={policy.name} needs layout=None: the {kind} layout stores each step "
            f"once and pairs it with the next row of its environment, which exists only in "
            f"FIFO order; use eviction=None (FIFO) with layout={kind}(...), or store "
            f"transitions whole (layout=None) to evict by {policy.name}"
        )
    if policy.needs_priorities and new_leaf is None:
        raise ValueError(
            f"eviction={policy.name} reads priorities: use it with "
            f"memjax.replay.prioritized, not memjax.replay.uniform"
        )
    return EvictingStore(capacity, codecs, policy, new_leaf)


def check_update_ids(indices, priorities=None):
    """``update``'s ids as int32 [n]; ValueError unless 1-D (and, when ``priorities`` are
    given, of the same shape)."""
    indices = jnp.asarray(indices, jnp.int32)
    if indices.ndim != 1 or (priorities is not None and jnp.shape(priorities) != indices.shape):
        shapes = f" and priorities {jnp.shape(priorities)}" if priorities is not None else ""
        raise ValueError(
            f"update: indices must be [n] (with priorities of the same shape), "
            f"got indices {indices.shape}{shapes}"
        )
    return indices
