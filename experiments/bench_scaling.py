"""Scaling over devices and processes: training steps/s and compile time of ``memjax train``'s
loop (``memjax.train.run``) with the seeds sharded over 1, 2, 4, 8 devices, one agent per seed
data-parallel over them, and 1 or 2 processes (``memjax train --processes``).

    python experiments/bench_scaling.py [--steps 100000] [--seeds 8] [--rounds 1]
                                        [--devices 1,2,4,8] [--quick] [--out PATH]

On CPU the devices are forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count
=N``), which share the machine's cores: the speedup is bounded by the cores, whatever the
device count (and on a 2-core machine by 2). On a GPU/TPU machine the same command uses the
real local devices (counts above ``jax.local_device_count()`` are skipped), and the
2-process rows are skipped when one device would be shared by two processes.

The device count is fixed when jax starts, so every configuration runs in a fresh
subprocess (this script with ``--one``); rounds run all configurations in turn, the order
rotated each round. Each row gives the median over rounds of ``steps_per_second`` (env steps
of all seeds per second of training, compile and evaluation excluded), ``compile_seconds``
(all AOT-compiled pieces) and the ratio to the 1-device seeds row of the same round. The
workload: CartPole-v1 defaults (10 envs per seed, buffer 10k, batch 128 on an MLP 64x64),
``--seeds`` seeds, ``--steps`` env steps per seed (data parallel: per device).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))


def _config(steps: int):
    from memjax.train import TrainConfig

    return TrainConfig(
        total_steps=steps,
        learning_starts=min(10_000, steps // 5),
        chunk_steps=max(steps // 4, 1),
        eval_episodes=2,
    )


def _one(args) -> None:
    """One configuration in this process: prints its summary's figures as JSON."""
    import jax

    from memjax.train import run

    s = run(
        _config(args.steps),
        num_seeds=args.seeds,
        progress=False,
        log=None,
        devices_per_process=args.one_devices,
        data_parallel=args.one_dp,
    )
    print(
        "RESULT "
        + json.dumps(
            {
                k: s[k]
                for k in (
                    "steps_per_second",
                    "compile_seconds",
                    "train_seconds",
                    "devices",
                    "processes",
                    "backend",
                    "device",
                )
            }
            | {"local_devices": jax.local_device_count()}
        ),
        flush=True,
    )


def _env(devices: int, backend: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if backend == "cpu":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _probe() -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import jax; print(jax.default_backend(), jax.local_device_count())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {"backend": out[0], "local_devices": int(out[1])}


def _run_case(case: dict, args, backend: str) -> dict:
    common = ["--steps", str(args.steps), "--seeds", str(args.seeds)]
    if case["processes"] == 1:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            "--one-devices",
            str(case["devices"]),
            *common,
        ] + (["--one-dp"] if case["mode"] == "data_parallel" else [])
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=_env(case["devices"], backend)
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise RuntimeError(f"{case}: {proc.stderr[-3000:]}")
        return json.loads(line[-1][len("RESULT ") :])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args.steps)
        cmd = [
            sys.executable,
            "-m",
            "memjax.cli",
            "train",
            "--processes",
            str(case["processes"]),
            "--devices",
            "1",
            "--no-progress",
            "--checkpoint-every",
            "0",
            "--out",
            tmp,
            "--steps",
            str(args.steps),
            "--seeds",
            str(args.seeds),
            "--chunk-steps",
            str(cfg.chunk_steps),
            "--learning-starts",
            str(cfg.learning_starts),
            "--eval-episodes",
            str(cfg.eval_episodes),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(1, backend))
        if proc.returncode:
            raise RuntimeError(f"{case}: {proc.stderr[-3000:]}")
        s = json.loads((Path(tmp) / "summary.json").read_text())
    return {
        k: s[k]
        for k in (
            "steps_per_second",
            "compile_seconds",
            "train_seconds",
            "devices",
            "processes",
            "backend",
            "device",
        )
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--devices", default="1,2,4,8")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2,000 steps, 2 seeds, devices 1,2, nothing saved",
    )
    p.add_argument("--out", default=None)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--one-devices", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--one-dp", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.devices = 2_000, 2, "1,2"
    if args.one:
        _one(args)
        return 0

    from experiments._common import log, machine_info, results_path, write_json

    probe = _probe()
    backend = probe["backend"]
    counts = [int(x) for x in args.devices.split(",")]
    skipped = []
    if backend != "cpu":
        skipped += [
            f"{n} devices: only {probe['local_devices']} local"
            for n in counts
            if n > probe["local_devices"]
        ]
        counts = [n for n in counts if n <= probe["local_devices"]]
    cases = [{"mode": "seeds", "devices": n, "processes": 1} for n in counts]
    cases += [{"mode": "data_parallel", "devices": n, "processes": 1} for n in counts]
    if backend == "cpu":  # each process one (host) device
        cases += [
            {"mode": "seeds", "devices": 1, "processes": n} for n in (1, 2) if args.seeds % n == 0
        ]
    else:
        skipped.append("processes: the local launcher gives every process all local devices")
    rows = {i: [] for i in range(len(cases))}
    for r in range(args.rounds):
        order = list(range(len(cases)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            found = _run_case(cases[i], args, backend)
            rows[i].append(found)
            log(
                f"round {r} {cases[i]}: {found['steps_per_second']:,.0f} steps/s, compile "
                f"{found['compile_seconds']:.1f} s"
            )
    base = statistics.median(x["steps_per_second"] for x in rows[0])
    table = []
    for i, case in enumerate(cases):
        sps = statistics.median(x["steps_per_second"] for x in rows[i])
        table.append(
            {
                **case,
                "total_devices": rows[i][0]["devices"],
                "steps_per_second": sps,
                "compile_seconds": statistics.median(x["compile_seconds"] for x in rows[i]),
                "speedup_vs_1_device": sps / base,
                "rounds": rows[i],
            }
        )
    print(
        f"\n{'mode':<14} {'devices':>7} {'processes':>9} {'steps/s':>12} {'x 1 dev':>8} "
        f"{'compile s':>10}"
    )
    for t in table:
        print(
            f"{t['mode']:<14} {t['total_devices']:>7} {t['processes']:>9} "
            f"{t['steps_per_second']:>12,.0f} {t['speedup_vs_1_device']:>8.2f} "
            f"{t['compile_seconds']:>10.1f}"
        )
    if not args.quick:
        result = {
            "backend": backend,
            "machine": machine_info(),
            "steps": args.steps,
            "seeds": args.seeds,
            "rounds": args.rounds,
            "skipped": skipped,
            "note": "CPU rows: forced host devices share the machine's cores, so the "
            "cores bound the speedup",
            "table": table,
        }
        # machine_info starts jax here: after the runs (on a GPU it would hold memory)
        write_json(result, Path(args.out) if args.out else results_path("bench_scaling"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
