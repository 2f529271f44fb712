"""Tests for gen_jax.viz."""

import json

import numpy as np
import pytest
from PIL import Image

from gen_jax import viz

P = viz.PAD_VALUE


def _two_gray_images() -> np.ndarray:
    img0 = np.array([[0.0, 1.0], [0.5, -3.0]])  # -3 clips to 0
    img1 = np.array([[2.0, 0.25], [1.0, 0.0]])  # 2 clips to 1
    return np.stack([img0, img1])[..., None]


def test_image_grid_exact_layout():
    grid = viz.image_grid(_two_gray_images(), nrow=2, padding=1)
    expected = np.array(
        [
            [P, P, P, P, P, P, P],
            [P, 0, 255, P, 255, 64, P],
            [P, 128, 0, P, 255, 0, P],
            [P, P, P, P, P, P, P],
        ],
        dtype=np.uint8,
    )[..., None]
    assert grid.dtype == np.uint8
    np.testing.assert_array_equal(grid, expected)


def test_image_grid_nrow_controls_columns():
    images = np.zeros((5, 3, 4, 1))
    # Default: ceil(sqrt(5)) = 3 per row -> 2 rows.
    assert viz.image_grid(images, padding=0).shape == (6, 12, 1)
    assert viz.image_grid(images, nrow=1, padding=0).shape == (15, 4, 1)
    assert viz.image_grid(images, nrow=5, padding=2).shape == (7, 32, 1)
    # nrow larger than N does not add empty columns.
    assert viz.image_grid(images, nrow=10, padding=0).shape == (3, 20, 1)


def test_image_grid_vertical_layout_values():
    grid = viz.image_grid(_two_gray_images(), nrow=1, padding=1)
    assert grid.shape == (7, 4, 1)
    np.testing.assert_array_equal(grid[1:3, 1:3, 0], [[0, 255], [128, 0]])
    np.testing.assert_array_equal(grid[4:6, 1:3, 0], [[255, 64], [255, 0]])
    assert (grid[3, :, 0] == P).all()


def test_image_grid_partial_last_row_is_padding():
    images = np.zeros((3, 2, 2, 1))
    grid = viz.image_grid(images, nrow=2, padding=1)
    assert grid.shape == (7, 7, 1)
    assert (grid[4:6, 4:6] == P).all()  # empty 4th slot
    assert (grid[4:6, 1:3] == 0).all()  # 3rd image


def test_image_grid_rgb_and_value_range():
    images = np.zeros((1, 1, 1, 3))
    images[0, 0, 0] = [-1.0, 0.0, 1.0]
    grid = viz.image_grid(images, value_range=(-1.0, 1.0), padding=0)
    assert grid.shape == (1, 1, 3)
    np.testing.assert_array_equal(grid[0, 0], [0, 128, 255])


def test_image_grid_nan_maps_to_low():
    images = np.full((1, 1, 1, 1), np.nan)
    assert viz.image_grid(images, padding=0)[0, 0, 0] == 0


def test_image_grid_upscale():
    grid = viz.image_grid(_two_gray_images(), nrow=2, padding=1, upscale=3)
    assert grid.shape == (1 + 6 + 1, 1 + 6 + 1 + 6 + 1, 1)
    np.testing.assert_array_equal(grid[1:4, 1:4, 0], np.zeros((3, 3)))
    np.testing.assert_array_equal(grid[1:4, 4:7, 0], np.full((3, 3), 255))
    np.testing.assert_array_equal(grid[4:7, 1:4, 0], np.full((3, 3), 128))


@pytest.mark.parametrize(
    "shape",
    [(2, 2, 2), (1, 2, 2, 2), (1, 2, 2, 4), (2, 2)],
)
def test_image_grid_bad_shapes(shape):
    with pytest.raises(ValueError):
        viz.image_grid(np.zeros(shape))


def test_image_grid_bad_args():
    with pytest.raises(ValueError):
        viz.image_grid(np.zeros((0, 2, 2, 1)))
    with pytest.raises(ValueError):
        viz.image_grid(np.zeros((1, 2, 2, 1)), value_range=(1.0, 1.0))
    with pytest.raises(ValueError):
        viz.image_grid(np.zeros((1, 2, 2, 1)), nrow=0)


def test_save_image_grid_gray_roundtrip(tmp_path):
    path = tmp_path / "sub" / "dir" / "grid.png"
    viz.save_image_grid(path, _two_gray_images(), nrow=2, upscale=1)
    with Image.open(path) as img:
        assert img.mode == "L"
        arr = np.array(img)
    np.testing.assert_array_equal(
        arr, viz.image_grid(_two_gray_images(), nrow=2)[..., 0]
    )


def test_save_image_grid_auto_upscale_rgb(tmp_path):
    path = tmp_path / "rgb.png"
    images = np.random.default_rng(0).uniform(size=(4, 8, 8, 3))
    viz.save_image_grid(path, images)
    # 8 px tiles -> upscale 4 -> 32 px tiles; 2x2 grid with padding 1.
    with Image.open(path) as img:
        assert img.mode == "RGB"
        assert img.size == (2 * 33 + 1, 2 * 33 + 1)


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size[0] > 0 and img.size[1] > 0


