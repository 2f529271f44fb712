"""The offline defect benchmark: fixed, disjoint regions, defects inside their masks."""

from __future__ import annotations

import numpy as np
import pytest

from gen_jax import defaults
from gen_jax.anomaly import benchmark as bm
from gen_jax.data import get_source, known_datasets, load_split
from gen_jax.errors import ConfigError, DataError

SIDE, CROP = bm.DEFAULT_SIDE, bm.DEFAULT_CROP


def _footprint(boxes: np.ndarray, side: int, crop: int) -> np.ndarray:
    cover = np.zeros((side, side), bool)
    for top, left in boxes:
        cover[top:top + crop, left:left + crop] = True
    return cover


@pytest.fixture(scope="module")
def brick():
    return bm.test_set("brick", SIDE, CROP)


def test_layout_and_defect_types(brick):
    n = bm.NUM_TEST_GOOD + bm.NUM_TEST_PER_DEFECT * len(bm.DEFECT_TYPES)
    assert brick.x.shape == (n, CROP, CROP, 1) and brick.x.dtype == np.uint8
    assert brick.mask.shape == (n, CROP, CROP) and brick.mask.dtype == bool
    kinds, counts = np.unique(brick.defect_type, return_counts=True)
    assert dict(zip(kinds, counts, strict=False)) == {"good": bm.NUM_TEST_GOOD,
                                        **{k: bm.NUM_TEST_PER_DEFECT for k in bm.DEFECT_TYPES}}
    np.testing.assert_array_equal(brick.label, brick.defect_type != "good")
    assert not brick.mask[brick.label == 0].any() and brick.mask[brick.label == 1].any((1, 2)).all()
    for kind in bm.DEFECT_TYPES:  # every defect is its own draw
        masks = brick.mask[brick.defect_type == kind].reshape(bm.NUM_TEST_PER_DEFECT, -1)
        assert len(np.unique(masks, axis=0)) == bm.NUM_TEST_PER_DEFECT, kind


def test_regions_are_disjoint_and_test_crops_never_touch_train_pixels(brick):
    train = _footprint(bm.crop_boxes(SIDE, CROP, "train", 500), SIDE, CROP)
    val = _footprint(bm.crop_boxes(SIDE, CROP, "val", 200), SIDE, CROP)
    test = _footprint(brick.boxes, SIDE, CROP)
    assert not (train & test).any() and not (train & val).any() and not (val & test).any()
    t, b, left, r = bm.region(SIDE, "train")
    assert train[t:b, left:r].mean() > 0.95  # the boxes span their region


def test_good_crops_are_the_image_and_defects_stay_inside_their_masks(brick):
    image = bm.category_image("brick", SIDE)
    for x, mask, (top, left), kind in zip(brick.x, brick.mask, brick.boxes, brick.defect_type, strict=False):
        source = image[top:top + CROP, left:left + CROP]
        changed = (x != source)[..., 0]
        if kind == "good":
            np.testing.assert_array_equal(x, source)
            continue
        assert not (changed & ~mask).any(), kind           # nothing changes outside the mask
        assert changed[mask].mean() > 0.5, kind            # and the defect is visible in it
        assert 0.005 < mask.mean() < 0.25, kind


def test_test_set_is_a_fixed_pure_function():
    first = bm.test_set("gravel", SIDE, CROP)
    bm.test_set.cache_clear()
    again = bm.test_set("gravel", SIDE, CROP)
    assert first is not again
    for a, b in ((first.x, again.x), (first.mask, again.mask), (first.boxes, again.boxes)):
        np.testing.assert_array_equal(a, b)
    other = bm.test_set("grass", SIDE, CROP)
    assert not np.array_equal(other.mask, first.mask)  # per-category draws


def _config(name, **data):
    config = defaults.get_config()
    config.data.name = name
    for k, v in data.items():
        config.data[k] = v
    return config


def test_data_source_trains_on_good_crops_and_tests_on_the_benchmark(brick):
    cfg = _config("defects:brick", num_train=50, num_eval=20)
    assert "defects:<category>" in known_datasets()
    train = get_source(cfg.data, "train")
    assert train.info.shape == (CROP, CROP, 1) and train.info.num_levels == 256
    x, y = train.get(np.arange(len(train)))
    assert len(x) == 50 and (y == 0).all()
    image = bm.category_image("brick", SIDE)
    for crop, (top, left) in zip(x[:5], bm.crop_boxes(SIDE, CROP, "train", 50, 0)[:5], strict=False):
        np.testing.assert_array_equal(crop, image[top:top + CROP, left:left + CROP])
    test = get_source(cfg.data, "test")
    xt, yt = test.get(np.arange(len(test)))
    np.testing.assert_array_equal(xt, brick.x)
    np.testing.assert_array_equal(yt, brick.label)
    x01, _ = load_split(cfg, "val")
    assert x01.shape == (20, CROP, CROP, 1) and 0.0 <= x01.min() and x01.max() <= 1.0
    with pytest.raises(DataError, match="defects:brick"):
        get_source(_config("defects:marble").data, "train")


def _inset_sources(defects: bm.DefectTestSet, side: int, crop: int) -> set[str]:
    """For each inset crop, the split region of the other category's image its inset
    pixels were cut from (searched over every crop position of that image)."""
    others = [bm.category_image(o, side)[..., 0] for o in bm.CATEGORIES if o != defects.category]
    found = set()
    for x, mask in zip(defects.x[defects.defect_type == "inset"][:3],
                       defects.mask[defects.defect_type == "inset"][:3], strict=True):
        hits = [(top, left) for image in others for top in range(side - crop + 1)
                for left in range(side - crop + 1)
                if np.array_equal(image[top:top + crop, left:left + crop][mask], x[..., 0][mask])]
        assert hits, "an inset that is no crop of another category's image"
        for split in bm.DEFECT_SPLITS:
            t, b, left, r = bm.region(side, split)
            if all(t <= top <= b - crop and left <= col <= r - crop for top, col in hits):
                found.add(split)
    return found


def test_val_defect_set_lies_in_the_val_region_with_draws_of_its_own(brick):
    side, crop = 64, 16
    val = bm.defect_set("brick", side, crop, "val")
    np.testing.assert_array_equal(val.defect_type, bm.test_set("brick", side, crop).defect_type)
    t, b, left, r = bm.region(side, "val")
    inside = np.zeros((side, side), bool)
    inside[t:b, left:r] = True
    assert not (_footprint(val.boxes, side, crop) & ~inside).any()
    image = bm.category_image("brick", side)
    for x, mask, (top, col) in zip(val.x, val.mask, val.boxes, strict=True):
        assert not ((x != image[top:top + crop, col:col + crop])[..., 0] & ~mask).any()
    assert val.mask[val.label == 1].any((1, 2)).all() and not val.mask[val.label == 0].any()
    assert not np.array_equal(val.mask, bm.test_set("brick", side, crop).mask)  # draws of its own
    # Foreign-texture insets come from the other images' region of the same split.
    assert _inset_sources(val, side, crop) == {"val"}
    assert _inset_sources(bm.test_set("brick", side, crop), side, crop) == {"test"}
    with pytest.raises(ConfigError, match="'train'"):
        bm.defect_set("brick", side, crop, "train")
