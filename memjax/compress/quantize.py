"""Post-training weight quantization: symmetric absmax, per output channel or per tensor.

``quantize(params, bits=8)`` returns the tree with every Dense/Conv kernel replaced by a
:class:`~memjax.compress.core.QTensor`: real integer storage (int8, or uint8 with two 4-bit or
four 2-bit weights per byte) plus float32 scales. Biases stay float32. With
``qmax = 2**(bits-1) - 1`` (127, 7, 1) and ``scale = absmax / qmax`` over each output channel
(the kernel's last axis), ``ints = round(w / scale)`` lies in ``[-qmax, qmax]`` and the
dequantized weight is within ``scale / 2`` of ``w``. 2 bits is ternary: {-1, 0, +1} x scale.
"""

from __future__ import annotations

import jax.numpy as jnp

from memjax.codecs.base import pack_codes
from memjax.compress.core import QTensor, SparseTensor, decompress, map_kernels

BITS = (8, 4, 2)


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def quantize_tensor(w, bits: int = 8, per_channel: bool = True) -> QTensor:
    """One kernel as a :class:`QTensor`.

    Args:
      w: float kernel, output channels on the last axis.
      bits: 8, 4 or 2.
      per_channel: one scale per output channel; else one per tensor.

    Returns:
      The :class:`QTensor` (int8 values for 8 bits, packed uint8 for 4 and 2).

    Raises:
      ValueError: other ``bits``, or a kernel without an output axis.
    """
    if bits not in BITS:
        raise ValueError(f"quantize: bits must be one of {BITS}, got {bits!r}")
    w = jnp.asarray(w, jnp.float32)
    if w.ndim < 1:
        raise ValueError(f"quantize: expected a kernel with an output axis, got shape {w.shape}")
    axes = tuple(range(w.ndim - 1)) if per_channel else tuple(range(w.ndim))
    absmax = jnp.max(jnp.abs(w), axis=axes)
    q = qmax(bits)
    # an all-zero channel gets scale 1 (its integers are 0 either way), never a 0 division
    scale = jnp.where(absmax > 0, absmax / q, 1.0).astype(jnp.float32)
    ints = jnp.clip(jnp.round(w / scale), -q, q).astype(jnp.int8)
    if bits == 8:
        values = ints
    else:
        values = pack_codes((ints.astype(jnp.int16) + 2 ** (bits - 1)).astype(jnp.uint8), bits)
    return QTensor(values=values, scale=scale, bits=bits, shape=tuple(w.shape))


def quantize(params, bits: int = 8, per_channel: bool = True):
    """Quantize every Dense/Conv kernel of a flax parameter tree to integers plus float32 scales.

    Jittable with ``bits``/``per_channel`` static; vmaps over seeds. A float32
    :class:`SparseTensor` (a pruned kernel from :func:`memjax.compress.to_sparse`) must be
    quantized before encoding: ``to_sparse(quantize(prune(params, 0.9)[0]))``.

    Args:
      params: a flax parameter tree of float kernels.
      bits: 8, 4 or 2.
      per_channel: one scale per output channel (the kernel's last axis); else one per kernel.

    Returns:
      The tree with every kernel a :class:`QTensor`; biases stay float32.

    Raises:
      ValueError: other ``bits``, or a kernel that is already compressed.
    """
    if bits not in BITS:
        raise ValueError(f"quantize: bits must be one of {BITS}, got {bits!r}")

    def q(path, k):
        if isinstance(k, (QTensor, SparseTensor)) or hasattr(k, "decode"):
            raise ValueError(
                f"quantize: layer {'/'.join(path)!r} is already compressed "
                f"({type(k).__name__}); quantize the float parameters"
            )
        return quantize_tensor(k, bits, per_channel)

    return map_kernels(q, params, with_path=True)


def dequantize(qparams):
    """The float32 tree a quantized (or otherwise compressed) tree stands for."""
    return decompress(qparams)


__all__ = ["quantize", "quantize_tensor", "dequantize", "qmax", "BITS"]
