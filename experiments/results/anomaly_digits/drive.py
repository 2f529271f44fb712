"""experiments/one_class_digits.py with its MODELS replaced by the `:digits` variants of the
DRAEM and frozen-feature configs (as experiments/results/anomaly_gan/one_class_digits.md
drove it for GANomaly / f-AnoGAN). Run from the repository root; every flag is
one_class_digits.py's (``--models`` picks among the five names below).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # experiments/
import one_class_digits as o  # noqa: E402

o.MODELS.clear()
o.MODELS.update({"DRAEM": ("draem_brick.py:digits", {}),
                 "PaDiM": ("padim_brick.py:digits", {}),
                 "feature kNN": ("feature_knn_brick.py:digits", {}),
                 "DifferNet": ("differnet_brick.py:digits", {}),
                 "FastFlow": ("fastflow_brick.py:digits", {})})

if __name__ == "__main__":
    o.main(sys.argv[1:])
