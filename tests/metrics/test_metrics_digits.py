"""The offline digits feature network: accuracy, input mapping and the digits sample metrics."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from gen_jax.data.preprocess import preprocess
from gen_jax.data.sources import get_source
from gen_jax.errors import DataError
from gen_jax.metrics import classify_digits, digits_metrics, to_unit_interval
from gen_jax.metrics.digits_features import default_net, digits_split01, load_params


def test_shipped_network_accuracy_and_classify_digits():
    x, y = digits_split01("test")
    accuracy = float((default_net().predict(x) == y).mean())
    assert accuracy >= 0.97
    _, info = load_params()
    assert info["test_accuracy"] == pytest.approx(accuracy, abs=1 / 360)  # what the file says it scored
    # Another value range gives the same predictions once mapped.
    mapped = classify_digits(2 * x - 1, value_range=(-1.0, 1.0))
    np.testing.assert_array_equal(mapped, default_net().predict(x))
    with pytest.raises(DataError, match=r"\(N, 8, 8, 1\)"):
        classify_digits(np.zeros((2, 28, 28, 1)))


def test_dequantized_samples_map_back_to_the_level_scale():
    source = get_source(ml_collections.ConfigDict({"name": "digits", "classes": ()}), "test")
    levels = source.get(np.arange(50))[0]
    data = ml_collections.ConfigDict({"value_range": (-1.0, 1.0), "dequantize": "uniform",
                                      "binarize": "none"})
    y = preprocess(levels, source.info, data, np.random.default_rng(0))
    back = to_unit_interval(y, data, 17)
    assert np.abs(back - levels / 16.0).max() <= 0.5 / 16 + 1e-6  # within half a level of the bin centre
    plain = ml_collections.ConfigDict({"value_range": (0.0, 1.0), "dequantize": "none", "binarize": "none"})
    np.testing.assert_allclose(to_unit_interval(levels / 16.0, plain, 17), levels / 16.0, atol=1e-7)


def test_real_held_out_digits_score_well_and_noise_scores_badly():
    train, _ = digits_split01("train")
    test, _ = digits_split01("test")
    real = digits_metrics(test, train)
    noise = digits_metrics(np.random.default_rng(0).random((360, 8, 8, 1)).astype(np.float32), train)
    # 360 samples cannot cover all 1257 reference balls: coverage grows with the sample count.
    assert real["precision"] > 0.8 and real["recall"] > 0.8 and real["coverage"] > 0.6
    assert real["class_share_tv"] < 0.1 and real["classifier_score"] > 8.0  # ~10 balanced, confident
    assert abs(sum(real["class_shares"]) - 1.0) < 1e-9 and real["num_reference"] == 1257
    assert noise["digits_fd"] > 10 * real["digits_fd"] and noise["kid"] > 10 * abs(real["kid"])
    assert noise["precision"] < 0.1 and noise["coverage"] < 0.1
