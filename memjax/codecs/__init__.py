"""Per-field storage codecs for replay buffers.

A codec is a bundle of pure functions, like an optax transform (see :class:`Codec`):

```
state = codec.init(example)             # example: ONE item, no batch axis
stored, state = codec.encode(x, state)  # x: [*B, *item_shape] -> stored [*B, ...]
x_hat = codec.decode(stored, state)     # stored rows of any gathered sample
```

All three work under ``jax.jit``, ``jax.vmap`` over a leading seed axis (on both
the state and the data) and ``jax.lax.scan``. Codecs:

```
identity()                      stored as is
bitpack()                       0/1 data, 8 values per byte, lossless
quantize(bits, low, high, data) uniform 8/4/2-bit, |x - x_hat| <= (high-low)/(2(L-1))
kmeans(k, data, per)            non-uniform: per-feature 1-D or per-vector codebooks
cast(dtype)                     float16/bfloat16 or small integers
chain(*codecs)                  encode left to right, decode right to left
```

:func:`stored_spec` gives the stored item (``jax.ShapeDtypeStruct``, no batch axis) for
allocation; :func:`counters` the clipped/invalid totals.

Example (runnable)::

    import jax, jax.numpy as jnp, numpy as np
    import memjax.codecs as mc

    obs = jnp.zeros((10, 10, 4), jnp.float32)           # one MinAtar observation
    codec = mc.bitpack()
    print(mc.stored_spec(codec, obs))                     # uint8[50]: 32x smaller
    state = codec.init(obs)
    x = jnp.asarray(np.random.rand(8, 10, 10, 4) > 0.5, jnp.float32)
    stored, state = jax.jit(codec.encode)(x, state)       # uint8 [8, 50]
    assert (codec.decode(stored, state) == x).all()

    q = mc.quantize(bits=4, low=-1.0, high=1.0)           # 2 values per byte
    qs = q.init(jnp.zeros((4,), jnp.float32))
    stored, qs = q.encode(jnp.array([[-2.0, -0.5, 0.1, 1.0]]), qs)   # uint8 [1, 2]
    print(q.decode(stored, qs), mc.counters(qs))          # clipped: 1 (the -2.0)
"""

from memjax.codecs.base import (
    Codec,
    IdentityState,
    chain,
    counters,
    identity,
    pack_codes,
    stored_spec,
    unpack_codes,
)
from memjax.codecs.bitpack import BitpackState, bitpack
from memjax.codecs.cast import CastState, cast
from memjax.codecs.kmeans import KMeansState, distortion, fit_codebooks_1d, fit_kmeans, kmeans
from memjax.codecs.quantize import QuantizeState, fit_range, quantize

__all__ = [
    "Codec",
    "identity",
    "bitpack",
    "quantize",
    "cast",
    "kmeans",
    "chain",
    "counters",
    "stored_spec",
    "fit_range",
    "fit_kmeans",
    "fit_codebooks_1d",
    "distortion",
    "pack_codes",
    "unpack_codes",
    "IdentityState",
    "BitpackState",
    "QuantizeState",
    "CastState",
    "KMeansState",
]
