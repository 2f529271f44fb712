"""NICE, RealNVP, Glow and Flow++ assembled from bijectors, plus Flow++'s
variational dequantizer and the top-level :class:`FlowModel`.

Every image flow is shape-preserving, (H, W, C) -> (H, W, C): a multi-scale
level is Chain(squeeze, steps, Split(next level), unsqueeze), where Split
factors half of the channels out (see bijectors.Split) and the final
unsqueeze is a fixed permutation (log-det 0). The latent z therefore has the
data's shape and a standard normal prior; Glow's learned priors are bijections
into that standard normal, so temperature sampling draws z ~ N(0, T^2 I).
Vector data (the 2-D toys) use MLP conditioners and channel masks.

The first layers map the data's ``value_range`` to the space a paper worked
in (constant log-dets, counted): [0, 1] then logit for RealNVP and Flow++,
[-0.5, 0.5] for Glow, [0, 1] flattened for NICE.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.errors import ConfigError
from gen_jax.flows.bijectors import (
    ActNorm,
    Chain,
    ElementwiseAffine,
    InvConv1x1,
    Invert,
    Logit,
    Rescale,
    Reshape,
    Split,
    Squeeze,
)
from gen_jax.flows.couplings import (
    AdditiveCoupling,
    AffineCoupling,
    ConvTrunk,
    GatedAttentionTrunk,
    MixLogisticCoupling,
    MLPTrunk,
)
from gen_jax.likelihood import standard_normal_log_prob  # noqa: F401 - re-exported
from gen_jax.value_range import ValueRange

Array = jax.Array
ARCHS = ("nice", "realnvp", "glow", "flowpp")
# The config.model keys each architecture reads.
MODEL_KEYS = {
    "nice": ("num_couplings", "hidden", "num_layers"),
    "realnvp": ("num_scales", "num_couplings", "hidden", "num_layers", "num_blocks", "logit_alpha"),
    "glow": ("num_levels", "steps_per_level", "hidden", "num_layers", "num_blocks", "coupling",
             "learn_top", "split_prior"),
    "flowpp": ("steps_per_level", "hidden", "num_layers", "num_blocks", "num_heads", "num_components",
               "logit_alpha", "dequantize", "dequant_steps"),
}


def _to_unit(value_range: tuple[float, float], shift: float = 0.0) -> Rescale:
    """The data's value range [lo, hi] -> [0, 1] (+ ``shift``)."""
    scale, offset = ValueRange(*value_range).unit_affine()
    return Rescale(scale, offset + shift) if shift else Rescale(scale, offset)


def _mlp(m: ml_collections.ConfigDict) -> MLPTrunk:
    return MLPTrunk((m.hidden,) * m.num_layers)


def _check_levels(shape: tuple[int, ...], levels: int, what: str) -> None:
    h, w = shape[0], shape[1]
    if h % 2 ** levels or w % 2 ** levels:
        raise ConfigError(f"{what}={levels} squeezes by 2 that many times, but images are {h}x{w}")


def build_nice(m: ml_collections.ConfigDict, shape: tuple[int, ...], value_range) -> Chain:
    """NICE (Dinh et al., 2015): additive couplings with alternating halves, then the
    diagonal scaling layer; images are flattened (working on [0, 1]). The scaling
    layer also has a bias and starts from the data's per-dimension mean and std."""
    dim = math.prod(shape)
    layers = []
    if len(shape) == 3:
        layers += [_to_unit(value_range), Reshape(tuple(shape), (dim,))]
    for i in range(m.num_couplings):
        layers.append(AdditiveCoupling(_mlp(m), "channel", i % 2))
    # The diagonal scaling layer, with a bias and a data-dependent init (our addition).
    layers.append(ElementwiseAffine(shift=True, data_init=True))
    return Chain(layers)


def build_realnvp(m: ml_collections.ConfigDict, shape: tuple[int, ...], value_range) -> Chain:
    """RealNVP (Dinh et al., 2017, sec. 4.1): per scale 3 checkerboard couplings,
    squeeze, 3 channel couplings, factor out half; the last scale has 4
    checkerboard couplings. Vectors: ``num_couplings`` alternating couplings."""
    if len(shape) == 1:
        return Chain([AffineCoupling(_mlp(m), "channel", i % 2) for i in range(m.num_couplings)])
    _check_levels(shape, m.num_scales - 1, "model.num_scales - 1")

    def trunk():
        return ConvTrunk(m.hidden, m.num_blocks)

    def scale(level: int) -> Chain:
        if level == m.num_scales - 1:
            return Chain([AffineCoupling(trunk(), "checkerboard", i % 2) for i in range(4)])
        layers = [AffineCoupling(trunk(), "checkerboard", i % 2) for i in range(3)]
        layers.append(Squeeze())
        layers += [AffineCoupling(trunk(), "channel", i % 2) for i in range(3)]
        layers += [Split(scale(level + 1)), Squeeze(undo=True)]
        return Chain(layers)

    return Chain([_to_unit(value_range), Logit(m.logit_alpha), scale(0)])


def _glow_step(m: ml_collections.ConfigDict, image: bool, parity: int) -> list:
    """One Glow step: actnorm, invertible 1x1 conv, coupling."""
    trunk = ConvTrunk(m.hidden, m.num_blocks) if image else _mlp(m)
    if m.coupling == "affine":
        coupling = AffineCoupling(trunk, "channel", parity, scale_fn="sigmoid")
    elif m.coupling == "additive":
        coupling = AdditiveCoupling(trunk, "channel", parity)
    else:
        raise ConfigError(f"model.coupling must be 'affine' or 'additive', got {m.coupling!r}")
    return [ActNorm(), InvConv1x1(), coupling]


