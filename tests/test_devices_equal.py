"""1 device vs 8 fake CPU devices: the same train steps and evaluation for the
families whose steps hold cross-example state or randomness that sharding could
split wrongly: a GAN (two networks, D steps inside one call), BigGAN (batch-norm
statistics of the global batch, class-conditional, G EMA), a VQ-VAE with an
EMA codebook and dead-code restarts (batch-wide sums of assignments), the
improved-DDPM hybrid loss with loss-aware importance-sampled timesteps (a
history updated from the whole batch), and the runtime's ``evaluate_split``.

Also the runtime's whole training loop (``train_and_evaluate``, two steps per call) on the
tiny VAE, and the batch really split over the devices (each shard holds its own rows: a
replicated batch also has one shard per device), also k stacked batches.

One subprocess per device count (XLA_FLAGS fixes the count at start-up), both
run at once, each running every case so start-up and imports are paid once.
"""

from __future__ import annotations

import subprocess
import textwrap

import numpy as np
import pytest
from conftest import PYTHON, REPO, subprocess_env

# Tiny overrides: each model compiles and steps in about a second at -O0.
CASES = {
    "gan": ("gan_toy2d.py", {
        "model.g_hidden": (16, 16), "model.d_hidden": (16, 16), "gan.d_steps": 2,
        "data.batch_size": 64, "data.eval_batch_size": 64}),
    "vqvae_ema": ("vqvae_digits.py", {
        "model.channels": 8, "model.code_dim": 4, "model.num_codes": 8, "model.num_res": 0,
        "model.codebook": "ema", "model.restart_dead": True, "model.restart_threshold": 2.0,
        "data.batch_size": 32, "data.eval_batch_size": 32}),
    "ddpm_importance": ("ddpm_digits.py", {
        # The MLP denoiser: the loss and the sampler do not depend on the network.
        "model.arch": "mlp", "model.hidden": 32, "model.depth": 2, "model.num_timesteps": 20,
        "model.dropout": 0.1, "model.loss": "hybrid", "model.variance": "learned", "sampler.num_steps": 3,
        "model.timestep_sampler": "importance", "data.batch_size": 32, "data.eval_batch_size": 32}),
    # Class-conditional batch norm (batch statistics over the whole global batch, also
    # inside D's steps), G's EMA, spectral-norm power iterations, hierarchical latents.
    # SGD, not Adam: biases feeding a batch norm have zero gradient up to float noise,
    # which Adam scales into full-size steps of either sign (seen: G's shortcut bias).
    "biggan": ("biggan_patches.py:smoke", {
        "biggan.d_steps": 2, "biggan.ema_start": 1, "data.eval_batch_size": 32,
        **{f"{o}.{k}": v for o in ("optim", "d_optim")
           for k, v in {"name": "sgd", "learning_rate": 0.05, "b1": 0.0}.items()}}),
}
COMMON = {"train.num_steps": 3, "train.checkpoint_every": 0, "train.eval_every": 0,
          "eval.max_batches": 2, "optim.warmup_steps": 0, "optim.schedule": "constant",
          "train.ema_decay": 0.9}

