"""The store (see :mod:`memjax.replay.flat`) that implements each storage layout."""

from __future__ import annotations

from memjax.replay.flat import FlatStore
from memjax.replay.layouts import OneCopy
from memjax.replay.one_copy_store import OneCopyStore


def make_store(capacity: int, codecs: dict, layout):
    """The store for ``layout``: None (flat) or ``memjax.replay.one_copy(...)``."""
    if layout is None:
        return FlatStore(capacity, codecs)
    if isinstance(layout, OneCopy):
        return OneCopyStore(capacity, codecs, layout)
    raise TypeError(f"layout must be None or memjax.replay.one_copy(...), got {layout!r}")
