"""The local Slurm cluster (slurm/local-*.sh), the Slurm preflight and cluster profiles."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.run.profiles import (
    PROFILE_KEYS,
    ensure_slurm_reachable,
    executor_kwargs,
    load_profile,
    submitit_parameters,
)
from tests.helpers import free_port
from tests.slurm_fixture import (
    DOWN,
    UP,
    missing_binaries,  # noqa: F401
    new_state_dir,
    run_script,
)

DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")


def _accounting(state: Path) -> bool:
    return "accounting_storage/slurmdbd" in (state / "slurm.conf").read_text()


def _expected(state: Path) -> tuple[str, ...]:
    return DAEMONS if _accounting(state) else ("munged", "slurmctld", "slurmd")


def _daemons(state: Path) -> dict[str, list[int]]:
    """Live (non-zombie) processes started for STATE, by comm, found by scanning /proc.

    Independent of the pid files on purpose: it also catches duplicates they do not name.
    """
    found: dict[str, list[int]] = {}
    needle = f"{state}/".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            if comm not in DAEMONS:
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            info = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except (OSError, IndexError):
            continue
        if needle in info:
            found.setdefault(comm, []).append(int(proc.name))
    return found


def _node_state(timeout_s: float = 15) -> str:
    """sinfo's node state once it is idle, or the last one seen after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if state == "idle" or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


# ---- the cluster -----------------------------------------------------------------------------


@pytest.mark.slurm
def test_cluster_is_up(local_slurm):
    state = local_slurm
    assert (state / "env.sh").read_text().strip() == f"export SLURM_CONF={state}/slurm.conf"
    running = _daemons(state)
    for name in _expected(state):
        pid = int((state / "run" / f"{name}.pid").read_text())
        assert running.get(name) == [pid], (name, running)
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10)
    assert "is UP" in ping.stdout, ping.stdout + ping.stderr


@pytest.mark.slurm
def test_sinfo_shows_the_node_idle(local_slurm):
    assert _node_state() == "idle"


@pytest.mark.slurm
def test_submitit_runs_a_function_on_the_cluster(local_slurm, tmp_path):
    import submitit

    def answer():
        # Defined here so cloudpickle ships it by value: the job need not import this module.
        return 6 * 7

    profile = load_profile("local")
    ex = submitit.AutoExecutor(folder=tmp_path / "%j", cluster="slurm", **executor_kwargs(profile))
    ex.update_parameters(name="answer", **submitit_parameters(profile))
    job = ex.submit(answer)
    deadline = time.monotonic() + 60
    # job.result() has no timeout, and without accounting a job that dies never looks done.
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(
                f"job {job.job_id} not done after 60 s (state {job.state}); stderr: {job.stderr()}"
            )
        time.sleep(0.3)
    assert job.result() == 42
    if _accounting(local_slurm):
        # With slurmdbd, submitit sees real states instead of UNKNOWN.
        deadline = time.monotonic() + 20
        while job.state != "COMPLETED" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert job.state == "COMPLETED"


@pytest.mark.slurm
def test_example_profile_makes_a_valid_sbatch_script(local_slurm, tmp_path):
    import submitit

    profile = load_profile("example")
    ex = submitit.AutoExecutor(folder=tmp_path, cluster="slurm", **executor_kwargs(profile))
    ex.update_parameters(**submitit_parameters(profile))
    script = ex._executor._make_submission_file_text("python -c pass", "uid")
    for flag in (
        "--partition=gpu",
        "--gpus-per-node=8",
        "--ntasks-per-node=8",
        "--cpus-per-task=10",
        "--mem=480GB",
        "--time=2880",
        "--signal=USR2@180",
        "--nodes=1",
    ):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "module load cuda/12.4\n" in script
    assert ex._executor.max_num_timeout == 5