_SCRIPT = textwrap.dedent("""
    import json, sys, time, jax, jax.numpy as jnp, numpy as np
    from gen_jax import data as data_lib, load_config, parallel, train
    out, devices, cases = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    assert jax.device_count() == devices, (jax.device_count(), devices)
    arrays, metrics = {}, {}
    for name, (config_file, overrides) in cases.items():
        t0 = time.perf_counter()
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        cfg = load_config("configs/" + config_file, **overrides)
        run = train.setup(cfg, out + "/" + name)
        it = data_lib.make_train_iterator(cfg, cfg.seed)
        rep = parallel.replicated(run.mesh)
        first = next(it)
        state = jax.jit(run.method.init, out_shardings=rep)(
            run.keys["init"], parallel.shard_batch(first, run.mesh))
        if name == "ddpm_importance":
            # A full loss history, so the steps draw t from the importance sampler
            # (it is uniform until every timestep has 10 losses).
            hist = state.model_state
            fake = np.random.default_rng(0).uniform(0.1, 2.0, hist["hist"].shape)
            state = state.replace(model_state=jax.device_put(
                {"hist": jnp.asarray(fake, jnp.float32), "count": jnp.full_like(hist["count"], 10)},
                rep))
        step = parallel.jit_train_step(train.guarded_step(run.method), run.mesh)
        batch = first
        for i in range(cfg.train.num_steps):
            state, m = step(state, parallel.shard_batch(batch, run.mesh),
                            jax.random.fold_in(run.keys["train"], i))
            batch = next(it)
            metrics[f"{name}/train{i}"] = {k: float(v) for k, v in jax.device_get(m).items()}
        metrics[f"{name}/eval"] = train.evaluate_split(run, state, "val", cfg.train.num_steps)
        leaves = jax.tree.leaves(jax.device_get(state))  # every sub-state, EMA, optimizer
        print(name, f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        for j, leaf in enumerate(leaves):
            if hasattr(leaf, "dtype") and np.issubdtype(np.asarray(leaf).dtype, np.number):
                arrays[f"{name}/{j}"] = np.asarray(leaf)
    # The runtime's loop on the tiny VAE; the batch split over the devices.
    sys.path.insert(0, "tests")
    from conftest import tiny_vae_config
    from gen_jax.errors import ConfigError
    # two steps per compiled call (train.steps_per_call: k batches stacked and sharded)
    cfg = tiny_vae_config(**{"train.num_steps": 4, "train.checkpoint_every": 0, "train.log_every": 2,
                             "data.eval_batch_size": 64, "train.ema_decay": 0.99,
                             "train.steps_per_call": 2})
    state = train.train_and_evaluate(cfg, out + "/vae_runtime")
    leaves = jax.tree.leaves(jax.device_get((state.params, state.ema_params, state.opt_state)))
    arrays.update({f"vae_runtime/{j}": np.asarray(leaf) for j, leaf in enumerate(leaves)})
    val = [r for r in map(json.loads, open(out + "/vae_runtime/metrics.jsonl")) if r["split"] == "val"]
    metrics["vae_runtime/eval"] = {k: v for k, v in val[-1].items() if k != "split"}
    mesh = parallel.make_mesh()
    rows = np.arange(32 * 64, dtype=np.float32).reshape(32, 8, 8, 1)
    for put in (parallel.shard_batch, parallel.shard_global_batch):
        b = put({"x": rows}, mesh)
        shards = b["x"].addressable_shards
        assert len(shards) == devices and len({s.device for s in shards}) == devices
        got = sorted((int(np.asarray(s.data)[0, 0, 0, 0]) // 64, s.data.shape) for s in shards)
        assert got == [(i * 32 // devices, (32 // devices, 8, 8, 1)) for i in range(devices)], got
        for s in shards:
            np.testing.assert_array_equal(np.asarray(s.data), rows[s.index])
        np.testing.assert_array_equal(np.asarray(b["x"]), rows)
    # k stacked batches (train.steps_per_call): each batch split along its own rows
    stacked = np.stack([rows, rows + 1e6])
    b = parallel.shard_batches({"x": stacked}, mesh)
    assert len({s.device for s in b["x"].addressable_shards}) == devices
    for s in b["x"].addressable_shards:
        assert s.data.shape == (2, 32 // devices, 8, 8, 1), s.data.shape
        np.testing.assert_array_equal(np.asarray(s.data), stacked[s.index])
    np.testing.assert_array_equal(np.asarray(b["x"]), stacked)
    if devices > 1:
        try:
            train.setup(tiny_vae_config(**{"data.batch_size": 12}), out + "/bad")
        except ConfigError as e:
            assert "not divisible by the 8 devices" in str(e), e
        else:
            raise AssertionError("no ConfigError for batch 12 on 8 devices")
    np.savez(out + "/state.npz", **arrays)
    with open(out + "/metrics.json", "w") as f:
        json.dump(metrics, f)
    print("OK", devices)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import json

    cases = {name: (file, {**COMMON, **o}) for name, (file, o) in CASES.items()}
    procs = {}
    for devices in (1, 8):
        out = tmp_path_factory.mktemp(f"devices{devices}")
        procs[devices] = (out, subprocess.Popen(
            [PYTHON, "-c", _SCRIPT, str(out), str(devices), json.dumps(cases)], cwd=REPO,
            env=subprocess_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = {}
    for devices, (out, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=400)
        assert proc.returncode == 0, stderr[-4000:]
        assert f"OK {devices}" in stdout
        with np.load(out / "state.npz") as f:
            arrays = {k: f[k] for k in f.files}
        results[devices] = arrays, json.loads((out / "metrics.json").read_text())
    return results


# Tolerances: the 8-device steps reduce gradients, losses and codebook sums over
# shards, a different float32 summation order than one device (relative error
# ~1e-7 per reduction). Three Adam steps at lr 1e-3 normalise the gradient, so a
# parameter's update can carry that relative error of a small gradient entry
# (~1e-6 absolute after three steps); metrics are means of O(1)-O(100) values.
PARAM_RTOL, PARAM_ATOL = 1e-4, 2e-5
METRIC_RTOL, METRIC_ATOL = 1e-4, 1e-5


@pytest.mark.parametrize("name", sorted(CASES) + ["vae_runtime"])
def test_train_steps_and_evaluation_match_on_one_and_eight_devices(runs, name):
    (one, one_metrics), (eight, eight_metrics) = runs[1], runs[8]
    keys = sorted(k for k in one if k.startswith(name + "/"))
    assert keys and keys == sorted(k for k in eight if k.startswith(name + "/"))
    for k in keys:
        np.testing.assert_allclose(eight[k], one[k], rtol=PARAM_RTOL, atol=PARAM_ATOL, err_msg=k)
    mkeys = sorted(k for k in one_metrics if k.startswith(name + "/"))
    assert f"{name}/eval" in mkeys
    for k in mkeys:
        assert one_metrics[k].keys() == eight_metrics[k].keys(), k
        for m, v in one_metrics[k].items():
            assert eight_metrics[k][m] == pytest.approx(v, rel=METRIC_RTOL, abs=METRIC_ATOL), (k, m)
    # The steps did something: the parameters moved away from their initial values
    # differently per step, and the evaluation saw the whole capped split.
    assert one_metrics[f"{name}/eval"]["num_examples"] > 0
    if name != "vae_runtime":
        assert one_metrics[f"{name}/train0"] != one_metrics[f"{name}/train2"]
