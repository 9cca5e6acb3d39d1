"""Policy distillation as an agent of the one loop: the loss against a NumPy reference, a
student that learns a random-init teacher's policy on CartPole, gradual pruning while
distilling, and ``memjax train --agent distill --teacher RUN``."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax.compress as mjc
from memjax import cli
from memjax.agents.networks import MLPQNetwork
from memjax.envs import make as make_env
from memjax.train import make_optimizer, make_train, params_file


def test_distill_loss_reference():
    qt = jnp.array([[1.0, 1.02, 0.5], [0.0, -1.0, 0.3]])
    qs = jnp.array([[0.2, 0.1, 0.0], [1.0, 0.0, -1.0]])
    tau = 0.01
    p = np.exp(np.asarray(qt) / tau - np.max(np.asarray(qt) / tau, 1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    logq = np.asarray(qs) - np.log(np.exp(np.asarray(qs)).sum(1, keepdims=True))
    ref = np.mean(np.sum(p * (np.log(np.maximum(p, 1e-30)) - logq), 1))
    np.testing.assert_allclose(float(mjc.distill_loss(qs, qt, tau)), ref, rtol=1e-5)
    assert float(mjc.distill_loss(qt / tau, qt, tau)) < 1e-6


def _trainer(teacher, student, config, optimizer=None):
    env, ep = make_env(config.env)
    optimizer = make_optimizer(config) if optimizer is None else optimizer
    agent = mjc.make_distill_agent(
        teacher,
        student,
        optimizer,
        tau=config.agent_config.temperature,
        teacher_epsilon=config.agent_config.teacher_epsilon,
    )
    return make_train(config, env=env, env_params=ep, agent=agent), optimizer


def test_distill_learns_the_teacher_policy():
    env, ep = make_env("CartPole-v1")
    teacher = MLPQNetwork(num_actions=2, hidden=(16,))
    student = MLPQNetwork(num_actions=2, hidden=(12,))
    keys = jax.random.split(jax.random.key(0), 2)
    t_params = jax.vmap(lambda k: teacher.init(k, jnp.zeros((1, 4))))(keys)
    config = mjc.distill_train_config(
        mjc.DistillConfig(teacher_epsilon=0.2),
        num_envs=8,
        total_steps=16_400,
        learning_starts=400,
        buffer_capacity=4_000,
        batch_size=64,
        chunk_steps=4_000,
        lr=3e-3,
    )
    trainer, _ = _trainer(teacher, student, config)
    s_params, m = mjc.run_distill(trainer, keys, t_params, log=None)
    loss = m["loss"]  # [chunks, seeds]
    assert loss.shape == (config.num_chunks + (config.remainder_iters > 0), 2)
    assert np.all(loss[-1] < 0.75 * loss[0]) and np.all(loss[-1] < loss[1])
    # agreement on states the teacher's own greedy policy visits (not the training data)
    obs = jax.jit(jax.vmap(lambda p, k: mjc.visited_states(teacher, p, env, ep, k, 8, 100)))(
        t_params, jax.random.split(jax.random.key(5), 2)
    )
    agreement = jax.jit(jax.vmap(lambda tp, sp, o: mjc.agreement(teacher, tp, student, sp, o)))
    agree = agreement(t_params, s_params, obs)
    init = jax.vmap(lambda k: student.init(k, jnp.zeros((1, 4))))(
        jax.random.split(jax.random.key(9), 2)
    )
    agree0 = agreement(t_params, init, obs)
    assert np.all(np.asarray(agree) > 0.85), (agree, agree0)
    assert np.mean(agree) > np.mean(agree0) + 0.2


def test_distill_config_errors():
    with pytest.raises(ValueError, match="learning_starts"):
        mjc.distill_train_config(learning_starts=10, batch_size=128).validate()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        mjc.distill_train_config(mjc.DistillConfig(temperature=0.0)).validate()
    with pytest.raises(ValueError, match="teacher_epsilon must be in"):
        mjc.DistillConfig(teacher_epsilon=2.0).check()
    with pytest.raises(ValueError, match="needs a teacher: --teacher RUN_DIR"):
        make_train(mjc.distill_train_config())


def test_gradual_pruning_while_distilling_one_seed_at_a_time():
    """The prune-then-recover recipe: distil a teacher into a copy of itself under the
    gradual-pruning wrapper, seeds run unbatched (vmap_seeds=False) so the mask update is a
    real cond. The result is 80% sparse and its masked weights are exact zeros."""
    import optax

    net = MLPQNetwork(num_actions=2, hidden=(16,))
    keys = jax.random.split(jax.random.key(3), 2)
    t_params = jax.vmap(lambda k: net.init(k, jnp.zeros((1, 4))))(keys)
    config = mjc.distill_train_config(
        num_envs=8,
        total_steps=2_000,
        learning_starts=400,
        buffer_capacity=1_000,
        batch_size=32,
        chunk_steps=800,
    )
    iters = config.total_updates
    tx = mjc.gradual_pruning(optax.adam(1e-3), 0.8, 0, iters // 2, update_every=10)
    trainer, _ = _trainer(net, net, config, optimizer=tx)
    p, m = mjc.run_distill(
        trainer, keys, t_params, t_params, optimizer=tx, log=None, vmap_seeds=False
    )
    assert m["loss"].shape[1] == 2
    for i in range(2):
        s = mjc.sparsity_of(jax.tree.map(lambda x: x[i], p))
        assert abs(s - 0.8) < 0.01, s


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A run directory with a random-init 2-seed MLP teacher on CartPole."""
    from memjax.agents import DQNConfig
    from memjax.train import TrainConfig

    d = tmp_path_factory.mktemp("teacher")
    net = MLPQNetwork(num_actions=2, hidden=(16,))
    params = jax.vmap(lambda k: net.init(k, jnp.zeros((1, 4))))(
        jax.random.split(jax.random.key(0), 2)
    )
    params_file.save(d, TrainConfig(agent=DQNConfig(hidden=(16,))), params)
    return d


