"""Argument checks shared by the buffers (trace-time, with concrete-value extras)."""

from __future__ import annotations

import jax
import numpy as np

from memjax._checks import check_positive_int, is_concrete


def item_spec(state):
    """ShapeDtypeStruct per field of ONE stored item (drops the capacity axis)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state.items)


def check_sample_batch_size(sample_batch_size, capacity: int):
    """The constructor's ``sample_batch_size``: None, or a Python int in [1, capacity]."""
    if sample_batch_size is None:
        return None
    check_positive_int("sample_batch_size", sample_batch_size)
    if sample_batch_size > capacity:
        raise ValueError(
            f"sample_batch_size {sample_batch_size} is larger than the buffer's capacity {capacity}"
        )
    return int(sample_batch_size)


def resolve_batch_size(batch_size, default, what: str = "sample", static: bool = True):
    """``batch_size`` if given, else the buffer's ``sample_batch_size``. TypeError when neither
    is given, or (``static``: it sets a shape) when ``batch_size`` is traced:
    ``jax.jit(buf.sample)`` traces every argument, so build the buffer with
    ``sample_batch_size`` instead."""
    if batch_size is None:
        if default is None:
            raise TypeError(
                f"{what}: give batch_size, or build the buffer with "
                f"sample_batch_size=N so that {what}(state) uses N"
            )
        return default
    if static and not is_concrete(batch_size):
        raise TypeError(
            f"{what}: batch_size must be a static Python int, got a traced value; "
            f"with jax.jit(buf.{what}) build the buffer with sample_batch_size=N "
            f"and call {what}(state, key), or mark batch_size static"
        )
    return batch_size


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
