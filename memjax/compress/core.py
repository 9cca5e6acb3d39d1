"""The compressed-kernel types, the layer walker, the apply path and serialization.

A compressed parameter tree is the flax tree it came from with some ``kernel`` leaves
replaced by one of these pytrees (biases stay float32):

* :class:`QTensor`: symmetric integer weights, ``values`` int8 (8 bits) or uint8 with 2 (4 bits)
  or 4 (2 bits) weights packed per byte along the output axis, and float32 ``scale`` (one per
  output channel, or one per tensor);
* :class:`SparseTensor`: the non-zeros of a kernel (float32 or int8) plus their positions, as a
  bitmask (1 bit per weight) or flat indices (uint16/uint32), whichever is smaller;
* :class:`LowRank`: two thinner factors ``a`` and ``b`` with ``kernel = a @ b``;
* :class:`Shared`: a ``codebook`` of k float32 values and packed ``indices`` into it.

Static information (bit width, the kernel's shape) is pytree metadata, so every tree here
works under ``jax.jit`` and ``jax.vmap``. :func:`apply` runs a flax network from such a tree:
it intercepts the ``__call__`` of every ``nn.Dense`` and ``nn.Conv`` and computes it from the
stored form (integer weights times per-channel scales, two thin matmuls for low rank, ...);
layers whose kernel is a plain array run unchanged. :func:`serialize` writes a tree to msgpack
bytes (flax.serialization), static metadata included; ``len(serialize(tree))`` is the
artefact's real size.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, struct

from memjax.codecs.base import unpack_codes

# ---------------------------------------------------------------------------------------------
# Compressed kernel types
# ---------------------------------------------------------------------------------------------


def _decode(x):
    """A kernel (array or compressed type) as a float32 array."""
    return x.decode() if hasattr(x, "decode") else jnp.asarray(x, jnp.float32)


@struct.dataclass
class QTensor:
    """Symmetric integer weights: ``kernel ~= ints * scale``.

    Attributes:
      values: int8 ``shape`` (bits=8), or uint8 ``[*shape[:-1], ceil(shape[-1] * bits / 8)]``
        holding ``ints + 2**(bits-1)`` packed along the output axis (bits 4 and 2); or a
        :class:`SparseTensor` of int8 (bits=8 after pruning).
      scale: float32 ``[shape[-1]]`` (per output channel) or ``[]`` (per tensor).
      bits: 8, 4 or 2 (static).
      shape: the kernel's shape (static).
    """

    values: Any
    scale: jax.Array
    bits: int = struct.field(pytree_node=False)
    shape: tuple = struct.field(pytree_node=False)

    def ints(self):
        """The integer weights as int8, ``shape``."""
        v = self.values
        if isinstance(v, SparseTensor):
            v = v.decode(dtype=jnp.int8)
        if self.bits == 8:
            return jnp.asarray(v).astype(jnp.int8)
        u = unpack_codes(v, self.bits, self.shape[-1])
        return (u.astype(jnp.int16) - 2 ** (self.bits - 1)).astype(jnp.int8)

    def decode(self):
        return self.ints().astype(jnp.float32) * self.scale


@struct.dataclass
class SparseTensor:
    """The non-zero entries of a kernel and their positions.

    Attributes:
      values: 1-D, float32 or int8, the non-zeros in row-major order.
      positions: the positions, as ``encoding`` says.
      encoding: (static) ``"bitmask"``: uint8, 1 bit per weight (n/8 bytes); ``"index"``: flat
        indices, uint16 (up to 65,536 weights) or uint32; ``"delta"``: uint8 gaps (zeros skipped
        before each entry), Han et al.'s relative indexing: a gap over 255 is bridged by an
        explicit zero entry, so ``values`` may hold a few zeros.
      shape: the kernel's shape (static).
    """

    values: jax.Array
    positions: jax.Array
    encoding: str = struct.field(pytree_node=False)
    shape: tuple = struct.field(pytree_node=False)

    @property
    def nnz(self) -> int:
        return int(self.values.shape[-1])

    def decode(self, dtype=jnp.float32):
        n = math.prod(self.shape)
        if self.values.shape[-1] == 0:
            return jnp.zeros(self.shape, dtype)
        vals = self.values.astype(dtype)
        if self.encoding == "bitmask":
            m = unpack_codes(self.positions, 1, n).astype(bool)
            pos = jnp.clip(jnp.cumsum(m) - 1, 0, None)
            flat = jnp.where(m, vals[pos], jnp.zeros((), dtype))
        elif self.encoding == "delta":
            idx = jnp.cumsum(self.positions.astype(jnp.int32) + 1) - 1
            flat = jnp.zeros((n,), dtype).at[idx].set(vals)
        else:
            flat = jnp.zeros((n,), dtype).at[self.positions.astype(jnp.int32)].set(vals)
        return flat.reshape(self.shape)


@struct.dataclass
class LowRank:
    """Two thin factors with ``kernel = a @ b`` over the last axis of ``a``.

    Attributes:
      a: ``[in, r]`` (Dense) or ``[kh, kw, in, r]`` (Conv: an r-filter conv followed by a 1x1
        conv); float32 or a :class:`QTensor`.
      b: ``[r, out]``, float32 or a :class:`QTensor`.
      shape: the kernel's shape (static).
    """

    a: Any
    b: Any
    shape: tuple = struct.field(pytree_node=False)

    @property
    def rank(self) -> int:
        return int(self.b.shape[-2] if not isinstance(self.b, QTensor) else self.b.shape[0])

    def decode(self):
        return jnp.tensordot(_decode(self.a), _decode(self.b), axes=1)


@struct.dataclass
class Shared:
    """Weight sharing: ``kernel = codebook[indices]``.

    Attributes:
      codebook: float32 ``[k]``.
      indices: uint8, packed to ``bits`` per weight along the output axis.
      bits: ``ceil(log2 k)`` rounded up to 1, 2, 4 or 8 (static).
      shape: the kernel's shape (static).
    """

    codebook: jax.Array
    indices: jax.Array
    bits: int = struct.field(pytree_node=False)
    shape: tuple = struct.field(pytree_node=False)

    def index_values(self):
        return unpack_codes(self.indices, self.bits, self.shape[-1]).astype(jnp.int32)

    def decode(self):
        return self.codebook[self.index_values()]


COMPRESSED_TYPES = (QTensor, SparseTensor, LowRank, Shared)


def is_compressed(x) -> bool:
    """Whether ``x`` is one of the compressed kernel types (:class:`QTensor`, :class:`SparseTensor`,
    :class:`LowRank`, :class:`Shared`).
    """
    return isinstance(x, COMPRESSED_TYPES)


# ---------------------------------------------------------------------------------------------
# Layers: walking and validating flax parameter trees
# ---------------------------------------------------------------------------------------------

SUPPORTED = ("Dense (kernel [in, out] + bias [out])", "Conv (kernel [kh, kw, in, out] + bias)")


def _is_array(x) -> bool:
    return (
        isinstance(x, (jax.Array, np.ndarray))
        or is_compressed(x)
        or isinstance(x, jax.ShapeDtypeStruct)
    )


def layers(params) -> list:
    """Every layer of a flax parameter tree, in tree order.

    A layer is a dict with a ``kernel`` of rank 2 (Dense) or 4 (Conv 2-D), plain or compressed,
    and optionally a ``bias``.

    Args:
      params: a flax parameter tree (``{"params": ...}`` or the inner dict).

    Returns:
      ``[(path, layer_dict)]``, ``path`` a tuple of dict keys.

    Raises:
      ValueError: anything other than Dense and Conv layers (named), or no layer at all.
    """
    if isinstance(params, dict) and set(params) == {"params"}:
        params = params["params"]
    if not isinstance(params, dict):
        raise ValueError(f"expected a flax parameter dict, got {type(params).__name__}")
    out = []

    def walk(d, path):
        leaves = {k: v for k, v in d.items() if _is_array(v)}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        other = [k for k in d if k not in leaves and k not in subs]
        name = "/".join(path) or "<root>"
        if other:
            raise ValueError(f"layer {name!r}: entries {other} are neither arrays nor layers")
        if leaves:
            if subs or "kernel" not in leaves or set(leaves) - {"kernel", "bias"}:
                raise ValueError(
                    f"unsupported layer {name!r} with parameters {sorted(d)}: memjax.compress "
                    f"supports {SUPPORTED[0]} and {SUPPORTED[1]}"
                )
            k = leaves["kernel"]
            ndim = len(k.shape)
            if ndim not in (2, 4):
                raise ValueError(
                    f"unsupported layer {name!r}: kernel of shape "
                    f"{tuple(getattr(k, 'shape', ()))}; memjax.compress supports "
                    f"{SUPPORTED[0]} and {SUPPORTED[1]}"
                )
            out.append((path, d))
            return
        for k in sorted(subs):
            walk(subs[k], path + (k,))

    walk(params, ())
    if not out:
        raise ValueError("the parameter tree has no Dense or Conv layer")
    return out


def map_kernels(fn: Callable, params, *, with_path: bool = False):
    """A copy of ``params`` with every layer's kernel replaced by ``fn(kernel)``.

    Args:
      fn: ``kernel -> new kernel``, or ``(path, kernel) -> new kernel`` with ``with_path``.
      params: a flax parameter tree (validated by :func:`layers`).
      with_path: pass the layer's path (a tuple of keys) to ``fn``.

    Returns:
      The new tree (biases and other entries unchanged).
    """
    wrapped = isinstance(params, dict) and set(params) == {"params"}
    inner = params["params"] if wrapped else params
    layers(inner)  # validate

    def rebuild(d, path):
        if "kernel" in d and not any(isinstance(v, dict) for v in d.values()):
            k = d["kernel"]
            return {**d, "kernel": fn(path, k) if with_path else fn(k)}
        return {k: rebuild(v, path + (k,)) if isinstance(v, dict) else v for k, v in d.items()}

    new = rebuild(inner, ())
    return {"params": new} if wrapped else new


def decompress(cparams):
    """Every compressed kernel decoded back to float32: a plain flax tree."""
    return map_kernels(_decode, cparams)


def count_params(cparams) -> int:
    """Stored numbers: weights + biases + scales + codebook entries.

    A pruned weight, a bit of a mask or an index is not a parameter; a sparse tensor counts its
    non-zeros.

    Args:
      cparams: a plain or compressed parameter tree.

    Returns:
      The count (Python int).
    """
    total = 0

    def count(x):
        if isinstance(x, QTensor):
            return (
                x.values.nnz if isinstance(x.values, SparseTensor) else math.prod(x.shape)
            ) + int(np.size(x.scale))
        if isinstance(x, SparseTensor):
            return x.nnz
        if isinstance(x, LowRank):
            return count(x.a) + count(x.b)
        if isinstance(x, Shared):
            return math.prod(x.shape) + int(np.size(x.codebook))
        return int(np.size(x))

    for _, layer in layers(cparams):
        for v in layer.values():
            total += count(v)
    return total


def count_nonzero(params) -> int:
    """Non-zero weights and biases of a float (or decoded) tree, as a Python int."""
    return int(
        sum(int(np.count_nonzero(np.asarray(x))) for x in jax.tree.leaves(decompress(params)))
    )


# ---------------------------------------------------------------------------------------------
# Apply: run a flax network from a compressed tree
# ---------------------------------------------------------------------------------------------

_local = threading.local()


@contextlib.contextmanager
def _bypass():
    old = getattr(_local, "bypass", False)
    _local.bypass = True
    try:
        yield
    finally:
        _local.bypass = old


def _run_linear(m, kernel, x):
    """The module ``m`` (Dense or Conv) run on ``x`` with a float ``kernel`` and no bias; the
    number of output features follows the kernel."""
    with _bypass():
        clone = m.clone(parent=None, features=int(kernel.shape[-1]), use_bias=False)
        return clone.apply({"params": {"kernel": kernel}}, x)


def _compressed_linear(m, k, x):
    if isinstance(k, QTensor):
        # integer weights (cast for the matmul), the scale applied once per output channel
        return _run_linear(m, k.ints().astype(jnp.float32), x) * k.scale
    if isinstance(k, LowRank):
        if isinstance(m, nn.Conv) and getattr(m, "feature_group_count", 1) != 1:
            raise ValueError(
                f"layer {m.name!r}: low-rank factors of a grouped conv "
                "(feature_group_count != 1) are not supported"
            )
        h = _compressed_linear(m, k.a, x) if is_compressed(k.a) else _run_linear(m, k.a, x)
        b = k.b
        if isinstance(b, QTensor):
            return jnp.tensordot(h, b.ints().astype(jnp.float32), axes=1) * b.scale
        return jnp.tensordot(h, _decode(b), axes=1)
    if isinstance(k, (SparseTensor, Shared)):
        return _run_linear(m, k.decode(), x)
    return _run_linear(m, jnp.asarray(k), x)


def _interceptor(next_fun, args, kwargs, ctx):
    if getattr(_local, "bypass", False) or ctx.method_name != "__call__":
        return next_fun(*args, **kwargs)
    m = ctx.module
    if not isinstance(m, (nn.Dense, nn.Conv)):
        return next_fun(*args, **kwargs)
    layer = m.variables.get("params", {})
    kernel = layer.get("kernel") if hasattr(layer, "get") else None
    if not is_compressed(kernel):
        return next_fun(*args, **kwargs)
    if kwargs or len(args) != 1:
        raise ValueError(f"layer {m.name!r}: compressed layers take one input array")
    y = _compressed_linear(m, kernel, args[0])
    if "bias" in layer:
        y = y + jnp.asarray(layer["bias"], y.dtype)
    return y


@contextlib.contextmanager
def intercept():
    """A context manager: inside it (at trace time), ``network.apply(cparams, ...)`` runs every
    Dense and Conv layer from its compressed kernel.

    Use it around code you did not write, e.g.
    ``with intercept(): jax.jit(trainer.evaluate)(cparams, key)``; otherwise :func:`apply`.
    """
    with nn.intercept_methods(_interceptor):
        yield


def apply(network: nn.Module, cparams, obs, **kwargs):
    """``network.apply`` from a compressed tree (any mix of float and compressed kernels).

    Args:
      network: the flax module the parameters belong to.
      cparams: its parameter tree, with compressed kernels.
      obs: the network's input, e.g. observations ``[B, *obs_shape]``.
      **kwargs: more arguments of ``network.apply``.

    Returns:
      What ``network.apply(decompress(cparams), obs)`` returns (Q-values float32
      ``[B, num_actions]`` for the memjax networks), computed from the stored form.

    Raises:
      ValueError: a compressed layer called with more than one input array.
    """
    with intercept():
        return network.apply(cparams, obs, **kwargs)


# ---------------------------------------------------------------------------------------------
# Serialization (msgpack via flax.serialization) and byte counts
# ---------------------------------------------------------------------------------------------

_TAG = "~t"


def _encode(x):
    if isinstance(x, dict):
        return {k: _encode(v) for k, v in x.items()}
    if isinstance(x, QTensor):
        return {
            _TAG: "q",
            "values": _encode(x.values),
            "scale": np.asarray(x.scale),
            "bits": x.bits,
            "shape": list(x.shape),
        }
    if isinstance(x, SparseTensor):
        return {
            _TAG: "sparse",
            "values": np.asarray(x.values),
            "positions": np.asarray(x.positions),
            "encoding": x.encoding,
            "shape": list(x.shape),
        }
    if isinstance(x, LowRank):
        return {_TAG: "lowrank", "a": _encode(x.a), "b": _encode(x.b), "shape": list(x.shape)}
    if isinstance(x, Shared):
        return {
            _TAG: "shared",
            "codebook": np.asarray(x.codebook),
            "indices": np.asarray(x.indices),
            "bits": x.bits,
            "shape": list(x.shape),
        }
    return np.asarray(x)


def _decode_tree(d):
    if isinstance(d, dict):
        tag = d.get(_TAG)
        if tag == "q":
            return QTensor(_decode_tree(d["values"]), d["scale"], int(d["bits"]), tuple(d["shape"]))
        if tag == "sparse":
            return SparseTensor(d["values"], d["positions"], str(d["encoding"]), tuple(d["shape"]))
        if tag == "lowrank":
            return LowRank(_decode_tree(d["a"]), _decode_tree(d["b"]), tuple(d["shape"]))
        if tag == "shared":
            return Shared(d["codebook"], d["indices"], int(d["bits"]), tuple(d["shape"]))
        if tag is not None:
            raise ValueError(f"unknown compressed type {tag!r} in serialized tree")
        return {k: _decode_tree(v) for k, v in d.items()}
    return d


def serialize(cparams) -> bytes:
    """msgpack bytes of a (compressed or plain) parameter tree, static metadata included."""
    return serialization.msgpack_serialize(_encode(jax.device_get(cparams)))


def deserialize(blob: bytes):
    """The parameter tree that :func:`serialize` wrote to ``blob``.

    Raises:
      ValueError: an unknown compressed type in ``blob``.
    """
    return _decode_tree(serialization.msgpack_restore(blob))


def nbytes(cparams) -> int:
    """Bytes of the serialized artefact: ``len(serialize(cparams))``."""
    return len(serialize(cparams))


def weight_bytes(cparams) -> int:
    """Bytes of the stored arrays only (kernels with their scales, masks, indices and codebooks;
    biases), no container overhead.
    """
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(cparams)))


def kernel_bytes(cparams) -> int:
    """Bytes of the stored kernels (with their scales, masks, codebooks), biases excluded."""
    return int(sum(weight_bytes(layer["kernel"]) for _, layer in layers(cparams)))


__all__ = [
    "QTensor",
    "SparseTensor",
    "LowRank",
    "Shared",
    "layers",
    "map_kernels",
    "decompress",
    "count_params",
    "count_nonzero",
    "apply",
    "intercept",
    "serialize",
    "deserialize",
    "nbytes",
    "weight_bytes",
    "kernel_bytes",
    "is_compressed",
]
