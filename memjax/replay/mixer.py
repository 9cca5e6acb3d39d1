"""Multi-task replay: one batch drawn from several buffers in given proportions.

::

    mix = mj.replay.mixer([mj.replay.prioritized(50_000), mj.replay.prioritized(50_000)],
                          proportions=(0.75, 0.25), sample_batch_size=128)
    states = mix.init(example)                      # a tuple, one state per buffer
    states = mix.add(states, 1, items)              # items of task 1
    sample = mix.sample(states, key, beta=0.4)      # 96 items of buffer 0, then 32 of buffer 1
    states = mix.update(states, sample, priorities) # each buffer gets its own priorities

**Draw only what is used.** A batch of ``B`` items takes a fixed ``n_k`` items from buffer
``k``, computed once per batch size from the proportions by exact largest-remainder
rounding (Hamilton's method: ``floor(B * w_k)`` each, then one more for the buffers with the
largest remainders, ties to the lower index; ``w`` is ``proportions`` normalised, in exact
rational arithmetic). Each buffer samples its ``n_k`` items and nothing more (flashbax's mixer
samples a full batch from every buffer and keeps a slice of each); a buffer with ``n_k = 0``
is not sampled at all. The batch is the buffers' draws concatenated in buffer order, so which
buffer an item came from is static: ``sample.buffer`` says it, and ``update`` routes the
priorities by it.

**Probabilities and importance weights.** An item ``i`` of buffer ``k`` is drawn with
probability ``q_k * P_k(i)`` per draw, ``q_k = n_k / B`` (``sample.probabilities``).
The weights correct the prioritisation within each buffer, so the mixture's target is "the
proportions, uniform within each buffer": ``w_i = (N_k P_k(i)) ** -beta`` with ``N_k`` the
size of buffer ``k`` (ones for uniform buffers). With ``weights="union"`` the target is
uniform over the union of all buffers instead, ``w_i = (N q_k P_k(i)) ** -beta`` with ``N =
sum_k N_k`` (this also undoes the proportions). Both are divided by the largest weight of
the batch; draws that returned no item (an empty buffer under jit) weigh 0.

**In a training loop.** :func:`memjax.replay.mixer.as_buffer` gives a mixer the
:class:`memjax.replay.ReplayBuffer` interface the loop calls (``add(state, items)``,
``update(state, indices, priorities)``), adding to one buffer chosen when it is built: the
current task's, when the task changes only between compiled chunks (a continual schedule; see
``experiments/study_continual.py``, which builds one per phase, all sharing one state).

Every buffer must store items of the same structure, shapes and dtypes (they are
concatenated). All functions work under ``jit``, ``vmap`` (a leading axis on every state)
and ``scan``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax._checks import check_positive_int
from memjax.replay.base import ReplayBuffer, size

WEIGHTINGS = ("mixture", "union")


class MixedSample(NamedTuple):
    """A batch drawn by a :class:`Mixer`: a :class:`memjax.replay.Sample` plus where each item
    came from.

    Attributes:
      items: pytree [batch_size, ...], the buffers' draws concatenated in buffer order.
      indices: int32 [batch_size], each item's id in its own buffer (-1: no item).
      weights: float32 [batch_size], importance weights (module docstring), max-normalised.
      probabilities: float32 [batch_size], ``q_k * P_k(i)``: the probability of the item per
        draw under the mixture.
      buffer: int32 [batch_size], the index of the buffer each item came from (the same for
        every call with this batch size).
    """

    items: Any
    indices: jax.Array
    weights: jax.Array
    probabilities: jax.Array
    buffer: jax.Array


class Mixer(NamedTuple):
    """Several buffers sampled as one (see the module docstring). Make one with
    :func:`mixer`.

    Attributes:
      buffers: the :class:`memjax.replay.ReplayBuffer` of each task.
      proportions: the proportions, normalised to sum to 1.
      counts: ``counts(batch_size) -> tuple of int``: items drawn from each buffer.
      init: ``init(example) -> states``: a tuple of states, one per buffer; ``example`` is
        ONE item (every buffer stores the same items).
      add: ``add(states, k, items) -> states``: ``buffers[k].add`` on state ``k`` (``k`` a
        Python int).
      sample: ``sample(states, key, batch_size=None, beta=0.4) -> MixedSample``.
      update: ``update(states, sample, priorities) -> states``: each buffer's ``update`` with
        its slice of ``sample.indices`` and of ``priorities`` (None is passed on as None).
      can_sample: ``can_sample(states, batch_size=None) -> bool[]``: every buffer that is
        drawn from can give its ``n_k`` items.
    """

    buffers: tuple
    proportions: tuple
    counts: Callable
    init: Callable
    add: Callable
    sample: Callable
    update: Callable
    can_sample: Callable


def largest_remainder(batch_size: int, proportions) -> tuple:
    """Hamilton's apportionment of ``batch_size`` items to the ``proportions``.

    Args:
      batch_size: Python int >= 1.
      proportions: non-negative numbers, not all 0 (normalised here).

    Returns:
      A tuple of ints summing to ``batch_size``: ``floor(batch_size * w_k)`` each, plus one
      for the largest remainders (ties: the lower index), computed exactly.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    exact = [Fraction(p) for p in proportions]
    total = sum(exact)
    quotas = [batch_size * p / total for p in exact]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda k: (-(quotas[k] - counts[k]), k))
    for k in order[: batch_size - sum(counts)]:
        counts[k] += 1
    return tuple(counts)


