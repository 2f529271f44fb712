"""The "sr3" Method: SR3 super-resolution (Saharia et al., 2021, "Image Super-Resolution
via Iterative Refinement"), the super-resolution stage of a cascade.

A diffusion model of the high-resolution image y conditioned on its low-resolution
version x: the ε-network sees the noisy y_t and the low-resolution image upsampled to
y's size (bicubic, as SR3 does, or nearest), concatenated along the channels, and is
trained with L_simple; the samplers of this family's registry run unchanged on the
conditioned ε-model ``eps_fn(params, low)``. Everything else is the family's own:
the forward process, the parameterisations and targets (process.py), timestep
sampling (losses.py), the schedules, samplers and the DDPM UNet (built by
:class:`~gen_jax.diffusion.ddpm.DDPM`, whose config checks and sampler options this
Method shares).

- The low-resolution input is made inside the Method from ordinary image batches:
  average pooling by ``model.lowres_factor``, the degradation of pix2pix's "lowres"
  task (gen_jax.gans.tasks.lowres), so the two super-resolve the same inputs.
- It is a translation Method (gen_jax.registry.Translates): ``sample(state, rng, num,
  inputs=x)`` super-resolves the low-resolution versions of data images ``x``, or of
  the reference images kept in the state (the first images of ``init``'s batch) when
  ``inputs`` is None; :meth:`SR3.translate` takes low-resolution images directly (the
  second stage of a cascade, whose first stage samples at the low resolution).
- ``eval_step`` also super-resolves the batch (the configured sampler) and reports
  PSNR and SSIM against the true high-resolution images, the same for the bicubic and
  nearest upsampling baselines, and ``lowres_rmse``: how far the samples, pooled
  again, are from the low-resolution input (0 = perfectly consistent).

Two simplifications of the paper: the network is conditioned on the discrete timestep
(the family's samplers are discrete-time) rather than on a continuous noise level drawn
between two steps' levels, and the loss is L_simple (the paper's p = 2 norm).

Config (``model``): the DDPM UNet keys (``arch`` = "unet", ``ch``, ``ch_mult``, ...),
``schedule``, ``num_timesteps``, ``pred`` ("eps" | "x0" | "v"), ``variance`` ("beta" |
"beta_tilde"), ``lowres_factor`` (an integer >= 2 dividing the image size) and
``upsample`` ("bicubic" | "nearest"). Section ``sampler`` as for "ddpm" (no guidance).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.anomaly.ssim import ssim
from gen_jax.data import DataInfo
from gen_jax.diffusion import losses, process, samplers
from gen_jax.diffusion.ddpm import DDPM
from gen_jax.errors import ConfigError
from gen_jax.gans.tasks import lowres
from gen_jax.registry import register
from gen_jax.state import TrainState
from gen_jax.steps import make_eval_step, make_train_step

UPSAMPLES = ("bicubic", "nearest")
VARIANCES = ("beta", "beta_tilde")
# Images kept in the state for the figures' samples (as the translation GANs keep theirs).
NUM_REFERENCE_INPUTS = 64


def downsample(x: jax.Array, factor: int) -> jax.Array:
    """(N, H, W, C) -> (N, H/f, W/f, C): average pooling by ``factor``, the degradation of
    pix2pix's "lowres" task (which returns it nearest-upsampled: every f x f block holds
    the block's mean, so one pixel per block is the pooled image)."""
    return lowres(x, factor)[:, ::factor, ::factor]


def upsample(low: jax.Array, size: tuple[int, int], method: str) -> jax.Array:
    """Low-resolution NHWC images resized to ``size`` = (H, W) by ``jax.image.resize``
    ("bicubic": Keys' cubic, a = -0.5; "nearest": each pixel repeated)."""
    if method not in UPSAMPLES:
        raise ConfigError(f"model.upsample must be one of {', '.join(UPSAMPLES)}; got {method!r}")
    n, _, _, c = low.shape
    return jax.image.resize(low, (n, *size, c), method)


def psnr(x: jax.Array, y: jax.Array, data_range: float) -> jax.Array:
    """Peak signal-to-noise ratio per image, (N,): 10 log10(range² / MSE) in dB for images
    whose values span ``data_range`` (2 for (-1, 1)); identical images give 100 dB (the
    MSE is floored at range² 1e-10)."""
    mse = jnp.mean(((x - y) ** 2).reshape(x.shape[0], -1), axis=1)
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-10 * data_range**2))


