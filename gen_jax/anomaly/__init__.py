"""Anomaly detection and localization: the offline texture-defect benchmark
(benchmark.py), its metrics (metrics.py: image / pixel AUROC, PRO), the evaluation
entry point (evaluate.py), DRAEM (draem.py), GANomaly (ganomaly.py), f-AnoGAN
(fanogan.py), FastFlow and DifferNet on frozen features (feature_flow.py) and their
PaDiM baseline (padim.py).

Importing this package registers its Methods: "draem", "ganomaly", "fanogan", "fastflow",
"differnet", "padim".
"""
from gen_jax.anomaly import draem, fanogan, feature_flow, ganomaly, padim  # noqa: F401
