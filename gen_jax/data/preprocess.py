"""Raw examples -> model inputs: scaling, dequantization, binarization.

Images arrive as integer levels 0..L-1 (L = 17 for digits, 256 for 8-bit
images). The likelihood scale of a dataset is always that discrete data:
continuous models see uniformly dequantized data and report a bound on the
discrete log-likelihood (Theis et al., 2016, "A note on the evaluation of
generative models"), see :func:`discrete_log_prob_offset`.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from gen_jax.data.sources import DataInfo
from gen_jax.errors import ConfigError, DataError
from gen_jax.likelihood import bits_per_dim, discrete_log_prob_offset  # noqa: F401 - re-exported
from gen_jax.value_range import ValueRange


def check_data_config(info: DataInfo, data: ml_collections.ConfigDict) -> None:
    """Rejects preprocessing options that do not apply to this dataset."""
    if info.kind == "vector" and (data.dequantize != "none" or data.binarize != "none"):
        raise ConfigError(f"{info.name!r} is continuous 2-D data: data.dequantize and "
                          "data.binarize must be 'none'")


def preprocess(x_raw: np.ndarray, info: DataInfo, data: ml_collections.ConfigDict,
               rng: np.random.Generator | None) -> np.ndarray:
    """Maps raw examples to float32 model inputs.

    Args:
      x_raw: a batch of raw examples (integer levels for images).
      info: the dataset's DataInfo.
      data: the ``config.data`` section.
      rng: randomness for dequantization / stochastic binarization; required
        when either is configured.

    Returns:
      float32 array; images in ``data.value_range`` (binarized: its two ends).
    """
    if info.kind == "vector":
        return np.asarray(x_raw, np.float32)
    levels = info.num_levels
    x = np.asarray(x_raw, np.float32)
    if x.size and (x.min() < 0 or x.max() > levels - 1):
        raise DataError(f"{info.name!r} pixels outside 0..{levels - 1}")
    needs_rng = data.dequantize == "uniform" or data.binarize == "stochastic"
    if needs_rng and rng is None:
        raise ValueError("random preprocessing needs an rng")
    # The conventions of gen_jax.value_range: levels lo + (hi - lo) k / (L - 1), or
    # dequantized lo + (hi - lo)(k + u) / L; binarized data are 2 levels, lo and hi.
    lo, hi = data.value_range
    vr = ValueRange(lo, hi, levels)
    if data.binarize == "threshold":
        bits = (vr.level_to_unit(x) > 0.5).astype(np.float32)
    elif data.binarize == "stochastic":
        bits = (rng.random(x.shape, dtype=np.float32) < vr.level_to_unit(x)).astype(np.float32)
    elif data.dequantize == "uniform":
        return vr.dequantized(x, rng.random(x.shape, dtype=np.float32)).astype(np.float32)
    else:
        return vr.from_levels(x).astype(np.float32)
    return ValueRange(lo, hi, 2).from_levels(bits).astype(np.float32)