def build_glow(m: ml_collections.ConfigDict, shape: tuple[int, ...], value_range) -> Chain:
    """Glow (Kingma & Dhariwal, 2018): ``num_levels`` levels (multi-scale levels, the
    paper's L; not the data's pixel levels), each a squeeze, ``steps_per_level`` steps and a
    split with a learned prior (``split_prior``); a learned top prior
    (``learn_top``). Works on [-0.5, 0.5]. Vectors: ``steps_per_level`` steps."""
    image = len(shape) == 3
    if not image:
        layers = [x for i in range(m.steps_per_level) for x in _glow_step(m, False, i % 2)]
        return Chain(layers + ([ElementwiseAffine()] if m.learn_top else []))
    _check_levels(shape, m.num_levels, "model.num_levels")

    def level(i: int) -> Chain:
        layers = [Squeeze()] + [x for k in range(m.steps_per_level) for x in _glow_step(m, True, k % 2)]
        if i < m.num_levels - 1:
            layers.append(Split(level(i + 1), learned_prior=m.split_prior))
        elif m.learn_top:
            layers.append(ElementwiseAffine())
        return Chain(layers + [Squeeze(undo=True)])

    return Chain([_to_unit(value_range, shift=-0.5), level(0)])


def _flowpp_coupling(m, image: bool, mask: str, parity: int, heads: int) -> MixLogisticCoupling:
    trunk = GatedAttentionTrunk(m.hidden, m.num_blocks, heads) if image else _mlp(m)
    return MixLogisticCoupling(trunk, mask, parity, num_components=m.num_components)


def build_flowpp(m: ml_collections.ConfigDict, shape: tuple[int, ...], value_range) -> Chain:
    """Flow++ (Ho et al., 2019, sec. 3): logit preprocessing, then ``steps_per_level``
    steps of (actnorm, 1x1 conv, logistic-mixture CDF coupling) with checkerboard
    masks, squeeze, ``steps_per_level`` steps with channel masks, unsqueeze. Vectors:
    ``steps_per_level`` steps with channel masks and MLP conditioners."""
    if len(shape) == 1:
        return Chain([x for i in range(m.steps_per_level)
                      for x in (ActNorm(), InvConv1x1(), _flowpp_coupling(m, False, "channel", i % 2, 0))])
    _check_levels(shape, 1, "Flow++'s one squeeze")
    layers = [_to_unit(value_range), Logit(m.logit_alpha)]
    for i in range(m.steps_per_level):
        layers += [ActNorm(), InvConv1x1(), _flowpp_coupling(m, True, "checkerboard", i % 2, m.num_heads)]
    layers.append(Squeeze())
    for i in range(m.steps_per_level):
        layers += [ActNorm(), InvConv1x1(), _flowpp_coupling(m, True, "channel", i % 2, m.num_heads)]
    return Chain(layers + [Squeeze(undo=True)])


BUILDERS = {"nice": build_nice, "realnvp": build_realnvp, "glow": build_glow, "flowpp": build_flowpp}


class VariationalDequantizer(nn.Module):
    """Flow++'s variational dequantization (Ho et al., 2019, sec. 3.1): a conditional
    flow u = sigmoid(g(eps; x)) with eps ~ N(0, I), so
    log q(u|x) = log N(eps) - log|det du/deps|. The couplings of g see a
    convolutional embedding of the (centred) discrete image as context.
    """

    hidden: int
    num_blocks: int
    num_steps: int
    num_components: int

    @nn.compact
    def __call__(self, eps: Array, x01: Array) -> tuple[Array, Array]:
        """(u in (0, 1), log q(u|x)) for noise ``eps`` and the image ``x01`` in [0, 1]."""
        context = ConvTrunk(self.hidden, self.num_blocks, name="context")(x01 - 0.5)
        layers = []
        for i in range(self.num_steps):
            trunk = GatedAttentionTrunk(self.hidden, self.num_blocks, 0)
            layers += [ActNorm(), MixLogisticCoupling(trunk, "checkerboard", i % 2,
                                                      num_components=self.num_components)]
        flow = Chain(layers + [Invert(Logit(0.0))], name="flow")
        u, ld = flow(eps, context=context)
        return u, standard_normal_log_prob(eps) - ld


class FlowModel(nn.Module):
    """The flow x -> z with a standard normal prior, and the optional dequantizer."""

    flow: nn.Module
    dequantizer: nn.Module | None = None

    def __call__(self, y: Array, reverse: bool = False) -> tuple[Array, Array]:
        """Forward: (z, log|det dz/dy|); ``reverse``: (y, log|det dy/dz|)."""
        return self.flow(y, reverse=reverse)

    def log_density(self, y: Array) -> tuple[Array, Array]:
        """(log p(y) per example by the change of variables, z)."""
        z, ld = self.flow(y)
        return standard_normal_log_prob(z) + ld, z

    def dequantize(self, eps: Array, x01: Array) -> tuple[Array, Array]:
        """Variational dequantization noise: (u, log q(u|x))."""
        return self.dequantizer(eps, x01)


def check_model_config(arch: str, m: ml_collections.ConfigDict) -> None:
    """A ConfigError naming any missing ``model.*`` key of ``arch``."""
    missing = [k for k in MODEL_KEYS[arch] if k not in m]
    if missing:
        raise ConfigError(f"method {arch!r} needs config.model keys {', '.join(missing)} "
                          f"(it reads: {', '.join(MODEL_KEYS[arch])})")


def num_params(params) -> int:
    """Total number of entries of a parameter pytree."""
    return int(sum(jnp.size(p) for p in jax.tree.leaves(params)))
