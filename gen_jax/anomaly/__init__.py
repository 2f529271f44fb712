"""Anomaly detection and localization: the offline texture-defect benchmark
(benchmark.py), its metrics (metrics.py: image / pixel AUROC, PRO), the evaluation
entry point (evaluate.py), DRAEM (draem.py), GANomaly (ganomaly.py) and f-AnoGAN
(fanogan.py).

Importing this package registers its Methods: "draem", "ganomaly", "fanogan".
"""
from gen_jax.anomaly import draem, fanogan, ganomaly  # noqa: F401
