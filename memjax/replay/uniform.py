"""Uniform replay: a FIFO ring of exact capacity, sampled uniformly with replacement."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from memjax._checks import check_batch_like, check_positive_int
from memjax.replay import ring
from memjax.replay.base import ReplayBuffer, Sample
from memjax.replay.checks import check_sample_args, item_spec
from memjax.replay.memory import memory_report


@struct.dataclass
class UniformState(ring.RingFields):
    """items: pytree [capacity, ...]; cursor: int32 [3] = (pos, count, lap), see ``ring``."""

    items: object
    cursor: jax.Array


def uniform(capacity: int) -> ReplayBuffer:
    """A FIFO buffer of exactly ``capacity`` items with uniform sampling.

    ``update`` returns the state unchanged (it exists so uniform and prioritized
    replay are interchangeable in a training loop).
    """
    capacity = check_positive_int("capacity", capacity)

    def init(example) -> UniformState:
        return UniformState(**ring.init_fields(example, capacity))

    def add(state: UniformState, items) -> UniformState:
        items, batch = check_batch_like(item_spec(state), items, "add")
        state, _ = ring.write(state, items, batch, capacity)
        return state

    def sample(state: UniformState, key, batch_size: int, beta=None) -> Sample:
        """Uniform draws with replacement; ``beta`` is accepted and ignored."""
        check_sample_args(state, batch_size, capacity)
        slots = ring.random_slots(key, batch_size, state.count)
        prob = jnp.full((batch_size,), 1.0, jnp.float32) / jnp.maximum(state.count, 1)
        return Sample(
            items=ring.gather(state, slots),
            indices=ring.ids_of(state, slots, capacity),
            weights=jnp.ones((batch_size,), jnp.float32),
            probabilities=prob,
        )

    def update(state: UniformState, indices, priorities) -> UniformState:
        return state

    def can_sample(state: UniformState, batch_size: int) -> jax.Array:
        return state.count >= batch_size

    def memory(state):
        return memory_report(state, capacity)

    return ReplayBuffer(init, add, sample, update, can_sample, memory)
