"""Table spec → jobs: *what* runs (where it runs is ``harness.run.launch``'s business).

One pretraining job per table row and one evaluation job per (row, evaluation, dataset),
each keyed by the hash of its resolved config, each writing one JSON. A job whose result
file exists is done and is never submitted again. Where a row's backbone comes from —
trained here, or imported — is ``harness.run.sources``'s answer; planning has one path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import config as C
from harness.config import presets
from harness.config.evaluations import EVALUATIONS, sections_read


@dataclass
class Job:
    kind: str  # "pretrain" | "eval"
    # Everything the job computes from: the run's resolved config (+ runtime) and, for an
    # evaluation, exactly the sections it reads — nothing is looked up again where it runs.
    cfg: dict
    run_dir: str
    result: str  # the JSON this job writes when it succeeds
    evaluation: str | None = None
    dataset: str | None = None
    deps: list = field(default_factory=list)  # results this job needs first
    spec: dict | None = None  # an evaluation's hashed identity (eval_spec)
    scale: str = ""  # the preset's scale in words, and the overrides that changed it

    @property
    def name(self) -> str:
        rid = C.run_id(self.cfg)
        return rid if self.kind == "pretrain" else f"{rid}:{self.evaluation}-{self.dataset}"

    def done(self) -> bool:
        return Path(self.result).exists()


def eval_spec(cfg: dict, evaluation: str, dataset: str) -> dict:
    """What an evaluation's result depends on beyond its run: every config section it reads
    (evaluation recipes merged from code defaults, preset and overrides) and its evaluator's
    version, which a change of the evaluator's math bumps."""
    from harness.eval.registry import evaluator_version

    return {
        "evaluation": evaluation,
        "dataset": dataset,
        "version": evaluator_version(evaluation, dataset),
        "sections": {s: cfg[s] for s in sections_read(evaluation, dataset)},
    }


def eval_job_config(cfg: dict, evaluation: str, dataset: str) -> dict:
    """The run's config without the evaluation sections this evaluation does not read."""
    keep = set(sections_read(evaluation, dataset))
    return {k: v for k, v in cfg.items() if k not in EVALUATIONS or k in keep}


def eval_result_path(run_dir: Path, spec: dict) -> Path:
    h = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    return Path(run_dir) / "eval" / f"{spec['evaluation']}-{spec['dataset']}-{h}.json"


def plan(
    spec,
    preset: str,
    results_dir: Path,
    seed: int = 0,
    runtime: dict | None = None,
    only: str | None = None,
    overrides: Sequence[str] = (),
) -> list[Job]:
    """Every job of a table spec at a preset: each config resolved completely here, once."""
    from harness.run.sources import source

    results_dir = Path(results_dir).resolve()
    changed = [o for o in overrides if not o.strip().startswith("runtime.")]
    scale = presets.get(preset)["scale"] + (f" (overrides: {' '.join(changed)})" if changed else "")
    jobs: list[Job] = []
    for row in spec.rows:
        src = source(row, results_dir, preset, seed, overrides, runtime or {})
        pre = Job(
            "pretrain",
            src.cfg,
            str(src.run_dir),
            str(src.run_dir / "pretrain.json"),
            scale=f"{scale}; {src.note}" if src.note else scale,
        )
        if src.trained:
            jobs.append(pre)
        if only == "pretrain":
            continue
        for evaluation, dataset in spec.evaluations:
            es = eval_spec(src.cfg, evaluation, dataset)
            if not src.trained:
                # One folder serves every preset: the result is keyed by the preset's config too.
                es["run"] = C.config_hash(src.cfg)
            res = eval_result_path(src.run_dir, es)
            jobs.append(
                Job(
                    "eval",
                    eval_job_config(src.cfg, evaluation, dataset),
                    str(src.run_dir),
                    str(res),
                    evaluation,
                    dataset,
                    [pre.result],
                    es,
                    pre.scale,
                )
            )
    return jobs


def planned_results(
    spec, preset: str, results_dir: Path, overrides: Sequence[str] = ()
) -> list[Job]:
    """The jobs whose result files hold a table's numbers at ``preset``: what ``report`` reads
    (the planner alone knows where each result lives)."""
    return plan(spec, preset, results_dir, overrides=overrides)
