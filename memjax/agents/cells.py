"""Linear recurrent memory cells trained with a parallel scan: LRU, minGRU and FFM.

Each cell's state follows a recurrence that is linear in the state,

```
h_t = a_t * h_{t-1} + b_t        (elementwise; a_t and b_t depend on the input x_t only)
y_t = readout(h_t, x_t)
```

so that acting steps it one observation at a time from the carry (:meth:`ParallelCell.__call__`)
while training runs a whole window at once (:meth:`ParallelCell.window`): the pairs ``(a_t,
b_t)`` compose associatively, and :func:`linear_scan` combines them with
``jax.lax.associative_scan`` in ``log2(L)`` parallel levels instead of ``L`` sequential
steps. An episode start inside a window (``first_t``) puts the initial state back before
step t; the reset is folded into that step's coefficients (``a_t = 0``, ``b_t = a_t initial +
b_t``), so the scan composes plain affine maps. Its gradient is a custom VJP: one more linear
scan, run backwards (:func:`linear_scan`).

The carry (what the agent carries between steps and replay stores once per window) is
always ONE real float32 array ``[B, memory]``, as the GRU's: a complex state is stored as its
real parts then its imaginary parts. Shapes (B environments, L steps, D input features,
H = ``features``):

```
cell          carry [B, H] holds                       output y    needs
mingru        h, H real                                [B, H]      -
lru           h, H/2 complex                           [B, H]      even H
ffm           S, m x c complex, m = H / (2c) traces    [B, H]      H a multiple of 2c
```
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

PARALLEL_CELLS = ("lru", "mingru", "ffm")
"""The cells trained by a parallel scan (:func:`make_cell` builds them)."""
FFM_CONTEXT = 4
"""FFM's context size c (frequencies per trace), the paper's default."""


def linear_scan(a, b, first, start, initial=None):
    """All states of ``h_t = a_t * h_{t-1} + b_t`` over a window, by ``associative_scan``,
    with ``h_{t-1}`` replaced by ``initial`` where ``first_t``.

    The reset is folded into the coefficients: where ``first_t``, ``(a_t, b_t)`` becomes
    ``(0, a_t initial + b_t)``, so that the window is one plain affine recurrence from
    ``h_0 = start``; the operator composes an earlier element ``(a1, b1)`` with a later
    ``(a2, b2)`` as ``(a2 a1, a2 b1 + b2)`` (:func:`linear_scan_autodiff` folds the reset into
    the operator instead: same states, more work per level).

    The gradient is a custom VJP: the adjoint ``lambda_t = g_t + a_{t+1} lambda_{t+1}`` (cut
    where step t+1 starts an episode) is ONE more linear scan, run in reverse; then
    ``db_t = lambda_t`` and ``da_t = lambda_t h_{t-1}`` (``h_{t-1}``: ``initial`` where
    ``first_t``, ``start`` at t = 0). Autodiff of ``associative_scan`` itself
    (:func:`linear_scan_autodiff`) differentiates its ``log2(L)`` levels of slicing. Complex values
    follow JAX's convention (cotangents transposed without conjugation, as ``jax.vjp``).

    Args:
      a: ``[B, L, *S]`` (or any shape that broadcasts to ``b``'s), real or complex.
      b: ``[B, L, *S]``.
      first: bool ``[B, L]``, True where step t starts an episode.
      start: ``[B, *S]``, the state before the window's first step.
      initial: ``[B, *S]``, the state at an episode's start; None: zeros.

    Returns:
      ``[B, L, *S]``, the state after each step (``b``'s dtype).
    """
    return _linear_scan(a, b, first, start, initial)


def linear_scan_autodiff(a, b, first, start, initial=None):
    """:func:`linear_scan` as it was before its custom VJP, kept as the reference of its
    gradient (tests) and the "before" of its benchmark (``experiments/bench_cells.py
    --compare-autodiff``): the reset folded into the operator (elements ``(a, b, r)``; where
    ``r2`` the later element drops what came before it, Morad et al.'s "memoroids", 2024), the
    gradient JAX's autodiff of ``associative_scan``."""
    a = jnp.broadcast_to(a, b.shape)
    reset = first.reshape(first.shape + (1,) * (b.ndim - 2))

    def combine(earlier, later):
        a1, b1, r1 = earlier
        a2, b2, r2 = later
        return jnp.where(r2, a2, a2 * a1), jnp.where(r2, b2, a2 * b1 + b2), r1 | r2

    gain, offset, restarted = jax.lax.associative_scan(combine, (a, b, reset), axis=1)
    initial = jnp.zeros_like(start) if initial is None else initial
    return gain * jnp.where(restarted, initial[:, None], start[:, None]) + offset


def _affine_scan(a, b, start, reverse=False):
    """``h_t = a_t h_{t-1} + b_t`` along axis 1 from ``h = start`` (None: zeros), by
    ``associative_scan``; ``reverse``: from the last step back, ``h_t = a_t h_{t+1} + b_t``."""

    def combine(earlier, later):
        a1, b1 = earlier
        a2, b2 = later
        return a2 * a1, a2 * b1 + b2

    gain, offset = jax.lax.associative_scan(
        combine, (jnp.broadcast_to(a, b.shape), b), reverse=reverse, axis=1
    )
    return offset if start is None else gain * start[:, None] + offset


def _reset_flags(first, ndim):
    return first.reshape(first.shape + (1,) * (ndim - 2))


def _forward_coefficients(a, b, first, initial):
    """``(a, b)`` with each episode start folded in: ``(0, a_t initial + b_t)`` where first."""
    reset = _reset_flags(first, b.ndim)
    a_full = jnp.where(reset, jnp.zeros((), jnp.result_type(a)), a)
    if initial is not None:
        b = jnp.where(reset, a * initial[:, None] + b, b)
    return a_full, b


def _linear_scan_plain(a, b, first, start, initial):
    return _affine_scan(*_forward_coefficients(a, b, first, initial), start)


_linear_scan = jax.custom_vjp(_linear_scan_plain)


def _linear_scan_fwd(a, b, first, start, initial):
    h = _linear_scan_plain(a, b, first, start, initial)
    # the states are the output (kept anyway for the readout's gradient); b's dtype rides
    # along in an empty array
    return h, (a, first, start, initial, h, jnp.zeros((0,), b.dtype))


def _as_cotangent(ct, like):
    """``ct`` as the cotangent of a primal ``like``: summed over the axes ``like`` was broadcast
    along, and real where ``like`` is real (JAX's transpose of a real-to-complex cast)."""
    extra = ct.ndim - jnp.ndim(like)
    ct = ct.sum(axis=tuple(range(extra))) if extra else ct
    ones = tuple(i for i, n in enumerate(jnp.shape(like)) if n == 1 and ct.shape[i] != 1)
    ct = ct.sum(axis=ones, keepdims=True) if ones else ct
    return _cast_cotangent(ct, jnp.result_type(like))


def _cast_cotangent(ct, dtype):
    """``ct`` in ``dtype``: its real part for a real ``dtype`` (JAX's transpose of a
    real-to-complex cast)."""
    if jnp.iscomplexobj(ct) and not jnp.issubdtype(dtype, jnp.complexfloating):
        ct = jnp.real(ct)
    return ct.astype(dtype)


def _linear_scan_bwd(residuals, g):
    a, first, start, initial, h, b_like = residuals
    reset = _reset_flags(first, h.ndim)
    a_full = jnp.broadcast_to(a, h.shape)
    # lambda_t = g_t + c_t lambda_{t+1}, c_t = a_{t+1} unless step t+1 starts an episode
    # (c_{L-1} is never used: the reverse scan starts from lambda_L = 0)
    zero = jnp.zeros((), a_full.dtype)
    c = jnp.concatenate([jnp.where(reset[:, 1:], zero, a_full[:, 1:]), a_full[:, -1:]], axis=1)
    lam = _affine_scan(c, g, None, reverse=True)
    before = jnp.concatenate([start[:, None], h[:, :-1]], axis=1)  # h_{t-1}
    if initial is None:
        before = jnp.where(reset, jnp.zeros((), h.dtype), before)
        d_initial = None
    else:
        before = jnp.where(reset, initial[:, None], before)
        # d initial: every step that started an episode read it through its a_t
        d_initial = jnp.where(reset, a_full * lam, jnp.zeros((), h.dtype)).sum(axis=1)
        d_initial = _as_cotangent(d_initial, initial)
    d_start = jnp.where(reset[:, 0], jnp.zeros((), h.dtype), a_full[:, 0] * lam[:, 0])
    return (
        _as_cotangent(lam * before, a),
        _cast_cotangent(lam, b_like.dtype),
        None,
        _as_cotangent(d_start, start),
        d_initial,
    )


_linear_scan.defvjp(_linear_scan_fwd, _linear_scan_bwd)


class ParallelCell(nn.Module):
    """A cell with a linear recurrence (the module docstring's): subclasses give
    :meth:`coefficients` ``x -> (a, b)``, :meth:`readout` ``(h, x) -> y`` and the carry's
    conversions to and from the state ``h`` (:meth:`state`, :meth:`to_carry`).

    ``cell(carry [B, H], x [B, D]) -> (carry [B, H], y [B, H])`` steps once;
    ``cell.window(carry [B, H], x [B, L, D], first bool [B, L], initial=None) -> (carries
    [B, L, H], y [B, L, H])`` runs a window by :func:`linear_scan`, every carry after its step.

    Attributes:
      features: H, the carry's real features and the output width.
    """

    features: int

    def coefficients(self, x):
        """``(a, b)`` of the recurrence for inputs ``x`` ``[R, D]``: ``b`` ``[R, *S]``, ``a``
        the same shape or a constant that broadcasts to it."""
        raise NotImplementedError

    def readout(self, h, x):
        """The output ``[R, H]`` from the states ``h`` ``[R, *S]`` after the inputs ``x``."""
        raise NotImplementedError

    def state(self, carry):
        """The state ``h`` held by a carry ``[..., H]`` (identity for a real state)."""
        return carry

    def to_carry(self, h):
        """The carry ``[..., H]`` of a state (identity for a real state)."""
        return h

    def __call__(self, carry, x):
        a, b = self.coefficients(x)
        h = a * self.state(carry) + b
        return self.to_carry(h), self.readout(h, x)

    def window(self, carry, x, first, initial=None):
        # the dense layers see rows [B * L, D] (XLA:CPU's gradient of a dense layer over two
        # leading axes was 5x slower than over one); only the scan sees [B, L, ...]
        lead = x.shape[:2]
        rows = x.reshape((-1, x.shape[-1]))
        a, b = self.coefficients(rows)
        unrows = lambda v: v.reshape((*lead, *v.shape[1:]))  # noqa: E731
        a = unrows(a) if a.shape == b.shape else a  # else one constant for every step
        start = self.state(carry)
        init = None if initial is None else self.state(initial)
        h = linear_scan(a, unrows(b), first, start, init)
        h_rows = h.reshape((-1, *h.shape[2:]))
        return self.to_carry(h), unrows(self.readout(h_rows, rows))


def complex_state(carry):
    """A complex state from a carry ``[..., 2N]`` (real parts, then imaginary parts)."""
    n = carry.shape[-1] // 2
    return jax.lax.complex(carry[..., :n], carry[..., n:])


def complex_carry(h):
    """The carry ``[..., 2N]`` of a complex state ``[..., N]``."""
    return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)


class MinGRU(ParallelCell):
    """minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi, 2024, "Were RNNs All We Needed?",
    arXiv:2410.01201, section 3.1.2):

    ```
    z_t = sigmoid(Linear_z(x_t))          update gate, from the input alone
    h~_t = Linear_h(x_t)                  candidate state, no tanh
    h_t = (1 - z_t) * h_{t-1} + z_t * h~_t
    y_t = h_t
    ```

    Departures: the window is scanned in linear space (``a = 1 - z``, ``b = z h~``), not with
    the paper's log-space scan and its positive ``g(.)`` candidate (which guard products of
    many gates against underflow over thousands of steps; a replay window is tens of steps,
    and a product that underflows to 0 is the right value of a gate that forgot). The output
    is the state itself, as the paper's single layer; the Q-network's ReLU head follows it.
    """

    def setup(self):
        self.gate = nn.Dense(self.features)
        self.candidate = nn.Dense(self.features)

    def coefficients(self, x):
        z = jax.nn.sigmoid(self.gate(x))
        return 1.0 - z, z * self.candidate(x)

    def readout(self, h, x):
        return h


def _uniform(low: float, high: float):
    def init(key, shape):
        return jax.random.uniform(key, shape, jnp.float32, low, high)

    return init


def _normal(std: float):
    def init(key, shape):
        return std * jax.random.normal(key, shape, jnp.float32)

    return init


class LRU(ParallelCell):
    """The Linear Recurrent Unit (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De, 2023,
    "Resurrecting Recurrent Neural Networks for Long Sequences", arXiv:2303.06349):

    ```
    lambda = exp(-exp(nu) + i exp(theta))       N = H/2 complex eigenvalues, |lambda| < 1
    h_t = lambda * h_{t-1} + exp(gamma_log) * (B x_t)        B complex [N, D]
    u_t = Re(C h_t) + D x_t                                  C complex [H, N]
    y_t = (W u_t + b) * sigmoid(V u_t + c)                   GLU, W and V [H, H]
    ```

    As the paper: the exponential parameterisation keeps ``|lambda| < 1``; ``lambda`` starts
    uniform on the ring ``r_min <= |lambda| <= r_max`` with phases uniform in ``[0,
    max_phase]``; the normalisation ``gamma`` is trained, starting at ``sqrt(1 -
    |lambda|^2)``; ``B`` and ``C`` are complex Glorot-normal (variance ``1 / 2D`` and ``1 / N``
    per part).

    The ring and phases are the paper's defaults, ``[0.9, 0.999]`` and ``[0, 2 pi]``. Both
    were measured here against what this module had first, ``[0.5, 0.99]`` and the ``[0, pi
    / 10]`` of the paper's hardest task (DRQN, 2 seeds each, the memory table's recipe):
    recalling the input of k steps ago needs states whose phases tell ages apart; with phases
    up to ``pi / 10`` ages differ by under 0.3 rad a step, and DRQN closed 44% of
    RepeatPrevious-5's gap and 31% of RepeatPrevious-8's, with the full circle 100% of both;
    the slower ring then took RepeatFirst (recall the first card all episode) from 87% to
    97%.

    The gated linear unit after the readout is the paper's block's: without it the output is
    linear in the state and the input, and a task whose answer is a product of the two (the
    count of the queried value in CountRecall) is left to the Q-network's ReLU head. Measured
    (DRQN, 2 seeds, the memory table's recipe): CountRecall from 70% of the gap (0.76, 0.17)
    to 94% (1.0, 0.8) with it.

    Departures: ``D`` is a full learned map (the paper's is diagonal, its input and output
    widths being equal; here the encoder's width need not be ``H``). The rest of the paper's
    block (normalisation, residual) is left out: the Q-network's encoder and ReLU head
    surround the cell instead.
    """

    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi

    def setup(self):
        n = self.features // 2
        r2_min, r2_max = self.r_min**2, self.r_max**2

        def nu_init(key, shape):  # |lambda|^2 uniform on [r_min^2, r_max^2]: uniform on the ring
            u = jax.random.uniform(key, shape, jnp.float32)
            return jnp.log(-0.5 * jnp.log(u * (r2_max - r2_min) + r2_min))

        def theta_init(key, shape):
            u = jax.random.uniform(key, shape, jnp.float32, minval=1e-6)
            return jnp.log(self.max_phase * u)

        self.nu_log = self.param("nu_log", nu_init, (n,))
        self.theta_log = self.param("theta_log", theta_init, (n,))
        self.gamma_log = self.param(
            "gamma_log",
            lambda key, shape: 0.5 * jnp.log1p(-jnp.exp(-2 * jnp.exp(self.nu_log))),
            (n,),
        )
        b_init = glorot_part(lambda shape: 2 * shape[0])  # Dense kernels are [D, N]
        c_init = glorot_part(lambda shape: shape[0])  # [N, H]
        self.b_re = nn.Dense(n, use_bias=False, kernel_init=b_init)
        self.b_im = nn.Dense(n, use_bias=False, kernel_init=b_init)
        self.c_re = nn.Dense(self.features, use_bias=False, kernel_init=c_init)
        self.c_im = nn.Dense(self.features, use_bias=False, kernel_init=c_init)
        self.skip = nn.Dense(self.features, use_bias=False)
        self.glu_value = nn.Dense(self.features)
        self.glu_gate = nn.Dense(self.features)

    def eigenvalues(self):
        """lambda, complex64 ``[N]``."""
        return jnp.exp(-jnp.exp(self.nu_log) + 1j * jnp.exp(self.theta_log))

    def coefficients(self, x):
        scale = jnp.exp(self.gamma_log)
        return self.eigenvalues(), jax.lax.complex(scale * self.b_re(x), scale * self.b_im(x))

    def state(self, carry):
        return complex_state(carry)

    def to_carry(self, h):
        return complex_carry(h)

    def readout(self, h, x):
        u = self.c_re(jnp.real(h)) - self.c_im(jnp.imag(h)) + self.skip(x)
        return self.glu_value(u) * jax.nn.sigmoid(self.glu_gate(u))


def glorot_part(fan):
    """A normal kernel init of variance ``1 / fan(shape)`` (one part of a complex matrix)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype) / jnp.sqrt(fan(shape)).astype(dtype)

    return init


class FFM(ParallelCell):
    """Fast and Forgetful Memory (Morad, Kortvelesy, Liwicki & Prorok, 2023, "Reinforcement
    Learning with Fast and Forgetful Memory", NeurIPS, arXiv:2310.04128): m traces, each
    decaying at its own rate and seen through c rotating frequencies.

    ```
    x~_t = Linear_pre(x_t) * sigmoid(Linear_in(x_t))                   [m], input gate
    gamma = exp(-|alpha| + i omega)                                   [m, c], alpha [m], omega [c]
    S_t = gamma * S_{t-1} + x~_t (the same for each of the c columns)  complex [m, c]
    z_t = Linear_mix([Re S_t, Im S_t])                                 [H]
    g_t = sigmoid(Linear_out(x_t))
    y_t = LayerNorm(z_t) * g_t + Linear_skip(x_t) * (1 - g_t)          [H], output gate
    ```

    with c = :data:`FFM_CONTEXT` and m = ``H / (2c)`` (the carry holds the m x c complex
    state as ``H`` reals). As the authors' code initialises them, decay rates ``|alpha|`` are
    evenly spaced from ``ln 2`` (half forgotten per step) to ``ln(100) / 1024`` (1% left
    after 1024 steps); frequencies are ``2 pi / P``, both trained.

    Departures: the periods P are spaced geometrically from 2 to 1024, not evenly from 1 to
    1024. With c = 4 the authors' periods are 1, 342, 683 and 1024: a period of 1 turns a
    full circle per step, which is no turn at all, so every frequency is near 0 and the
    phases cannot tell recent steps apart; 2, 16, 128 and 1024 start at the fastest turn a
    sampled sequence can show. DRQN with FFM went from 35% to 100% of RepeatPrevious-5's gap
    and from 18% to 63% of RepeatPrevious-8's (2 seeds each). The paper computes a window in
    closed form (``S_t = gamma^t S_0 + sum_i gamma^(t-i) x~_i``, a cumulative sum that needs
    ``alpha`` clamped against overflow of ``gamma^-t``); here the same recurrence runs
    through :func:`linear_scan`, which never forms ``gamma^-t`` and needs no clamp (``|gamma|
    <= 1`` for any ``alpha``). The skip path is a learned projection of ``x`` (the paper's is
    ``x`` itself, its widths being equal), and the layer norm has no learned scale or offset.
    """

    context: int = FFM_CONTEXT

    def setup(self):
        traces = self.features // (2 * self.context)
        self.pre = nn.Dense(traces)
        self.gate_in = nn.Dense(traces)
        self.gate_out = nn.Dense(self.features)
        self.skip = nn.Dense(self.features)
        self.mix = nn.Dense(self.features)
        self.norm = nn.LayerNorm(use_bias=False, use_scale=False)
        self.alpha = self.param(
            "alpha",
            lambda key, shape: jnp.linspace(math.log(2), math.log(100) / 1024, shape[0]),
            (traces,),
        )
        self.omega = self.param(
            "omega",
            lambda key, shape: 2 * jnp.pi / jnp.geomspace(2.0, 1024.0, shape[0]),
            (self.context,),
        )

    def decay(self):
        """gamma, complex64 ``[m, c]``."""
        return jnp.exp(-jnp.abs(self.alpha)[:, None] + 1j * self.omega[None, :])

    def coefficients(self, x):
        gated = self.pre(x) * jax.nn.sigmoid(self.gate_in(x))
        b = jnp.broadcast_to(gated[..., None], (*gated.shape, self.context))
        return self.decay(), jax.lax.complex(b, jnp.zeros_like(b))  # complex128 in float64

    def state(self, carry):
        h = complex_state(carry)
        return h.reshape((*h.shape[:-1], -1, self.context))

    def to_carry(self, h):
        return complex_carry(h.reshape((*h.shape[:-2], -1)))

    def readout(self, h, x):
        gate = jax.nn.sigmoid(self.gate_out(x))
        return self.norm(self.mix(self.to_carry(h))) * gate + self.skip(x) * (1.0 - gate)


def make_cell(name: str, features: int) -> ParallelCell:
    """The parallel cell ``name`` (one of :data:`PARALLEL_CELLS`) of ``features`` (H)."""
    check_cell(name, features)
    return {"lru": LRU, "mingru": MinGRU, "ffm": FFM}[name](features=features)


def check_cell(name: str, features: int, known=PARALLEL_CELLS) -> None:
    """``ValueError`` naming the setting: an unknown cell (listing ``known``) or a size the
    cell cannot hold (``features`` is the ``memory`` knob)."""
    if name not in known:
        raise ValueError(f"cell must be one of {tuple(known)}, got {name!r}")
    if name == "lru" and features % 2:
        raise ValueError(
            f"cell 'lru' needs an even memory, got {features}: its state is memory/2 complex "
            f"numbers, stored as their real and imaginary parts; use --memory {features + 1}"
        )
    if name == "ffm" and features % (2 * FFM_CONTEXT):
        up = -(-features // (2 * FFM_CONTEXT)) * 2 * FFM_CONTEXT
        raise ValueError(
            f"cell 'ffm' needs a memory that is a multiple of {2 * FFM_CONTEXT}, got {features}: "
            f"its state is memory/{2 * FFM_CONTEXT} traces x {FFM_CONTEXT} frequencies of "
            f"complex numbers, stored as real and imaginary parts; use --memory {up}"
        )
