"""memjax.compress low-rank factorization (vs NumPy's SVD) and k-means weight sharing (vs a
NumPy Lloyd reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax.compress as mjc
from memjax.agents.networks import ConvQNetwork
from reference import lloyd_1d_linear


def test_reconstruction_error_is_svd_tail_energy():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(24, 10)).astype(np.float32)
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    factor = jax.jit(mjc.factor, static_argnums=1)
    errs = []
    for r in range(1, 11):
        lr = factor(w, r)
        assert lr.a.shape == (24, r) and lr.b.shape == (r, 10)
        err = float(np.sum((w - np.asarray(lr.decode())) ** 2))
        np.testing.assert_allclose(err, np.sum(s[r:] ** 2), rtol=1e-3, atol=1e-4)
        errs.append(err)
    assert all(a > b for a, b in zip(errs, errs[1:]))  # strictly better with each rank
    assert errs[-1] < 1e-6


def test_energy_picks_ranks():
    s = np.array([4.0, 2.0, 1.0, 1.0])  # energies 16/22, 20/22, 21/22, 1
    assert mjc.rank_for_energy(s, 0.5) == 1
    assert mjc.rank_for_energy(s, 20 / 22) == 2
    assert mjc.rank_for_energy(s, 0.95) == 3
    assert mjc.rank_for_energy(s, 1.0) == 4


def test_low_rank_on_a_conv_network():
    net = ConvQNetwork(num_actions=3, channels=8, hidden=32)
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 7, 7, 3)))
    lr = mjc.low_rank(params, energy=0.9)
    layers = dict((p[0], layer) for p, layer in mjc.layers(lr))
    # the big Dense kernel is factored, and the factors store fewer numbers
    k = layers["Dense_0"]["kernel"]
    assert isinstance(k, mjc.LowRank) and k.a.shape[0] == 200 and k.b.shape[1] == 32
    assert mjc.count_params(lr) < mjc.count_params(params)
    obs = jax.random.normal(jax.random.key(1), (5, 7, 7, 3))
    y = jax.jit(mjc.apply, static_argnums=0)(net, lr, obs)  # two thin matmuls
    y_ref = jax.jit(lambda p, o: net.apply(mjc.decompress(p), o))(lr, obs)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="exactly one of"):
        mjc.low_rank(params)


@pytest.mark.parametrize("k,bits", [(16, 4), (4, 2), (3, 2), (200, 8)])
def test_share_codebook_and_indices(k, bits):
    rng = np.random.default_rng(k)
    w = rng.normal(size=(30, 20)).astype(np.float32)
    sh = jax.jit(lambda w: mjc.share({"Dense_0": {"kernel": w}}, k, iters=20))(w)["Dense_0"]
    t = sh["kernel"]
    assert isinstance(t, mjc.Shared) and t.codebook.shape == (k,) and t.bits == bits
    assert t.codebook.dtype == jnp.float32 and t.indices.dtype == jnp.uint8
    assert t.indices.shape == (30, -(-20 * bits // 8))
    dec = np.asarray(t.decode())
    assert set(np.unique(dec)) <= set(np.asarray(t.codebook).tolist())
    c_ref, _ = lloyd_1d_linear(w.ravel(), k, 20)
    np.testing.assert_allclose(
        np.sort(np.asarray(t.codebook)), np.sort(c_ref), rtol=1e-4, atol=1e-5
    )
    # each weight maps to its nearest centroid
    np.testing.assert_allclose(
        dec,
        np.asarray(t.codebook)[np.argmin(np.abs(w[..., None] - np.asarray(t.codebook)), axis=-1)],
    )
    with pytest.raises(ValueError, match="k must be an integer in"):
        mjc.share({"Dense_0": {"kernel": w}}, 1)
