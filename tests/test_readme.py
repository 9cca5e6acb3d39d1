"""The Python examples of README.md and of the docs pages (docs/*.md) run as written.

The blocks are found by tests/doc_blocks.py. The own-loop DQN example runs in
tests/test_dropin.py, with assertions on what it learns; a block marked
``<!-- not-tested: reason -->`` is not run.
"""

import pytest

import doc_blocks

ALL_BLOCKS = doc_blocks.all_blocks()
BLOCKS = [b for b in ALL_BLOCKS if b.reason is None and doc_blocks.OWN_LOOP not in b.code]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"{b.path}:{b.index}")
def test_python_block_runs(block):
    exec(compile(block.code, f"{block.path} python block {block.index}", "exec"), {})


def test_readme_has_its_examples():
    readme = [b for b in BLOCKS if b.path == "README.md"]
    assert len(readme) >= 3, readme


def test_every_python_fence_is_found():
    """No ```python block escapes the tests through a layout the finder does not read (an
    indented fence, a marker not right above its block)."""
    for path in doc_blocks.pages():
        text = path.read_text()
        found = doc_blocks.python_blocks(path)
        assert text.count("```python") == len(found), path
        assert text.count(doc_blocks.NOT_TESTED) == sum(b.reason is not None for b in found), (
            f"{path}: a not-tested marker must be on the line right above a ```python fence"
        )


def test_untested_blocks_are_rare_and_say_why():
    untested = [b for b in ALL_BLOCKS if b.reason is not None]
    assert all(b.reason.strip() for b in untested), untested
    assert len(untested) <= 3, [(b.path, b.index, b.reason) for b in untested]


def test_the_own_loop_example_is_there_for_test_dropin():
    assert sum(doc_blocks.OWN_LOOP in b.code for b in ALL_BLOCKS) == 1
