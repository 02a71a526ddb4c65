"""Slurm preflight and cluster profiles.

A profile (``slurm/<name>.yaml``) says how jobs are shaped on one cluster; the harness turns it
into submitit parameters. Every problem surfaces as a one-line ``HarnessError`` that names the
fix, because the CLI prints it without a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

SLURM_DIR = Path(__file__).resolve().parents[2] / "slurm"
DEFAULT_STATE_DIR = "/tmp/harness-slurm"

# key -> (accepted types, default). None means "leave it to the cluster's own default".
PROFILE_KEYS: dict[str, tuple[tuple[type, ...], Any]] = {
    "partition": ((str,), None),
    "nodes": ((int,), 1),
    "gpus_per_node": ((int,), 0),
    "cpus_per_task": ((int,), 1),
    "tasks_per_node": ((int,), 1),
    "mem_gb": ((int, float), None),
    "time_min": ((int,), 24 * 60),
    "account": ((str,), None),
    "qos": ((str,), None),
    "constraint": ((str,), None),
    "signal_delay_s": ((int,), 120),
    "max_requeue": ((int,), 3),
    "max_preemptions": ((int,), 20),
    "retries": ((int,), 1),
    "setup": ((list,), []),
    # Evaluation jobs' shape where it differs (evaluators run as one process).
    "eval": ((dict,), {"nodes": 1, "gpus_per_node": None, "tasks_per_node": 1}),
    # For `harness plan`: peak dense bf16 TFLOP/s of one GPU and the fraction reached.
    "gpu_name": ((str,), None),
    "gpu_tflops": ((int, float), None),
    "utilization": ((int, float), 0.4),
    # Runtime settings of the jobs submitted with this profile (``runtime.*``, never hashed),
    # e.g. num_workers; num_workers defaults to cpus_per_task - 1 (pretraining and evaluation
    # loaders; without a profile a job takes its CPU affinity's cores - 1). The command line's
    # ``runtime.KEY=value`` overrides win.
    "runtime": ((dict,), {}),
}
# Runtime settings a profile may not set: the command line owns them.
RUNTIME_CLI_ONLY = {"results_dir": "--results"}
# Keys an ``eval:`` section may override.
SHAPE_KEYS = (
    "partition",
    "nodes",
    "gpus_per_node",
    "cpus_per_task",
    "tasks_per_node",
    "mem_gb",
    "time_min",
    "account",
    "qos",
    "constraint",
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _available_profiles() -> list[str]:
    return sorted(p.stem for p in SLURM_DIR.glob("*.yaml"))


# ---- preflight -------------------------------------------------------------------------------


def ensure_slurm_reachable(timeout_s: float = 10) -> None:
    """Raise HarnessError unless the Slurm clients exist and a slurmctld answers ``scontrol ping``.

    Submitting to an unreachable controller would otherwise fail deep inside submitit, or hang.
    """
    conf = os.environ.get("SLURM_CONF")
    local_fix = (
        f"start the local cluster with `bash slurm/local-up.sh` and "
        f"`export SLURM_CONF={DEFAULT_STATE_DIR}/slurm.conf`, "
        f"or pass --profile for your cluster"
    )
    missing = [b for b in ("sbatch", "scontrol") if shutil.which(b) is None]
    if missing:
        raise HarnessError(
            f"Slurm client commands not found ({', '.join(missing)}): run on a Slurm login node, "
            f"or install them (`apt-get install slurm-wlm munge`) and start the local cluster "
            f"with `bash slurm/local-up.sh`, or use --cluster local"
        )
    where = f"SLURM_CONF={conf}" if conf else "SLURM_CONF unset, so /etc/slurm/slurm.conf"
    if conf and not Path(conf).is_file():
        raise HarnessError(f"SLURM_CONF={conf} does not exist: {local_fix}")
    try:
        proc = subprocess.run(
            ["scontrol", "ping"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        # Drop the "** RESTORE SLURMCTLD DAEMON TO SERVICE **" banner around the status line.
        lines = [ln.strip() for ln in (proc.stdout + "\n" + proc.stderr).splitlines()]
        said = (
            "; ".join(ln for ln in lines if ln and not ln.startswith("*"))
            or f"exit status {proc.returncode}"
        )
    except subprocess.TimeoutExpired:
        proc, said = None, f"no answer within {timeout_s:g}s"
    except OSError as e:
        proc, said = None, f"scontrol could not run: {e}"
    if proc is not None and proc.returncode == 0 and "is UP" in said:
        return
    said = _one_line(said)
    if len(said) > 160:
        said = said[:157] + "..."
    raise HarnessError(f"slurmctld is not reachable ({where}; scontrol ping: {said}): {local_fix}")


# ---- profiles --------------------------------------------------------------------------------


def _resolve(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    looks_like_path = os.sep in text or text.endswith((".yaml", ".yml"))
    path = Path(text) if looks_like_path else SLURM_DIR / f"{text}.yaml"
    if not path.is_file():
        what = f"cluster profile file {path}" if looks_like_path else f"cluster profile '{text}'"
        raise HarnessError(
            f"unknown {what}: available profiles are {', '.join(_available_profiles()) or 'none'} "
            f"(in {SLURM_DIR}), or pass the path of a .yaml file"
        )
    return path


def load_profile(name_or_path: str | os.PathLike) -> dict:
    """Read, validate and default-fill a cluster profile: a name in slurm/ or a YAML path."""
    import yaml

    path = _resolve(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise HarnessError(f"cannot read cluster profile {path}: {_one_line(e)}") from None
    if not isinstance(data, dict):
        raise HarnessError(
            f"cluster profile {path} must be a flat mapping of {', '.join(PROFILE_KEYS)}"
        )
    unknown = sorted(set(map(str, data)) - set(PROFILE_KEYS))
    if unknown:
        raise HarnessError(
            f"cluster profile {path}: unknown key(s) {', '.join(unknown)}; "
            f"valid keys are {', '.join(PROFILE_KEYS)}"
        )
    profile = {}
    for key, (types, default) in PROFILE_KEYS.items():
        value = data.get(key)
        if value is None:
            profile[key] = type(default)(default) if isinstance(default, (list, dict)) else default
            continue
        # bool is an int to Python, but `nodes: yes` is a typo, not a count.
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise HarnessError(f"cluster profile {path}: {key} must be a {want}, got {value!r}")
        if key == "setup" and not all(isinstance(line, str) for line in value):
            raise HarnessError(f"cluster profile {path}: setup must be a list of shell lines")
        if key == "eval":
            bad = sorted(set(map(str, value)) - set(SHAPE_KEYS))
            if bad:
                raise HarnessError(
                    f"cluster profile {path}: eval: unknown key(s) {', '.join(bad)}; "
                    f"it may set {', '.join(SHAPE_KEYS)}"
                )
            value = {**default, **value}
        if key == "runtime":
            value = _runtime(path, value)
        if isinstance(value, (int, float)) and value < 0:
            raise HarnessError(f"cluster profile {path}: {key} must not be negative, got {value}")
        profile[key] = value
    if "num_workers" not in profile["runtime"]:
        # One core feeds the GPU process itself; the rest load data.
        profile["runtime"]["num_workers"] = max(0, profile["cpus_per_task"] - 1)
    return profile


def _runtime(path: Path, value: dict) -> dict:
    """A profile's ``runtime:`` mapping, validated as ``runtime.KEY=value`` overrides are."""
    import json

    from harness.config import runtime_settings

    for key, flag in RUNTIME_CLI_ONLY.items():
        if key in value:
            raise HarnessError(f"cluster profile {path}: runtime: {key} is set with {flag}")
    try:
        rt = runtime_settings(None, [f"runtime.{k}={json.dumps(v)}" for k, v in value.items()])
    except HarnessError as e:
        raise HarnessError(f"cluster profile {path}: runtime: {e}") from None
    return {k: rt[k] for k in value}


