"""The mixed-precision policy every family runs under: ``config.runtime.precision``.

``"float32"`` (the default) computes everything in float32. ``"bfloat16"`` computes the
networks in bfloat16 while parameters, optimizer state, batch statistics, losses,
log-likelihoods and metrics stay float32 (the policy of Micikevicius et al., 2018,
"Mixed Precision Training", with bfloat16, which needs no loss scaling):

- parameters are created float32 (``init`` is untouched) and cast to bfloat16 where a
  network is applied, so their gradients and the optimizer see float32;
- the floating inputs of every module that owns parameters directly (a Dense, a conv, a
  norm, a family's own layer) are cast to bfloat16 on the way in, as PyTorch's autocast
  casts a matmul's operands: whatever float32 value reaches a layer (a sinusoidal time
  embedding, a noise level, data) is computed on in bfloat16 there, so the policy cannot
  silently fall back to float32 by promotion, while the float32 values themselves (a
  diffusion time before its embedding) keep their precision up to that layer;
- the floating outputs of the network, and the variable collections it returns (batch
  statistics, spectral-norm vectors, VQ codebook averages), are cast back to float32, so
  every loss, log-likelihood and metric is computed from float32 values;
- Flax's normalization layers (BatchNorm, LayerNorm, GroupNorm) compute their mean and
  variance in float32 for bfloat16 inputs (``force_float32_reductions``, the default) and
  return bfloat16; BatchNorm's running averages stay float32. Only "params" are cast on
  the way in: batch statistics and other state are read as stored.

A few float32 islands stay inside the networks on purpose, each where a family computes
a precision-critical quantity: the diffusion UNet's attention softmax, spectral norm's
sigma (gen_jax/nn/spectral_norm.py), Glow's 1x1 convolution weight (assembled with a
float32 permutation), VQ distances to an EMA codebook kept as float32 state.

It reaches every family in one place: :func:`gen_jax.registry.build` hands the built
Method to :func:`apply_policy`, which gives each Flax module the Method holds (also inside
sub-Methods: the GAN under f-AnoGAN, the DDPM under SR3 and latent diffusion, a loaded
autoencoder or teacher) a subclass of its own class whose ``apply`` does the casting. A
new family is covered without a line of its own; the test that every registered Method's
train step computes in bfloat16 (tests/nn/test_precision.py) fails for one that keeps a
module where the walk cannot see it (e.g. built inside ``train_step``).

Frozen feature extractors stay float32: a class marked :func:`full_precision` (the
anomaly Methods' pretrained or fixed feature networks, gen_jax.anomaly.feature_flow) is
not walked into, since their features feed closed-form statistics (PaDiM's Gaussian
fits and Mahalanobis distances, nearest neighbours) that bfloat16's 8-bit mantissa would
blur, and they have no backward pass to save. The metric networks (the FID Inception,
the digits feature CNN) are not held by a Method and are never touched.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.config import PRECISIONS
from gen_jax.errors import ConfigError

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_FULL_PRECISION = "__gen_jax_full_precision__"

T = TypeVar("T")


def compute_dtype(precision: str) -> Any:
    """The dtype networks compute in under ``precision`` (one of :data:`PRECISIONS`)."""
    if precision not in _DTYPES:
        raise ConfigError(f"runtime.precision={precision!r} is not a precision; valid: "
                          f"{', '.join(PRECISIONS)}")
    return _DTYPES[precision]


def full_precision(cls: type[T]) -> type[T]:
    """Class decorator: the modules an instance of ``cls`` holds stay float32 under every
    policy (:func:`apply_policy` does not walk into it). For frozen feature extractors."""
    setattr(cls, _FULL_PRECISION, True)
    return cls


def is_full_precision(obj: Any) -> bool:
    """Whether ``obj``'s class is marked :func:`full_precision`."""
    return bool(getattr(type(obj), _FULL_PRECISION, False))


def _is_float(x: Any, dtype: Any = None) -> bool:
    dt = getattr(x, "dtype", None)
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        return False
    return dtype is None or dt == dtype


def cast_floating(tree: Any, dtype: Any) -> Any:
    """``tree`` with every floating array cast to ``dtype`` (integers, keys, Python
    scalars and other leaves untouched)."""
    return jax.tree.map(lambda x: x.astype(dtype) if _is_float(x) and x.dtype != dtype else x, tree)


