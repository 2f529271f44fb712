"""Where metrics go: ``workdir/metrics.jsonl`` (always), TensorBoard event files,
and a progress bar (or log lines when not attached to a terminal).

Only process 0 writes; the other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import jax
import numpy as np

log = logging.getLogger(__name__)


def _to_python(value):
    value = np.asarray(value)
    if value.ndim:
        return value.tolist()
    value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the file parseable
    return value


class MetricWriter:
    """Appends metric records; a resumed run appends to the same files.

    Args:
      workdir: the run directory.
      total_steps: for the progress bar.
      initial_step: where the progress bar starts (the restored step).
    """

    def __init__(self, workdir: str | Path, total_steps: int = 0, initial_step: int = 0):
        self.active = jax.process_index() == 0
        self.workdir = Path(workdir)
        self._jsonl = self._tb = self._bar = None
        if not self.active:
            return
        self._jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.workdir / "tensorboard"))
        except ImportError:  # TensorBoard files are optional; metrics.jsonl is not
            log.warning("tensorboardX is not installed: no TensorBoard event files")
        if total_steps and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True,
                             desc="train", unit="step")

    def write(self, step: int, split: str, metrics: dict) -> dict:
        """Writes one record ``{"step", "split", **metrics}`` and returns it."""
        record = {"step": int(step), "split": split,
                  **{k: _to_python(v) for k, v in metrics.items()}}
        if not self.active:
            return record
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{split}/{k}", v, step)
        if self._bar is None:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in record.items()
                              if isinstance(v, float))
            log.info("step %d %s: %s", step, split, shown)
        elif split == "train":
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()
                                   if k in ("loss", "steps_per_sec") and isinstance(v, float)})
        return record

    def advance(self, n: int = 1) -> None:
        """Moves the progress bar."""
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
