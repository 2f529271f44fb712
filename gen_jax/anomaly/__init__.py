"""Anomaly detection and localization: the offline texture-defect benchmark
(benchmark.py), its metrics (metrics.py: image / pixel AUROC, PRO), the evaluation
entry point (evaluate.py) and DRAEM (draem.py).

Importing this package registers its Methods: "draem".
"""
from gen_jax.anomaly import draem  # noqa: F401
