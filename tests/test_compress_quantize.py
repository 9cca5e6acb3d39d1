"""memjax.compress: quantization (int8/int4/int2), bit packing, the apply path, serialization,
and errors on unsupported layers. NumPy references throughout."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax.compress as mjc
from memjax.agents.networks import ConvQNetwork, MLPQNetwork

MLP = MLPQNetwork(num_actions=3, hidden=(16, 12))
CONV = ConvQNetwork(num_actions=3, channels=4, hidden=8)


@pytest.fixture(scope="module")
def mlp_params():
    return MLP.init(jax.random.key(0), jnp.zeros((1, 5)))


@pytest.fixture(scope="module")
def conv_params():
    return CONV.init(jax.random.key(1), jnp.zeros((1, 6, 6, 2)))


def _np_quantize(w, bits, per_channel=True):
    """NumPy reference: symmetric absmax over all axes but the last (per channel)."""
    q = 2 ** (bits - 1) - 1
    absmax = np.abs(w).max(axis=tuple(range(w.ndim - 1))) if per_channel else np.abs(w).max()
    scale = np.where(absmax > 0, absmax / q, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale), -q, q).astype(np.int8), scale


_quantize = jax.jit(mjc.quantize, static_argnums=(1, 2))
_decode = jax.jit(mjc.dequantize)
_apply = jax.jit(mjc.apply, static_argnums=0)  # from the stored integers
_apply_float = jax.jit(lambda net, p, o: net.apply(p, o), static_argnums=0)


@pytest.mark.parametrize("bits,per_channel", [(8, True), (4, True), (2, True), (8, False)])
def test_quantize_matches_numpy_and_error_bound(mlp_params, conv_params, bits, per_channel):
    for params in (mlp_params, conv_params):
        qp = _quantize(params, bits, per_channel)
        deq = _decode(qp)
        for (path, layer), (_, flayer), (_, dlayer) in zip(
            mjc.layers(qp), mjc.layers(params), mjc.layers(deq)
        ):
            k, w = layer["kernel"], np.asarray(flayer["kernel"])
            assert isinstance(k, mjc.QTensor) and k.bits == bits and k.shape == w.shape
            # the storage really is integer: int8, or uint8 packed 8/bits per byte
            if bits == 8:
                assert k.values.dtype == jnp.int8 and k.values.shape == w.shape
            else:
                assert k.values.dtype == jnp.uint8
                assert k.values.shape == w.shape[:-1] + (-(-w.shape[-1] * bits // 8),)
            assert k.scale.dtype == jnp.float32
            assert k.scale.shape == ((w.shape[-1],) if per_channel else ())
            ref_ints, ref_scale = _np_quantize(w, bits, per_channel)
            np.testing.assert_allclose(np.asarray(k.scale), ref_scale, rtol=1e-6)
            d = np.asarray(dlayer["kernel"])
            np.testing.assert_allclose(d, ref_ints * ref_scale, rtol=1e-6, atol=1e-7)
            # |w - q * s| <= s / 2 per element (plus float round-off)
            assert np.all(np.abs(w - d) <= ref_scale / 2 * (1 + 1e-5) + 1e-7)
            assert np.abs(ref_ints).max() <= 2 ** (bits - 1) - 1
            assert layer["bias"].dtype == jnp.float32


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_apply_from_quantized_equals_apply_dequantized(mlp_params, conv_params, bits):
    """The apply path runs from the integers ((x @ ints) * scale); equal to running the float
    network on the dequantized weights."""
    for net, params, shape in ((MLP, mlp_params, (7, 5)), (CONV, conv_params, (7, 6, 6, 2))):
        qp = _quantize(params, bits, True)
        obs = jax.random.normal(jax.random.key(bits), shape)
        y_int = _apply(net, qp, obs)
        y_deq = _apply_float(net, _decode(qp), obs)
        np.testing.assert_allclose(np.asarray(y_int), np.asarray(y_deq), rtol=1e-5, atol=1e-5)
    # 8 bits stays close to the float network; this would fail for a broken scale axis
    y = _apply(MLP, _quantize(mlp_params, 8, True), obs := jnp.ones((7, 5)))
    np.testing.assert_allclose(
        np.asarray(y), np.asarray(_apply_float(MLP, mlp_params, obs)), atol=2e-2
    )


def test_quantize_jit_vmap_and_serialize(mlp_params):
    stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), mlp_params)
    qs = jax.jit(jax.vmap(lambda p: mjc.quantize(p, 4)))(stacked)
    one = jax.tree.map(lambda x: x[1], qs)
    direct = _quantize(jax.tree.map(lambda x: 2 * x, mlp_params), 4, True)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(direct)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    blob = mjc.serialize(direct)
    back = mjc.deserialize(blob)
    assert jax.tree.structure(back) == jax.tree.structure(direct)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(direct)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # int8 kernels take a quarter of float32 (plus one float32 scale per output channel)
    k32 = mjc.kernel_bytes(mlp_params)
    n_out = sum(layer["kernel"].shape[-1] for _, layer in mjc.layers(mlp_params))
    assert mjc.kernel_bytes(_quantize(mlp_params, 8, True)) == k32 // 4 + 4 * n_out
    assert (
        mjc.nbytes(_quantize(mlp_params, 2, True))
        < mjc.nbytes(_quantize(mlp_params, 4, True))
        < mjc.nbytes(_quantize(mlp_params, 8, True))
        < mjc.nbytes(mlp_params)
    )


class _WithNorm(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.LayerNorm()(nn.Dense(4)(x)))


def test_unsupported_layers_raise_clearly(mlp_params):
    p = _WithNorm().init(jax.random.key(0), jnp.zeros((1, 3)))
    for fn in (
        lambda: mjc.quantize(p),
        lambda: mjc.prune(p, 0.5),
        lambda: mjc.share(p, 4),
        lambda: mjc.low_rank(p, rank=1),
    ):
        with pytest.raises(ValueError, match="unsupported layer 'LayerNorm_0'.*Dense"):
            fn()
    with pytest.raises(ValueError, match="bits must be one of"):
        mjc.quantize(mlp_params, 3)
    with pytest.raises(ValueError, match="already compressed"):
        mjc.quantize(_quantize(mlp_params, 8, True))
