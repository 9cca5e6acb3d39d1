"""`memjax compress`: error paths (exit 2, one line, no traceback), spec parsing, and one tiny
real run from a checkpoint of untrained parameters."""

import json

import jax
import jax.numpy as jnp
import pytest

from memjax import cli
from memjax.agents import DQNConfig
from memjax.agents.networks import MLPQNetwork
from memjax.compress import pipeline
from memjax.train import TrainConfig, params_file


def _fails(capsys, argv, message, one_line=True):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    if one_line:
        assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    cfg = TrainConfig(agent=DQNConfig(hidden=(64,)))
    net = MLPQNetwork(num_actions=2, hidden=(64,))
    params = jax.vmap(lambda k: net.init(k, jnp.zeros((1, 4))))(
        jax.random.split(jax.random.key(0), 2)
    )
    params_file.save(d, cfg, params)
    return d


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--method", "int3"], "unknown compression method 'int3'"),
        (["--method", "prune:1.5"], "sparsity must be in [0.0, 0.999]"),
        (["--method", "int8+prune:0.5"], "stages must go training"),
        (["--method", "prune:0.9+int4"], "sparse storage holds float32 or int8"),
        (["--method", "share:16+int8"], "not supported"),
        (["--method", "prune:0.5:bogus"], "pruning distribution must be one of"),
        (["--method", "distill:"], "give the student's hidden widths"),
        (["--episodes", "0"], "--episodes: must be a positive integer"),
        (["--seeds", "5"], "seed 5 out of range"),
    ],
)
def test_invalid_options(capsys, ckpt, extra, message):
    _fails(capsys, ["compress", str(ckpt), *extra], message)


def test_unknown_option(capsys, ckpt):
    # reported by the top-level `memjax` parser (usage line + error), as for `memjax train`
    _fails(
        capsys,
        ["compress", str(ckpt), "--bogus"],
        "unrecognized arguments: --bogus",
        one_line=False,
    )


def test_missing_checkpoint(capsys, tmp_path):
    _fails(capsys, ["compress", str(tmp_path / "nope")], "no checkpoint at")


def test_spec_parsing():
    st = pipeline.parse_spec("distill:32,32+prune:0.9:erk+int8")
    assert [s.kind for s in st] == ["distill", "prune", "quantize"]
    assert st[0].arg == ("mlp", (32, 32)) and st[1].arg == 0.9 and st[1].extra == "erk"
    assert pipeline.parse_spec("distill:8/32")[0].arg == ("conv", 8, 32)
    assert pipeline.parse_spec("lowrank:r4")[0].arg == 4
    assert pipeline.parse_spec("int4:tensor")[0].extra is False


def test_tiny_run(capsys, ckpt, tmp_path):
    out = tmp_path / "out"
    rc = cli.main(
        ["compress", str(ckpt), "--method", "prune:0.5+int8", "--episodes", "3", "--out", str(out)]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| float32 |" in printed and "| prune:0.5+int8 |" in printed
    doc = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"float32", "prune:0.5+int8"}
    assert rows["float32"]["agreement"] == 1.0
    assert rows["prune:0.5+int8"]["serialized_bytes"] < rows["float32"]["serialized_bytes"]
    assert (out / "prune_0.5+int8" / "seed1.msgpack").is_file()


def test_untrained_teacher_gets_one_warning_line(capsys, ckpt):
    assert cli.main(["compress", str(ckpt), "--method", "int8", "--episodes", "3"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 1, captured.err
    assert warnings[0].startswith("memjax compress: warning: the checkpoint's own return")
    assert "no better than a uniformly random policy's" in warnings[0]
    assert "| int8 |" in captured.out


def test_teacher_at_chance_compares_with_the_random_policy():
    random = [10.0, 30.0, 20.0, 25.0]
    assert pipeline.teacher_vs_random([9.0, 9.0, 10.0, 9.0], random)["at_chance"]
    assert pipeline.teacher_vs_random([24.0, 26.0, 20.0, 30.0], random)["at_chance"]
    verdict = pipeline.teacher_vs_random([500.0] * 4, random)
    assert not verdict["at_chance"] and verdict["random_return"] == 21.25


def test_help_shows_each_default_once_without_markup(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["compress", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "(default: None)" not in out
    options = out.split("options:")[1]
    method = options.split("--method SPEC")[1].split("--episodes")[0]
    assert method.count("(default:") == 1
    assert options.split("--seeds SEEDS")[1].split("--distill-steps")[0].count("(default") == 1
    assert "(default: 100)" in options and "examples:\n  memjax compress runs/cartpole" in out
