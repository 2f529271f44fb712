"""One short accelerator benchmark: compile time, step time, throughput, peak memory and MFU.

    python experiments/gpu_bench.py --out experiments/results/gpu_bench        # on a GPU, <= 8 min
    python experiments/gpu_bench.py --smoke --out /tmp/gb                       # tiny sizes, any device

Workloads (each built by the runtime: ``registry.build`` of a ``configs/`` file with
overrides, its ``train_step`` wrapped in the runtime's non-finite guard and jitted with
the state donated, as ``train_and_evaluate`` does; see experiments/runner.py):

- ``vae_digits``: the default job's conv VAE on 8x8 digits, batch 128, float32.
- ``ddpm_cifar10_f32`` / ``ddpm_cifar10_bf16``: the DDPM CIFAR-10 UNet (35.7M
  parameters, configs/ddpm_cifar10.py) train step at batch 128, ``runtime.precision``
  float32 / bfloat16 (the mixed-precision policy of every family, gen_jax/nn/precision.py:
  bf16 compute, float32 parameters, optimizer state and losses).
- ``ddpm_sample_bf16``: the same UNet's 1000-step ancestral DDPM sampler on 256 images
  (bfloat16), one compiled call (the issue's anchor: 17 s on a TPU v3-8).
- ``dcgan_cifar10``: DCGAN 32x32 (configs/dcgan_cifar10.py), one outer step (1 D + 1 G
  update), batch 128.
- ``pixelcnn_sample``: PixelCNN (configs/pixelcnn_digits.py) pixel-by-pixel sampling of
  64 8x8 images, one compiled call.

Each workload runs under ``runtime.precision`` = its dtype column (table WORKLOADS),
in its own child process with a hard wall-clock limit
(``--limit``), so one slow compile cannot eat the run, and its peak memory is its own.
Per workload: compile seconds (``lower().compile()``), the median of ``--steps`` timed
calls after ``--warmup`` calls (each ``block_until_ready``), examples/s, the device's
peak bytes in use (``memory_stats()['peak_bytes_in_use']``, absent on CPU), FLOPs per
call from the compiled program's ``cost_analysis()`` and MFU = FLOPs / step time /
the device's peak for the compute dtype (table PEAK_FLOPS below; "unknown device" when
the device kind is not in it, e.g. every CPU). Writes ``<out>/gpu_bench.json`` and
``<out>/gpu_bench.md`` with date, device kind, JAX version and the command.

Data are random batches of the config's shape (step time does not depend on the
values); the tfds datasets need not be on disk (the DataInfo is given here).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Dense (no sparsity) peak FLOP/s by device kind substring, per compute dtype. float32 on
# NVIDIA Ampere/Hopper: XLA's default precision runs f32 dots and convs on TF32 tensor
# cores, so the "float32" MFU uses the TF32 peak; "float32_cuda_cores" is the non-tensor
# FP32 peak, reported as a second column. Sources: NVIDIA H200 datasheet / product page
# (nvidia.com/en-us/data-center/h200/: H200 SXM BF16 1,979 TFLOPS and TF32 989 TFLOPS
# "with sparsity", i.e. 989.5 / 494.7 dense; FP32 67 TFLOPS; H200 NVL 1,671 / 835 sparse,
# 60 FP32); H100 SXM datasheet (same tensor peaks as H200 SXM); A100 datasheet (BF16 312,
# TF32 156, FP32 19.5 TFLOPS dense).
PEAK_FLOPS = {
    "H200 NVL": {
        "bfloat16": 835.5e12,
        "float32": 417.5e12,
        "float32_cuda_cores": 60e12,
        "source": "NVIDIA H200 NVL datasheet, dense (half the 'with sparsity' figures)",
    },
    "H200": {
        "bfloat16": 989.5e12,
        "float32": 494.7e12,
        "float32_cuda_cores": 67e12,
        "source": "NVIDIA H200 SXM datasheet, dense (half the 'with sparsity' figures)",
    },
    "H100": {
        "bfloat16": 989.5e12,
        "float32": 494.7e12,
        "float32_cuda_cores": 67e12,
        "source": "NVIDIA H100 SXM datasheet, dense",
    },
    "A100": {
        "bfloat16": 312e12,
        "float32": 156e12,
        "float32_cuda_cores": 19.5e12,
        "source": "NVIDIA A100 datasheet, dense",
    },
}

# --smoke: the UNet's train step alone compiles for ~40 s on the 2-core CPU even at 8x8,
# ch 8, so the smoke run swaps in the configs' own smoke denoiser (a tiny MLP, as
# configs/ddpm_cifar10.py's smoke variant does): it checks the script, not the UNet
# (tests/diffusion cover the UNet; tests/nn/test_precision.py its bf16 step).
_DDPM_SMOKE = {"data.batch_size": 4, "model.arch": "mlp", "model.hidden": 16, "model.depth": 1}

# name -> (config file, overrides, what is timed, runtime.precision, smoke overrides)
WORKLOADS = {
    "vae_digits": ("vae_digits.py", {"data.batch_size": 128}, "train", "float32", {"data.batch_size": 8}),
    "ddpm_cifar10_f32": (
        "ddpm_cifar10.py",
        {"data.batch_size": 128},
        "train",
        "float32",
        _DDPM_SMOKE,
    ),
    "ddpm_cifar10_bf16": (
        "ddpm_cifar10.py",
        {"data.batch_size": 128},
        "train",
        "bfloat16",
        _DDPM_SMOKE,
    ),
    "ddpm_sample_bf16": (
        "ddpm_cifar10.py",
        {"sampler.name": "ddpm", "sampler.num_steps": 1000, "sample.num": 256},
        "sample",
        "bfloat16",
        {**_DDPM_SMOKE, "model.num_timesteps": 20, "sampler.num_steps": 20, "sample.num": 4},
    ),
    "dcgan_cifar10": (
        "dcgan_cifar10.py",
        {"data.batch_size": 128},
        "train",
        "float32",
        {"data.batch_size": 8, "model.g_channels": (16, 8, 8), "model.d_channels": (8, 8, 16)},
    ),
    "pixelcnn_sample": (
        "pixelcnn_digits.py",
        {"sample.num": 64},
        "sample",
        "float32",
        {"sample.num": 4, "model.features": 8, "model.num_layers": 1, "model.head_features": 8},
    ),
}
# DataInfo of the tfds datasets (not read: the batches are random)
TFDS_INFO = {"tfds:cifar10": ((32, 32, 3), 256, 10), "tfds:mnist": ((28, 28, 1), 256, 10)}


_SMOKE_NOTE = "SMOKE RUN (tiny sizes, not a measurement of the real workloads)"


def peak_for(kind: str) -> dict | None:
    for key, peak in PEAK_FLOPS.items():  # "H200 NVL" before "H200"
        if key.lower() in kind.lower():
            return {"match": key, **peak}
    return None


def _flops(compiled) -> float | None:
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    if not ca or "flops" not in ca:
        return None
    return float(ca["flops"])


def run_workload(name: str, smoke: bool, steps: int, warmup: int) -> dict:
    """Builds, compiles and times one workload in this process; returns its row."""
    sys.path[:0] = [str(REPO), str(REPO / "experiments")]
    import jax
    import numpy as np

    from gen_jax import load_config, parallel, registry
    from gen_jax import train as train_lib
    from gen_jax.data import DataInfo, dataset_info

    config_file, overrides, what, dtype, smoke_overrides = WORKLOADS[name]
    overrides = {**overrides, "runtime.precision": dtype}
    num = overrides.pop("sample.num", None)
    if smoke:
        smoke_overrides = dict(smoke_overrides)
        num = smoke_overrides.pop("sample.num", num)
        overrides.update(smoke_overrides)
    config = load_config(REPO / "configs" / config_file, **overrides)
    if config.data.name in TFDS_INFO:
        shape, levels, classes = TFDS_INFO[config.data.name]
        if smoke:  # 8x8 images: compiles in seconds on CPU
            shape = (8, 8, shape[2])
        info = DataInfo(config.data.name, "image", shape, levels, classes)
    else:
        info = dataset_info(config.data)
    method = registry.build(config, info)
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(0)
    bs = config.data.batch_size
    lo, hi = tuple(config.data.value_range)
    host = {"x": (lo + (hi - lo) * rng.random((bs, *info.shape))).astype(np.float32)}
    if getattr(method.info, "num_classes", None):
        host["y"] = rng.integers(0, info.num_classes, bs).astype(np.int32)
    init = jax.jit(method.init, out_shardings=parallel.replicated(mesh))
    state = init(jax.random.key(0), parallel.shard_global_batch(host, mesh))
    n_params = int(
        sum(
            np.size(p)
            for p in jax.tree.leaves(
                state.params if hasattr(state, "params") else (state.g.params, state.d.params)
            )
        )
    )
    jax.block_until_ready(state)
    key = jax.random.key(2)

    if what == "train":
        # the runtime's XLA options (None on a GPU)
        fn = parallel.jit_train_step(train_lib.guarded_step(method), mesh, parallel.compiler_options(config))
        batch = parallel.shard_batch(host, mesh)
        t0 = time.perf_counter()
        compiled = fn.lower(state, batch, key).compile()
        compile_s = time.perf_counter() - t0

        def call(i, st):
            st, m = compiled(st, batch, jax.random.fold_in(key, i))
            return st, (st, m)

        examples = bs
    else:
        fn = jax.jit(lambda st, r: method.sample(st, r, num))
        t0 = time.perf_counter()
        compiled = fn.lower(state, key).compile()
        compile_s = time.perf_counter() - t0

        def call(i, st):
            return st, compiled(st, jax.random.fold_in(key, i))

        examples = num
    flops = _flops(compiled)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        state, out = call(i, state)
        jax.block_until_ready(out)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    dev = jax.devices()[0]
    try:
        mem = dev.memory_stats() or {}
    except Exception:  # noqa: BLE001
        mem = {}
    row = {
        "workload": name,
        "timed": what,
        "config": config_file,
        "overrides": overrides,
        "dtype": dtype,
        "examples_per_call": examples,
        "params": n_params,
        "compile_s": round(compile_s, 3),
        "step_ms_median": round(1e3 * step_s, 3),
        "step_ms_all": [round(1e3 * t, 3) for t in times],
        "examples_per_s": round(examples / step_s, 2),
        "peak_bytes_in_use": mem.get("peak_bytes_in_use"),
        "flops_per_call": flops,
    }
    if what == "sample" and "ddpm" in name:
        row["sampler_steps"] = int(config.sampler.num_steps)
    peak = peak_for(dev.device_kind)
    if flops is not None and peak is not None:
        row["tflops_per_s"] = round(flops / step_s / 1e12, 3)
        row["mfu"] = round(flops / step_s / peak[dtype], 4)
        if dtype == "float32":
            row["mfu_vs_fp32_cuda_cores"] = round(flops / step_s / peak["float32_cuda_cores"], 4)
    elif flops is not None:
        row["tflops_per_s"] = round(flops / step_s / 1e12, 4)
        row["mfu"] = None  # unknown device: no peak to divide by
    return row


def _markdown(result: dict) -> str:
    peak = result["peak"]
    lines = [
        "# gen_jax accelerator benchmark",
        "",
        f"- date: {result['date']}",
        f"- device: {result['device_kind']} "
        f"({result['platform']}, {result['device_count']} device(s); host {result['host']})",
        f"- jax {result['jax_version']}, jaxlib {result['jaxlib_version']}",
        f"- command: `{result['command']}`",
        "- peak FLOP/s used for MFU: "
        + (
            f"{peak['match']}: bf16 {peak['bfloat16'] / 1e12:.1f}, f32 (TF32 tensor cores) "
            f"{peak['float32'] / 1e12:.1f}, FP32 CUDA cores {peak['float32_cuda_cores'] / 1e12:.1f} "
            f"TFLOP/s ({peak['source']})"
            if peak
            else "unknown device (not in PEAK_FLOPS): MFU not computed"
        ),
        f"- {_SMOKE_NOTE if result['smoke'] else 'full sizes'}; "
        f"median of {result['steps']} calls after {result['warmup']} warm-up call(s), "
        f"per-workload limit {result['limit_s']} s",
        "",
        "| workload | timed | dtype | params | batch / images | compile s | ms / call | examples/s "
        "| TFLOP/s | MFU | peak memory GiB | status |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['workload']} | | | | | | | | | | | {r.get('status')} |")
            continue
        mem = r.get("peak_bytes_in_use")
        mfu = r.get("mfu")
        lines.append(
            f"| {r['workload']} | {r['timed']} | {r['dtype']} | {r['params']:,} | {r['examples_per_call']} | "
            f"{r['compile_s']:.1f} | {r['step_ms_median']:.2f} | {r['examples_per_s']:,.1f} | "
            f"{r.get('tflops_per_s', '') if r.get('tflops_per_s') is not None else ''} | "
            f"{'' if mfu is None else f'{100 * mfu:.1f}%'} | "
            f"{'n/a' if mem is None else f'{mem / 2**30:.2f}'} | ok |"
        )
    lines += [
        "",
        "Goals (issue 19): DDPM CIFAR-10 UNet bf16 train >= 2,700 img/s at batch 128; "
        "1000-step sampling of 256 images < 8 s (anchors: TPU v3-8, 2,700 img/s and 17 s).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory for gpu_bench.json / gpu_bench.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU check of the script)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed calls (default 20; smoke 3; sampling workloads use a third of it, at least 3)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls after compiling (default 2; smoke 1)"
    )
    parser.add_argument(
        "--limit",
        type=float,
        default=None,
        help="hard wall-clock seconds per workload (default 110; smoke: 300 for all of them, one child)",
    )
    args = parser.parse_args(argv)
    steps = args.steps or (3 if args.smoke else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 2)
    limit = args.limit or (300.0 if args.smoke else 110.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    t_all = time.perf_counter()
    # One child process per workload, each under a hard wall-clock limit (its peak memory
    # is then its own); --smoke runs them all in one child (process start-up dominates).
    groups = [args.workloads] if args.smoke else [[n] for n in args.workloads]
    for group in groups:
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            ",".join(group),
            str(int(args.smoke)),
            str(steps),
            str(warmup),
        ]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=REPO)
            stdout, failure = proc.stdout, None if proc.returncode == 0 else f"failed (rc {proc.returncode})"
            err = proc.stderr
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err, failure = "", f"timed out after {limit:.0f} s"
        done = {}
        for line in stdout.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                done[r["workload"]] = {**r, "status": "ok"}
        for name in group:
            if name in done:
                row = done[name]
            else:
                tail = (err.strip().splitlines() or [""])[-1][:200]
                row = {"workload": name, "status": f"{failure or 'no result'}{': ' + tail if tail else ''}"}
            row["wall_s"] = round(time.perf_counter() - t0, 1)  # since the child started
            print(json.dumps(row), flush=True)
            rows.append(row)

    # Imported only now, and without preallocating, so the parent never holds the device
    # memory the workers need.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import jaxlib

    dev = jax.devices()[0]
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(
            shlex.quote(a)
            for a in [
                "python",
                os.path.relpath(__file__, Path.cwd())
                if Path(__file__).is_relative_to(Path.cwd())
                else __file__,
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "device_kind": dev.device_kind,
        "platform": dev.platform,
        "device_count": jax.device_count(),
        "host": platform.node() + " / " + (platform.processor() or platform.machine()),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "smoke": args.smoke,
        "steps": steps,
        "warmup": warmup,
        "limit_s": limit,
        "peak": peak_for(dev.device_kind),
        "total_s": round(time.perf_counter() - t_all, 1),
        "rows": rows,
    }
    (out / "gpu_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "gpu_bench.md").write_text(_markdown(result))
    print(f"wrote {out / 'gpu_bench.json'} and {out / 'gpu_bench.md'} ({result['total_s']} s)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, names, smoke, n_steps, n_warm = sys.argv
        for name in names.split(","):
            n = int(n_steps) if WORKLOADS[name][2] == "train" else max(3, int(n_steps) // 3)
            print(json.dumps(run_workload(name, smoke == "1", n, int(n_warm))), flush=True)
    else:
        main()
