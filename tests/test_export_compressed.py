"""memjax export of a `memjax compress` result: each method's network (quantized per tensor
and per channel, int4, pruned, pruned + int8, low-rank, shared, distilled) becomes a jax and
an ONNX file that compute what memjax computes from the artefact; int8 keeps a quantized
network's own integers and scales; what cannot be quantized is refused in one line."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax.compress as mjc
from memjax import cli, export
from memjax.agents import ConvQNetwork, MLPQNetwork
from memjax.compress import pipeline
from memjax.train import TrainConfig

CASES = {
    "mlp": (MLPQNetwork(num_actions=2, hidden=(120, 84)), (4,), TrainConfig(), "distill:16,16"),
    "conv": (
        ConvQNetwork(num_actions=3, channels=16, hidden=128),
        (10, 10, 4),
        TrainConfig(env="Breakout-MinAtar", buffer_capacity=100_000),
        "distill:4/32",
    ),
}


def artefacts(params, student):
    """Method -> (network, artefact tree), built by memjax.compress's own functions as
    memjax compress builds them (None: the checkpoint's network)."""

    def build(p):  # one program: quicker than op by op
        pruned = mjc.quantize(mjc.prune(p, 0.9)[0])
        return (
            mjc.quantize(p, 8, per_channel=False),
            mjc.quantize(p, 4),
            mjc.prune(p, 0.5)[0],
            pruned,
            mjc.low_rank(p, rank=4),
            mjc.share(p, 16),
        )

    per_tensor, int4, half, pruned, factored, shared = jax.device_get(jax.jit(build)(params))
    return {
        "int8:tensor": (None, per_tensor),
        "int4": (None, int4),
        "prune:0.5": (None, mjc.to_sparse(half)),
        "prune:0.9+int8": (None, mjc.to_sparse(pruned)),
        "lowrank:r4": (None, factored),
        "share:16": (None, shared),
        "student+int8": student,
    }


@pytest.fixture(scope="module", params=sorted(CASES))
def result(request, tmp_path_factory):
    """A folder laid out as `memjax compress --out` writes it, seed 1 of every method,
    and each method's network and artefact trees."""
    network, obs_shape, config, distill = CASES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    obs = jax.ShapeDtypeStruct(obs_shape, jnp.float32)
    num_actions = network.num_actions
    student = pipeline.result_network(distill, network, obs, num_actions)
    methods = {}
    for seed in (1,):
        params = network.init(jax.random.key(seed), jnp.zeros((1, *obs_shape)))
        small = student.init(jax.random.key(seed + 10), jnp.zeros((1, *obs_shape)))
        for method, (net, tree) in artefacts(params, (student, mjc.quantize(small))).items():
            method = method.replace("student", distill)
            d = folder / pipeline.artefact_folder(method)
            d.mkdir(exist_ok=True)
            (d / f"seed{seed}.msgpack").write_bytes(mjc.serialize(tree))
            methods.setdefault(method, (net or network, {}))[1][seed] = tree
    meta = {"env": config.env, "num_actions": num_actions, "agent": "dqn"}
    meta |= {"obs_shape": list(obs_shape), "obs_dtype": "float32", "num_seeds": 3}
    results = {
        "env": config.env,
        "checkpoint": "elsewhere",
        "rows": [{"method": m} for m in methods],
        "teacher": {"config": config.to_dict(), "meta": meta},
    }
    (folder / "results.json").write_text(json.dumps(results))
    return request.param, folder, methods, obs_shape


def observations(obs_shape, batch, seed=0):
    rng = np.random.default_rng(seed)
    if len(obs_shape) == 3:
        return (rng.random((batch, *obs_shape)) < 0.1).astype(np.float32)
    return rng.normal(size=(batch, *obs_shape)).astype(np.float32)


def expected_q(network, tree, quantize, obs):
    """What the file must compute: memjax's own model of the stored weights."""
    if quantize == "none":
        if any(
            isinstance(x, mjc.LowRank) for x in jax.tree.leaves(tree, is_leaf=mjc.is_compressed)
        ):
            return mjc.apply(network, tree, obs)  # two thin matmuls, as the file
        return network.apply(mjc.decompress(tree), obs)
    if any(isinstance(x, mjc.QTensor) for x in jax.tree.leaves(tree, is_leaf=mjc.is_compressed)):
        return mjc.apply(network, tree, obs)  # its own integers and scales
    return mjc.apply(network, mjc.quantize(mjc.decompress(tree)), obs)


def q_of_file(path, fmt, obs):
    if fmt == "jax":
        return np.asarray(export.load_jax(path).call(obs))
    onnxruntime = pytest.importorskip("onnxruntime")
    options = onnxruntime.SessionOptions()  # no fusion into integer kernels: exact int8
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return onnxruntime.InferenceSession(str(path), options).run(None, {"obs": obs})[0]


QUANTIZABLE = ("int8:tensor", "int4", "prune:0.5", "prune:0.9+int8")


def check_method(result, tmp_path, method, fmt):
    """Export ``method``'s seed in ``fmt`` (float32, and int8 where it can be quantized): the
    file computes memjax's model of the stored weights; int8 is smaller."""
    name, folder, methods, obs_shape = result
    network, trees = methods[method]
    source = folder / pipeline.artefact_folder(method)
    obs = observations(obs_shape, 64)
    sizes = {}
    for quantize in ("none", "int8") if method in QUANTIZABLE else ("none",):
        path = tmp_path / f"{quantize}.{fmt}"
        write = export.export_jax if fmt == "jax" else export.export_onnx
        write(source, path, seed=1, quantize=quantize)
        expected = np.asarray(expected_q(network, trees[1], quantize, obs))
        np.testing.assert_allclose(q_of_file(path, fmt, obs), expected, atol=1e-5, rtol=1e-5)
        sizes[quantize] = path.stat().st_size
    if "int8" in sizes:
        assert sizes["int8"] < 0.6 * sizes["none"], sizes


@pytest.mark.parametrize("fmt", ["jax", "onnx"])
@pytest.mark.parametrize("method", ["prune:0.9+int8", "lowrank:r4"])
def test_a_method_exports_what_memjax_computes_from_its_artefact(result, tmp_path, method, fmt):
    check_method(result, tmp_path, method, fmt)


@pytest.mark.parametrize("fmt", ["jax", "onnx"])
@pytest.mark.parametrize("method", ["int8:tensor", "int4", "prune:0.5", "share:16"])
def test_every_method_exports_what_memjax_computes_from_its_artefact(result, tmp_path, method, fmt):
    check_method(result, tmp_path, method, fmt)


@pytest.mark.parametrize("fmt", ["jax", "onnx"])
def test_a_distilled_student_exports_as_itself(result, tmp_path, fmt):
    name, folder, methods, obs_shape = result
    method = next(m for m in methods if m.startswith("distill"))
    student, trees = methods[method]
    path = tmp_path / f"student.{fmt}"
    write = export.export_jax if fmt == "jax" else export.export_onnx
    write(folder / pipeline.artefact_folder(method), path, seed=1, quantize="int8")
    obs = observations(obs_shape, 16, seed=1)
    expected = np.asarray(mjc.apply(student, trees[1], obs))
    np.testing.assert_allclose(q_of_file(path, fmt, obs), expected, atol=1e-5, rtol=1e-5)


def test_int8_keeps_a_quantized_networks_own_scales(result):
    """Per-tensor int8 stays one scale per kernel with the artefact's integers; int4 becomes
    int8 storage of the same integers and scales (not a requantization)."""
    name, folder, methods, obs_shape = result
    for method in ("int8:tensor", "int4"):
        policy = export.load_policy(folder / pipeline.artefact_folder(method), seed=1)
        stored = mjc.layers(export.stored_weights(policy, "int8"))
        own = mjc.layers(methods[method][1][1])
        for (path, layer), (_, original) in zip(stored, own):
            kernel, kept = layer["kernel"], original["kernel"]
            assert kernel.values.dtype == jnp.int8 and kernel.bits == 8
            np.testing.assert_array_equal(np.asarray(kernel.ints()), np.asarray(kept.ints()))
            np.testing.assert_array_equal(np.asarray(kernel.scale), np.asarray(kept.scale))


def test_bad_compress_input_is_one_line_exit_2_and_no_file(result, tmp_path, capsys):
    name, folder, methods, obs_shape = result
    out = tmp_path / "x.onnx"
    (folder / "int4" / "seed3.msgpack").write_bytes(b"\xc1 not msgpack")
    for argv, words in [
        ([str(folder)], "is a memjax compress result: export one of its methods' folders"),
        ([str(folder / "int4"), "--seed", "0"], "seed 0 out of range: "),
        (
            [str(folder / "lowrank_r4"), "--seed", "1", "--quantize", "int8"],
            "'lowrank:r4' is stored as a LowRank",
        ),
        ([str(folder / "share_16"), "--seed", "1", "--quantize", "int8"], "is stored as a Shared"),
        ([str(folder / "int4"), "--seed", "3"], "seed3.msgpack is not a memjax compress artefact"),
    ]:
        for fmt in ("jax", "onnx"):
            with pytest.raises(SystemExit) as exc:
                cli.main(["export", *argv, "--format", fmt, "--out", str(out)])
            assert exc.value.code == 2
            err = capsys.readouterr().err
            assert words in err and err.count("\n") == 1, err
            assert list(tmp_path.iterdir()) == []
    (folder / "int4" / "seed3.msgpack").unlink()  # the fixture's folder, shared
    argv = ["export", str(folder / "int4"), "--seed", "1", "--format", "onnx", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "wrote" in capsys.readouterr().out and out.is_file()


def test_what_memjax_compress_writes_exports(tmp_path, capsys):
    """End to end: `memjax compress --out` on a run, then `memjax export` of each method's
    folder in both formats computes what memjax computes from that folder's artefact."""
    from memjax.train import params_file

    network, obs_shape, config, _ = CASES["mlp"]
    params = jax.vmap(lambda k: network.init(k, jnp.zeros((1, *obs_shape))))(
        jax.random.split(jax.random.key(0), 2)
    )
    params_file.save(tmp_path / "run", config, params)
    methods = ["int8", "prune:0.5+int8", "lowrank:0.9", "distill:8,8+int8"]
    argv = ["compress", str(tmp_path / "run"), "--episodes", "1", "--seeds", "1"]
    argv += ["--distill-steps", "6000", "--out", str(tmp_path / "small")]
    assert cli.main(argv + [a for m in methods for a in ("--method", m)]) == 0
    capsys.readouterr()
    obs = observations(obs_shape, 32)
    for method in methods:
        folder = tmp_path / "small" / pipeline.artefact_folder(method)
        tree = mjc.deserialize((folder / "seed1.msgpack").read_bytes())
        student = pipeline.result_network(method, network, obs, 2)
        expected = np.asarray(mjc.apply(student, tree, obs))
        for fmt in ("jax", "onnx"):
            out = tmp_path / f"{folder.name}.{fmt}"
            argv = ["export", str(folder), "--seed", "1", "--format", fmt, "--out", str(out)]
            quantize = "int8" if "int8" in method else "none"
            assert cli.main(argv + ["--quantize", quantize]) == 0
            np.testing.assert_allclose(q_of_file(out, fmt, obs), expected, atol=1e-5, rtol=1e-5)
