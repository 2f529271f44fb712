"""TrainState updates (optimizer, EMA with warm-up) and the optimizer built from config."""

from __future__ import annotations

import chex
import jax
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


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_flat_optimizer_state_makes_the_same_updates(name):
    """``optim.flatten`` (one flat vector for the update, the default) changes the
    optimizer state's layout, not the numbers: Adam with clipping over leaves of
    several shapes, 5 steps, against the per-array optimizer."""
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
              "b": {"c": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}}
    kw = dict(name=name, b1=0.9, grad_clip=1.0, weight_decay=0.01, warmup_steps=2)
    flat, per_array = (TrainState.create(params, make_optimizer(_optim(**kw, flatten=f), 10))
                       for f in (True, False))
    assert len(jax.tree.leaves(flat.opt_state)) < len(jax.tree.leaves(per_array.opt_state))

    @jax.jit  # one program (eagerly, every op of the optimizer compiled on its own)
    def five_steps(flat, per_array):
        for i in range(5):
            grads = jax.tree.map(lambda p, i=i: jnp.sin(p * (i + 1)) * 3.0, flat.params)
            flat, per_array = flat.apply_gradients(grads), per_array.apply_gradients(grads)
        return flat, per_array

    flat, per_array = five_steps(flat, per_array)
    chex.assert_trees_all_close(flat.params, per_array.params, rtol=1e-5, atol=1e-6)


def test_an_old_workdir_without_the_flat_optimizer_is_refused_in_one_line(tmp_path):
    """A workdir written before ``optim.flatten`` existed has per-array optimizer
    state: its saved config counts as flatten=False, so resuming it with the new
    default is refused with the key named (not failed inside Orbax's restore)."""
    from gen_jax.checkpoint import config_differences

    new = ml_collections.ConfigDict({"optim": {"name": "adam", "flatten": True}})
    old = ml_collections.ConfigDict({"optim": {"name": "adam"}})
    assert config_differences(old, new) == [("optim.flatten", False, True)]
    assert config_differences(old, ml_collections.ConfigDict(
        {"optim": {"name": "adam", "flatten": False}})) == []
