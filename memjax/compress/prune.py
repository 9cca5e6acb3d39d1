"""Magnitude pruning: one-shot (:func:`prune`), gradual during training (:func:`gradual_pruning`,
an optax wrapper whose state holds the masks), and sparse storage (:func:`to_sparse`).

Only Dense/Conv kernels are pruned; biases are kept (their masks are all True). Layer
sparsities come from one of three distributions (:func:`layer_sparsities`):

* ``"global"``: one magnitude threshold over all kernels;
* ``"uniform"``: every kernel at the same sparsity;
* ``"erk"``: Erdős–Rényi-Kernel (Evci et al., 2020): density of a layer proportional to
  ``sum(shape) / prod(shape)``, scaled so the whole network has the requested sparsity, with
  layers that would exceed density 1 kept dense and the rest rescaled.

The gradual schedule is Zhu & Gupta's (2017) cubic one:
``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3`` for ``t0 <= t <= t1``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.codecs.base import pack_codes
from memjax.compress.core import QTensor, SparseTensor, is_compressed, layers, map_kernels

DISTRIBUTIONS = ("global", "uniform", "erk")


def _check_sparsity(s, name="sparsity"):
    if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0.0 <= s < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {s!r}")


def _split_by_layer(flat, shapes: dict) -> dict:
    """Cut a flat array (all kernels concatenated in ``shapes`` order) back into one array
    per layer path, each of its kernel's shape."""
    out, start = {}, 0
    for path, shape in shapes.items():
        n = math.prod(shape)
        out[path] = flat[start : start + n].reshape(shape)
        start += n
    return out


def _kernel_shapes(params) -> dict:
    out = {}
    for path, layer in layers(params):
        k = layer["kernel"]
        if is_compressed(k):
            raise ValueError(
                f"prune: layer {'/'.join(path)!r} is already compressed "
                f"({type(k).__name__}); prune the float parameters"
            )
        out[path] = tuple(k.shape)
    return out


def layer_sparsities(params, sparsity: float, distribution: str = "uniform") -> dict:
    """The sparsity of each layer for a network-wide ``sparsity``, from kernel shapes only.

    Args:
      params: a flax parameter tree.
      sparsity: the fraction of kernel weights to remove, in [0, 1).
      distribution: ``"uniform"`` (every kernel at ``sparsity``) or ``"erk"``.

    Returns:
      ``{layer_path: sparsity}``; the kernel-weighted mean equals ``sparsity`` (up to ERK's cap of
      dense layers).

    Raises:
      ValueError: another distribution, a sparsity outside [0, 1), or a compressed kernel.
    """
    _check_sparsity(sparsity)
    if distribution not in ("uniform", "erk"):
        raise ValueError(
            f"layer_sparsities: distribution must be 'uniform' or 'erk', got {distribution!r}"
        )
    shapes = _kernel_shapes(params)
    if distribution == "uniform":
        return {p: float(sparsity) for p in shapes}
    n = {p: math.prod(s) for p, s in shapes.items()}
    raw = {p: sum(s) / math.prod(s) for p, s in shapes.items()}
    total = sum(n.values())
    dense: set = set()
    while True:  # RigL's ERK: cap densities at 1, rescale the others
        free = [p for p in shapes if p not in dense]
        budget = (1.0 - sparsity) * total - sum(n[p] for p in dense)
        eps = budget / sum(raw[p] * n[p] for p in free)
        over = [p for p in free if eps * raw[p] > 1.0]
        if not over:
            break
        dense.update(over)
    return {p: 0.0 if p in dense else float(1.0 - eps * raw[p]) for p in shapes}


def _mask_exact(w, k: int):
    """Bool mask keeping all but the ``k`` smallest-magnitude entries (ties by position)."""
    flat = jnp.abs(w).reshape(-1)
    if k <= 0:
        return jnp.ones(w.shape, bool)
    order = jnp.argsort(flat, stable=True)
    keep = jnp.ones(flat.shape, bool).at[order[:k]].set(False)
    return keep.reshape(w.shape)


def masks_like(params, value=True):
    return jax.tree.map(lambda x: jnp.full(jnp.shape(x), value, bool), params)


