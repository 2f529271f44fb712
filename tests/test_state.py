"""TrainState updates (optimizer, EMA with warm-up) and the optimizer built from config."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from gen_jax.errors import ConfigError
from gen_jax.state import TrainState, make_optimizer


def _optim(**kw):
    base = dict(name="sgd", learning_rate=0.1, schedule="constant", warmup_steps=0, b1=0.0,
                b2=0.999, weight_decay=0.0, grad_clip=0.0)
    return ml_collections.ConfigDict({**base, **kw})


def test_sgd_update_and_ema_with_warmup_by_hand():
    params = {"w": jnp.array([1.0, -2.0])}
    state = TrainState.create(params, make_optimizer(_optim(), 10), ema_decay=0.9)
    grads = {"w": jnp.array([0.5, 1.0])}
    s1 = state.apply_gradients(grads)
    np.testing.assert_allclose(s1.params["w"], [0.95, -2.1], rtol=1e-6)
    # decay at step 0 is min(0.9, 1/10) = 0.1
    np.testing.assert_allclose(s1.ema_params["w"], 0.1 * np.array([1.0, -2.0]) + 0.9 * np.array(
        [0.95, -2.1]), rtol=1e-6)
    s2 = s1.apply_gradients(grads)
    d = min(0.9, 2 / 11)
    np.testing.assert_allclose(s2.ema_params["w"], d * s1.ema_params["w"] + (1 - d) * s2.params["w"],
                               rtol=1e-6)
    assert int(s2.step) == 2
    assert s2.eval_params is s2.ema_params
    no_ema = TrainState.create(params, make_optimizer(_optim(), 10))
    assert no_ema.ema_params is None and no_ema.eval_params is no_ema.params


def test_schedules_and_clipping():
    params = {"w": jnp.zeros(())}
    grads = {"w": jnp.ones(())}
    tx = make_optimizer(_optim(warmup_steps=4), 100)
    state = TrainState.create(params, tx)
    moves = []
    for _ in range(6):
        new = state.apply_gradients(grads)
        moves.append(float(state.params["w"] - new.params["w"]))
        state = new
    np.testing.assert_allclose(moves, [0.0, 0.025, 0.05, 0.075, 0.1, 0.1], atol=1e-7)
    cos = optax.warmup_cosine_decay_schedule(0.0, 0.1, 0, 100)
    tx = make_optimizer(_optim(schedule="cosine"), 100)
    state = TrainState.create(params, tx)
    for _ in range(50):
        state = state.apply_gradients(grads)
    assert float(-state.params["w"]) == pytest.approx(sum(float(cos(i)) for i in range(50)), rel=1e-5)
    clipped = TrainState.create(params, make_optimizer(_optim(grad_clip=0.5), 10))
    assert float(clipped.apply_gradients({"w": jnp.array(10.0)}).params["w"]) == pytest.approx(-0.05)


@pytest.mark.parametrize("kw, match", [({"name": "lion9"}, "unknown optimizer"),
                                       ({"schedule": "step"}, "optim.schedule")])
def test_bad_optimizer_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        make_optimizer(_optim(**kw), 10)
