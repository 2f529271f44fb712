"""Metric records: JSON lines that stay parseable, TensorBoard scalars, appending on resume."""

from __future__ import annotations

import json
import math

import numpy as np

from gen_jax.writers import MetricWriter


def test_records_append_and_non_finite_values_stay_valid_json(tmp_path):
    w = MetricWriter(tmp_path, total_steps=10)
    w.write(1, "train", {"loss": np.float32(1.5), "bad": float("nan"), "n": 3})
    w.close()
    w = MetricWriter(tmp_path, total_steps=10, initial_step=1)  # a resumed run appends
    w.write(2, "val", {"loss": 2.0})
    w.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == {"step": 1, "split": "train", "loss": 1.5, "bad": "nan", "n": 3}
    assert lines[1]["split"] == "val" and math.isclose(lines[1]["loss"], 2.0)
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
