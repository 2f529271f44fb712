"""The benchmark evaluator (gen_jax/anomaly/evaluate.py): crops, masks and scores stay aligned."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax import defaults
from gen_jax.anomaly import benchmark as bm
from gen_jax.anomaly.evaluate import evaluate_method
from gen_jax.data import preprocess_as_split

SIDE, CROP = 64, 16


class Oracle:
    """A Method whose map is the ground-truth mask of each crop it is given (looked up by
    the crop's pixels), and whose score is ``score_sign`` times the mask's area. ``seen``
    collects the split of every crop it was given."""

    def __init__(self, config, score_sign: float = 1.0):
        self.lookup = {}
        for split in bm.DEFECT_SPLITS:
            d = bm.defect_set("brick", SIDE, CROP, split)
            for x, mask in zip(preprocess_as_split(config, d.x, split), d.mask, strict=True):
                self.lookup[np.asarray(x, np.float32).tobytes()] = (split, mask.astype(np.float32))
        self.score_sign, self.seen = score_sign, set()

    def anomaly_map(self, state, x, rng=None):
        def find(a):
            found = [self.lookup[np.asarray(r, np.float32).tobytes()] for r in np.asarray(a)]
            self.seen.update(split for split, _ in found)
            return np.stack([mask for _, mask in found])

        return jax.pure_callback(find, jax.ShapeDtypeStruct(x.shape[:3], jnp.float32), x)

    def anomaly_score(self, state, x, rng=None):
        return self.score_sign * self.anomaly_map(state, x).sum((1, 2))


def _config():
    config = defaults.get_config()
    config.data.name = "defects:brick"
    config.data.image_size, config.data.patch_size = SIDE, CROP
    return config


@pytest.mark.parametrize("split", bm.DEFECT_SPLITS)
def test_an_oracle_scores_one_on_either_split_and_an_inverted_score_zero(split):
    config = _config()
    n = bm.NUM_TEST_GOOD + bm.NUM_TEST_PER_DEFECT * len(bm.DEFECT_TYPES)
    oracle = Oracle(config)
    r = evaluate_method(oracle, None, config, split=split, batch_size=24)
    assert r["split"] == split and r["category"] == "brick" and oracle.seen == {split}
    assert r["overall"] == {"image_auroc": 1.0, "pixel_auroc": 1.0, "pro": pytest.approx(1.0)}
    assert set(r["per_type"]) == set(bm.DEFECT_TYPES) and r["n"]["images"] == n
    inverted = evaluate_method(Oracle(config, -1.0), None, config, split=split, batch_size=24)
    assert inverted["overall"]["image_auroc"] == 0.0  # the score, not the map's maximum, ranks images
