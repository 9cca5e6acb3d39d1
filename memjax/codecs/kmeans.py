"""``kmeans``: non-uniform quantization with codebooks fitted by Lloyd iterations."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from memjax import _pytree as struct
from memjax.codecs.base import (
    Codec,
    add_count,
    check_input,
    check_stored,
    example_spec,
    index_bits,
    item_size,
    pack_codes,
    packed_width,
    unpack_codes,
    zero_count,
)

PER = ("feature", "vector")
MAX_K = 65536
HIGHEST = jax.lax.Precision.HIGHEST


@struct.dataclass
class KMeansState:
    """The state of :func:`kmeans`.

    Attributes:
      codebook: float32 ``[F, k]`` (``per="feature"``, each row sorted ascending) or ``[k, F]``
        (``per="vector"``), ``F = prod(item_shape)``.
      invalid: int32 scalar, non-finite values seen by ``encode`` (stored as some index).
      shape: the item shape (static).
      dtype: the item dtype (static).
      k: the codebook size (static).
      per: ``"feature"`` or ``"vector"`` (static).
    """

    codebook: jax.Array
    invalid: jax.Array
    shape: tuple = struct.field(pytree_node=False)
    dtype: Any = struct.field(pytree_node=False)
    k: int = struct.field(pytree_node=False)
    per: str = struct.field(pytree_node=False)


# ----------------------------------------------------------------------------- fitting


INITS = ("auto", "quantile", "linear", "kmeans++")


def _quantile_init(data: jax.Array, k: int) -> jax.Array:
    """1-D: the (i + 1/2) / k quantiles of data [N, 1] -> [k, 1], ascending."""
    q = (jnp.arange(k, dtype=jnp.float32) + 0.5) / k
    return jnp.quantile(data[:, 0], q)[:, None]


def _kmeanspp_init(key: jax.Array, data: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding: each next centre drawn with probability ~ squared distance."""
    n = data.shape[0]
    key, sub = jax.random.split(key)
    first = data[jax.random.randint(sub, (), 0, n)]
    centres = jnp.zeros((k, data.shape[1]), jnp.float32).at[0].set(first)
    d2 = jnp.sum((data - first) ** 2, axis=-1)

    def body(i, carry):
        centres, d2, key = carry
        key, sub = jax.random.split(key)
        total = jnp.sum(d2)
        p = jnp.where(total > 0, d2 / jnp.where(total > 0, total, 1.0), 1.0 / n)
        c = data[jax.random.choice(sub, n, p=p)]
        d2 = jnp.minimum(d2, jnp.sum((data - c) ** 2, axis=-1))
        return centres.at[i].set(c), d2, key

    centres, _, _ = jax.lax.fori_loop(1, k, body, (centres, d2, key))
    return centres


def nearest_centre(data: jax.Array, centres: jax.Array) -> jax.Array:
    """Index of the nearest centre for each row: data [N, D], centres [k, D] -> int32 [N].

    1-D uses |x - c| exactly; D > 1 uses |c|^2 - 2 x.c with a full-precision matmul.
    """
    if data.shape[1] == 1:
        return jnp.argmin(jnp.abs(data - centres[:, 0][None, :]), axis=1).astype(jnp.int32)
    cross = jnp.dot(data, centres.T, precision=HIGHEST)
    return jnp.argmin(jnp.sum(centres**2, axis=1)[None, :] - 2.0 * cross, axis=1).astype(jnp.int32)


def _lloyd_step(data: jax.Array, centres: jax.Array) -> jax.Array:
    """One Lloyd iteration; an empty cluster keeps its centre."""
    k = centres.shape[0]
    a = nearest_centre(data, centres)
    sums = jax.ops.segment_sum(data, a, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones(data.shape[:1], jnp.float32), a, num_segments=k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres)