def mixer(buffers, proportions, sample_batch_size=None, weights: str = "mixture") -> Mixer:
    """One batch from several buffers in fixed proportions, drawing only what it uses.

    Args:
      buffers: a list of :class:`memjax.replay.ReplayBuffer` (uniform or prioritized, any
        layout), storing items of one structure.
      proportions: one number >= 0 per buffer, not all 0 (they are normalised).
      sample_batch_size: the batch size ``sample`` and ``can_sample`` use when the call gives
        none.
      weights: ``"mixture"`` (correct the prioritisation within each buffer) or ``"union"``
        (correct towards uniform over all stored items); see the module docstring.

    Returns:
      A :class:`Mixer`.

    Raises:
      TypeError: ``buffers`` are not ReplayBuffers.
      ValueError: no buffers, ``proportions`` of another length, negative, not finite or all
        0, an unknown ``weights``, or a bad ``sample_batch_size``.
    """
    buffers = tuple(buffers)
    if not buffers:
        raise ValueError("mixer: give at least one buffer")
    for k, b in enumerate(buffers):
        if not isinstance(b, ReplayBuffer):
            raise TypeError(
                f"mixer: buffers[{k}] must be a memjax.replay.ReplayBuffer, got {type(b).__name__}"
            )
    proportions = tuple(proportions)
    if len(proportions) != len(buffers):
        raise ValueError(f"mixer: {len(proportions)} proportions for {len(buffers)} buffers")
    for k, p in enumerate(proportions):
        if (
            isinstance(p, bool)
            or not isinstance(p, (int, float, np.integer, np.floating))
            or not math.isfinite(p)
            or p < 0
        ):
            raise ValueError(
                f"mixer: proportions must be finite numbers >= 0, got {p!r} for buffer {k}"
            )
    if sum(proportions) <= 0:
        raise ValueError("mixer: the proportions are all 0")
    if weights not in WEIGHTINGS:
        raise ValueError(f"mixer: weights must be one of {WEIGHTINGS}, got {weights!r}")
    if sample_batch_size is not None:
        sample_batch_size = check_positive_int("sample_batch_size", sample_batch_size)
    normalised = tuple(
        float(Fraction(p) / sum(Fraction(x) for x in proportions)) for p in proportions
    )

    @functools.cache
    def counts(batch_size: int) -> tuple:
        return largest_remainder(batch_size, proportions)

    def resolve(batch_size, what):
        if batch_size is None:
            if sample_batch_size is None:
                raise TypeError(
                    f"mixer.{what}: give batch_size, or build the mixer with sample_batch_size=N"
                )
            return sample_batch_size
        return check_positive_int("batch_size", batch_size)

    def init(example):
        return tuple(b.init(example) for b in buffers)

    def add(states, k: int, items):
        states = tuple(states)
        return states[:k] + (buffers[k].add(states[k], items),) + states[k + 1 :]

    def sample(states, key, batch_size=None, beta=0.4) -> MixedSample:
        batch_size = resolve(batch_size, "sample")
        n = counts(batch_size)
        used = [k for k in range(len(buffers)) if n[k] > 0]
        keys = jax.random.split(key, len(used))
        draws = [buffers[k].sample(states[k], kk, n[k], beta=beta) for k, kk in zip(used, keys)]
        _check_structures([d.items for d in draws], used)
        beta = jnp.asarray(beta, jnp.float32)
        share = [jnp.float32(n[k] / batch_size) for k in used]
        sizes = [size(states[k]).astype(jnp.float32) for k in used]
        prob = jnp.concatenate([q * d.probabilities for q, d in zip(share, draws)])
        if weights == "mixture":
            scale = jnp.concatenate(
                [jnp.full((n[k],), s) * d.probabilities for k, s, d in zip(used, sizes, draws)]
            )
        else:
            everything = sum(size(s).astype(jnp.float32) for s in states)
            scale = everything * prob
        w = jnp.where(prob > 0, jnp.maximum(scale, jnp.finfo(jnp.float32).tiny) ** -beta, 0.0)
        return MixedSample(
            items=jax.tree.map(lambda *x: jnp.concatenate(x), *[d.items for d in draws]),
            indices=jnp.concatenate([d.indices for d in draws]),
            weights=w / jnp.maximum(jnp.max(w), jnp.finfo(jnp.float32).tiny),
            probabilities=prob,
            buffer=jnp.asarray(np.repeat(np.arange(len(buffers), dtype=np.int32), n)),
        )

    def update(states, sample, priorities):
        states = tuple(states)
        indices = jnp.asarray(sample.indices if hasattr(sample, "indices") else sample)
        n = counts(indices.shape[0])
        out, start = list(states), 0
        for k, nk in enumerate(n):
            if nk:
                part = None if priorities is None else priorities[start : start + nk]
                out[k] = buffers[k].update(states[k], indices[start : start + nk], part)
            start += nk
        return tuple(out)

    def can_sample(states, batch_size=None):
        batch_size = resolve(batch_size, "can_sample")
        n = counts(batch_size)
        ok = [buffers[k].can_sample(states[k], n[k]) for k in range(len(buffers)) if n[k]]
        return functools.reduce(jnp.logical_and, ok)

    return Mixer(buffers, normalised, counts, init, add, sample, update, can_sample)


