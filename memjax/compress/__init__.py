"""Model compression of Q-networks: quantize, prune, low-rank, share, distill.

Every method is a pure function over a flax parameter tree (``{"params": {...}}``) of Dense
and Conv layers (other layers raise a ``ValueError`` naming them) and returns a tree in which
kernels are replaced by compressed pytrees (``QTensor``, ``SparseTensor``, ``LowRank``,
``Shared``); :func:`apply` runs the original flax network from such a tree and
:func:`serialize` gives the artefact's bytes:

```python
import memjax.compress as mjc
q = mjc.quantize(params, bits=8)                 # int8 weights + float32 scales
y = mjc.apply(network, q, obs)                   # runs from the integers
pruned, masks = mjc.prune(params, 0.9)           # one-shot magnitude pruning
blob = mjc.serialize(mjc.to_sparse(mjc.quantize(pruned)))   # bitmask + int8 non-zeros
lr = mjc.low_rank(params, energy=0.95)           # SVD, rank per layer
sh = mjc.share(params, k=16)                     # k-means codebook + 4-bit indices
tx = mjc.gradual_pruning(optax.adam(1e-3), 0.9, begin_step=0, end_step=10_000)
```

Distillation (:func:`make_distill_agent`, an agent of the one training loop, registered as
``memjax train --agent distill``) trains a smaller student from a teacher acting in the
gymnax environment; ``memjax compress`` (:mod:`memjax.compress.cli`) runs it all from a
checkpoint.
"""

from memjax.compress.core import (
    LowRank,
    QTensor,
    Shared,
    SparseTensor,
    apply,
    count_nonzero,
    count_params,
    decompress,
    deserialize,
    intercept,
    is_compressed,
    kernel_bytes,
    layers,
    map_kernels,
    nbytes,
    serialize,
    weight_bytes,
)
from memjax.compress.distill import (
    DistillConfig,
    DistillState,
    distill_loss,
    distill_train_config,
    make_distill_agent,
    run_distill,
    with_teacher,
)
from memjax.compress.evaluate import agreement, evaluate, visited_states
from memjax.compress.low_rank import choose_ranks, factor, low_rank, rank_for_energy
from memjax.compress.prune import (
    PruningState,
    cubic_schedule,
    gradual_pruning,
    keep_masks,
    layer_sparsities,
    prune,
    sparse_tensor,
    sparsity_of,
    to_sparse,
)
from memjax.compress.quantize import dequantize, quantize, quantize_tensor
from memjax.compress.share import kmeans_1d, share

__all__ = [
    "QTensor",
    "SparseTensor",
    "LowRank",
    "Shared",
    "quantize",
    "quantize_tensor",
    "dequantize",
    "prune",
    "layer_sparsities",
    "cubic_schedule",
    "gradual_pruning",
    "keep_masks",
    "PruningState",
    "to_sparse",
    "sparse_tensor",
    "sparsity_of",
    "low_rank",
    "factor",
    "choose_ranks",
    "rank_for_energy",
    "share",
    "kmeans_1d",
    "DistillConfig",
    "DistillState",
    "make_distill_agent",
    "distill_train_config",
    "distill_loss",
    "run_distill",
    "with_teacher",
    "evaluate",
    "visited_states",
    "agreement",
    "apply",
    "intercept",
    "decompress",
    "layers",
    "map_kernels",
    "serialize",
    "deserialize",
    "nbytes",
    "weight_bytes",
    "kernel_bytes",
    "count_params",
    "count_nonzero",
    "is_compressed",
]
