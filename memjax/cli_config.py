"""``memjax train``'s options, generated from :class:`memjax.train.TrainConfig` and the agent's
config, and config files.

Every TrainConfig field is an option ``--field-name`` (``total_steps`` is ``--steps`` and
``buffer_capacity`` is ``--capacity``, as they always were), in the argument group of the
field's section comment, with the field's end-of-line comment as its help text. The agent's
knobs (the fields of its spec's config, e.g. :class:`memjax.agents.DRQNConfig`) are options
too, in a section of their own: ``memjax train --agent drqn --help`` lists DRQN's. Options left
out of the command line keep the value of ``--config FILE`` (JSON or YAML; see
:meth:`memjax.train.TrainConfig.from_dict` for the forms it reads; a ``summary.json`` written
by ``memjax train`` works too, through its ``config`` key, with its ``seeds`` and ``seed``),
else the defaults.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import re
import textwrap
import tokenize
import typing
from pathlib import Path

from memjax import _argtypes as types
from memjax import agents
from memjax.agents import CELL_KINDS, LOSS_KINDS, NETWORK_KINDS
from memjax.train.config import OPTION_NAMES, REPLAY_KINDS, TrainConfig, canonical_name
from memjax.train.storage import LAYOUTS, REWARD_CODECS, STORAGE_KINDS, check_obs_codec

CHOICES = {
    "replay": REPLAY_KINDS,
    "network": NETWORK_KINDS,
    "loss": LOSS_KINDS,
    "layout": LAYOUTS,
    "reward_codec": REWARD_CODECS,
    "storage": STORAGE_KINDS,
    "cell": CELL_KINDS,
}
FRACTIONS = {"gamma", "tau", "eps_start", "eps_end", "eval_epsilon", "side_fraction", "eta"}
POSITIVE_FLOATS = {"lr", "adam_eps", "huber_delta", "priority_eps"}
NON_NEGATIVE_INTS = {"learning_starts", "burn_in"}
"""Integer settings that may be 0; an agent's config says so for its own knobs with
``dataclasses.field(default=..., metadata={"minimum": 0})``."""
NOT_OPTIONS = {"agent_config"}
RUN_SETTINGS = ("seeds", "seed")
"""What a summary.json records besides the config that reruns the run: ``--seeds``, ``--seed``."""


def option_name(field: str) -> str:
    """``--steps`` for ``total_steps``; otherwise the field name with dashes."""
    return "--" + OPTION_NAMES.get(field, field).replace("_", "-")


def field_docs(cls=TrainConfig) -> dict:
    """field name -> (section, help text), read from the source of ``cls`` and its dataclass
    bases: ``# section`` lines start a section; a field's end-of-line comment is its help."""
    docs = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        docs.update(_class_field_docs(klass))
    return docs


