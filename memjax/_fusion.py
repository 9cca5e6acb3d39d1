"""Keeping XLA from re-fusing a value into its consumers (shared by the sum-tree and the stores).

XLA fuses a cheap producer into every consumer, recomputing it per element there. That is
usually right, but wrong when (a) the producer reads an array the program later writes in
place (the re-read after the write makes XLA copy the whole array), or (b) a per-row value
feeds a per-element select and its index arithmetic would be redone for every element
(``materialise_on_cpu``: it matters on CPU only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def materialise(values, trip_count):
    """``values``, computed once and never re-fused into later consumers.

    On GPU and TPU an ``optimization_barrier`` does this. XLA:CPU strips that barrier, so
    there the values pass through a one-trip loop (:func:`_one_trip_loop`): a loop on GPU
    costs a host round trip for its predicate every time it runs. ``trip_count`` must be a
    traced int32 equal to 1 (the CPU loop's trip count).
    """
    return jax.lax.platform_dependent(
        values,
        trip_count,
        cpu=_one_trip_loop,
        default=lambda values, _: jax.lax.optimization_barrier(values),
    )


def _one_trip_loop(values, trip_count):
    """``values`` through a ``while_loop`` that runs once, a fusion boundary on every backend.

    XLA hoists loop-invariant carries out of a loop and deletes loops it can prove run
    once, so ``trip_count`` is traced (== 1) and the body passes each value through an
    identity XLA cannot see through (``x * trip_count`` for floats, ``x + (trip_count - 1)``
    for ints). Costs about as much as one small kernel on CPU.
    """

    def touch(x):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x * trip_count.astype(x.dtype)
        return x + (trip_count - 1).astype(x.dtype)

    def body(carry):
        i, xs = carry
        return i + 1, jax.tree.map(touch, xs)

    return jax.lax.while_loop(lambda c: c[0] < trip_count, body, (jnp.int32(0), values))[1]


def materialise_on_cpu(values, trip_count):
    """``values`` through the one-trip loop when lowered for CPU, ``values`` elsewhere.

    For a per-row value that feeds a per-element select: XLA:CPU redoes the fused index
    arithmetic for every element, which costs more than the loop; on GPU that arithmetic is
    nearly free, while a loop costs a host round trip for its predicate.
    """
    return jax.lax.platform_dependent(
        values, trip_count, cpu=_one_trip_loop, default=lambda v, _: v
    )
