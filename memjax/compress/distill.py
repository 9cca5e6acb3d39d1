"""Policy distillation (Rusu et al., 2016) as an agent of the one training loop: a smaller
student Q-network learns to match a teacher's policy on the states the teacher visits.

The loss is ``KL(softmax(q_teacher / tau) || softmax(q_student))`` averaged over a batch,
``tau = 0.01`` by default (a sharpened teacher, as in the paper). The agent acts with the
teacher (epsilon-greedy, for state coverage) and is evaluated greedily with the student; its
replay stores what the loop stores and its ``learn`` recomputes the teacher's Q-values on the
sampled observations. It is registered as ``"distill"`` (an entry point of memjax's own
package, exactly as an installed package registers its agents), so it trains through
``memjax train``::

    memjax train --agent distill --teacher runs/cartpole --hidden 32,32 --steps 200000

and through :func:`memjax.train.make_train` / :func:`run_distill` from Python, where each seed
may distil its own teacher (``memjax compress`` does):

```python
config = distill_train_config(DistillConfig(hidden=(32, 32)), env="CartPole-v1")
agent = make_distill_agent(teacher_net, student_net, make_optimizer(config))
trainer = make_train(config, agent=agent)
student_params, metrics = run_distill(trainer, keys, teacher_params)   # [S, ...]
```
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from memjax.agents import Agent, AgentSpec, epsilon_greedy, no_carry, register
from memjax.agents.networks import ConvQNetwork, MLPQNetwork, network_kind
from memjax.agents.spec import positive_ints, positive_widths
from memjax.agents.spec import registered as agents_registry
from memjax.train.config import TrainConfig

NAME = "distill"


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """The distillation agent's knobs: the teacher, the loss temperature, the acting teacher's
    exploration and the student's network. The schedule (steps, buffer, batch, learning rate)
    is :class:`memjax.train.TrainConfig`'s; :func:`distill_train_config` gives the defaults
    distillation runs with."""

    teacher: str = ""  # the teacher: a run directory of `memjax train --out` (feedforward agent)
    teacher_seed: int = 0  # the teacher's seed to distil (compress distils each seed's own)
    temperature: float = 0.01  # the teacher's temperature in the KL loss (Rusu et al.'s tau)
    teacher_epsilon: float = 0.05  # exploration of the acting teacher (state coverage)
    network: str = "auto"  # the student: auto (conv for images, else mlp) | mlp | conv
    hidden: Sequence[int] = (32, 32)  # the student's MLP widths (conv: its dense width first)
    channels: int = 8  # the conv student's filters

    def __post_init__(self):
        if isinstance(self.hidden, list):
            object.__setattr__(self, "hidden", tuple(self.hidden))

    def check(self) -> None:
        """``ValueError`` naming the knob for a bad value."""
        positive_ints(self, ("channels",))
        positive_widths(self.hidden)
        if not isinstance(self.teacher_seed, int) or self.teacher_seed < 0:
            raise ValueError(f"teacher_seed must be an integer >= 0, got {self.teacher_seed!r}")
        if not self.temperature > 0:
            raise ValueError(f"distill: temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.teacher_epsilon <= 1.0:
            raise ValueError(
                f"distill: teacher_epsilon must be in [0, 1], got {self.teacher_epsilon!r}"
            )


def distill_train_config(agent: DistillConfig = DistillConfig(), **loop) -> TrainConfig:
    """The loop settings distillation runs with (10 envs, 2e5 env steps, 5e3 of them warm-up,
    a 5e4 one-copy buffer, batch 128, Adam 1e-3 decayed to 0, chunks of 2e4 steps), for
    ``agent`` and with any ``loop`` field overridden."""
    defaults = dict(
        num_envs=10,
        total_steps=200_000,
        learning_starts=5_000,
        buffer_capacity=50_000,
        batch_size=128,
        lr=1e-3,
        lr_end=0.0,
        chunk_steps=20_000,
        layout="one_copy",
    )
    return TrainConfig(agent=agent, **{**defaults, **loop})


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
    """The distillation agent's state.

    Attributes:
      params: the student's parameters (trained).
      teacher: the teacher's parameters (fixed).
      opt_state: the student's optimizer state.
      updates: int32 scalar, gradient updates done.
    """

    params: Any
    teacher: Any
    opt_state: Any
    updates: jax.Array


def make_distill_agent(
    teacher_network: nn.Module,
    student_network: nn.Module,
    optimizer: optax.GradientTransformation,
    *,
    tau: float = 0.01,
    teacher_epsilon: float = 0.05,
    teacher_params=None,
) -> Agent:
    """The distillation agent.

    ``act`` plays the teacher epsilon-greedily (``teacher_epsilon``) while training and the
    student greedily when evaluated; ``learn`` takes transitions ``[B, ...]`` and returns no
    priorities and the metrics ``loss`` (the KL) and ``agreement`` (the fraction of the batch
    where the student's greedy action is the teacher's).

    Args:
      teacher_network: the teacher's flax module, ``obs [B, ...] -> Q [B, A]``.
      student_network: the student's.
      optimizer: the student's optax transformation (e.g.
        :func:`memjax.compress.gradual_pruning` around Adam to prune while distilling).
      tau: the teacher's temperature.
      teacher_epsilon: the acting teacher's probability of a random action.
      teacher_params: the teacher's parameters that ``init`` puts in the state; None leaves
        a random teacher there, to be replaced per seed with :func:`with_teacher`.

    Returns:
      An :class:`memjax.agents.Agent` whose state is a :class:`DistillState`.
    """

    def init(key, obs) -> DistillState:
        k_student, k_teacher = jax.random.split(key)
        batch = jnp.asarray(obs)[None]
        params = student_network.init(k_student, batch)
        teacher = (
            teacher_network.init(k_teacher, batch)
            if teacher_params is None
            else jax.tree.map(jnp.asarray, teacher_params)
        )
        return DistillState(
            params=params,
            teacher=teacher,
            opt_state=optimizer.init(params),
            updates=jnp.zeros((), jnp.int32),
        )

    def act(state: DistillState, carry, obs, key, step, greedy: bool = False):
        if greedy:
            q_values = student_network.apply(state.params, obs)
            return jnp.argmax(q_values, axis=-1).astype(jnp.int32), carry, {}
        q_values = teacher_network.apply(state.teacher, obs)
        return epsilon_greedy(key, q_values, teacher_epsilon), carry, {}

    def loss_fn(params, teacher, obs):
        q_student = student_network.apply(params, obs)
        q_teacher = jax.lax.stop_gradient(teacher_network.apply(teacher, obs))
        agree = jnp.mean(jnp.argmax(q_student, -1) == jnp.argmax(q_teacher, -1))
        return distill_loss(q_student, q_teacher, tau), agree

    def learn(state: DistillState, sample, key):
        (loss, agree), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.teacher, sample.items["obs"]
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        state = state.replace(
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            updates=state.updates + 1,
        )
        return state, None, {"loss": loss, "agreement": agree}

    return Agent(init=init, initial_carry=no_carry, act=act, learn=learn)


def with_teacher(
    state, teacher_params, optimizer: optax.GradientTransformation, student_params=None
):
    """A loop state (:class:`memjax.train.TrainState`) whose distillation agent distils
    ``teacher_params`` (one seed's, no seed axis), starting from ``student_params`` when given
    (the optimizer state made anew for them)."""
    agent = state.agent.replace(teacher=teacher_params)
    if student_params is not None:
        agent = agent.replace(params=student_params, opt_state=optimizer.init(student_params))
    return state.replace(agent=agent)


def student_network(config: DistillConfig, obs, num_actions: int) -> nn.Module:
    """The student of ``config``: an MLP of ``hidden``, or for image observations (``network``
    auto or conv) a conv net of ``channels`` filters and a dense layer of ``hidden[0]``."""
    if network_kind(config.network, tuple(obs.shape)) == "conv":
        return ConvQNetwork(num_actions, channels=config.channels, hidden=config.hidden[0])
    return MLPQNetwork(num_actions, hidden=tuple(config.hidden))


def _teacher_file(config: DistillConfig):
    from memjax.train import params_file

    if not config.teacher:
        raise ValueError(
            "agent 'distill' needs a teacher: --teacher RUN_DIR (a run of "
            "`memjax train --out RUN_DIR`)"
        )
    try:
        loaded = params_file.load(config.teacher)
    except FileNotFoundError as e:
        raise ValueError(f"--teacher {config.teacher}: {e}") from None
    if not loaded.spec.feedforward:
        raise ValueError(
            f"--teacher {config.teacher}: agent {loaded.config.agent!r} carries a "
            f"state from step to step; distillation needs a feedforward teacher"
        )
    if config.teacher_seed >= loaded.num_seeds:
        raise ValueError(
            f"teacher_seed ({config.teacher_seed}) is out of range: the teacher "
            f"has {loaded.num_seeds} seeds"
        )
    return loaded


def distill_agent(train_config: TrainConfig, network, num_actions: int, optimizer) -> Agent:
    """The spec's ``make_agent``: the teacher read from ``train_config.agent_config.teacher``."""
    config = train_config.agent_config
    teacher = _teacher_file(config)
    return make_distill_agent(
        teacher.network(),
        network,
        optimizer,
        tau=config.temperature,
        teacher_epsilon=config.teacher_epsilon,
        teacher_params=teacher.seed_params(config.teacher_seed),
    )


def check_distill(train_config: TrainConfig) -> None:
    """``ValueError`` for bad knobs, or a teacher file that is missing, recurrent or trained
    on another environment. (An agent made in code with its teacher's parameters needs no
    ``teacher`` path; :func:`distill_agent` asks for one.)"""
    config = train_config.agent_config
    config.check()
    if not config.teacher:
        return
    teacher = _teacher_file(config)
    if teacher.config.env != train_config.env:
        raise ValueError(
            f"--teacher {config.teacher} was trained on {teacher.config.env}, "
            f"not on {train_config.env} (give --env {teacher.config.env})"
        )


DISTILL = AgentSpec(
    name=NAME,
    config=DistillConfig,
    make_network=student_network,
    make_agent=distill_agent,
    validate=check_distill,
)
"""The distillation agent's spec, registered as ``"distill"`` when this module is imported
and through memjax's ``memjax.agents`` entry point (see
:func:`memjax.agents.load_entry_points`), so that ``memjax.agents.get("distill")`` finds it in
an installed memjax without importing :mod:`memjax.compress` first."""
if NAME not in agents_registry():
    register(DISTILL)


def run_distill(
    trainer,
    keys,
    teacher_params,
    student_params=None,
    *,
    optimizer: optax.GradientTransformation | None = None,
    log: Callable | None = print,
    vmap_seeds: bool = True,
):
    """Distil one teacher per seed with the loop of ``trainer`` (a
    :func:`memjax.train.make_train` of a :func:`make_distill_agent`): the warm-up and each
    compiled chunk with the state donated, a line per chunk.

    Args:
      trainer: the loop, whose agent is a distillation agent.
      keys: PRNG keys ``[S]``.
      teacher_params: the teachers' parameters, with a seed axis ``[S, ...]``.
      student_params: optionally the students' initial parameters, with a seed axis (else
        initialised from the keys).
      optimizer: the agent's optimizer, needed with ``student_params`` (their optimizer state
        is made anew).
      log: called with one line per chunk; None for silence.
      vmap_seeds: False runs the seeds one after the other instead of vmapped: use it with
        :func:`memjax.compress.gradual_pruning`, whose ``lax.cond`` (recompute the masks only on
        pruning steps) would become a select under vmap and sort every kernel at every step.

    Returns:
      ``(student_params, metrics)``: parameters with a seed axis ``[S, ...]``, and
      ``{"loss", "agreement"}`` as ``[chunks, S]`` (chunk means).
    """
    if student_params is not None and optimizer is None:
        raise ValueError("run_distill: student_params need the agent's optimizer (optimizer=)")

    def start(key, teacher, student):
        state = with_teacher(trainer.init(key), teacher, optimizer, student)
        return trainer.collect(state)[0]

    chunks = [trainer.chunk] * trainer.config.num_chunks
    if trainer.final_chunk is not None:
        chunks.append(trainer.final_chunk)

    def lift(f, donate: bool):
        if vmap_seeds:
            return jax.jit(jax.vmap(f), donate_argnums=0 if donate else ())
        one = jax.jit(f, donate_argnums=0 if donate else ())
        return lambda *args: jax.tree.map(
            lambda *x: jnp.stack(x),
            *[one(*jax.tree.map(lambda x, i=i: x[i], args)) for i in range(keys.shape[0])],
        )

    begin = lift(start, False)
    state = begin(keys, teacher_params, student_params)
    compiled = {id(c): lift(c, True) for c in chunks}
    losses, agreements = [], []
    t0 = time.perf_counter()
    for i, chunk in enumerate(chunks):
        state, metrics = compiled[id(chunk)](state)
        metrics = jax.device_get(metrics)
        losses.append(np.asarray(metrics["loss"]))
        agreements.append(np.asarray(metrics["agreement"]))
        if log is not None:
            log(
                f"  distill chunk {i + 1}/{len(chunks)} ({keys.shape[0]} seeds): loss "
                f"{losses[-1].mean():.4f}, batch agreement {agreements[-1].mean():.3f} "
                f"({time.perf_counter() - t0:.0f} s)"
            )
    return state.agent.params, {"loss": np.stack(losses), "agreement": np.stack(agreements)}


__all__ = [
    "DISTILL",
    "DistillConfig",
    "DistillState",
    "distill_loss",
    "distill_train_config",
    "make_distill_agent",
    "run_distill",
    "student_network",
    "with_teacher",
]