def prune(params, sparsity: float, distribution: str = "global"):
    """One-shot magnitude pruning.

    Exactly ``floor(s * n)`` weights of each kernel (or of all kernels, global) are removed.
    Jittable with ``sparsity``/``distribution`` static; vmaps over seeds.

    Args:
      params: a flax parameter tree of float kernels.
      sparsity: the fraction of kernel weights to remove, in [0, 1).
      distribution: ``"global"`` (one threshold over all kernels), ``"uniform"`` (every kernel at
        ``sparsity``) or ``"erk"``.

    Returns:
      ``(pruned_params, masks)``: the pruned tree (float, zeros where pruned) and a bool tree of
      the same structure (True = kept; biases all True).

    Raises:
      ValueError: another distribution, a sparsity outside [0, 1), or a compressed kernel.
    """
    _check_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"prune: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}"
        )
    shapes = _kernel_shapes(params)
    if distribution == "global":
        kernels = {path: layer["kernel"] for path, layer in layers(params)}
        flat = jnp.concatenate([jnp.reshape(kernels[p], -1) for p in shapes])
        kmasks = _split_by_layer(_mask_exact(flat, int(sparsity * flat.size)), shapes)
    else:
        per = layer_sparsities(params, sparsity, distribution)
        kmasks = {
            path: _mask_exact(layer["kernel"], int(per[path] * math.prod(shapes[path])))
            for path, layer in layers(params)
        }
    masks = masks_like(params)
    masks = map_kernels(lambda path, k: kmasks[path], masks, with_path=True)
    pruned = jax.tree.map(lambda w, m: jnp.where(m, w, jnp.zeros((), w.dtype)), params, masks)
    return pruned, masks


def sparsity_of(params) -> float:
    """Fraction of zero kernel weights (biases excluded), as a Python float."""
    z = n = 0
    for _, layer in layers(params):
        k = np.asarray(layer["kernel"])
        z += int(np.sum(k == 0))
        n += k.size
    return z / max(n, 1)


# ---------------------------------------------------------------------------------------------
# Gradual pruning during training (optax)
# ---------------------------------------------------------------------------------------------


def cubic_schedule(
    final_sparsity: float, begin_step: int, end_step: int, initial_sparsity: float = 0.0
):
    """Zhu & Gupta's sparsity schedule.

    Args:
      final_sparsity: the sparsity from ``end_step`` on.
      begin_step: the step pruning starts.
      end_step: the step it reaches ``final_sparsity``, > ``begin_step``.
      initial_sparsity: the sparsity before ``begin_step``.

    Returns:
      A jittable ``step -> float32`` sparsity, cubic between the two steps.

    Raises:
      ValueError: not ``0 <= begin_step < end_step``, or a sparsity outside [0, 1).
    """
    _check_sparsity(final_sparsity, "final_sparsity")
    _check_sparsity(initial_sparsity, "initial_sparsity")
    if not 0 <= begin_step < end_step:
        raise ValueError(
            f"cubic_schedule: need 0 <= begin_step < end_step, got {begin_step}, {end_step}"
        )

    def schedule(step):
        frac = jnp.clip((step - begin_step) / (end_step - begin_step), 0.0, 1.0)
        return (final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - frac) ** 3).astype(
            jnp.float32
        )

    return schedule


class PruningState(NamedTuple):
    """The optimizer state of :func:`gradual_pruning` and :func:`keep_masks`."""

    inner_state: Any
    masks: Any  # bool tree like params (True = kept)
    count: jax.Array  # int32 updates done


def _threshold_mask(absw, k):
    """Keep all but the ``k`` (traced int) smallest of ``absw``: ``absw > kth smallest``."""
    flat = jnp.sort(absw.reshape(-1))
    thr = flat[jnp.clip(k - 1, 0, flat.size - 1)]
    return jnp.where(k > 0, absw > thr, True)


