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

from memjax.codecs.base import index_bits, pack_codes
from memjax.codecs.kmeans import fit_kmeans, nearest_centre
from memjax.compress.core import Shared, is_compressed, map_kernels


def kmeans_1d(x, k: int, iters: int = 30):
    """Lloyd's k-means of flat values from a linear initialisation
    (:func:`memjax.codecs.fit_kmeans` with ``init="linear"``).

    Args:
      x: float values, any shape (flattened).
      k: codebook size.
      iters: Lloyd iterations.

    Returns:
      ``(codebook, assignment)``: float32 ``[k]`` and int32 ``[x.size]``.
    """
    x = jnp.asarray(x, jnp.float32).reshape(-1, 1)
    c = fit_kmeans(jax.random.PRNGKey(0), x, k, iters, "linear")
    return c[:, 0], nearest_centre(x, c)


def share_tensor(w, k: int, iters: int = 30) -> Shared:
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= 256:
        raise ValueError(f"share: k must be an integer in [2, 256], got {k!r}")
    w = jnp.asarray(w, jnp.float32)
    codebook, a = kmeans_1d(w, k, iters)
    bits = index_bits(k)
    indices = pack_codes(a.reshape(w.shape).astype(jnp.uint8), bits)
    return Shared(codebook=codebook, indices=indices, bits=bits, shape=tuple(w.shape))


def share(params, k: int, iters: int = 30):
    """Replace every Dense/Conv kernel by a k-entry codebook and packed indices (one codebook per
    layer). Jittable (``k``/``iters`` static); vmaps over seeds.

    Args:
      params: a flax parameter tree of float kernels.
      k: codebook size, an int in [2, 256].
      iters: Lloyd iterations.

    Returns:
      The tree with kernels as :class:`Shared`.

    Raises:
      ValueError: ``k`` out of range, or a compressed kernel.
    """
    if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= 256:
        raise ValueError(f"share: k must be an integer in [2, 256], got {k!r}")

    def f(path, w):
        if is_compressed(w):
            raise ValueError(
                f"share: layer {'/'.join(path)!r} is already compressed ({type(w).__name__})"
            )
        return share_tensor(w, k, iters)

    return map_kernels(f, params, with_path=True)


__all__ = ["share", "share_tensor", "kmeans_1d"]
