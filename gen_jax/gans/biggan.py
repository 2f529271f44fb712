"""BigGAN (Brock, Donahue & Simonyan, 2019): large-scale class-conditional GAN training.

The pieces of the paper, each in one function or module below:

- **class-conditional batch norm with a shared embedding and hierarchical latents**
  (Sec. 3, Fig. 15; :class:`ConditionalBatchNorm`, :class:`Generator`): z is split into
  ``len(g_channels)`` equal chunks; the first feeds G's input layer, chunk i + 1 is
  concatenated with the shared class embedding (one ``nn.Embed`` for all of G) to form
  block i's conditioning vector, from which bias-free linear layers give every batch
  norm's gain ``1 + W_g c`` and bias ``W_b c``.
- **projection discriminator** (Miyato & Koyama, 2018; :class:`Discriminator`):
  D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, phi the ReLU'd, spatially summed features.
- **spectral normalization in G and D** (Miyato et al., 2018; Zhang et al., 2019):
  every conv, linear and D's class embedding through gen_jax.nn.spectral_norm, one power
  iteration per training call (G's vectors advance in G's step, D's in D's steps).
- **orthogonal regularization** (Sec. 3.1; :func:`ortho_reg`), BigGAN's variant
  R(W) = beta ||W^T W (1 - I)||_F^2 summed over G's weight matrices except the shared
  embedding, beta = 1e-4, added to G's loss.
- **hinge loss** (gen_jax/gans/losses.py) with ``biggan.d_steps`` D updates per G update,
  each on a fresh chunk of the real batch against fakes of uniformly drawn classes.
- **G EMA** (:func:`ema_update`): the official code (github.com/ajbrock/BigGAN-PyTorch,
  ``utils.ema``) pegs the averaged weights to G's until G update ``biggan.ema_start``
  and then averages with ``train.ema_decay``; sampling and evaluation use the average.
- **standing statistics** (Sec. 3.1, App. C): G's batch norms sample with fixed
  statistics, those of ``biggan.standing_samples`` draws of the (EMA) generator from the
  untruncated prior with class-balanced labels; 0 = the statistics of the sampled batch.
  Fixed statistics are what let truncation act: batch statistics would renormalize a
  truncated batch back to the prior's spread. They are computed in the same pass as the
  samples: the standing draws lead the batch and every batch norm takes its statistics
  from those rows only (``stats_rows``), so no statistics are stored.
- **the truncation trick** (Sec. 3.1; :func:`truncated_normal`): z from a normal truncated
  to [-psi, psi], values outside resampled; ``biggan.truncation`` (0 = off) in ``sample``.

Architecture: the official code's 32x32 (CIFAR) ResNet layout at any size 4 * 2^k: G
has a linear layer to 4x4, one up-block per doubling (CBN-ReLU-up-conv3-CBN-ReLU-conv3
plus an up-conv1 shortcut) and BN-ReLU-conv3-tanh; D has residual blocks (the first
without pre-activation), average-pool downsampling where ``model.d_downsample`` says,
ReLU, a spatial sum and the projection head. **Self-attention** (SAGAN, Zhang et al.,
2019; :class:`SelfAttention`) after the G block and the D block whose output has
``model.attention_resolution`` pixels a side (0 = none; the paper uses 64 at 128x128, the
official CIFAR layout none). Batch norms use the batch's statistics in training, as every
GAN in gen_jax.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.gans.gan import GAN, GANState, apply_d, d_optimizer, split_variables
from gen_jax.gans.losses import hinge_d_loss, wasserstein_g_loss
from gen_jax.gans.networks import to_range
from gen_jax.gans.progan import downsample, upsample2
from gen_jax.nn.spectral_norm import SNConv, SNDense, spectral_normalize
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer

_BN_EPS = 1e-5


# -- the paper's formulas ---------------------------------------------------------------


def truncated_normal(rng: jax.Array, shape: Sequence[int], psi: float | jax.Array) -> jax.Array:
    """The truncation trick's latents (Brock et al., 2019, Sec. 3.1): N(0, 1) draws with
    every value of magnitude above ``psi`` resampled until none is left, i.e. the standard
    normal truncated to [-psi, psi]. ``psi <= 0`` means no truncation (plain N(0, 1)).

    Round i draws from ``fold_in(rng, i)`` (round 0: every value); the number of rounds
    grows like log(size) / -log(1 - p), p = P(|z| <= psi): about 24 at psi = 0.5 and 53
    at psi = 0.25 for 10^5 values. ``psi`` may be traced (one compiled sampler for every
    threshold); a Python ``psi <= 0`` compiles no loop.
    """
    z = jax.random.normal(jax.random.fold_in(rng, 0), shape)
    if isinstance(psi, (int, float)) and psi <= 0:  # static: no loop in the program
        return z
    bound = jnp.where(psi > 0, psi, jnp.inf)

    def outside(carry):
        return jnp.any(jnp.abs(carry[1]) > bound)

    def redraw(carry):
        i, z = carry
        fresh = jax.random.normal(jax.random.fold_in(rng, i), shape)
        return i + 1, jnp.where(jnp.abs(z) > bound, fresh, z)

    return jax.lax.while_loop(outside, redraw, (jnp.ones((), jnp.int32), z))[1]


def ortho_reg(params: Any, exclude: Sequence[str] = ("shared",)) -> jax.Array:
    """BigGAN's orthogonal regularization (Brock et al., 2019, Sec. 3.1, Eq. 3) without
    its weight beta: sum over every weight with at least two axes, not under a top-level
    module named in ``exclude`` (the shared embedding, as the official code's blacklist),
    of ||W^T W (1 - I)||_F^2, W the kernel as (fan_in, fan_out): only the off-diagonal
    inner products of the filters are penalized, not their norms.

    The official code adds 2 (W W^T (1 - I)) W beta to the gradient, half the gradient
    of beta times this value (Eq. 3 differentiated is 4 (...) W): the paper's formula is
    followed here.
    """
    total = jnp.zeros(())
    for path, w in jax.tree_util.tree_flatten_with_path(params)[0]:
        top = getattr(path[0], "key", None)
        if w.ndim < 2 or top in exclude:
            continue
        mat = w.reshape(-1, w.shape[-1])
        gram = mat.T @ mat
        off = gram * (1.0 - jnp.eye(gram.shape[0], dtype=gram.dtype))
        total = total + jnp.sum(off ** 2)
    return total


def ema_update(ema: Any, params: Any, step: jax.Array, decay: float, start: int) -> Any:
    """BigGAN's G EMA after G update number ``step`` (1-based), as the official code's
    ``ema.update(itr)``: ``ema = d ema + (1 - d) params`` with d = 0 (a copy of G) while
    ``step < start`` and d = ``decay`` from then on."""
    d = jnp.where(step < start, 0.0, decay)
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


# -- networks ---------------------------------------------------------------------------


class SNLinear(nn.Module):
    """A spectrally normalized linear map without bias (CBN's gain and bias layers)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, update: bool = False) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        return x @ spectral_normalize(self, kernel, update, 1)


class ConditionalBatchNorm(nn.Module):
    """Batch norm over (N, H, W) followed by a per-example affine map from ``cond``
    (Brock et al., 2019, Sec. 3 / de Vries et al., 2017): ``x_hat (1 + W_g c) + W_b c``
    with W_g, W_b spectrally normalized and bias-free. ``cond=None``: an ordinary batch
    norm with learned scale and offset (G's output layer).

    Statistics: the mean and variance of ``x`` over (N, H, W), or over its first
    ``stats_rows`` examples only (standing statistics that lead the batch).
    """

    eps: float = _BN_EPS

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None, update: bool = False,
                 stats_rows: int | None = None) -> jax.Array:
        c = x.shape[-1]
        rows = x if stats_rows is None else x[:stats_rows]
        mean, var = rows.mean((0, 1, 2)), rows.var((0, 1, 2))
        x_hat = (x - mean) * jax.lax.rsqrt(var + self.eps)
        if cond is None:
            scale = self.param("scale", nn.initializers.ones, (c,))
            return x_hat * scale + self.param("bias", nn.initializers.zeros, (c,))
        gain = 1.0 + SNLinear(c, name="gain")(cond, update)
        bias = SNLinear(c, name="bias")(cond, update)
        return x_hat * gain[:, None, None, :] + bias[:, None, None, :]


class SelfAttention(nn.Module):
    """SAGAN's self-attention block as BigGAN uses it (the official code's
    ``layers.Attention``): theta, phi and g are bias-free SN 1x1 convs to C/8, C/8 and
    C/2 channels, phi's and g's outputs max-pooled 2x2; each position attends over the
    pooled positions, softmax_j(theta_i . phi_j) g_j, and a bias-free SN 1x1 conv maps
    that back to C channels, added to the input with the learned gain ``gamma`` (0 at
    initialization: the block starts as the identity)."""

    channels: int

    def setup(self):
        self.theta = SNConv(self.channels // 8, (1, 1), use_bias=False)
        self.phi = SNConv(self.channels // 8, (1, 1), use_bias=False)
        self.g = SNConv(self.channels // 2, (1, 1), use_bias=False)
        self.o = SNConv(self.channels, (1, 1), use_bias=False)
        self.gamma = self.param("gamma", nn.initializers.zeros, ())

    def __call__(self, x: jax.Array, update: bool = False) -> jax.Array:
        n, h, w, c = x.shape

        def pooled(y):
            return nn.max_pool(y, (2, 2), (2, 2)).reshape(n, (h // 2) * (w // 2), -1)

        theta = self.theta(x, update).reshape(n, h * w, c // 8)
        phi, g = pooled(self.phi(x, update)), pooled(self.g(x, update))
        beta = jax.nn.softmax(theta @ phi.transpose(0, 2, 1), axis=-1)
        return x + self.gamma * self.o((beta @ g).reshape(n, h, w, c // 2), update)


class GBlock(nn.Module):
    """G's residual up-block: CBN-ReLU-up2-conv3-CBN-ReLU-conv3 plus up2-conv1 shortcut."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array, update: bool, stats_rows: int | None) -> jax.Array:
        h = nn.relu(ConditionalBatchNorm(name="bn1")(x, cond, update, stats_rows))
        h = SNConv(self.features, name="conv1")(upsample2(h), update)
        h = nn.relu(ConditionalBatchNorm(name="bn2")(h, cond, update, stats_rows))
        h = SNConv(self.features, name="conv2")(h, update)
        return h + SNConv(self.features, (1, 1), name="shortcut")(upsample2(x), update)


class Generator(nn.Module):
    """BigGAN's G: z split into ``len(channels)`` chunks (hierarchical latents); chunk 0
    -> SN linear -> 4x4 x channels[0]; block i (to channels[i + 1], doubling the size)
    conditioned on [shared(y), chunk i + 1]; BN-ReLU-conv3 to the image, tanh onto
    ``value_range``."""

    out_shape: tuple[int, int, int]
    channels: Sequence[int]
    num_classes: int
    shared_dim: int
    value_range: tuple[float, float] = (-1.0, 1.0)
    attention_resolution: int = 0

    @nn.compact
    def __call__(self, z: jax.Array, y: jax.Array, update: bool = False,
                 stats_rows: int | None = None) -> jax.Array:
        """Images of latents ``z`` and classes ``y``; batch norms take their statistics from
        the first ``stats_rows`` examples (None: all)."""
        chunks = jnp.split(z, len(self.channels), axis=-1)
        shared = nn.Embed(self.num_classes, self.shared_dim, name="shared")(y)
        c0 = self.channels[0]
        h = SNDense(4 * 4 * c0, name="linear")(chunks[0], update).reshape(z.shape[0], 4, 4, c0)
        for i, c in enumerate(self.channels[1:]):
            cond = jnp.concatenate([shared, chunks[i + 1]], -1)
            h = GBlock(c, name=f"block{i}")(h, cond, update, stats_rows)
            if h.shape[1] == self.attention_resolution:
                h = SelfAttention(c, name="attention")(h, update)
        h = nn.relu(ConditionalBatchNorm(name="bn_out")(h, None, update, stats_rows))
        h = SNConv(self.out_shape[-1], name="conv_out")(h, update)
        return to_range(h, self.value_range)


class DBlock(nn.Module):
    """D's residual block: [ReLU]-conv3-ReLU-conv3-[avgpool2] plus a conv1 shortcut where
    the width changes or the block downsamples (conv then pool with pre-activation, pool
    then conv without, as the official code)."""

    features: int
    down: bool
    preactivation: bool

    @nn.compact
    def __call__(self, x: jax.Array, update: bool) -> jax.Array:
        h = nn.relu(x) if self.preactivation else x
        h = SNConv(self.features, name="conv1")(h, update)
        h = SNConv(self.features, name="conv2")(nn.relu(h), update)
        if self.down:
            h = downsample(h)
        sc = x
        if self.down or x.shape[-1] != self.features:
            conv = SNConv(self.features, (1, 1), name="shortcut")
            if self.preactivation:
                sc = conv(sc, update)
                sc = downsample(sc) if self.down else sc
            else:
                sc = conv(downsample(sc) if self.down else sc, update)
        return h + sc


class Discriminator(nn.Module):
    """BigGAN's projection D: residual blocks, ReLU, sum over positions -> phi(x);
    D(x, y) = SN linear(phi) + <SN embed(y), phi> (Miyato & Koyama, 2018)."""

    channels: Sequence[int]
    downsample: Sequence[bool]
    num_classes: int
    attention_resolution: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array, update: bool = False,
                 terms: bool = False) -> jax.Array | tuple[jax.Array, jax.Array, jax.Array]:
        """Scores (N,); ``terms=True``: (psi(phi(x)) (N,), phi(x) (N, channels[-1]), the
        spectrally normalized class embedding table (num_classes, channels[-1]))."""
        h = x
        attended = False
        for i, (c, down) in enumerate(zip(self.channels, self.downsample, strict=True)):
            h = DBlock(c, down, preactivation=i > 0, name=f"block{i}")(h, update)
            if h.shape[1] == self.attention_resolution and not attended:  # after the first such block
                h, attended = SelfAttention(c, name="attention")(h, update), True
        phi = jnp.sum(nn.relu(h), axis=(1, 2))
        psi = SNDense(1, name="linear")(phi, update)[:, 0]
        table = self.param("embed", nn.initializers.normal(1.0), (self.num_classes, self.channels[-1]))
        table = spectral_normalize(self, table, update, 1)
        if terms:
            return psi, phi, table
        return psi + jnp.sum(table[y] * phi, axis=-1)


# -- the Method -------------------------------------------------------------------------


def init_variables(rng: jax.Array, shapes: Any) -> Any:
    """Variables of the shapes of a network's ``init`` (``jax.eval_shape``) from one normal
    draw: kernels N(0, 1 / fan_in) (LeCun, untruncated), embedding tables N(0, 1) (as
    PyTorch's nn.Embedding), biases 0, scales 1, spectral-norm vectors unit-norm normal.

    Why not the modules' own initializers: each Flax initializer is a random program of
    its own (about 0.1 CPU-s of compilation each on XLA:CPU at -O0; the smoke config's
    jitted init took 4.6 CPU-s to lower and compile with them, 1.5 without, measured once
    on the loaded machine); one draw sliced for all compiles once. With spectral
    normalization the kernels' scale does not matter to the function, only to the Adam
    step size relative to the weights.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [math.prod(s.shape) for _, s in leaves]
    flat = jax.random.normal(rng, (sum(sizes),))
    out, offset = [], 0
    for (path, s), size in zip(leaves, sizes, strict=True):
        draw, offset = flat[offset:offset + size].reshape(s.shape), offset + size
        name = getattr(path[-1], "key", "")
        if name == "kernel":
            value = draw / math.sqrt(math.prod(s.shape[:-1]))
        elif name in ("embedding", "embed"):
            value = draw
        elif name == "u":
            value = draw / jnp.linalg.norm(draw)
        elif name == "bias":
            value = jnp.zeros(s.shape)
        elif name == "scale":
            value = jnp.ones(s.shape)
        elif name == "gamma":  # self-attention's gain: the identity at initialization
            value = jnp.zeros(s.shape)
        else:
            raise ValueError(f"no initializer for variable {jax.tree_util.keystr(path)}")
        out.append(value.astype(s.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def labels_of(batch: dict) -> jax.Array:
    """The batch's class labels; class 0 for every image of unlabelled data."""
    return batch["y"] if "y" in batch else jnp.zeros(batch["x"].shape[:1], jnp.int32)


def _check(key: str, value: Any, low: float, kind: type = int) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low
    if not ok or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"{key}={value!r} must be {'an integer' if kind is int else 'a number'} >= {low}")


class BigGAN:
    """The BigGAN Method (see gen_jax.registry.Method and the module docstring).

    Batches: the runtime's batch of B labelled images (unlabelled ones are all class 0)
    is split into ``biggan.d_steps``
    chunks, one per D update (each against B / d_steps fakes of uniform random classes);
    the G update then draws B / d_steps latents and uniform classes. Keys of a train step:
    ``split(rng, d_steps + 1)``, one per D update, the last for G.
    """

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config, self.info = config, info
        m, b = config.model, config.biggan
        if info.kind != "image":
            raise ConfigError(f"BigGAN generates images; {info.name!r} is {info.kind} data "
                              "(use e.g. data.name='patches')")
        # unlabelled images (faces100) are one class: BigGAN unconditional
        self.num_classes = info.num_classes or 1
        h, w, c = info.shape
        g_ch, d_ch, d_down = tuple(m.g_channels), tuple(m.d_channels), tuple(m.d_downsample)
        if h != w or h != 4 * 2 ** (len(g_ch) - 1):
            raise ConfigError(f"model.g_channels={g_ch} makes {4 * 2 ** (len(g_ch) - 1)}px images "
                              f"(4x4, doubled per entry after the first) but the data is {h}x{w}")
        if len(d_ch) != len(d_down) or not d_ch:
            raise ConfigError(f"model.d_downsample={d_down} needs one flag per entry of "
                              f"model.d_channels={d_ch}")
        if h % 2 ** sum(d_down):
            raise ConfigError(f"model.d_downsample={d_down} halves {sum(d_down)} times; {h} is not "
                              "divisible by that")
        _check("model.attention_resolution", m.attention_resolution, 0)
        att = int(m.attention_resolution)
        if att:
            g_sizes = {4 * 2 ** (i + 1): width for i, width in enumerate(g_ch[1:])}
            d_sizes, size = {}, h
            for width, down in zip(d_ch, d_down, strict=True):
                size //= 2 if down else 1
                d_sizes.setdefault(size, width)
            if att not in g_sizes or att not in d_sizes:
                raise ConfigError(f"model.attention_resolution={att} must be 0 (none) or a size "
                                  f"output by both a G block {sorted(g_sizes)} and a D block "
                                  f"{sorted(d_sizes)}")
            if att % 2 or min(g_sizes[att], d_sizes[att]) < 8:
                raise ConfigError(f"model.attention_resolution={att}: self-attention pools 2x2 and "
                                  f"needs >= 8 channels there (G {g_sizes[att]}, D {d_sizes[att]})")
        _check("model.latent_dim", m.latent_dim, 1)
        _check("model.shared_dim", m.shared_dim, 1)
        if m.latent_dim % len(g_ch):
            raise ConfigError(f"model.latent_dim={m.latent_dim} must split into len(model.g_channels)"
                              f"={len(g_ch)} equal chunks (hierarchical latents)")
        _check("biggan.d_steps", b.d_steps, 1)
        _check("biggan.ema_start", b.ema_start, 0)
        _check("biggan.standing_samples", b.standing_samples, 0)
        _check("biggan.ortho_weight", b.ortho_weight, 0.0, float)
        _check("biggan.truncation", b.truncation, 0.0, float)
        self.k = int(b.d_steps)
        if config.data.batch_size % self.k:
            raise ConfigError(f"data.batch_size={config.data.batch_size} must be a multiple of "
                              f"biggan.d_steps={self.k} (one chunk per D step)")
        self.g_net = Generator((h, w, c), g_ch, self.num_classes, int(m.shared_dim),
                               tuple(config.data.value_range), att)
        self.d_net = Discriminator(d_ch, d_down, self.num_classes, att)
        self.g_tx = make_optimizer(config.optim, config.train.num_steps)
        self.d_tx = d_optimizer(config, config.train.num_steps * self.k)

    # -- pieces --------------------------------------------------------------

    def latents(self, rng: jax.Array, n: int, truncation: float | jax.Array = 0.0) -> jax.Array:
        """``n`` latent codes, truncated at ``truncation`` (0 = N(0, I))."""
        return truncated_normal(rng, (n, self.config.model.latent_dim), truncation)

    def random_labels(self, rng: jax.Array, n: int) -> jax.Array:
        """Uniform class labels (the classes of the fakes in training, as the official code)."""
        return jax.random.randint(rng, (n,), 0, self.num_classes)

    def generator(self, params: Any, model_state: dict, z: jax.Array, y: jax.Array,
                  update: bool = False, stats_rows: int | None = None):
        """(G's images, model_state with spectral vectors advanced when ``update``); batch
        norms use the statistics of the first ``stats_rows`` examples (None: the batch's)."""
        variables = {"params": params, **model_state}
        if not update:
            return self.g_net.apply(variables, z, y, False, stats_rows), model_state
        out, new = self.g_net.apply(variables, z, y, True, stats_rows, mutable=["spectral"])
        return out, {**model_state, "spectral": new["spectral"]}

    def d_update(self, state: GANState, x: jax.Array, y: jax.Array, rng: jax.Array):
        """One hinge-loss D update on real (``x``, ``y``) against as many fakes of uniform
        random classes. Returns (state with only ``d`` changed, metrics).

        D scores the reals first, advancing its spectral-norm vectors (one power iteration
        per D update), and the fakes with the advanced vectors."""
        rz, ry = jax.random.split(rng)
        n = x.shape[0]
        y_fake = self.random_labels(ry, n)
        fake, _ = self.generator(state.g.params, state.g.model_state, self.latents(rz, n), y_fake)
        fake = jax.lax.stop_gradient(fake)
        d = state.d

        def loss_fn(params):
            real_out, ms = apply_d(self.d_net, params, d.model_state, x, y, update=True)
            fake_out, _ = apply_d(self.d_net, params, ms, fake, y_fake)
            loss = hinge_d_loss(real_out, fake_out)
            return loss, ({"d_loss": loss, "d_real": real_out.mean(), "d_fake": fake_out.mean()}, ms)

        grads, (metrics, ms) = jax.grad(loss_fn, has_aux=True)(d.params)
        return state.replace(d=d.apply_gradients(grads, model_state=ms)), metrics

    def g_loss(self, params: Any, state: GANState, z: jax.Array, y: jax.Array):
        """G's objective at ``params`` on latents ``z`` of classes ``y``: the hinge G loss
        -E[D(G(z, y), y)] plus ``biggan.ortho_weight`` x :func:`ortho_reg` (params).

        Returns:
          (loss, (metrics: g_loss (the adversarial term), ortho; G's model_state with its
          spectral vectors advanced)).
        """
        fake, ms = self.generator(params, state.g.model_state, z, y, update=True)
        out, _ = apply_d(self.d_net, state.d.params, state.d.model_state, fake, y)
        adv, ortho = wasserstein_g_loss(out), ortho_reg(params)
        return adv + self.config.biggan.ortho_weight * ortho, ({"g_loss": adv, "ortho": ortho}, ms)

    def g_update(self, state: GANState, rng: jax.Array, n: int):
        """One G update (:meth:`g_loss`) on ``n`` fresh latents of uniform random classes,
        then the EMA (:func:`ema_update`). Returns (state with only ``g`` changed, metrics)."""
        rz, ry = jax.random.split(rng)
        z, y = self.latents(rz, n), self.random_labels(ry, n)
        g = state.g
        grads, (metrics, ms) = jax.grad(self.g_loss, has_aux=True)(g.params, state, z, y)
        new = g.apply_gradients(grads, model_state=ms)
        if g.ema_params is not None:
            new = new.replace(ema_params=ema_update(g.ema_params, new.params, new.step,
                                                    self.config.train.ema_decay,
                                                    int(self.config.biggan.ema_start)))
        return state.replace(g=new), metrics

    # -- the Method contract -------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> GANState:
        """Fresh G and D (weights from :func:`init_variables`); the EMA starts as G's copy."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        rg, rd = jax.random.split(rng)
        y = jnp.zeros((2,), jnp.int32)
        g_vars = jax.eval_shape(self.g_net.init, rg, jnp.zeros((2, self.config.model.latent_dim)), y)
        g_params, g_rest = split_variables(init_variables(rg, g_vars))
        d_params, d_rest = split_variables(init_variables(rd, jax.eval_shape(self.d_net.init, rd, x[:2], y)))
        g = TrainState.create(g_params, self.g_tx, 0.0, g_rest)
        if self.config.train.ema_decay > 0:  # averaged by ema_update, not TrainState's own
            g = g.replace(ema_params=jax.tree.map(jnp.copy, g_params))
        d = TrainState.create(d_params, self.d_tx, 0.0, d_rest)
        return GANState(step=jnp.zeros((), jnp.int32), g=g, d=d)

    def train_step(self, state: GANState, batch: dict, rng: jax.Array):
        """``biggan.d_steps`` D updates on consecutive chunks of the batch (straight-line
        code: see GAN.train_step on XLA:CPU and loops), then one G update."""
        x, y = batch["x"], labels_of(batch)
        n = x.shape[0] // self.k
        keys = jax.random.split(rng, self.k + 1)
        d_metrics = []
        for i in range(self.k):
            state, m = self.d_update(state, x[i * n:(i + 1) * n], y[i * n:(i + 1) * n], keys[i])
            d_metrics.append(m)
        state, g_metrics = self.g_update(state, keys[self.k], n)
        metrics = jax.tree.map(lambda *v: jnp.mean(jnp.stack(v)), *d_metrics) | g_metrics
        metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]  # both finite, for the runtime's check
        return state.replace(step=state.step + 1), metrics

    def eval_step(self, state: GANState, batch: dict, rng: jax.Array) -> dict:
        """Hinge D and G losses on a validation batch against the (EMA) generator's samples
        of the batch's classes (untruncated, standing statistics)."""
        x, y = batch["x"], labels_of(batch)
        n = x.shape[0]
        rz, rs = jax.random.split(rng)
        fake = self.generate(state, self.latents(rz, n), y, rs)
        d = state.d
        out, _ = apply_d(self.d_net, d.params, d.model_state, jnp.concatenate([x, fake]),
                         jnp.concatenate([y, y]))
        real_out, fake_out = out[:n], out[n:]
        metrics = {"d_loss": hinge_d_loss(real_out, fake_out), "g_loss": wasserstein_g_loss(fake_out),
                   "d_real": real_out.mean(), "d_fake": fake_out.mean()}
        metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
        return metrics

    def generate(self, state: GANState, z: jax.Array, labels: jax.Array, rng: jax.Array) -> jax.Array:
        """The (EMA) generator at codes ``z`` (N, latent_dim) and ``labels`` (N,), with standing
        statistics (Brock et al., 2019, App. C): those of ``biggan.standing_samples`` draws
        from the untruncated prior (keyed by ``rng``) with class-balanced labels, which
        lead the batch in the same pass; 0 = the statistics of this batch."""
        g, k = state.g, int(self.config.biggan.standing_samples)
        labels = jnp.asarray(labels, jnp.int32)
        if k:
            z = jnp.concatenate([self.latents(rng, k), z])
            labels = jnp.concatenate([self.class_labels(k), labels])
        return self.generator(g.eval_params, g.model_state, z, labels, stats_rows=k or None)[0][k:]

    def class_labels(self, num: int) -> jax.Array:
        """Labels of ``num`` samples ordered class by class (as the conditional GAN's)."""
        return GAN.class_labels(self, num)

    def sample(self, state: GANState, rng: jax.Array, num: int, labels: jax.Array | None = None,
               truncation: float | jax.Array | None = None, **kw: Any) -> jax.Array:
        """``num`` samples of the (EMA) generator for ``labels`` (N,), or class by class when
        None, from latents truncated at ``truncation`` (None = ``biggan.truncation``; 0 = off)."""
        psi = self.config.biggan.truncation if truncation is None else truncation
        y = self.class_labels(num) if labels is None else jnp.asarray(labels, jnp.int32)
        rz, rs = jax.random.split(rng)
        return self.generate(state, self.latents(rz, num, psi), y, rs)


@register("biggan")
def make_biggan(config: ml_collections.ConfigDict, info: DataInfo) -> BigGAN:
    """Factory registered as "biggan"."""
    return BigGAN(config, info)


__all__ = ["BigGAN", "ConditionalBatchNorm", "DBlock", "Discriminator", "GBlock", "Generator",
           "SNLinear", "ema_update", "init_variables", "make_biggan", "ortho_reg", "truncated_normal"]