def test_memjax_train_distils_a_teacher_run(teacher_run, tmp_path, capsys):
    out = tmp_path / "student"
    assert (
        cli.main(
            [
                "train",
                "--agent",
                "distill",
                "--teacher",
                str(teacher_run),
                "--teacher-seed",
                "1",
                "--hidden",
                "8",
                "--steps",
                "2400",
                "--num-envs",
                "4",
                "--capacity",
                "800",
                "--learning-starts",
                "400",
                "--batch-size",
                "32",
                "--chunk-steps",
                "800",
                "--eval-episodes",
                "2",
                "--seeds",
                "2",
                "--no-progress",
                "--checkpoint-every",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agent"] == "distill"
    assert summary["config"]["agent"]["teacher"] == str(teacher_run)
    student = params_file.load(out)
    assert student.network() == MLPQNetwork(num_actions=2, hidden=(8,))
    # the learner's metrics per evaluation point: the KL falls, the batch agreement rises
    curves = json.loads((out / "returns.json").read_text())
    loss, agree = np.asarray(curves["loss"][1:]), np.asarray(curves["agreement"][1:])
    assert np.all(loss[-1] < loss[0]) and np.all(agree[-1] > 0.7), (loss, agree)
    capsys.readouterr()
    for argv, words in [
        (["--teacher", str(tmp_path / "none")], "no checkpoint at"),
        (["--teacher", str(teacher_run), "--env", "Acrobot-v1"], "trained on CartPole-v1"),
        (["--teacher", str(teacher_run), "--teacher-seed", "5"], "teacher_seed (5)"),
    ]:
        with pytest.raises(SystemExit) as exc:
            cli.main(["train", "--agent", "distill", *argv, "--plan"])
        assert exc.value.code == 2
        assert words in capsys.readouterr().err
