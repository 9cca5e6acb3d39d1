"""Agent specs: everything the training loop, checkpoints, the command line and ``compress``
need to build one agent, and the registry that names them.

An agent is one module: its config dataclass (its knobs and their defaults), how to build its
Q-network, how to make its :class:`memjax.agents.Agent`, and what replay it learns from. The
built-in agents (``dqn``, ``drqn``, ``memnet``) register themselves exactly as a user's agent
would::

    import memjax as mj

    spec = mj.agents.get("dqn")
    mj.agents.register(spec._replace(name="mydqn"))
    config = mj.train.TrainConfig(agent="mydqn")             # DQNConfig's defaults
    config = mj.train.TrainConfig(agent=mj.agents.DRQNConfig(burn_in=4))

No code outside ``memjax/agents/`` switches on an agent's name: the loop reads the spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from memjax.agents.losses import LOSS_KINDS
from memjax.agents.networks import NETWORK_KINDS


class Windows(NamedTuple):
    """The replay an agent that learns from windows of consecutive steps needs.

    Attributes:
      length: steps per replayed window (burn-in or context included).
      period: rows between the starts of windows (windows overlap when it is below length).
      per_window: ``act`` extras stored once per window, with its first step (e.g. the
        recurrent carry before the window), instead of at every step.
      codecs: storage codecs of the per-window fields, as a dict or ``(field, codec)`` pairs
        (e.g. ``{"carry": memjax.codecs.cast(jnp.bfloat16)}``); none: stored as they are.
    """

    length: int
    period: int
    per_window: tuple = ()
    codecs: Any = ()


def transitions_only(train_config) -> None:
    """``AgentSpec.windows`` of an agent that learns from transitions: None."""
    return None


def nothing_to_check(train_config) -> None:
    """``AgentSpec.validate`` of an agent whose config needs no checks."""


def no_reach_limit(agent_config) -> None:
    """``AgentSpec.reach`` of an agent with no fixed memory length: None."""
    return None


class AgentSpec(NamedTuple):
    """One agent, as the loop, checkpoints, the CLI and compress build it.

    Attributes:
      name: the registered name (``TrainConfig(agent=name)``, ``memjax train --agent name``).
      config: the agent's config class, a frozen dataclass whose fields are its knobs with
        their defaults; each field's end-of-line comment is its ``--help`` text.
      make_network: ``(agent_config, obs, num_actions) -> flax module``; ``obs`` is a
        ``jax.ShapeDtypeStruct`` of ONE observation (no batch axis).
      make_agent: ``(train_config, network, num_actions, optimizer) -> Agent``; the agent's
        knobs are ``train_config.agent_config``, the loop's (discount, n-step, target period,
        exploration schedule, priority epsilon) the other fields of
        :class:`memjax.train.TrainConfig`.
      windows: ``(train_config) -> Windows | None``: the replay windows the agent learns from,
        or None for transitions (n-step windows then follow ``train_config.n_step``).
      validate: ``(train_config) -> None``: raises ``ValueError`` naming the setting for knobs
        that are wrong on their own or with the loop's settings.
      feedforward: the Q-network maps observations to Q-values with no carry or context
        (what ``memjax compress`` can work on).
      reach: ``(agent_config) -> int | None``: how many past steps the agent can remember
        (None: unbounded or not applicable); a task that needs more is warned about.
    """

    name: str
    config: type
    make_network: Callable
    make_agent: Callable
    windows: Callable = transitions_only
    validate: Callable = nothing_to_check
    feedforward: bool = True
    reach: Callable = no_reach_limit


@dataclasses.dataclass(frozen=True)
class QNetworkConfig:
    """The knobs every built-in Q-learning agent shares: its network's torso and its loss."""

    network: str = "auto"  # auto (conv for image observations, else mlp) | mlp | conv
    hidden: Sequence[int] = (120, 84)  # MLP hidden widths, e.g. 120,84
    double_dqn: bool = False  # Double DQN targets
    loss: str = "mse"  # mse (0.5 td^2) | huber (diverges on CartPole)
    huber_delta: float = 1.0  # Huber loss threshold

    def __post_init__(self):
        if isinstance(self.hidden, list):
            object.__setattr__(self, "hidden", tuple(self.hidden))

    def check(self) -> None:
        """``ValueError`` naming the knob for a bad value."""
        for name, value, kinds in (
            ("network", self.network, NETWORK_KINDS),
            ("loss", self.loss, LOSS_KINDS),
        ):
            if value not in kinds:
                raise ValueError(f"{name} must be one of {kinds}, got {value!r}")
        positive_widths(self.hidden)
        if not self.huber_delta > 0:
            raise ValueError(f"huber_delta must be > 0, got {self.huber_delta!r}")


