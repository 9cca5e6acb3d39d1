"""Trace-time input checks shared by the buffers and the sum-tree.

Shape and dtype checks run while tracing, so they fire inside ``jit`` too. Value
checks (NaN, negatives, an empty buffer) need concrete data and only run on
eager, non-traced inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds data we can read on the host (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def path_name(path) -> str:
    """'obs' / 'info.final' / '[0]' style name for a pytree key path."""
    name = jax.tree_util.keystr(path, simple=True, separator=".")
    return name or "<root>"


def check_positive_int(name: str, value) -> int:
    """``value`` as an int, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a python int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def batched_shape_str(shape) -> str:
    """'(B, 10, 10, 4)' for a per-item shape (10, 10, 4)."""
    return "(B" + "".join(f", {d}" for d in shape) + ")"


def check_batch_like(example_spec, items, what: str = "add"):
    """Check ``items`` = ``example_spec`` with one leading batch axis; return (items, B).

    example_spec: pytree of jax.ShapeDtypeStruct for ONE item.
    items: pytree of arrays [B, ...]. Python/NumPy leaves are converted with
    jnp.asarray first (so float64 NumPy becomes float32 when x64 is off).
    Raises TypeError (structure, dtype) or ValueError (shape) naming the field.
    """
    spec_def = jax.tree.structure(example_spec)
    items_def = jax.tree.structure(items)
    if spec_def != items_def:
        raise TypeError(
            f"{what}: items have structure {items_def}, the buffer was initialised with {spec_def}"
        )
    items = jax.tree.map(jnp.asarray, items)
    batch = None
    for (path, leaf), spec in zip(
        jax.tree_util.tree_leaves_with_path(items), jax.tree.leaves(example_spec)
    ):
        name = path_name(path)
        if leaf.dtype != spec.dtype:
            raise TypeError(f"{what}: field '{name}' has dtype {leaf.dtype}, expected {spec.dtype}")
        if leaf.ndim != len(spec.shape) + 1 or tuple(leaf.shape[1:]) != tuple(spec.shape):
            raise ValueError(
                f"{what}: field '{name}' has shape {tuple(leaf.shape)}, expected "
                f"{batched_shape_str(spec.shape)}"
            )
        if batch is None:
            batch = leaf.shape[0]
        elif leaf.shape[0] != batch:
            raise ValueError(
                f"{what}: field '{name}' has batch size {leaf.shape[0]}, other fields have {batch}"
            )
    if batch is None:
        raise ValueError(f"{what}: items have no array fields")
    if batch < 1:
        raise ValueError(f"{what}: empty batch (batch size 0)")
    return items, batch
