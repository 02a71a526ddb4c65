"""Configs: presets, resolving a method name (and ``key=value`` overrides) into one hashed run
config, the objects it builds, and where its data lives."""

from harness.config.build import build_method, load_state, load_trained, read_checkpoint
from harness.config.checks import validate
from harness.config.paths import data_root, dataset_root, ensure_data, refuse_unused_data_root
from harness.config.resolve import (
    RUNTIME,
    apply_overrides,
    config_hash,
    read_stored_config,
    resolve,
    run_id,
    runtime_settings,
    to_yaml,
    with_runtime,
    write_config,
)

__all__ = [
    "RUNTIME",
    "apply_overrides",
    "build_method",
    "config_hash",
    "data_root",
    "dataset_root",
    "ensure_data",
    "load_state",
    "load_trained",
    "read_checkpoint",
    "refuse_unused_data_root",
    "resolve",
    "run_id",
    "runtime_settings",
    "to_yaml",
    "validate",
    "with_runtime",
    "read_stored_config",
    "write_config",
]
