"""The memory table's cell runner (experiments/memory_table.py): cells run a few at a time,
the ones still running at the deadline get SIGINT and resume on the next call, done cells
are skipped. ``memjax train`` is replaced by a stand-in that behaves as it does on those
paths (writes checkpoints/run.json at its start, an interrupted summary on SIGINT, the
whole results at its end)."""

import json
import sys
import time

from experiments import memory_table

FAKE_TRAIN = r"""
import json, signal, sys, time
from pathlib import Path
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1] if "--out" in args else args[args.index("--resume") + 1])
with open(out / "calls.txt", "a") as f:
    f.write(" ".join(args[:2]) + "\n")
(out / "checkpoints").mkdir(exist_ok=True)
(out / "checkpoints" / "run.json").write_text("{}")
seconds = float((out.parent.parent / "seconds.json").read_text())
def stop(*_):
    (out / "summary.json").write_text(json.dumps({"interrupted": True}))
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
time.sleep(seconds)
(out / "summary.json").write_text(json.dumps({"final_return_per_seed": [1.0]}))
(out / "returns.json").write_text(json.dumps({"steps": [1], "eval_return": [[1.0]]}))
"""


def test_cells_stop_at_the_deadline_and_resume_on_the_next_call(tmp_path, monkeypatch):
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    monkeypatch.setattr(memory_table, "TRAIN", [sys.executable, str(fake)])
    root = tmp_path / "table"
    root.mkdir()
    cells = [("dqn", "RepeatFirst"), ("drqn", "RepeatFirst"), ("dqn", "CountRecall")]
    # first call: 2 at a time, each would take 30 s; stopped at 3 s -> two partial, one new
    (root / "seconds.json").write_text("30")
    t0 = time.monotonic()
    memory_table.run_cells(cells, 1, root, jobs=2, deadline=3)
    assert time.monotonic() - t0 < 20
    status = {c: memory_table.cell_status(root / c[0] / c[1]) for c in cells}
    assert status == {cells[0]: "partial", cells[1]: "partial", cells[2]: "new"}
    calls = (root / "dqn" / "RepeatFirst" / "calls.txt").read_text().split("\n")
    assert calls[0] == "--env RepeatFirst"
    # second call: the partial cells resume, the new one runs; all finish
    (root / "seconds.json").write_text("0.1")
    memory_table.run_cells(cells, 1, root, jobs=2, deadline=60)
    assert {memory_table.cell_status(root / a / t) for a, t in cells} == {"done"}
    calls = (root / "dqn" / "RepeatFirst" / "calls.txt").read_text().split()
    assert calls == ["--env", "RepeatFirst", "--resume", str(root / "dqn" / "RepeatFirst")]
    assert (root / "dqn" / "CountRecall" / "calls.txt").read_text() == "--env CountRecall\n"
    # a third call skips done cells; the report reads them
    memory_table.run_cells(cells, 1, root, jobs=2)
    assert (root / "dqn" / "RepeatFirst" / "calls.txt").read_text().count("\n") == 2
    assert memory_table.load_cell(root / "dqn" / "RepeatFirst")["steps"] == [1]
    assert json.loads((root / "dqn" / "RepeatFirst" / "summary.json").read_text())
