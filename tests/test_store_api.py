"""The replay stores implement the declared storage interface (memjax.replay.store_api.Store),
and the buffers use nothing of a store that the interface does not declare."""

import re
from pathlib import Path

import pytest

import memjax as mj
from memjax.replay import encoding
from memjax.replay.evicting_store import make_policy_store
from memjax.replay.store_api import Store

REPLAY = Path(mj.replay.__file__).resolve().parent


@pytest.mark.parametrize(
    "layout, eviction",
    [
        (None, None),
        (mj.replay.one_copy(4), None),
        (mj.replay.sequence(4, length=3), None),
        (None, mj.replay.eviction.reservoir()),
        (None, mj.replay.eviction.least_recently_sampled()),
    ],
)
def test_every_store_implements_the_protocol(layout, eviction):
    store = make_policy_store(64, encoding.check_codecs(None), layout, eviction)
    assert isinstance(store, Store), type(store).__name__
    assert isinstance(store.records_sampling, bool)
    assert store.records_sampling == (eviction is not None and eviction.sampled is not None)


def test_the_buffers_use_only_declared_store_members():
    declared = {name for name in dir(Store) if not name.startswith("_")}
    declared |= set(Store.__annotations__)
    used = set()
    for module in ("uniform.py", "prioritized.py"):
        used |= set(re.findall(r"\bstore\.(\w+)", (REPLAY / module).read_text()))
    assert used and used <= declared, sorted(used - declared)