def as_buffer(mix: Mixer, add_to: int) -> ReplayBuffer:
    """A :class:`Mixer` as a :class:`memjax.replay.ReplayBuffer` for a training loop.

    Args:
      mix: the mixer.
      add_to: the buffer ``add`` writes to (a Python int).

    Returns:
      A ReplayBuffer over the mixer's tuple of states: ``init`` is ``mix.init``, ``add(states,
      items)`` is ``mix.add(states, add_to, items)``, ``sample`` returns a
      :class:`MixedSample`, ``update(states, indices, priorities)`` routes each slice of
      ``indices`` to its buffer (as ``mix.update``), ``can_sample`` is ``mix.can_sample``,
      and ``memory(states)`` is the tuple of each buffer's report. Every buffer built from
      ``mix`` (and from another mixer of the same buffers) shares one state structure.

    Raises:
      ValueError: ``add_to`` is not the index of one of the mixer's buffers.
    """
    if (
        isinstance(add_to, bool)
        or not isinstance(add_to, (int, np.integer))
        or not 0 <= add_to < len(mix.buffers)
    ):
        raise ValueError(
            f"as_buffer: add_to must be a buffer index in [0, {len(mix.buffers)}), got {add_to!r}"
        )
    add_to = int(add_to)
    return ReplayBuffer(
        init=mix.init,
        add=lambda states, items: mix.add(states, add_to, items),
        sample=mix.sample,
        update=mix.update,
        can_sample=mix.can_sample,
        memory=lambda states: tuple(b.memory(s) for b, s in zip(mix.buffers, states)),
    )


def _check_structures(items, used) -> None:
    """TypeError unless every buffer's items have the first one's structure, shapes and dtypes."""
    first = jax.tree.map(lambda x: (x.shape[1:], x.dtype), items[0])
    for k, it in zip(used[1:], items[1:]):
        spec = jax.tree.map(lambda x: (x.shape[1:], x.dtype), it)
        if jax.tree.structure(it) != jax.tree.structure(items[0]) or spec != first:
            raise TypeError(
                f"mixer: buffer {k} stores items {spec}, buffer {used[0]} stores "
                f"{first}; the buffers of a mixer must store the same items"
            )


__all__ = ["Mixer", "MixedSample", "mixer", "largest_remainder", "as_buffer"]