def _class_field_docs(cls) -> dict:
    """The fields of ``cls``'s own body with the comment on their lines (however a formatter
    wrapped them), and the section of the last comment-only line above each."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {}  # line -> (comment, whether the line holds nothing else)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = not token.line[: token.start[1]].strip()
            comments[token.start[0]] = (token.string.lstrip("#").strip(), alone)
    body = ast.parse(source).body[0].body
    docs, section, last_line = {}, "run", 0
    for node in body:
        for line in range(last_line + 1, node.lineno):
            text, alone = comments.get(line, ("", False))
            header = (
                None
                if not alone or text.startswith("fmt:")
                else re.fullmatch(r"([a-z][^(]*?)(?: \(.*\))?", text)
            )
            if header:
                section = header.group(1).strip()
        last_line = node.end_lineno
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = next(
                (
                    comments[line][0]
                    for line in range(node.lineno, node.end_lineno + 1)
                    if line in comments and not comments[line][1]
                ),
                "",
            )
            docs[node.target.id] = (section, text)
    return docs


def _obs_codec(text: str) -> str:
    try:
        check_obs_codec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _optional_positive_int(text: str):
    return None if text.strip().lower() == "none" else types.positive(text)


def _optional_fraction(text: str):
    return None if text.strip().lower() in ("none", "auto") else types.fraction(text)


def _clip_norm(text: str):
    value = types.optional_float(text)
    return None if value == 0 else value


def option_kwargs(field: dataclasses.Field, hints: dict) -> dict:
    """argparse keyword arguments (type, choices or action) for one field."""
    name, hint = field.name, hints[field.name]
    special = {
        "obs_codec": _obs_codec,
        "hidden": types.hidden,
        "max_grad_norm": _clip_norm,
        "eval_max_steps": _optional_positive_int,
        "lr_end": types.optional_float,
        "samples_per_insert": types.optional_float,
        "side_fraction": _optional_fraction,
        "rate_error_buffer": types.optional_float,
    }
    metavar = OPTION_NAMES.get(name, name).upper()
    if name in special:
        return {"type": special[name], "metavar": metavar}
    if name in CHOICES:
        return {"choices": CHOICES[name]}
    if name == "agent":
        return {"choices": agents.names()}
    if hint is bool or hint == bool | None:  # --flag / --no-flag; absent: the default
        return {"action": argparse.BooleanOptionalAction}
    if hint is int:
        zero_ok = name in NON_NEGATIVE_INTS or field.metadata.get("minimum") == 0
        kind = types.non_negative if zero_ok else types.positive
    elif hint is float and name in FRACTIONS:
        kind = types.fraction
    elif hint is float:
        kind = types.positive_float if name in POSITIVE_FLOATS else types.number
    elif hint is str:
        kind = str
    else:
        raise TypeError(f"setting {name}: no command-line type for {hint}")
    return {"type": kind, "metavar": metavar}


def add_config_options(parser: argparse.ArgumentParser, agent: str = "dqn") -> None:
    """One option per TrainConfig field, grouped by section, then one per knob of ``agent``'s
    config in a section of its own; absent options are absent from the parsed namespace
    (``argparse.SUPPRESS``), so a config file can fill them."""
    groups = {}
    _add_fields(parser, TrainConfig, TrainConfig(), groups, "{section} (TrainConfig)")
    spec = agents.get(agent)
    _add_fields(
        parser,
        spec.config,
        spec.config(),
        groups,
        f"agent {agent} ({spec.config.__name__}; --agent {agent})",
    )


def _add_fields(parser, cls, defaults, groups: dict, title: str) -> None:
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in NOT_OPTIONS:
            continue
        section, text = docs.get(field.name, ("run", ""))
        heading = title.format(section=section)
        if heading not in groups:
            groups[heading] = parser.add_argument_group(heading)
        default = getattr(defaults, field.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        groups[heading].add_argument(
            option_name(field.name),
            dest=field.name,
            default=argparse.SUPPRESS,
            help=f"{text} (default: {shown})".lstrip(),
            **option_kwargs(field, hints),
        )


def agent_options() -> dict:
    """option (``--burn-in``) -> the registered agents whose config has that knob."""
    owners = {}
    for name in agents.names():
        for field in dataclasses.fields(agents.get(name).config):
            owners.setdefault(option_name(field.name), []).append(name)
    return owners


def read_config_file(path) -> tuple:
    """``(settings, run)`` from a JSON or YAML file (``.yaml``/``.yml``: YAML, else JSON):
    ``settings`` the TrainConfig fields and agent knobs it sets, flat by name (any form
    :meth:`memjax.train.TrainConfig.from_dict` reads; option names such as ``steps`` work),
    ``run`` its ``seeds`` and ``seed`` (a ``memjax train`` summary.json records them beside
    its ``config``). ``ValueError`` for an unreadable file or unknown names."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"--config {path}: {e.strerror or e}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise ValueError(f"--config {path}: cannot parse it: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"--config {path}: expected a mapping of TrainConfig fields, got {type(data).__name__}"
        )
    run = {k: data[k] for k in RUN_SETTINGS if isinstance(data.get(k), int)}
    if isinstance(data.get("config"), dict):
        data = data["config"]
    else:
        run.update({k: data.pop(k) for k in RUN_SETTINGS if k in data})
    config = TrainConfig.from_dict(data, where=f"--config {path}")
    settings = config.settings()
    named = {canonical_name(k) for k in data if k != "agent_config"}
    if isinstance(data.get("agent"), dict):
        named |= set(data["agent"]) - {"name"}
    named |= set(data.get("agent_config") or {})
    return {k: settings[k] for k in named if k in settings}, run


def given_values(args: argparse.Namespace) -> dict:
    """The settings given explicitly, flat by name: ``--config FILE``'s, then the options."""
    values = read_config_file(args.config)[0] if getattr(args, "config", None) else {}
    values.update({name: getattr(args, name) for name in _setting_names(args)})
    return values


def _setting_names(args) -> list:
    names = {f.name for f in dataclasses.fields(TrainConfig)} - NOT_OPTIONS
    for agent in agents.names():
        names |= {f.name for f in dataclasses.fields(agents.get(agent).config)}
    return sorted(name for name in names if hasattr(args, name))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults, then ``--config FILE``, then the options given."""
    values = given_values(args)
    return TrainConfig(agent=values.pop("agent", "dqn")).replace(**values)


__all__ = [
    "add_config_options",
    "config_from_args",
    "given_values",
    "read_config_file",
    "field_docs",
    "option_name",
    "agent_options",
]
