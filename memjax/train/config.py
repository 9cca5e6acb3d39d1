"""Training configuration: ``TrainConfig``, the hyperparameters of a run, and their checks."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np

from memjax import agents
from memjax.replay.rate_limiter import sample_to_insert_ratio, steady_schedule
from memjax.train.storage import LAYOUTS, REWARD_CODECS, STORAGE_KINDS, check_obs_codec

REPLAY_KINDS = ("uniform", "prioritized")
"""The values of ``TrainConfig.replay``."""
OPTION_NAMES = {"total_steps": "steps", "buffer_capacity": "capacity"}
"""TrainConfig fields whose command-line option has another name (``--steps``, ``--capacity``);
config files may use either."""
LEGACY_AGENT_FIELDS = frozenset(
    {
        "network",
        "hidden",
        "double_dqn",
        "loss",
        "huber_delta",
        "cell",
        "memory",
        "sequence_length",
        "sequence_period",
        "burn_in",
        "context_length",
        "attention_heads",
        "eta",
    }
)
"""The agents' knobs that TrainConfig held before agents had configs of their own: flat files
of that time (summary.json, --config files, checkpoints) record them for every agent."""


def canonical_name(name: str) -> str:
    """A setting's field name from a field name or an option name (``steps`` ->
    ``total_steps``, ``learning-starts`` -> ``learning_starts``, ``--lr`` -> ``lr``)."""
    name = name.lstrip("-").replace("-", "_")
    return {option: field for field, option in OPTION_NAMES.items()}.get(name, name)


def suggestions(unknown, known) -> str:
    """``" (did you mean: 'burnin' -> burn_in)"`` for the unknown names with a close match
    among ``known``; ``""`` when none has one."""
    close = {name: difflib.get_close_matches(name, sorted(known), n=1) for name in unknown}
    found = [f"{name!r} -> {match[0]}" for name, match in close.items() if match]
    return f" (did you mean: {'; '.join(found)})" if found else ""


def split_settings(values: dict, agent) -> tuple:
    """``(loop fields, agent knobs)`` of ``values`` (names as :func:`canonical_name` reads
    them) for the agent ``agent`` (a name or a config instance).

    Raises:
      ValueError: a name that is neither, saying which registered agent has it, if one does.
    """
    if dataclasses.is_dataclass(agent) and not isinstance(agent, type):
        agent = agents.name_of_config(agent)
    values = {canonical_name(k): v for k, v in values.items()}
    own = {f.name for f in dataclasses.fields(TrainConfig)}
    knob_names = {f.name for f in dataclasses.fields(agents.get(agent).config)}
    loop = {k: v for k, v in values.items() if k in own}
    knobs = {k: v for k, v in values.items() if k in knob_names and k not in own}
    for name in sorted(set(values) - set(loop) - set(knobs)):
        owners = [
            n
            for n in agents.names()
            if name in {f.name for f in dataclasses.fields(agents.get(n).config)}
        ]
        if owners:
            raise ValueError(
                f"{name} is a setting of agent {' and '.join(map(repr, owners))}, not of {agent!r}"
            )
        every_knob = {
            f.name for n in agents.names() for f in dataclasses.fields(agents.get(n).config)
        }
        raise ValueError(f"unknown setting {name!r}{suggestions([name], own | every_knob)}")
    return loop, knobs


def _json_friendly(d: dict) -> dict:
    return {
        k: (list(v) if isinstance(v, tuple) else _json_friendly(v) if isinstance(v, dict) else v)
        for k, v in d.items()
    }


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
        return max(
            1, min(self.chunk_steps // (self.num_envs * self.iter_vec_steps), self.train_iters)
        )

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
            raise ValueError(
                f"{what}learning_starts ({self.learning_starts}) must be at least "
                f"batch_size ({self.batch_size}) so the first sample is full"
            )
        if self.train_iters <= 0:
            raise ValueError(
                f"{what}total_steps ({self.total_steps}) leaves no training after "
                f"learning_starts ({self.learning_starts}) with num_envs="
                f"{self.num_envs} and {self.iter_vec_steps} vector steps per "
                f"iteration (train_every, or the rate limiter's period)"
            )


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

    # Fields stay one line each (a field's comment is its --help text), aligned:
    # fmt: off
    # run
    env: str = "CartPole-v1"          # gymnax environment id
    agent: Any = "dqn"                # the learning agent: a registered name (memjax.agents.names(): dqn, drqn (recurrent), memnet (attention over the last observations), ntm (external memory), distill, or yours), or its config (e.g. DRQNConfig(burn_in=4))
    agent_config: Any = None          # the agent's knobs (its config dataclass); None: its defaults
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
    storage: str = "lossless"         # lossless: the settings below left at auto are chosen per environment, learning bit-identical to plain | plain: float32 transitions stored whole (the auto settings off)
    obs_codec: str = "auto"           # auto (lossless: bitpack for declared 0/1 observations, else none) | none | bitpack | int8 | int4 | int2 | kmeansK (e.g. kmeans16) | float16 | bfloat16
    reward_codec: str = "auto"        # auto (lossless: int8/int16 for declared integer rewards, else none) | none | int8 (exact for integer rewards) | int16 | float16
    compact_fields: bool | None = None  # store actions and terminated as uint8; none: auto (lossless: on when the actions fit)
    layout: str = "auto"              # auto (lossless: one_copy when the capacity is a multiple of num_envs) | flat | one_copy (each observation stored once) | sequence (each step once, windows of n_step)
    frame_stack: int = 1              # k > 1: observations are the last k frames (one_copy stores single frames)
    side_fraction: float | None = None  # one_copy/sequence: side-store entries for final observations per transition; none: auto (lossless: 1.5x the random policy's episode ends per step, at least 1/16)
    calibration_steps: int = 10_000   # random-policy observations used to fit int*/kmeans codecs
    calibration_margin: float = 0.1   # widen calibrated int* ranges by this fraction per side
    # learner
    lr: float = 2.5e-4                # Adam learning rate
    lr_end: float | None = 0.0     # decay lr linearly to this over training; none: constant
    adam_eps: float = 1e-8            # Adam epsilon
    max_grad_norm: float | None = None  # global gradient-norm clip; none (or 0): no clipping
    gamma: float = 0.99               # discount
    n_step: int = 1                   # n-step targets (cut at termination, bootstrapped at truncation)
    target_update_every: int = 250    # env steps between target-network updates
    tau: float = 1.0                  # 1: hard target copy; < 1: one Polyak step per target update
    # acting
    eps_start: float = 1.0            # exploration epsilon at the start
    eps_end: float = 0.05             # exploration epsilon after the decay
    eps_decay_steps: int = 250_000    # env steps of linear epsilon decay
    learning_starts: int = 10_000     # env steps of random-action warm-up before any update
    train_every: int = 1              # vector steps per gradient update
    samples_per_insert: float | None = None  # replayed transitions per inserted one (Reverb's SampleToInsertRatio; e.g. 12.8 = batch 128 per vector step of 10); none: train_every
    rate_error_buffer: float | None = None   # the rate limiter's error buffer in transitions; none: the smallest that cannot deadlock
    # host loop / evaluation
    chunk_steps: int = 10_000         # env steps per compiled chunk; greedy evaluation after each
    eval_episodes: int = 10           # greedy evaluation episodes per seed
    eval_epsilon: float = 0.0         # evaluation epsilon (0: greedy)
    eval_max_steps: int | None = None  # cap per evaluation episode; none: the env's own (else 1000)
    # fmt: on

    def __post_init__(self):
        agent, knobs = self.agent, self.agent_config
        if dataclasses.is_dataclass(agent) and not isinstance(agent, type):
            if knobs is not None:
                raise ValueError("give the agent's config as agent= or agent_config=, not both")
            agent, knobs = agents.name_of_config(agent), agent
        spec = agents.get(agent)
        if knobs is None:
            knobs = spec.config()
        elif type(knobs) is not spec.config:
            raise ValueError(
                f"agent {agent!r} takes a {spec.config.__name__}, got agent_config "
                f"{type(knobs).__name__} (changing the agent? pass agent_config="
                f"None or the new agent's config)"
            )
        clash = {f.name for f in dataclasses.fields(spec.config)} & _LOOP_FIELDS
        if clash:
            raise ValueError(
                f"agent {agent!r}: its knobs {sorted(clash)} have the names of "
                f"TrainConfig fields; rename them (a setting has one meaning)"
            )
        object.__setattr__(self, "agent", agent)
        object.__setattr__(self, "agent_config", knobs)

    @property
    def spec(self) -> agents.AgentSpec:
        """The registered :class:`memjax.agents.AgentSpec` of ``agent``."""
        return agents.get(self.agent)

    @property
    def windows(self):
        """The :class:`memjax.agents.Windows` the agent learns from, or None (transitions)."""
        return self.spec.windows(self)

    def replace(self, **values) -> TrainConfig:
        """A copy with ``values`` set by name: TrainConfig fields, the agent's knobs (e.g.
        ``burn_in``), and their command-line spellings (``steps``, ``capacity``). A new
        ``agent`` keeps the knobs it shares with the old one (e.g. ``hidden``), takes its
        defaults for the others, then the knobs given.

        Raises:
          ValueError: a name that is neither, naming the agent that has it, if any.
        """
        loop, knobs = split_settings(
            values, self.agent if "agent" not in values else values["agent"]
        )
        if "agent" in loop and "agent_config" not in loop:
            new = agents.get(loop["agent"]) if isinstance(loop["agent"], str) else None
            if new is not None and new.config is not type(self.agent_config):
                shared = {f.name for f in dataclasses.fields(new.config)}
                loop["agent_config"] = new.config(
                    **{
                        k: v
                        for k, v in dataclasses.asdict(self.agent_config).items()
                        if k in shared
                    }
                )
            elif new is not None:
                loop["agent_config"] = self.agent_config
            else:
                loop["agent_config"] = None
        config = dataclasses.replace(self, **loop)
        if knobs:
            config = dataclasses.replace(
                config, agent_config=dataclasses.replace(config.agent_config, **knobs)
            )
        return config

    def settings(self) -> dict:
        """Every setting by name, flat: the loop's fields, ``agent`` (its name) and the agent's
        knobs, as :meth:`replace` and the command line name them."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "agent_config"
        }
        d.update(dataclasses.asdict(self.agent_config))
        return d

    def to_dict(self) -> dict:
        """The config as a JSON-friendly dict (tuples become lists), the agent's knobs nested
        under ``agent`` with its ``name``: ``{"env": ..., "agent": {"name": "drqn", "burn_in":
        8, ...}, ...}``. :meth:`from_dict` reads it back."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("agent", "agent_config")
        }
        d["agent"] = {"name": self.agent, **dataclasses.asdict(self.agent_config)}
        return _json_friendly(d)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> TrainConfig:
        """A config from :meth:`to_dict`'s form, or the flat form written before agents had
        configs of their own (knobs beside the loop's fields; knobs of other agents that such
        files recorded are dropped), with fields or their option names (``steps``,
        ``capacity``, dashes or underscores). Missing fields get their defaults.

        Raises:
          ValueError: an unknown name (``where`` says which file), or a bad agent.
        """
        values = dict(values)
        agent = values.pop("agent", "dqn")
        nested = values.pop("agent_config", None) or {}
        if isinstance(agent, dict):
            nested = {**agent}
            agent = nested.pop("name", "dqn")
        values = {canonical_name(k): v for k, v in values.items()}
        spec = agents.get(agent)
        knob_names = {f.name for f in dataclasses.fields(spec.config)}
        own = {f.name for f in dataclasses.fields(cls)}
        flat = {k: values.pop(k) for k in list(values) if k in knob_names and k not in own}
        for k in list(values):
            if k in LEGACY_AGENT_FIELDS and k not in own:
                values.pop(k)  # another agent's knob, as flat files recorded every agent's
        unknown = sorted(set(values) - own) + sorted(set(nested) - knob_names)
        if unknown:
            raise ValueError(
                f"{where}: unknown settings {unknown}: this memjax does not know "
                f"them as TrainConfig fields or agent {agent!r}'s knobs"
                f"{suggestions(unknown, own | knob_names)}"
            )
        # JSON has no tuples: sequence knobs (e.g. hidden) come back as the tuples they were
        knobs = {k: tuple(v) if isinstance(v, list) else v for k, v in {**flat, **nested}.items()}
        return cls(agent=agent, agent_config=spec.config(**knobs), **values)

    @property
    def target_period(self) -> int:
        """Gradient updates between target updates: ``target_update_every`` env steps
        divided by the env steps per update, rounded, at least 1."""
        if self.samples_per_insert is not None:
            return max(
                1, round(self.target_update_every * self.samples_per_insert / self.batch_size)
            )
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
        return steady_schedule(
            limiter, self.num_envs, self.batch_size, inserts=self.warmup_vec_steps * self.num_envs
        )

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
    def windowed(self) -> bool:
        """Whether the agent learns from replayed windows (its spec's ``windows``)."""
        return self.windows is not None

    @property
    def storage_layout(self) -> str:
        """The replay layout the loop uses: ``"sequence"`` for the window agents (drqn,
        memnet) and when ``n_step > 1`` (n-step targets are read from windows of stored
        steps), else ``layout`` (``"auto"`` until :func:`memjax.train.make_train` resolves
        it, see :mod:`memjax.train.storage`)."""
        return "sequence" if self.n_step > 1 or self.windowed else self.layout

    @property
    def window_length(self) -> int:
        """Steps per replayed window: the agent's window length, else ``n_step``."""
        windows = self.windows
        return self.n_step if windows is None else windows.length

    def validate(self) -> TrainConfig:
        """Raise ``ValueError`` with a clear message for invalid settings; return self."""
        self._validate_counts()
        for name, value, kinds in (
            ("replay", self.replay, REPLAY_KINDS),
            ("reward_codec", self.reward_codec, REWARD_CODECS),
            ("layout", self.layout, LAYOUTS),
            ("storage", self.storage, STORAGE_KINDS),
        ):
            if value not in kinds:
                raise ValueError(f"{name} must be one of {kinds}, got {value!r}")
        self._validate_learner()
        self._validate_rate()
        self._validate_storage()
        self.spec.validate(self)
        return self

    def _validate_counts(self) -> None:
        positive = (
            "num_envs",
            "total_steps",
            "buffer_capacity",
            "batch_size",
            "train_every",
            "target_update_every",
            "eps_decay_steps",
            "chunk_steps",
            "eval_episodes",
            "n_step",
            "calibration_steps",
        )
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.learning_starts, int) or self.learning_starts < 0:
            raise ValueError(
                f"learning_starts must be an integer >= 0, got {self.learning_starts!r}"
            )
        if self.batch_size > self.buffer_capacity:
            raise ValueError(
                f"batch_size ({self.batch_size}) is larger than the buffer "
                f"capacity ({self.buffer_capacity})"
            )
        if self.num_envs > self.buffer_capacity:
            raise ValueError(
                f"num_envs ({self.num_envs}) is larger than the buffer capacity "
                f"({self.buffer_capacity}): one vector step would overwrite itself"
            )
        self.check_schedule()

    def _validate_learner(self) -> None:
        for name in ("lr", "adam_eps", "priority_eps"):
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
            raise ValueError(
                f"samples_per_insert decides the learner steps: leave train_every "
                f"at 1, got {self.train_every}"
            )
        if not spi > 0:
            raise ValueError(f"samples_per_insert must be > 0, got {spi!r}")
        self.rate_schedule  # builds the limiter and its schedule: deadlocks, odd periods

    def _validate_storage(self) -> None:
        check_obs_codec(self.obs_codec)
        if not isinstance(self.frame_stack, int) or self.frame_stack < 1:
            raise ValueError(f"frame_stack must be an integer >= 1, got {self.frame_stack!r}")
        if self.side_fraction is not None and not 0 < self.side_fraction <= 1:
            raise ValueError(f"side_fraction must be in (0, 1], got {self.side_fraction!r}")
        if self.compact_fields not in (None, True, False):
            raise ValueError(
                f"compact_fields must be true, false or none (auto), got {self.compact_fields!r}"
            )
        if self.eval_max_steps is not None and (
            not isinstance(self.eval_max_steps, int) or self.eval_max_steps < 1
        ):
            raise ValueError(
                f"eval_max_steps must be a positive integer or None, got {self.eval_max_steps!r}"
            )
        if not self.calibration_margin >= 0:
            raise ValueError(f"calibration_margin must be >= 0, got {self.calibration_margin!r}")
        self._validate_rows()

    def _validate_rows(self) -> None:
        """The row layouts (one_copy, sequence) store rows of ``num_envs`` steps."""
        layout = self.storage_layout
        if layout in ("flat", "auto"):  # auto: flat where the capacity does not fit rows
            return
        if self.buffer_capacity % self.num_envs:
            raise ValueError(
                f"layout {layout!r} needs buffer_capacity ({self.buffer_capacity}) "
                f"to be a multiple of num_envs ({self.num_envs})"
            )
        why = f"agent {self.agent!r}" if self.windowed else f"n_step={self.n_step}"
        if layout == "sequence" and self.frame_stack > 1:
            raise ValueError(
                f"sequence replay ({why}) does not support frame_stack > 1 "
                f"(got frame_stack={self.frame_stack})"
            )
        rows = self.buffer_capacity // self.num_envs
        if layout == "sequence" and self.window_length > rows:
            setting = "sequence_length" if self.windowed else "n_step"
            raise ValueError(
                f"{setting} ({self.window_length}) is longer than the {rows} rows of "
                f"num_envs={self.num_envs} steps the buffer keeps"
            )


_LOOP_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
