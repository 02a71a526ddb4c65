"""Instruments that need no data: the gradient audit, FLOPs and parameter counts."""
