"""One table of the diffusion variants on digits (issue 18, part 6), from the leaderboard.

Every diffusion-family row of ``experiments/results/leaderboard_digits.json`` (same
training steps, seed and evaluation for all: see experiments/leaderboard_digits.py),
with what a diffusion table needs beside the leaderboard's columns: the sampler each
run used (its workdir's ``config.json``) and its network evaluations per sample (NFE,
from the family's own sampler registry; classifier-free guidance evaluates the network
twice per step, counted as such). Nothing is retrained or re-evaluated here; the
numbers are the leaderboard's, at its n. Usage::

    python experiments/leaderboard_digits.py --steps=500 --log_prob_samples=100   # first
    python experiments/diffusion_table_digits.py

Writes experiments/results/diffusion_digits.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import runner  # noqa: F401  (puts the repository on sys.path)

from gen_jax.config import config_from_json
from gen_jax.diffusion import edm, samplers
from gen_jax.diffusion.ode import FIXED_STEP_NFE

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
DIFFUSION = ("ddpm", "edm", "flow_matching", "vdm", "ldm", "score_sde")


def sampler_and_nfe(config) -> tuple[str, int]:
    """(the sampler as configured, network evaluations per sample)."""
    s, method = config.sampler, config.method
    if method in ("ddpm", "ldm"):
        opts = {k: s[k] for k in samplers.get_sampler(s.name).options if k in s}
        n = samplers.nfe(s.name, s.num_steps, **opts)
        guided = float(s.get("guidance", 0.0)) > 0
        name = f"{s.name} ({s.num_steps} steps{', CFG w=' + str(s.guidance) if guided else ''})"
        return name, n * (2 if guided else 1)
    if method == "edm":
        return f"{s.name} ({s.num_steps} steps)", edm.nfe(s.name, s.num_steps)
    if method == "flow_matching":
        if s.name not in FIXED_STEP_NFE:
            return f"{s.name} (adaptive)", -1
        return f"{s.name} ({s.num_steps} steps)", s.num_steps * FIXED_STEP_NFE[s.name]
    if method == "vdm":
        return f"ancestral ({s.num_steps} steps)", int(s.num_steps)
    raise ValueError(f"no NFE rule for method {method!r}")


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--leaderboard", default=str(RESULTS / "leaderboard_digits.json"))
    p.add_argument("--workdirs", default=str(REPO / "runs" / "leaderboard_digits"))
    args = p.parse_args(argv)
    board = json.loads(Path(args.leaderboard).read_text())
    rows = []
    for r in board["rows"]:
        if r.get("method") not in DIFFUSION or "metrics" not in r:
            continue
        workdir = Path(args.workdirs) / f"{Path(r['config']).stem}_{board['steps']}steps_seed{board['seed']}"
        config = config_from_json((workdir / "config.json").read_text())
        sampler, n = sampler_and_nfe(config)
        m = r["metrics"]
        rows.append({"name": r["name"], "method": r["method"], "config": r["config"], "sampler": sampler,
                     "nfe": n, "test_bpd": r.get("test_bpd"), "digits_fd": m["digits_fd"], "kid": m["kid"],
                     "precision": m["precision"], "recall": m["recall"], "num_samples": m["num_samples"],
                     "samples_per_sec": r.get("samples_per_sec"), "train_seconds": r.get("train_seconds")})
    lines = [
        "# Diffusion variants on digits",
        "",
        f"The diffusion rows of the digits leaderboard ({board['steps']} training steps each, seed "
        f"{board['seed']}; `python experiments/leaderboard_digits.py --steps={board['steps']} "
        "--log_prob_samples=100`), with each run's sampler and its network evaluations per sample "
        "(NFE; classifier-free guidance counts two per step). Table: "
        "`python experiments/diffusion_table_digits.py`. Samples/s: one compiled call drawing all "
        "samples on this machine's CPU (shared, loaded: compare within a run of the leaderboard only). "
        "test bpd: bits/dim of the 17-level test digits where the family reports one (the "
        "leaderboard's `test_log_prob`; VDM: its variational bound; flow matching: the ODE "
        "likelihood of the dequantized data; DDPM: the discrete-time VLB); `-` = not reported.",
        "",
        "| model | method | sampler | NFE | test bpd | digits-FD | KID | precision | recall | n | "
        "samples/s | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['method']} | {r['sampler']} | {r['nfe'] if r['nfe'] >= 0 else 'adaptive'} | "
            f"{_fmt(r['test_bpd'], '.3f')} | {r['digits_fd']:.1f} | {r['kid']:.2f} | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['num_samples']} | {_fmt(r['samples_per_sec'], ',.0f')} | "
            f"{_fmt(r['train_seconds'], '.0f')} |")
    (RESULTS / "diffusion_digits.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "diffusion_digits.json").write_text(json.dumps({"leaderboard": args.leaderboard,
                                                               "rows": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
