"""Every table spec runs at the micro preset and its report fills every measured cell."""

from dataclasses import replace

import pandas as pd
import pytest

import tables
from harness.report import report
from harness.run import jobs, launch

ROW = {
    "table3": "moco_v3+ser",
    "table4": "moco_v3+augself",
    "table5": "moco_v3+stl",
    "table9": "dino+ser",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ROW))
def test_table_runs_and_reports_every_column(name, tmp_path):
    spec = replace(tables.load(name), rows=(ROW[name],))
    plan = jobs.plan(spec, "micro", tmp_path, 0, jobs.default_runtime("debug", str(tmp_path), None))
    assert {(j.evaluation, j.dataset) for j in plan if j.kind == "eval"} == set(spec.evaluations)
    assert launch.run(plan, "debug", tmp_path, log=lambda *_: None)["failed"] == 0
    (csv,) = [
        p
        for p in report(
            [name],
            "micro",
            tmp_path,
            tmp_path / "out",
            check_tex=True,
            rows=lambda s: replace(s, rows=(ROW[name],)),
        )
        if p.suffix == ".csv"
    ]
    df = pd.read_csv(csv)
    got = {(r.dataset, r.metric) for r in df.itertuples() if pd.notna(r.value)}
    assert got == {(c.dataset, c.metric) for c in spec.columns}
