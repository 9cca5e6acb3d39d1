"""Types shared by all buffers: the buffer bundle, a sample, and ``size``."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax


class Sample(NamedTuple):
    """A batch drawn from a buffer.

    Attributes:
      items: pytree, each leaf [batch_size, ...] as added (with the sequence layout: windows,
        per-step fields [batch_size, length, ...], per-window fields [batch_size, ...]).
      indices: int32 [batch_size] item ids; pass them back to ``update``. An id whose
        item has been overwritten since is ignored there (ids encode the slot and when it
        was written; see each layout's docstring).
      weights: float32 [batch_size] importance weights, max-normalised within the
        batch (all ones for uniform replay).
      probabilities: float32 [batch_size] the probability each item had of being drawn.
    """

    items: Any
    indices: jax.Array
    weights: jax.Array
    probabilities: jax.Array


class ReplayBuffer(NamedTuple):
    """A replay buffer: a bundle of pure functions, like an optax transform.

    init(example) -> state                  example: ONE item, no batch axis
    add(state, items) -> state              items: leading batch axis [B, ...]
    sample(state, key, batch_size=None, beta=0.4) -> Sample
                                            batch_size: a static Python int, or None for
                                            the buffer's ``sample_batch_size``
    update(state, indices, priorities) -> state
    can_sample(state, batch_size=None) -> bool scalar
    memory(state) -> MemoryReport           state may be jax.eval_shape(init, example)

    ``buf.replace(sample=jax.jit(buf.sample), ...)`` returns a copy with some functions
    replaced (flashbax's and PureJaxRL's idiom; ``_replace`` does the same).
    """

    init: Callable
    add: Callable
    sample: Callable
    update: Callable
    can_sample: Callable
    memory: Callable

    def replace(self, **functions) -> "ReplayBuffer":
        """A copy with the named functions replaced, e.g. ``init=jax.jit(buf.init)``."""
        return self._replace(**functions)


def size(state) -> jax.Array:
    """Number of valid items in a buffer state: int32 scalar ([S] for vmapped states)."""
    return state.count
