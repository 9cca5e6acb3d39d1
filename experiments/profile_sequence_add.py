"""Where a sequence add's time goes: memjax's add against the same add with parts removed,
and flashbax's, side by side in ONE process (interleaved rounds, fused mode).

    python experiments/profile_sequence_add.py [--rounds 9] [--shapes 4,10x10x4] [--out PATH]

Sides (E = 16 environments, windows of 80 steps, one row per add, 16 adds per call):

  ours       ``mj.replay.uniform(cap, layout=mj.replay.sequence(E, L)).add``
  no_side    the same without the side store: the next-observation check still runs, but no
             frame, tag or ``side_start`` is written (what the side-store move costs)
  no_check   also without the check (the pending row is still kept): the row write alone
  flashbax   ``flashbax.make_trajectory_buffer(...).add`` of the same steps (no next_obs)

Per side: the median µs per add, the median of per-round ratios flashbax / side with the
per-round range, and the kernels of the compiled program (fusions, copies, scatters). The
ablated sides are for attribution only: they do not keep final observations.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(_ROOT))

import memjax as mj  # noqa: E402
import memjax.replay.evicting_store as evicting_store  # noqa: E402
from experiments import bench_sequence as bs  # noqa: E402
from experiments._common import (  # noqa: E402
    Side,
    flashbax_modules,
    log,
    machine_info,
    run_modes,
    shapes,
    write_json,
)
from memjax.replay import row_ring  # noqa: E402
from memjax.replay.sequence_store import SequenceStore  # noqa: E402

CAPACITY = {(4,): 2**20, (10, 10, 4): 2**17}


class NoSide(SequenceStore):
    """The check runs; nothing goes to the side store."""

    def _push_side(self, state, differ):
        live = jnp.minimum(state.live_rows + 1, self.R)
        return state, jnp.zeros((self.E,), jnp.int32), live


class NoCheck(NoSide):
    """Neither the check nor the side store."""

    def write_row(self, state, per_step, obs, next_obs, first, errors=0):
        with _no_check():
            return super().write_row(state, per_step, obs, next_obs, first, errors)


@contextlib.contextmanager
def _no_check():
    equal = row_ring.rows_equal
    row_ring.rows_equal = lambda a, b: jnp.ones(a.shape[0], bool)
    try:
        yield
    finally:
        row_ring.rows_equal = equal


def buffer(store_class, cap):
    """A uniform sequence buffer whose store is ``store_class``."""
    make = evicting_store.make_store
    evicting_store.make_store = lambda c, codecs, layout: store_class(c, codecs, layout)
    try:
        return mj.replay.uniform(cap, layout=mj.replay.sequence(bs.E, bs.L))
    finally:
        evicting_store.make_store = make


def profile(shape, cap, rounds: int) -> dict:
    fbuf = bs.uniform_buffers(cap)[1]
    bufs = {"ours": buffer(SequenceStore, cap), "no_side": buffer(NoSide, cap)}
    bufs["no_check"] = buffer(NoCheck, cap)
    sides = {k: Side(k, b.init(bs.example(shape))) for k, b in bufs.items()}
    sides["flashbax"] = Side("flashbax", fbuf.init(bs.fbx_example(shape)))
    inputs = bs.add_inputs(bs.steps(jax.random.key(0), 16, shape))
    consts = {"flashbax": inputs["flashbax"], "flashbax_fused": inputs["flashbax_fused"]}
    for k in bufs:
        consts[k], consts[k + "_fused"] = inputs["ours"], inputs["ours_fused"]
    steps = {k: b.add for k, b in bufs.items()}
    steps["flashbax"] = fbuf.add
    cfg = dict(modes=("fused",), rounds=rounds, round_seconds=0.05)
    result = run_modes(cfg, steps, sides, {}, consts, fused_ops=16)
    times = result["modes"]["fused"]["times"]
    out = {}
    for k in steps:
        per_round = np.array(times["flashbax"]["rounds_us"]) / np.array(times[k]["rounds_us"])
        hlo = result["programs"]["fused"][k]["hlo"]
        out[k] = {
            "median_us": times[k]["median_us"],
            "flashbax_over_this": round(float(np.median(per_round)), 3),
            "flashbax_over_this_range": [
                round(float(per_round.min()), 3),
                round(float(per_round.max()), 3),
            ],
            "ops": hlo["ops"],
            "scatters": hlo["fusions"].get("wrapped_scatter", 0),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="profile_sequence_add.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument(
        "--shapes", type=shapes, default=((4,), (10, 10, 4)), help="item shapes, e.g. 4,10x10x4"
    )
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: print only)")
    args = p.parse_args(argv)
    flashbax_modules("profile_sequence_add")
    load = os.getloadavg()
    log(f"load before {load[0]:.2f}; {args.rounds} interleaved rounds, fused (16 adds per call)")
    doc = {"machine": machine_info(), "load_before": load, "rounds": args.rounds, "rows": []}
    for shape in args.shapes:
        cap = CAPACITY.get(tuple(shape), 2**17)
        row = profile(tuple(shape), cap, args.rounds)
        doc["rows"].append({"obs_shape": list(shape), "capacity": cap, "sides": row})
        log(f"\nobs {tuple(shape)}, capacity {cap:,}")
        log("| side | µs per add | flashbax / side (range) | kernels |\n|---|---:|---:|---|")
        for k, v in row.items():
            lo, hi = v["flashbax_over_this_range"]
            log(
                f"| {k} | {v['median_us']:.2f} | {v['flashbax_over_this']:.2f} "
                f"({lo:.2f}-{hi:.2f}) | {v['ops']}, {v['scatters']} scatters |"
            )
    doc["load_after"] = os.getloadavg()
    log(f"\nload after {doc['load_after'][0]:.2f}")
    if args.out:
        write_json(doc, args.out, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
