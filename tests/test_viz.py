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


def _colour_pixels(img: np.ndarray, hex_colour: str, tol: int = 40) -> np.ndarray:
    """(row, col) of the pixels within ``tol`` of a colour (anti-aliased edges excluded)."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return np.argwhere(np.abs(img[..., :3].astype(int) - rgb).max(-1) <= tol)


def test_save_loss_curves_draws_each_split_where_its_values_are(tmp_path):
    # loss falls along the steps; val sits far above train in "loss" and far below in
    # "acc": each split in its own colour (C0 train, C1 val, as matplotlib's cycle), in
    # every panel, at the height of its values, one panel per key in a 3-column grid.
    steps = np.arange(0, 101, 10)
    records = [{"step": int(t), "split": "train", "loss": 10.0 - 0.05 * t, "acc": 0.9,
                "tag": "x"} for t in steps]
    records += [{"step": int(t), "split": "val", "loss": 20.0 - 0.05 * t, "acc": 0.1}
                for t in steps[::5]]
    records += [{"step": 200, "split": "train", "loss": float("inf"), "acc": float("nan")},
                {"step": 5, "split": "train", "never_finite": float("nan")}]
    path = tmp_path / "curves.png"
    viz.save_loss_curves(path, records, keys=["loss", "acc", "never_finite", "missing"],
                         title="run")
    with Image.open(path) as f:
        assert f.format == "PNG"
        img = np.asarray(f.convert("RGB"))
    assert img.shape[:2] == (40 + 2 * 320, 3 * 450)  # 4 panels: 3 columns, 2 rows
    train, val = viz._CYCLE[0], viz._CYCLE[1]
    for col, val_above in ((0, True), (1, False)):  # the loss panel, then the acc panel
        panel = img[40:360, col * 450:(col + 1) * 450]  # below the legend
        t, v = _colour_pixels(panel, train), _colour_pixels(panel, val)
        assert len(t) > 100 and len(v) > 20, (col, len(t), len(v))
        for p in (t, v):  # inside the plot frame (x 75..435, y 30..265 of the panel)
            assert p[:, 1].min() > 75 and p[:, 1].max() < 435 and p[:, 0].min() > 30 and \
                p[:, 0].max() < 265, (p.min(0), p.max(0))
        assert (v[:, 0].mean() < t[:, 0].mean()) == val_above, col  # image rows grow downwards
        if col == 0:  # the falling train loss: lower (larger row) to the right
            assert np.corrcoef(t[:, 1], t[:, 0])[0, 1] > 0.9
            # spans the plot's width: the first and the last step are 100 steps apart
            assert t[:, 1].max() - t[:, 1].min() > 300
    for corner in (img[360:, 900:], img[360:, 450:900]):  # no data: no curve colours
        assert len(_colour_pixels(corner, train)) == 0 and len(_colour_pixels(corner, val)) == 0


@pytest.mark.parametrize("lo, hi, max_ticks, integer, want", [
    (0.0, 3000.0, 4, True, [0, 1000, 2000, 3000]),
    (1.9, 4.1, 4, True, [2, 3, 4]),
    (0.00118, 0.00203, 5, False, [0.0012, 0.0014, 0.0016, 0.0018, 0.0020]),
    (-1.05, 1.05, 5, False, [-1.0, -0.5, 0.0, 0.5, 1.0]),
    (0.0, 1.1, 5, False, [0.0, 0.25, 0.5, 0.75, 1.0]),
    (2.0, 2.0, 5, False, [2.0]),
    (0.0, 0.4, 4, True, [0]),
])
def test_nice_ticks_by_hand(lo, hi, max_ticks, integer, want):
    np.testing.assert_allclose(viz.nice_ticks(lo, hi, max_ticks, integer), want, atol=1e-12)


def test_nice_ticks_are_round_steps_inside_the_range_and_as_fine_as_allowed():
    rng = np.random.default_rng(0)
    for _ in range(300):
        lo = float(rng.normal() * 10.0 ** rng.integers(-4, 5))
        hi = lo + max(float(rng.exponential() * 10.0 ** rng.integers(-4, 5)), 1e-4 * abs(lo))
        for integer in (False, True):
            t = viz.nice_ticks(lo, hi, 5, integer)
            if integer and np.floor(hi) < np.ceil(lo):  # no integer in range: no tick
                assert len(t) == 0
                continue
            assert 1 <= len(t) <= 5 and t[0] >= lo - 1e-9 * abs(lo) and t[-1] <= hi + 1e-9 * abs(hi)
            if len(t) < 2:
                assert integer or hi - lo == 0
                continue
            step = t[1] - t[0]
            mantissa = step / 10 ** np.floor(np.log10(step) + 1e-9)
            assert np.allclose(np.diff(t), step)
            assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5)) < 1e-5, (lo, hi, t)
            if integer:
                assert step >= 1 and np.allclose(t, np.round(t)) and mantissa != 2.5
            # the next finer round step would give more than 5 ticks (or fall below 1)
            seq = (1, 2, 5) if integer else (1, 2, 2.5, 5)
            i = min(range(len(seq)), key=lambda j: abs(seq[j] - mantissa))
            finer = (seq[i - 1] if i else seq[-1] / 10) * step / mantissa
            if not (integer and finer < 1 - 1e-9):
                count = np.floor(hi / finer + 1e-9) - np.ceil(lo / finer - 1e-9) + 1
                assert count > 5, (lo, hi, t)


def test_tick_labels_show_the_step_and_no_more():
    assert viz._tick_labels(np.array([0.0012, 0.0014, 0.002])) == ["0.0012", "0.0014", "0.0020"]
    assert viz._tick_labels(np.array([0.0, 0.25, 0.5])) == ["0.00", "0.25", "0.50"]
    assert viz._tick_labels(np.array([-1.0, -0.5, 0.0])) == ["-1.0", "-0.5", "0.0"]
    assert viz._tick_labels(np.array([0.0, 1000.0, 2000.0])) == ["0", "1000", "2000"]
    assert viz._tick_labels(np.array([0.0, 1e6, 2e6])) == ["0", "1e+06", "2e+06"]


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