def gradual_pruning(
    inner: optax.GradientTransformation,
    final_sparsity: float,
    begin_step: int,
    end_step: int,
    update_every: int = 100,
    distribution: str = "uniform",
    initial_sparsity: float = 0.0,
) -> optax.GradientTransformation:
    """Wrap an optax transformation so that training prunes gradually to ``final_sparsity``.

    Every ``update_every`` updates from ``begin_step`` to ``end_step`` (inclusive), the masks in the
    state are recomputed from the magnitudes of the updated weights at the sparsity of
    :func:`cubic_schedule`; a weight once pruned stays pruned. Every update is rewritten so the
    new parameters are exactly zero where the mask is False: ``params + updates == 0`` there.

    Args:
      inner: the optimizer to wrap.
      final_sparsity: the sparsity reached at ``end_step``, in [0, 1).
      begin_step: the update at which pruning starts.
      end_step: the update at which it reaches ``final_sparsity``.
      update_every: updates between mask recomputations, >= 1.
      distribution: layer sparsities: ``"uniform"``, ``"erk"`` or ``"global"``.
      initial_sparsity: the sparsity before ``begin_step``.

    Returns:
      An optax ``GradientTransformation`` whose state is a :class:`PruningState`; its ``update``
      needs ``params`` (``ValueError`` otherwise).

    Raises:
      ValueError: another distribution, ``update_every`` < 1, or a bad schedule.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"gradual_pruning: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}"
        )
    if not isinstance(update_every, int) or update_every <= 0:
        raise ValueError(f"update_every must be a positive integer, got {update_every!r}")
    schedule = cubic_schedule(final_sparsity, begin_step, end_step, initial_sparsity)

    def init(params):
        return PruningState(inner.init(params), masks_like(params), jnp.zeros((), jnp.int32))

    def new_masks(weights, old, sparsity):
        shapes = _kernel_shapes(weights)
        kernels = {path: layer["kernel"] for path, layer in layers(weights)}
        if distribution == "global":
            absw = jnp.concatenate([jnp.abs(kernels[p]).reshape(-1) for p in shapes])
            k = jnp.floor(sparsity * absw.size).astype(jnp.int32)
            km = _split_by_layer(_threshold_mask(absw, k), shapes)
        else:
            final = layer_sparsities(weights, final_sparsity, distribution)
            km = {}
            for p, s in shapes.items():
                ratio = final[p] / final_sparsity if final_sparsity > 0 else 0.0
                k = jnp.floor(sparsity * ratio * math.prod(s)).astype(jnp.int32)
                km[p] = _threshold_mask(jnp.abs(kernels[p]), k)
        fresh = map_kernels(lambda path, m: km[path], masks_like(weights), with_path=True)
        return jax.tree.map(jnp.logical_and, old, fresh)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(
                "gradual_pruning: update() needs params (the masks are computed from the weights)"
            )
        u, inner_state = inner.update(updates, state.inner_state, params)
        step = state.count
        weights = jax.tree.map(lambda p, d: p + d, params, u)
        now = (step >= begin_step) & (step <= end_step) & ((step - begin_step) % update_every == 0)
        masks = jax.lax.cond(
            now, lambda: new_masks(weights, state.masks, schedule(step)), lambda: state.masks
        )
        u = jax.tree.map(lambda d, p, m: jnp.where(m, d, -p), u, params, masks)
        return u, PruningState(inner_state, masks, step + 1)

    return optax.GradientTransformation(init, update)


def keep_masks(inner: optax.GradientTransformation, masks) -> optax.GradientTransformation:
    """Fine-tune with fixed masks (e.g. from :func:`prune`): pruned weights stay zero.

    Args:
      inner: the optimizer to wrap.
      masks: a bool tree like the parameters (True = kept).

    Returns:
      An optax ``GradientTransformation`` whose state is a :class:`PruningState`; its ``update``
      needs ``params`` (``ValueError`` otherwise).
    """

    def init(params):
        return inner.init(params)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("keep_masks: update() needs params")
        u, state = inner.update(updates, state, params)
        return jax.tree.map(lambda d, p, m: jnp.where(m, d, -p), u, params, masks), state

    return optax.GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# Sparse storage
# ---------------------------------------------------------------------------------------------

ENCODINGS = ("auto", "bitmask", "index", "delta")


def _delta_encode(flat):
    """uint8 gaps before each non-zero; a gap over 255 gets an explicit zero entry."""
    nz = np.flatnonzero(flat)
    gaps, pos, prev = [], [], -1
    for p in nz:
        while p - prev - 1 > 255:  # bridge: an explicit zero 256 slots on
            prev += 256
            gaps.append(255)
            pos.append(prev)
        gaps.append(p - prev - 1)
        pos.append(p)
        prev = p
    return np.asarray(gaps, np.uint8), flat[np.asarray(pos, np.int64)] if pos else flat[:0]


def sparse_tensor(w, encoding: str = "auto") -> SparseTensor:
    """A host-side sparse encoding of one kernel; not jittable (the non-zero count sets a shape).

    Args:
      w: a float32 or int8 kernel.
      encoding: ``"bitmask"`` (n/8 bytes), ``"index"`` (flat indices, uint16 up to 65,536
        weights, else uint32), ``"delta"`` (uint8 gaps) or ``"auto"`` (the smallest).

    Returns:
      A :class:`SparseTensor` of the non-zeros in row-major order.

    Raises:
      ValueError: another encoding or dtype.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"sparse encoding must be one of {ENCODINGS}, got {encoding!r}")
    w = np.asarray(w)
    if w.dtype not in (np.float32, np.int8):
        raise ValueError(f"sparse storage holds float32 or int8 kernels, got {w.dtype}")
    flat = w.reshape(-1)
    nz = np.flatnonzero(flat)
    idx_dtype = np.uint16 if flat.size <= 2**16 else np.uint32
    candidates = {}
    if encoding in ("auto", "bitmask"):
        candidates["bitmask"] = (flat[nz], np.asarray(pack_codes(flat != 0, 1)))
    if encoding in ("auto", "index"):
        candidates["index"] = (flat[nz], nz.astype(idx_dtype))
    if encoding in ("auto", "delta"):
        gaps, vals = _delta_encode(flat)
        candidates["delta"] = (vals, gaps)
    best = min(candidates, key=lambda e: candidates[e][0].nbytes + candidates[e][1].nbytes)
    values, positions = candidates[best]
    return SparseTensor(values=values, positions=positions, encoding=best, shape=tuple(w.shape))


