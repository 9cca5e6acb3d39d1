"""Storage codecs (memjax.codecs), checked against NumPy references."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memjax.codecs as mc
from reference import lloyd_1d_linear

F32_EPS = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------- references


def np_pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """NumPy reference of the packing layout: code j in bits [(j % per)*bits, ...) of byte
    j // per."""
    codes = np.asarray(codes, np.uint8)
    per = 8 // bits
    n = codes.shape[-1]
    m = -(-n // per)
    padded = np.zeros(codes.shape[:-1] + (m * per,), np.uint8)
    padded[..., :n] = codes
    padded = padded.reshape(codes.shape[:-1] + (m, per)).astype(np.uint32)
    return np.sum(padded << (np.arange(per) * bits), axis=-1).astype(np.uint8)


def np_nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest rows of centres [k, D] for x [M, D] (float64 distances)."""
    d2 = ((x[:, None, :].astype(np.float64) - centres[None].astype(np.float64)) ** 2).sum(-1)
    return centres[np.argmin(d2, axis=1)]


def np_lloyd_1d(x: np.ndarray, k: int, iters: int) -> np.ndarray:
    c = np.quantile(x.astype(np.float32), (np.arange(k, dtype=np.float32) + 0.5) / k).astype(
        np.float64
    )
    for _ in range(iters):
        a = np.argmin(np.abs(x[:, None] - c[None]), axis=1)
        for j in range(k):
            if (a == j).any():
                c[j] = x[a == j].mean()
    return np.sort(c)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bitpack_jit():
    """One bitpack codec for float32 [3, 5] items with jitted encode / decode."""
    c = mc.bitpack()
    return c, jax.jit(c.encode), jax.jit(c.decode)


@pytest.fixture(scope="module")
def seeded_codecs():
    """(codec, example) pairs used by the jit / vmap / scan tests."""
    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, 6)).astype(np.float32)
    return {
        "bitpack": mc.bitpack(),
        "quantize": mc.quantize(bits=4, low=-1.0, high=1.0),
        "cast": mc.cast(jnp.float16),
        "kmeans": mc.kmeans(4, data, per="feature", iters=5),
        "chain": mc.chain(mc.cast(jnp.bfloat16), mc.identity()),
    }


# ----------------------------------------------------------------------------- bitpack

SHAPES = [(), (1,), (7,), (8,), (9,), (3, 5), (10, 10, 4)]
BIT_DTYPES = [np.float32, np.bool_, np.int32, np.uint8]


@settings(max_examples=20)
@given(
    shape=st.sampled_from(SHAPES),
    dtype=st.sampled_from(BIT_DTYPES),
    batch=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_bitpack_roundtrip_bit_exact(shape, dtype, batch, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, *shape)) < 0.4).astype(dtype)
    c = mc.bitpack()
    state = c.init(x[0])
    stored, state = c.encode(x, state)
    n = int(np.prod(shape))
    assert stored.dtype == jnp.uint8 and stored.shape == (batch, -(-n // 8))
    ref = np.packbits(x.reshape(batch, n).astype(bool), axis=-1, bitorder="little")
    np.testing.assert_array_equal(np.asarray(stored), ref)
    x_hat = c.decode(stored, state)
    assert x_hat.dtype == np.dtype(dtype) and x_hat.shape == x.shape
    np.testing.assert_array_equal(np.asarray(x_hat), x)
    assert mc.counters(state) == {"clipped": 0, "invalid": 0}


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_pack_unpack_roundtrip(bits):
    """The one bit packer (codecs and memjax.compress's packed weights, masks and indices)."""
    rng = np.random.default_rng(bits)
    for n in (3, 8, 13):
        u = rng.integers(0, 2**bits, size=(4, n)).astype(np.uint8)
        p = mc.pack_codes(u, bits)
        assert p.dtype == jnp.uint8 and p.shape == (4, -(-n * bits // 8))
        np.testing.assert_array_equal(np.asarray(mc.unpack_codes(p, bits, n)), u)
    if bits == 1:  # the bitmask layout is NumPy's little-endian packbits, bool input included
        u = rng.integers(0, 2, size=(21,)).astype(np.uint8)
        np.testing.assert_array_equal(
            np.asarray(mc.pack_codes(u, 1)), np.packbits(u, bitorder="little")
        )
        np.testing.assert_array_equal(
            np.asarray(mc.pack_codes(u != 0, 1)), np.packbits(u, bitorder="little")
        )
    else:  # code i of a byte sits in bits [i * bits, (i + 1) * bits)
        per = 8 // bits
        u = rng.integers(0, 2**bits, size=(per,)).astype(np.uint8)
        expected = sum(int(c) << (i * bits) for i, c in enumerate(u))
        assert int(mc.pack_codes(u, bits)[0]) == expected


def test_pack_codes_rejects_other_widths_and_index_bits():
    for bits in (0, 3, 16):
        with pytest.raises(ValueError, match="bits must be 1, 2, 4 or 8"):
            mc.pack_codes(np.zeros((4,), np.uint8), bits)
    from memjax.codecs.base import index_bits

    assert [index_bits(k) for k in (2, 3, 4, 5, 16, 17, 256, 257, 65536)] == [
        1,
        2,
        2,
        4,
        4,
        8,
        8,
        16,
        16,
    ]


def test_bitpack_eager_non_binary_raises():
    c = mc.bitpack()
    state = c.init(np.zeros((4,), np.float32))
    x = np.array([[0, 1, 0.5, 2], [1, 1, -1, 0]], np.float32)
    with pytest.raises(ValueError, match=r"3 of 8 values are not 0/1 \(e.g. 0.5, 2.0, -1.0\)"):
        c.encode(x, state)
    with pytest.raises(ValueError, match="not 0/1"):
        c.encode(np.array([[0, 1, np.nan, 0]], np.float32), state)


def test_bitpack_jitted_counts_invalid(bitpack_jit):
    c, enc, dec = bitpack_jit
    state = c.init(jax.ShapeDtypeStruct((3, 5), jnp.float32))
    x = np.zeros((2, 3, 5), np.float32)
    x[0, 0, :3] = [2.0, 0.5, 1.0]
    x[1, 2, 4] = -3.0
    stored, state = enc(x, state)
    stored, state = enc(x, state)
    assert int(state.invalid) == 6
    np.testing.assert_array_equal(np.asarray(dec(stored, state)), (x != 0).astype(np.float32))


def test_bitpack_decode_independent_of_encode_batch(bitpack_jit):
    c, enc, dec = bitpack_jit
    rng = np.random.default_rng(1)
    x = (rng.random((5, 3, 5)) < 0.5).astype(np.float32)
    state = c.init(x[0])
    stored, state = enc(x, state)
    rows = np.array([4, 0, 4])
    np.testing.assert_array_equal(np.asarray(dec(stored[rows], state)), x[rows])


# ----------------------------------------------------------------------------- quantize


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantize_grid_values_round_trip_exactly(bits):
    rng = np.random.default_rng(bits)
    shape, L = (3, 3), 2**bits
    low = rng.uniform(-5, 0, size=shape).astype(np.float32)
    high = (low + rng.uniform(0.1, 10, size=shape)).astype(np.float32)
    c = mc.quantize(bits, low=low, high=high)
    state = c.init(np.zeros(shape, np.float32))
    codes = rng.integers(0, L, size=(6, 9))
    codes[0] = 0
    codes[1] = L - 1
    stored_ref = np_pack(codes, bits)
    grid = np.minimum(low + codes.reshape(6, *shape) * ((high - low) / np.float32(L - 1)), high)
    x_hat = np.asarray(c.decode(jnp.asarray(stored_ref), state))
    np.testing.assert_allclose(x_hat, grid, rtol=4 * F32_EPS, atol=4 * F32_EPS * 10)
    stored, state = c.encode(grid, state)
    np.testing.assert_array_equal(np.asarray(stored), stored_ref)
    stored, state = c.encode(x_hat, state)
    np.testing.assert_array_equal(np.asarray(stored), stored_ref)
    np.testing.assert_array_equal(np.asarray(c.decode(stored, state)), x_hat)
    assert int(state.clipped) == 0


@settings(max_examples=30)
@given(
    bits=st.sampled_from([8, 4, 2]),
    calibrated=st.booleans(),
    low=st.floats(-1e3, 1e3),
    width=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_quantize_error_bound(bits, calibrated, low, width, seed):
    rng = np.random.default_rng(seed)
    L = 2**bits
    if calibrated:
        data = (low + width * rng.random((32, 6))).astype(np.float32)
        c = mc.quantize(bits, data=data)
        lo, hi = data.min(0), data.max(0)
    else:
        lo = np.float32(low) + np.zeros(6, np.float32)
        hi = (np.float32(low) + np.float32(width) * np.linspace(0.5, 1, 6)).astype(np.float32)
        c = mc.quantize(bits, low=lo, high=hi)
    state = c.init(np.zeros((6,), np.float32))
    np.testing.assert_array_equal(np.asarray(state.low), lo)
    np.testing.assert_array_equal(np.asarray(state.high), hi)
    x = (lo + (hi - lo) * rng.random((16, 6))).astype(np.float32)
    x = np.clip(x, lo, hi)
    stored, state = c.encode(x, state)
    assert int(state.clipped) == 0
    x_hat = np.asarray(c.decode(stored, state))
    bound = (hi.astype(np.float64) - lo) / (2 * (L - 1))
    slack = 8 * F32_EPS * np.maximum(np.abs(lo), np.abs(hi))
    assert np.all(np.abs(x.astype(np.float64) - x_hat) <= bound + slack)


def test_quantize_clipping_is_counted():
    c = mc.quantize(8, low=[0.0, -1.0], high=[1.0, 1.0])
    state = c.init(np.zeros((2,), np.float32))
    x = np.array([[-0.5, 3.0], [0.5, 0.0], [2.0, -1.0], [np.nan, 1.0]], np.float32)
    stored, state = c.encode(x, state)
    assert int(state.clipped) == 4  # -0.5, 3.0, 2.0, nan (-1.0 and 1.0 are in range)
    x_hat = np.asarray(c.decode(stored, state))
    np.testing.assert_allclose(x_hat[[0, 0, 2, 3], [0, 1, 0, 0]], [0.0, 1.0, 1.0, 0.0], atol=1e-6)
    _, state = jax.jit(c.encode)(x, state)
    assert mc.counters(state) == {"clipped": 8, "invalid": 0}


def test_quantize_constant_feature_decodes_to_low():
    c = mc.quantize(2, data=np.array([[3.25, 0.0], [3.25, 1.0]], np.float32))
    state = c.init(np.zeros((2,), np.float32))
    stored, state = c.encode(np.array([[3.25, 0.4], [3.25, 1.0]], np.float32), state)
    x_hat = np.asarray(c.decode(stored, state))
    np.testing.assert_array_equal(x_hat[:, 0], [3.25, 3.25])
    assert int(state.clipped) == 0


def test_quantize_packing_halves_and_quarters_bytes():
    x = np.random.default_rng(0).random((5, 12, 4)).astype(np.float32)
    sizes = {}
    for bits in (8, 4, 2):
        c = mc.quantize(bits, low=0.0, high=1.0)
        stored, _ = c.encode(x, c.init(x[0]))
        assert stored.dtype == jnp.uint8
        sizes[bits] = stored.nbytes
    assert sizes == {8: 5 * 48, 4: 5 * 24, 2: 5 * 12}
    assert x.nbytes == 4 * sizes[8]


def test_quantize_bad_arguments():
    with pytest.raises(ValueError, match=r"bits must be one of \(8, 4, 2\), got 3"):
        mc.quantize(3, low=0.0, high=1.0)
    with pytest.raises(ValueError, match="low must be <= high"):
        mc.quantize(8, low=[0.0, 2.0], high=[1.0, 1.0])
    with pytest.raises(ValueError, match="needs low and high"):
        mc.quantize(8, low=0.0)
    with pytest.raises(ValueError, match="not both"):
        mc.quantize(8, low=0.0, high=1.0, data=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="data must have shape"):
        mc.quantize(8, data=np.float32(1.0))
    with pytest.raises(ValueError, match="low must be finite"):
        mc.quantize(8, low=-np.inf, high=1.0)
    c = mc.quantize(8, data=np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"data has item shape \(2,\)"):
        c.init(np.zeros((3,), np.float32))
    with pytest.raises(TypeError, match="float dtype"):
        mc.quantize(8, low=0, high=1).init(np.zeros((2,), np.int32))
    with pytest.raises(ValueError, match="low has shape"):
        mc.quantize(8, low=np.zeros(3), high=1.0).init(np.zeros((2,), np.float32))
    state = mc.quantize(8, low=0, high=1).init(np.zeros((2,), np.float32))
    with pytest.raises(ValueError, match=r"x has shape \(4, 3\), expected \(\*B, 2\)"):
        mc.quantize(8, low=0, high=1).encode(np.zeros((4, 3), np.float32), state)


# ----------------------------------------------------------------------------- kmeans


def test_kmeans_per_feature_codebook_and_nearest_decode():
    rng = np.random.default_rng(0)
    data = rng.standard_exponential(size=(300, 2, 3)).astype(np.float32)
    data[:, 0, 0] = rng.integers(0, 2, size=300)  # 2 distinct values, k = 16
    c = mc.kmeans(16, data, per="feature", iters=10)
    state = c.init(data[0])
    cb = np.asarray(state.codebook)
    assert cb.shape == (6, 16) and np.all(np.diff(cb, axis=1) >= 0)
    assert set(np.unique(cb[0])) == {0.0, 1.0}
    x = np.concatenate([data[:20], rng.normal(size=(5, 2, 3)).astype(np.float32) * 3])
    stored, state = c.encode(x, state)
    assert stored.dtype == jnp.uint8 and stored.shape == (25, 3)  # 4-bit indices, 2 per byte
    x_hat = np.asarray(c.decode(stored, state)).reshape(25, 6)
    ref = np.stack(
        [np_nearest(x.reshape(25, 6)[:, f : f + 1], cb[f][:, None])[:, 0] for f in range(6)], 1
    )
    np.testing.assert_array_equal(x_hat, ref)
    # bound: inside the hull, within half the largest adjacent gap
    xf = x.reshape(25, 6)
    inside = (xf >= cb[:, 0]) & (xf <= cb[:, -1])
    half_gap = np.diff(cb, axis=1).max(axis=1) / 2
    assert np.all((np.abs(xf - x_hat) <= half_gap + 1e-6) | ~inside)


def test_kmeans_1d_fit_matches_numpy_lloyd_and_reduces_distortion():
    rng = np.random.default_rng(3)
    x = rng.standard_exponential(size=400).astype(np.float32)
    cb = np.asarray(mc.fit_codebooks_1d(x[:, None], 8, 15))[0]
    np.testing.assert_allclose(cb, np_lloyd_1d(x.astype(np.float64), 8, 15), rtol=1e-4, atol=1e-5)
    key = jax.random.PRNGKey(0)
    for d in (x[:, None], rng.normal(size=(400, 3)).astype(np.float32)):
        init = np.asarray(mc.fit_kmeans(key, d, 8, 0))
        fitted = np.asarray(mc.fit_kmeans(key, d, 8, 20))
        assert init.shape == fitted.shape == (8, d.shape[1])
        dist = [np.mean(np.sum((d - np_nearest(d, c)) ** 2, -1)) for c in (init, fitted)]
        assert dist[1] < 0.9 * dist[0]
        np.testing.assert_allclose(float(mc.distortion(d, fitted)), dist[1], rtol=1e-4)


def test_kmeans_1d_linear_init_matches_numpy_lloyd():
    """init="linear" (memjax.compress.share's k-means): the NumPy reference, Lloyd's order."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(500,)).astype(np.float32)
    key = jax.random.PRNGKey(0)
    for k, iters in ((2, 0), (4, 10), (16, 20)):
        cb = np.asarray(mc.fit_kmeans(key, x[:, None], k, iters, "linear"))[:, 0]
        np.testing.assert_allclose(cb, lloyd_1d_linear(x, k, iters)[0], rtol=1e-4, atol=1e-5)
        assert np.all(np.diff(cb) >= 0)
    # a constant input: every centre at the value (empty clusters keep theirs)
    np.testing.assert_array_equal(
        np.asarray(mc.fit_kmeans(key, np.full((9, 1), 0.5, np.float32), 4, 5, "linear")), 0.5
    )
    with pytest.raises(ValueError, match="needs D == 1"):
        mc.fit_kmeans(key, rng.normal(size=(10, 2)).astype(np.float32), 4, 5, "linear")
    with pytest.raises(ValueError, match="init must be one of"):
        mc.fit_kmeans(key, x[:, None], 4, 5, "nope")


def test_kmeans_per_vector():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(5, 4)).astype(np.float32) * 4
    data = centres[rng.integers(0, 5, size=200)] + 0.05 * rng.normal(size=(200, 4)).astype(
        np.float32
    )
    c = mc.kmeans(5, data.reshape(200, 2, 2), per="vector", iters=20, seed=1)
    state = c.init(jax.ShapeDtypeStruct((2, 2), jnp.float32))
    cb = np.asarray(state.codebook)
    assert cb.shape == (5, 4)
    assert mc.stored_spec(c, jnp.zeros((2, 2))) == jax.ShapeDtypeStruct((), jnp.uint8)
    x = (data[:30] + rng.normal(size=(30, 4)).astype(np.float32)).reshape(30, 2, 2)
    stored, state = c.encode(x, state)
    assert stored.shape == (30,) and stored.dtype == jnp.uint8
    x_hat = np.asarray(c.decode(stored, state)).reshape(30, 4)
    ref = np_nearest(x.reshape(30, 4), cb)
    d_hat = ((x.reshape(30, 4) - x_hat) ** 2).sum(-1)
    d_ref = ((x.reshape(30, 4) - ref) ** 2).sum(-1)
    np.testing.assert_allclose(d_hat, d_ref, rtol=1e-5)
    # well-separated clusters: every fitted centre lies near a true one
    assert np.abs(np_nearest(cb, centres) - cb).max() < 0.2


def test_kmeans_index_widths():
    data = np.random.default_rng(5).random((50, 9)).astype(np.float32)
    ex = jnp.zeros((9,))
    widths = {k: mc.stored_spec(mc.kmeans(k, data, iters=0), ex) for k in (2, 4, 16, 256, 257)}
    assert widths[2] == jax.ShapeDtypeStruct((2,), jnp.uint8)
    assert widths[4] == jax.ShapeDtypeStruct((3,), jnp.uint8)
    assert widths[16] == jax.ShapeDtypeStruct((5,), jnp.uint8)
    assert widths[256] == jax.ShapeDtypeStruct((9,), jnp.uint8)
    assert widths[257] == jax.ShapeDtypeStruct((9,), jnp.uint16)
    big = mc.kmeans(300, data, per="vector", iters=0)
    assert mc.stored_spec(big, ex) == jax.ShapeDtypeStruct((), jnp.uint16)


def test_kmeans_bad_arguments():
    data = np.zeros((10, 3), np.float32)
    for k in (1, 65537, 2.5):
        with pytest.raises(ValueError, match=r"k must be an int in \[2, 65536\]"):
            mc.kmeans(k, data)
    with pytest.raises(ValueError, match="per must be"):
        mc.kmeans(4, data, per="row")
    with pytest.raises(ValueError, match="data must have shape"):
        mc.kmeans(4, np.float32(1))
    with pytest.raises(ValueError, match="non-finite"):
        mc.kmeans(4, np.array([[np.nan]], np.float32))
    with pytest.raises(ValueError, match="item shape"):
        mc.kmeans(4, data).init(np.zeros((4,), np.float32))


# ----------------------------------------------------------------------------- cast


@settings(max_examples=25)
@given(seed=st.integers(0, 2**16), target=st.sampled_from(["float16", "bfloat16"]))
def test_cast_relative_error_bound(seed, target):
    rng = np.random.default_rng(seed)
    if target == "float16":
        dtype, rel, exp = jnp.float16, 2.0**-11, (-14, 15.99)
    else:
        dtype, rel, exp = jnp.bfloat16, 2.0**-8, (-120, 120)
    mags = 2.0 ** rng.uniform(*exp, size=(8, 5))
    x = (mags * rng.choice([-1, 1], size=mags.shape)).astype(np.float32)
    c = mc.cast(dtype)
    state = c.init(x[0])
    stored, state = c.encode(x, state)
    assert stored.dtype == np.dtype(dtype)
    x_hat = np.asarray(c.decode(stored, state))
    assert x_hat.dtype == np.float32
    np.testing.assert_array_equal(
        np.asarray(stored).astype(np.float32),
        x.astype(getattr(ml_dtypes, target) if target == "bfloat16" else np.float16).astype(
            np.float32
        ),
    )
    assert np.all(np.abs(x_hat.astype(np.float64) - x) <= rel * np.abs(x.astype(np.float64)))
    assert mc.counters(state) == {"clipped": 0, "invalid": 0}


def test_cast_float16_overflow_is_clipped_and_counted():
    c = mc.cast(jnp.float16)
    state = c.init(np.zeros((4,), np.float32))
    x = np.array([[7e4, -1e9, 65504.0, np.inf], [1.0, 2.0, np.nan, -65520.0]], np.float32)
    stored, state = jax.jit(c.encode)(x, state)
    x_hat = np.asarray(c.decode(stored, state))
    np.testing.assert_array_equal(x_hat[0], [65504.0, -65504.0, 65504.0, 65504.0])
    assert x_hat[1, 3] == -65504.0 and np.isnan(x_hat[1, 2])
    assert mc.counters(state) == {"clipped": 4, "invalid": 1}


def test_cast_integer_targets():
    c = mc.cast(jnp.uint8)
    state = c.init(np.zeros((), np.int32))
    a = np.array([0, 3, 255, 17], np.int32)
    stored, state = c.encode(a, state)
    assert stored.dtype == jnp.uint8
    np.testing.assert_array_equal(np.asarray(c.decode(stored, state)), a)
    with pytest.raises(ValueError, match=r"2 outside \[0, 255\] \(e.g. 300, -1\)"):
        c.encode(np.array([300, 1, -1], np.int32), state)
    stored, state = jax.jit(c.encode)(np.array([300, 1, -1], np.int32), state)
    np.testing.assert_array_equal(np.asarray(stored), [255, 1, 0])
    assert int(state.clipped) == 2

    r = mc.cast(jnp.int8)
    rs = r.init(np.zeros((2,), np.float32))
    x = np.array([[0.0, 1.0], [-1.0, -128.0]], np.float32)
    stored, rs = r.encode(x, rs)
    np.testing.assert_array_equal(np.asarray(r.decode(stored, rs)), x)
    with pytest.raises(ValueError, match="1 NaN or non-integral"):
        r.encode(np.array([[0.5, 1.0]], np.float32), rs)
    _, rs = jax.jit(r.encode)(np.array([[0.5, 200.0], [np.nan, 1.0]], np.float32), rs)
    assert mc.counters(rs) == {"clipped": 1, "invalid": 2}


def test_cast_bad_arguments():
    with pytest.raises(TypeError, match="cast: dtype must be one of"):
        mc.cast(jnp.complex64)
    with pytest.raises(TypeError, match="use bitpack"):
        mc.cast(jnp.bool_)


# ----------------------------------------------------------------------------- chain, identity


def test_chain_round_trip_and_state_nesting():
    c = mc.chain(mc.cast(jnp.float16), mc.quantize(4, low=-1.0, high=1.0))
    ex = np.zeros((5,), np.float32)
    state = c.init(ex)
    assert isinstance(state, tuple) and len(state) == 2
    assert state[0].target == np.float16 and state[1].dtype == np.float16
    assert mc.stored_spec(c, ex) == jax.ShapeDtypeStruct((3,), jnp.uint8)
    x = np.array([[-1.0, -0.5, 0.0, 0.5, 1.0], [9.0, 1e5, 0.2, 0.3, 0.4]], np.float32)
    stored, state = jax.jit(c.encode)(x, state)
    x_hat = np.asarray(c.decode(stored, state))
    assert x_hat.dtype == np.float32 and x_hat.shape == x.shape
    np.testing.assert_array_equal(x_hat[0, [0, 4]], [-1.0, 1.0])
    assert np.all(np.abs(x_hat[0] - x[0]) <= 1 / 15 + 1e-3)  # quantize bound + float16 rounding
    assert np.all(np.abs(x_hat[1, 2:] - x[1, 2:]) <= 1 / 15 + 1e-3)
    np.testing.assert_array_equal(x_hat[1, :2], [1.0, 1.0])
    assert mc.counters(state) == {"clipped": 3, "invalid": 0}  # float16: 1e5; quantize: 9, 65504
    assert int(state[0].clipped) == 1 and int(state[1].clipped) == 2


def test_identity():
    c = mc.identity()
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    state = c.init(x[0])
    stored, state = c.encode(x, state)
    np.testing.assert_array_equal(np.asarray(c.decode(stored, state)), x)
    assert mc.counters(state) == {"clipped": 0, "invalid": 0}
    assert mc.stored_spec(c, x[0]) == jax.ShapeDtypeStruct((3,), jnp.int32)


def test_stored_spec_sizes():
    f32 = jnp.float32
    assert mc.stored_spec(mc.bitpack(), jnp.zeros((10, 10, 4), f32)) == jax.ShapeDtypeStruct(
        (50,), jnp.uint8
    )
    assert mc.stored_spec(
        mc.quantize(4, low=0, high=1), jnp.zeros((4,), f32)
    ) == jax.ShapeDtypeStruct((2,), jnp.uint8)
    assert mc.stored_spec(
        mc.quantize(2, low=0, high=1), jax.ShapeDtypeStruct((5,), f32)
    ) == jax.ShapeDtypeStruct((2,), jnp.uint8)
    assert mc.stored_spec(
        mc.quantize(8, low=0, high=1), np.zeros((3, 2), np.float32)
    ) == jax.ShapeDtypeStruct((6,), jnp.uint8)
    assert mc.stored_spec(mc.cast(jnp.bfloat16), jnp.zeros((7,), f32)) == jax.ShapeDtypeStruct(
        (7,), jnp.bfloat16
    )


# ----------------------------------------------------------------------------- jit / vmap / scan


@pytest.mark.parametrize("name", ["bitpack", "quantize", "cast", "kmeans", "chain"])
def test_vmap_seeds_have_own_counters_and_decode(seeded_codecs, name):
    c = seeded_codecs[name]
    ex = jax.ShapeDtypeStruct((6,), jnp.float32)
    abstract = jax.eval_shape(c.init, ex)
    assert jax.tree.structure(abstract) == jax.tree.structure(c.init(np.zeros(6, np.float32)))
    states = jax.vmap(c.init)(jnp.zeros((2, 6), jnp.float32))
    rng = np.random.default_rng(0)
    x = (rng.random((2, 3, 6)) < 0.5).astype(np.float32)
    if name == "bitpack":
        x[0, 0, :2] = 2.0  # seed 0: 2 invalid, seed 1: none
        expect = {"invalid": [2, 0]}
    elif name == "quantize":
        x[1, :, 0] = 5.0  # seed 1: 3 clipped
        expect = {"clipped": [0, 3]}
    elif name == "cast":
        x[0, 1, :] = 1e6
        expect = {"clipped": [6, 0]}
    elif name == "kmeans":
        x[1, 2, 3] = np.nan
        expect = {"invalid": [0, 1]}
    else:
        expect = {}
    stored, states = jax.jit(jax.vmap(c.encode))(x, states)
    for field, per_seed in expect.items():
        np.testing.assert_array_equal(np.asarray(getattr(states, field)), per_seed)
    x_hat = jax.jit(jax.vmap(c.decode))(stored, states)
    for s in range(2):
        one = jax.tree.map(lambda a: a[s], states)
        np.testing.assert_array_equal(np.asarray(x_hat[s]), np.asarray(c.decode(stored[s], one)))
    totals = mc.counters(states)
    assert totals == {
        "clipped": sum(expect.get("clipped", [0])),
        "invalid": sum(expect.get("invalid", [0])),
    }


def test_encode_inside_scan(seeded_codecs):
    c = seeded_codecs["quantize"]
    xs = jnp.linspace(-2.0, 2.0, 5 * 2 * 6).reshape(5, 2, 6)

    def step(state, x):
        stored, state = c.encode(x, state)
        return state, stored

    state, stored = jax.jit(lambda s: jax.lax.scan(step, s, xs))(c.init(xs[0, 0]))
    assert stored.shape == (5, 2, 3) and stored.dtype == jnp.uint8
    expect = int(np.sum(np.abs(np.asarray(xs)) > 1.0))
    assert int(state.clipped) == expect
    x_hat = np.asarray(c.decode(stored.reshape(10, 3), state))
    np.testing.assert_allclose(
        x_hat, np.clip(np.asarray(xs).reshape(10, 6), -1, 1), atol=1 / 15 + 1e-6
    )


def test_counters_saturate_instead_of_wrapping():
    c = mc.quantize(8, low=0.0, high=1.0)
    state = c.init(np.zeros((2,), np.float32)).replace(clipped=jnp.int32(2**31 - 2))
    _, state = c.encode(np.full((3, 2), 5.0, np.float32), state)
    assert int(state.clipped) == 2**31 - 1


def test_module_docstring_example_runs():
    code = mc.__doc__.split("Example (runnable)::")[1]
    code = "\n".join(line[4:] for line in code.splitlines())
    exec(compile(code, "memjax.codecs docstring", "exec"), {})
