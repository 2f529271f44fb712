"""Retrains the offline digits feature network and writes its weights (one deterministic command).

    python -m gen_jax.metrics.train_digits_cnn               # rewrites metrics/assets/digits_cnn.npz
    python -m gen_jax.metrics.train_digits_cnn /tmp/cnn.npz  # somewhere else

The recipe (seed, steps, optimizer) is in :mod:`gen_jax.metrics.digits_features`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gen_jax.metrics.digits_features import ASSET, save_params, train_digits_cnn


def main(argv: list[str]) -> None:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].startswith("-")):
        raise SystemExit(__doc__)
    out = Path(argv[1]) if len(argv) > 1 else ASSET
    params, info = train_digits_cnn()
    save_params(out, params, info)
    print(f"wrote {out}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in info.items()))


if __name__ == "__main__":
    main(sys.argv)
