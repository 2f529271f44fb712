"""How experiments train: through the runtime, one workdir per run, reused once finished.

An experiment builds each run's config from a ``configs/`` file plus overrides
(:func:`config`), trains it with :func:`gen_jax.train.train_and_evaluate` into its
own subdirectory of the experiment's ``--workdir`` (:func:`train`), and reads the
result back with :func:`gen_jax.checkpoint.load_trained` (:func:`load`). So every
experiment draws the same keys (``fold_in(train_key, step)``) and batches as
``python -m gen_jax --mode=train`` with that config, and

- rerunning an experiment reuses its finished runs and resumes interrupted ones;
- a workdir trained with a different config is refused by the runtime (one line
  naming the keys), never overwritten; and a run name carries the flags that set
  its budget (steps, seed, ...), so another budget trains in another directory.

Imported by the scripts in this directory (``python experiments/<name>.py`` puts
this directory on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # runnable as a plain script from anywhere, installed or not
    sys.path.insert(0, str(REPO))

from gen_jax import checkpoint, parallel, registry  # noqa: E402
from gen_jax import data as data_lib  # noqa: E402
from gen_jax import train as train_lib  # noqa: E402
from gen_jax.config import load_config  # noqa: E402

CONFIGS = REPO / "configs"
RUNS = Path(__file__).resolve().parent / "runs"  # ignored by git (.gitignore: runs/)
TIMING = "experiment_timing.json"  # wall-clock of the session that finished the run

log = logging.getLogger(__name__)


def add_workdir_flag(parser: argparse.ArgumentParser, experiment: str) -> None:
    """``--workdir``: the parent of the experiment's run directories."""
    parser.add_argument(
        "--workdir", default=str(RUNS / experiment),
        help="parent directory of this experiment's runs (one gen_jax workdir per run); a "
             "finished run there is reused, an interrupted one resumed")


def config(file: str, *overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    """``configs/<file>`` (``name.py`` or ``name.py:variant``) with dotted overrides
    (later dicts win), validated as the CLI validates it."""
    merged: dict[str, Any] = {}
    for o in overrides:
        merged.update(o)
    return load_config(CONFIGS / file, **merged)


def run_dir(root: str | Path, *parts: Any) -> Path:
    """``root/<parts joined by '_'>``, made filesystem-safe (e.g. ``("VAE", 600, "class3")``)."""
    name = "_".join(str(p) for p in parts)
    return Path(root) / re.sub(r"[^A-Za-z0-9._=+-]+", "-", name).strip("-")


def _finished(workdir: Path, config: ml_collections.ConfigDict) -> bool:
    """Whether ``workdir`` holds ``config``'s run trained to its last step. Raises the
    runtime's CheckpointError if the checkpoint was trained with another config."""
    if not workdir.is_dir():
        return False
    ckpt = checkpoint.Checkpointer(workdir, async_save=False, create=False)
    try:
        if ckpt.latest_step() != config.train.num_steps:
            return False
        ckpt.check_config(config)  # the check train_and_evaluate makes before resuming
        return True
    finally:
        ckpt.close()


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains ``config`` in ``workdir`` with the runtime, or reuses the finished run there.

    An interrupted run is resumed by the runtime; a finished one is checked against
    ``config`` as the runtime checks a resume (a workdir whose checkpoint was
    trained with a different config is refused) and reused without restarting
    the runtime.

    Args:
      config: the run's config (``train.num_steps`` is its budget).
      workdir: the run directory.

    Returns:
      ``{"seconds": wall-clock of train_and_evaluate in the session that finished
      the run (compilation, final evaluation and figures included), "reused": bool}``.

    Raises:
      RuntimeError: the workdir holds a run trained past ``train.num_steps``.
    """
    workdir = Path(workdir)
    steps = config.train.num_steps
    timing = workdir / TIMING
    if _finished(workdir, config) and timing.is_file():
        log.info("reusing the finished run in %s", workdir)
        return {"seconds": json.loads(timing.read_text())["seconds"], "reused": True}
    t0 = time.perf_counter()
    state = train_lib.train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - t0
    if int(state.step) != steps:
        raise RuntimeError(f"{workdir} holds a run trained to step {int(state.step)}, not "
                           f"train.num_steps={steps}: use another --workdir or remove it")
    timing.write_text(json.dumps({"seconds": seconds, "num_steps": steps}))
    return {"seconds": seconds, "reused": False}


def load(workdir: str | Path) -> tuple[Any, Any, ml_collections.ConfigDict]:
    """(method, state, config) of a trained workdir, as the runtime saved them."""
    return checkpoint.load_trained(workdir)


def train_and_load(config: ml_collections.ConfigDict, workdir: str | Path
                   ) -> tuple[Any, Any, ml_collections.ConfigDict, dict]:
    """:func:`train` then :func:`load`: (method, state, config, timing)."""
    timing = train(config, workdir)
    return (*load(workdir), timing)


def runtime_step(config: ml_collections.ConfigDict) -> tuple[Any, Any, Any]:
    """The train step as the runtime compiles it, for benchmarks that time single steps.

    The Method comes from ``registry.build(config, info)``; its ``train_step`` is
    wrapped in the runtime's non-finite guard (``train.guarded_step``) and jitted
    over the device mesh with the state donated (``parallel.jit_train_step``), as
    ``train_and_evaluate`` does.

    Returns:
      (method, step, mesh): ``step(state, batch, rng) -> (state, metrics)``; place
      batches with ``parallel.shard_batch(batch, mesh)`` and make the first state
      with :func:`runtime_init`.
    """
    method = registry.build(config, data_lib.dataset_info(config.data))
    mesh = parallel.make_mesh()
    # with the run's XLA options (runtime.cpu_conv_fusion), as the runtime compiles it
    return method, parallel.jit_train_step(train_lib.guarded_step(method), mesh,
                                           parallel.compiler_options(config)), mesh


def runtime_init(method: Any, mesh: Any, rng: Any, batch: dict) -> Any:
    """The first TrainState, replicated over ``mesh``, as the runtime makes it."""
    init = jax.jit(method.init, out_shardings=parallel.replicated(mesh))
    return init(rng, parallel.shard_global_batch(batch, mesh))
