"""Benchmarks: ratios measured in one process against a baseline measured in the same run
(never absolute times in tests). ``step``: training steps of several methods interleaved."""