def test_save_scatter_2d(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(100, 2))
    samples[0] = np.inf  # diverged sample must not break the plot
    viz.save_scatter_2d(tmp_path / "a.png", samples)
    viz.save_scatter_2d(
        tmp_path / "b" / "b.png", samples, data=rng.normal(size=(50, 2)),
        title="t", lim=3.0,
    )
    _assert_png(tmp_path / "a.png")
    _assert_png(tmp_path / "b" / "b.png")


def test_save_scatter_2d_bad_shape(tmp_path):
    with pytest.raises(ValueError):
        viz.save_scatter_2d(tmp_path / "x.png", np.zeros((10, 3)))
    with pytest.raises(ValueError):
        viz.save_scatter_2d(tmp_path / "x.png", np.zeros((10, 2)), data=np.zeros(5))


def test_save_density_2d(tmp_path):
    seen = {}

    def log_prob(x):
        seen["dtype"], seen["shape"] = x.dtype, x.shape
        lp = -0.5 * np.sum(x**2, axis=1)
        lp[0] = np.nan
        return lp

    viz.save_density_2d(tmp_path / "d.png", log_prob, resolution=30)
    assert seen == {"dtype": np.float32, "shape": (900, 2)}
    _assert_png(tmp_path / "d.png")
    data = np.random.default_rng(0).normal(size=(200, 2))
    viz.save_density_2d(tmp_path / "d2.png", log_prob, resolution=30, data=data,
                        title="density")
    _assert_png(tmp_path / "d2.png")
    with Image.open(tmp_path / "d.png") as one, Image.open(tmp_path / "d2.png") as two:
        assert two.size[0] > one.size[0]  # second panel present


def test_save_density_2d_wrong_output_size(tmp_path):
    with pytest.raises(ValueError):
        viz.save_density_2d(tmp_path / "d.png", lambda x: np.zeros(3), resolution=10)


def test_dedup_metric_series_last_wins_and_splits():
    records = [
        {"step": 0, "split": "train", "loss": 3.0},
        {"step": 10, "split": "train", "loss": 2.0},
        {"step": 10, "split": "val", "loss": 2.5},
        {"step": 20, "loss": 1.5},  # no split -> train
        # Resumed run repeats step 10 and 20.
        {"step": 10, "split": "train", "loss": 1.9},
        {"step": 20, "split": "train", "loss": float("nan")},
        {"step": 30, "split": "train", "loss": 1.0, "kl": 0.1},
        {"split": "train", "loss": 9.0},  # no step -> ignored
        {"step": 40, "split": "train", "loss": True},  # bool not a metric
    ]
    series = viz.dedup_metric_series(records, "loss")
    assert list(series) == ["train", "val"]
    steps, values = series["train"]
    # Step 20's last value is NaN, so the point is dropped, not the earlier 1.5.
    np.testing.assert_array_equal(steps, [0, 10, 30])
    np.testing.assert_array_equal(values, [3.0, 1.9, 1.0])
    np.testing.assert_array_equal(series["val"][0], [10])
    np.testing.assert_array_equal(series["val"][1], [2.5])
    kl = viz.dedup_metric_series(records, "kl")
    assert list(kl) == ["train"]
    np.testing.assert_array_equal(kl["train"][1], [0.1])


def test_save_loss_curves(tmp_path):
    records = [
        {"step": s, "split": sp, "loss": 1.0 / (s + 1), "kl": 0.1 * s, "tag": "x"}
        for s in range(5)
        for sp in ("train", "val")
    ]
    records.append({"step": 5, "split": "train", "loss": float("inf")})
    viz.save_loss_curves(tmp_path / "all.png", records, title="run")
    viz.save_loss_curves(tmp_path / "one.png", records, keys=["loss", "missing"])
    _assert_png(tmp_path / "all.png")
    _assert_png(tmp_path / "one.png")


def test_save_loss_curves_empty(tmp_path):
    viz.save_loss_curves(tmp_path / "e" / "empty.png", [])
    _assert_png(tmp_path / "e" / "empty.png")


def test_read_metrics_jsonl_truncated_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": float("nan")}]
    text = "".join(json.dumps(r) + "\n" for r in good) + '\n{"step": 3, "lo'
    path.write_text(text)
    records = viz.read_metrics_jsonl(path)
    assert len(records) == 2
    assert records[0] == good[0]
    assert np.isnan(records[1]["loss"])


def test_read_metrics_jsonl_truncated_multibyte(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = '{"step": 2, "note": "é"}'.encode()[:-3]  # cut inside 'é'
    path.write_bytes(b'{"step": 1}\n' + tail)
    assert viz.read_metrics_jsonl(path) == [{"step": 1}]


def test_read_metrics_jsonl_corrupt_middle_line_raises(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
    with pytest.raises(ValueError):
        viz.read_metrics_jsonl(path)
