"""Method specs and the compress-evaluate pipeline behind ``memjax compress`` and
``experiments/compress_results.py``.

A spec is one or more stages joined by ``+``, applied left to right to every seed of a
checkpoint:

==========================  =======================================================================
``float32``                 the checkpoint as it is (the reference row)
``distill:H1,H2``           distil into a smaller MLP student (``distill:C/H`` for a conv student
                            with C filters and H hidden units)
``gprune:S``                gradual magnitude pruning to sparsity S (cubic schedule, global)
                            while distilling from the original into a copy of it
``prune:S[:DIST]``          one-shot magnitude pruning, DIST global (default), uniform or erk
``lowrank:E`` / ``lowrank:rR``  SVD, rank per layer keeping energy E, or rank R everywhere
``share:K``                 k-means weight sharing with K centroids per layer
``int8``/``int4``/``int2``  symmetric weight quantization, per channel (``int8:tensor``: one scale
                            per kernel)
==========================  =======================================================================

Stages go in that order: at most one training stage (distill, gprune), then at most one of
prune / lowrank / share, then at most one quantization (not after lowrank or share). A pruned
result is stored sparsely (:func:`memjax.compress.to_sparse`). Each seed's artefact is
serialized, read back, and the read-back tree is what gets evaluated.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax import envs
from memjax.agents import ConvQNetwork
from memjax.compress import core
from memjax.compress.distill import (
    DistillConfig,
    distill_train_config,
    make_distill_agent,
    run_distill,
    student_network,
)
from memjax.compress.evaluate import agreement, evaluate, visited_states
from memjax.compress.low_rank import low_rank
from memjax.compress.prune import DISTRIBUTIONS, gradual_pruning, prune, to_sparse
from memjax.compress.quantize import quantize
from memjax.compress.share import share

TRAIN, STRUCT, QUANT = "train", "struct", "quant"


@dataclasses.dataclass(frozen=True)
class Stage:
    kind: str  # distill | gprune | prune | lowrank | share | quantize | float32
    arg: Any = None
    extra: Any = None

    @property
    def group(self) -> str:
        return {
            "distill": TRAIN,
            "gprune": TRAIN,
            "prune": STRUCT,
            "lowrank": STRUCT,
            "share": STRUCT,
            "quantize": QUANT,
        }.get(self.kind, "")


def _num(text: str, spec: str, lo: float, hi: float, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{spec!r}: {what} must be a number, got {text!r}") from None
    if not lo <= v <= hi:
        raise ValueError(f"{spec!r}: {what} must be in [{lo}, {hi}], got {text!r}")
    return v


def parse_spec(spec: str) -> list:
    """A spec string as a list of :class:`Stage`, with a ``ValueError`` (one line) for
    anything malformed or out of order."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty method spec")
    if spec == "float32":
        return [Stage("float32")]
    stages = []
    for part in spec.split("+"):
        name, _, rest = part.partition(":")
        if name in ("int8", "int4", "int2"):
            if rest not in ("", "channel", "tensor"):
                raise ValueError(f"{spec!r}: {name} takes ':channel' or ':tensor', got {rest!r}")
            stages.append(Stage("quantize", int(name[3:]), rest != "tensor"))
        elif name == "prune":
            s, _, dist = rest.partition(":")
            dist = dist or "global"
            if dist not in DISTRIBUTIONS:
                raise ValueError(
                    f"{spec!r}: pruning distribution must be one of {DISTRIBUTIONS}, got {dist!r}"
                )
            stages.append(Stage("prune", _num(s, spec, 0.0, 0.999, "sparsity"), dist))
        elif name == "gprune":
            stages.append(Stage("gprune", _num(rest, spec, 0.0, 0.999, "sparsity")))
        elif name == "lowrank":
            if rest.startswith("r"):
                r = _num(rest[1:], spec, 1, 1e9, "rank")
                if not float(r).is_integer():
                    raise ValueError(f"{spec!r}: rank must be an integer")
                stages.append(Stage("lowrank", int(r), "rank"))
            else:
                stages.append(Stage("lowrank", _num(rest, spec, 1e-6, 1.0, "energy"), "energy"))
        elif name == "share":
            k = _num(rest, spec, 2, 256, "k")
            if not float(k).is_integer():
                raise ValueError(f"{spec!r}: k must be an integer")
            stages.append(Stage("share", int(k)))
        elif name == "distill":
            if "/" in rest:
                c, _, h = rest.partition("/")
                try:
                    arch = ("conv", int(c), int(h))
                except ValueError:
                    raise ValueError(f"{spec!r}: conv student is distill:CHANNELS/HIDDEN") from None
            else:
                try:
                    arch = ("mlp", tuple(int(w) for w in rest.split(",") if w))
                except ValueError:
                    raise ValueError(f"{spec!r}: MLP student is distill:W1,W2,...") from None
                if not arch[1]:
                    raise ValueError(
                        f"{spec!r}: give the student's hidden widths, e.g. distill:32,32"
                    )
            if any(v <= 0 for v in (arch[1] if arch[0] == "mlp" else arch[1:])):
                raise ValueError(f"{spec!r}: student widths must be positive")
            stages.append(Stage("distill", arch))
        else:
            raise ValueError(
                f"unknown compression method {name!r} in {spec!r}; known: "
                "float32, int8, int4, int2, prune:S, gprune:S, lowrank:E, "
                "share:K, distill:H1,H2"
            )
    order = [TRAIN, STRUCT, QUANT]
    groups = [s.group for s in stages]
    for g in order:
        if groups.count(g) > 1:
            raise ValueError(f"{spec!r}: at most one {g} stage")
    if groups != sorted(groups, key=order.index):
        raise ValueError(
            f"{spec!r}: stages must go training (distill, gprune), then prune / "
            "lowrank / share, then int8/int4/int2"
        )
    kinds = [s.kind for s in stages]
    if "quantize" in kinds and ("lowrank" in kinds or "share" in kinds):
        raise ValueError(
            f"{spec!r}: quantizing low-rank factors or shared codebooks is not "
            "supported (share already stores integer indices)"
        )
    q = [s for s in stages if s.kind == "quantize"]
    if q and q[0].arg != 8 and any(k in kinds for k in ("prune", "gprune")):
        raise ValueError(f"{spec!r}: sparse storage holds float32 or int8 weights; use int8")
    return stages


