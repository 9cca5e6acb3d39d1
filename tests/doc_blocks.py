"""The ```python blocks of README.md and of the pages under docs/, which the tests execute.

A block that cannot run in the tests (it needs an accelerator, or runs for hours) is marked
by an HTML comment on the line before its fence, which the rendered page does not show:

    <!-- not-tested: needs a GPU -->
    ```python
    ...
    ```

Keep such blocks rare: tests/test_readme.py allows few and requires a reason.
"""

import re
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# The own-loop DQN example (docs/replay.md) runs in tests/test_dropin.py, with assertions on
# what it learns; this string is how both tests recognise it.
OWN_LOOP = "jax.vmap(make_train())"

NOT_TESTED = "<!-- not-tested:"
_BLOCK = re.compile(
    r"^(?:<!-- not-tested: (?P<reason>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```", re.S | re.M
)


class Block(NamedTuple):
    path: str  # relative to the repository root
    index: int  # the block's position among the file's python blocks
    code: str
    reason: str | None  # why it is not tested; None: it is


def pages() -> list:
    """README.md and every Markdown page under docs/."""
    return [README, *sorted(p for p in DOCS.rglob("*.md") if "_ext" not in p.parts)]


def python_blocks(path: Path) -> list:
    text = path.read_text()
    name = path.relative_to(ROOT).as_posix()
    return [Block(name, i, m["code"], m["reason"]) for i, m in enumerate(_BLOCK.finditer(text))]


def all_blocks() -> list:
    return [block for path in pages() for block in python_blocks(path)]
