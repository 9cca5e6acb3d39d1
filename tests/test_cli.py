"""`memjax train` command line: error paths and one tiny real run."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from memjax import _argtypes as types
from memjax import cli
from memjax.train import TrainConfig, make_train


def _fails(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--env", "Nope-v0"], "unknown environment 'Nope-v0'"),
        (["train", "--env", "Pendulum-v1"], "the agents need discrete actions"),
        (["train", "--seeds", "0"], "--seeds: must be a positive integer"),
        (["train", "--steps", "-5"], "--steps: must be a positive integer"),
        (["train", "--capacity", "0"], "--capacity: must be a positive integer"),
        (
            ["train", "--capacity", "100"],
            "batch_size (128) is larger than the buffer capacity (100)",
        ),
        (["train", "--batch-size", "20000"], "larger than the buffer capacity"),
        (["train", "--replay", "lifo"], "invalid choice: 'lifo'"),
        (["train", "--memory-budget", "lots"], "expected a size like 64MB"),
        (["train", "--memory-budget", "1KB"], "too small"),
        (["train", "--network", "conv"], "needs image observations"),
        (["train", "--capacity", "10", "--memory-budget", "1MB"], "not allowed with argument"),
        (["train", "--obs-codec", "int3"], "obs_codec must be one of"),
        (["train", "--layout", "two_copies"], "invalid choice: 'two_copies'"),
        (["train", "--layout", "one_copy", "--capacity", "10001"], "multiple of num_envs"),
        (["train", "--frame-stack", "0"], "--frame-stack: must be a positive integer"),
        (
            ["train", "--env", "Breakout-MinAtar", "--obs-codec", "kmeans1"],
            "k must be an int in [2",
        ),
        (["train", "--agent", "ppo"], "invalid choice: 'ppo'"),
        (["train", "--n-step", "0"], "--n-step: must be a positive integer"),
        (["train", "--n-step", "3", "--frame-stack", "2"], "does not support frame_stack > 1"),
        (["train", "--n-step", "3", "--capacity", "10005"], "multiple of num_envs"),
    ],
)
def test_invalid_options(capsys, argv, message):
    _fails(capsys, argv, message)


def test_size_parsing():
    assert types.parse_size("64MB") == 64_000_000
    assert types.parse_size("1GiB") == 2**30
    assert types.parse_size("1.5k") == 1500
    assert types.count("5e5") == 500_000 and types.count("10_000") == 10_000


def test_console_error_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "memjax.cli", "train", "--env", "Nope-v0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 2
    assert "unknown environment 'Nope-v0'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_tiny_train_run(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(
        [
            "train",
            "--steps",
            "1200",
            "--seeds",
            "2",
            "--num-envs",
            "4",
            "--capacity",
            "400",
            "--batch-size",
            "16",
            "--learning-starts",
            "400",
            "--chunk-steps",
            "400",
            "--eval-episodes",
            "2",
            "--hidden",
            "16",
            "--replay",
            "prioritized",
            "--n-step",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 2 and summary["steps"] == 1200
    assert summary["replay"] == "prioritized" and summary["buffer_capacity"] == 400
    assert summary["agent"] == "dqn" and summary["n_step"] == 2
    assert summary["replay_storage"]["layout"] == "sequence"
    assert summary["config"]["n_step"] == 2 and summary["config"]["agent"]["hidden"] == [16]
    again = _parsed_config(["--config", str(out / "summary.json")])
    # the summary records the storage chosen for the environment (no "auto" left)
    assert (
        again
        == make_train(
            _parsed_config(
                [
                    "--steps",
                    "1200",
                    "--num-envs",
                    "4",
                    "--capacity",
                    "400",
                    "--batch-size",
                    "16",
                    "--learning-starts",
                    "400",
                    "--chunk-steps",
                    "400",
                    "--eval-episodes",
                    "2",
                    "--hidden",
                    "16",
                    "--replay",
                    "prioritized",
                    "--n-step",
                    "2",
                ]
            )
        ).config
    )
    assert (out / "curve.png").exists() and (out / "returns.csv").exists()
    printed = capsys.readouterr().out
    assert "final greedy return" in printed
    # the default exploration schedule (2.5e5 steps) is longer than this run: said before it
    assert "memjax: warning: epsilon decays over 250,000 env steps but the run has 1,200" in printed


def test_bench_is_not_a_command(capsys):
    """The benchmarks are scripts of a source checkout (``python experiments/...``), not part
    of the installed package."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench"])
    assert exc.value.code == 2 and "invalid choice: 'bench'" in capsys.readouterr().err


