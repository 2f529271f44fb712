"""VQ-VAE (van den Oord et al., 2017, "Neural Discrete Representation Learning").

encoder -> nearest codebook row (argmin of the squared distance) -> decoder,
with the straight-through gradient, the codebook and commitment losses (beta),
and, as options, EMA codebook updates (Appendix A.1 there) and dead-code
restarts (codes whose running usage falls under a threshold are moved onto
random encoder outputs of the current batch, as in Dhariwal et al., 2020,
"Jukebox", Sec. 3.1 and later VQ work). Metrics include the codebook
perplexity exp(H(code usage in the batch)) and the fraction of codes used.

Registered as "vqvae" (one code map). vqvae2.py registers "vqvae2" (a top and
a bottom code map) with the same Method class, :class:`VQMethod`.

A bare VQ-VAE is not a generative model by itself: ``sample`` decodes codes
drawn *uniformly at random*, which shows what the decoder does with random
code maps, not the data distribution. The generative model is the PixelCNN
prior over the code maps ("vqvae_prior", gen_jax/autoregressive/vqvae_prior.py),
which uses :meth:`VQMethod.encode_vars` / :meth:`VQMethod.decode_vars`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.nn import Conv, upsample_block
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step
from gen_jax.value_range import ValueRange

CODEBOOK_MODES = ("loss", "ema")


# -- the quantizer's equations, each written once -------------------------------------


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """argmin_k ||z - e_k||^2 over the codebook rows, for every vector in z (..., D)."""
    d = (jnp.sum(z**2, -1, keepdims=True) - 2.0 * z @ codebook.T + jnp.sum(codebook**2, -1))
    return jnp.argmin(d, axis=-1).astype(jnp.int32)


def straight_through(z_e: jax.Array, z_q: jax.Array) -> jax.Array:
    """z_q in the forward pass, the identity's gradient to z_e in the backward pass
    (van den Oord et al., 2017, Sec. 3.1)."""
    return z_e + jax.lax.stop_gradient(z_q - z_e)


def vq_losses(z_e: jax.Array, z_q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(codebook loss ||sg[z_e] - e||^2, commitment loss ||z_e - sg[e]||^2), means over
    elements (van den Oord et al., 2017, eq. 3; the commitment term is weighted by beta)."""
    codebook = jnp.mean((jax.lax.stop_gradient(z_e) - z_q) ** 2)
    commitment = jnp.mean((z_e - jax.lax.stop_gradient(z_q)) ** 2)
    return codebook, commitment


