"""Image grids, 2-D scatter/density plots and metric curves written to PNG.

Figures are built as ``matplotlib.figure.Figure`` and rendered with
``FigureCanvasAgg`` directly, so no global matplotlib state (backend, pyplot
figure registry) is touched. Inputs may be numpy or jax arrays.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from gen_jax.value_range import ValueRange

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
    """Plot metric curves, one subplot per key and one line per split.

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
    if not keys:
        fig = Figure(figsize=(4, 3))
        fig.text(0.5, 0.5, "no metrics to plot", ha="center", va="center")
        if title:
            fig.suptitle(title)
        _save_figure(fig, path)
        return

    ncols = min(len(keys), 3)
    nrows = math.ceil(len(keys) / ncols)
    # A fixed layout: matplotlib's constrained layout took ~1 s per save with a
    # dozen panels, paid at every evaluation of a run.
    fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.35 / nrows, top=1 - 0.45 / nrows,
                        wspace=0.3, hspace=0.55)
    # Fixed colour per split so 'val' looks the same in every panel, and one legend
    # for the figure. Drawing is most of a save's cost (ticks and text): few ticks, a
    # fixed title position (automatic placement measures every tick label) and one
    # legend keep a dozen panels at ~0.3 s instead of ~1 s.
    colours: dict[str, str] = {}
    handles: dict[str, Any] = {}
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        series = dedup_metric_series(records, key)
        plotted = False
        for split, (steps, values) in series.items():
            if split not in colours:
                colours[split] = f"C{len(colours) % 10}"
            if steps.size == 0:
                continue
            marker = "o" if steps.size < 20 else None
            (line,) = ax.plot(steps, values, label=split, color=colours[split],
                              marker=marker, markersize=3)
            handles.setdefault(split, line)
            plotted = True
        ax.set_title(key, y=1.0, pad=4)
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(4))
        if i >= len(keys) - ncols:  # the bottom panel of each column
            ax.set_xlabel("step")
        if not plotted:
            ax.text(0.5, 0.5, "no finite data", ha="center", va="center",
                    transform=ax.transAxes)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize="small",
                   ncols=min(len(handles), 4), frameon=False)
    if title:
        fig.suptitle(title, x=0.02, ha="left")
    _save_figure(fig, path)


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
    _ensure_parent(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=100)
