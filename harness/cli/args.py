"""Argparse building blocks every command module shares: typed numbers, the results folder,
the ``KEY=VALUE`` usage line, and ``--methods`` read into a table's rows."""

from __future__ import annotations

import argparse
import os

from harness.errors import HarnessError

DEFAULT_RESULTS = os.environ.get("HARNESS_RESULTS", "results")

OVERRIDES_EPILOG = (
    "KEY=VALUE arguments override the resolved config (train.batch_size=1024 "
    "linear.epochs=90 runtime.num_workers=10); harness config METHOD lists every key"
)


def _number(kind, low: float, what: str, high: float | None = None, strict: bool = True):
    """An argparse type: ``kind`` above ``low`` (or at it, ``strict=False``), at most ``high``."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not (v > low if strict else v >= low) or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"{text}: {what}")
        return v

    return parse


SECONDS = _number(float, 0, "give a number of seconds > 0 (or leave the option out)")
JOBS = _number(int, 0, "give at least 1 job at once")
RETRIES = _number(int, 0, "give 0 or more retries", strict=False)
RATE = _number(float, 0, "give a rate > 0")
FRACTION = _number(float, 0, "give a fraction of peak in (0, 1], e.g. 0.4 for 40 %", high=1.0)


def takes_overrides(r: argparse.ArgumentParser, fn, epilog: str = OVERRIDES_EPILOG) -> None:
    """A command whose trailing ``KEY=VALUE`` arguments ``parse_args`` gathers as overrides."""
    r.set_defaults(fn=fn, takes_overrides=True)
    r.usage = f"{r.format_usage().split(': ', 1)[1].rstrip()} [KEY=VALUE ...]"
    r.epilog = epilog


def add_table_options(r: argparse.ArgumentParser, preset: str) -> None:
    """The options that select one table's runs: the preset, the results, the rows, the seed."""
    r.add_argument("--preset", default=preset)
    r.add_argument("--results", default=DEFAULT_RESULTS)
    r.add_argument("--methods", help="comma-separated rows instead of the table's own")
    r.add_argument("--seed", type=int, default=0)


def with_rows(spec, methods: str | None):
    """A table's columns for other rows (``--methods a,b``): your own method beside the paper's,
    or an imported checkpoint (its run name, or ``NAME=import:PATH``, imported by ``run``).
    Reading the option touches nothing on disk: ``harness.run.sources`` resolves the rows."""
    if methods is None:
        return spec
    from dataclasses import replace

    from harness.checkpoints.exchange import parse_row

    rows = tuple(m.strip() for m in methods.split(",") if m.strip())
    if not rows:
        raise HarnessError(
            f"--methods {methods!r} names no method: give comma-separated names, "
            f"e.g. --methods moco_v3,moco_v3+ser (or leave it out for the table's rows)"
        )
    # Two equal rows would start two trainers writing one run folder.
    seen: dict[str, str] = {}
    for m in rows:
        key = "".join(m.split())
        if key in seen:
            raise HarnessError(
                f"--methods {methods!r} names {seen[key]!r} twice: name each row once"
            )
        seen[key] = m
    return replace(spec, rows=tuple(parse_row(m) or m for m in rows))
