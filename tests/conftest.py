import os

# Tests never talk to wandb's servers and never pick up a user's results directory.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.pop("HARNESS_RESULTS", None)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: each keeps to one thread instead of both fighting for two.
    import torch

    torch.set_num_threads(1)

from tests.slurm_fixture import local_slurm  # noqa: E402,F401
