"""harness/eval/departures.py: every evaluation departure is well formed, and each measure
runs on fixed tensors and returns one line with a number."""

import re

import pytest

from harness.eval.departures import EVAL_DEPARTURES
from methods.departures import DEPARTURES, measured

# Switches whose effect has no fixed-tensor measure, and why: DINO's learning rates have no
# public value to compare with; a refusal has no size; a classification and SIE's regression
# share no number.
UNMEASURED = {"linear-dino-lrs", "robustness-small-images", "transform-probe-task"}


def test_keys_are_unique_across_both_lists():
    keys = [d.key for d in DEPARTURES + EVAL_DEPARTURES]
    assert len(keys) == len(set(keys))


def test_every_switch_has_a_measure_or_a_reason():
    missing = {d.key for d in EVAL_DEPARTURES if d.other and not d.measure}
    assert missing == UNMEASURED
    for d in EVAL_DEPARTURES:
        if d.key in UNMEASURED:
            assert d.unmeasured and measured(d) == f"not measured: {d.unmeasured}"


@pytest.mark.parametrize("d", [d for d in EVAL_DEPARTURES if d.measure], ids=lambda d: d.key)
def test_each_measure_returns_one_line_with_a_number(d):
    line = measured(d)
    assert "\n" not in line and re.search(r"\d", line), line
    module, _, name = d.measure.partition(":")
    assert module.startswith("harness.eval."), "measures live beside the evaluation they measure"
