"""What the benchmarks and experiment scripts share (and the tests' HLO copy checks).

* Timing (the protocol of every benchmark here): :class:`Program` is one AOT-compiled, donated
  program ``carry -> carry`` on a :class:`Side` (a contender's live carry); :func:`measure`
  interleaves programs over rounds with the order rotated; :func:`time_stats` and
  :func:`paired_ratio` (the median of per-round ratios: only ratios mean anything on a shared
  machine); :func:`run_modes` times one op per dispatch ("call") and K ops per ``lax.scan``
  ("fused") and gives the paired ratios.
* HLO: :func:`hlo_instructions` walks compiled HLO text, :func:`hlo_copies` finds copies (a
  copy as large as a buffer array means it was not updated in place), :func:`hlo_summary`
  counts what a program runs at kernel level.
* Machine and git state (:func:`machine_info`, :func:`git_state`), the results file name tag
  (:func:`default_tag`), JSON writing, argparse types for integer lists and shapes.

Nothing here is part of the memjax package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
if str(ROOT) not in sys.path:  # run as a script from a source checkout
    sys.path.insert(0, str(ROOT))

from memjax._argtypes import count, positive  # noqa: E402

# --------------------------------------------------------------------------- timing


class Program:
    """One AOT-compiled, donated program ``fn(carry, *consts) -> carry``."""

    def __init__(self, name, fn, side, consts=(), ops_per_call=1):
        self.name, self.side, self.consts, self.ops_per_call = name, side, consts, ops_per_call
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            lowered = jax.jit(fn, donate_argnums=0).lower(side.carry, *consts)
            t1 = time.perf_counter()
            self.exe = lowered.compile()
            t2 = time.perf_counter()
        self.lower_s, self.compile_s = t1 - t0, t2 - t1
        self.warnings = [str(w.message) for w in caught if "donat" in str(w.message).lower()]
        self.hlo = hlo_summary(self.exe.as_text())
        # A copy as large as a state array (>= 64 KiB) means XLA could not update it in
        # place: the op then costs O(capacity) whatever the algorithm.
        sizes = {x.size * x.dtype.itemsize for x in jax.tree.leaves(side.carry)}
        self.full_state_copy = [
            where
            for where in ("entry", "in_loops")
            if any(65536 <= s <= self.hlo[f"largest_copy_bytes_{where}"] for s in sizes)
        ]
        self.donation_ok = None
        self.n = 1

    def run(self, n: int) -> float:
        """Run ``n`` calls; return seconds per op."""
        carry = self.side.carry
        jax.block_until_ready(carry)
        t0 = time.perf_counter()
        for _ in range(n):
            carry = self.exe(carry, *self.consts)
        jax.block_until_ready(carry)
        dt = time.perf_counter() - t0
        self.side.carry = carry
        return dt / (n * self.ops_per_call)

    def first_call_checks_donation(self) -> None:
        """Run once; donation worked if XLA consumed the big input buffers."""
        leaves = jax.tree.leaves(self.side.carry)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.run(1)
        self.warnings += [str(w.message) for w in caught if "donat" in str(w.message).lower()]
        big = [x for x in leaves if x.size >= 1024]
        self.donation_ok = bool(big) and all(x.is_deleted() for x in big)

    def warm_up(self, round_seconds: float, max_calls: int = 20000):
        self.first_call_checks_donation()
        self.run(2)
        per_call = self.run(3) * self.ops_per_call
        self.n = int(min(max_calls, max(3, round_seconds / max(per_call, 1e-7))))

    def info(self) -> dict:
        return {
            "lower_s": round(self.lower_s, 4),
            "compile_s": round(self.compile_s, 4),
            "calls_per_round": self.n,
            "ops_per_call": self.ops_per_call,
            "donation_ok": self.donation_ok,
            "donation_warnings": self.warnings,
            "full_state_copy": self.full_state_copy,
            "hlo": self.hlo,
        }


class LoopProgram(Program):
    """A Program with a cheaper warm-up for long calls (a training chunk takes up to seconds):
    one call to check donation, one to size the calls per round."""

    def warm_up(self, round_seconds: float, max_calls: int = 1000):
        self.first_call_checks_donation()
        per_call = self.run(1) * self.ops_per_call
        self.n = int(min(max_calls, max(1, round(round_seconds / per_call))))


class Side:
    """A contender's live carry (buffer state + accumulators), shared by its programs."""

    def __init__(self, name, carry):
        self.name, self.carry = name, carry