@pytest.mark.slurm
def test_local_up_twice_leaves_one_set_of_daemons(local_slurm):
    state = local_slurm
    before = _daemons(state)
    again = run_script(UP, str(state), timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == f"export SLURM_CONF={state}/slurm.conf"
    assert _daemons(state) == before
    assert all(len(before.get(name, [])) == 1 for name in _expected(state)), before


@pytest.mark.slurm
def test_second_cluster_without_accounting_up_and_down(local_slurm):
    """Another state dir coexists with the session's cluster; down is idempotent."""
    state = new_state_dir()
    try:
        up = run_script(UP, str(state), env={"HARNESS_SLURM_ACCOUNTING": "0"}, timeout=60)
        assert up.returncode == 0, up.stderr
        assert not _accounting(state)
        assert sorted(_daemons(state)) == sorted(("munged", "slurmctld", "slurmd"))
        conf = {"SLURM_CONF": str(state / "slurm.conf")}
        sinfo = subprocess.run(
            ["sinfo", "-h", "-o", "%T"],
            capture_output=True,
            text=True,
            env={**os.environ, **conf},
            timeout=10,
        )
        assert sinfo.stdout.strip() == "idle"
        for _ in range(2):
            down = run_script(DOWN, str(state), timeout=60)
            assert down.returncode == 0, down.stderr
            assert _daemons(state) == {}
    finally:
        run_script(DOWN, str(state), "--purge", timeout=60)
    assert not state.exists()
    # The session's cluster was not touched.
    assert sorted(_daemons(local_slurm)) == sorted(_expected(local_slurm))


# ---- preflight ---------------------------------------------------------------------------------


@pytest.mark.slurm
def test_reachable_when_up(local_slurm):
    ensure_slurm_reachable(timeout_s=10)


@pytest.mark.slurm
def test_unreachable_controller_is_one_line_error(local_slurm, tmp_path, monkeypatch):
    port = free_port()
    conf = tmp_path / "slurm.conf"
    lines = (local_slurm / "slurm.conf").read_text().splitlines()
    conf.write_text(
        "\n".join(
            f"SlurmctldPort={port}" if ln.startswith("SlurmctldPort=") else ln for ln in lines
        )
        + "\n"
    )
    monkeypatch.setenv("SLURM_CONF", str(conf))
    t0 = time.monotonic()
    with pytest.raises(HarnessError) as err:
        ensure_slurm_reachable(timeout_s=5)
    assert time.monotonic() - t0 < 6
    msg = str(err.value)
    assert "\n" not in msg
    assert "slurmctld is not reachable" in msg and str(conf) in msg
    assert "slurm/local-up.sh" in msg and "export SLURM_CONF=" in msg


def test_missing_slurm_clients_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarnessError) as err:
        ensure_slurm_reachable(timeout_s=1)
    msg = str(err.value)
    assert "\n" not in msg and "not found" in msg and "slurm-wlm" in msg


def test_missing_slurm_conf_is_one_line_error(tmp_path, monkeypatch):
    if missing_binaries():
        pytest.skip("needs the Slurm client commands")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nope.conf"))
    with pytest.raises(HarnessError) as err:
        ensure_slurm_reachable(timeout_s=1)
    assert "\n" not in str(err.value) and "does not exist" in str(err.value)


# ---- profiles ----------------------------------------------------------------------------------


def test_unknown_profile_is_one_line_error():
    with pytest.raises(HarnessError) as err:
        load_profile("no-such-cluster")
    msg = str(err.value)
    assert "\n" not in msg and "no-such-cluster" in msg
    assert "local" in msg and "example" in msg


def test_unknown_profile_key_names_the_valid_keys(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("partition: gpu\ngpus: 8\n")
    with pytest.raises(HarnessError) as err:
        load_profile(path)
    msg = str(err.value)
    assert "\n" not in msg and "gpus" in msg
    assert all(key in msg for key in PROFILE_KEYS)


def test_profile_value_of_wrong_type_is_an_error(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("nodes: two\n")
    with pytest.raises(HarnessError, match="nodes must be a int"):
        load_profile(str(path))


def test_profiles_in_repo_load_with_defaults(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("partition: p\n")
    tiny = load_profile(path)
    assert set(tiny) == set(PROFILE_KEYS)
    assert tiny["nodes"] == 1 and tiny["setup"] == [] and tiny["account"] is None
    assert load_profile("local")["partition"] == "debug"
    assert load_profile("example")["gpus_per_node"] == 8


def test_submitit_parameters_maps_the_profile(tmp_path):
    profile = load_profile("example")
    profile.update(account="proj", qos="high", constraint="h100", mem_gb=None)
    assert submitit_parameters(profile) == {
        "slurm_partition": "gpu",
        "nodes": 1,
        "gpus_per_node": 8,
        "tasks_per_node": 8,
        "cpus_per_task": 10,
        "timeout_min": 2880,
        "slurm_account": "proj",
        "slurm_qos": "high",
        "slurm_constraint": "h100",
        "slurm_signal_delay_s": 180,
        "slurm_setup": profile["setup"],
    }
    assert executor_kwargs(profile) == {"slurm_max_num_timeout": 5}
    local = submitit_parameters(load_profile("local"))
    # Unset keys and a zero GPU count stay out of the sbatch flags.
    assert "gpus_per_node" not in local and "slurm_account" not in local
    assert "mem_gb" not in local and "slurm_setup" not in local
    assert submitit_parameters(None)["timeout_min"] == PROFILE_KEYS["time_min"][1]


def test_submitit_accepts_the_parameters(tmp_path):
    """Every key must be one update_parameters knows; the debug executor checks slurm_* too."""
    import submitit

    for name in ("local", "example"):
        profile = load_profile(name)
        ex = submitit.AutoExecutor(folder=tmp_path, cluster="debug", **executor_kwargs(profile))
        ex.update_parameters(**submitit_parameters(profile))
