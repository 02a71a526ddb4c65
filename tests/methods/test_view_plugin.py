"""An add-on that needs a kind of view no policy has, written in one file outside the package:
it declares the view (``AddOn.view_request``), the data layer renders it, the online backbone
encodes it, and its loss reads it, with no edit anywhere else."""

import json
import math

import pytest

from harness import cli
from harness import config as C
from methods import registry

HALF_CROP = """
from harness.data.augment import Pipeline
from harness.data.requests import ExtraView, ViewRequest
from methods.base import AddOn
from methods.registry import register_addon


@register_addon("halfcrop")
class HalfCrop(AddOn):
    description = "halfcrop: a half-size crop pulled towards view 1's [CLS]"

    def view_request(self, augs):
        self.size = max(augs.patch, augs.size // 2 // augs.patch * augs.patch)
        pipe = Pipeline(self.size, (0.5, 1.0), flavour=augs.flavour)
        return ViewRequest(extra=(ExtraView("half", pipe),))

    def losses(self, method, batch, online, target, progress):
        view, enc = batch["extra"]["half"], batch["encoded"]["half"]
        n = online[0].cls.shape[0]
        if tuple(view.shape) != (n, 3, self.size, self.size) or enc.cls.shape != online[0].cls.shape:
            raise AssertionError(f"half view {tuple(view.shape)}, [CLS] {tuple(enc.cls.shape)}")
        params = batch["extra_params"]["half"]
        if params.shape[0] != n:
            raise AssertionError(f"{params.shape[0]} parameter rows for {n} images")
        return {"loss_half": (enc.cls - online[0].cls.detach()).pow(2).mean()}
"""


@pytest.fixture
def isolated_registry(monkeypatch):
    registry.parse("moco_v3")  # the built-ins first
    monkeypatch.setattr(registry, "BASES", dict(registry.BASES))
    monkeypatch.setattr(registry, "ADDONS", dict(registry.ADDONS))
    monkeypatch.setattr(registry, "_loaded", set(registry._loaded))
    monkeypatch.setenv(registry.PLUGIN_ENV, "")


def test_an_addon_with_its_own_kind_of_view_trains_from_one_file(tmp_path, isolated_registry):
    plugin = tmp_path / "halfcrop.py"
    plugin.write_text(HALF_CROP)
    res = tmp_path / "results"
    argv = ["--plugin", str(plugin), "run", "table2", "--methods", "moco_v3+halfcrop"]
    argv += ["--preset", "micro", "--cluster", "debug", "--only", "pretrain", "--results", str(res)]
    assert cli.main(argv) == 0
    (log,) = res.rglob("log.jsonl")
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["loss_half"]) and r["loss_half"] > 0 for r in rows)
    # The view changes nothing the base method sees: its two views and parameters as without it.
    with_half = C.resolve("moco_v3+halfcrop", "micro")
    assert with_half["views"]["policy"] == C.resolve("moco_v3", "micro")["views"]["policy"]