def measure(programs, rounds: int, round_seconds: float) -> dict:
    """Interleave ``programs`` (a dict name -> Program) for ``rounds`` rounds; per program the
    seconds per op of each round."""
    for p in programs.values():
        p.warm_up(round_seconds)
    names = list(programs)
    per_round = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            per_round[k].append(programs[k].run(programs[k].n))
    return per_round


def zero():
    """A fresh float32 accumulator (never share one array between donated carries)."""
    return jnp.zeros((), jnp.float32)


def us(x: float) -> float:
    return round(x * 1e6, 3)


def time_stats(samples) -> dict:
    return {
        "min_us": us(min(samples)),
        "median_us": us(statistics.median(samples)),
        "rounds_us": [us(s) for s in samples],
    }


def paired_ratio(num, den) -> float:
    """The median over rounds of ``num / den`` measured within the same round."""
    return round(statistics.median(a / b for a, b in zip(num, den)), 3)


def best_of(times, sides):
    """Per-round times of ``sides`` (a name, or a tuple of names: their per-round minimum)."""
    if isinstance(sides, str):
        return times[sides]
    return [min(x) for x in zip(*(times[n] for n in sides))]


def fused(step, length: int, with_xs: bool):
    """``length`` steps of ``step(carry, x) -> carry`` in one lax.scan."""
    if with_xs:
        return lambda carry, xs: jax.lax.scan(lambda c, x: (step(c, x), None), carry, xs)[0]
    return lambda carry: jax.lax.scan(
        lambda c, _: (step(c, None), None), carry, None, length=length
    )[0]


def programs_for(mode, steps_by_side, sides, consts, fused_ops):
    """Program per side for ``mode`` (call: one op per dispatch; fused: ``fused_ops`` ops per
    scan). ``consts[name]``: the call's extra arguments; ``consts[name + "_fused"]``: the
    scanned inputs (a leading axis of ``fused_ops``)."""
    progs = {}
    for name, step in steps_by_side.items():
        if mode == "call":
            progs[name] = Program(
                name, lambda c, *x, st=step: st(c, *x), sides[name], consts.get(name, ())
            )
        else:
            xs = consts.get(f"{name}_fused", ())
            progs[name] = Program(
                f"{name}/fused",
                fused(step, fused_ops, bool(xs)),
                sides[name],
                xs,
                ops_per_call=fused_ops,
            )
    return progs


def run_modes(cfg, steps_by_side, sides, ratios, consts=None, *, fused_ops) -> dict:
    """Time every mode of ``cfg["modes"]`` (``cfg["rounds"]`` rounds of ``cfg["round_seconds"]``);
    return {"modes": {mode: {"times", *ratios}}, "programs": {mode: {side: info}}} with the
    given paired ratios (name -> (numerator side, denominator side); a tuple of numerator
    sides: their per-round minimum, the best of them)."""
    out = {"modes": {}, "programs": {}}
    for mode in cfg["modes"]:
        progs = programs_for(mode, steps_by_side, sides, consts or {}, fused_ops)
        t = measure(progs, cfg["rounds"], cfg["round_seconds"])
        out["modes"][mode] = {
            "times": {k: time_stats(v) for k, v in t.items()},
            **{r: paired_ratio(best_of(t, a), t[b]) for r, (a, b) in ratios.items()},
        }
        out["programs"][mode] = {k: p.info() for k, p in progs.items()}
        del progs
    return out