def _owns_params(module: nn.Module) -> bool:
    """Whether ``module`` (bound) holds parameter arrays itself, not only through submodules."""
    scope = module.scope
    if scope is None:
        return False
    params = scope.variables().get("params", {})
    return any(not isinstance(v, Mapping) for v in params.values())


def _layer_interceptor(dtype: Any):
    """A Flax method interceptor casting the floating arguments of calls to modules that
    own parameters to ``dtype`` (the autocast of the module docstring)."""

    def intercept(next_fun, args, kwargs, context):
        if context.method_name == "setup" or not _owns_params(context.module):
            return next_fun(*args, **kwargs)
        args, kwargs = cast_floating((args, kwargs), dtype)
        return next_fun(*args, **kwargs)

    return intercept


def _policy_apply(self, variables, *args, **kwargs):
    """``Module.apply`` under the class's compute dtype (module docstring). Only the
    "params" collection is cast: batch statistics and other state are read as stored."""
    dtype = type(self)._compute_dtype
    variables = {col: cast_floating(tree, dtype) if col == "params" else tree
                 for col, tree in variables.items()}
    with nn.intercept_methods(_layer_interceptor(dtype)):
        out = super(type(self), self).apply(variables, *args, **kwargs)
    # every floating output, and every returned collection, goes back to float32
    return jax.tree.map(lambda x: x.astype(jnp.float32) if _is_float(x, dtype) else x, out)


@functools.cache
def _policy_class(base: type, precision: str) -> type:
    """``base`` with :func:`_policy_apply` in place of ``apply`` (same name, fields,
    methods and parameter tree: only the casting differs)."""
    namespace = {"apply": nn.nowrap(_policy_apply), "_compute_dtype": _DTYPES[precision],
                 "_precision_base": base, "__module__": base.__module__,
                 "__qualname__": base.__qualname__, "__doc__": base.__doc__}
    return type(base.__name__, (base,), namespace)


def base_module(module: nn.Module) -> nn.Module:
    """``module`` as its own class built it (undoes :func:`with_precision`)."""
    base = type(module).__dict__.get("_precision_base")
    return module if base is None else _rebuild(module, base)


def _rebuild(module: nn.Module, cls: type) -> nn.Module:
    fields = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
              if f.init and f.name not in ("parent", "name")}
    return cls(**fields, name=module.name)


def with_precision(module: nn.Module, precision: str) -> nn.Module:
    """``module`` under ``precision``: itself (its base class) for "float32", else an
    equal module whose ``apply`` computes in that dtype (module docstring)."""
    compute_dtype(precision)
    base = base_module(module)
    if precision == "float32":
        return base
    return _rebuild(base, _policy_class(type(base), precision))


def module_precision(module: nn.Module) -> str:
    """The precision ``module`` runs under ("float32" for a module :func:`with_precision`
    has not touched)."""
    dtype = getattr(type(module), "_compute_dtype", jnp.float32)
    return next(name for name, dt in _DTYPES.items() if dt == dtype)


def apply_policy(method: T, precision: str) -> T:
    """Puts every Flax module ``method`` holds under ``precision``, in place.

    Walks the Method's attributes, into lists, tuples, dicts and objects of gen_jax's own
    classes (sub-Methods, a loaded autoencoder, ...), but not into classes marked
    :func:`full_precision`. The same module held in two places gets one replacement.

    Returns:
      ``method`` itself.
    """
    compute_dtype(precision)
    done: dict[int, Any] = {}

    def convert(value: Any) -> Any:
        if isinstance(value, nn.Module):
            if id(value) not in done:
                done[id(value)] = with_precision(value, precision)
            return done[id(value)]
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            new = [convert(v) for v in value]
            return value if all(a is b for a, b in zip(new, value, strict=True)) else type(value)(new)
        if isinstance(value, dict):
            new = {k: convert(v) for k, v in value.items()}
            return value if all(new[k] is value[k] for k in value) else type(value)(new)
        walk(value)
        return value

    def walk(obj: Any) -> None:
        if id(obj) in done or not (type(obj).__module__ or "").startswith("gen_jax"):
            return
        done[id(obj)] = obj
        if is_full_precision(obj) or not hasattr(obj, "__dict__"):
            return
        for key, value in list(vars(obj).items()):
            new = convert(value)
            if new is not value:
                object.__setattr__(obj, key, new)

    walk(method)
    return method
