"""Each value-range formula once: the data's range [lo, hi] <-> the unit interval,
discrete levels, dequantization bins, clipping and a tanh output's range.

Images arrive as integer levels k = 0..L-1 (L = ``DataInfo.num_levels``: 17 for
digits, 256 for 8-bit images; 2 once binarized). A Method sees them scaled into
``config.data.value_range`` = (lo, hi) under one of two conventions:

- **levels** (``data.dequantize='none'``, and binarized data): the level
  centres x = lo + (hi - lo) k / (L - 1), so k = 0 is lo and k = L-1 is hi
  (:meth:`ValueRange.from_levels`; back with :meth:`ValueRange.levels`, the
  nearest level). Adjacent levels are :attr:`ValueRange.level_spacing` apart;
  a discretized likelihood gives level k the bin of that width centred on it
  (the end bins extended to infinity).
- **dequantized** (``data.dequantize='uniform'``): level k fills the bin
  [lo + (hi - lo) k / L, lo + (hi - lo)(k + 1) / L), i.e. y = lo + (hi - lo)(k + u) / L
  with u ~ U[0, 1) (:meth:`ValueRange.dequantized`; back with
  :meth:`ValueRange.dequantized_levels`). These bins are
  :attr:`ValueRange.bin_width` wide, so a density p(y) bounds the discrete
  likelihood: log P(k) >= E_u[log p(y)] + D log(bin_width) (Theis et al., 2016).

The methods are pure arithmetic and work on numpy arrays (the data pipeline),
jax arrays (inside jitted Methods, tracers included) and Python floats alike: a
numpy input gives a numpy output, a jax input a jax output. Each formula has one
evaluation order, so the data pipeline and every family compute identical bits.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the data package imports this module; no cycle at run time
    import ml_collections

    from gen_jax.data.sources import DataInfo


def _xp(x: Any):
    """jax.numpy for jax arrays (tracers included), numpy for anything else. jax is
    not imported here (numpy-only users such as gen_jax.viz stay light): an array
    can only be a jax array once jax is loaded."""
    jax = sys.modules.get("jax")
    return jax.numpy if jax is not None and isinstance(x, jax.Array) else np


def _float(k: Any) -> Any:
    """Integer levels as float32 (float inputs as they are)."""
    xp = _xp(k)
    k = xp.asarray(k)
    return k if xp.issubdtype(k.dtype, xp.floating) else k.astype(xp.float32)


@dataclasses.dataclass(frozen=True)
class ValueRange:
    """The value range [lo, hi] of data with ``num_levels`` discrete levels.

    Attributes:
      lo, hi: the data's range (``config.data.value_range``), hi > lo.
      num_levels: L, the discrete levels of the data as the Method sees it (2 for
        binarized images); None for continuous data, which has only the range
        methods (:meth:`to_unit`, :meth:`from_unit`, :meth:`clip`, :meth:`from_tanh`).
    """

    lo: float
    hi: float
    num_levels: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))
        if not self.hi > self.lo:
            raise ValueError(f"a value range needs hi > lo, got ({self.lo}, {self.hi})")
        if self.num_levels is not None:
            if int(self.num_levels) < 2:
                raise ValueError(f"num_levels must be >= 2, got {self.num_levels}")
            object.__setattr__(self, "num_levels", int(self.num_levels))

    @classmethod
    def from_config(cls, data: "ml_collections.ConfigDict", info: "DataInfo | None" = None) -> "ValueRange":
        """The range of ``config.data`` with the levels a Method sees: 2 when
        ``data.binarize`` is set, ``info.num_levels`` otherwise (None without ``info``
        and for continuous vector data)."""
        lo, hi = data.value_range
        if info is None or info.num_levels is None:
            levels = None
        else:
            levels = 2 if data.get("binarize", "none") != "none" else info.num_levels
        return cls(lo, hi, levels)

    # -- the range ---------------------------------------------------------------

    @property
    def width(self) -> float:
        """hi - lo."""
        return self.hi - self.lo

    def to_unit(self, x):
        """[lo, hi] -> [0, 1]: (x - lo) / (hi - lo)."""
        return (x - self.lo) / (self.hi - self.lo)

    def from_unit(self, u):
        """[0, 1] -> [lo, hi]: lo + (hi - lo) u."""
        return self.lo + (self.hi - self.lo) * u

    def unit_affine(self) -> tuple[float, float]:
        """(scale, shift) with to_unit(x) = scale x + shift, for an affine layer."""
        return 1.0 / (self.hi - self.lo), -self.lo / (self.hi - self.lo)

    def clip(self, x):
        """x clipped to [lo, hi]."""
        return _xp(x).clip(x, self.lo, self.hi)

    def from_tanh(self, h):
        """A network's pre-activation h -> lo + (hi - lo)(tanh(h) + 1) / 2, in (lo, hi)."""
        return self.lo + (self.hi - self.lo) * 0.5 * (_xp(h).tanh(h) + 1.0)

    # -- levels: x = lo + (hi - lo) k / (L - 1) --------------------------------------

    def _levels(self) -> int:
        if self.num_levels is None:
            raise ValueError("this ValueRange has no num_levels (continuous data)")
        return self.num_levels

    @property
    def level_spacing(self) -> float:
        """(hi - lo) / (L - 1): the distance between adjacent levels (the width of a
        discretized likelihood's bin around each level)."""
        return (self.hi - self.lo) / (self._levels() - 1)

    def levels(self, x):
        """The nearest level index k in 0..L-1 of x (as floats; cast for indexing):
        round((x - lo) / (hi - lo) (L - 1)), clipped."""
        n = self._levels()
        xp = _xp(x)
        return xp.clip(xp.round(self.to_unit(x) * (n - 1)), 0, n - 1)

    def level_to_unit(self, k):
        """Level indices k (integers or floats) -> k / (L - 1), their place in [0, 1]
        (float32 for integer k)."""
        return _float(k) / (self._levels() - 1)

    def from_levels(self, k):
        """Level indices k (integers or floats) -> lo + (hi - lo) k / (L - 1), the
        data as the pipeline scales it (float32 for integer k)."""
        return self.from_unit(self.level_to_unit(k))

    # -- dequantized: y = lo + (hi - lo)(k + u) / L ----------------------------------

    @property
    def bin_width(self) -> float:
        """(hi - lo) / L: the width of one level's uniform-dequantization bin."""
        return (self.hi - self.lo) / self._levels()

    def dequantized(self, k, u):
        """Level k with offset u in [0, 1) inside its bin -> lo + (hi - lo)(k + u) / L
        (u = 0.5: the bin's centre)."""
        return self.from_unit((_float(k) + u) / self._levels())

    def dequantized_levels(self, y):
        """The level k whose dequantization bin holds y (as floats):
        floor((y - lo) / (hi - lo) L), clipped to 0..L-1. (A y within rounding of a
        bin's left edge may land in the bin below.)"""
        n = self._levels()
        xp = _xp(y)
        return xp.clip(xp.floor(self.to_unit(y) * n), 0, n - 1)


__all__ = ["ValueRange"]
