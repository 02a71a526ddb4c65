import os

# Tests never talk to wandb's servers and never pick up a user's results directory.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.pop("HARNESS_RESULTS", None)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: each keeps to one thread instead of both fighting for two.
    import torch

    torch.set_num_threads(1)

import pytest  # noqa: E402

from tests.slurm_fixture import local_slurm  # noqa: E402,F401


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    """(results root, the micro preset's synthetic ImageFolder under it), written once per module."""
    from harness import config as C

    root = tmp_path_factory.mktemp("res")
    cfg = C.resolve("moco_v3", "micro")
    d = C.data_root(cfg, root)
    C.ensure_data(cfg, d)
    return root, d
