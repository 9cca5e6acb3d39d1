"""A vmap rule for functions that already handle any number of leading (batch) axes."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def vmap_as_leading_axis(fn):
    """``fn`` as a ``custom_vmap`` whose rule puts the mapped axis first on every argument
    (broadcasting the unmapped ones) and calls ``fn`` again, so nested vmaps add leading axes.

    ``fn`` returns an array or a tuple (any pytree) of arrays, each with the leading axes.
    For ``fn(*arrays)`` whose arguments share their leading axes and that loops over all
    of them at once: a plain vmap would batch the loop's dynamic slices into gathers and
    scatters, or select between old and new carries at every step of a while loop whose
    trip count differs per batch element (O(size of the carry) per step).
    """
    fn = jax.custom_batching.custom_vmap(fn)

    @fn.def_vmap
    def rule(axis_size, in_batched, *args):
        lead = [
            x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))
            for x, batched in zip(args, in_batched)
        ]
        out = fn(*lead)
        return out, jax.tree.map(lambda _: True, out)

    return fn
