"""The job API in one import for callers that plan, run and read jobs together:
``planning`` (what runs), ``execute`` (running one), ``results`` (reading one back)."""

from harness.run.execute import default_runtime, execute
from harness.run.planning import (
    Job,
    eval_job_config,
    eval_result_path,
    eval_spec,
    plan,
    planned_results,
)
from harness.run.results import load_results, read_result, result_problem

__all__ = [
    "Job",
    "default_runtime",
    "eval_job_config",
    "eval_result_path",
    "eval_spec",
    "execute",
    "load_results",
    "plan",
    "planned_results",
    "read_result",
    "result_problem",
]
