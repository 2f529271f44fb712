"""Anomaly detection and localization metrics, as MVTec AD reports them.

- image AUROC: one score per image against its label (gen_jax/metrics/auroc.py).
- pixel AUROC: every pixel of every test image, scored by the anomaly map,
  against the ground-truth masks (the same AUROC on the flattened pixels).
- PRO (per-region overlap; Bergmann et al., 2021, "The MVTec Anomaly Detection
  Dataset", Sec. 4.2): each connected component of the ground-truth masks (8-
  connected, ``scipy.ndimage.label``) is a region; at a threshold t, PRO(t) is the
  mean over all regions of the fraction of the region's pixels with map >= t, and
  FPR(t) the fraction of defect-free pixels (all images) with map >= t. The
  PRO-vs-FPR curve is integrated (trapezoids, linearly interpolated at the end)
  from FPR 0 up to ``max_fpr`` = 0.3 and divided by 0.3, so a perfect map gives 1
  and a random one about 0.15.

:func:`evaluate_maps` gives all three overall and per defect type (the good
images plus the images of one type), as the evaluation entry point writes them.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from gen_jax.metrics.auroc import auroc

MAX_FPR = 0.3
# 8-connectivity, as the MVTec AD evaluation code labels its regions.
_STRUCTURE = np.ones((3, 3), bool)


def pixel_auroc(maps: ArrayLike, masks: ArrayLike) -> float:
    """AUROC of every pixel's map value against its ground-truth mask bit.

    Args:
      maps: (N, H, W) anomaly maps, higher = more anomalous.
      masks: (N, H, W) bool ground truth.
    """
    maps, masks = np.asarray(maps), np.asarray(masks)
    if maps.shape != masks.shape:
        raise ValueError(f"pixel_auroc: maps {maps.shape} and masks {masks.shape} differ")
    return auroc(maps.ravel(), masks.ravel().astype(bool))


def regions(masks: ArrayLike) -> tuple[np.ndarray, int]:
    """Connected components of each ground-truth mask, numbered across images.

    Returns:
      (labels (N, H, W) int64, 0 = defect-free, 1..R = region ids; R).
    """
    masks = np.asarray(masks, bool)
    out = np.zeros(masks.shape, np.int64)
    total = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=_STRUCTURE)
        out[i] = np.where(lab > 0, lab + total, 0)
        total += n
    return out, total


def pro_curve(maps: ArrayLike, masks: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The PRO-vs-FPR curve at every distinct map value (thresholds from high to low).

    Each pixel adds 1 / |its region| / R to PRO when the threshold passes its value
    (region pixels) or 1 / #defect-free pixels to FPR (the others); ties are
    passed together. O(P log P) for P pixels, by one sort.

    Returns:
      (fpr, pro), each starting at 0 and ending at 1, non-decreasing.
    """
    maps = np.asarray(maps, np.float64)
    labels, num_regions = regions(masks)
    if num_regions == 0:
        raise ValueError("PRO needs at least one defect region in the masks")
    flat_labels = labels.ravel()
    ok = flat_labels == 0
    if not ok.any():
        raise ValueError("PRO needs defect-free pixels (for the false positive rate)")
    if not np.isfinite(maps).all():
        raise ValueError("PRO got non-finite map values")
    sizes = np.bincount(flat_labels, minlength=num_regions + 1).astype(np.float64)
    pro_step = np.where(ok, 0.0, 1.0 / sizes[flat_labels] / num_regions)
    fpr_step = np.where(ok, 1.0 / ok.sum(), 0.0)
    order = np.argsort(-maps.ravel(), kind="stable")
    values = maps.ravel()[order]
    pro = np.cumsum(pro_step[order])
    fpr = np.cumsum(fpr_step[order])
    # Only the last pixel of each run of equal values is a threshold's point.
    last = np.r_[values[1:] != values[:-1], True]
    fpr = np.r_[0.0, np.minimum(fpr[last], 1.0)]
    pro = np.r_[0.0, np.minimum(pro[last], 1.0)]
    return fpr, pro


def area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under the piecewise-linear curve (x, y) (x non-decreasing)
    from x[0] to ``x_max``, interpolating y linearly at ``x_max``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max and inside.sum() < len(x):
        j = int(np.argmax(~inside))  # the first point beyond x_max
        x0, x1, y0, y1 = x[j - 1], x[j], y[j - 1], y[j]
        y_end = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_end]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))


def pro_score(maps: ArrayLike, masks: ArrayLike, max_fpr: float = MAX_FPR) -> float:
    """The normalized area under the PRO curve up to ``max_fpr`` (module doc), in [0, 1].

    Args:
      maps: (N, H, W) anomaly maps, higher = more anomalous.
      masks: (N, H, W) bool ground truth with at least one defect region.
      max_fpr: the integration limit (MVTec AD: 0.3).
    """
    fpr, pro = pro_curve(maps, masks)
    return area_up_to(fpr, pro, max_fpr) / max_fpr


def evaluate_maps(scores: ArrayLike | None, maps: ArrayLike | None, masks: ArrayLike,
                  labels: ArrayLike, defect_types: ArrayLike, good: str = "good") -> dict:
    """Image AUROC (from ``scores``), pixel AUROC and PRO (from ``maps``), overall and
    per defect type (the good images plus that type's images).

    Args:
      scores: (N,) image scores, or None (then no image AUROC).
      maps: (N, H, W) anomaly maps, or None (then no pixel metrics).
      masks: (N, H, W) bool ground truth.
      labels: (N,) 1 = defective.
      defect_types: (N,) str per image; ``good`` for the defect-free ones.

    Returns:
      {"overall": {metric: value}, "per_type": {type: {metric: value}}, "n": {...}}.
    """
    masks, labels, types = np.asarray(masks, bool), np.asarray(labels), np.asarray(defect_types)
    scores = None if scores is None else np.asarray(scores, np.float64)
    maps = None if maps is None else np.asarray(maps, np.float64)

    def metrics(keep: np.ndarray) -> dict:
        out = {}
        if scores is not None:
            out["image_auroc"] = auroc(scores[keep], labels[keep])
        if maps is not None:
            out["pixel_auroc"] = pixel_auroc(maps[keep], masks[keep])
            out["pro"] = pro_score(maps[keep], masks[keep])
        return out

    kinds = [k for k in dict.fromkeys(types.tolist()) if k != good]
    return {"overall": metrics(np.ones(len(labels), bool)),
            "per_type": {k: metrics((types == good) | (types == k)) for k in kinds},
            "n": {"images": int(len(labels)), "defective": int(labels.sum()),
                  **{k: int((types == k).sum()) for k in [good, *kinds]}}}
