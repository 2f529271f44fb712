"""A (Gated) PixelCNN prior over the code maps of a trained VQ-VAE: the full
generative model of van den Oord et al., 2017 ("Neural Discrete Representation
Learning", Sec. 3.2 and 4.2). Registered as "vqvae_prior".

``model.vqvae_workdir`` names a trained "vqvae" workdir; its config and latest
state are loaded once, outside jit, when the Method is built (through the
checkpoint-level loader :func:`gen_jax.checkpoint.load_trained`, so this family
never imports the training loop), and its
variables travel in ``TrainState.model_state`` (so they are checkpointed with
the prior and the compiled functions take them as arguments, not constants).
Training encodes each batch with the frozen VQ-VAE and fits
p(c) = prod_{i,j} p(c_ij | c_<ij [, y]) to the code map c with a K-way softmax
per position; sampling draws a code map position by position and decodes it.

The prior's loss is the NLL of the code maps (nats per image, and bits per
code); it is not the images' likelihood, so this Method has no ``log_prob``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from gen_jax.autoregressive.heads import CategoricalHead
from gen_jax.autoregressive.pixelcnn import autoregressive_sample, build_net
from gen_jax.checkpoint import load_dependency
from gen_jax.data import DataInfo
from gen_jax.errors import ConfigError
from gen_jax.likelihood import bits_per_dim
from gen_jax.registry import register
from gen_jax.state import TrainState, make_optimizer
from gen_jax.steps import make_eval_step, make_train_step

_VQ_METHODS = ("vqvae",)


def load_vqvae(workdir: str) -> tuple[object, dict]:
    """The VQ-VAE Method and its (host) variables {"params", "vq"} from a workdir.

    Raises:
      ConfigError: the workdir is missing, has no checkpoint, or is not a "vqvae" run.
    """
    method, state, _ = load_dependency(
        workdir, "model.vqvae_workdir", _VQ_METHODS,
        "a VQ-VAE first (python -m gen_jax --config=configs/vqvae_digits.py --workdir=runs/vqvae_digits)",
        f"the prior needs one of {_VQ_METHODS} (a VQ-VAE-2's two code maps need a hierarchical "
        "prior, not implemented)")
    return method, jax.device_get(method.variables(state))


class VQVAEPrior:
    """The prior Method (see gen_jax.registry.Method).

    ``config.model``: vqvae_workdir, arch ("gated" | "pixelcnn"), features,
    num_layers, first_kernel, kernel, head_features, conditional.
    """

    def __init__(self, config: ml_collections.ConfigDict, info: DataInfo):
        self.config = config
        m = config.model
        self.vq, self.vq_vars = load_vqvae(m.vqvae_workdir)
        self.info = info
        vq_data = self.vq.config.data
        if (self.info.shape != self.vq.info.shape
                or tuple(config.data.value_range) != tuple(vq_data.value_range)):
            raise ConfigError(f"the prior's data ({self.info.name}, {self.info.shape}, value_range "
                              f"{tuple(config.data.value_range)}) differ from the VQ-VAE's "
                              f"({self.vq.info.name}, {self.vq.info.shape}, {tuple(vq_data.value_range)})")
        self.code_shape = self.vq.code_shapes()[0]
        self.num_codes = self.vq.num_codes
        self.head = CategoricalHead(self.num_codes)
        self.num_classes = 0
        if m.conditional:
            if not self.info.num_classes:
                raise ConfigError(f"model.conditional=True but {self.info.name!r} has no labels")
            self.num_classes = self.info.num_classes
        # One colour group: the one-hot code at a position is a single "subpixel".
        self.net = build_net(m.arch, m, 1, self.num_codes, self.num_classes)
        self.tx = make_optimizer(config.optim, config.train.num_steps)

    def _labels(self, y, n: int):
        if not self.num_classes:
            return None
        if y is None:
            raise ValueError("the class-conditional prior needs labels (batch['y'])")
        return jnp.broadcast_to(jnp.asarray(y, jnp.int32), (n,))

    def _params(self, params, codes: jax.Array, labels) -> jax.Array:
        """(N, h, w) codes -> (N, h, w, 1, K) logits."""
        onehot = jax.nn.one_hot(codes, self.num_codes, dtype=jnp.float32)
        return self.net.apply({"params": params}, onehot, labels)

    def _codes(self, vq_vars: dict, x: jax.Array) -> jax.Array:
        return jax.lax.stop_gradient(self.vq.encode_vars(vq_vars, x)[0])

    def _nll(self, params, codes: jax.Array, labels) -> jax.Array:
        lp = self.head.log_prob(self._params(params, codes, labels)[..., 0, :], codes)
        return -lp.reshape(codes.shape[0], -1).sum(-1).mean()

    # -- the Method contract ---------------------------------------------------

    def init(self, rng: jax.Array, example_batch: dict) -> TrainState:
        x = jnp.asarray(example_batch["x"])
        self.info.check_batch(x)
        vq_vars = jax.tree.map(jnp.asarray, self.vq_vars)
        codes = self._codes(vq_vars, x)
        onehot = jax.nn.one_hot(codes, self.num_codes, dtype=jnp.float32)
        params = self.net.init(rng, onehot, self._labels(example_batch.get("y"), len(x)))["params"]
        return TrainState.create(params, self.tx, self.config.train.ema_decay,
                                 model_state={"vqvae": vq_vars})

    def loss_fn(self, params, model_state: dict, batch: dict, rng: jax.Array, train: bool):
        """The code maps' mean NLL under the prior, nats per image, with the frozen VQ-VAE of
        ``model_state["vqvae"]`` encoding the batch (see gen_jax.steps for the signature)."""
        codes = self._codes(model_state["vqvae"], batch["x"])
        nll = self._nll(params, codes, self._labels(batch.get("y"), codes.shape[0]))
        metrics = {"loss": nll, "code_bits": bits_per_dim(nll, math.prod(self.code_shape))}
        return nll, (metrics, model_state)

    def train_step(self, state: TrainState, batch: dict, rng: jax.Array):
        return make_train_step(self.loss_fn)(state, batch, rng)

    def eval_step(self, state: TrainState, batch: dict, rng: jax.Array) -> dict:
        return make_eval_step(self.loss_fn)(state, batch, rng)

    def sample_codes(self, state: TrainState, rng: jax.Array, num: int,
                     labels: jax.Array | None = None) -> jax.Array:
        """(num, h, w) code maps drawn from the prior, position by position."""
        if self.num_classes and labels is None:
            labels = jnp.arange(num) % self.num_classes
        y = self._labels(labels, num)
        params = state.eval_params
        codes = autoregressive_sample(lambda c: self._params(params, c[..., 0], y), self.head,
                                      (num, *self.code_shape, 1), rng)
        return codes[..., 0]

    def sample(self, state: TrainState, rng: jax.Array, num: int,
               labels: jax.Array | None = None) -> jax.Array:
        """Images: code maps from the prior, decoded by the VQ-VAE. A conditional
        prior without ``labels`` cycles through the classes."""
        codes = self.sample_codes(state, rng, num, labels)
        return self.vq.decode_vars(state.model_state["vqvae"], (codes,))

    def reconstruct(self, state: TrainState, x: jax.Array, rng: jax.Array) -> jax.Array:
        """The VQ-VAE's reconstruction (the prior does not change it; ``rng`` is unused)."""
        vq_vars = state.model_state["vqvae"]
        return self.vq.decode_vars(vq_vars, self.vq.encode_vars(vq_vars, x))


@register("vqvae_prior")
def make_vqvae_prior(config: ml_collections.ConfigDict, info: DataInfo) -> VQVAEPrior:
    """Factory registered as "vqvae_prior"."""
    return VQVAEPrior(config, info)