def consume(items) -> jax.Array:
    """One float32 from every sampled leaf (so no gather is dropped)."""
    return sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(items))


def sampling_step(draw):
    """A step over the carry ``(state, key, acc)``: ``draw(state, subkey)`` gives sampled items,
    reduced into ``acc`` (the state is unchanged)."""

    def step(carry, _=None):
        state, key, acc = carry
        key, sub = jax.random.split(key)
        return state, key, acc + consume(draw(state, sub))

    return step


def chunked_fill(add_chunk, state, total: int, chunk: int, key):
    """Call ``add_chunk(state, key, n)`` (n static) until ``total`` items were added."""
    jitted = jax.jit(add_chunk, donate_argnums=0, static_argnums=2)
    done = 0
    while done < total:
        n = min(chunk, total - done)
        key, sub = jax.random.split(key)
        state = jitted(state, sub, n)
        done += n
    return jax.block_until_ready(state)


def as_carry_fn(f):
    """A vmapped ``f(state) -> (state, metrics)`` as a program ``carry -> carry``."""
    vf = jax.vmap(f)
    return lambda carry: vf(carry[0])


def flashbax_modules(who: str = "bench_replay", error=SystemExit):
    """(flashbax, its prioritised_trajectory_buffer module), or ``error`` saying how to get it."""
    try:
        import flashbax as fbx
        from flashbax.buffers import prioritised_trajectory_buffer as fbx_pt
    except ImportError as e:  # pragma: no cover - exercised only without the dev extra
        raise error(
            f"{who}: flashbax is needed as the benchmark peer ({e}); "
            "install it with `pip install flashbax==0.1.3` or `pip install -e .[dev]`"
        ) from None
    return fbx, fbx_pt


def shape_str(shape) -> str:
    return "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# ------------------------------------------------------------------------------ HLO

