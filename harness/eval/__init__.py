"""Evaluations of a finished run: metrics and heads on tensors at the bottom; the evaluation
backbone, transforms, the cached feature extractor and the ImageNet head in the middle; one
leaf module per evaluator on top, dispatched by ``harness.eval.registry``."""