def ema_codebook_update(ema_count: jax.Array, ema_sum: jax.Array, z: jax.Array, idx: jax.Array,
                        decay: float, eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One EMA codebook step (van den Oord et al., 2017, Appendix A.1, eqs. 6-8).

    N_k <- g N_k + (1 - g) n_k,  m_k <- g m_k + (1 - g) sum_{i: idx_i = k} z_i,
    e_k = m_k / N~_k with Laplace smoothing N~_k = (N_k + eps) / (N + K eps) * N.

    Args:
      ema_count: (K,) running cluster sizes N_k.
      ema_sum: (K, D) running sums m_k.
      z: (M, D) encoder outputs of the batch.
      idx: (M,) their nearest codes.
      decay: g.
      eps: Laplace smoothing constant.

    Returns:
      (new ema_count, new ema_sum, new codebook).
    """
    k = ema_count.shape[0]
    onehot = jax.nn.one_hot(idx, k, dtype=z.dtype)
    count = decay * ema_count + (1.0 - decay) * onehot.sum(0)
    summed = decay * ema_sum + (1.0 - decay) * onehot.T @ z
    total = count.sum()
    smoothed = (count + eps) / (total + k * eps) * total
    return count, summed, summed / smoothed[:, None]


def dead_code_rows(usage: jax.Array, z: jax.Array, rng: jax.Array,
                   threshold: float) -> tuple[jax.Array, jax.Array]:
    """(K, D) random rows of z, one per code, and the (K,) bool mask of the codes whose
    running usage is below ``threshold`` (the ones :func:`restart_dead_codes` moves)."""
    pick = jax.random.randint(rng, (usage.shape[0],), 0, z.shape[0])
    return z[pick], usage < threshold


def restart_dead_codes(codebook: jax.Array, usage: jax.Array, z: jax.Array, rng: jax.Array,
                       threshold: float) -> tuple[jax.Array, jax.Array]:
    """Moves codes whose running usage is below ``threshold`` onto random rows of z.

    Returns:
      (new codebook, (K,) bool mask of the restarted codes).
    """
    rows, dead = dead_code_rows(usage, z, rng, threshold)
    return jnp.where(dead[:, None], rows, codebook), dead


def code_perplexity(idx: jax.Array, num_codes: int) -> tuple[jax.Array, jax.Array]:
    """(exp of the entropy of the batch's code frequencies, fraction of codes used)."""
    p = jnp.bincount(idx.reshape(-1), length=num_codes) / idx.size
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.exp(entropy), jnp.mean(p > 0)


# -- networks ---------------------------------------------------------------------------


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantizer. The codebook is a parameter (``ema=False``,
    trained by the codebook loss) or, with ``ema=True``, a variable of the "vq"
    collection that :class:`VQMethod` updates by EMA. The "vq" collection also
    holds the running code usage (for dead-code restarts) and the EMA statistics.
    """

    num_codes: int
    dim: int
    ema: bool

    def setup(self):
        init = nn.initializers.normal(stddev=1.0)
        if self.ema:
            self.codebook = self.variable(
                "vq", "codebook", lambda: init(self.make_rng("params"), (self.num_codes, self.dim)))
            self.variable("vq", "ema_count", lambda: jnp.ones((self.num_codes,)))
            self.variable("vq", "ema_sum", lambda: self.codebook.value)
        else:
            self.codebook_param = self.param("codebook", init, (self.num_codes, self.dim))
        # Zero usage: every code is restarted onto encoder outputs at the first
        # step when restarts are on, a data-dependent initialisation.
        self.variable("vq", "usage", lambda: jnp.zeros((self.num_codes,)))

    def table(self) -> jax.Array:
        return self.codebook.value if self.ema else self.codebook_param

    def __call__(self, z_e: jax.Array) -> tuple[jax.Array, dict]:
        """Returns (straight-through z_q, {"z_e", "z_q", "idx"})."""
        table = self.table()
        idx = nearest_code(z_e, table)
        z_q = jnp.take(table, idx, axis=0)
        return straight_through(z_e, z_q), {"z_e": z_e, "z_q": z_q, "idx": idx}

    def embed(self, idx: jax.Array) -> jax.Array:
        return jnp.take(self.table(), idx, axis=0)


class VQResBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))), the VQ-VAE residual block. Its instances
    are named ``ResBlock_<i>``, their name before the class was renamed, so older
    checkpoints restore."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = Conv(self.features, (3, 3))(nn.relu(x))
        return x + Conv(x.shape[-1], (1, 1))(nn.relu(h))


class VQEncoder(nn.Module):
    """conv3x3, ``downsample`` stride-2 4x4 convs, residual blocks, 1x1 to ``out_dim``."""

    channels: int
    num_res: int
    out_dim: int
    downsample: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = Conv(self.channels, (3, 3))(x)
        for _ in range(self.downsample):
            h = Conv(self.channels, (4, 4), strides=(2, 2))(nn.relu(h))
        for i in range(self.num_res):
            h = VQResBlock(self.channels // 2, name=f"ResBlock_{i}")(h)
        return Conv(self.out_dim, (1, 1))(nn.relu(h))


class VQDecoder(nn.Module):
    """conv3x3, residual blocks, ``upsample`` 2x upsamplings, conv3x3 to ``out_dim``."""

    channels: int
    num_res: int
    out_dim: int
    upsample: int
    mode: str = "pixel_shuffle"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h = Conv(self.channels, (3, 3))(z)
        for i in range(self.num_res):
            h = VQResBlock(self.channels // 2, name=f"ResBlock_{i}")(h)
        for _ in range(self.upsample):
            h = upsample_block(nn.relu(h), self.channels, self.mode)
        return Conv(self.out_dim, (3, 3))(nn.relu(h))


class VQVAENet(nn.Module):
    """One code map: x -> encoder -> quantizer "vq" -> decoder."""

    out_channels: int
    channels: int
    num_res: int
    downsample: int
    num_codes: int
    code_dim: int
    ema: bool
    upsample_mode: str = "pixel_shuffle"

    def setup(self):
        self.enc = VQEncoder(self.channels, self.num_res, self.code_dim, self.downsample)
        self.vq = VectorQuantizer(self.num_codes, self.code_dim, self.ema)
        self.dec = VQDecoder(self.channels, self.num_res, self.out_channels, self.downsample,
                             self.upsample_mode)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[dict, ...]]:
        z_q, aux = self.vq(self.enc(x))
        return self.dec(z_q), (aux,)

    def encode(self, x: jax.Array) -> tuple[jax.Array, ...]:
        return (self.vq(self.enc(x))[1]["idx"],)

    def decode_codes(self, codes: tuple[jax.Array, ...]) -> jax.Array:
        return self.dec(self.vq.embed(codes[0]))


# -- the Method -------------------------------------------------------------------------


class VQMethod:
    """A VQ-VAE Method over one or more code maps (see gen_jax.registry.Method).

    ``config.model``: channels, num_res, downsample, num_codes, code_dim, beta,
    codebook ("loss" | "ema"), ema_decay, ema_eps, restart_dead,
    restart_threshold (running codes-per-batch below which a code restarts),
    upsample. Reconstruction loss: mean squared error in the data's value range.

    Args:
      config: the experiment config.
      net: the flax network; ``__call__(x) -> (x_rec, auxes)``, ``encode``, ``decode_codes``.
      levels: names of its quantizer submodules, in the order of ``auxes``.
    """

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo, net: nn.Module,
                 levels: tuple[str, ...]):
        self.config = config
        self.net, self.levels = net, levels
        self.info = info
        m = config.model
        if m.codebook not in CODEBOOK_MODES:
            raise ConfigError(f"unknown model.codebook {m.codebook!r}; known: {', '.join(CODEBOOK_MODES)}")
        if not 0.0 <= m.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay must be in [0, 1), got {m.ema_decay}")
        self.ema = m.codebook == "ema"
        self.num_codes = int(m.num_codes)
        self.value_range = ValueRange.from_config(config.data, self.info)
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    # -- pieces shared with the prior -------------------------------------------------

    @staticmethod
    def variables(state: TrainState) -> dict:
        """What encoding and decoding need: {"params", "vq"} (EMA params where kept)."""
        return {"params": state.eval_params, "vq": state.model_state}

    def encode_vars(self, variables: dict, x: jax.Array) -> tuple[jax.Array, ...]:
        """Code maps (one (N, h, w) int32 array per level) of images x."""
        return self.net.apply(variables, x, method=type(self.net).encode)

    def decode_vars(self, variables: dict, codes: tuple[jax.Array, ...]) -> jax.Array:
        """Images (clipped to the value range) decoded from code maps."""
        x = self.net.apply(variables, tuple(codes), method=type(self.net).decode_codes)
        return self.value_range.clip(x)

    def code_shapes(self) -> tuple[tuple[int, int], ...]:
        """(h, w) of each code map for this dataset's image shape."""
        x = jax.ShapeDtypeStruct((1, *self.info.shape), jnp.float32)
        shapes = jax.eval_shape(lambda x: self.net.init_with_output(
            jax.random.key(0), x, method=type(self.net).encode)[0], x)
        return tuple(tuple(s.shape[1:3]) for s in shapes)

    # -- the Method contract ------------------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        if self.info.kind != "image":
            raise ConfigError(f"{self.config.method} needs image data; {self.info.name!r} is vectors")
        variables = self.net.init(rng, x)
        return TrainState.create(variables["params"], self.tx, self.config.train.ema_decay,
                                 model_state=variables["vq"])

    def _forward(self, params: Any, vq: dict, x: jax.Array) -> tuple[jax.Array, dict, tuple]:
        x_rec, auxes = self.net.apply({"params": params, "vq": vq}, x)
        recon = jnp.mean((x_rec - x) ** 2)
        m = self.config.model
        loss, metrics = recon, {"recon_mse": recon}
        for name, aux in zip(self.levels, auxes, strict=True):
            cb, commit = vq_losses(aux["z_e"], aux["z_q"])
            loss = loss + m.beta * commit + (0.0 if self.ema else cb)
            perplexity, used = code_perplexity(aux["idx"], self.num_codes)
            metrics |= {f"{name}_codebook_loss": cb, f"{name}_commitment": commit,
                        f"{name}_perplexity": perplexity, f"{name}_usage": used}
        return loss, {"loss": loss, **metrics}, auxes

    def _update_codebooks(self, vq: dict, auxes: tuple, rng: jax.Array):
        """EMA codebook updates and dead-code restarts, outside the gradient.

        Returns:
          (new "vq" collection, restarts of parameter codebooks {level: (rows, dead)}, which
          apply after the optimizer update (``codebook="loss"`` with ``restart_dead``; else
          empty), metrics).
        """
        m = self.config.model
        vq, restarts, metrics = dict(vq), {}, {}
        for name, aux, key in zip(self.levels, auxes, jax.random.split(rng, len(self.levels)),
                                  strict=True):
            z = jax.lax.stop_gradient(aux["z_e"]).reshape(-1, aux["z_e"].shape[-1])
            idx = aux["idx"].reshape(-1)
            stats = dict(vq[name])
            counts = jnp.bincount(idx, length=self.num_codes).astype(z.dtype)
            stats["usage"] = m.ema_decay * stats["usage"] + (1.0 - m.ema_decay) * counts
            if self.ema:
                stats["ema_count"], stats["ema_sum"], stats["codebook"] = ema_codebook_update(
                    stats["ema_count"], stats["ema_sum"], z, idx, m.ema_decay, m.ema_eps)
            if m.restart_dead:
                rows, dead = dead_code_rows(stats["usage"], z, key, m.restart_threshold)
                # A restarted code gets the average usage: a grace period before it can restart again.
                stats["usage"] = jnp.where(dead, z.shape[0] / self.num_codes, stats["usage"])
                if self.ema:
                    stats["codebook"] = jnp.where(dead[:, None], rows, stats["codebook"])
                    stats["ema_sum"] = jnp.where(dead[:, None], rows, stats["ema_sum"])
                    stats["ema_count"] = jnp.where(dead, 1.0, stats["ema_count"])
                else:
                    restarts[name] = (rows, dead)
                metrics[f"{name}_restarted"] = dead.sum().astype(jnp.float32)
            vq[name] = stats
        return vq, restarts, metrics

    def loss_fn(self, params: Any, model_state: dict, batch: dict, rng: jax.Array, train: bool):
        """Reconstruction + beta commitment (+ codebook loss without EMA); in training also
        the codebook statistics' update (see gen_jax.steps for the signature).

        The training pass returns as ``model_state`` the pair (new "vq" collection,
        parameter-codebook restarts); :meth:`train_step` applies the restarts to the
        updated parameters and keeps the collection, so the state's structure is unchanged.
        """
        loss, metrics, auxes = self._forward(params, model_state, batch["x"])
        if not train:
            return loss, (metrics, model_state)
        vq, restarts, extra = self._update_codebooks(model_state, auxes, rng)
        return loss, ({**metrics, **extra}, (vq, restarts))

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        state, metrics = make_train_step(self.loss_fn)(state, batch, rng)
        vq, restarts = state.model_state
        params = dict(state.params)
        for name, (rows, dead) in restarts.items():
            params[name] = {**params[name],
                            "codebook": jnp.where(dead[:, None], rows, params[name]["codebook"])}
        return state.replace(params=params, model_state=vq), metrics

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample(self, state: TrainState, rng: jax.Array, num: int) -> jax.Array:
        """Decodes code maps drawn UNIFORMLY at random (not a model of the data: the
        generative model is a prior over the codes, Method "vqvae_prior")."""
        keys = jax.random.split(rng, len(self.levels))
        codes = tuple(jax.random.randint(k, (num, *s), 0, self.num_codes)
                      for k, s in zip(keys, self.code_shapes(), strict=True))
        return self.decode_vars(self.variables(state), codes)

    def encode(self, state: TrainState, x: jax.Array, rng: jax.Array) -> tuple[jax.Array, ...]:
        """Code maps of x, one (N, h, w) int32 array per level (gen_jax.registry.HasLatent;
        deterministic, ``rng`` is unused)."""
        return self.encode_vars(self.variables(state), x)

    def decode(self, state: TrainState, codes: tuple[jax.Array, ...]) -> jax.Array:
        """Images decoded from code maps, clipped to the value range."""
        return self.decode_vars(self.variables(state), codes)

    def reconstruct(self, state: TrainState, x: jax.Array, rng: jax.Array) -> jax.Array:
        """decode(encode(x)) (gen_jax.registry.HasReconstruct; ``rng`` is unused)."""
        return self.decode(state, self.encode(state, x, rng))


@register("vqvae")
def make_vqvae(config: ml_collections.ConfigDict, info: DataInfo) -> VQMethod:
    """Factory registered as "vqvae"."""
    m = config.model
    c = info.shape[-1]
    net = VQVAENet(c, m.channels, m.num_res, m.downsample, m.num_codes, m.code_dim,
                   m.codebook == "ema", m.upsample)
    return VQMethod(config, info, net, ("vq",))