_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{$")
_INSTR = re.compile(r"^(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_SHAPE = re.compile(r"^(\w+)\[([\d,]*)\]")
_NESTED = re.compile(r"(?:calls|to_apply)=%?([\w.\-]+)")
_TRIVIAL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}
_BYTES = {
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "f16": 2,
    "bf16": 2,
    "f64": 8,
    "s64": 8,
    "u64": 8,
    "pred": 1,
    "s8": 1,
    "u8": 1,
}


def _split_type(rhs: str) -> tuple:
    """(result type, rest) of an instruction's right-hand side: ``f32[4,7]{1,0} copy(...)`` ->
    (``f32[4,7]{1,0}``, ``copy(...)``); a tuple type is kept whole."""
    if rhs.startswith("("):  # tuple shape: skip to its closing parenthesis
        depth = 0
        for i, ch in enumerate(rhs):  # noqa: B007 - i is the end, used below
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                break
        return rhs[: i + 1], rhs[i + 1 :].lstrip()
    head, _, rest = rhs.partition(" ")
    return head, rest


class Instr(NamedTuple):
    where: str  # "entry", "loop" or "nested" (see hlo_instructions)
    name: str  # e.g. "copy.3"
    op: str  # the opcode, e.g. "copy"
    rhs: str  # what follows "=": the result type, the opcode, operands and attributes
    line: str  # the whole line, stripped


def hlo_instructions(text: str, nested: bool = False):
    """Yield an :class:`Instr` for each instruction of compiled HLO text: where is
    "entry" (the entry computation), "loop" (any other computation that is not called by an
    instruction: while bodies and conditions, called computations) or, with ``nested``,
    "nested" (the insides of fusions, reducers, comparators)."""
    called = set(_NESTED.findall(text))
    cur = entry = None
    for line in text.splitlines():
        s = line.strip()
        m = _HEADER.match(s)
        if m:
            cur = m.group(2)
            if m.group(1):
                entry = cur
            continue
        if s == "}":
            cur = None
            continue
        m = _INSTR.match(s)
        if not m:
            continue
        if cur is not None and cur == entry:
            where = "entry"
        elif cur is not None and cur not in called:
            where = "loop"
        elif nested:
            where = "nested"
        else:
            continue
        rest = _split_type(m.group(2))[1]
        yield Instr(where, m.group(1), rest.split("(", 1)[0], m.group(2), s)


def array_size(rhs: str):
    """(bytes, "f32[dims]") of the array an instruction's right-hand side produces, or None
    (a tuple)."""
    sm = _SHAPE.match(rhs)
    if not sm:
        return None
    dims = [int(d) for d in sm.group(2).split(",") if d]
    return int(np.prod(dims)) * _BYTES.get(sm.group(1), 4), f"{sm.group(1)}[{sm.group(2)}]"


class HloCopy(NamedTuple):
    where: str  # "entry", "loop" or "nested" (see hlo_instructions)
    nbytes: int | None  # None for a tuple result (copy-start)
    shape: str | None  # e.g. "f32[4099,7]"; None for a tuple result
    type: str  # the result type as XLA writes it, e.g. "f32[4099,7]{1,0}"
    line: str  # the instruction


def hlo_copies(
    text: str, *, shapes=None, min_bytes: int = 0, nested: bool = False, ops=("copy",)
) -> list:
    """The copies in compiled HLO text, as :class:`HloCopy`, in text order.

    ``ops``: the opcodes that count (add "copy-start" for asynchronous copies); ``nested``:
    also inside fusions and other called computations; ``shapes``: only copies producing one
    of these, an iterable of (dtype_prefix, shape) such as ("f32", (4099, 7)), matched against
    XLA's type strings (``f32[4099,7]{1,0}``, tuples included); ``min_bytes``: only array
    results at least this large.
    """
    wanted = (
        None
        if shapes is None
        else [f"{dt}[{','.join(str(d) for d in shape)}]" for dt, shape in shapes]
    )
    out = []
    for ins in hlo_instructions(text, nested=nested):
        if ins.op not in ops:
            continue
        size = array_size(ins.rhs)
        result_type = _split_type(ins.rhs)[0]
        if wanted is not None and not any(w in result_type for w in wanted):
            continue
        if min_bytes and (size is None or size[0] < min_bytes):
            continue
        out.append(
            HloCopy(
                ins.where,
                size[0] if size else None,
                size[1] if size else None,
                result_type,
                ins.line,
            )
        )
    return out


def hlo_summary(text: str) -> dict:
    """What a compiled program runs, at kernel level (the entry computation and loop
    bodies, not the insides of fusions, reducers or comparators): op counts, fused
    kernels by name, and the largest ``copy`` in the entry computation and inside
    loops (a copy as big as a buffer array means it was not updated in place)."""
    counts, fusions, copies = {}, {}, {"entry": 0, "loop": 0}
    for ins in hlo_instructions(text):
        if ins.op in _TRIVIAL:
            continue
        counts[ins.op] = counts.get(ins.op, 0) + 1
        if ins.op == "fusion":
            base = re.sub(r"(\.\d+)+$", "", ins.name)
            fusions[base] = fusions.get(base, 0) + 1
        size = array_size(ins.rhs) if ins.op == "copy" else None
        if size:
            copies[ins.where] = max(copies[ins.where], size[0])
    return {
        "kernels": sum(counts.values()),
        "ops": dict(sorted(counts.items())),
        "fusions": dict(sorted(fusions.items())),
        "largest_copy_bytes": max(copies.values()),
        "largest_copy_bytes_entry": copies["entry"],
        "largest_copy_bytes_in_loops": copies["loop"],
    }


# --------------------------------------------------------------------- machine, git, files


def git(*args) -> str | None:
    """The output of ``git args`` in this checkout, stripped; None where git does not answer."""
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except Exception:  # noqa: BLE001 - informational only
        return None


def git_state(short: bool = False) -> dict:
    """The code a result came from (informational): ``memjax_commit`` (HEAD, abbreviated with
    ``short``; None outside a checkout), ``memjax_dirty`` (uncommitted changes under memjax/;
    None if unknown) and ``memjax_uncommitted`` (those files, ``git status --porcelain``)."""
    commit = git("rev-parse", *(["--short"] if short else []), "HEAD") or None
    status = git("status", "--porcelain", "--", "memjax")
    return {
        "memjax_commit": commit,
        "memjax_dirty": None if status is None else bool(status),
        "memjax_uncommitted": status.splitlines() if status else [],
    }


def machine_info() -> dict:
    """Where a benchmark ran: host, CPU, jax backend and devices, package versions, git state."""

    def version(pkg):
        try:
            from importlib.metadata import version as v

            return v(pkg)
        except Exception:  # noqa: BLE001
            return None

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    devs = jax.devices()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in devs],
        "device_kind": devs[0].device_kind,
        "versions": {p: version(p) for p in ("jax", "jaxlib", "flashbax", "memjax", "numpy")},
        # HEAD and the uncommitted changes to memjax/ at run time (the figures measure the
        # working tree)
        **git_state(),
    }


