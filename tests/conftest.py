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


@pytest.fixture(scope="session")
def rng_seed():
    """One fixed seed for NumPy data in tests that want it."""
    return 20240601
