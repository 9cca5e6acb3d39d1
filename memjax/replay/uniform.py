"""Uniform replay: a FIFO buffer of exact capacity, sampled uniformly with replacement."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax._checks import check_positive_int
from memjax.replay import encoding
from memjax.replay.base import ReplayBuffer, Sample
from memjax.replay.checks import check_sample_args, check_sample_batch_size, resolve_batch_size
from memjax.replay.evicting_store import check_update_ids, make_policy_store
from memjax.replay.flat import UniformState


def uniform(
    capacity: int, codecs=None, layout=None, sample_batch_size=None, eviction=None
) -> ReplayBuffer:
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
      sample_batch_size: the batch size ``sample`` and ``can_sample`` use when the call
        gives none, so that ``jax.jit(buf.sample)(state, key)`` works (flashbax's style).
      eviction: which item a full buffer overwrites: None or
        :func:`memjax.replay.eviction.fifo` (the oldest), or another policy of
        :mod:`memjax.replay.eviction` (``reservoir()``, ``least_recently_sampled()``,
        ``max_times_sampled(n)``; ``lowest_priority()`` needs a prioritized buffer). A
        non-FIFO policy needs ``layout=None``.

    Returns:
      A :class:`ReplayBuffer`. ``sample`` draws uniformly with replacement; its weights are
      ones. Under jit, sampling an empty buffer returns weights 0, probabilities 0 and
      indices -1 (which ``update`` ignores); an eager call raises ``ValueError``.
      ``update`` returns the state unchanged, also for ``priorities=None`` (it exists so
      uniform and prioritized replay are interchangeable in a training loop), except under
      an eviction policy that records sampling (least recently sampled, max times sampled),
      which it tells which items were sampled (``priorities`` are ignored).

    Raises:
      ValueError: a non-FIFO ``eviction`` with a ``layout``, or ``lowest_priority()``.
    """
    capacity = check_positive_int("capacity", capacity)
    default_batch = check_sample_batch_size(sample_batch_size, capacity)
    store = make_policy_store(capacity, encoding.check_codecs(codecs), layout, eviction)
    records_sampling = store.records_sampling

    def init(example):
        return store.uniform_state(**store.fields(example))

    def add(state, items):
        items, batch = store.check_items(state, items)
        state, _, _ = store.write(state, items, batch)
        return state

    def sample(state, key, batch_size=None, beta=None) -> Sample:
        """Uniform draws with replacement; ``beta`` is accepted and ignored."""
        batch_size = resolve_batch_size(batch_size, default_batch)
        check_sample_args(state, batch_size, capacity)
        slots = store.random_slots(state, key, batch_size)
        count = store.count(state)
        empty = jnp.full((batch_size,), count == 0)
        return Sample(
            items=store.gather(state, slots),
            indices=jnp.where(empty, -1, store.ids_of(state, slots)),
            weights=jnp.where(empty, 0.0, 1.0).astype(jnp.float32),
            probabilities=jnp.where(empty, 0.0, 1.0 / jnp.maximum(count, 1)).astype(jnp.float32),
        )

    def update(state, indices, priorities):
        if not records_sampling:
            return state
        indices = check_update_ids(indices)
        slots, live = store.resolve(state, indices)
        return store.sampled(state, slots, live)[0]

    def can_sample(state, batch_size=None) -> jax.Array:
        batch_size = resolve_batch_size(batch_size, default_batch, "can_sample", static=False)
        return store.count(state) >= batch_size

    def memory(state):
        return store.report(state)

    return ReplayBuffer(init, add, sample, update, can_sample, memory)


__all__ = ["uniform", "UniformState"]