@partial(jax.jit, static_argnames=("k", "iters", "init"))
def fit_kmeans(
    key: jax.Array, data: jax.Array, k: int, iters: int = 25, init: str = "auto"
) -> jax.Array:
    """Fit ``k`` centroids to ``data`` with ``iters`` Lloyd iterations.

    1-D codebooks come back ascending (sorted after Lloyd for "quantile" and "kmeans++";
    "linear" keeps Lloyd's order, which a 1-D Lloyd iteration preserves up to float rounding).
    Lloyd never increases the distortion ``mean_i min_j |x_i - c_j|^2``; an empty cluster keeps
    its centroid. Pure jnp / lax loops, jittable and vmappable; memory O(N * k) per iteration.

    Args:
      key: PRNG key for the k-means++ seeding (ignored by the 1-D inits).
      data: ``[N, D]``.
      k: the number of centroids.
      iters: Lloyd iterations; 0 returns the initial centroids.
      init: "quantile" (the ``(i + 1/2)/k`` quantiles; 1-D only, deterministic), "linear" (k
        values evenly spaced from min to max, Han et al.'s weight-sharing init, which keeps
        the rare large values; 1-D only), "kmeans++" (k-means++ seeding with ``key``), or
        "auto" (quantile when ``D == 1``, else kmeans++).

    Returns:
      float32 ``[k, D]``: always exactly k rows (duplicates when the data has fewer than k
      distinct values).

    Raises:
      ValueError: ``data`` is not 2-D, ``init`` is unknown, or a 1-D init is asked for ``D > 1``.
    """
    data = jnp.asarray(data).astype(jnp.float32)
    if data.ndim != 2:
        raise ValueError(f"fit_kmeans: data must be [N, D], got shape {tuple(data.shape)}")
    if init not in INITS:
        raise ValueError(
            f"fit_kmeans: init must be one of {', '.join(map(repr, INITS))}, got {init!r}"
        )
    if init == "auto":
        init = "quantile" if data.shape[1] == 1 else "kmeans++"
    if init in ("quantile", "linear") and data.shape[1] != 1:
        raise ValueError(f"fit_kmeans: init={init!r} needs D == 1, got data {tuple(data.shape)}")
    if init == "quantile":
        centres = _quantile_init(data, k)
    elif init == "linear":
        centres = jnp.linspace(jnp.min(data), jnp.max(data), k).astype(jnp.float32)[:, None]
    else:
        centres = _kmeanspp_init(key, data, k)
    centres = jax.lax.fori_loop(0, iters, lambda i, c: _lloyd_step(data, c), centres)
    if data.shape[1] == 1 and init != "linear":
        centres = jnp.sort(centres, axis=0)
    return centres


