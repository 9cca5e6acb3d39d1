"""Training configuration: ``TrainConfig``, the hyperparameters of a run, and their checks."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from memjax.agents import CELL_KINDS, LOSS_KINDS, NETWORK_KINDS
from memjax.replay.rate_limiter import sample_to_insert_ratio, steady_schedule
from memjax.train.storage import LAYOUTS, REWARD_CODECS, check_obs_codec

REPLAY_KINDS = ("uniform", "prioritized")
"""The values of ``TrainConfig.replay``."""
AGENT_KINDS = ("dqn", "drqn", "memnet")
"""The values of ``TrainConfig.agent``."""
RECURRENT_AGENTS = ("drqn",)
"""The agents that learn from replayed windows with a stored recurrent state."""
WINDOW_AGENTS = ("drqn", "memnet")
"""The agents that learn from replayed windows of ``sequence_length`` steps."""


class StepSchedule:
    """The schedule of a fused run in vector steps, from a config's ``num_envs``,
    ``total_steps``, ``learning_starts``, ``train_every`` and ``chunk_steps`` (env steps per
    seed): a warm-up of ``warmup_vec_steps``, then ``train_iters`` updates, each after
    ``train_every`` vector steps, in ``num_chunks`` compiled chunks of ``chunk_iters`` updates
    and a last chunk of ``remainder_iters``. Shared by TrainConfig and the distillation
    config. (With ``TrainConfig.samples_per_insert`` an iteration is ``iter_vec_steps``
    vector steps with the rate limiter's learner steps in between.)"""

    @property
    def iter_vec_steps(self) -> int:
        """Vector steps per loop iteration: ``train_every``."""
        return self.train_every

    @property
    def warmup_vec_steps(self) -> int:
        return -(-self.learning_starts // self.num_envs)

    @property
    def total_vec_steps(self) -> int:
        return self.total_steps // self.num_envs

    @property
    def train_iters(self) -> int:
        """Total gradient updates in the run."""
        return max(0, self.total_vec_steps - self.warmup_vec_steps) // self.iter_vec_steps

    @property
    def chunk_iters(self) -> int:
        """Updates (= iterations of ``train_every`` vector steps) per chunk, at most all."""
        return max(1, min(self.chunk_steps // (self.num_envs * self.iter_vec_steps),
                          self.train_iters))

    @property
    def num_chunks(self) -> int:
        return self.train_iters // self.chunk_iters

    @property
    def remainder_iters(self) -> int:
        return self.train_iters - self.num_chunks * self.chunk_iters

    @property
    def steps_done(self) -> int:
        """Env steps per seed actually run (``total_steps`` rounded to whole vector steps and
        whole ``train_every`` groups)."""
        return (self.warmup_vec_steps + self.train_iters * self.iter_vec_steps) * self.num_envs

    def check_schedule(self, what: str = "") -> None:
        """``ValueError`` when the warm-up cannot fill a batch or nothing is left to train."""
        if self.warmup_vec_steps * self.num_envs < self.batch_size:
            raise ValueError(f"{what}learning_starts ({self.learning_starts}) must be at least "
                             f"batch_size ({self.batch_size}) so the first sample is full")
        if self.train_iters <= 0:
            raise ValueError(f"{what}total_steps ({self.total_steps}) leaves no training after "
                             f"learning_starts ({self.learning_starts}) with num_envs="
                             f"{self.num_envs} and {self.iter_vec_steps} vector steps per "
                             f"iteration (train_every, or the rate limiter's period)")


@dataclasses.dataclass(frozen=True)
class TrainConfig(StepSchedule):
    """DQN hyperparameters. Defaults solve CartPole-v1: PureJaxRL's DQN settings (10 envs,
    buffer 10k, batch 128, lr 2.5e-4, epsilon 1 -> 0.05 over 250k steps, learning starts at
    10k, one update per vector step, 5e5 steps, gamma 0.99, plain DQN with a squared TD
    loss) with two changes: the learning rate decays linearly to 0, and the target network
    is copied every 250 env steps (25 updates) instead of 500.

    Tuning record (mean final greedy return, 10 episodes per seed): Huber loss diverged
    (Q-values in the thousands). With copies every 500 env steps: 463-500 on 8-seed sets,
    with Double DQN + clipping at 10 + lr decay 463-493; lr 1e-3: 434 (16 seeds); slower
    targets (every 1000 env steps, Polyak tau=0.01 per update) 319 and 291. Copies every 250
    env steps with lr decay: Double DQN + clipping 468 (16 seeds), plain DQN 500 (16 seeds).
    Step counts (``total_steps``, ``learning_starts``, ``eps_decay_steps``,
    ``target_update_every``, ``chunk_steps``) are in *environment* steps, i.e. vector steps
    times ``num_envs``, per seed.

    ``n_step > 1`` gives n-step targets computed at sample time from windows of n stored
    steps: replay then uses the sequence layout (each step stored once, like ``one_copy``)
    whatever ``layout`` says; see :attr:`storage_layout`.
    """

    # run
    env: str = "CartPole-v1"          # gymnax environment id
    agent: str = "dqn"                # the learning agent: dqn | drqn (recurrent) | memnet (attention over the last context_length observations); see the memory agents section
    num_envs: int = 10                # vectorised environments per seed
    total_steps: int = 500_000        # environment steps per seed
    # replay
    replay: str = "uniform"           # uniform | prioritized
    buffer_capacity: int = 10_000     # replay capacity in transitions (steps)
    alpha: float = 0.6                # PER priority exponent
    beta_start: float = 0.4           # PER importance exponent when learning starts
    beta_end: float = 1.0             # PER importance exponent at the end, annealed linearly
    priority_eps: float = 1e-6        # added to |TD| so that no item gets priority 0
    batch_size: int = 128             # transitions (or windows) per learner step
    # replay storage (see memjax.train.storage)
    obs_codec: str = "none"           # none | bitpack | int8 | int4 | int2 | kmeansK (e.g. kmeans16) | float16 | bfloat16
    reward_codec: str = "none"        # none | int8 (exact for integer rewards) | float16
    compact_fields: bool = False      # store actions and terminated as uint8
    layout: str = "flat"              # flat | one_copy (each observation stored once) | sequence (each step once, windows of n_step)
    frame_stack: int = 1              # k > 1: observations are the last k frames (one_copy stores single frames)
    side_fraction: float = 1 / 16     # one_copy/sequence: side-store entries for final observations per transition
    calibration_steps: int = 10_000   # random-policy observations used to fit int*/kmeans codecs
    calibration_margin: float = 0.1   # widen calibrated int* ranges by this fraction per side
    # learner
    lr: float = 2.5e-4                # Adam learning rate
    lr_end: Optional[float] = 0.0     # decay lr linearly to this over training; none: constant
    adam_eps: float = 1e-8            # Adam epsilon
    max_grad_norm: Optional[float] = None  # global gradient-norm clip; none (or 0): no clipping
    gamma: float = 0.99               # discount
    double_dqn: bool = False          # Double DQN targets
    n_step: int = 1                   # n-step targets (cut at termination, bootstrapped at truncation)
    loss: str = "mse"                 # mse (0.5 td^2) | huber (diverges on CartPole)
    huber_delta: float = 1.0          # Huber loss threshold
    target_update_every: int = 250    # env steps between target-network updates
    tau: float = 1.0                  # 1: hard target copy; < 1: one Polyak step per target update
    network: str = "auto"             # auto (conv for image observations, else mlp) | mlp | conv
    hidden: Sequence[int] = (120, 84)  # MLP hidden widths, e.g. 120,84
    # memory agents (drqn, memnet)
    cell: str = "gru"                 # recurrent cell: gru | lstm
    memory: int = 64                  # drqn: recurrent state size; memnet: width of queries, keys and values
    sequence_length: int = 40         # steps per replayed window, burn-in (drqn) or context (memnet) included
    sequence_period: int = 20         # rows between the starts of replayed windows
    burn_in: int = 8                  # window steps that only warm the stored state up (no loss, no gradient)
    context_length: int = 32          # memnet: the observations before the current one that it reads (M; a window's first M steps are context only)
    attention_heads: int = 4          # memnet: attention heads of the read (each uses memory / attention_heads features; must divide memory)
    eta: float = 0.9                  # window priority: eta * max |TD| + (1 - eta) * mean |TD|
    # acting
    eps_start: float = 1.0            # exploration epsilon at the start
    eps_end: float = 0.05             # exploration epsilon after the decay
    eps_decay_steps: int = 250_000    # env steps of linear epsilon decay
    learning_starts: int = 10_000     # env steps of random-action warm-up before any update
    train_every: int = 1              # vector steps per gradient update
    samples_per_insert: Optional[float] = None  # replayed transitions per inserted one (Reverb's SampleToInsertRatio; e.g. 12.8 = batch 128 per vector step of 10); none: train_every
    rate_error_buffer: Optional[float] = None   # the rate limiter's error buffer in transitions; none: the smallest that cannot deadlock
    # host loop / evaluation
    chunk_steps: int = 10_000         # env steps per compiled chunk; greedy evaluation after each
    eval_episodes: int = 10           # greedy evaluation episodes per seed
    eval_epsilon: float = 0.0         # evaluation epsilon (0: greedy)
    eval_max_steps: Optional[int] = None  # cap per evaluation episode; none: the env's own (else 1000)

    @property
    def target_period(self) -> int:
        """Gradient updates between target updates: ``target_update_every`` env steps
        divided by the env steps per update, rounded, at least 1."""
        if self.samples_per_insert is not None:
            return max(1, round(self.target_update_every * self.samples_per_insert
                                / self.batch_size))
        return max(1, round(self.target_update_every / (self.num_envs * self.train_every)))

    @property
    def rate_limiter(self):
        """The :class:`memjax.replay.RateLimiter` of ``samples_per_insert`` (None without):
        sampling starts after the warm-up's transitions, ``num_envs`` are inserted and
        ``batch_size`` sampled at a time, and the error buffer is ``rate_error_buffer`` or the
        smallest that cannot deadlock."""
        if self.samples_per_insert is None:
            return None
        spi, n, b = self.samples_per_insert, self.num_envs, self.batch_size
        warmup = self.warmup_vec_steps * n
        error = self.rate_error_buffer
        if error is None:
            error = max((n * spi + b) / 2, max(1.0, spi), (n - 1) * spi)
        return sample_to_insert_ratio(spi, max(warmup, 1), error, insert_size=n, sample_size=b)

    @property
    def rate_schedule(self):
        """``(backlog, pattern)`` of :func:`memjax.replay.rate_limiter.steady_schedule`: the
        learner steps the limiter allows at the end of the warm-up, then after each vector
        step of one period (None without ``samples_per_insert``)."""
        limiter = self.rate_limiter
        if limiter is None:
            return None
        return steady_schedule(limiter, self.num_envs, self.batch_size,
                               inserts=self.warmup_vec_steps * self.num_envs)

    @property
    def iter_vec_steps(self) -> int:
        """Vector steps per loop iteration: ``train_every``, or with ``samples_per_insert``
        the rate limiter's period."""
        schedule = self.rate_schedule
        return self.train_every if schedule is None else len(schedule[1])

    @property
    def total_updates(self) -> int:
        """Gradient updates in the run: ``train_iters``, or with ``samples_per_insert`` the
        limiter's backlog plus its updates per period times the periods."""
        schedule = self.rate_schedule
        if schedule is None:
            return self.train_iters
        return schedule[0] + self.train_iters * sum(schedule[1])

    @property
    def recurrent(self) -> bool:
        """Whether the agent learns from windows with a stored recurrent state."""
        return self.agent in RECURRENT_AGENTS

    @property
    def windowed(self) -> bool:
        """Whether the agent learns from windows of ``sequence_length`` steps (drqn, memnet)."""
        return self.agent in WINDOW_AGENTS

    @property
    def storage_layout(self) -> str:
        """The replay layout the loop uses: ``"sequence"`` for the window agents (drqn,
        memnet) and when ``n_step > 1`` (n-step targets are read from windows of stored
        steps), else ``layout``."""
        return "sequence" if self.n_step > 1 or self.windowed else self.layout

    @property
    def window_length(self) -> int:
        """Steps per replayed window: ``sequence_length`` for the window agents, else
        ``n_step``."""
        return self.sequence_length if self.windowed else self.n_step

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` with a clear message for invalid settings; return self."""
        self._validate_counts()
        for name, value, kinds in (("agent", self.agent, AGENT_KINDS),
                                   ("replay", self.replay, REPLAY_KINDS),
                                   ("network", self.network, NETWORK_KINDS),
                                   ("loss", self.loss, LOSS_KINDS),
                                   ("reward_codec", self.reward_codec, REWARD_CODECS),
                                   ("layout", self.layout, LAYOUTS),
                                   ("cell", self.cell, CELL_KINDS)):
            if value not in kinds:
                raise ValueError(f"{name} must be one of {kinds}, got {value!r}")
        self._validate_learner()
        self._validate_rate()
        self._validate_recurrent()
        self._validate_storage()
        if any((not isinstance(h, int)) or h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be positive layer widths, got {tuple(self.hidden)!r}")
        return self

    def _validate_counts(self) -> None:
        positive = ("num_envs", "total_steps", "buffer_capacity", "batch_size", "train_every",
                    "target_update_every", "eps_decay_steps", "chunk_steps", "eval_episodes",
                    "n_step", "calibration_steps", "memory", "sequence_length",
                    "sequence_period", "context_length", "attention_heads")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(f"learning_starts must be an integer >= 0, got {self.learning_starts!r}")
        if self.batch_size > self.buffer_capacity:
            raise ValueError(f"batch_size ({self.batch_size}) is larger than the buffer "
                             f"capacity ({self.buffer_capacity})")
        if self.num_envs > self.buffer_capacity:
            raise ValueError(f"num_envs ({self.num_envs}) is larger than the buffer capacity "
                             f"({self.buffer_capacity}): one vector step would overwrite itself")
        self.check_schedule()

    def _validate_learner(self) -> None:
        for name in ("lr", "adam_eps", "huber_delta", "priority_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.lr_end is not None and self.lr_end < 0:
            raise ValueError(f"lr_end must be >= 0, got {self.lr_end!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")
        for name in ("eps_start", "eps_end", "eval_epsilon"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.alpha < 0 or self.beta_start < 0 or self.beta_end < 0:
            raise ValueError("alpha, beta_start and beta_end must be >= 0")

    def _validate_rate(self) -> None:
        spi = self.samples_per_insert
        if spi is None:
            if self.rate_error_buffer is not None:
                raise ValueError("rate_error_buffer needs samples_per_insert")
            return
        if self.train_every != 1:
            raise ValueError(f"samples_per_insert decides the learner steps: leave train_every "
                             f"at 1, got {self.train_every}")
        if not spi > 0:
            raise ValueError(f"samples_per_insert must be > 0, got {spi!r}")
        self.rate_schedule  # builds the limiter and its schedule: deadlocks, odd periods

    def _validate_recurrent(self) -> None:
        if not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise ValueError(f"burn_in must be an integer >= 0, got {self.burn_in!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta!r}")
        if self.recurrent and self.sequence_length < self.burn_in + self.n_step:
            raise ValueError(
                f"agent {self.agent!r}: sequence_length ({self.sequence_length}) is shorter than "
                f"burn_in ({self.burn_in}) + n_step ({self.n_step}): no step of a window would "
                f"be trained; use --sequence-length {self.burn_in + self.n_step} or more")
        if self.agent == "memnet" and self.sequence_length < self.context_length + self.n_step:
            raise ValueError(
                f"agent 'memnet': sequence_length ({self.sequence_length}) is shorter than "
                f"context_length ({self.context_length}) + n_step ({self.n_step}): no step of a "
                f"window would have its whole context; use --sequence-length "
                f"{self.context_length + self.n_step} or more (or a shorter --context-length)")
        if self.agent == "memnet" and self.memory % self.attention_heads:
            raise ValueError(
                f"agent 'memnet': attention_heads ({self.attention_heads}) must divide memory "
                f"({self.memory}), the width the heads split")

    def _validate_storage(self) -> None:
        check_obs_codec(self.obs_codec)
        if not isinstance(self.frame_stack, int) or self.frame_stack < 1:
            raise ValueError(f"frame_stack must be an integer >= 1, got {self.frame_stack!r}")
        if not 0 < self.side_fraction <= 1:
            raise ValueError(f"side_fraction must be in (0, 1], got {self.side_fraction!r}")
        if self.eval_max_steps is not None and (
                not isinstance(self.eval_max_steps, int) or self.eval_max_steps < 1):
            raise ValueError(f"eval_max_steps must be a positive integer or None, got "
                             f"{self.eval_max_steps!r}")
        if not self.calibration_margin >= 0:
            raise ValueError(f"calibration_margin must be >= 0, got {self.calibration_margin!r}")
        self._validate_rows()

    def _validate_rows(self) -> None:
        """The row layouts (one_copy, sequence) store rows of ``num_envs`` steps."""
        layout = self.storage_layout
        if layout == "flat":
            return
        if self.buffer_capacity % self.num_envs:
            raise ValueError(f"layout {layout!r} needs buffer_capacity ({self.buffer_capacity}) "
                             f"to be a multiple of num_envs ({self.num_envs})")
        why = f"agent {self.agent!r}" if self.windowed else f"n_step={self.n_step}"
        if layout == "sequence" and self.frame_stack > 1:
            raise ValueError(f"sequence replay ({why}) does not support frame_stack > 1 "
                             f"(got frame_stack={self.frame_stack})")
        rows = self.buffer_capacity // self.num_envs
        if layout == "sequence" and self.windowed and rows % self.sequence_period:
            raise ValueError(f"agent {self.agent!r}: the buffer's {rows} rows (buffer_capacity "
                             f"{self.buffer_capacity} / num_envs {self.num_envs}) must be a "
                             f"multiple of sequence_period ({self.sequence_period})")
        if layout == "sequence" and self.window_length > rows:
            setting = "sequence_length" if self.windowed else "n_step"
            raise ValueError(f"{setting} ({self.window_length}) is longer than the {rows} rows of "
                             f"num_envs={self.num_envs} steps the buffer keeps")
