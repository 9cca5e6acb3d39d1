"""Low-rank factorization of Dense and Conv kernels by truncated SVD.

A Dense kernel ``W [in, out]`` becomes ``a = U_r sqrt(S_r)`` ``[in, r]`` and
``b = sqrt(S_r) V_r^T`` ``[r, out]``: two thinner Dense layers (no nonlinearity between).
A Conv kernel ``[kh, kw, in, out]`` is reshaped to ``[kh*kw*in, out]`` first and becomes an
r-filter conv followed by a 1x1 conv. ``||W - a @ b||_F^2`` is the tail energy
``sum_{i >= r} s_i^2`` (Eckart–Young). A layer is only factored when that stores fewer numbers
(``r * (rows + out) < rows * out``); otherwise it stays as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from memjax.compress.core import LowRank, is_compressed, map_kernels


def _matrix(w):
    w = jnp.asarray(w, jnp.float32)
    return w.reshape(-1, w.shape[-1])


def rank_for_energy(singular_values, energy: float) -> int:
    """The smallest r whose leading r singular values keep ``energy`` of ``sum(s**2)``.

    Host-side: needs concrete values.

    Args:
      singular_values: float ``[n]``, descending.
      energy: the kept fraction, in (0, 1].

    Returns:
      r, a Python int >= 1.
    """
    s2 = np.asarray(singular_values, np.float64) ** 2
    total = s2.sum()
    if total == 0:
        return 1
    kept = np.cumsum(s2) / total
    return int(min(np.searchsorted(kept, energy - 1e-12) + 1, s2.size))


def factor(w, rank: int) -> LowRank:
    """Truncated SVD of one kernel; jittable with ``rank`` static.

    Args:
      w: a Dense ``[in, out]`` or Conv ``[kh, kw, in, out]`` kernel.
      rank: r >= 1.

    Returns:
      A :class:`LowRank` with float32 factors.

    Raises:
      ValueError: ``rank`` < 1.
    """
    shape = tuple(w.shape)
    m = _matrix(w)
    rank = int(min(rank, *m.shape))
    if rank < 1:
        raise ValueError(f"low_rank: rank must be >= 1, got {rank}")
    u, s, vt = jnp.linalg.svd(m, full_matrices=False)
    root = jnp.sqrt(s[:rank])
    a = (u[:, :rank] * root).reshape(shape[:-1] + (rank,))
    b = root[:, None] * vt[:rank]
    return LowRank(a=a, b=b, shape=shape)


def worth_factoring(shape, rank: int) -> bool:
    rows, out = math.prod(shape[:-1]), shape[-1]
    return rank * (rows + out) < rows * out


def choose_ranks(params, energy: float) -> dict:
    """The rank of each kernel that keeps ``energy`` of its squared singular values.

    Host-side (one seed's concrete parameters).

    Args:
      params: a flax parameter tree of float kernels.
      energy: the kept fraction, in (0, 1].

    Returns:
      ``{layer_path: rank}``.

    Raises:
      ValueError: ``energy`` outside (0, 1], or a compressed kernel.
    """
    from memjax.compress.core import layers

    if not 0.0 < energy <= 1.0:
        raise ValueError(f"low_rank: energy must be in (0, 1], got {energy!r}")
    out = {}
    for path, layer in layers(params):
        k = layer["kernel"]
        if is_compressed(k):
            raise ValueError(f"low_rank: layer {'/'.join(path)!r} is already compressed")
        s = np.linalg.svd(np.asarray(_matrix(k), np.float64), compute_uv=False)
        out[path] = rank_for_energy(s, energy)
    return out


def low_rank(params, rank: int | Mapping | None = None, energy: float | None = None):
    """Factor every Dense/Conv kernel by truncated SVD.

    Layers where factoring would not store fewer numbers (``r * (rows + out) >= rows * out``)
    are left unchanged.

    Args:
      params: a flax parameter tree of float kernels.
      rank: an int for all layers, or ``{layer_path: rank}``; jittable.
      energy: instead of ``rank``, the kept fraction of squared singular values, rank chosen
        per layer (host-side, since the rank sets shapes).

    Returns:
      The tree with factored kernels as :class:`LowRank`.

    Raises:
      ValueError: both or neither of ``rank`` and ``energy``, a rank below 1, or a compressed
        kernel.
    """
    if (rank is None) == (energy is None):
        raise ValueError("low_rank: give exactly one of rank= or energy=")
    ranks = choose_ranks(params, energy) if energy is not None else rank

    def f(path, k):
        if is_compressed(k):
            raise ValueError(
                f"low_rank: layer {'/'.join(path)!r} is already compressed ({type(k).__name__})"
            )
        r = ranks.get(path) if isinstance(ranks, Mapping) else ranks
        if r is None:
            return k
        if not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"low_rank: rank must be a positive integer, got {r!r}")
        if not worth_factoring(tuple(k.shape), int(r)):
            return k
        return factor(k, int(r))

    return map_kernels(f, params, with_path=True)


def reconstruction_error(w, rank: int) -> float:
    """``||W - a @ b||_F^2`` of :func:`factor` (for checks against the SVD tail energy)."""
    lr = factor(w, rank)
    return float(jnp.sum((_matrix(w) - _matrix(lr.decode())) ** 2))


__all__ = [
    "low_rank",
    "factor",
    "choose_ranks",
    "rank_for_energy",
    "worth_factoring",
    "reconstruction_error",
]