def artefact_folder(spec: str) -> str:
    """The folder of ``spec``'s artefacts in a result's ``out_dir`` (``/`` and ``:`` as ``_``)."""
    return spec.replace("/", "_").replace(":", "_")


def result_network(spec: str, network, obs, num_actions: int):
    """The flax network of ``spec``'s artefacts: the distilled student of a distill stage, else
    ``network`` (the checkpoint's).

    Args:
      spec: a method spec (:func:`parse_spec`).
      network: the checkpoint's Q-network.
      obs: a ``jax.ShapeDtypeStruct`` of ONE observation.
      num_actions: A.
    """
    for stage in parse_spec(spec):
        if stage.kind == "distill":
            arch = stage.arg
            if arch[0] == "mlp":
                config = DistillConfig(network="mlp", hidden=tuple(arch[1]))
            else:
                config = DistillConfig(network="conv", channels=arch[1], hidden=(arch[2],))
            return student_network(config, obs, num_actions)
    return network


def _stack(trees):
    """Stack per-seed trees when their structures and shapes agree, else None."""
    try:
        return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)
    except (ValueError, TypeError):
        return None


def _seed(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@dataclasses.dataclass
class Context:
    """What every spec of one checkpoint shares: the teacher, its environment, its returns
    and the states its greedy policy visits."""

    checkpoint: Any
    network: Any
    env: Any
    env_params: Any
    seeds: list
    episodes: int
    epsilon: float
    eval_key: Any
    states: Any = None  # [S, N, *obs] visited by the teacher
    extra_epsilon: float | None = None  # also evaluate epsilon-greedy at this epsilon
    trained: dict = dataclasses.field(default_factory=dict)  # training stage -> (net, params)
    distill_config: Any = None  # the loop's TrainConfig of distill/gprune (agent: distill)
    log: Callable | None = print


def make_context(
    checkpoint,
    *,
    seeds=None,
    episodes: int = 100,
    epsilon: float = 0.0,
    eval_seed: int = 1,
    state_envs: int = 32,
    state_steps: int = 250,
    distill_config=None,
    log=print,
    extra_epsilon: float | None = None,
) -> Context:
    """The teacher, its environment, the states its greedy policy visits and the settings of
    the training stages, for :func:`build` and :func:`run_specs`.

    ``distill_config`` is the :class:`memjax.train.TrainConfig` of the distill and gprune
    stages' runs (default :func:`memjax.compress.distill_train_config`); its environment and
    teacher become the checkpoint's."""
    if not checkpoint.spec.feedforward:
        raise ValueError(
            "memjax compress works on feedforward Q-networks (mlp, conv); this "
            f"checkpoint holds agent {checkpoint.config.agent!r}'s, which carries "
            f"a state from step to step"
        )
    env, env_params = envs.make(checkpoint.config.env)
    seeds = list(range(checkpoint.num_seeds)) if seeds is None else list(seeds)
    for s in seeds:
        if not 0 <= s < checkpoint.num_seeds:
            raise ValueError(
                f"seed {s} out of range: the checkpoint has {checkpoint.num_seeds} seeds"
            )
    loop = distill_train_config() if distill_config is None else distill_config
    loop = loop.replace(env=checkpoint.config.env, teacher=str(checkpoint.path or ""))
    ctx = Context(
        checkpoint,
        checkpoint.network(),
        env,
        env_params,
        seeds,
        episodes,
        epsilon,
        jax.random.key(eval_seed),
        distill_config=loop,
        log=log,
        extra_epsilon=extra_epsilon,
    )
    teacher = _teacher(ctx)
    keys = jax.random.split(jax.random.fold_in(ctx.eval_key, 7), len(seeds))
    net = ctx.network
    ctx.states = jax.jit(
        jax.vmap(lambda p, k: visited_states(net, p, env, env_params, k, state_envs, state_steps))
    )(teacher, keys)
    return ctx


def _teacher(ctx):
    return jax.tree.map(lambda x: jnp.asarray(x)[np.asarray(ctx.seeds)], ctx.checkpoint.params)


def _student_config(ctx, arch):
    """The loop config of a distill stage with the student ``arch`` of its spec."""
    if arch[0] == "mlp":
        return ctx.distill_config.replace(network="mlp", hidden=tuple(arch[1]))
    if not isinstance(ctx.network, ConvQNetwork):
        raise ValueError("a conv student (distill:C/H) needs a conv teacher")
    return ctx.distill_config.replace(network="conv", channels=arch[1], hidden=(arch[2],))


def _distill(ctx, config, student, optimizer, keys, teacher, start=None, vmap_seeds=True):
    """Students of ``student``'s network distilled from ``teacher`` (seed axis) by the loop."""
    from memjax.train import make_train

    agent = make_distill_agent(
        ctx.network,
        student,
        optimizer,
        tau=config.agent_config.temperature,
        teacher_epsilon=config.agent_config.teacher_epsilon,
    )
    trainer = make_train(config, env=ctx.env, env_params=ctx.env_params, agent=agent)
    return run_distill(
        trainer, keys, teacher, start, optimizer=optimizer, log=ctx.log, vmap_seeds=vmap_seeds
    )


def build(ctx: Context, spec: str):
    """Run ``spec``'s stages. Returns ``(network, [per-seed artefact bytes], info)``."""
    stages = parse_spec(spec)
    network, params = ctx.network, _teacher(ctx)
    info = {"train_seconds": 0.0}
    keys = jax.random.split(jax.random.key(1234), len(ctx.seeds))
    sparse = False
    for st in stages:
        if st.group == TRAIN and st in ctx.trained:  # same training stage as an earlier spec
            network, params = ctx.trained[st]
            sparse = sparse or st.kind == "gprune"
            info["train_seconds_reused"] = True
            continue
        if st.kind == "float32":
            pass
        elif st.kind == "distill":
            from memjax.train import make_optimizer
            from memjax.train.build import observation_spec

            config = _student_config(ctx, st.arg)
            student = student_network(
                config.agent_config,
                observation_spec(ctx.env, ctx.env_params),
                int(ctx.checkpoint.meta["num_actions"]),
            )
            t0 = time.perf_counter()
            params, m = _distill(ctx, config, student, make_optimizer(config), keys, params)
            info["train_seconds"] += time.perf_counter() - t0
            info["distill_final_batch_agreement"] = float(m["agreement"][-1].mean())
            network = student
            ctx.trained[st] = (network, params)
        elif st.kind == "gprune":
            cfg = ctx.distill_config
            iters = cfg.total_updates
            lr = (
                optax.linear_schedule(cfg.lr, cfg.lr_end or 0.0, max(iters, 1))
                if cfg.lr_end is not None
                else cfg.lr
            )
            tx = gradual_pruning(
                optax.adam(lr),
                st.arg,
                begin_step=0,
                end_step=max(1, int(0.6 * iters)),
                update_every=max(1, iters // 100),
                distribution="global",
            )
            t0 = time.perf_counter()
            params, _ = _distill(
                ctx, cfg, network, tx, keys, _teacher(ctx), start=params, vmap_seeds=False
            )
            info["train_seconds"] += time.perf_counter() - t0
            sparse = True
            ctx.trained[st] = (network, params)
        elif st.kind == "prune":
            params = jax.jit(jax.vmap(lambda p: prune(p, st.arg, st.extra)[0]))(params)
            sparse = True
        elif st.kind == "lowrank":
            if st.extra == "rank":
                params = jax.vmap(lambda p: low_rank(p, rank=st.arg))(params)
            else:  # ranks depend on each seed's singular values: one seed at a time
                params = [low_rank(_seed(params, i), energy=st.arg) for i in range(len(ctx.seeds))]
        elif st.kind == "share":
            params = jax.jit(jax.vmap(lambda p: share(p, st.arg)))(params)
        elif st.kind == "quantize":
            f = jax.jit(jax.vmap(lambda p: quantize(p, st.arg, st.extra)))
            params = (
                f(params)
                if not isinstance(params, list)
                else [jax.jit(lambda p: quantize(p, st.arg, st.extra))(p) for p in params]
            )
    per_seed = (
        params if isinstance(params, list) else [_seed(params, i) for i in range(len(ctx.seeds))]
    )
    blobs = []
    for p in per_seed:
        p = jax.device_get(p)
        if sparse:
            p = to_sparse(p)
        blobs.append(core.serialize(p))
    return network, blobs, info


def evaluate_artefacts(ctx: Context, network, blobs) -> dict:
    """Read each seed's artefact back and measure it: parameters, bytes, greedy returns
    (``ctx.episodes`` per seed) and agreement with the teacher on ``ctx.states``."""
    trees = [core.deserialize(b) for b in blobs]
    keys = jax.random.split(ctx.eval_key, len(ctx.seeds))
    teacher = _teacher(ctx)
    env, ep, E, eps = ctx.env, ctx.env_params, ctx.episodes, ctx.epsilon

    extra = ctx.extra_epsilon

    def one(p, k, t, obs):
        ret = evaluate(network, p, env, ep, k, E, eps)
        agree = agreement(ctx.network, t, network, p, obs)
        ret2 = (
            evaluate(network, p, env, ep, jax.random.fold_in(k, 1), E, extra)
            if extra is not None
            else ret
        )
        return ret, agree, ret2

    stacked = _stack(trees)
    if stacked is not None:
        rets, agrees, rets2 = jax.jit(jax.vmap(one))(stacked, keys, teacher, ctx.states)
    else:
        outs = [
            jax.jit(one)(p, keys[i], _seed(teacher, i), ctx.states[i]) for i, p in enumerate(trees)
        ]
        rets, agrees, rets2 = (jnp.stack([o[j] for o in outs]) for j in range(3))
    rets, agrees = np.asarray(rets, np.float64), np.asarray(agrees, np.float64)
    rets2 = np.asarray(rets2, np.float64)
    out = (
        {}
        if extra is None
        else {
            "epsilon_extra": extra,
            "return_eps_mean": float(rets2.mean()),
            "return_eps_std_over_seeds": float(rets2.mean(axis=1).std()),
            "return_eps_per_seed": [float(x) for x in rets2.mean(axis=1)],
        }
    )
    return out | {
        "params": int(np.mean([core.count_params(t) for t in trees])),
        "serialized_bytes": float(np.mean([len(b) for b in blobs])),
        "kernel_bytes": float(np.mean([core.kernel_bytes(t) for t in trees])),
        "return_mean": float(rets.mean()),
        "return_std_over_seeds": float(rets.mean(axis=1).std()),
        "return_per_seed": [float(x) for x in rets.mean(axis=1)],
        "agreement": float(agrees.mean()),
        "agreement_per_seed": [float(x) for x in agrees],
    }


def chance_check(ctx: Context) -> dict:
    """The uncompressed checkpoint against a uniformly random policy, measured the same way
    (``ctx.episodes`` episodes per seed with the rows' keys; the random policy: epsilon 1).
    Returns ``teacher_return`` and ``random_return`` (means over every episode) and
    ``at_chance``: whether the teacher is not better than the random policy by two standard
    errors of the difference, as an untrained checkpoint is not: its "% of float32" would
    compare chance with chance."""
    keys = jax.random.split(ctx.eval_key, len(ctx.seeds))
    env, ep, net, n = ctx.env, ctx.env_params, ctx.network, ctx.episodes

    def both(p, k):
        return evaluate(net, p, env, ep, k, n, ctx.epsilon), evaluate(net, p, env, ep, k, n, 1.0)

    teacher, random = (
        np.asarray(r, np.float64).ravel() for r in jax.jit(jax.vmap(both))(_teacher(ctx), keys)
    )
    return teacher_vs_random(teacher, random)


def teacher_vs_random(teacher, random) -> dict:
    """:func:`chance_check`'s verdict from the per-episode returns of the teacher and of the
    random policy."""
    teacher, random = np.asarray(teacher, np.float64), np.asarray(random, np.float64)
    se = float(np.sqrt(teacher.var() / teacher.size + random.var() / random.size))
    return {
        "teacher_return": float(teacher.mean()),
        "random_return": float(random.mean()),
        "at_chance": bool(teacher.mean() <= random.mean() + 2.0 * se),
    }


def run_specs(ctx: Context, specs, out_dir=None) -> list:
    """Build and evaluate every spec; ``float32`` is always measured first as the reference.
    Returns a list of row dicts (with ``pct_return``, ``x_smaller_serialized`` and
    ``x_smaller_kernels`` relative to the float32 row). With ``out_dir``, each seed's
    artefact is written to ``out_dir/<spec>/seed<i>.msgpack``."""
    from pathlib import Path

    specs = list(dict.fromkeys(["float32", *specs]))
    rows = []
    for spec in specs:
        t0 = time.perf_counter()
        if ctx.log:
            ctx.log(f"{spec}: compressing")
        network, blobs, info = build(ctx, spec)
        row = {"method": spec, **evaluate_artefacts(ctx, network, blobs), **info}
        row["seconds"] = time.perf_counter() - t0
        if out_dir is not None:
            d = Path(out_dir) / artefact_folder(spec)
            d.mkdir(parents=True, exist_ok=True)
            for i, b in zip(ctx.seeds, blobs):
                (d / f"seed{i}.msgpack").write_bytes(b)
        rows.append(row)
        if ctx.log:
            ctx.log(
                f"{spec}: return {row['return_mean']:.1f}, agreement "
                f"{row['agreement']:.3f}, {row['serialized_bytes']:,.0f} bytes, "
                f"{row['params']:,} params ({row['seconds']:.0f} s)"
            )
    ref = rows[0]
    for r in rows:
        r["pct_return"] = (
            100.0 * r["return_mean"] / ref["return_mean"] if ref["return_mean"] else float("nan")
        )
        r["x_smaller_serialized"] = ref["serialized_bytes"] / r["serialized_bytes"]
        r["x_smaller_kernels"] = ref["kernel_bytes"] / r["kernel_bytes"]
        r["params_fraction"] = r["params"] / ref["params"]
        if "return_eps_mean" in r:
            r["pct_return_eps"] = (
                100.0 * r["return_eps_mean"] / ref["return_eps_mean"]
                if ref["return_eps_mean"]
                else float("nan")
            )
    return rows


def format_table(rows) -> str:
    """A markdown table of :func:`run_specs` rows (with epsilon-greedy columns when the rows
    have them)."""
    eps = "return_eps_mean" in rows[0]
    head = (
        "| method | params | serialized bytes | x smaller (file) | x smaller (kernels) "
        "| greedy return | % of float32 | agreement |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if eps:
        head += f" ε={rows[0]['epsilon_extra']} return | % of float32 (ε) |"
        rule += "---:|---:|"
    lines = [head, rule]
    for r in rows:
        line = (
            f"| {r['method']} | {r['params']:,} | {r['serialized_bytes']:,.0f} | "
            f"{r['x_smaller_serialized']:.1f}x | {r['x_smaller_kernels']:.1f}x | "
            f"{r['return_mean']:.1f} ± {r['return_std_over_seeds']:.1f} | "
            f"{r['pct_return']:.1f}% | {100 * r['agreement']:.1f}% |"
        )
        if eps:
            line += (
                f" {r['return_eps_mean']:.2f} ± {r['return_eps_std_over_seeds']:.2f} | "
                f"{r['pct_return_eps']:.1f}% |"
            )
        lines.append(line)
    return "\n".join(lines)


__all__ = [
    "Stage",
    "parse_spec",
    "Context",
    "make_context",
    "build",
    "evaluate_artefacts",
    "chance_check",
    "teacher_vs_random",
    "run_specs",
    "format_table",
    "artefact_folder",
    "result_network",
]
