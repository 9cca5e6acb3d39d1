"""Policy distillation (Rusu et al., 2016): train a smaller student Q-network to match a
teacher's policy, on states the teacher visits in the gymnax environment.

The loss is ``KL(softmax(q_teacher / tau) || softmax(q_student))`` averaged over a batch,
``tau = 0.01`` by default (a sharpened teacher, as in the paper). Everything runs in one fused
program, like :mod:`memjax.train`: the teacher acts epsilon-greedily in ``num_envs`` vectorised
environments, its observations go into a ``memjax.replay.uniform`` buffer, and every
``train_every`` vector steps the student takes one optimizer step on a sampled batch (the
teacher's Q-values are recomputed on the batch, so the buffer stores observations only).
All functions are pure and vmap over seeds (one teacher per seed):

```python
d = make_distill(teacher_net, student_net, env, env_params, DistillConfig())
state = jax.vmap(d.init)(keys, teacher_params)             # or student_params=...
state, metrics = jax.jit(jax.vmap(d.train_chunks))(state)  # all chunks
```

``tx`` may be any optax transformation, e.g. :func:`memjax.compress.gradual_pruning` to prune
a copy of the teacher while distilling into it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from memjax.train.config import StepSchedule


@dataclasses.dataclass(frozen=True)
class DistillConfig(StepSchedule):
    """The settings of a distillation run.

    Step counts are environment steps (vector steps x ``num_envs``) per seed; the schedule
    properties come from ``memjax.train.config.StepSchedule`` (distillation runs the
    ``num_chunks`` whole chunks and drops the remainder). ``validate()`` raises ``ValueError`` for
    bad settings.
    """

    tau: float = 0.01                 # teacher temperature
    num_envs: int = 10
    total_steps: int = 200_000
    learning_starts: int = 5_000      # env steps of teacher data before the first update
    buffer_capacity: int = 50_000
    batch_size: int = 128
    train_every: int = 1              # vector steps per update
    lr: float = 1e-3
    lr_end: Optional[float] = 0.0     # linear decay to lr_end; None: constant
    teacher_epsilon: float = 0.05     # exploration of the acting teacher (state coverage)
    chunk_steps: int = 20_000         # env steps per compiled chunk

    def validate(self) -> "DistillConfig":
        for name in ("num_envs", "total_steps", "buffer_capacity", "batch_size", "train_every",
                     "chunk_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"distill: {name} must be a positive integer, got {v!r}")
        if not self.tau > 0:
            raise ValueError(f"distill: tau must be > 0, got {self.tau!r}")
        if not self.lr > 0:
            raise ValueError(f"distill: lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.teacher_epsilon <= 1.0:
            raise ValueError(f"distill: teacher_epsilon must be in [0, 1], got "
                             f"{self.teacher_epsilon!r}")
        if self.batch_size > self.buffer_capacity:
            raise ValueError(f"distill: batch_size ({self.batch_size}) exceeds "
                             f"buffer_capacity ({self.buffer_capacity})")
        self.check_schedule("distill: ")
        return self


def distill_loss(student_q, teacher_q, tau: float = 0.01):
    """The distillation loss ``mean_b KL(softmax(teacher_q / tau) || softmax(student_q))``.

    Args:
      student_q: float32 ``[B, A]``.
      teacher_q: float32 ``[B, A]``.
      tau: the teacher's temperature.

    Returns:
      float32 scalar.
    """
    p = jax.nn.softmax(teacher_q / tau, axis=-1)
    log_p = jax.nn.log_softmax(teacher_q / tau, axis=-1)
    log_q = jax.nn.log_softmax(student_q, axis=-1)
    return jnp.mean(jnp.sum(p * (log_p - log_q), axis=-1))


@struct.dataclass
class DistillState:
    params: Any          # student
    teacher: Any         # teacher params (not trained)
    opt_state: Any
    buffer: Any
    env_state: Any
    obs: Any
    key: jax.Array
    step: jax.Array      # vector steps
    updates: jax.Array


@dataclasses.dataclass(frozen=True, eq=False)
class Distiller:
    """The pure pieces of a distillation run, from :func:`make_distill`."""

    config: DistillConfig
    teacher_network: nn.Module
    student_network: nn.Module
    optimizer: optax.GradientTransformation
    init: Callable          # (key, teacher_params, student_params=None) -> DistillState
    collect: Callable       # warm-up: state -> state
    chunk: Callable         # state -> (state, {"loss", "agreement"})
    train_chunks: Callable  # state -> (state, metrics [num_chunks])   (after collect)
    train: Callable         # (key, teacher_params, student_params=None) -> (state, metrics)


def make_distill(teacher_network: nn.Module, student_network: nn.Module, env, env_params,
                 config: DistillConfig = DistillConfig(),
                 tx: Optional[optax.GradientTransformation] = None) -> Distiller:
    """The pure pieces of a distillation run (see the module docstring).

    Args:
      teacher_network: the teacher's flax module.
      student_network: the student's flax module.
      env: a gymnax environment.
      env_params: its parameters.
      config: the run's :class:`DistillConfig` (validated here).
      tx: the student's optimizer; default Adam at ``config.lr``, linearly decayed to
        ``config.lr_end``.

    Returns:
      A :class:`Distiller`.
    """
    from memjax import replay
    from memjax.agents import epsilon_greedy

    config.validate()
    n = config.num_envs
    if tx is None:
        lr = config.lr if config.lr_end is None else optax.linear_schedule(
            config.lr, config.lr_end, max(config.train_iters, 1))
        tx = optax.adam(lr)
    buffer = replay.uniform(capacity=config.buffer_capacity)
    obs0, _ = jax.eval_shape(lambda k: env.reset(k, env_params), jax.random.key(0))
    example = {"obs": jnp.zeros(obs0.shape, obs0.dtype)}
    vreset = jax.vmap(env.reset, in_axes=(0, None))
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def init(key, teacher_params, student_params=None):
        k_net, k_env, k_run = jax.random.split(key, 3)
        obs, env_state = vreset(jax.random.split(k_env, n), env_params)
        if student_params is None:
            student_params = student_network.init(k_net, obs)
        return DistillState(params=student_params, teacher=teacher_params,
                            opt_state=tx.init(student_params), buffer=buffer.init(example),
                            env_state=env_state, obs=obs, key=k_run,
                            step=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32))

    def env_step(state: DistillState) -> DistillState:
        key, k_act, k_env = jax.random.split(state.key, 3)
        q = teacher_network.apply(state.teacher, state.obs)
        actions = epsilon_greedy(k_act, q, config.teacher_epsilon)
        obs, env_state, _, _, _, _ = vstep(jax.random.split(k_env, n), state.env_state,
                                           actions, env_params)
        return state.replace(buffer=buffer.add(state.buffer, {"obs": state.obs}),
                             env_state=env_state, obs=obs, key=key, step=state.step + 1)

    def loss_fn(params, teacher, obs):
        q_s = student_network.apply(params, obs)
        q_t = jax.lax.stop_gradient(teacher_network.apply(teacher, obs))
        agree = jnp.mean(jnp.argmax(q_s, -1) == jnp.argmax(q_t, -1))
        return distill_loss(q_s, q_t, config.tau), agree

    def learn(state: DistillState):
        key, k_s = jax.random.split(state.key)
        batch = buffer.sample(state.buffer, k_s, config.batch_size).items["obs"]
        (loss, agree), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.teacher, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state, key=key,
                             updates=state.updates + 1), (loss, agree)

    def collect(state):
        return jax.lax.scan(lambda s, _: (env_step(s), None), state, None,
                            length=config.warmup_vec_steps)[0]

    def _iter(state, _):
        for _i in range(config.train_every):
            state = env_step(state)
        return learn(state)

    def chunk(state):
        state, (loss, agree) = jax.lax.scan(_iter, state, None, length=config.chunk_iters)
        return state, {"loss": jnp.mean(loss), "agreement": jnp.mean(agree),
                       "loss_first": loss[0], "loss_last": loss[-1]}

    def train_chunks(state):
        return jax.lax.scan(lambda s, _: chunk(s), state, None, length=config.num_chunks)

    def train(key, teacher_params, student_params=None):
        return train_chunks(collect(init(key, teacher_params, student_params)))

    return Distiller(config=config, teacher_network=teacher_network,
                     student_network=student_network, optimizer=tx, init=init,
                     collect=collect, chunk=chunk, train_chunks=train_chunks, train=train)


def run_distill(distiller: Distiller, keys, teacher_params, student_params=None,
                log: Optional[Callable] = print, vmap_seeds: bool = True):
    """The host loop over seeds: compiled warm-up and chunks with the state donated, a line per
    chunk.

    Args:
      distiller: from :func:`make_distill`.
      keys: PRNG keys ``[S]``.
      teacher_params: the teachers' parameters, with a seed axis.
      student_params: optionally the students' initial parameters, with a seed axis (else
        initialised from the keys).
      log: called with one line per chunk; None for silence.
      vmap_seeds: False runs the seeds one after the other instead of vmapped: use it with
        :func:`memjax.compress.gradual_pruning`, whose ``lax.cond`` (recompute the masks only on
        pruning steps) would become a select under vmap and sort every kernel at every step.

    Returns:
      ``(student_params, metrics)``: parameters with a seed axis ``[S, ...]``, and
      ``{"loss", "agreement"}`` as ``[chunks, S]``.
    """
    import numpy as np

    if not vmap_seeds:   # one seed at a time, unbatched (a lax.cond stays a cond)
        fns = _compiled(distiller, student_params is not None, batched=False)
        outs = []
        for i in range(keys.shape[0]):
            one = (lambda t: jax.tree.map(lambda x: x[i:i + 1], t))
            outs.append(_run_chunks(distiller, fns, keys[i:i + 1], one(teacher_params),
                                    None if student_params is None else one(student_params),
                                    log))
        params = jax.tree.map(lambda *x: jnp.concatenate(x), *[o[0] for o in outs])
        return params, {k: np.concatenate([o[1][k] for o in outs], axis=1)
                        for k in ("loss", "agreement")}
    fns = _compiled(distiller, student_params is not None, batched=True)
    return _run_chunks(distiller, fns, keys, teacher_params, student_params, log)


def _compiled(distiller, with_student: bool, batched: bool):
    """jitted (init, collect, chunk) over a leading seed axis: vmapped (batched) or for one
    seed with the axis stripped and put back (so a lax.cond inside stays a cond)."""

    def lift(f):
        if batched:
            return jax.vmap(f)
        return lambda *a: jax.tree.map(lambda x: x[None], f(*jax.tree.map(lambda x: x[0], a)))

    init = distiller.init if with_student else (lambda k, t: distiller.init(k, t))
    return (jax.jit(lift(init)), jax.jit(lift(distiller.collect), donate_argnums=0),
            jax.jit(lift(distiller.chunk), donate_argnums=0))


def _run_chunks(distiller, fns, keys, teacher_params, student_params, log):
    import time

    import numpy as np

    init, collect, chunk = fns
    state = init(keys, teacher_params) if student_params is None \
        else init(keys, teacher_params, student_params)
    state = collect(state)
    losses, agrees = [], []
    t0 = time.perf_counter()
    for i in range(distiller.config.num_chunks):
        state, m = chunk(state)
        m = jax.device_get(m)
        losses.append(np.asarray(m["loss"]))
        agrees.append(np.asarray(m["agreement"]))
        if log is not None:
            log(f"  distill chunk {i + 1}/{distiller.config.num_chunks} ({keys.shape[0]} "
                f"seeds): loss {losses[-1].mean():.4f}, batch agreement "
                f"{agrees[-1].mean():.3f} ({time.perf_counter() - t0:.0f} s)")
    return state.params, {"loss": np.stack(losses), "agreement": np.stack(agrees)}


__all__ = ["DistillConfig", "DistillState", "Distiller", "make_distill", "distill_loss",
           "run_distill"]
