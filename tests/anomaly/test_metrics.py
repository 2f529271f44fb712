"""Pixel AUROC and PRO against brute-force references; known cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from gen_jax.anomaly import metrics


def _random_case(seed: int, n: int = 4, size: int = 12, levels: int = 0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(1, n):  # image 0 stays defect-free
        for _ in range(rng.integers(1, 3)):
            r, c = rng.integers(0, size - 3, 2)
            h, w = rng.integers(1, 4, 2)
            masks[i, r:r + h, c:c + w] = True
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    if levels:  # many ties
        maps = np.round(maps * levels) / levels
    return maps, masks


def _pro_brute_force(maps, masks, max_fpr=0.3):
    """Thresholds swept one by one; PRO = mean over regions of the overlap fraction."""
    regions, region_image = [], []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions.extend((lab == k) for k in range(1, n + 1))
        region_image.extend([i] * n)
    ok = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(np.unique(maps), reverse=True):
        pred = maps >= t
        fpr = (pred & ok).sum() / ok.sum()
        pro = np.mean([(pred[i] & r).sum() / r.sum() for i, r in zip(region_image, regions, strict=False)])
        points.append((fpr, pro))
    fpr, pro = map(np.array, zip(*points, strict=False))
    area = 0.0
    for k in range(1, len(fpr)):
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut the last trapezoid at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


@pytest.mark.parametrize("seed,levels", [(0, 0), (1, 0), (2, 3), (3, 1)])
def test_pixel_auroc_matches_sklearn(seed, levels):
    maps, masks = _random_case(seed, levels=levels)
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(
        roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


@pytest.mark.parametrize("seed,levels", [(0, 0), (1, 0), (2, 3), (3, 1), (4, 2)])
def test_pro_matches_brute_force(seed, levels):
    maps, masks = _random_case(seed, levels=levels)
    assert metrics.pro_score(maps, masks) == pytest.approx(_pro_brute_force(maps, masks), abs=1e-10)
    # Another integration limit exercises the interpolated end too.
    assert metrics.pro_score(maps, masks, 0.1) == pytest.approx(
        _pro_brute_force(maps, masks, 0.1), abs=1e-10)


def test_pro_averages_regions_not_pixels():
    """One big region found and one small region missed: PRO 1/2 at low FPR, while
    the pixel-level recall would be 16/17."""
    masks = np.zeros((1, 10, 10), bool)
    masks[0, :4, :4] = True
    masks[0, 8, 8] = True
    maps = np.where(masks, 0.0, 0.5)
    maps[0, :4, :4] = 1.0
    fpr, pro = metrics.pro_curve(maps, masks)
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0.0
    assert metrics.pro_score(maps, masks) == pytest.approx(0.5)


def test_known_cases():
    maps, masks = _random_case(5)
    perfect = masks.astype(float)
    assert metrics.pro_score(perfect, masks) == pytest.approx(1.0)
    assert metrics.pixel_auroc(perfect, masks) == 1.0
    constant = np.zeros_like(maps)
    assert metrics.pixel_auroc(constant, masks) == pytest.approx(0.5)
    # A constant map flags everything at once: FPR jumps 0 -> 1, so the area up to 0.3
    # under the line from (0, 0) to (1, 1) is 0.3^2 / 2, normalized 0.15.
    assert metrics.pro_score(constant, masks) == pytest.approx(0.15)
    inverted = -perfect
    assert metrics.pro_score(inverted, masks) == pytest.approx(0.0)


def test_evaluate_maps_overall_and_per_type():
    maps, masks = _random_case(6, n=6)
    masks[0] = False
    labels = masks.any((1, 2)).astype(int)
    types = np.array(["good", "a", "a", "b", "b", "b"])
    labels[0] = 0
    scores = maps.max((1, 2))
    out = metrics.evaluate_maps(scores, maps, masks, labels, types)
    assert out["overall"]["image_auroc"] == pytest.approx(roc_auc_score(labels, scores))
    keep = np.isin(types, ["good", "b"])
    assert out["per_type"]["b"]["pixel_auroc"] == pytest.approx(
        roc_auc_score(masks[keep].ravel(), maps[keep].ravel()))
    assert out["per_type"]["a"]["pro"] == pytest.approx(
        _pro_brute_force(maps[types != "b"], masks[types != "b"]))
    assert out["n"] == {"images": 6, "defective": 5, "good": 1, "a": 2, "b": 3}
    assert set(metrics.evaluate_maps(scores, None, masks, labels, types)["overall"]) == {"image_auroc"}
