"""Shared test configuration.

* Hypothesis runs deterministically (derandomized, no example database, no deadline:
  the first call of a jitted function compiles) so CI results do not depend on luck.
* ``tests/`` is on ``sys.path`` (pytest's default rootdir/conftest handling), so test
  modules import the NumPy references with ``import reference``.
"""

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile(
    "memjax",
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "memjax"))


def _hlo_copies(hlo_text: str, shapes) -> list:
    """Lines of compiled HLO text where a ``copy``/``copy-start`` produces one of ``shapes``.

    ``shapes``: iterable of (dtype_prefix, shape) such as ("f32", (4099, 7)); they are
    matched against XLA's type strings, e.g. ``f32[4099,7]{1,0}``.
    """
    wanted = [f"{dt}[{','.join(str(d) for d in shape)}]" for dt, shape in shapes]
    hits = []
    for line in hlo_text.splitlines():
        for op in (" copy(", " copy-start("):
            if op in line and "=" in line:
                result_type = line.split("=", 1)[1].split(op, 1)[0]
                if any(w in result_type for w in wanted):
                    hits.append(line.strip())
    return hits


@pytest.fixture(scope="session")
def hlo_copies():
    """``hlo_copies(text, shapes)``: copies of big arrays in compiled HLO (see _hlo_copies)."""
    return _hlo_copies
