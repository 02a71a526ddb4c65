"""Methods registered from a user's own file, outside the package (``--plugin``)."""

import json
import math

import pytest

from harness import cli
from harness import config as C
from harness.errors import HarnessError
from methods import registry
from tests.helpers import harness

PLUGIN = """
from methods.base import AddOn
from methods.registry import register_addon


@register_addon("toy")
class Toy(AddOn):
    description = "toy: pulls the two views' [CLS] together"

    def losses(self, method, batch, online, target, progress):
        return {"loss_toy": 0.1 * (online[0].cls - online[1].cls).pow(2).mean()}
"""


@pytest.mark.slow
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


@pytest.mark.slow
def test_missing_plugin_is_a_one_line_error(tmp_path):
    p = harness("--plugin", str(tmp_path / "nope.py"), "methods")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "--plugin" in p.stderr


# README's "Adding a method": a base method is one class in one file.
SIMSIAM = """
import torch.nn.functional as F

from harness.data.augment import BILINEAR
from harness.data.pipelines import SSLAugmentation
from methods.base import Method
from methods.heads import moco_mlp
from methods.registry import register_base


@register_base("simsiam")
class SimSiam(Method):
    description = "SimSiam: predictor + stop-gradient, no negatives"
    # Crop scale, interpolation, blur p and solarize p of view 1 / view 2 (MoCo-v3's).
    augmentation = SSLAugmentation((0.08, 1.0), BILINEAR, (1.0, 0.1), (0.0, 0.2))
    # Head widths at paper scale; self.width scales them to the preset.
    proj_width, pred_width = 2048, 512
    recipe = {
        "base_lr": 5e-4,
        "lr_batch_scaling": True,
        "weight_decay": 0.05,
        "warmup_epochs": 10,
        "clip": None,
    }

    def build_heads(self):
        d, h = self.width(self.proj_width), self.width(self.pred_width)
        self.projector = moco_mlp(3, self.backbone.width, d, d)
        self.predictor = moco_mlp(2, d, h, d, last_bn=False)

    def invariance_loss(self, online, target, progress):
        z1, z2 = (self.projector(o.cls) for o in online)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        d = lambda p, z: -F.cosine_similarity(p, z.detach()).mean()
        return 0.5 * (d(p1, z2) + d(p2, z1))
"""


@pytest.fixture
def isolated_registry(monkeypatch):
    """Plugins loaded in this process, and the environment ``--plugin`` exports, are undone
    after the test: other tests see only the built-in methods."""
    registry.parse("moco_v3")  # the built-ins first
    monkeypatch.setattr(registry, "BASES", dict(registry.BASES))
    monkeypatch.setattr(registry, "ADDONS", dict(registry.ADDONS))
    monkeypatch.setattr(registry, "_loaded", set(registry._loaded))
    monkeypatch.setenv(registry.PLUGIN_ENV, "")


def test_a_base_method_from_a_user_file_runs_with_ser(tmp_path, isolated_registry):
    plugin = tmp_path / "simsiam.py"
    plugin.write_text(SIMSIAM)
    res = tmp_path / "results"
    name = "simsiam+ser@tau0.2@lambda1"
    argv = ["--plugin", str(plugin), "run", "table2", "--methods", name, "--preset", "micro"]
    assert cli.main([*argv, "--cluster", "debug", "--only", "pretrain", "--results", str(res)]) == 0
    (log,) = res.rglob("log.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("loss", "loss_inv", "loss_equiv"))
    # Its heads are its own paper widths × the micro preset's factor, at least 16 wide.
    m = C.build_method(C.resolve(name, "micro"))
    assert (
        m.augmentation.scale == (0.08, 1.0) and str(m.augmentation) == "crops (0.08, 1.0), bilinear"
    )
    f = m.width_factor
    assert m.projector[0].out_features == max(16, round(2048 * f))
    assert m.predictor[0].out_features == max(16, round(512 * f))


def test_an_addon_refuses_a_base_it_has_no_hyper_parameters_for(
    tmp_path, isolated_registry, capsys
):
    plugin = tmp_path / "simsiam.py"
    plugin.write_text(SIMSIAM)
    registry.load_plugins([plugin])
    with pytest.raises(HarnessError, match="ser has no τ/λ for base 'simsiam'"):
        registry.parse("simsiam+ser@tau0.2")  # λ still missing
    with pytest.raises(HarnessError, match=r"simsiam\+essl@lambda"):
        registry.parse("simsiam+essl")
    registry.parse("simsiam+essl@lambda0.4")
    registry.parse("simsiam+delayed_cls")  # no loss, nothing to name
    argv = ["--plugin", str(plugin), "audit", "simsiam+ser", "--preset", "micro"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "ser has no τ/λ for base 'simsiam'" in err and "simsiam+ser@tau0.2@lambda1" in err


def test_a_base_method_in_the_old_style_is_a_one_line_error(tmp_path, isolated_registry):
    plugin = tmp_path / "old.py"
    plugin.write_text(
        SIMSIAM.replace("simsiam", "old").replace(
            "augmentation = SSLAugmentation(", 'augmentation = "moco_v3"  # ('
        )
    )
    with pytest.raises(HarnessError, match="SSLAugmentation") as e:
        registry.load_plugins([plugin])
    assert "\n" not in str(e.value)
    plugin = tmp_path / "old_dims.py"
    plugin.write_text(
        SIMSIAM.replace("simsiam", "old_dims").replace(
            "def build_heads(self):", "def build_heads(self, dims):"
        )
    )
    with pytest.raises(HarnessError, match="takes no dims"):
        registry.load_plugins([plugin])


def test_a_method_refuses_a_policy_whose_view_count_its_loss_cannot_take(
    tmp_path, isolated_registry
):
    # The README's SimSiam unpacks two views: under multicrop (2 + 4) it is refused in one line
    # when the config is resolved, before anything runs, naming the policies that fit.
    plugin = tmp_path / "simsiam.py"
    plugin.write_text(SIMSIAM)
    registry.load_plugins([plugin])
    with pytest.raises(HarnessError) as e:
        C.resolve("simsiam@multicrop", "micro")
    line = str(e.value)
    assert "\n" not in line and "multicrop" in line and "6 views" in line and "2view" in line
    C.resolve("simsiam", "micro")  # its own two views are fine
    C.resolve("moco_v3@multicrop", "micro")  # a base that takes 2 + 4 keeps them
