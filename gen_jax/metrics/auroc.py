"""Area under the ROC curve as the Mann-Whitney U statistic (anomaly detection)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def auroc_two_sample(scores_negative: ArrayLike, scores_positive: ArrayLike) -> float:
    """AUROC from the scores of the negatives and of the positives, given separately.

    AUROC = P(s_pos > s_neg) + P(s_pos = s_neg) / 2 over independent draws of
    one positive and one negative: the Mann-Whitney U statistic of the
    positives divided by n_pos * n_neg (Hanley & McNeil, 1982). Ties get half
    credit, so it equals the trapezoidal area under the empirical ROC curve
    (what scikit-learn's roc_auc_score computes). O((n + m) log n) via sorting.

    Args:
      scores_negative: (n,) scores of the negatives (e.g. the training class).
      scores_positive: (m,) scores of the positives (e.g. all other classes).

    Returns:
      The AUROC in [0, 1]; 0.5 = chance, 1 = every positive scores above every negative.

    Raises:
      ValueError: either set is empty or a score is not finite.
    """
    neg = np.sort(np.asarray(scores_negative, np.float64).ravel())
    pos = np.asarray(scores_positive, np.float64).ravel()
    if neg.size == 0 or pos.size == 0:
        raise ValueError(f"auroc needs negatives and positives, got {neg.size} and {pos.size}")
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise ValueError("auroc got non-finite scores")
    below = np.searchsorted(neg, pos, side="left")          # negatives strictly below each positive
    ties = np.searchsorted(neg, pos, side="right") - below  # negatives equal to it
    return float((below.sum() + 0.5 * ties.sum()) / (neg.size * pos.size))


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """AUROC of a score that should be higher for positives (e.g. anomalies).

    The same statistic as :func:`auroc_two_sample` (ties get half credit; equal
    to scikit-learn's ``roc_auc_score(labels, scores)``), from one array of
    scores and their labels.

    Args:
      scores: (n,) scores, any shape flattened.
      labels: (n,) labels, 1 = positive (anomalous), 0 = negative; bool allowed.

    Returns:
      The AUROC in [0, 1].

    Raises:
      ValueError: shapes differ, labels are not 0/1, or one class is absent.
    """
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"auroc(scores, labels): {s.size} scores but {y.size} labels "
                         "(for two separate score sets use auroc_two_sample(negatives, positives))")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("auroc labels must be 0 (negative) or 1 (positive); for two separate score "
                         "sets use auroc_two_sample(negatives, positives)")
    y = y.astype(bool)
    return auroc_two_sample(s[~y], s[y])
