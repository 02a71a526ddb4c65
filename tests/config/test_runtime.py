"""Runtime settings reach the job without changing the run: loader workers, config.yaml."""

import os
from pathlib import Path

import pytest
import torch
import yaml

from harness import config as C
from harness.train import loop

SPY_DIR = "HARNESS_TEST_WORKER_DIR"


@pytest.fixture(scope="module")
def data(micro_data):
    return micro_data[1]


def _spy_worker(worker_id: int) -> None:
    """The loop's worker_init_fn, leaving a file behind in each worker process it starts."""
    loop_quiet_worker(worker_id)
    info = torch.utils.data.get_worker_info()
    Path(os.environ[SPY_DIR], f"worker-{info.id}-of-{info.num_workers}-{os.getpid()}").touch()


loop_quiet_worker = loop.quiet_worker


def test_num_workers_starts_loader_workers_in_the_same_run(data, tmp_path, monkeypatch):
    spy = tmp_path / "spy"
    spy.mkdir()
    monkeypatch.setenv(SPY_DIR, str(spy))
    monkeypatch.setattr(loop, "quiet_worker", _spy_worker)
    built = []

    class Loader(torch.utils.data.DataLoader):
        def __init__(self, *a, **kw):
            built.append(kw["num_workers"])
            super().__init__(*a, **kw)

    monkeypatch.setattr(loop, "DataLoader", Loader)
    # Unset, num_workers is the cores left (harness.data.loading.default_workers): say 0 here.
    plain = C.resolve(
        "moco_v3",
        "micro",
        overrides=["train.max_steps=2", "runtime.quiet=true", "runtime.num_workers=0"],
    )
    two = C.resolve("moco_v3", "micro", overrides=["train.max_steps=2", "runtime.num_workers=2"])
    assert two["runtime"]["num_workers"] == 2
    assert C.run_id(two) == C.run_id(plain)  # the same run directory

    loop.pretrain(plain, tmp_path / "plain" / C.run_id(plain), data)
    assert built == [0] and not list(spy.iterdir())  # 0: no worker processes

    run_dir = tmp_path / "two" / C.run_id(two)
    loop.pretrain(two, run_dir, data)
    assert built == [0, 2]
    started = sorted(p.name.rsplit("-", 1)[0] for p in spy.iterdir())
    assert started == ["worker-0-of-2", "worker-1-of-2"]
    # Workers change where batches are made, not what they are.
    a, b = (
        torch.load(d / "checkpoint.pt", weights_only=False)["model"]
        for d in (tmp_path / "plain" / C.run_id(plain), run_dir)
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    # config.yaml: the fully resolved config the run trained with, runtime included.
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == two
    assert not list(run_dir.glob(".*.tmp"))


def test_profile_runtime_defaults_and_validation(tmp_path):
    from harness.errors import HarnessError
    from harness.run.profiles import load_profile

    def profile(text: str) -> dict:
        (tmp_path / "p.yaml").write_text(text)
        return load_profile(tmp_path / "p.yaml")

    assert profile("cpus_per_task: 10\n")["runtime"] == {"num_workers": 9}
    assert profile("{}")["runtime"] == {"num_workers": 0}
    got = profile("cpus_per_task: 10\nruntime:\n  num_workers: 4\n  ckpt_every: 50\n")
    assert got["runtime"] == {"num_workers": 4, "ckpt_every": 50}
    assert load_profile("example")["runtime"]["num_workers"] == 8
    with pytest.raises(HarnessError, match='runtime: runtime.num_workers="four": expected an int'):
        profile("runtime:\n  num_workers: four\n")
    with pytest.raises(HarnessError, match="did you mean runtime.num_workers"):
        profile("runtime:\n  num_worker: 4\n")
    with pytest.raises(HarnessError, match="--results"):
        profile("runtime:\n  results_dir: /tmp/x\n")
