"""Image grids, 2-D scatter/density plots and metric curves written to PNG.

Image grids and the metric curves (redrawn at every evaluation of a run) are drawn
with PIL; the 2-D scatter and density plots are ``matplotlib.figure.Figure`` rendered
with ``FigureCanvasAgg`` directly, so no global matplotlib state (backend, pyplot
figure registry) is touched, and matplotlib is imported only when one is drawn.
Inputs may be numpy or jax arrays.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gen_jax.value_range import ValueRange

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# White separates tiles well for dark-background data (MNIST, digits), which
# is what most grids in this codebase show.
PAD_VALUE = 255

PathLike = str | os.PathLike


def image_grid(
    images: Any,
    nrow: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    padding: int = 1,
    upscale: int = 1,
) -> np.ndarray:
    """Tile NHWC images into one uint8 image.

    Args:
        images: Array of shape (N, H, W, C) with C in {1, 3}.
        nrow: Images per row of the grid (torchvision convention);
            defaults to ceil(sqrt(N)).
        value_range: (low, high); values are clipped to it and mapped
            linearly to 0..255. NaNs map to ``low``.
        padding: Pixels of ``PAD_VALUE`` between tiles and around the border
            (not scaled by ``upscale``).
        upscale: Integer nearest-neighbour magnification of each tile.

    Returns:
        uint8 array of shape (rows * (H * upscale + padding) + padding,
        nrow * (W * upscale + padding) + padding, C).
    """
    x = np.asarray(images)
    if x.ndim != 4:
        raise ValueError(f"images must be 4-D (N, H, W, C), got shape {x.shape}")
    n, h, w, c = x.shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {x.shape}")
    if n == 0:
        raise ValueError("images is empty (N = 0)")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must have high > low, got {value_range}")
    if upscale < 1 or padding < 0:
        raise ValueError(f"need upscale >= 1, padding >= 0; got {upscale}, {padding}")
    ncol = int(nrow) if nrow is not None else math.ceil(math.sqrt(n))
    if ncol < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    ncol = min(ncol, n)
    nrows = math.ceil(n / ncol)

    x = np.nan_to_num(x.astype(np.float64), nan=lo)
    x = np.clip(ValueRange(lo, hi).to_unit(x), 0.0, 1.0)
    tiles = np.rint(x * 255.0).astype(np.uint8)
    if upscale > 1:
        tiles = tiles.repeat(upscale, axis=1).repeat(upscale, axis=2)
    th, tw = h * upscale, w * upscale

    grid = np.full(
        (nrows * (th + padding) + padding, ncol * (tw + padding) + padding, c),
        PAD_VALUE,
        dtype=np.uint8,
    )
    for i in range(n):
        r, col = divmod(i, ncol)
        y0 = padding + r * (th + padding)
        x0 = padding + col * (tw + padding)
        grid[y0:y0 + th, x0:x0 + tw] = tiles[i]
    return grid


def save_image_grid(
    path: PathLike,
    images: Any,
    nrow: int | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    upscale: int | None = None,
) -> None:
    """Write ``image_grid(images, ...)`` as a PNG, creating parent dirs.

    Args:
        path: Output file path.
        images: (N, H, W, C) array, C in {1, 3}.
        nrow: Images per grid row; defaults to ceil(sqrt(N)).
        value_range: Range mapped to 0..255.
        upscale: Pixel repeat factor; None picks the smallest integer that
            makes each tile at least 32 px on its shorter side.
    """
    x = np.asarray(images)
    if upscale is None:
        short = min(x.shape[1:3]) if x.ndim == 4 else 0
        upscale = max(1, math.ceil(32 / short)) if short > 0 else 1
    grid = image_grid(x, nrow=nrow, value_range=value_range, upscale=upscale)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    _ensure_parent(path)
    img.save(path, format="PNG")


def save_scatter_2d(
    path: PathLike,
    samples: Any,
    data: Any = None,
    title: str | None = None,
    lim: float | None = None,
) -> None:
    """Scatter plot of 2-D samples, drawn over optional reference data.

    Args:
        path: Output PNG path.
        samples: (N, 2) array.
        data: Optional (N', 2) reference points, drawn underneath in grey.
        title: Optional axes title.
        lim: If given, both axes span [-lim, lim]; otherwise autoscaled.
    """
    from matplotlib.figure import Figure  # imported here: ~0.4 s that a run without 2-D data skips

    s = _finite_rows(_as_points(samples, "samples"))
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1)
    if data is not None:
        d = _finite_rows(_as_points(data, "data"))
        ax.scatter(d[:, 0], d[:, 1], s=3, c="0.6", alpha=0.5, label="data")
    ax.scatter(s[:, 0], s[:, 1], s=3, c="tab:blue", alpha=0.7, label="samples")
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal", adjustable="box")
    if data is not None:
        ax.legend(loc="upper right", markerscale=3)
    if title:
        ax.set_title(title)
    _save_figure(fig, path)


def save_density_2d(
    path: PathLike,
    log_prob_fn: Callable[[np.ndarray], Any],
    lim: float = 4.0,
    resolution: int = 200,
    data: Any = None,
    title: str | None = None,
) -> None:
    """Heat map of a 2-D density, optionally next to a histogram of data.

    Args:
        path: Output PNG path.
        log_prob_fn: Maps float32 points (M, 2) to log densities (M,).
        lim: The grid covers [-lim, lim]^2.
        resolution: Grid points per axis.
        data: Optional (N, 2) points shown as a 2-D histogram in a second panel.
        title: Optional figure title.
    """
    from matplotlib.figure import Figure

    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    axis = np.linspace(-lim, lim, resolution, dtype=np.float32)
    xx, yy = np.meshgrid(axis, axis)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    logp = np.asarray(log_prob_fn(points), dtype=np.float64).reshape(-1)
    if logp.shape[0] != points.shape[0]:
        raise ValueError(f"log_prob_fn gave {logp.shape} for {len(points)} points")
    # -inf is a legitimate log density (zero mass); NaN/+inf would break the
    # colour scale, so they are shown as zero too.
    logp = np.where(np.isfinite(logp), logp, -np.inf)
    density = np.exp(logp).reshape(resolution, resolution)

    extent = (-lim, lim, -lim, lim)
    npanels = 2 if data is not None else 1
    fig = Figure(figsize=(5 * npanels, 4.5))
    ax = fig.add_subplot(1, npanels, 1)
    ax.imshow(density, origin="lower", extent=extent, cmap="viridis")
    ax.set_title("model density")
    if data is not None:
        d = _finite_rows(_as_points(data, "data"))
        bins = min(resolution, 100)
        box = [[-lim, lim], [-lim, lim]]
        hist, _, _ = np.histogram2d(d[:, 0], d[:, 1], bins=bins, range=box)
        ax2 = fig.add_subplot(1, npanels, 2)
        # histogram2d indexes [x, y]; imshow wants [row=y, col=x].
        ax2.imshow(hist.T, origin="lower", extent=extent, cmap="viridis")
        ax2.set_title("data histogram")
    if title:
        fig.suptitle(title)
    _save_figure(fig, path)


Series = dict[str, tuple[np.ndarray, np.ndarray]]


def dedup_metric_series(records: list[dict], key: str) -> Series:
    """Collect one metric as per-split (steps, values) series.

    For each (split, step) the value from the last record carrying ``key``
    wins, so a resumed run overwrites the steps it repeated. Records without a
    'split' count as 'train'; records without a numeric 'step' are ignored;
    non-finite winning values are dropped.

    Args:
        records: Metric dicts, in file order.
        key: Metric name to extract.

    Returns:
        Mapping split -> (steps, values), both float arrays sorted by step,
        splits in order of first appearance.
    """
    latest: dict[str, dict[float, float]] = {}
    for rec in records:
        step, value = rec.get("step"), rec.get(key)
        if not _is_number(step) or not _is_number(value):
            continue
        split = str(rec.get("split", "train"))
        latest.setdefault(split, {})[float(step)] = float(value)
    out = {}
    for split, by_step in latest.items():
        pairs = sorted((s, v) for s, v in by_step.items() if math.isfinite(v))
        steps = np.array([p[0] for p in pairs], dtype=np.float64)
        values = np.array([p[1] for p in pairs], dtype=np.float64)
        out[split] = (steps, values)
    return out


def save_loss_curves(
    path: PathLike,
    records: list[dict],
    keys: list[str] | None = None,
    title: str | None = None,
) -> None:
    """Plot metric curves, one panel per key and one line per split.

    Drawn with PIL, not matplotlib: a run redraws this figure at every evaluation, and
    matplotlib's axes and tick machinery took ~0.3 s per save (more than a small model's
    whole evaluation); this takes ~0.03 s. Lines and markers are drawn at twice the size
    and downsampled (anti-aliased), text in matplotlib's own DejaVu Sans, colours in its
    default cycle (split k is ``C{k}``, the same in every panel), "nice" ticks (1, 2,
    2.5, 5 x 10^k; integers on the step axis).

    Args:
        path: Output PNG path.
        records: Metric dicts such as the lines of a metrics.jsonl.
        keys: Metrics to plot; default is every numeric key except 'step',
            in order of first appearance.
        title: Optional figure title.
    """
    if keys is None:
        keys = []
        for rec in records:
            for k, v in rec.items():
                if k != "step" and _is_number(v) and k not in keys:
                    keys.append(k)
    s = _SUPERSAMPLE
    if not keys:
        img = Image.new("RGB", (400 * s, 300 * s), "white")
        draw = ImageDraw.Draw(img)
        draw.text((200 * s, 150 * s), "no metrics to plot", fill="black", font=_font(10), anchor="mm")
        if title:
            draw.text((8 * s, 6 * s), title, fill="black", font=_font(12), anchor="la")
        _save_pil(img, path)
        return

    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    panel_w, panel_h, top = 450, 320, 40  # pixels at 100 dpi: the former 4.5 x 3.2 in panels
    img = Image.new("RGB", (panel_w * ncols * s, (top + panel_h * nrows) * s), "white")
    draw = ImageDraw.Draw(img)
    colours: dict[str, str] = {}
    marked: dict[str, bool] = {}
    for i, key in enumerate(keys):
        row, col = divmod(i, ncols)
        # Plot area: room for y tick labels on the left, the title above, x ticks below.
        box = (col * panel_w + 75, top + row * panel_h + 30,
               (col + 1) * panel_w - 15, top + (row + 1) * panel_h - 55)
        series = dedup_metric_series(records, key)
        for split in series:
            colours.setdefault(split, _CYCLE[len(colours) % len(_CYCLE)])
        bottom = i >= len(keys) - ncols  # the bottom panel of each column
        _draw_panel(draw, box, key, series, colours, marked, xlabel="step" if bottom else None)
    if title:
        draw.text((8 * s, 8 * s), title, fill="black", font=_font(12), anchor="la")
    # One legend for the figure, top right: a line (with a marker where the panels have them).
    x = img.width - 10 * s
    for split in reversed(list(colours)):
        x -= draw.textlength(split, font=_font(9)) + 6 * s
        draw.text((x, 14 * s), split, fill="black", font=_font(9), anchor="lm")
        x -= 26 * s
        draw.line([(x, 14 * s), (x + 20 * s, 14 * s)], fill=colours[split], width=3)
        if marked.get(split):
            _marker(draw, x + 10 * s, 14 * s, colours[split])
        x -= 10 * s
    _save_pil(img, path)


# matplotlib's default colour cycle (C0, C1, ...), so these curves look like its figures.
_CYCLE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_SUPERSAMPLE = 2  # drawn at 2x and downsampled: anti-aliased lines and text


def _font(points: float):
    """DejaVu Sans (matplotlib's default font, shipped in its mpl-data) at ``points``
    at 100 dpi, supersampled; PIL's own font if that file is missing."""
    return _font_px(round(points * 100 / 72 * _SUPERSAMPLE))


@functools.cache
def _font_px(size: int):
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        ttf = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if ttf.exists():
            return ImageFont.truetype(str(ttf), size)
    return ImageFont.load_default(size)


def nice_ticks(lo: float, hi: float, max_ticks: int = 5, integer: bool = False) -> np.ndarray:
    """Tick positions in [lo, hi]: multiples of a step 1, 2, 2.5 or 5 x 10^k (1, 2 or 5
    x 10^k, at least 1, if ``integer``), the finest giving at most ``max_ticks``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"nice_ticks needs finite lo <= hi, got {lo}, {hi}")
    span = hi - lo
    if span == 0:
        return np.array([lo])
    mag = 10.0 ** math.floor(math.log10(span / max_ticks))
    if integer:
        mag = max(mag, 1.0)
    for m in (1, 2, 5, 10, 20) if integer else (1, 2, 2.5, 5, 10, 20):
        step = m * mag
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last - first + 1 <= max_ticks:
            return np.arange(first, last + 1) * step
    raise AssertionError("unreachable: a step of 20 x 10^k spans fewer than max_ticks")


def _tick_labels(ticks: np.ndarray) -> list[str]:
    """Labels with as many decimals as the tick step needs (2.5 x 10^k one more);
    4 significant digits in exponent notation for very large or small values."""
    if ticks.size < 2:
        return [f"{t:.4g}" for t in ticks]
    step = float(ticks[1] - ticks[0])
    biggest = float(np.abs(ticks).max())
    if biggest >= 1e5 or step < 1e-4:
        return [f"{t:.4g}" for t in ticks]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if not math.isclose(round(step * 10 ** decimals), step * 10 ** decimals, rel_tol=1e-6):
        decimals += 1  # 0.25, 2.5: one more digit
    return [f"{t + 0.0:.{decimals}f}" for t in ticks]  # + 0.0: -0.0 prints as 0.0


def _limits(values: np.ndarray, integer: bool) -> tuple[float, float]:
    """Axis limits: the data's range plus 5% each side (matplotlib's margins); a
    single value gets +-0.5 (an integer axis) or +-5% of its size (at least 0.05)."""
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        pad = 0.5 if integer else max(abs(lo) * 0.05, 0.05)
        return lo - pad, hi + pad
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _marker(draw, x: float, y: float, colour: str) -> None:
    r = 2.2 * _SUPERSAMPLE
    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)


def _draw_panel(draw, box, key, series, colours, marked, xlabel=None) -> None:
    """One panel of :func:`save_loss_curves`: frame, title, ticks and each split's line."""
    s = _SUPERSAMPLE
    x0, y0, x1, y1 = (v * s for v in box)
    draw.rectangle([x0, y0, x1, y1], outline="black", width=s)
    draw.text(((x0 + x1) / 2, y0 - 5 * s), key, fill="black", font=_font(12), anchor="md")
    if xlabel:
        draw.text(((x0 + x1) / 2, y1 + 38 * s), xlabel, fill="black", font=_font(10), anchor="md")
    finite = [(st, v) for st, v in series.values() if st.size]
    if not finite:
        draw.text(((x0 + x1) / 2, (y0 + y1) / 2), "no finite data", fill="black", font=_font(10),
                  anchor="mm")
        return
    xlim = _limits(np.concatenate([st for st, _ in finite]), integer=True)
    ylim = _limits(np.concatenate([v for _, v in finite]), integer=False)

    def px(t):
        return x0 + (t - xlim[0]) / (xlim[1] - xlim[0]) * (x1 - x0)

    def py(v):
        return y1 - (v - ylim[0]) / (ylim[1] - ylim[0]) * (y1 - y0)

    font = _font(10)
    xt = nice_ticks(*xlim, max_ticks=4, integer=True)
    for t, label in zip(xt, _tick_labels(xt), strict=True):
        draw.line([(px(t), y1), (px(t), y1 + 4 * s)], fill="black", width=s)
        draw.text((px(t), y1 + 6 * s), label, fill="black", font=font, anchor="ma")
    yt = nice_ticks(*ylim, max_ticks=5)
    for v, label in zip(yt, _tick_labels(yt), strict=True):
        draw.line([(x0 - 4 * s, py(v)), (x0, py(v))], fill="black", width=s)
        draw.text((x0 - 6 * s, py(v)), label, fill="black", font=font, anchor="rm")
    for split, (steps, values) in series.items():
        if not steps.size:
            continue
        points = [(px(t), py(v)) for t, v in zip(steps, values, strict=True)]
        if len(points) > 1:
            draw.line(points, fill=colours[split], width=2 * s, joint="curve")
        if steps.size < 20:
            marked[split] = True
            for x, y in points:
                _marker(draw, x, y, colours[split])


