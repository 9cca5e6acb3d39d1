"""Weight sharing (Han et al., 2016): k-means of each kernel's weights into a codebook of k
float32 values plus per-weight indices packed into ``ceil(log2 k)`` bits (1, 2, 4 or 8).

Centroids start evenly spaced between the kernel's min and max (the "linear" initialisation
that Han et al. found best, since it keeps the rare large weights), followed by ``iters``
Lloyd iterations; an empty cluster keeps its centroid. Jittable (``k``/``iters`` static);
vmaps over seeds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax.compress.core import Shared, is_compressed, map_kernels, pack_bits


def index_bits(k: int) -> int:
    for b in (1, 2, 4, 8):
        if k <= 2**b:
            return b
    raise ValueError(f"share: k must be at most 256, got {k}")


def kmeans_1d(x, k: int, iters: int = 30):
    """Lloyd's k-means on the flat values ``x`` from a linear initialisation.
    Returns ``(codebook float32 [k], assignment int32 [x.size])``."""
    x = jnp.asarray(x, jnp.float32).reshape(-1)
    c0 = jnp.linspace(jnp.min(x), jnp.max(x), k).astype(jnp.float32)

    def assign(c):
        return jnp.argmin(jnp.abs(x[:, None] - c[None, :]), axis=1).astype(jnp.int32)

    def body(_, c):
        a = assign(c)
        sums = jnp.zeros((k,), jnp.float32).at[a].add(x)
        counts = jnp.zeros((k,), jnp.float32).at[a].add(1.0)
        return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), c)

    c = jax.lax.fori_loop(0, iters, body, c0)
    return c, assign(c)


def share_tensor(w, k: int, iters: int = 30) -> Shared:
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= 256:
        raise ValueError(f"share: k must be an integer in [2, 256], got {k!r}")
    w = jnp.asarray(w, jnp.float32)
    codebook, a = kmeans_1d(w, k, iters)
    bits = index_bits(k)
    indices = pack_bits(a.reshape(w.shape).astype(jnp.uint8), bits)
    return Shared(codebook=codebook, indices=indices, bits=bits, shape=tuple(w.shape))


def share(params, k: int, iters: int = 30):
    """Replace every Dense/Conv kernel by a k-entry codebook and packed indices (one codebook
    per layer)."""
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= 256:
        raise ValueError(f"share: k must be an integer in [2, 256], got {k!r}")

    def f(path, w):
        if is_compressed(w):
            raise ValueError(f"share: layer {'/'.join(path)!r} is already compressed "
                             f"({type(w).__name__})")
        return share_tensor(w, k, iters)

    return map_kernels(f, params, with_path=True)


__all__ = ["share", "share_tensor", "kmeans_1d", "index_bits"]
