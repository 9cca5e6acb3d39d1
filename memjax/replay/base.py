"""Types shared by all buffers: the buffer bundle, a sample, and ``size``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class Sample(NamedTuple):
    """A batch drawn from a buffer.

    Attributes:
      items: pytree, each leaf [batch_size, ...] as added (with the sequence layout: windows,
        per-step fields [batch_size, length, ...], per-window fields [batch_size, ...]).
      indices: int32 [batch_size] item ids; pass them back to ``update``. An id whose
        item has been overwritten since is ignored there (ids encode the slot and when it
        was written; see each layout's docstring). -1 marks a draw that returned no item
        (a jitted sample of an empty buffer); ``update`` ignores it too.
      weights: float32 [batch_size] importance weights ``(N P(i))^-beta``, max-normalised
        within the batch: all ones for uniform replay, 0 for draws that returned no item.
      probabilities: float32 [batch_size] the probability each item had of being drawn
        (0 for draws that returned no item).
    """

    items: Any
    indices: jax.Array
    weights: jax.Array
    probabilities: jax.Array


class ReplayBuffer(NamedTuple):
    """A replay buffer: a bundle of pure functions over an immutable state, like an optax
    transform. Build one with :func:`memjax.replay.uniform` or
    :func:`memjax.replay.prioritized`.

    Every function works under ``jax.jit``, ``jax.vmap`` (a leading seed axis on the state)
    and ``jax.lax.scan``; donate the state (``donate_argnums``) to update it in place.
    ``buf.replace(sample=jax.jit(buf.sample), ...)`` returns a copy with some functions
    replaced (flashbax's and PureJaxRL's idiom; ``_replace`` does the same).

    Attributes:
      init: ``init(example) -> state``. ``example`` is ONE item (a pytree without a batch
        axis); every array is allocated here.
      add: ``add(state, items) -> state``. ``items``: the example's pytree with a leading
        batch axis [B, ...] (the one-copy and sequence layouts: exactly ``num_envs`` items,
        one vector step). The oldest items are overwritten first.
      sample: ``sample(state, key, batch_size=None, beta=0.4) -> Sample``. ``batch_size``:
        a static Python int, or None for the buffer's ``sample_batch_size``; ``beta``:
        the importance-sampling exponent (prioritized only; may be traced).
      update: ``update(state, indices, priorities) -> state``. ``indices``: int32 [n] from
        ``Sample.indices``; ``priorities``: float32 [n] >= 0 (e.g. ``|TD error|``). Ids of
        overwritten items and -1 are ignored. Uniform buffers return the state unchanged.
      can_sample: ``can_sample(state, batch_size=None) -> bool[]``: the buffer holds at
        least ``batch_size`` sampleable items (and, prioritized, a nonzero priority).
      memory: ``memory(state) -> MemoryReport``: bytes per field, per item and in total;
        ``state`` may be ``jax.eval_shape(buf.init, example)`` (nothing allocated).
    """

    init: Callable
    add: Callable
    sample: Callable
    update: Callable
    can_sample: Callable
    memory: Callable

    def replace(self, **functions) -> ReplayBuffer:
        """A copy with the named functions replaced.

        Args:
          **functions: new functions by field name, e.g. ``init=jax.jit(buf.init)``.

        Returns:
          A :class:`ReplayBuffer`; an unknown name raises ``ValueError``.
        """
        return self._replace(**functions)


def size(state) -> jax.Array:
    """Number of valid items in a buffer state: int32 scalar ([S] for vmapped states)."""
    return state.count
