"""Shared test configuration.

* Hypothesis runs deterministically (derandomized, no example database, no deadline:
  the first call of a jitted function compiles) so CI results do not depend on luck.
* XLA compiles with most optimizations off (``JAX_DISABLE_MOST_OPTIMIZATIONS=1``: LLVM at
  level 0, no expensive LLVM passes; XLA's HLO passes such as fusion and buffer donation
  still run, so the tests that read compiled HLO see what users get). Compilation is most
  of this suite's time on CPU and the test programs are small: with it the suite used 26
  minutes of CPU instead of 36 (2-core machine). The subprocesses the tests start inherit
  it. ``JAX_DISABLE_MOST_OPTIMIZATIONS=0 pytest`` tests the fully optimized programs.
* The slowest files run first (``SLOWEST_FIRST``; ``--no-loadscope-reorder`` in pyproject
  keeps xdist to this order): with a file per worker at a time, a slow file taken last
  keeps one worker busy after the others have finished.
* ``tests/`` is on ``sys.path`` (pytest's default rootdir/conftest handling), so test
  modules import the NumPy references with ``import reference``; the checkout's root too,
  for ``experiments`` (the HLO copy scanner is the benchmarks').
"""

import importlib.util
import os
import sys

os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # before jax is imported

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# in case a plugin imported jax before this file set the variable
jax.config.update("jax_disable_most_optimizations",
                  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in ("1", "true"))

sys.path.insert(0, os.path.dirname(__file__))
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # experiments/ of this checkout
    sys.path.insert(0, _ROOT)

from experiments._common import hlo_copies as scan_hlo_copies  # noqa: E402

# Test files by their time on 2 CPU cores, slowest first (subprocess fixtures, then learning
# runs); the other files follow in collection order.
SLOWEST_FIRST = ["test_processes.py", "test_resume.py", "test_devices.py", "test_learning.py",
                 "test_train.py", "test_drqn.py", "test_train_storage.py",
                 "test_bench_loop_smoke.py", "test_readme.py", "test_memnet.py"]


def pytest_collection_modifyitems(items):
    """Put the files of ``SLOWEST_FIRST`` first, in its order (a stable sort: tests keep
    their order within a file)."""
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
    """Lines of compiled HLO text where a ``copy``/``copy-start`` produces one of ``shapes``
    (anywhere, fusions included): ``experiments._common.hlo_copies``, the benchmarks' scanner.

    ``shapes``: iterable of (dtype_prefix, shape) such as ("f32", (4099, 7)); they are
    matched against XLA's type strings, e.g. ``f32[4099,7]{1,0}``.
    """
    found = scan_hlo_copies(hlo_text, shapes=shapes, nested=True, ops=("copy", "copy-start"))
    return [c.line for c in found]


@pytest.fixture(scope="session")
def load_experiment():
    """``load_experiment("bench_replay")``: a fresh module from ``experiments/<name>.py``,
    loaded from its path, as a script run from the checkout would be."""

    def load(name: str):
        path = os.path.join(_ROOT, "experiments", f"{name}.py")
        spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def hlo_copies():
    """``hlo_copies(text, shapes)``: copies of big arrays in compiled HLO (see _hlo_copies)."""
    return _hlo_copies
