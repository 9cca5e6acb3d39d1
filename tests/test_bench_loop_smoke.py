"""Smoke tests of experiments/bench_loop.py and experiments/flashbax_adapter.py."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flashbax", reason="flashbax (the benchmark peer) is not installed")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments import bench_loop as bench  # noqa: E402
from experiments import flashbax_adapter as fa  # noqa: E402

EXAMPLE = {
    "obs": jnp.zeros((4,), jnp.float32),
    "action": jnp.zeros((), jnp.int32),
    "reward": jnp.zeros((), jnp.float32),
    "next_obs": jnp.zeros((4,), jnp.float32),
    "terminated": jnp.zeros((), jnp.float32),
}


def _steps(n, rows=2, start=0):
    """n vector steps of ``rows`` transitions; reward = global step number."""
    out = []
    for t in range(start, start + n):
        r = jnp.full((rows,), float(t))
        out.append(
            {
                "obs": jnp.tile(r[:, None], (1, 4)),
                "action": jnp.zeros((rows,), jnp.int32),
                "reward": r,
                "next_obs": jnp.tile(r[:, None] + 1, (1, 4)),
                "terminated": jnp.zeros((rows,), jnp.float32),
            }
        )
    return out


@pytest.mark.parametrize("kind", ["uniform", "prioritised"])
def test_adapter_contract(kind):
    buf = (
        fa.flat_uniform(16, 2, 4) if kind == "uniform" else fa.flat_prioritised(16, 2, 4, alpha=0.6)
    )
    state = buf.init(EXAMPLE)
    for items in _steps(5):
        state = jax.jit(buf.add)(state, items)
    assert bool(buf.can_sample(state, 4))
    s = jax.jit(buf.sample, static_argnums=2)(state, jax.random.key(0), 4)
    assert s.items["obs"].shape == (4, 4) and s.items["reward"].shape == (4,)
    # items are whole stored transitions: next_obs = obs + 1 for every draw
    np.testing.assert_array_equal(s.items["next_obs"], s.items["obs"] + 1)
    assert s.weights.shape == (4,) and bool(jnp.all(jnp.isfinite(s.weights)))
    assert float(jnp.max(s.weights)) == pytest.approx(1.0)
    state2 = jax.jit(buf.update)(state, s.indices, jnp.ones((4,), jnp.float32))
    assert jax.tree.structure(state2) == jax.tree.structure(state)
    mem = buf.memory(state)
    assert mem.capacity == 16 and mem.bytes_per_item >= 11 * 4
    with pytest.raises(ValueError, match="batch size"):
        buf.sample(state, jax.random.key(0), 8)


def test_prioritised_state_types_are_stable():
    """flashbax starts max_recorded_priority weak-typed; the adapter must not, or a jitted
    host loop recompiles its chunk on the second call."""
    buf = fa.flat_prioritised(16, 2, 4)
    state = buf.init(EXAMPLE)
    after = buf.update(
        jax.jit(buf.add)(state, _steps(1)[0]), jnp.zeros((4,), jnp.int32), jnp.ones((4,))
    )
    types = lambda t: [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(t)]  # noqa: E731
    assert types(state) == types(after)


def _drifted_state(buf):
    """Items in leaves 0, 1 (row 0) and 8, 9 (row 1); the root then inflated 2x, as float32
    delta propagation can leave it: a descent past the true total ends on zero leaves."""
    state = buf.init(EXAMPLE)
    add = jax.jit(buf.add)
    for items in _steps(3):
        state = add(state, items)
    tree = state.sum_tree_state
    return state.replace(sum_tree_state=tree.replace(nodes=tree.nodes.at[0].multiply(2.0)))


def test_guard_drops_zero_probability_draws():
    buf = fa.flat_prioritised(16, 2, 16, guard="drop")
    state = _drifted_state(buf)
    s = jax.jit(buf.sample, static_argnums=2)(state, jax.random.key(1), 16)
    zero = np.asarray(s.probabilities) == 0
    assert zero.any() and not zero.all()  # the drift is real: some draws hit zero leaves
    w = np.asarray(s.weights)
    assert np.isfinite(w).all() and (w[zero] == 0).all() and (w[~zero] > 0).all()
    assert (np.asarray(s.indices)[zero] < 0).all() and (np.asarray(s.indices)[~zero] >= 0).all()
    after = jax.jit(buf.update)(state, s.indices, jnp.full((16,), 5.0))
    from flashbax.buffers import sum_tree

    dropped = -1 - np.asarray(s.indices)[zero]
    assert (np.asarray(sum_tree.get_batch(after.sum_tree_state, dropped)) == 0).all()


def test_no_guard_reproduces_the_failure():
    buf = fa.flat_prioritised(16, 2, 16, guard="none")
    s = buf.sample(_drifted_state(buf), jax.random.key(1), 16)
    assert not np.isfinite(np.asarray(s.weights)).all()


def test_floor_buffer():
    buf = bench.floor_buffer(4)
    state = buf.init(EXAMPLE)
    state = state.replace(items=jax.tree.map(lambda x: x + 1, state.items))
    assert buf.add(state, _steps(1)[0]) is state
    s = buf.sample(state, jax.random.key(0), 4)
    assert float(jnp.sum(s.items["reward"])) == 4.0 and bool(jnp.all(s.weights == 1))


def test_gather_floor_buffer_draws_rows_uniformly():
    """The gather floor returns the stored rows it names, drawn uniformly (chi-square over 8
    rows, 4,000 draws, fixed key) with weights one; add is a no-op."""
    buf = bench.gather_floor_buffer(8, 4_000)
    state = buf.init(EXAMPLE)
    rows = jnp.arange(8, dtype=jnp.float32)
    state = state.replace(items=dict(state.items, reward=rows, obs=jnp.tile(rows[:, None], (1, 4))))
    assert buf.add(state, _steps(1)[0]) is state
    s = jax.jit(buf.sample, static_argnums=2)(state, jax.random.key(3), 4_000)
    np.testing.assert_array_equal(s.items["reward"], np.asarray(s.indices, np.float32))
    np.testing.assert_array_equal(s.items["obs"][:, 0], s.items["reward"])
    assert bool(jnp.all(s.weights == 1))
    counts = np.bincount(np.asarray(s.indices), minlength=8)
    chi2 = float(((counts - 500.0) ** 2 / 500.0).sum())
    assert chi2 < 24.3, counts  # 7 degrees of freedom, p = 0.001
    with pytest.raises(ValueError, match="asked 5"):
        buf.sample(state, jax.random.key(0), 5)


def test_smallest_run_writes_json(tmp_path, capsys):
    """The same loop on memjax's and flashbax's uniform buffers, 1 seed, one round of one
    short chunk (the two compiles dominate: about 10 s)."""
    out = tmp_path / "loop.json"
    rc = bench.main(
        [
            "--quick",
            "--rounds",
            "1",
            "--chunk-steps",
            "100",
            "--out",
            str(out),
            "--sides",
            "ours_uniform,fbx_uniform",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "uniform, cap 10k" in printed and "targets" in printed
    doc = json.loads(out.read_text())
    for key in ("machine", "settings", "notes", "targets", "results"):
        assert key in doc, key
    r = doc["results"]["1"]
    assert set(r["programs"]) == {"ours_uniform", "fbx_uniform"}
    for side in ("ours_uniform", "fbx_uniform"):
        p = r["programs"][side]
        assert p["steps_per_s"] > 0 and p["compile_s"] > 0 and p["donation_ok"] is True
        assert p["hlo"]["kernels"] > 0 and p["buffer_bytes_per_transition"] >= 44
    assert r["ratios"]["fbx_uniform_over_ours"] > 0
    t = doc["targets"]["1"]
    assert "uniform_vs_flashbax_ge_1.1" in t and "compile_ours_uniform_le_fbx_uniform" in t
    assert "uniform_loop_over_floor_le_1.1" not in t  # no floor side in this run


def test_bad_arguments_are_usage_errors(capsys):
    for argv in (["--seeds", "0"], ["--rounds", "0"], ["--big-capacity", "5"]):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2


def test_agent_loop_matches_the_loop_before_agent_specs():
    """experiments/bench_agent_loop.py: this checkout's loop computes what the loop of the
    commit before agent specs computed (prioritized replay: bit-identical parameters after one
    chunk; the uniform draw has changed since, one Threefry evaluation per draw), imported
    beside it from git, and its timing row is complete (1 seed, one round of one short
    chunk)."""
    from experiments import bench_agent_loop
    from experiments.revision import import_revision

    try:
        before = import_revision(bench_agent_loop.BEFORE)
    except ValueError as e:  # a checkout without that history (e.g. an sdist)
        pytest.skip(str(e))
    opts = dict(chunk_steps=100, rounds=1, round_seconds=0.01)
    row = bench_agent_loop.bench_replay_kind("prioritized", 1, opts, lambda line: None, before)
    assert row["same_computation"]["identical"], row["same_computation"]
    assert set(row["steps_per_s"]) == {"agent", "before"}
    assert row["time_ratio_agent_over_before"] > 0
    assert "| prioritized | 1 |" in bench_agent_loop.markdown([row])
