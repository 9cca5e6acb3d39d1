"""Q-networks (flax.linen).

Every network maps a batch of observations ``obs`` of shape ``[B, *obs_shape]`` (any real or
bool dtype; cast to float32 inside) to Q-values of shape ``[B, num_actions]``, float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLPQNetwork(nn.Module):
    """MLP Q-network for vector observations (PureJaxRL's CartPole network by default).

    Calling it (``network.apply(params, obs)``) maps ``obs`` float ``[B, *obs_shape]`` (flattened
    after the batch axis, cast to float32) to Q-values float32 ``[B, num_actions]``.

    Attributes:
      num_actions: size of the discrete action space, A.
      hidden: widths of the hidden ReLU layers.
    """

    num_actions: int
    hidden: Sequence[int] = (120, 84)

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = jnp.asarray(obs, jnp.float32)
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_actions)(x)


class ConvQNetwork(nn.Module):
    """Small conv Q-network for MinAtar-style image observations (Young & Tian, 2019).

    One 3x3 conv (``channels`` filters, stride 1, VALID padding) + ReLU, flatten, a Dense hidden
    layer of ``hidden`` units + ReLU, then a linear head. Calling it maps ``obs`` ``[B, H, W, C]``
    (MinAtar: ``[B, 10, 10, C]``, float32 or bool) to Q-values float32 ``[B, num_actions]``; other
    ranks raise ``ValueError``.

    Attributes:
      num_actions: size of the discrete action space, A.
      channels: conv filters.
      hidden: units of the Dense hidden layer.
    """

    num_actions: int
    channels: int = 16
    hidden: int = 128

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = jnp.asarray(obs, jnp.float32)
        if x.ndim != 4:
            raise ValueError(f"ConvQNetwork expects obs of shape [B, H, W, C], got shape {x.shape}")
        x = nn.relu(nn.Conv(self.channels, kernel_size=(3, 3), strides=(1, 1), padding="VALID")(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_actions)(x)


NETWORK_KINDS = ("auto", "mlp", "conv")
"""The ``network`` names :func:`network_kind` takes."""


def network_kind(kind: str, obs_shape: tuple) -> str:
    """The Q-network kind for observations of ``obs_shape``.

    Args:
      kind: one of :data:`NETWORK_KINDS`: ``"auto"``, ``"mlp"`` or ``"conv"``.
      obs_shape: the shape of ONE observation.

    Returns:
      ``kind`` itself, or for ``"auto"``: ``"conv"`` for images ``[H, W, C]``, else ``"mlp"``.

    Raises:
      ValueError: a conv network for non-image observations, or an unknown kind.
    """
    if kind not in NETWORK_KINDS:
        raise ValueError(f"network must be one of {NETWORK_KINDS}, got {kind!r}")
    if kind == "auto":
        return "conv" if len(obs_shape) == 3 else "mlp"
    if kind == "conv" and len(obs_shape) != 3:
        raise ValueError(
            f"network 'conv' needs image observations [H, W, C]; these "
            f"observations have shape {tuple(obs_shape)}: use 'mlp'"
        )
    return kind


def make_network(kind: str, num_actions: int, hidden: Sequence[int] = (120, 84)) -> nn.Module:
    """Build a Q-network by name.

    Args:
      kind: ``"mlp"`` or ``"conv"`` (resolve ``"auto"`` with :func:`network_kind` first).
      num_actions: size of the discrete action space.
      hidden: the MLP's hidden widths (unused by ``"conv"``).

    Returns:
      An :class:`MLPQNetwork` or :class:`ConvQNetwork`.

    Raises:
      ValueError: an unknown kind.
    """
    if kind == "mlp":
        return MLPQNetwork(num_actions=num_actions, hidden=tuple(hidden))
    if kind == "conv":
        return ConvQNetwork(num_actions=num_actions)
    raise ValueError(f"unknown network {kind!r}: expected 'mlp' or 'conv'")
