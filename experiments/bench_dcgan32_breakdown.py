"""Why the 32x32 DCGAN row of experiments/bench_vs_pytorch.py is a tie (issue 19): where
each side's step time goes.

    pip install torch==2.13.0   # benchmark-only
    OMP_WAIT_POLICY=PASSIVE python experiments/bench_dcgan32_breakdown.py [--rounds 5]
        [--conv_impl auto|im2col|lax|lax_wdot] [--out FILE]

Builds both sides of the ``dcgan_cifar10`` row exactly as bench_vs_pytorch.py does (the
runtime's jitted step; PyTorch eager with the same networks, losses and Adam), then
  1. times them interleaved (medians of ``--rounds`` rounds of one step each);
  2. counts the step's floating-point work from XLA's cost analysis of the compiled
     gen_jax step (the PyTorch step runs the same layers: parameter counts match) and
     gives each side's achieved GFLOP/s;
  3. profiles the PyTorch step (torch.profiler, CPU) and reports the share of its time in
     convolution operators (forward and backward) against everything else (optimizer,
     elementwise, framework overhead);
  4. measures what a plain float32 matrix product (2048 x 2048) reaches in each
     framework on this CPU, the yardstick for the GFLOP/s above.
``--conv_impl`` other than "auto" makes every gen_jax convolution use that formulation
(gen_jax.nn.conv.choose_impl replaced for the run), to see what the rule's choice costs
on this machine. Writes experiments/results/bench_dcgan32_breakdown.md (or ``--out``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import bench_vs_pytorch as B  # noqa: E402  (puts the repository on sys.path)
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gen_jax import parallel  # noqa: E402
from gen_jax import train as train_lib  # noqa: E402
from gen_jax.nn import conv as conv_lib  # noqa: E402


def timed(call) -> float:
    t0 = time.perf_counter()
    call()
    return (time.perf_counter() - t0) * 1e3


def step_flops(config, info, method) -> float:
    """XLA's cost analysis of the compiled runtime step (what jax_side times)."""
    mesh = parallel.make_mesh()
    rng = np.random.default_rng(0)
    bs = config.data.batch_size
    host = {"x": rng.random((bs, *info.shape)).astype(np.float32)}
    state = jax.jit(method.init, out_shardings=parallel.replicated(mesh))(
        jax.random.key(0), parallel.shard_global_batch(host, mesh))
    fn = parallel.jit_train_step(train_lib.guarded_step(method), mesh, parallel.compiler_options(config))
    compiled = fn.lower(state, parallel.shard_batch(host, mesh), jax.random.key(1)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def gemm_gflops(rounds: int) -> tuple[float, float]:
    """GFLOP/s of a 2048 x 2048 float32 matrix product: (XLA, PyTorch), medians."""
    n = 2048
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    xa = jax.device_put(a)
    mm = jax.jit(lambda u: u @ u)
    jax.block_until_ready(mm(xa))
    ta = torch.from_numpy(a)
    ta @ ta
    tj = statistics.median(timed(lambda: jax.block_until_ready(mm(xa))) for _ in range(rounds))
    tt = statistics.median(timed(lambda: ta @ ta) for _ in range(rounds))
    return 2 * n**3 / 1e6 / tj, 2 * n**3 / 1e6 / tt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--conv_impl", default="auto", choices=conv_lib.CONV_IMPLS)
    ap.add_argument("--out", default=str(B.REPO / "experiments" / "results" / "bench_dcgan32_breakdown.md"))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    if args.conv_impl != "auto":
        conv_lib.choose_impl = lambda *_: args.conv_impl
    config, info, method = B.build("dcgan_cifar10.py", {})
    call_j, n_j, _ = B.jax_side(config, info, method, "gan")
    call_t, n_t = B.torch_side(config, info, "gan")
    assert n_j == n_t, (n_j, n_t)
    call_t()
    tj, tt = [], []
    for _ in range(args.rounds):
        tj.append(timed(call_j))
        tt.append(timed(call_t))
    mj, mt = statistics.median(tj), statistics.median(tt)
    flops = step_flops(config, info, method)
    gemm_j, gemm_t = gemm_gflops(args.rounds)

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            call_t()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower() or "mkldnn" in e.key.lower())
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]

    lines = [
        "# Where the 32x32 DCGAN step's time goes (gen_jax vs PyTorch eager, CPU)",
        "",
        f"- date {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}; "
        f"jax {jax.__version__}, torch {torch.__version__}; {os.cpu_count()} cores; torch threads "
        f"{torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        "- command: `python experiments/bench_dcgan32_breakdown.py"
        + (f" --rounds {args.rounds}" if args.rounds != 5 else "")
        + (f" --conv_impl {args.conv_impl}" if args.conv_impl != "auto" else "") + "`",
        f"- one outer step (one D update, one G update), batch {config.data.batch_size}, "
        f"{n_j:,} parameters on both sides; medians of {args.rounds} interleaved rounds",
        "",
        "| | gen_jax | PyTorch eager |",
        "| --- | --- | --- |",
        f"| ms per step | {mj:.1f} | {mt:.1f} |",
        f"| GFLOP per step (XLA cost analysis of the gen_jax step) | {flops / 1e9:.2f} | same layers |",
        f"| achieved GFLOP/s | {flops / 1e6 / mj:.1f} | {flops / 1e6 / mt:.1f} |",
        f"| 2048 x 2048 float32 matrix product, GFLOP/s | {gemm_j:.1f} | {gemm_t:.1f} |",
        "",
        f"PyTorch profile (2 steps, self CPU time): convolution operators {100 * conv / total:.1f}% "
        f"of {total / 1e3:.0f} ms; the largest operators:",
        "",
        "| operator | self CPU ms (2 steps) | share |",
        "| --- | --- | --- |",
        *[f"| `{e.key}` | {e.self_cpu_time_total / 1e3:.1f} | {100 * e.self_cpu_time_total / total:.1f}% |"
          for e in top],
        "",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
