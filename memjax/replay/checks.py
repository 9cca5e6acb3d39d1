"""Argument checks shared by the buffers (trace-time, with concrete-value extras)."""

from __future__ import annotations

import jax
import numpy as np

from memjax._checks import check_positive_int, is_concrete


def item_spec(state):
    """ShapeDtypeStruct per field of ONE stored item (drops the capacity axis)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state.items)


def check_sample_args(state, batch_size, capacity: int) -> None:
    """batch_size: python int in [1, capacity]; an eager, empty buffer is an error."""
    check_positive_int("batch_size", batch_size)
    if batch_size > capacity:
        raise ValueError(f"batch_size {batch_size} is larger than the buffer's capacity {capacity}")
    if state.count.ndim:
        raise ValueError(
            f"sample: state has leading axes {state.count.shape}; for a per-seed state use jax.vmap"
        )
    if is_concrete(state.count) and int(state.count) == 0:
        raise ValueError("sample: the buffer is empty; add items first (see can_sample)")


def check_priorities(priorities) -> None:
    """Eager priorities must be finite and >= 0 (inside jit they are sanitised instead)."""
    if is_concrete(priorities):
        p = np.asarray(priorities)
        bad = ~(np.isfinite(p) & (p >= 0))
        if bad.any():
            raise ValueError(
                f"update: priorities must be finite and >= 0, got {p[bad][:5].tolist()} "
                f"at positions {np.flatnonzero(bad)[:5].tolist()}"
            )
