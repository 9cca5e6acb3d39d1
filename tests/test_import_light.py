"""``import memjax`` and ``import memjax.replay`` (buffers, codecs, sum-tree) load jax and
numpy but not the training stack: no gymnax, orbax, matplotlib, tqdm, flax or optax, and
none of memjax's own training modules. Checked in a fresh interpreter, since this test
process has imported everything already."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("gymnax", "orbax", "matplotlib", "tqdm", "flax", "optax")
TRAINING = ("memjax.agents", "memjax.train", "memjax.envs", "memjax.cli", "memjax.compress")


def loaded_after(statement: str) -> set:
    """The top-level packages and memjax modules in sys.modules after ``statement``."""
    code = (
        f"import json, sys; {statement}; "
        "print(json.dumps(sorted(m for m in sys.modules if '.' not in m "
        "or m.startswith('memjax.'))))"
    )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    "statement",
    [
        "import memjax",
        "import memjax.replay, memjax.codecs, memjax.sumtree",
        "import memjax as mj; mj.replay.uniform(16); mj.codecs.bitpack()",
    ],
)
def test_replay_does_not_import_the_training_stack(statement):
    modules = loaded_after(statement)
    assert "memjax.replay" in modules and "jax" in modules
    heavy = sorted(m for m in modules if m in HEAVY)
    training = sorted(m for m in modules if m.startswith(TRAINING))
    assert not heavy and not training, (heavy, training)
