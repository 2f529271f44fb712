"""Per-subpixel output distributions of autoregressive image models.

Both heads are distributions over the integer levels 0..L-1 of one colour
channel of one pixel, parameterized by ``num_params`` network outputs:

- :class:`CategoricalHead`: an L-way softmax (van den Oord et al., 2016).
- :class:`LogisticMixtureHead`: a mixture of discretized logistics (Salimans
  et al., 2017, "PixelCNN++", Sec. 2.1). Each channel has its own mixture,
  whose parameters come from the channel-masked network, so channel c is
  conditioned on channels < c through the network rather than PixelCNN++'s
  linear coupling of the means.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gen_jax.errors import ConfigError
from gen_jax.value_range import ValueRange

HEADS = ("categorical", "logistic_mixture")
# Lower bound of the logistic log-scale (PixelCNN++ uses -7): keeps the
# distribution from putting all mass on one level with an infinite log-density.
_MIN_LOG_SCALE = -7.0


class CategoricalHead:
    """Softmax over ``num_levels`` levels; ``num_params = num_levels`` logits."""

    def __init__(self, num_levels: int):
        self.num_levels = num_levels
        self.num_params = num_levels

    def log_probs(self, params: jax.Array) -> jax.Array:
        """(..., P) parameters -> (..., L) log-probabilities of every level."""
        return jax.nn.log_softmax(params, axis=-1)

    def log_prob(self, params: jax.Array, levels: jax.Array) -> jax.Array:
        """log P(levels) elementwise: params (..., P), levels (...) int."""
        lp = self.log_probs(params)
        return jnp.take_along_axis(lp, levels[..., None], axis=-1)[..., 0]

    def sample(self, rng: jax.Array, params: jax.Array) -> jax.Array:
        """Integer levels drawn from (..., P) parameters."""
        return jax.random.categorical(rng, params, axis=-1).astype(jnp.int32)


class LogisticMixtureHead:
    """Mixture of ``num_mixtures`` discretized logistics on ``num_levels`` levels.

    The levels are placed at x_k = -1 + 2k / (L - 1) (``grid``, a ValueRange
    on [-1, 1]) with bins of half-width 1 / (L - 1); the end bins extend to -inf
    and +inf, so the probabilities of the L levels sum to one exactly. Parameters
    per subpixel: mixture logits, means and log-scales (``num_params = 3 *
    num_mixtures``).
    """

    def __init__(self, num_levels: int, num_mixtures: int):
        if num_mixtures < 1:
            raise ConfigError(f"model.num_mixtures must be >= 1, got {num_mixtures}")
        self.num_levels = num_levels
        self.grid = ValueRange(-1.0, 1.0, num_levels)
        self.num_mixtures = num_mixtures
        self.num_params = 3 * num_mixtures

    def _split(self, params: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        m = self.num_mixtures
        logit_pi, mean, log_scale = params[..., :m], params[..., m:2 * m], params[..., 2 * m:]
        return logit_pi, mean, jnp.maximum(log_scale, _MIN_LOG_SCALE)

    def log_prob(self, params: jax.Array, levels: jax.Array) -> jax.Array:
        """log P(levels) elementwise (PixelCNN++ eq. 2, with a stable log-difference).

        P(k) = sum_i pi_i [sigmoid((x_k + d - mu_i) / s_i) - sigmoid((x_k - d - mu_i) / s_i)],
        d = 1 / (L - 1), and sigmoid(+-inf) at the end bins. The difference is
        evaluated as log sigmoid(a) + log sigmoid(-b) + log(1 - exp(b - a)),
        which is exact algebra and needs no clipping.
        """
        logit_pi, mean, log_scale = self._split(params)
        half = self.grid.level_spacing / 2.0
        x = self.grid.from_levels(levels.astype(params.dtype))[..., None]
        inv_s = jnp.exp(-log_scale)
        a = (x + half - mean) * inv_s  # upper edge
        b = (x - half - mean) * inv_s  # lower edge
        lower_end = levels[..., None] == 0
        upper_end = levels[..., None] == self.num_levels - 1
        log_cdf_a = jax.nn.log_sigmoid(a)
        log_sf_b = jax.nn.log_sigmoid(-b)
        # Safe where-branches: the unused branch must stay finite for the gradient.
        middle = log_cdf_a + log_sf_b + jnp.log(-jnp.expm1(jnp.minimum(b - a, -1e-12)))
        lp = jnp.where(lower_end, log_cdf_a, jnp.where(upper_end, log_sf_b, middle))
        return jax.nn.logsumexp(lp + jax.nn.log_softmax(logit_pi, axis=-1), axis=-1)

    def log_probs(self, params: jax.Array) -> jax.Array:
        """(..., P) parameters -> (..., L) log-probabilities of every level."""
        levels = jnp.arange(self.num_levels)
        return jax.vmap(lambda k: self.log_prob(params, jnp.full(params.shape[:-1], k)),
                        out_axes=-1)(levels)

    def sample(self, rng: jax.Array, params: jax.Array) -> jax.Array:
        """Exact draws: rounding a logistic draw to the nearest level (ends clipped)
        gives the discretized logistic's bin probabilities."""
        logit_pi, mean, log_scale = self._split(params)
        r_comp, r_u = jax.random.split(rng)
        comp = jax.random.categorical(r_comp, logit_pi, axis=-1)
        mu = jnp.take_along_axis(mean, comp[..., None], axis=-1)[..., 0]
        s = jnp.exp(jnp.take_along_axis(log_scale, comp[..., None], axis=-1)[..., 0])
        u = jax.random.uniform(r_u, mu.shape, minval=1e-6, maxval=1.0 - 1e-6)
        x = mu + s * (jnp.log(u) - jnp.log1p(-u))
        return self.grid.levels(x).astype(jnp.int32)


def make_head(name: str, num_levels: int, num_mixtures: int = 5):
    """The head called ``name`` ("categorical" or "logistic_mixture")."""
    if name == "categorical":
        return CategoricalHead(num_levels)
    if name == "logistic_mixture":
        return LogisticMixtureHead(num_levels, num_mixtures)
    raise ConfigError(f"unknown model.head {name!r}; known: {', '.join(HEADS)}")