def distortion(data: jax.Array, centres: jax.Array) -> jax.Array:
    """The mean squared distance to the nearest centre, ``mean_i min_j |x_i - c_j|^2``.

    Args:
      data: ``[N, D]``.
      centres: ``[k, D]``.

    Returns:
      float32 scalar.
    """
    data = jnp.asarray(data, jnp.float32)
    d2 = jnp.sum((data[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
    return jnp.mean(jnp.min(d2, axis=1))


@partial(jax.jit, static_argnames=("k", "iters"))
def fit_codebooks_1d(data: jax.Array, k: int, iters: int = 25) -> jax.Array:
    """One sorted 1-D codebook per column (quantile init, then Lloyd).

    Args:
      data: ``[N, F]``.
      k: codebook size.
      iters: Lloyd iterations.

    Returns:
      float32 ``[F, k]``, each row ascending.
    """
    data = jnp.asarray(data).astype(jnp.float32)

    def one(col):
        return fit_kmeans(jax.random.PRNGKey(0), col[:, None], k, iters, "quantile")[:, 0]

    return jax.lax.map(one, data.T)


# ----------------------------------------------------------------------------- codec


def _nearest_sorted(x: jax.Array, codebook: jax.Array) -> jax.Array:
    """x [M, F], sorted codebook [F, k] -> int32 [M, F], the nearest entry per feature.

    The nearest is either the largest entry < x or the smallest >= x; the lower
    index wins ties (like argmin).
    """
    k = codebook.shape[1]
    # small codebooks: one fused compare-and-count beats a search loop (a kernel per step)
    method = "compare_all" if k <= 256 else "scan"
    hi = jax.vmap(
        lambda c, v: jnp.searchsorted(c, v, side="left", method=method), in_axes=(0, 1), out_axes=1
    )(codebook, x)
    hi = jnp.clip(hi, 0, k - 1)
    lo = jnp.clip(hi - 1, 0, k - 1)
    f = jnp.arange(codebook.shape[0])
    take_lo = jnp.abs(x - codebook[f, lo]) <= jnp.abs(x - codebook[f, hi])
    return jnp.where(take_lo, lo, hi).astype(jnp.int32)


def kmeans(k: int, data, per: str = "feature", iters: int = 25, seed: int = 0) -> Codec:
    """Non-uniform quantization with k-means codebooks fitted (at construction) to ``data``.

    With ``F = prod(item_shape)``:

    - ``per="feature"``: every scalar feature has its own sorted 1-D codebook of k values
      (quantile init, then ``iters`` Lloyd iterations; :func:`fit_codebooks_1d`). Stored:
      uint8 ``[*B, ceil(F * bits / 8)]`` with bits = 1 (k <= 2), 2 (k <= 4), 4 (k <= 16),
      8 (k <= 256), i.e. 8, 4, 2 or 1 indices per byte; uint16 ``[*B, F]`` for k > 256.
    - ``per="vector"``: one codebook of k vectors of the flattened item (k-means++ with
      ``seed``, then Lloyd; :func:`fit_kmeans`). Stored: one index per item, uint8 ``[*B]``
      (k <= 256) or uint16 ``[*B]``.

    Decode gives the nearest centroid (argmin of ``|x - c|``, exact in float32; the lower index
    wins ties), ``[*B, *item_shape]`` in the example's dtype. Error bound: the distance to the
    nearest centroid, ``|x - x_hat| = min_j |x - c_j|``. For ``per="feature"``, a value inside
    the codebook hull ``[c_0, c_{k-1}]`` is within half the largest gap between adjacent
    centroids; outside the hull the error is the distance to the nearest end. Non-finite
    inputs are counted in ``state.invalid``.

    Args:
      k: codebook size, an int in [2, 65536].
      data: ``[N, *item_shape]``, the values to fit (float or integer, finite), N >= 1.
      per: ``"feature"`` or ``"vector"``.
      iters: Lloyd iterations, >= 0.
      seed: the k-means++ seed (``per="vector"``).

    Returns:
      A :class:`Codec` with a :class:`KMeansState`. Its ``init`` raises ``TypeError`` for a
      non-float example and ``ValueError`` when the example's shape is not ``data``'s item shape.

    Raises:
      ValueError: ``k``, ``per`` or ``iters`` is out of range, or ``data`` is empty or not finite.
      TypeError: ``data`` is not numeric.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= int(k) <= MAX_K:
        raise ValueError(f"kmeans: k must be an int in [2, {MAX_K}], got {k!r}")
    k = int(k)
    if per not in PER:
        raise ValueError(f"kmeans: per must be 'feature' or 'vector', got {per!r}")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise ValueError(f"kmeans: iters must be an int >= 0, got {iters!r}")
    data = jnp.asarray(data)
    if not (jnp.issubdtype(data.dtype, jnp.floating) or jnp.issubdtype(data.dtype, jnp.integer)):
        raise TypeError(f"kmeans: data must be numeric, got dtype {data.dtype}")
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(
            f"kmeans: data must have shape [N, *item_shape] with N >= 1, got {tuple(data.shape)}"
        )
    data_shape = tuple(data.shape[1:])
    flat = data.astype(jnp.float32).reshape(data.shape[0], -1)
    if not bool(jnp.all(jnp.isfinite(flat))):
        raise ValueError(f"kmeans: data has {int(jnp.sum(~jnp.isfinite(flat)))} non-finite values")
    if per == "feature":
        codebook = fit_codebooks_1d(flat, k, int(iters))
        bits = index_bits(k)
    else:
        codebook = fit_kmeans(jax.random.PRNGKey(seed), flat, k, int(iters))
        bits = 8 if k <= 256 else 16
    index_dtype = jnp.uint16 if bits == 16 else jnp.uint8
    n = item_size(data_shape)

    def init(example) -> KMeansState:
        shape, dtype = example_spec(example, "kmeans")
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"kmeans.init: example dtype must be a float dtype, got {dtype}")
        if shape != data_shape:
            raise ValueError(
                f"kmeans: data has item shape {data_shape} (data [N, ...] minus N), the example "
                f"has item shape {shape}"
            )
        return KMeansState(
            codebook=codebook, invalid=zero_count(), shape=shape, dtype=dtype, k=k, per=per
        )

    def encode(x, state: KMeansState):
        x, batch = check_input("kmeans", x, state.shape, state.dtype)
        xf = x.astype(jnp.float32).reshape(-1, n)
        nbad = jnp.sum(~jnp.isfinite(xf))
        if per == "feature":
            idx = _nearest_sorted(xf, state.codebook)
            if bits == 16:
                stored = idx.astype(jnp.uint16)
            else:
                stored = pack_codes(idx, bits)
            stored = stored.reshape(*batch, stored.shape[-1])
        else:
            d2 = jnp.sum((xf[:, None, :] - state.codebook[None, :, :]) ** 2, axis=-1)
            stored = jnp.argmin(d2, axis=1).astype(index_dtype).reshape(batch)
        return stored, state.replace(invalid=add_count(state.invalid, nbad))

    def decode(stored, state: KMeansState):
        if per == "feature":
            width = n if bits == 16 else packed_width(n, bits)
            stored, batch = check_stored("kmeans", stored, (width,), index_dtype)
            idx = stored.reshape(-1, width)
            idx = idx if bits == 16 else unpack_codes(idx, bits, n)
            x = state.codebook[jnp.arange(n), idx.astype(jnp.int32)]
        else:
            stored, batch = check_stored("kmeans", stored, (), index_dtype)
            x = state.codebook[stored.reshape(-1).astype(jnp.int32)]
        return x.reshape(*batch, *state.shape).astype(state.dtype)

    return Codec(init, encode, decode)
