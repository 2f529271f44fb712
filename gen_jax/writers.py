"""Where metrics go: ``workdir/metrics.jsonl`` (always), TensorBoard event files,
and a progress bar (or log lines when not attached to a terminal).

Only process 0 writes; the other processes get a writer that does nothing.
On open, a torn last line (a kill mid-write) is cut, and rows past the step the
run resumes from are moved to ``metrics.replaced-<time>.jsonl`` (the resumed
run writes them again), so the file always holds one history.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
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


def repair_metrics(path: Path, resume_step: int | None) -> None:
    """Cuts a torn last line of ``path`` and moves rows after ``resume_step`` aside.

    Args:
      path: a metrics.jsonl file (nothing happens if it does not exist).
      resume_step: the step training continues from; None keeps every complete row.
    """
    if not path.exists():
        return
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    keep, later, torn = [], [], tail
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if i == len(lines) - 1 and not tail:
                torn = line  # a torn line that got its newline from a later append
                continue
            keep.append(line)  # not ours to judge: keep it
            continue
        step = record.get("step") if isinstance(record, dict) else None
        (later if resume_step is not None and isinstance(step, int) and step > resume_step
         else keep).append(line)
    if not torn and not later:
        return
    if torn:
        log.warning("%s: cut a torn last line (%d bytes, from an interrupted write)", path, len(torn))
    if later:
        aside = path.with_name(f"metrics.replaced-{time.strftime('%Y%m%dT%H%M%S')}.jsonl")
        aside.write_bytes(b"\n".join(later) + b"\n")
        log.warning("%s: %d rows after step %d moved to %s (the resumed run writes those steps again)",
                    path, len(later), resume_step, aside.name)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(line + b"\n" for line in keep))
    os.replace(tmp, path)


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
        repair_metrics(self.workdir / "metrics.jsonl", initial_step)
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
        """Closes every file; a failure (e.g. a full disk, already reported by the
        write that hit it) does not stop the others from closing."""
        errors = []
        for name in ("_bar", "_tb", "_jsonl"):
            handle = getattr(self, name)
            setattr(self, name, None)
            if handle is not None:
                try:
                    handle.close()
                except OSError as e:
                    errors.append(e)
                    # tensorboardX retries a failed flush at exit (a second traceback)
                    for w in (getattr(handle, "all_writers", None) or {}).values():
                        with contextlib.suppress(Exception):
                            w.event_writer._closed = True
        if errors:
            raise errors[0]
