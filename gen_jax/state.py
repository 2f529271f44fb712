"""TrainState pytrees and the optimizer built from ``config.optim``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from gen_jax.errors import ConfigError


class TrainState(struct.PyTreeNode):
    """Parameters, optimizer state and (optionally) EMA parameters of one network.

    Multi-network methods keep one of these per network inside their own state
    pytree; the runtime only needs a ``step`` field at the top level.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any = None
    model_state: Any = None  # non-trained collections, e.g. batch statistics
    tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)
    ema_decay: float = struct.field(pytree_node=False, default=0.0)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation,
               ema_decay: float = 0.0, model_state: Any = None) -> "TrainState":
        """A state at step 0; EMA parameters start as a copy when ``ema_decay > 0``."""
        ema = jax.tree.map(jnp.copy, params) if ema_decay > 0 else None
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   ema_params=ema, model_state=model_state, tx=tx, ema_decay=ema_decay)

    def apply_gradients(self, grads: Any, model_state: Any = None) -> "TrainState":
        """One optimizer update, then the EMA update, then ``step + 1``."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        ema = self.ema_params
        if ema is not None:
            # Warm-up of the decay (as in TF's ExponentialMovingAverage with
            # num_updates) so short runs are not dominated by the initialisation.
            d = jnp.minimum(self.ema_decay, (1.0 + self.step) / (10.0 + self.step))
            ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
        return self.replace(
            step=self.step + 1, params=params, opt_state=opt_state, ema_params=ema,
            model_state=self.model_state if model_state is None else model_state)

    @property
    def eval_params(self) -> Any:
        """EMA parameters where kept, else the raw ones: what sampling uses."""
        return self.params if self.ema_params is None else self.ema_params


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
    """Builds the optax optimizer named in ``config.optim``.

    Args:
      optim: the ``config.optim`` section.
      num_steps: total training steps (for the cosine schedule).

    Returns:
      An optax GradientTransformation (with global-norm clipping first if asked).
    """
    lr = optim.learning_rate
    if optim.schedule == "constant":
        # linear_schedule holds its end value after the warm-up.
        schedule = (optax.linear_schedule(0.0, lr, optim.warmup_steps)
                    if optim.warmup_steps else optax.constant_schedule(lr))
    elif optim.schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, lr, optim.warmup_steps, max(num_steps, optim.warmup_steps + 1))
    else:
        raise ConfigError(f"optim.schedule must be 'constant' or 'cosine', got {optim.schedule!r}")
    if optim.name == "adam":
        tx = optax.adam(schedule, b1=optim.b1, b2=optim.b2)
    elif optim.name == "adamw":
        tx = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay)
    elif optim.name == "sgd":
        tx = optax.sgd(schedule, momentum=optim.b1 or None)
    elif optim.name == "rmsprop":
        tx = optax.rmsprop(schedule)
    else:
        raise ConfigError(
            f"unknown optimizer {optim.name!r}; known: adam, adamw, sgd, rmsprop")
    if optim.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip), tx)
    # One flat vector for the optimizer's elementwise update in place of one update per
    # parameter array: the same numbers (the clip's norm summed in another order),
    # and a train step XLA compiles in about half the time (DDPM UNet of the
    # ddpm_digits smoke config, 114 arrays: 6.0 -> 3.0 CPU-s). Workdirs written
    # before this key existed keep their per-array optimizer state.
    if optim.get("flatten", False):
        tx = optax.flatten(tx)
    return tx
