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


@pytest.fixture(scope="session", autouse=True)
def _harness_cache(tmp_path_factory):
    """Caches (the file index) go to a folder of this test session, never ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARNESS_CACHE", str(tmp_path_factory.mktemp("harness-cache")))
        yield


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    """(results root, the micro preset's synthetic ImageFolder under it), written once per module."""
    from harness import config as C

    root = tmp_path_factory.mktemp("res")
    cfg = C.resolve("moco_v3", "micro")
    d = C.data_root(cfg, root)
    C.ensure_data(cfg, d)
    return root, d


@pytest.fixture(scope="session")
def imagenet_jpeg(tmp_path_factory):
    """The `imagenet_jpeg` fixture tree (photo-sized JPEGs under real wnids), written once per
    test session. Under xdist the workers share the run's base folder: the generator writes in
    a temporary folder and renames it into place, so a worker that loses the race keeps the
    other's identical tree."""
    from harness.data import fixtures as fx

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this run's folder, above every worker's own
    return fx.write_fixtures(base / "fixtures-shared", fx.Config(), only=["imagenet_jpeg"])[
        "imagenet_jpeg"
    ]


@pytest.fixture
def one_thread():
    """torch on one thread for the test: small tensors run faster (and give the numbers
    ``methods.departures.measured`` prints) than on two threads of a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