def ssim_window(size: tuple[int, int]) -> int:
    """The SSIM window for images of ``size``: the standard 11, or the largest odd side
    that fits smaller images (7 for 8x8); the Gaussian weights keep σ = 1.5."""
    side = min(size)
    return min(11, side if side % 2 else side - 1)


class SR3:
    """The SR3 Method (see gen_jax.registry.Method, Translates, and the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        self.info = info
        m = config.model
        if info.kind != "image":
            raise ConfigError(f"sr3 super-resolves images; {info.name!r} is vector data")
        if m.arch != "unet":
            raise ConfigError(f"model.arch must be 'unet' for sr3 (the low-resolution image is "
                              f"concatenated to the UNet's input channels); got {m.arch!r}")
        f = m.lowres_factor
        h, w = info.shape[:2]
        if isinstance(f, bool) or not isinstance(f, int) or f < 2 or h % f or w % f:
            raise ConfigError(f"model.lowres_factor must be an integer >= 2 dividing the image size "
                              f"{h}x{w}; got {f!r}")
        if m.upsample not in UPSAMPLES:
            raise ConfigError(f"model.upsample must be one of {', '.join(UPSAMPLES)}; got {m.upsample!r}")
        if m.variance not in VARIANCES:
            raise ConfigError(f"model.variance must be one of {', '.join(VARIANCES)} for sr3 (no "
                              f"learned variance: the loss is L_simple); got {m.variance!r}")
        self.window = ssim_window((h, w))
        if self.window < 3:
            raise ConfigError(f"sr3 needs images of at least 3x3 pixels for SSIM; got {h}x{w}")
        self.factor = int(f)
        self.low_shape = (h // f, w // f, info.shape[-1])
        # The unconditional DDPM of the same data, for what SR3 shares with it: the checked
        # schedule, parameterisation and sampler options, the value range and the UNet
        # (which takes the concatenated channels; its output is the data's channels).
        inner = ml_collections.ConfigDict(config.to_dict())
        for key, value in {"loss": "simple", "timestep_sampler": "uniform", "num_classes": 0,
                           "cfg_dropout": 0.0, "vlb_weight": 0.0}.items():
            inner.model[key] = value
        self.diffusion = DDPM(inner, info)
        self.sched = self.diffusion.sched
        self.value_range = self.diffusion.value_range
        self.net = self.diffusion.net
        self.tx = self.diffusion.tx

    # -- the conditioning --------------------------------------------------------

    def degrade(self, x: jax.Array) -> jax.Array:
        """The low-resolution input (N, H/f, W/f, C) of high-resolution images ``x``."""
        return downsample(x, self.factor)

    def condition(self, low: jax.Array) -> jax.Array:
        """The conditioning image: ``low`` upsampled to the data's size by ``model.upsample``."""
        return upsample(low, self.info.shape[:2], self.config.model.upsample)

    def _apply(self, params: Any, xt: jax.Array, t: jax.Array, cond: jax.Array,
               rng: jax.Array | None = None) -> jax.Array:
        """The network's output (in the ``pred`` parameterisation) for noisy images ``xt``
        with the conditioning image ``cond`` concatenated along the channels."""
        kw = {"rngs": {"dropout": rng}, "train": True} if rng is not None else {}
        return self.net.apply({"params": params}, jnp.concatenate([xt, cond], axis=-1), t, None, **kw)

    def eps_fn(self, params: Any, low: jax.Array) -> Callable[[jax.Array, jax.Array], tuple]:
        """``eps_fn(x_t, t) -> (ε̂, None)`` of the model conditioned on the low-resolution
        images ``low`` (one per example of x_t): what the samplers integrate."""
        cond = self.condition(low)
        pred = self.config.model.pred

        def fn(x, t):
            return process.to_eps(pred, self.sched, x, t, self._apply(params, x, t, cond)), None

        return fn

    # -- the loss ----------------------------------------------------------------

    def loss_fn(self, params: Any, model_state: Any, batch: dict, rng: jax.Array, train: bool):
        """L_simple of the high-resolution images given their own low-resolution versions
        (see gen_jax.steps for the signature); ``model_state`` (the reference images)
        passes through unchanged."""
        x = batch["x"]
        b = x.shape[0]
        cond = self.condition(self.degrade(x))
        r_t, r_noise, r_drop = jax.random.split(rng, 3)
        t, _ = losses.sample_timesteps(r_t, b, self.sched.num_timesteps, None)
        noise = jax.random.normal(r_noise, x.shape)
        xt = process.q_sample(self.sched, x, t, noise)
        out = self._apply(params, xt, t, cond, r_drop if train else None)
        tgt = process.target(self.config.model.pred, self.sched, x, xt, t, noise)
        mse = jnp.mean((out - tgt).reshape(b, -1) ** 2, axis=1).mean()
        return mse, ({"mse": mse}, model_state)

    # -- the Method contract -----------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        """Fresh parameters; the batch's first images become the reference images that
        ``sample`` super-resolves when given no ``inputs``."""
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        h = jnp.concatenate([x, self.condition(self.degrade(x))], axis=-1)
        params = self.net.init({"params": rng}, h, jnp.zeros((x.shape[0],), jnp.int32))["params"]
        return TrainState.create(params, self.tx, self.config.train.ema_decay,
                                 model_state={"inputs": x[:NUM_REFERENCE_INPUTS]})

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        """The denoising loss, and the batch super-resolved by the configured sampler:
        PSNR and SSIM against the true images (range = the data's value range), the
        same for the bicubic and nearest upsampling of the low-resolution input (clipped
        to the value range), and ``lowres_rmse`` = RMS(pool(SR) - low)."""
        r_loss, r_sample = jax.random.split(rng)
        metrics = make_eval_step(self.loss_fn)(state, batch, r_loss)
        x = batch["x"]
        low = self.degrade(x)
        size = self.info.shape[:2]
        outputs = {"": self.translate(state, low, r_sample)}
        for name in UPSAMPLES:
            outputs[f"_{name}"] = self.value_range.clip(upsample(low, size, name))
        width = self.value_range.width
        for suffix, y in outputs.items():
            metrics[f"psnr{suffix}"] = psnr(y, x, width).mean()
            metrics[f"ssim{suffix}"] = ssim(y, x, width, self.window).mean()
        metrics["lowres_rmse"] = jnp.sqrt(jnp.mean((self.degrade(outputs[""]) - low) ** 2))
        return metrics

    def translate(self, state: TrainState, low: jax.Array, rng: jax.Array, method: str | None = None,
                  num_steps: int | None = None, **options: Any) -> jax.Array:
        """Super-resolved samples of low-resolution images ``low`` (N, H/f, W/f, C), one per
        image, in the data's value range.

        Args:
          state: the TrainState (EMA parameters where kept).
          low: the low-resolution images, in the data's value range.
          rng: PRNG key.
          method, num_steps: sampler and its steps (None = ``config.sampler``).
          **options: sampler options (see samplers.sample), overriding ``config.sampler``.
        """
        low = jnp.asarray(low, jnp.float32)
        if tuple(low.shape[1:]) != self.low_shape:
            raise ValueError(f"low-resolution images have shape {tuple(low.shape[1:])}; this sr3 "
                             f"model takes {self.low_shape}")
        s = self.config.sampler
        method = method or s.name
        opts = {**self.diffusion._sampler_options(method), **options}
        x = samplers.sample(self.eps_fn(state.eval_params, low), self.sched, (low.shape[0], *self.info.shape),
                            rng, method, num_steps or s.num_steps or None, **opts)
        return self.value_range.clip(x)

    def sample(self, state: TrainState, rng: jax.Array, num: int, inputs: jax.Array | None = None,
               **kw: Any) -> jax.Array:
        """``num`` super-resolutions of the low-resolution versions of images ``inputs``
        (N, H, W, C) in the data's value range (repeated when N < num), or, when None, of the
        reference images kept in ``state``; keywords as :meth:`translate`."""
        x = state.model_state["inputs"] if inputs is None else jnp.asarray(inputs)
        self.info.check_batch(x)
        x = jnp.resize(x, (num, *x.shape[1:]))  # the rows repeated in order up to num
        return self.translate(state, self.degrade(x), rng, **kw)


@register("sr3")
def make_sr3(config: ml_collections.ConfigDict, info: DataInfo) -> SR3:
    """Factory registered as "sr3"."""
    return SR3(config, info)


__all__ = ["SR3", "downsample", "psnr", "ssim_window", "upsample"]
