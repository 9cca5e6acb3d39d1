"""Populations: sweeps and population-based training as lanes of one program
(memjax.train.population, run(sweep=, pbt_every=), memjax train --sweep / --pbt-every)."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax import cli
from memjax.train import population as pop
from memjax.train.loop import TrainState

TINY = dict(
    num_envs=4,
    total_steps=1_600,
    learning_starts=200,
    eps_decay_steps=800,
    chunk_steps=200,
    buffer_capacity=1_000,
    batch_size=32,
    eval_episodes=2,
    eval_max_steps=60,
    hidden=(32,),
)


def tiny(**values) -> mj.train.TrainConfig:
    return mj.train.TrainConfig().replace(**{**TINY, **values})


# --------------------------------------------------------------------------- bad input


def test_parse_sweep_reads_a_grid_and_names_bad_items():
    assert pop.parse_sweep(["lr=1e-4, 3e-4", "gamma=0.9"]) == {"lr": [1e-4, 3e-4], "gamma": [0.9]}
    for items, words in (
        (["lr"], "give NAME=V1,V2"),
        (["lr="], "lr has no values"),
        (["lr=1e-4,fast"], "'fast' is not a number"),
        (["lr=1", "lr=2"], "swept twice"),
    ):
        with pytest.raises(ValueError, match=words) as e:
            pop.parse_sweep(items)
        assert "\n" not in str(e.value) and "--sweep" in str(e.value)


@pytest.mark.parametrize(
    "sweep, words",
    [
        ({"lrate": [1e-3]}, "--sweep lrate: unknown setting 'lrate'"),
        ({"n_step": [1, 3]}, "--sweep n_step: cannot be swept: it sets array shapes"),
        ({"capacity": [100, 200]}, "--sweep buffer_capacity: cannot be swept: it sets array"),
        ({"hidden": [8, 16]}, "--sweep hidden: cannot be swept: it is a tuple knob of agent 'dqn'"),
        ({"replay": [1, 2]}, "--sweep replay: cannot be swept: not a number"),
        ({"lr": []}, "--sweep lr: give a non-empty list of numbers"),
        ({"lr": ["fast"]}, "--sweep lr: 'fast' is not a number"),
        ({"lr": [float("nan")]}, "--sweep lr: nan is not a finite number"),
        ({"gamma": [0.9, 1.5]}, "the member gamma=1.5 is not a valid config: gamma must be"),
        ({"max_grad_norm": [1.0]}, "--sweep max_grad_norm: cannot be swept: it is off"),
        ({"burn_in": [1, 2]}, "--sweep burn_in: burn_in is a setting of agent 'drqn'"),
    ],
)
def test_check_sweep_refuses_with_one_line_naming_the_setting(sweep, words):
    with pytest.raises(ValueError) as e:
        pop.check_sweep(tiny(), sweep)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_knob_used_as_a_python_constant_is_refused_by_tracing():
    # memnet checks eta in Python when it builds the agent: a traced value cannot be swept
    cfg = mj.train.TrainConfig(agent="memnet").replace(
        total_steps=400, learning_starts=200, num_envs=4, buffer_capacity=400, batch_size=8
    )
    trainer = mj.train.make_train(cfg)
    with pytest.raises(ValueError, match="--sweep eta: cannot be swept: agent 'memnet' uses it"):
        pop.check_traceable(trainer, pop.make_population(cfg, {"eta": [0.5, 0.9]}, 1))
    pop.check_traceable(  # dqn's huber_delta is traced fine
        mj.train.make_train(tiny()), pop.make_population(tiny(), {"huber_delta": [1.0, 2.0]}, 1)
    )


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--sweep", "lrate=1e-3"], "--sweep lrate: unknown setting 'lrate'"),
        (["--sweep", "n-step=1,3"], "--sweep n_step: cannot be swept"),
        (["--sweep", "lr="], "--sweep lr=: lr has no values"),
        (["--sweep", "lr=1e-3,x"], "'x' is not a number"),
        (["--pbt-every", "1000"], "--pbt-every needs --sweep"),
        (["--sweep", "lr=1e-3", "--pbt-explore", "resample"], "--pbt-explore goes with"),
    ],
)
def test_cli_bad_population_options_exit_2_writing_nothing(argv, words, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--out", str(out), "--steps", "20000", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1], err
    assert err[-1].startswith("memjax train: error:")
    assert not out.exists()


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"pbt_every": 400}, "--pbt-every needs --sweep"),
        ({"sweep": {"n_step": [1, 2]}}, "--sweep n_step: cannot be swept"),
        ({"sweep": {"lr": [1e-3]}, "data_parallel": True}, "--data-parallel is not supported"),
        ({"sweep": {"lr": [1e-3]}, "pbt_every": 0}, "--pbt-every must be a positive integer"),
        ({"sweep": {"lr": [1e-3]}, "pbt_explore": "mutate"}, "--pbt-explore must be one of"),
        ({"sweep": {"lr": [1e-3]}, "pbt_copy_buffer": True}, "--pbt-copy-buffer goes with"),
    ],
)
def test_run_refuses_bad_populations_before_writing_anything(kw, words, tmp_path):
    with pytest.raises(ValueError, match=words):
        mj.train.run(tiny(), num_seeds=1, out_dir=tmp_path / "run", progress=False, **kw)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- exploit, explore


def _population_state(members, seeds, names=("lr",)):
    """A synthetic PopulationState whose leaves say which lane they came from."""
    lanes = members * seeds
    lane = jnp.arange(lanes, dtype=jnp.float32)
    train = TrainState(
        agent={"params": lane[:, None] * jnp.ones(3), "opt": lane + 0.5},
        buffer={"items": lane[:, None] * 10 + jnp.arange(2)},
        env_state=lane,
        obs=lane[:, None] + jnp.zeros(4),
        carry=(),
        first=jnp.zeros((lanes, 2), bool),
        key=jax.random.split(jax.random.key(0), lanes),
        step=jnp.full((lanes,), 7, jnp.int32),
        ep_return=lane,
    )
    return pop.PopulationState(
        train=train,
        hparams={n: (lane + 1) * 1e-4 for n in names},
        return_sum=jnp.zeros(lanes),
        episodes=jnp.ones(lanes, jnp.int32),
    )


@pytest.mark.parametrize("copy_buffer", [False, True])
def test_exploit_copies_exactly_the_top_quarter_within_each_seed(copy_buffer):
    members, seeds = 8, 3
    population = pop.Population({"lr": tuple(np.linspace(1e-4, 8e-4, 8))}, seeds, 1000)
    population = pop.Population(
        population.sweep, seeds, 1000, explore="perturb", copy_buffer=copy_buffer
    )
    state = _population_state(members, seeds)
    rng = np.random.default_rng(0)
    scores = rng.permutation(members * seeds).astype(np.float32)  # distinct recent returns
    state = state.replace(return_sum=jnp.asarray(scores) * 2, episodes=jnp.full(24, 2, jnp.int32))
    new, parents = jax.jit(lambda s, k: pop.exploit_explore(population, s, k))(
        state, jax.random.key(3)
    )
    parents = np.asarray(parents).reshape(members, seeds)
    by_seed = scores.reshape(members, seeds)
    for s in range(seeds):
        order = np.argsort(by_seed[:, s])
        bottom, top = set(order[:2]), set(order[-2:])  # a quarter of 8
        for m in range(members):
            lane, parent = m * seeds + s, parents[m, s]
            src = parent * seeds + s  # always the same seed's member
            if m in bottom:
                assert parent in top
            else:
                assert parent == m
            np.testing.assert_array_equal(new.train.agent["params"][lane], float(src))
            np.testing.assert_array_equal(new.train.agent["opt"][lane], src + 0.5)
            buffer_from = src if copy_buffer else lane
            np.testing.assert_array_equal(
                new.train.buffer["items"][lane], [buffer_from * 10, buffer_from * 10 + 1]
            )
            assert float(new.train.env_state[lane]) == lane  # environments stay the lane's own
            assert float(new.train.obs[lane, 0]) == lane
            lr, parent_lr = float(new.hparams["lr"][lane]), (src + 1) * 1e-4
            if m in bottom:
                assert lr == pytest.approx(parent_lr * 0.8, rel=1e-6) or lr == pytest.approx(
                    parent_lr * 1.25, rel=1e-6
                )
            else:
                assert lr == pytest.approx((lane + 1) * 1e-4, rel=1e-7)
    assert not np.asarray(new.return_sum).any() and not np.asarray(new.episodes).any()
    np.testing.assert_array_equal(
        jax.random.key_data(new.train.key), jax.random.key_data(state.train.key)
    )


def test_explore_resample_draws_from_the_swept_values_and_clips_perturbations():
    values = (1e-4, 3e-4, 1e-3, 3e-3)
    population = pop.Population({"lr": values, "gamma": (0.9, 0.99)}, 2, 100, "resample")
    state = _population_state(8, 2, names=("lr", "gamma"))
    state = state.replace(
        hparams={"lr": state.hparams["lr"], "gamma": jnp.full(16, 0.95)},
        return_sum=jnp.arange(16.0),
    )
    new, parents = pop.exploit_explore(population, state, jax.random.key(1))
    copied = np.asarray(parents) != np.repeat(np.arange(8), 2)
    assert copied.sum() == 4  # a quarter of 8 members, in each of 2 seeds
    assert set(np.asarray(new.hparams["lr"])[copied].tolist()) <= set(np.float32(values).tolist())
    assert set(np.asarray(new.hparams["gamma"])[copied].tolist()) <= {
        np.float32(0.9),
        np.float32(0.99),
    }
    # perturbing gamma 0.95 by 1.25 is clipped to its range [0, 1]
    population = pop.Population({"gamma": tuple(np.linspace(0.9, 0.99, 8))}, 2, 100)
    gammas = []
    for k in range(8):
        new, parents = pop.exploit_explore(population, state, jax.random.key(k))
        gammas += np.asarray(new.hparams["gamma"])[
            np.asarray(parents) != np.repeat(np.arange(8), 2)
        ].tolist()
    assert {round(g, 5) for g in gammas} == {0.76, 1.0}


def test_no_episodes_rank_last_and_two_members_exploit_one():
    population = pop.Population({"lr": (1e-4, 1e-3)}, 1, 100)
    state = _population_state(2, 1).replace(
        return_sum=jnp.asarray([-50.0, 0.0]), episodes=jnp.asarray([1, 0], jnp.int32)
    )
    _, parents = pop.exploit_explore(population, state, jax.random.key(0))
    assert np.asarray(parents).tolist() == [0, 0]  # member 1 finished nothing: it copies 0


def test_lineage_reads_parents_and_the_values_after_each_exploit():
    population = pop.Population({"lr": (1.0, 2.0)}, 2, 10)
    curves = {  # lanes: (m0 s0, m0 s1, m1 s0, m1 s1)
        "steps": [10, 20, 30],
        "pbt_parent": np.array([[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1]]),
        "hp_lr": np.array([[1, 1, 2, 2], [1, 1, 2, 2], [1, 1, 0.8, 2]], np.float32),
    }
    history = pop.lineage(population, curves)
    assert history[0] == [[], []] and history[1][1] == []
    assert history[1][0] == [{"step": 20, "copied_from": 0, "values": {"lr": pytest.approx(0.8)}}]


# --------------------------------------------------------------------------- whole runs


def _single_runs(cfg, values, seeds):
    return [
        mj.train.run(cfg.replace(**v), num_seeds=seeds, progress=False, log=None) for v in values
    ]


def test_a_member_trains_as_a_single_run_with_its_values():
    cfg = tiny(tau=0.5)
    sweep = {"lr": [3e-4, 2e-3], "tau": [0.5, 1.0]}
    summary = mj.train.run(cfg, num_seeds=2, sweep=sweep, progress=False, log=None)
    members = [{"lr": lr, "tau": tau} for lr in sweep["lr"] for tau in sweep["tau"]]
    assert [{k: m[k] for k in ("lr", "tau")} for m in summary["members"]] == members
    singles = _single_runs(cfg, [members[1], members[2]], 2)  # tau=1 and tau=0.5 ones
    for member, single in zip((1, 2), singles, strict=True):
        lanes = slice(member * 2, member * 2 + 2)
        np.testing.assert_allclose(
            summary["curves"]["eval_return"][:, lanes], single["curves"]["eval_return"]
        )
        np.testing.assert_allclose(
            summary["curves"]["loss"][:, lanes], single["curves"]["loss"], rtol=1e-4
        )
        for a, b in zip(
            jax.tree.leaves(summary["params"]), jax.tree.leaves(single["params"]), strict=True
        ):
            np.testing.assert_allclose(np.asarray(a)[lanes], b, rtol=1e-5, atol=1e-6)
        assert (
            summary["members"][member]["final_return_per_seed"] == single["final_return_per_seed"]
        )


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cli_pbt_run_writes_members_lineage_and_resumes_bit_exactly(tmp_path, capsys):
    out = tmp_path / "pbt"
    argv = ["train", "--out", str(out), "--seeds", "2", "--no-progress"]
    names = {"total_steps": "steps", "buffer_capacity": "capacity"}
    for k, v in TINY.items():
        shown = ",".join(map(str, v)) if isinstance(v, tuple) else v
        argv.append(f"--{names.get(k, k).replace('_', '-')}={shown}")
    argv += ["--sweep", "lr=1e-4,3e-4,1e-3,3e-3", "--pbt-every", "400", "--checkpoint-every", "200"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "memjax train: CartPole-v1, 4 members x 2 seeds" in printed
    summary = json.loads((out / "summary.json").read_text())
    best = summary["members"][summary["best_member"]]
    assert f"best member: {best['member']} of 4 (started lr=" in printed
    assert summary["seeds"] == 2 and len(summary["members"]) == 4
    assert summary["final_return_per_seed"] == best["final_return_per_seed"]
    rows = _csv(out / "returns.csv")
    assert list(rows[0]) == ["step", "member", "seed", "eval_return", "train_return", "lr"]
    assert {(r["member"], r["seed"]) for r in rows} == {
        (str(m), str(s)) for m in range(4) for s in range(2)
    }
    curves = json.loads((out / "returns.json").read_text())
    parents = np.asarray(curves["pbt_parent"]).astype(int)  # [points, lanes]
    hp = np.asarray(curves["hp_lr"], np.float64)
    own = np.repeat(np.arange(4), 2)
    exploited = np.flatnonzero((parents != own).any(axis=1))
    assert len(exploited) >= 2  # steps 600, 1000, 1400: chunk ends past multiples of 400
    for i in range(len(curves["steps"]) - 1):
        for lane in range(8):
            src = parents[i, lane] * 2 + lane % 2  # a copier takes its parent's value, explored
            if parents[i, lane] == own[lane]:
                assert hp[i + 1, lane] == hp[i, lane]
            else:
                ratio = hp[i + 1, lane] / hp[i, src]
                assert ratio == pytest.approx(0.8, rel=1e-5) or ratio == pytest.approx(
                    1.25, rel=1e-5
                )
    for m, member in enumerate(summary["members"]):
        for s in range(2):
            assert member["lr"][s] == pytest.approx(hp[-1, m * 2 + s], rel=1e-7)
            events = member["lineage"][s]
            rows_i = [i for i in range(len(curves["steps"]) - 1) if parents[i, m * 2 + s] != m]
            assert [e["step"] for e in events] == [curves["steps"][i] for i in rows_i]
    # resume: drop the last checkpoint and the results, continue, compare bytes
    again = tmp_path / "again"
    shutil.copytree(out, again)
    steps = sorted(int(p.name) for p in (again / "checkpoints").iterdir() if p.name.isdigit())
    shutil.rmtree(again / "checkpoints" / str(steps[-1]))
    for name in ("summary.json", "returns.csv", "returns.json"):
        (again / name).unlink()
    assert cli.main(["train", "--resume", str(again), "--no-progress"]) == 0
    assert f"resuming {again} from step {steps[-2]:,}" in capsys.readouterr().out
    for name in ("returns.csv", "returns.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    with pytest.raises(SystemExit):
        cli.main(["train", "--resume", str(again), "--sweep", "lr=1,2"])
    assert "--sweep and --pbt-* (the run keeps its own population)" in capsys.readouterr().err


# --------------------------------------------------------------------------- devices


def _sharded_main(out: Path) -> None:
    cfg = tiny(total_steps=1_000)
    result = {}
    for devices in (1, 8):
        s = mj.train.run(
            cfg,
            num_seeds=2,
            sweep={"lr": [1e-4, 3e-4, 1e-3, 3e-3]},
            pbt_every=400,
            progress=False,
            log=None,
            devices_per_process=devices,
        )
        result[devices] = {
            "devices": s["devices"],
            "eval": np.asarray(s["curves"]["eval_return"]).tolist(),
            "parents": np.asarray(s["curves"]["pbt_parent"]).tolist(),
            "hp": np.asarray(s["curves"]["hp_lr"]).tolist(),
            "params": [np.asarray(x).tolist() for x in jax.tree.leaves(s["params"])],
        }
    (out / "sharded.json").write_text(json.dumps(result))


def test_members_x_seeds_shard_over_8_devices_as_on_one(tmp_path):
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads((tmp_path / "sharded.json").read_text())
    one, eight = r["1"], r["8"]
    assert (one["devices"], eight["devices"]) == (1, 8)
    assert one["eval"] == eight["eval"] and one["parents"] == eight["parents"]
    assert one["hp"] == eight["hp"]
    for a, b in zip(one["params"], eight["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


if __name__ == "__main__":
    _sharded_main(Path(sys.argv[1]))
