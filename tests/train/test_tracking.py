"""--wandb: offline run directories hold the logged keys; requeues and evaluations continue
the same wandb run (read back from the .wandb files, as `wandb sync` would upload them)."""

import json
import struct
import sys
import time
import zlib
from pathlib import Path

import pytest

from harness import config as C
from harness.errors import HarnessError
from harness.run import jobs
from harness.train import pretrain, tracking

pytest.importorskip("wandb")
from wandb.proto.wandb_internal_pb2 import Record  # noqa: E402

BLOCK, FULL, FIRST, MIDDLE, LAST = 32768, 1, 2, 3, 4


def read_wandb(path: Path) -> list:
    """The Records of a .wandb file: a 7-byte header, then LevelDB-log records in 32 KiB
    blocks (crc32 over type + payload, uint16 length, type). Anything else raises."""
    data = path.read_bytes()
    assert data[:6] == b":W&B\xe1\xbe" and data[6] == 0, f"{path}: not a v0 .wandb file"
    pos, part, out = 7, None, []
    while pos < len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block tail: zero padding
            assert data[pos : pos + left] == bytes(left), f"{path}@{pos}: bad padding"
            pos += left
            continue
        crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + n]
        assert len(payload) == n and crc == zlib.crc32(payload, zlib.crc32(bytes([kind]))), (
            f"{path}@{pos}: truncated or corrupt record"
        )
        assert kind in (FULL, FIRST, MIDDLE, LAST) and (kind in (FULL, FIRST)) == (part is None), (
            f"{path}@{pos}: record type {kind} out of order"
        )
        pos += 7 + n
        part = payload if kind in (FULL, FIRST) else part + payload
        if kind in (FULL, LAST):
            out.append(Record.FromString(part))
            part = None
    assert part is None, f"{path}: ends inside a record"
    return out


def sessions(run_dir: Path) -> list:
    """Each offline session of a run dir, oldest first: (run id, {step: keys}, summary)."""
    out = []
    for d in sorted((run_dir / "wandb").glob("offline-run-*")):
        (f,) = d.glob("run-*.wandb")
        recs = read_wandb(f)
        rid = next(r.run.run_id for r in recs if r.WhichOneof("record_type") == "run")
        hist, summary = {}, {}
        for r in recs:
            kind = r.WhichOneof("record_type")
            items = (
                r.history.item
                if kind == "history"
                else r.summary.update
                if kind == "summary"
                else []
            )
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
            if kind == "history":
                assert r.history.step.num not in hist, "a step logged twice in one session"
                hist[r.history.step.num] = set(row)
            summary.update(row)
        out.append((rid, hist, summary))
    return out


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    results = tmp_path_factory.mktemp("res")
    cfg = C.resolve("moco_v3", "micro")
    C.ensure_data(cfg, C.data_root(cfg, results))
    return results, C.data_root(cfg, results)


KEYS = {"loss", "loss_inv", "lr", "img_per_s"}


def _cfg(results):
    return C.with_runtime(
        C.resolve("moco_v3", "micro", max_steps=4),
        quiet=True,
        wandb=True,
        ckpt_every=100,
        results_dir=str(results),
    )


def test_pretraining_writes_one_offline_run_with_losses_lr_and_throughput(offline, data, tmp_path):
    results, root = data
    cfg = _cfg(results)
    pretrain(cfg, tmp_path / "run", root)
    ((rid, hist, _),) = sessions(tmp_path / "run")
    assert rid == C.run_id(cfg)
    assert sorted(hist) == [1, 2, 3, 4]
    assert all(keys >= KEYS for keys in hist.values())
    # Without --wandb nothing is started.
    assert tracking.start(C.with_runtime(cfg, wandb=None), tmp_path / "none", "pretrain") is None


def test_resumed_job_and_evaluation_continue_the_same_run(offline, data, tmp_path):
    results, root = data
    cfg = _cfg(results)
    run_dir = tmp_path / "runs" / C.run_id(cfg)
    pretrain(cfg, run_dir, root, stop_at=2)
    pretrain(cfg, run_dir, root)  # resumes from the step-2 checkpoint
    first, second = sessions(run_dir)
    assert first[0] == second[0] == C.run_id(cfg)
    assert sorted(first[1]) == [1, 2] and sorted(second[1]) == [3, 4]
    assert all(keys >= KEYS for s in (first, second) for keys in s[1].values())

    spec = jobs.eval_spec(cfg, "knn", "imagenet")
    res = jobs.eval_result_path(run_dir, spec)
    record = jobs.execute(
        jobs.Job(
            "eval",
            jobs.eval_job_config(cfg, "knn", "imagenet"),
            str(run_dir),
            str(res),
            "knn",
            "imagenet",
            deps=[str(run_dir / "pretrain.json")],
            spec=spec,
        )
    )
    *_, (rid, hist, summary) = sessions(run_dir)
    assert rid == C.run_id(cfg) and not hist
    assert record["metrics"]
    for k, v in record["metrics"].items():
        assert summary[f"eval/knn-imagenet/{k}"] == pytest.approx(v)


def test_missing_wandb_is_one_line_naming_the_fix(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb → ImportError
    cfg = C.with_runtime(C.resolve("moco_v3", "micro"), wandb=True)
    with pytest.raises(HarnessError, match=r"pip install '\.\[wandb\]'"):
        tracking.start(cfg, tmp_path, "pretrain")


def _written(f: Path, timeout_s: float = 30.0) -> list:
    """The file's records once wandb's service has flushed them: ``finish`` can return while
    the service still writes (seen on a quiet CI machine: a header and no record yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if records := read_wandb(f):
                return records
        except AssertionError:  # a record half written
            pass
        if time.monotonic() > deadline:
            return read_wandb(f)
        time.sleep(0.2)


def test_reader_refuses_a_corrupt_file(offline, tmp_path):
    cfg = C.with_runtime(C.resolve("moco_v3", "micro"), wandb=True, quiet=True)
    run = tracking.start(cfg, tmp_path, "pretrain")
    run.log({"loss": 1.0}, step=1)
    run.finish()
    (f,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    assert _written(f)
    blob = bytearray(f.read_bytes())
    blob[20] ^= 0xFF
    f.write_bytes(bytes(blob))
    with pytest.raises(AssertionError, match="corrupt"):
        read_wandb(f)