def q_learning_settings(train_config) -> dict:
    """The keyword arguments of the built-in makers (:func:`memjax.agents.make_dqn`, ...) that
    come from the loop's config and the agent's :class:`QNetworkConfig`: the exploration
    schedule (``optax.linear_schedule`` over ``eps_decay_steps`` env steps), discount, target
    period and step, priority epsilon, Double-Q and the loss."""
    import optax

    agent = train_config.agent_config
    return dict(
        epsilon=optax.linear_schedule(
            train_config.eps_start, train_config.eps_end, train_config.eps_decay_steps
        ),
        gamma=train_config.gamma,
        target_period=train_config.target_period,
        tau=train_config.tau,
        priority_eps=train_config.priority_eps,
        double=agent.double_dqn,
        loss=agent.loss,
        huber_delta=agent.huber_delta,
    )


def positive_widths(hidden, name: str = "hidden") -> None:
    """``ValueError`` unless ``hidden`` is a sequence of positive int layer widths."""
    if any((not isinstance(h, int)) or isinstance(h, bool) or h <= 0 for h in hidden):
        raise ValueError(f"{name} must be positive layer widths, got {tuple(hidden)!r}")


def positive_ints(config, names: Sequence[str]) -> None:
    """``ValueError`` unless each named field of ``config`` is a positive int."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


_REGISTRY: dict = {}


def register(spec: AgentSpec, *, replace: bool = False) -> AgentSpec:
    """Make ``spec`` available by its name to ``TrainConfig``, ``memjax train --agent``,
    checkpoints and compress.

    Args:
      spec: the :class:`AgentSpec`.
      replace: allow replacing a spec already registered under that name.

    Returns:
      ``spec``.

    Raises:
      ValueError: an empty name, a name taken (without ``replace``), or a config that is not
        a dataclass with defaults for every field. (A knob whose name is also a
        :class:`memjax.train.TrainConfig` field is refused when a TrainConfig takes the
        agent: a setting must have one meaning.)
    """
    if not isinstance(spec, AgentSpec):
        raise ValueError(f"register: expected an AgentSpec, got {type(spec).__name__}")
    if not spec.name or not isinstance(spec.name, str):
        raise ValueError(f"register: an agent needs a non-empty name, got {spec.name!r}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(
            f"agent {spec.name!r} is already registered; pass replace=True to replace it"
        )
    if not (dataclasses.is_dataclass(spec.config) and isinstance(spec.config, type)):
        raise ValueError(f"agent {spec.name!r}: config must be a dataclass, got {spec.config!r}")
    try:
        spec.config()
    except TypeError as e:
        raise ValueError(
            f"agent {spec.name!r}: every field of {spec.config.__name__} needs a default ({e})"
        ) from None
    _REGISTRY[spec.name] = spec
    return spec


ENTRY_POINTS = "memjax.agents"
"""The entry-point group of installed packages' agents: each entry point names a module that
registers its agents when imported, or an :class:`AgentSpec` object, which is registered."""
_entry_points_loaded = False


def load_entry_points() -> None:
    """Register the agents of installed packages (the ``memjax.agents`` entry points), once.
    A package declares one in its pyproject.toml::

        [project.entry-points."memjax.agents"]
        widedqn = "my_package.agents:WIDE_DQN"    # an AgentSpec, or a module that registers
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINTS):
        loaded = point.load()
        if isinstance(loaded, AgentSpec) and loaded.name not in _REGISTRY:
            register(loaded)


def get(name: str) -> AgentSpec:
    """The spec registered as ``name`` (installed packages' entry points included);
    ``ValueError`` naming the registered agents."""
    if name not in _REGISTRY:
        load_entry_points()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"agent must be one of {names()}, got {name!r}") from None


def names() -> tuple:
    """The registered agents' names, in the order they were registered (installed packages'
    entry points included)."""
    load_entry_points()
    return tuple(_REGISTRY)


def name_of_config(agent_config) -> str:
    """The name of the first registered agent whose config class ``agent_config`` is an
    instance of (exactly that class); ``ValueError`` when none is."""
    load_entry_points()
    for spec in _REGISTRY.values():
        if type(agent_config) is spec.config:
            return spec.name
    raise ValueError(
        f"no registered agent has the config class {type(agent_config).__name__}; "
        f"register its AgentSpec first (registered: {names()})"
    )


def registered() -> tuple:
    """The names registered so far, without loading entry points (for modules that register
    themselves while an entry point may be importing them)."""
    return tuple(_REGISTRY)


def unregister(name: str) -> AgentSpec | None:
    """Remove ``name`` from the registry (for tests and notebooks); returns its spec."""
    return _REGISTRY.pop(name, None)


__all__ = [
    "AgentSpec",
    "Windows",
    "QNetworkConfig",
    "register",
    "get",
    "names",
    "load_entry_points",
    "ENTRY_POINTS",
    "name_of_config",
    "registered",
    "unregister",
    "positive_ints",
    "positive_widths",
    "q_learning_settings",
]
