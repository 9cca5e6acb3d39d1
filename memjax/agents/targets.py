"""Target-network updates (pure functions over parameter pytrees)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def soft_update(target: Any, online: Any, tau: float) -> Any:
    """Polyak averaging: ``tau * online + (1 - tau) * target`` leafwise (tau=1: a copy)."""
    return jax.tree.map(lambda t, o: (tau * o + (1.0 - tau) * t).astype(t.dtype), target, online)


def hard_update(target: Any, online: Any, do_update) -> Any:
    """``online`` where the bool scalar ``do_update`` is true, else ``target`` (a select, not a
    ``lax.cond``: safe and cheap under vmap)."""
    return jax.tree.map(lambda t, o: jnp.where(do_update, o, t), target, online)


def crossed_period(count_before, count_after, period: int):
    """True when a multiple of ``period`` lies in ``(count_before, count_after]``.

    E.g. with 10 envs per vector step and ``period=500`` env steps, true every 50 vector steps.
    """
    return (count_after // period) > (count_before // period)


def periodic_update(target: Any, online: Any, count_before, count_after, period: int,
                    tau: float = 1.0) -> Any:
    """Every ``period`` counts (crossed between ``count_before`` and ``count_after``), move the
    target toward ``online``: a hard copy when ``tau == 1``, else one Polyak step with ``tau``.
    With ``period == 1`` and ``tau < 1`` this is the usual soft update every step."""
    do = crossed_period(count_before, count_after, period)
    moved = online if tau == 1.0 else soft_update(target, online, tau)
    return hard_update(target, moved, do)
