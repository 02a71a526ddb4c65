"""Evaluators by name. Each takes a finished run directory and returns metrics in percent
(cosine scores, R² and rank distances in their own units)."""
from harness.evaluators.equivariance import run_equivariance
from harness.evaluators.finetune import run_finetune
from harness.evaluators.knn import knn_eval
from harness.evaluators.linear import linear_probe
from harness.evaluators.mlp import run_mlp_probe
from harness.evaluators.transform_probe import run_transform_probe
from harness.evaluators.tsne import run_tsne

EVALUATORS = {
    "linear": linear_probe,
    "knn": knn_eval,
    "mlp": run_mlp_probe,
    "finetune": run_finetune,
    "equivariance": run_equivariance,
    "transform_probe": run_transform_probe,
    "tsne": run_tsne,
}
