"""Exported jax-format files run on a GPU with a newer JAX (issue 25): a device check.

    python experiments/export_gpu_check.py prepare DIR   # here: export files + their CPU outputs
    python3 DIR/export_gpu_check.py check DIR            # there: jax (+ onnxruntime) alone

``prepare`` (with memjax) exports, for the CPU and CUDA platforms, CartPole's MLP and a
MinAtar conv net (float32 and int8, both formats), DRQN with an LSTM (float32 and int8) and
memnet (float32), all from fixed-seed initial parameters, with the outputs this machine's
JAX computes from the files (a trajectory with episode starts inside for the agents with a
carry), and copies this script beside them. ``check`` (no flax, no memjax: it asserts so)
loads every jax file on the GPU, runs it on the same inputs and writes per file the largest
difference to the CPU's Q-values and the fraction of equal greedy actions (ONNX files:
onnxruntime there against the CPU's jax outputs) to ``$OUT/gpucheck.json`` (or ``DIR``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

FIRST = [(True, True, True), (False, False, False), (False, True, False), (False, False, True)] * 2


def prepare(out: Path) -> None:
    import jax
    import jax.numpy as jnp

    from memjax import export
    from memjax.agents import ConvQNetwork, MLPQNetwork
    from memjax.train import TrainConfig, make_train, params_file

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    expected, files = {}, []
    cases = {
        "mlp": (MLPQNetwork(2, (120, 84)), (4,), TrainConfig()),
        "conv": (
            ConvQNetwork(3),
            (10, 10, 4),
            TrainConfig(env="Breakout-MinAtar", buffer_capacity=100_000),
        ),
    }
    for name, (network, shape, config) in cases.items():
        params = network.init(jax.random.key(0), jnp.zeros((1, *shape)))
        params_file.save(out / f"src_{name}", config, params, stacked=False)
        obs = rng.normal(size=(256, *shape)).astype(np.float32)
        for q in ("none", "int8"):
            path = export.export_jax(out / f"src_{name}", out / f"{name}_{q}.jaxexport", quantize=q)
            export.export_onnx(out / f"src_{name}", out / f"{name}_{q}.onnx", quantize=q)
            expected[f"{name}_{q}_obs"] = obs
            expected[f"{name}_{q}_q"] = np.asarray(export.load_jax(path).call(obs))
            files.append({"name": f"{name}_{q}", "carry": False})
    knobs = {"hidden": (8,), "memory": 8}
    agents = {
        "drqn-lstm": TrainConfig(agent="drqn", env="MemoryChain-8").replace(cell="lstm", **knobs),
        "memnet": TrainConfig(agent="memnet", env="MemoryChain-8").replace(
            context_length=4, sequence_length=8, sequence_period=4, **knobs
        ),
    }
    for name, config in agents.items():
        trainer = make_train(config)
        obs = jnp.zeros(trainer.env.observation_space(trainer.env_params).shape)
        params = trainer.agent.init(jax.random.key(0), obs).params
        params_file.save(out / f"src_{name}", config, params, stacked=False)
        for q in ("none", "int8") if name != "memnet" else ("none",):
            path = export.export_jax(out / f"src_{name}", out / f"{name}_{q}.jaxexport", quantize=q)
            policy = export.load_jax(path)
            (_, avals, _), _ = jax.tree.unflatten(policy.in_tree, policy.in_avals)
            carry = jax.tree.map(lambda a: np.zeros((3, *a.shape[1:]), a.dtype), avals)
            steps = rng.normal(size=(len(FIRST), 3, *obs.shape)).astype(np.float32)
            qs = []
            for o, first in zip(steps, FIRST):
                q_values, carry = policy.call(o, carry, np.array(first))
                qs.append(np.asarray(q_values))
            expected[f"{name}_{q}_obs"], expected[f"{name}_{q}_q"] = steps, np.stack(qs)
            files.append({"name": f"{name}_{q}", "carry": True})
    for folder in out.glob("src_*"):
        shutil.rmtree(folder)
    np.savez(out / "expected.npz", **expected)
    manifest = {"files": files, "jax_here": jax.__version__, "platforms": ["cpu", "cuda"]}
    (out / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(__file__, out / Path(__file__).name)
    print(f"prepared {len(files)} files in {out}")


def check(folder: Path) -> dict:
    import jax

    assert not any(m.split(".")[0] in ("flax", "memjax") for m in sys.modules), "jax alone"
    manifest = json.loads((folder / "manifest.json").read_text())
    expected = np.load(folder / "expected.npz")
    gpu = jax.devices("gpu")[0]
    result = {
        "jax_there": jax.__version__,
        "jax_here": manifest["jax_here"],
        "device": str(gpu),
        "device_kind": gpu.device_kind,
        "files": {},
    }
    for f in manifest["files"]:
        name = f["name"]
        policy = jax.export.deserialize(bytearray((folder / f"{name}.jaxexport").read_bytes()))
        call, obs, want = jax.jit(policy.call), expected[f"{name}_obs"], expected[f"{name}_q"]
        if f["carry"]:
            (_, avals, _), _ = jax.tree.unflatten(policy.in_tree, policy.in_avals)
            carry = jax.tree.map(lambda a: np.zeros((3, *a.shape[1:]), a.dtype), avals)
            qs = []
            for o, first in zip(obs, FIRST):
                q_values, carry = call(jax.device_put(o, gpu), carry, np.array(first))
                qs.append(q_values)
            got = jax.numpy.stack(qs)
        else:
            got = call(jax.device_put(obs, gpu))
        platform = next(iter(got.devices())).platform
        got = np.asarray(got)
        result["files"][name] = {
            "ran_on": platform,
            "max_abs_diff_to_cpu": float(np.abs(got - want).max()),
            "max_abs_q": float(np.abs(want).max()),
            "same_greedy_action": float(np.mean(got.argmax(-1) == want.argmax(-1))),
        }
    try:
        import onnxruntime

        result["onnxruntime_there"] = onnxruntime.__version__
        for f in manifest["files"]:
            if not f["carry"]:
                name = f["name"]
                session = onnxruntime.InferenceSession(str(folder / f"{name}.onnx"))
                got = session.run(None, {"obs": expected[f"{name}_obs"]})[0]
                diff = float(np.abs(got - expected[f"{name}_q"]).max())
                result["files"][name]["onnx_max_abs_diff_to_jax_cpu"] = diff
    except ImportError as e:
        result["onnx_error"] = repr(e)
    out = Path(os.environ.get("OUT", folder)) / "gpucheck.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "check"):
        sys.exit(__doc__)
    if sys.argv[1] == "prepare":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        prepare(Path(sys.argv[2]))
    else:
        check(Path(sys.argv[2]))
