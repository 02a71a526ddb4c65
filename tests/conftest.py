import os

# Tests never talk to wandb's servers and never pick up a user's results directory.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.pop("HARNESS_RESULTS", None)

from tests.slurm_fixture import local_slurm  # noqa: E402,F401