def banner(what: str, info: dict) -> str:
    """A benchmark's first line: what it compares, on what (``info``: :func:`machine_info`)."""
    return (
        f"memjax {what} vs flashbax {info['versions']['flashbax']} | jax "
        f"{info['versions']['jax']} {info['jax_backend']} | devices {info['jax_devices']} | "
        f"{info['cpu_count']} CPUs ({info['cpu_model']}) | {info['platform']}"
    )


def log(line: str = "") -> None:
    """Print a line now (benchmarks report as they go)."""
    print(line, flush=True)


def default_tag() -> str:
    """ "cpu", or the accelerator's kind (e.g. "nvidia-h200"): the results file name tag."""
    if jax.default_backend() == "cpu":
        return "cpu"
    kind = jax.devices()[0].device_kind
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or jax.default_backend()


def results_path(name: str, quick: bool = False) -> Path:
    """A benchmark's default output, ``experiments/results/<name>_<tag>[_quick].json``."""
    return RESULTS / f"{name}_{default_tag()}{'_quick' if quick else ''}.json"


def write_json(doc: dict, out, log=print, indent: int = 1) -> Path:
    """Write a JSON document (creating folders) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=indent) + "\n")
    wall = f" ({doc['wall_seconds']} s)" if "wall_seconds" in doc else ""
    log(f"\nwrote {out}{wall}")
    return out


def update_summary(out_dir, **extra) -> dict:
    """Add ``extra`` keys to the ``summary.json`` that :func:`memjax.train.run` wrote into
    ``out_dir``; return the whole summary."""
    path = Path(out_dir) / "summary.json"
    data = json.loads(path.read_text())
    data.update(extra)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def options(args, quick: dict, full: dict, names) -> dict:
    """A benchmark's settings: ``quick`` or ``full`` (by ``args.quick``), with every option
    of ``names`` that was given on the command line (not None) in place of its default."""
    opts = dict(quick if args.quick else full)
    opts.update({name: getattr(args, name) for name in names if getattr(args, name) is not None})
    return opts


# ------------------------------------------------------------------------- argparse types


def ints(text: str) -> tuple:
    """A comma list of integers (each like ``65536``, ``1e4`` or ``10_000``)."""
    return tuple(count(x.strip()) for x in text.split(",") if x.strip())


def positive_ints(text: str) -> tuple:
    """A non-empty comma list of positive integers (seed counts, capacities)."""
    out = tuple(positive(x.strip()) for x in text.split(",") if x.strip())
    if not out:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of positive integers, got {text!r}"
        )
    return out


def shapes(text: str) -> tuple:
    """Item shapes: a comma list of ``AxBxC`` (e.g. ``4,10x10x4``)."""
    try:
        return tuple(tuple(int(d) for d in s.split("x")) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected item shapes like 4,10x10x4, got {text!r}"
        ) from None
