"""Anomaly detection and localization: the offline texture-defect benchmark
(benchmark.py), its metrics (metrics.py: image / pixel AUROC, PRO), the evaluation
entry point (evaluate.py), DRAEM (draem.py), GANomaly (ganomaly.py), f-AnoGAN
(fanogan.py), FastFlow and DifferNet on frozen features (feature_flow.py), their
PaDiM baseline (padim.py) and the nearest-neighbour patch distance (knn.py).

Importing this package registers its Methods: "draem", "ganomaly", "fanogan", "fastflow",
"differnet", "padim", "feature_knn".
"""
from gen_jax.anomaly import draem, fanogan, feature_flow, ganomaly, knn, padim  # noqa: F401
