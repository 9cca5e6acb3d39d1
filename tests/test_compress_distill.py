"""Policy distillation on a toy problem: CartPole states visited by a small random-init
teacher; the KL loss falls and the student's greedy actions agree with the teacher's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax.compress as mjc
from memjax.agents.networks import MLPQNetwork
from memjax.envs import make as make_env


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


def test_distill_learns_the_teacher_policy():
    env, ep = make_env("CartPole-v1")
    teacher = MLPQNetwork(num_actions=2, hidden=(16,))
    student = MLPQNetwork(num_actions=2, hidden=(12,))
    keys = jax.random.split(jax.random.key(0), 2)
    t_params = jax.vmap(lambda k: teacher.init(k, jnp.zeros((1, 4))))(keys)
    cfg = mjc.DistillConfig(num_envs=8, total_steps=16_400, learning_starts=400,
                            buffer_capacity=4_000, batch_size=64, chunk_steps=4_000, lr=3e-3,
                            teacher_epsilon=0.2)
    d = mjc.make_distill(teacher, student, env, ep, cfg)
    s_params, m = mjc.run_distill(d, keys, t_params, log=None)
    loss = m["loss"]                                   # [chunks, seeds]
    assert loss.shape == (cfg.num_chunks, 2)
    assert np.all(loss[-1] < 0.75 * loss[0]) and np.all(loss[-1] < loss[1])
    # agreement on states the teacher's own greedy policy visits (not the training data)
    obs = jax.jit(jax.vmap(lambda p, k: mjc.visited_states(teacher, p, env, ep, k, 8, 100)))(
        t_params, jax.random.split(jax.random.key(5), 2))
    agreement = jax.jit(jax.vmap(lambda tp, sp, o: mjc.agreement(teacher, tp, student, sp, o)))
    agree = agreement(t_params, s_params, obs)
    init = jax.vmap(lambda k: student.init(k, jnp.zeros((1, 4))))(jax.random.split(
        jax.random.key(9), 2))
    agree0 = agreement(t_params, init, obs)
    assert np.all(np.asarray(agree) > 0.85), (agree, agree0)
    assert np.mean(agree) > np.mean(agree0) + 0.2


def test_distill_config_errors():
    with pytest.raises(ValueError, match="learning_starts"):
        mjc.DistillConfig(learning_starts=10, batch_size=128).validate()
    with pytest.raises(ValueError, match="tau must be > 0"):
        mjc.DistillConfig(tau=0.0).validate()


def test_gradual_pruning_while_distilling_one_seed_at_a_time():
    """The prune-then-recover recipe: distil a teacher into a copy of itself under the
    gradual-pruning wrapper, seeds run unbatched (vmap_seeds=False) so the mask update is a
    real cond. The result is 80% sparse and its masked weights are exact zeros."""
    import optax

    env, ep = make_env("CartPole-v1")
    net = MLPQNetwork(num_actions=2, hidden=(16,))
    keys = jax.random.split(jax.random.key(3), 2)
    t_params = jax.vmap(lambda k: net.init(k, jnp.zeros((1, 4))))(keys)
    cfg = mjc.DistillConfig(num_envs=8, total_steps=2_000, learning_starts=400,
                            buffer_capacity=1_000, batch_size=32, chunk_steps=800)
    iters = cfg.num_chunks * cfg.chunk_iters
    tx = mjc.gradual_pruning(optax.adam(1e-3), 0.8, 0, iters // 2, update_every=10)
    d = mjc.make_distill(net, net, env, ep, cfg, tx=tx)
    p, m = mjc.run_distill(d, keys, t_params, t_params, log=None, vmap_seeds=False)
    assert m["loss"].shape == (cfg.num_chunks, 2)
    for i in range(2):
        s = mjc.sparsity_of(jax.tree.map(lambda x: x[i], p))
        assert abs(s - 0.8) < 0.01, s
