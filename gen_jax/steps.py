"""The train and eval steps of every single-network family, written once.

A family supplies a loss (as vdm's ``Experiment.loss_fn`` and score_sde's
``get_step_fn`` wrap any loss); this module turns it into the Method's pure
``train_step`` / ``eval_step``:

    loss_fn(params, model_state, batch, rng, train) -> (loss, (metrics, model_state))

``model_state`` is the state's non-trained part (batch statistics, a running
loss history, code moments, ...), returned updated (or unchanged). ``train``
is a Python bool: the training pass or the evaluation pass. The train step
differentiates the loss with respect to ``params`` only, applies the update
(optimizer, EMA, ``step + 1`` in :meth:`TrainState.apply_gradients`) and
reports ``metrics`` with ``loss`` set to the differentiated value. The eval
step evaluates the loss at the EMA parameters where the state keeps them.

Multi-network (GANs) and closed-form (classical) families keep their own steps.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

from gen_jax.state import TrainState

LossFn = Callable[[Any, Any, dict, jax.Array, bool], tuple[jax.Array, tuple[dict, Any]]]


def make_train_step(loss_fn: LossFn) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """``train_step(state, batch, rng) -> (state, metrics)`` from a loss.

    Args:
      loss_fn: ``(params, model_state, batch, rng, train) -> (loss, (metrics, model_state))``.

    Returns:
      The pure train step (the runtime jits it).
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        def objective(params):
            return loss_fn(params, state.model_state, batch, rng, True)

        (loss, (metrics, model_state)), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params)
        return state.apply_gradients(grads, model_state=model_state), {**metrics, "loss": loss}

    return train_step


def make_eval_step(loss_fn: LossFn) -> Callable[[TrainState, dict, jax.Array], dict]:
    """``eval_step(state, batch, rng) -> metrics`` from the same loss, at the EMA
    parameters where kept (what sampling uses)."""

    def eval_step(state: TrainState, batch: dict, rng: jax.Array) -> dict:
        loss, (metrics, _) = loss_fn(state.eval_params, state.model_state, batch, rng, False)
        return {**metrics, "loss": loss}

    return eval_step
