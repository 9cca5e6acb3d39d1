"""argparse types shared by ``memjax train`` and ``memjax compress``: each turns a
command-line string into a value or raises ``argparse.ArgumentTypeError`` with one line."""

from __future__ import annotations

import argparse
import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
}


def count(text: str) -> int:
    """An integer count; accepts ``500000``, ``500_000`` and ``5e5``."""
    try:
        v = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not v.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(v)


def positive(text: str) -> int:
    v = count(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def non_negative(text: str) -> int:
    v = count(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return v


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text: str) -> float:
    v = number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return v


def fraction(text: str) -> float:
    v = number(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text!r}")
    return v


def optional_float(text: str):
    if text.strip().lower() in ("none", "const", "constant"):
        return None
    try:
        return number(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def parse_size(text: str) -> int:
    """Bytes from ``64MB``, ``1.5GiB``, ``500k``, ``1048576`` (decimal k/M/G, binary KiB...)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"expected a size like 64MB, 1GiB or 500000, got {text!r}")
    v = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive size, got {text!r}")
    return v


def hidden(text: str) -> tuple:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths like 120,84, got {text!r}"
        ) from None
    if not widths or any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return widths
