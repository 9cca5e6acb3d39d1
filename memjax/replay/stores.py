"""The store (see :mod:`memjax.replay.flat`) that implements each storage layout."""

from __future__ import annotations

from memjax.replay.flat import FlatStore
from memjax.replay.layouts import OneCopy, Sequence
from memjax.replay.one_copy_store import OneCopyStore
from memjax.replay.sequence_store import SequenceStore


def make_store(capacity: int, codecs: dict, layout):
    """The store for ``layout``: None (flat), ``one_copy(...)`` or ``sequence(...)``."""
    if layout is None:
        return FlatStore(capacity, codecs)
    if isinstance(layout, OneCopy):
        return OneCopyStore(capacity, codecs, layout)
    if isinstance(layout, Sequence):
        return SequenceStore(capacity, codecs, layout)
    raise TypeError(
        f"layout must be None, memjax.replay.one_copy(...) or memjax.replay.sequence(...), "
        f"got {layout!r}"
    )
