"""Methods registered from a user's own file, outside the package (``--plugin``)."""

import json
import subprocess
import sys

PLUGIN = """
from methods.base import AddOn
from methods.registry import register_addon


@register_addon("toy")
class Toy(AddOn):
    description = "toy: pulls the two views' [CLS] together"

    def losses(self, method, batch, online, target, progress):
        return {"loss_toy": 0.1 * (online[0].cls - online[1].cls).pow(2).mean()}
"""


def harness(*args):
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_plugin_addon_is_audited_run_and_reported(tmp_path):
    plugin = tmp_path / "toy.py"
    plugin.write_text(PLUGIN)
    p = harness("--plugin", str(plugin), "audit", "moco_v3+toy", "--preset", "micro", "--json")
    assert p.returncode == 0, p.stderr
    toy = json.loads(p.stdout)["terms"]["loss_toy"]
    assert toy["blocks.11"] > 0 and toy["projector"] == 0.0
    res = tmp_path / "results"
    p = harness(
        "--plugin",
        str(plugin),
        "run",
        "table2",
        "--methods",
        "moco_v3+toy",
        "--preset",
        "micro",
        "--cluster",
        "local",
        "--results",
        str(res),
    )
    assert p.returncode == 0, p.stderr[-2000:]
    recs = [json.loads(f.read_text()) for f in res.glob("runs/*/eval/*.json")]
    assert {r["method"] for r in recs} == {"moco_v3+toy"} and len(recs) == 4  # IN, Sketch, V2, R
    p = harness(
        "--plugin",
        str(plugin),
        "report",
        "table2",
        "--methods",
        "moco_v3+toy",
        "--results",
        str(res),
    )
    assert p.returncode == 0, p.stderr
    assert "moco\\_v3+toy" in (res / "report" / "micro" / "table2.tex").read_text()


def test_missing_plugin_is_a_one_line_error(tmp_path):
    p = harness("--plugin", str(tmp_path / "nope.py"), "methods")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "--plugin" in p.stderr