def job_shape(profile: dict | None, kind: str) -> dict:
    """The profile as one kind of job sees it: evaluations take the ``eval:`` overrides
    (one process; GPUs per node default to one when the profile has GPUs)."""
    if profile is None or kind != "eval":
        return profile or {}
    over = dict(profile.get("eval") or {})
    if over.get("gpus_per_node") is None:
        over["gpus_per_node"] = 1 if profile.get("gpus_per_node") else 0
    return {**profile, **over}


def submitit_parameters(profile: dict | None) -> dict:
    """Map a profile to ``AutoExecutor.update_parameters`` kwargs, leaving unset ones out.

    ``max_requeue`` is not among them: submitit only takes it in the constructor
    (``update_parameters(slurm_max_num_timeout=...)`` raises NameError); see ``executor_kwargs``.
    """
    p = {k: default for k, (_, default) in PROFILE_KEYS.items()}
    p.update({k: v for k, v in (profile or {}).items() if v is not None})
    mapping = {
        "partition": "slurm_partition",
        "nodes": "nodes",
        "gpus_per_node": "gpus_per_node",
        "tasks_per_node": "tasks_per_node",
        "cpus_per_task": "cpus_per_task",
        "mem_gb": "mem_gb",
        "time_min": "timeout_min",
        "account": "slurm_account",
        "qos": "slurm_qos",
        "constraint": "slurm_constraint",
        "signal_delay_s": "slurm_signal_delay_s",
        "setup": "slurm_setup",
    }
    out = {}
    for key, param in mapping.items():
        value = p.get(key)
        if value is None or value == [] or value == "":
            continue
        # --gpus-per-node=0 is rejected by clusters without GPU gres, such as the local one.
        if key == "gpus_per_node" and value == 0:
            continue
        out[param] = list(value) if key == "setup" else value
    return out


def executor_kwargs(profile: dict | None) -> dict:
    """Constructor kwargs for ``submitit.AutoExecutor(folder, cluster="slurm", **...)``."""
    value = (profile or {}).get("max_requeue")
    if value is None:
        value = PROFILE_KEYS["max_requeue"][1]
    return {"slurm_max_num_timeout": value}
