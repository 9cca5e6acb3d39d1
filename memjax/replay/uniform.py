"""Uniform replay: a FIFO buffer of exact capacity, sampled uniformly with replacement."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax._checks import check_positive_int
from memjax.replay import encoding
from memjax.replay.base import ReplayBuffer, Sample
from memjax.replay.checks import check_sample_args
from memjax.replay.flat import UniformState
from memjax.replay.stores import make_store


def uniform(capacity: int, codecs=None, layout=None) -> ReplayBuffer:
    """A FIFO buffer of exactly ``capacity`` items with uniform sampling.

    Args:
      capacity: number of items (transitions) kept, exact.
      codecs: optional dict field name -> codec from :mod:`memjax.codecs` (e.g.
        ``{"obs": mj.codecs.bitpack()}``): the field is encoded inside ``add`` and decoded
        inside ``sample``; samples always come back as given to ``add``.
      layout: None (every item stored whole), ``memjax.replay.one_copy(num_envs, ...)``
        (each observation stored once, optionally frame-stack de-duplicated) or
        ``memjax.replay.sequence(num_envs, length, ...)`` (items are windows of
        ``length`` steps of one environment).

    ``update`` returns the state unchanged, also for ``priorities=None`` (it exists so
    uniform and prioritized replay are interchangeable in a training loop).
    """
    capacity = check_positive_int("capacity", capacity)
    store = make_store(capacity, encoding.check_codecs(codecs), layout)

    def init(example):
        return store.uniform_state(**store.fields(example))

    def add(state, items):
        items, batch = store.check_items(state, items)
        state, _, _ = store.write(state, items, batch)
        return state

    def sample(state, key, batch_size: int, beta=None) -> Sample:
        """Uniform draws with replacement; ``beta`` is accepted and ignored."""
        check_sample_args(state, batch_size, capacity)
        slots = store.random_slots(state, key, batch_size)
        count = store.count(state)
        prob = jnp.full((batch_size,), 1.0, jnp.float32) / jnp.maximum(count, 1)
        return Sample(
            items=store.gather(state, slots),
            indices=store.ids_of(state, slots),
            weights=jnp.ones((batch_size,), jnp.float32),
            probabilities=prob,
        )

    def update(state, indices, priorities):
        return state

    def can_sample(state, batch_size: int) -> jax.Array:
        return store.count(state) >= batch_size

    def memory(state):
        return store.report(state)

    return ReplayBuffer(init, add, sample, update, can_sample, memory)


__all__ = ["uniform", "UniformState"]