def _save_pil(img: Image.Image, path: PathLike) -> None:
    _ensure_parent(path)
    img.reduce(_SUPERSAMPLE).save(path, format="PNG", compress_level=1)  # zlib 6: ~3x the time


def read_metrics_jsonl(path: PathLike) -> list[dict]:
    """Read a metrics.jsonl file into a list of dicts.

    A last line that is not a complete JSON object is skipped, since a killed
    run can leave one half-written; a malformed line elsewhere raises.

    Args:
        path: File to read.

    Returns:
        The records in file order.
    """
    # errors="replace" so a multi-byte character cut mid-way only spoils the
    # truncated line instead of failing the whole decode.
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    records = []
    for j, (lineno, line) in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            rec = err
        if isinstance(rec, dict):
            records.append(rec)
        elif j < len(lines) - 1:
            raise ValueError(f"{path}:{lineno}: not a JSON object: {line[:80]!r}")
    return records


def _is_number(v: Any) -> bool:
    # bool is an int subclass but a flag, not a metric.
    numeric = isinstance(v, (int, float, np.integer, np.floating))
    return numeric and not isinstance(v, (bool, np.bool_))


def _as_points(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {arr.shape}")
    return arr


def _finite_rows(x: np.ndarray) -> np.ndarray:
    # Diverged samples (inf/NaN) would otherwise wreck autoscaled limits.
    return x[np.isfinite(x).all(axis=1)]


def _ensure_parent(path: PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)


def _save_figure(fig: Figure, path: PathLike) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _ensure_parent(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
