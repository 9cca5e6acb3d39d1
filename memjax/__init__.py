"""memjax: memory-efficient replay buffers and a fused training loop for any agent in JAX.

import memjax as mj
buf = mj.replay.prioritized(capacity=2**20, alpha=0.6)
"""

import importlib

from memjax import replay, sumtree

__version__ = "0.1.0"

_LAZY = ("agents", "envs", "train", "cli", "codecs", "compress", "export")


def __getattr__(name):
    # The training stack imports flax/optax/gymnax; load it only when asked for.
    if name in _LAZY:
        return importlib.import_module(f"memjax.{name}")
    raise AttributeError(f"module 'memjax' has no attribute {name!r}")


__all__ = ["replay", "sumtree", "__version__", *_LAZY]
