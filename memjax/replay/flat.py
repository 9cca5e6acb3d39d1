"""The default storage layout: every item stored whole in one slot of a FIFO ring.

A *store* is the part of a buffer that owns the items: how they are laid out, written,
gathered and named by ids. The uniform and prioritized buffers are written against this
small interface (the protocol :class:`memjax.replay.store_api.Store`), so every layout works
with both sampling schemes:

  fields(example) -> dict           the store's state fields for ONE example item
  check_items(state, items)         -> (items, batch), trace-time shape/dtype checks
  write(state, items, batch)        -> (state, slots int32 [m], live bool [m]): sum-tree
                                       leaves to set, to the new-item priority where live,
                                       to 0 where not (later entries win)
  zero_dropped(tree, before, after) -> tree: the leaves of any other items that stopped
                                       being sampleable in that add set to 0, so the tree
                                       never holds mass for an item the store cannot return
  random_slots(state, key, n)       uniform draws over the sampleable items
  gather(state, slots)              -> items [n, ...] as given to add (decoded)
  ids_of(state, slots), resolve(state, ids) -> (slots, live: the id's item is still there
                                       and sampleable)
  sampleable(state, slots), count(state), report(state), num_slots

The flat store keeps ``items`` [capacity, ...] (encoded by the field codecs), the ring
``cursor`` and the codec states; see :mod:`memjax.replay.ring` for cursor and ids.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax import _pytree as struct
from memjax import sumtree
from memjax._checks import check_batch_like
from memjax.replay import encoding, ring
from memjax.replay.memory import memory_report


@struct.dataclass
class UniformState(ring.RingFields):
    """The state of a buffer with the default layout (every item stored whole).

    Attributes:
      items: pytree, each leaf [capacity, ...] as stored (encoded by the field's codec).
      cursor: int32 [3] = (pos, count, lap): the next slot to write, the number of valid
        items and how often the ring wrapped (see :mod:`memjax.replay.ring`); ``pos``,
        ``count`` and ``lap`` read them.
      codecs: dict field name -> codec state ({} without codecs).

    Vmapped states (a leading seed axis [S] on every leaf) work everywhere a state does.
    """

    items: object
    cursor: jax.Array
    codecs: dict


@struct.dataclass
class PrioritizedState(UniformState):
    """:class:`UniformState` plus the priorities.

    Attributes:
      tree: :class:`memjax.sumtree.SumTree` of the stored priorities
        ``max(p, min_priority) ** alpha``, one leaf per slot.
      max_priority: float32 scalar, the largest raw priority seen (new items get it).
    """

    tree: sumtree.SumTree
    max_priority: jax.Array


class FlatStore:
    """One stored item per transition: ``items`` [capacity, ...] on a FIFO ring."""

    uniform_state = UniformState
    prioritized_state = PrioritizedState
    records_sampling = False

    def __init__(self, capacity: int, codecs: dict):
        self.capacity = capacity
        self.num_slots = capacity
        self.codecs = codecs

    def fields(self, example) -> dict:
        states = encoding.init_states(self.codecs, example)
        stored = encoding.stored_example(self.codecs, example, states)
        return dict(**ring.init_fields(stored, self.capacity), codecs=states)

    def raw_spec(self, state):
        """Per-item ShapeDtypeStructs of the items as given to ``add`` (state may be vmapped)."""
        seeds = state.cursor.ndim - 1
        items, codec_states = encoding.strip_axes((state.items, state.codecs), seeds)
        return encoding.raw_spec(self.codecs, items, codec_states)

    def check_items(self, state, items):
        return check_batch_like(self.raw_spec(state), items, "add")

    def write(self, state, items, batch: int):
        stored, codec_states = encoding.encode(self.codecs, items, state.codecs)
        state, slots = ring.write(state, stored, batch, self.capacity)
        return state.replace(codecs=codec_states), slots, jnp.ones(slots.shape, bool)

    def zero_dropped(self, tree, before, after):
        return tree  # an item leaves only when overwritten: write sets its slot

    def random_slots(self, state, key, n: int):
        return ring.random_slots(key, n, state.count)

    def gather(self, state, slots):
        return encoding.decode(self.codecs, ring.gather(state, slots), state.codecs)

    def ids_of(self, state, slots):
        return ring.ids_of(state, slots, self.capacity)

    def resolve(self, state, ids):
        return ring.slots_of(state, ids, self.capacity)

    def sampleable(self, state, slots):
        return jnp.ones(slots.shape, bool)

    def sampled(self, state, slots, live, new_leaves=None):
        return state, jnp.zeros(slots.shape, bool)  # no policy: sampling retires nothing

    def count(self, state):
        return state.count

    def report(self, state):
        return memory_report(state, self.capacity, self.raw_spec(state) if self.codecs else None)
