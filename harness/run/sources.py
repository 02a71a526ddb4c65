"""Where a table row's backbone comes from: a pretraining planned here, or a checkpoint
``harness import`` (or ``harness run``'s import step) turned into a run folder. Either way the
planner gets one ``Source``: the row's resolved config, its run folder, and whether its
pretraining is a job to run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from harness import config as C
from harness.checkpoints.exchange import (
    ImportRow,
    import_row,
    imported_config,
    is_imported,
    job_config,
)
from harness.errors import HarnessError


@dataclass(frozen=True)
class Source:
    cfg: dict
    run_dir: Path
    trained: bool  # True: its pretraining is a planned job; False: imported, already done
    note: str = ""  # what the row's scale line adds


def source(
    row: str, results_dir: Path, preset: str, seed: int, overrides: Sequence[str], runtime: dict
) -> Source:
    """The source of table row ``row`` (a method, or the name of an imported run)."""
    stored = imported_config(results_dir, row)
    if stored is None:
        cfg = C.with_runtime(C.resolve(row, preset, seed, overrides=overrides), **runtime)
        return Source(cfg, results_dir / "runs" / C.run_id(cfg), True)
    # Its run folder is its name and its pretraining is done: only its evaluations are
    # planned, at this preset's recipes.
    cfg = C.with_runtime(job_config(stored, preset, seed, overrides), **runtime)
    run_dir = results_dir / "runs" / row
    if not (run_dir / "pretrain.json").exists():
        raise HarnessError(
            f"{run_dir} is an import without pretrain.json: delete the folder and run "
            f"harness import again"
        )
    return Source(cfg, run_dir, False, f"{row}: imported, its own ViT at this preset's image size")


def prepare_rows(spec, results_dir, importing: bool = False):
    """``spec`` with every row a name the planner knows: a method, or an imported run. A
    ``NAME=import:PATH`` row is imported here when ``importing`` (``harness run``'s import
    step, before planning), else it must be imported from that file already."""
    from methods.registry import parse

    names = []
    for row in spec.rows:
        if isinstance(row, ImportRow):
            if not is_imported(row, results_dir):
                if not importing:
                    raise HarnessError(
                        f"row '{row.name}=import:{row.path}': {row.name} is not imported from "
                        f"that file in {results_dir}: harness run imports it, or run harness "
                        f"import {row.name} {row.path} --format F first"
                    )
                import_row(row, results_dir)
            names.append(row.name)
            continue
        if imported_config(results_dir, row) is None:
            parse(row)  # an unknown name fails here, before anything runs
        names.append(row)
    return replace(spec, rows=tuple(names))
