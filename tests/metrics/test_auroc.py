"""AUROC against a direct O(n m) pairwise Mann-Whitney count and scikit-learn, with ties.

``auroc(scores, labels)`` (labels 1 = positive) and ``auroc_two_sample(negatives, positives)``.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gen_jax.metrics import auroc, auroc_two_sample


def pairwise_auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """The definition: the fraction of (positive, negative) pairs ordered correctly, ties half."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(neg) * len(pos))


@pytest.mark.parametrize("seed", range(5))
def test_matches_pairwise_count_and_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    # Integer scores on a small range: many ties within and across the two sets.
    neg = rng.integers(0, 6, size=rng.integers(1, 40))
    pos = rng.integers(1, 8, size=rng.integers(1, 40))
    got = auroc_two_sample(neg, pos)
    assert got == pytest.approx(pairwise_auroc(neg, pos), abs=1e-12)
    labels = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    assert got == pytest.approx(roc_auc_score(labels, np.r_[neg, pos]), abs=1e-12)
    # The labelled form, on shuffled scores: the same statistic.
    order = rng.permutation(len(labels))
    assert auroc(np.r_[neg, pos][order], labels[order].astype(int)) == pytest.approx(got, abs=1e-12)
    assert auroc(np.r_[neg, pos][order], labels[order] == 1) == pytest.approx(got, abs=1e-12)


def test_continuous_scores_and_edge_cases():
    rng = np.random.default_rng(9)
    neg, pos = rng.normal(size=300), rng.normal(0.7, 1.0, size=200)
    assert auroc_two_sample(neg, pos) == pytest.approx(pairwise_auroc(neg, pos), abs=1e-12)
    swapped = 1.0 - auroc_two_sample(pos, neg)  # swapping roles
    assert auroc_two_sample(neg, pos) == pytest.approx(swapped, abs=1e-12)
    assert auroc_two_sample([0.0, 1.0], [2.0, 3.0]) == 1.0
    assert auroc_two_sample([2.0, 3.0], [0.0, 1.0]) == 0.0
    assert auroc_two_sample([1.0, 1.0], [1.0]) == 0.5  # all tied: half credit
    assert auroc_two_sample([0.0, 1.0], [1.0]) == 0.75
    assert auroc_two_sample(np.ones((2, 3)), np.full((4,), 2.0)) == 1.0  # any shape is flattened


def test_rejects_empty_and_non_finite_scores():
    with pytest.raises(ValueError, match="negatives and positives"):
        auroc_two_sample([], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        auroc_two_sample([0.0, np.nan], [1.0])


def test_labelled_form_rejects_bad_labels():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="must be 0"):
        auroc([0.1, 0.2], [0.5, 1.0])  # two score sets passed to the labelled form
    with pytest.raises(ValueError, match="negatives and positives"):
        auroc([0.1, 0.2], [1, 1])
