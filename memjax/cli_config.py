"""``memjax train``'s options, generated from :class:`memjax.train.TrainConfig`, and config
files.

Every TrainConfig field is an option ``--field-name`` (``total_steps`` is ``--steps`` and
``buffer_capacity`` is ``--capacity``, as they always were), in the argument group of the
field's section comment, with the field's end-of-line comment as its help text. Options left
out of the command line keep the value of ``--config FILE`` (JSON or YAML: field names to
values; a ``summary.json`` written by ``memjax train`` works too, through its ``config`` key),
else the dataclass default.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import typing
from pathlib import Path

from memjax import _argtypes as types
from memjax.agents import LOSS_KINDS, NETWORK_KINDS
from memjax.train.config import AGENT_KINDS, REPLAY_KINDS, TrainConfig
from memjax.train.storage import LAYOUTS, REWARD_CODECS, check_obs_codec

RENAMED = {"total_steps": "steps", "buffer_capacity": "capacity"}
CHOICES = {"agent": AGENT_KINDS, "replay": REPLAY_KINDS, "network": NETWORK_KINDS,
           "loss": LOSS_KINDS, "layout": LAYOUTS, "reward_codec": REWARD_CODECS}
FRACTIONS = {"gamma", "tau", "eps_start", "eps_end", "eval_epsilon", "side_fraction"}
POSITIVE_FLOATS = {"lr", "adam_eps", "huber_delta", "priority_eps"}
NON_NEGATIVE_INTS = {"learning_starts"}


def option_name(field: str) -> str:
    """``--steps`` for ``total_steps``; otherwise the field name with dashes."""
    return "--" + RENAMED.get(field, field).replace("_", "-")


def field_docs(cls=TrainConfig) -> dict:
    """field name -> (section, help text), read from the class source: ``# section`` lines
    start a section; a field's end-of-line comment is its help."""
    docs, section = {}, "run"
    for line in inspect.getsource(cls).splitlines():
        header = re.fullmatch(r"    # ([a-z][^(]*?)(?: \(.*\))?", line)
        if header:
            section = header.group(1).strip()
            continue
        field = re.match(r"    (\w+): [^=]+=[^#]*(?:#\s*(.*))?$", line)
        if field:
            docs[field.group(1)] = (section, (field.group(2) or "").strip())
    return docs


def _obs_codec(text: str) -> str:
    try:
        check_obs_codec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _optional_positive_int(text: str):
    return None if text.strip().lower() == "none" else types.positive(text)


def _clip_norm(text: str):
    value = types.optional_float(text)
    return None if value == 0 else value


def option_kwargs(field: dataclasses.Field, hints: dict) -> dict:
    """argparse keyword arguments (type, choices or action) for one field."""
    name, hint = field.name, hints[field.name]
    special = {"obs_codec": _obs_codec, "hidden": types.hidden, "max_grad_norm": _clip_norm,
               "eval_max_steps": _optional_positive_int, "lr_end": types.optional_float,
               "samples_per_insert": types.optional_float,
               "rate_error_buffer": types.optional_float}
    metavar = RENAMED.get(name, name).upper()
    if name in special:
        return {"type": special[name], "metavar": metavar}
    if name in CHOICES:
        return {"choices": CHOICES[name]}
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint is int:
        kind = types.non_negative if name in NON_NEGATIVE_INTS else types.positive
    elif hint is float and name in FRACTIONS:
        kind = types.fraction
    elif hint is float:
        kind = types.positive_float if name in POSITIVE_FLOATS else types.number
    elif hint is str:
        kind = str
    else:
        raise TypeError(f"TrainConfig.{name}: no command-line type for {hint}")
    return {"type": kind, "metavar": metavar}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, grouped by section; absent options are absent from
    the parsed namespace (``argparse.SUPPRESS``), so a config file can fill them."""
    docs, hints = field_docs(), typing.get_type_hints(TrainConfig)
    defaults, groups = TrainConfig(), {}
    for field in dataclasses.fields(TrainConfig):
        section, text = docs.get(field.name, ("run", ""))
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} (TrainConfig)")
        default = getattr(defaults, field.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        groups[section].add_argument(option_name(field.name), dest=field.name,
                                     default=argparse.SUPPRESS,
                                     help=f"{text} (default: {shown})".lstrip(),
                                     **option_kwargs(field, hints))


def read_config_file(path) -> dict:
    """Field values from a JSON or YAML file (``.yaml``/``.yml``: YAML, else JSON); a
    ``memjax train`` summary.json gives its ``config``. ``ValueError`` for an unreadable file
    or unknown fields."""
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
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of TrainConfig fields, got "
                         f"{type(data).__name__}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"--config {path}: unknown TrainConfig fields {unknown}")
    if isinstance(data.get("hidden"), list):
        data["hidden"] = tuple(data["hidden"])
    return data


def given_values(args: argparse.Namespace) -> dict:
    """The TrainConfig fields set explicitly: ``--config FILE``'s, then the options given."""
    values = read_config_file(args.config) if getattr(args, "config", None) else {}
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                   if hasattr(args, f.name)})
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults, then ``--config FILE``, then the options given."""
    return dataclasses.replace(TrainConfig(), **given_values(args))


__all__ = ["add_config_options", "config_from_args", "given_values", "read_config_file",
           "field_docs", "option_name"]
