"""Data parallelism: the same train steps on 1 device and on 8 fake CPU devices."""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
from conftest import PYTHON, REPO, subprocess_env

_SCRIPT = textwrap.dedent("""
    import sys, jax, numpy as np
    sys.path.insert(0, "tests")
    from conftest import tiny_vae_config
    from gen_jax import parallel, train
    from gen_jax.errors import ConfigError
    n = jax.device_count()
    assert n == int(sys.argv[2]), (n, sys.argv[2])
    cfg = tiny_vae_config(**{"train.num_steps": 4, "train.checkpoint_every": 0,
                             "data.eval_batch_size": 64, "train.ema_decay": 0.99})
    state = train.train_and_evaluate(cfg, sys.argv[1] + "/run")
    leaves = jax.tree.leaves(jax.device_get((state.params, state.ema_params, state.opt_state)))
    np.savez(sys.argv[1] + "/out.npz", *leaves)
    # The batch really is split over the devices.
    mesh = parallel.make_mesh()
    # (A replicated batch also has n shards: check each holds its own 32/n rows.)
    rows = np.arange(32 * 64, dtype=np.float32).reshape(32, 8, 8, 1)
    for put in (parallel.shard_batch, parallel.shard_global_batch):
        b = put({"x": rows}, mesh)
        shards = b["x"].addressable_shards
        assert len(shards) == n and len({s.device for s in shards}) == n
        got = sorted((int(np.asarray(s.data)[0, 0, 0, 0]) // 64, s.data.shape) for s in shards)
        assert got == [(i * 32 // n, (32 // n, 8, 8, 1)) for i in range(n)], got
        for s in shards:
            np.testing.assert_array_equal(np.asarray(s.data), rows[s.index])
        np.testing.assert_array_equal(np.asarray(b["x"]), rows)
    if n > 1:
        try:
            train.setup(tiny_vae_config(**{"data.batch_size": 12}), sys.argv[1] + "/bad")
        except ConfigError as e:
            assert "not divisible by the 8 devices" in str(e), e
        else:
            raise AssertionError("no ConfigError for batch 12 on 8 devices")
    print("OK", n)
""")


def _run(tmp_path, devices):
    out = tmp_path / f"d{devices}"
    out.mkdir()
    proc = subprocess.run([PYTHON, "-c", _SCRIPT, str(out), str(devices)], cwd=REPO,
                          env=subprocess_env(devices), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"OK {devices}" in proc.stdout
    with np.load(out / "out.npz") as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_one_device_and_eight_devices_give_the_same_parameters(tmp_path):
    one, eight = _run(tmp_path, 1), _run(tmp_path, 8)
    assert len(one) == len(eight) > 10
    for a, b in zip(one, eight, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