def test_tiny_train_run_with_memory_budget_and_codecs(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(
        [
            "train",
            "--steps",
            "1200",
            "--seeds",
            "2",
            "--num-envs",
            "4",
            "--memory-budget",
            "4KB",
            "--batch-size",
            "16",
            "--learning-starts",
            "400",
            "--chunk-steps",
            "400",
            "--eval-episodes",
            "2",
            "--hidden",
            "16",
            "--obs-codec",
            "int8",
            "--layout",
            "one_copy",
            "--compact-fields",
            "--calibration-steps",
            "200",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    storage = summary["replay_storage"]
    assert storage["obs_codec"] == "int8" and storage["layout"] == "one_copy"
    assert summary["buffer_bytes_per_seed"] <= 4000
    assert summary["buffer_capacity"] % 4 == 0 and summary["buffer_capacity"] > 4000 / 44
    sizes = storage["size_after_each_chunk"]  # warm-up + 2 chunks, 2 seeds
    assert len(sizes) == 3 and all(len(row) == 2 for row in sizes)
    assert sizes[0] == [min(400, summary["buffer_capacity"])] * 2  # 400 warm-up steps
    assert max(map(max, sizes)) <= summary["buffer_capacity"]
    printed = capsys.readouterr().out
    assert "replay memory: capacity" in printed and "stored B/item" in printed


# ----------------------------------------------------------------------- every setting reachable


def _parsed_config(argv):
    from memjax.cli_config import config_from_args

    return config_from_args(cli.build_parser().parse_args(["train", *argv]))


def test_every_trainconfig_field_has_an_option_with_its_comment_as_help():
    import dataclasses

    from memjax.cli_config import field_docs, option_name

    subcommands = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    train = subcommands.choices["train"]
    options = {opt: action for action in train._actions for opt in action.option_strings}
    docs = field_docs()
    for field in dataclasses.fields(TrainConfig):
        if field.name == "agent_config":  # the agent's knobs are options of their own
            continue
        action = options[option_name(field.name)]
        assert action.dest == field.name
        assert docs[field.name][1] and docs[field.name][1] in action.help, field.name
    assert (
        option_name("total_steps") == "--steps" and option_name("buffer_capacity") == "--capacity"
    )
    assert "added to |TD|" in options["--priority-eps"].help


def test_options_set_every_field():
    argv = [
        "--env",
        "Breakout-MinAtar",
        "--steps",
        "5e5",
        "--capacity",
        "2000",
        "--beta-end",
        "0.9",
        "--priority-eps",
        "1e-4",
        "--calibration-margin",
        "0.2",
        "--adam-eps",
        "1e-5",
        "--huber-delta",
        "2",
        "--eval-epsilon",
        "0.05",
        "--eval-max-steps",
        "300",
        "--hidden",
        "32,16",
        "--double-dqn",
        "--max-grad-norm",
        "0",
        "--lr-end",
        "none",
        "--compact-fields",
        "--layout",
        "one_copy",
    ]
    cfg = _parsed_config(argv)
    assert (cfg.env, cfg.total_steps, cfg.buffer_capacity) == ("Breakout-MinAtar", 500_000, 2000)
    assert (cfg.beta_end, cfg.priority_eps, cfg.calibration_margin) == (0.9, 1e-4, 0.2)
    assert (cfg.adam_eps, cfg.agent_config.huber_delta, cfg.eval_epsilon) == (1e-5, 2.0, 0.05)
    assert cfg.eval_max_steps == 300 and cfg.agent_config.hidden == (32, 16)
    assert cfg.agent_config.double_dqn
    assert cfg.max_grad_norm is None and cfg.lr_end is None and cfg.compact_fields
    assert _parsed_config([]) == TrainConfig()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_then_command_line(tmp_path, suffix):
    values = {
        "num_envs": 4,
        "lr": 0.001,
        "hidden": [16],
        "replay": "prioritized",
        "eval_max_steps": 200,
    }
    path = tmp_path / f"run{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        import yaml

        path.write_text(yaml.safe_dump(values))
    cfg = _parsed_config(["--config", str(path), "--lr", "0.002"])
    assert (cfg.num_envs, cfg.agent_config.hidden, cfg.replay, cfg.eval_max_steps) == (
        4,
        (16,),
        "prioritized",
        200,
    )
    assert cfg.lr == 0.002  # the command line wins


def test_config_file_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_envs": 4, "learning_rate": 1e-3}))
    _fails(capsys, ["train", "--config", str(bad)], "unknown settings ['learning_rate']")
    broken = tmp_path / "broken.yaml"
    broken.write_text("num_envs: [4\n")
    _fails(capsys, ["train", "--config", str(broken)], "cannot parse it")
    _fails(capsys, ["train", "--config", str(tmp_path / "none.json")], "No such file")
    _fails(capsys, ["train", "--eval-max-steps", "0"], "--eval-max-steps: must be a positive")


# ----------------------------------------------------------------------- rough edges (issue 26)

TINY_RUN = [
    "--steps",
    "1200",
    "--seeds",
    "1",
    "--num-envs",
    "4",
    "--capacity",
    "400",
    "--batch-size",
    "16",
    "--learning-starts",
    "400",
    "--chunk-steps",
    "400",
    "--eval-episodes",
    "2",
    "--hidden",
    "16",
    "--no-progress",
]


def _one_line_error(capsys, argv, message):
    err = _fails(capsys, argv, message)
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_unwritable_out_is_one_error_line_before_compiling(tmp_path, capsys, monkeypatch):
    from memjax import train as mj_train

    monkeypatch.setattr(mj_train, "run", lambda *a, **k: pytest.fail("ran the training"))
    afile = tmp_path / "afile"
    afile.write_text("")
    _one_line_error(
        capsys,
        ["train", *TINY_RUN, "--out", str(afile / "sub")],
        f"memjax train: error: --out {afile / 'sub'}: cannot write the run there",
    )
    _one_line_error(
        capsys, ["train", *TINY_RUN, "--out", str(afile)], "it exists and is not a directory"
    )
    if os.path.isdir("/proc/self"):
        _one_line_error(
            capsys,
            ["train", *TINY_RUN, "--out", "/proc/x"],
            "--out /proc/x: cannot write the run there",
        )
    assert capsys.readouterr().out == ""  # not even the run's header line


def test_device_budget_needs_plan_and_train_errors_name_memjax_train(capsys):
    err = _fails(capsys, ["train", "--device-budget", "1GB"], "it needs --plan")
    assert err.startswith("usage: memjax train ") and "memjax train: error: " in err
    err = _fails(capsys, ["train", "--env", "Nope-v0"], "memjax train: error: unknown environment")
    assert err.startswith("usage: memjax train ")
    assert len(err.strip().splitlines()) == 2, err  # a short usage line, then the error
    _fails(capsys, ["train", "--restart-if-unreadable"], "goes with --resume DIR")


def test_plan_names_the_capacity_per_seed(capsys):
    assert cli.main(["train", "--plan", "--seeds", "2", "--device-budget", "1MB"]) == 0
    out = capsys.readouterr().out
    assert "largest replay capacity per seed (--capacity)" in out
    assert "within the budget per device" not in out


def test_resume_of_a_finished_run_says_it_is_complete(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert cli.main(["train", *TINY_RUN, "--checkpoint-every", "400", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_return"] == 500.0 and "chance_return" not in summary  # CartPole
    printed = capsys.readouterr().out
    assert "best 500" in printed.split("final greedy return")[1].splitlines()[0]
    from memjax import train as mj_train

    monkeypatch.setattr(mj_train, "run", lambda *a, **k: pytest.fail("trained again"))
    assert cli.main(["train", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines() == [
        (
            f"memjax train --resume {out}: the run is complete (1,200 of 1,200 steps); its "
            f"results are in {out}, nothing to resume"
        )
    ]


def test_ctrl_c_writes_the_results_so_far_and_the_resume_command(tmp_path):
    """SIGINT after the first checkpoint (chunk): exit 130, the checkpoints kept, the results
    so far written and marked interrupted, and the command that continues the run."""
    out = tmp_path / "run"
    # 200 chunks of 2000 steps: still running when the signal comes after the first
    args = [
        "train",
        "--steps",
        "400400",
        "--seeds",
        "1",
        "--num-envs",
        "4",
        "--capacity",
        "1000",
        "--batch-size",
        "16",
        "--learning-starts",
        "400",
        "--chunk-steps",
        "2000",
        "--eval-episodes",
        "2",
        "--hidden",
        "16",
        "--checkpoint-every",
        "2000",
        "--no-progress",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "memjax.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if (out / "checkpoints").is_dir() and any(
                p.name.isdigit() for p in (out / "checkpoints").iterdir()
            ):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    # the signal came while chunks ran: the run stopped after the chunk and its checkpoint
    assert "stopping after this chunk and its checkpoint" in stderr, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["steps"] == 400_400
    assert 2_000 <= summary["steps_done"] < 400_400
    assert len(summary["final_return_per_seed"]) == 1
    assert (out / "returns.csv").is_file() and (out / "curve.png").is_file()
    assert f"memjax train: interrupted at step {summary['steps_done']:,} of 400,400" in stderr
    assert f"memjax train --resume {out}" in stderr
    assert any(p.name.isdigit() for p in (out / "checkpoints").iterdir())