def to_sparse(params, encoding: str = "auto", keep_dense_if_smaller: bool = True):
    """Store every kernel sparsely: float32 kernels, or 8-bit :class:`QTensor` integers.

    Host-side, one seed at a time (no leading seed axis).

    Args:
      params: a plain or 8-bit quantized parameter tree (pruned, presumably).
      encoding: as for :func:`sparse_tensor`.
      keep_dense_if_smaller: keep a kernel dense when its sparse form is not smaller.

    Returns:
      The tree with kernels as :class:`SparseTensor` (or :class:`QTensor` of one).

    Raises:
      ValueError: a 4- or 2-bit :class:`QTensor`, or another compressed kernel type.
    """

    def enc(path, k):
        if isinstance(k, QTensor):
            if k.bits != 8:
                raise ValueError(
                    f"to_sparse: layer {'/'.join(path)!r} is {k.bits}-bit; sparse "
                    "storage holds float32 or 8-bit kernels"
                )
            if isinstance(k.values, SparseTensor):
                return k
            dense = np.asarray(k.values)
            sp = sparse_tensor(dense, encoding)
            smaller = sp.values.nbytes + sp.positions.nbytes < dense.nbytes
            return k.replace(values=sp) if smaller or not keep_dense_if_smaller else k
        if is_compressed(k):
            raise ValueError(
                f"to_sparse: layer {'/'.join(path)!r} is a {type(k).__name__}; "
                "sparse storage holds float32 or 8-bit kernels"
            )
        dense = np.asarray(k, np.float32)
        sp = sparse_tensor(dense, encoding)
        smaller = sp.values.nbytes + sp.positions.nbytes < dense.nbytes
        return sp if smaller or not keep_dense_if_smaller else dense

    return map_kernels(enc, params, with_path=True)


__all__ = [
    "prune",
    "layer_sparsities",
    "cubic_schedule",
    "gradual_pruning",
    "keep_masks",
    "PruningState",
    "to_sparse",
    "sparse_tensor",
    "sparsity_of",
    "masks_like",
    "DISTRIBUTIONS",
    "ENCODINGS",
]
