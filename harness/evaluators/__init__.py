"""Evaluators by name. Each takes a finished run directory and returns metrics in percent."""
from harness.evaluators.linear import linear_probe

EVALUATORS = {"linear": linear_probe}
