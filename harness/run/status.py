"""``harness status``: where each job of a table stands, read from results and records.

done (its result exists) · queued / running / requeued (the cluster still has it) · failed
(it ended without a result: the last lines of its log are shown) · waiting (not submitted,
its pretraining not finished) · ready (not submitted, nothing in its way).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.io import try_read_json
from harness.run import records
from harness.run.results import read_result

STATE_WORDS = {
    "PENDING": "queued",
    "RUNNING": "running",
    "REQUEUED": "requeued",
    "REQUEUE_HOLD": "requeued",
    "COMPLETING": "running",
    "CONFIGURING": "queued",
    "SUSPENDED": "suspended",
    "PREEMPTED": "requeued",
}


def _log_rows(run_dir: Path, n: int = 50) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    try:
        lines = path.read_text().splitlines()[-n:]
    except OSError:
        return []
    rows = []
    for ln in lines:
        with contextlib.suppress(json.JSONDecodeError):  # a line being written right now
            rows.append(json.loads(ln))
    return rows


def progress(job) -> dict:
    """Steps done, total and the time left, from a pretraining's log (rate over its last rows)
    or a detection evaluation's ``iterations.jsonl``."""
    if getattr(job, "evaluation", None) == "detection":
        return _detection_progress(job)
    if job.kind != "pretrain":
        return {}
    rows = [r for r in _log_rows(job.run_dir) if "time" in r]
    if not rows:
        return {}
    last = rows[-1]
    out = {"step": last["step"], "total": last["total_steps"]}
    if len(rows) > 1 and rows[-1]["time"] > rows[0]["time"]:
        rate = (rows[-1]["step"] - rows[0]["step"]) / (rows[-1]["time"] - rows[0]["time"])
        out["eta_s"] = (out["total"] - out["step"]) / rate if rate > 0 else None
    try:
        events = Path(job.run_dir, "events.jsonl").read_text().splitlines()
        out["requeues"] = sum('"preempted"' in e for e in events)
    except OSError:
        pass
    return out


def _detection_progress(job) -> dict:
    """The detection trainer's iteration (its newest output folder) of the job's total."""
    total = (getattr(job, "cfg", None) or {}).get("detection", {}).get("iterations")
    logs = sorted(
        Path(job.run_dir, "eval").glob("detection-*/iterations.jsonl"),
        key=lambda p: p.stat().st_mtime,
    )
    if not logs or not total:
        return {}
    rows = []
    for ln in logs[-1].read_text().splitlines()[-50:]:
        try:
            rows.append(json.loads(ln))
        except ValueError:  # a line cut short by a kill
            continue
    if not rows:
        return {}
    out = {"step": rows[-1]["iter"] + 1, "total": total}
    # "s" counts from the (re)start of the process that wrote the row: its last stretch only.
    run = [rows[-1]]
    for r in reversed(rows[:-1]):
        if r["s"] >= run[0]["s"] or len(run) == 20:
            break
        run.insert(0, r)
    if len(run) > 1 and run[-1]["s"] > run[0]["s"]:
        rate = (run[-1]["iter"] - run[0]["iter"]) / (run[-1]["s"] - run[0]["s"])
        out["eta_s"] = (total - out["step"]) / rate if rate > 0 else None
    return out


@dataclass
class Recorded:
    """A job known only from its record (``harness status`` without a table)."""

    name: str
    kind: str
    run_dir: str
    result: str
    deps: list = field(default_factory=list)

    def done(self) -> bool:
        return Path(self.result).exists()


def recorded(results_dir: Path) -> list[Recorded]:
    recs = []
    for p in Path(results_dir, "jobs").glob("*.json"):
        rec = try_read_json(p)
        if rec is None:
            print(f"harness: cannot read job record {p}: left out", file=sys.stderr)
            continue
        recs.append(rec)
    recs.sort(key=lambda r: r["attempts"][0]["submitted"] if r["attempts"] else "")
    return [
        Recorded(
            r["name"],
            r["kind"],
            r["run_dir"],
            r["result"],
            [str(Path(r["run_dir"]) / "pretrain.json")] if r["kind"] == "eval" else [],
        )
        for r in recs
    ]


def job_status(results_dir: Path, job) -> dict:
    rec = records.load(results_dir, job)
    st = {
        "job": job.name,
        "kind": job.kind,
        "tries": len(rec["attempts"]) if rec else 0,
        **progress(job),
    }
    if st["tries"]:
        st["job_id"] = rec["attempts"][-1]["job_id"]
    if job.done():
        problem = read_result(job)[1]
        if problem:
            return {**st, "state": f"unusable: {problem} (harness run recomputes it)"}
        return {**st, "state": "done"}
    if not st["tries"]:
        ready = all(Path(d).exists() for d in job.deps)
        return {**st, "state": "ready" if ready else "waiting"}
    last = rec["attempts"][-1]
    h = records.Handle(last["job_id"], last["cluster"], job.result, last["stderr"])
    state = h.state()
    st.update(cluster=last["cluster"], log=last["stderr"])
    if state != "GONE":
        return {**st, "state": STATE_WORDS.get(state, state.lower())}
    why = rec.get("failed", {}).get("summary") or records.failure(h).summary
    return {**st, "state": "failed", "why": why, "tail": records.log_tail(last["stderr"])}


def _duration(s: float | None) -> str:
    if s is None:
        return ""
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def render(rows: list[dict], header: str) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    w = max([len(r["job"]) for r in rows] + [3])
    out = [
        f"{header}: {len(rows)} jobs, " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
        f"{'job':<{w}}  {'state':<9} {'progress':>15} {'left':>7} {'tries':>5}  job id",
    ]
    for r in rows:
        prog = ""
        if "step" in r:
            prog = f"{r['step']}/{r['total']} {100 * r['step'] / max(1, r['total']):3.0f}%"
        left = _duration(r.get("eta_s")) if r["state"] in ("running", "requeued") else ""
        req = f" (requeued {r['requeues']}×)" if r.get("requeues") else ""
        out.append(
            f"{r['job']:<{w}}  {r['state']:<9} {prog:>15} {left:>7} {r['tries']:>5}  "
            f"{r.get('job_id', '')}{req}"
        )
    for r in rows:
        if r["state"] == "failed":
            out.append(f"\nFAILED {r['job']} (job {r['job_id']}, {r['tries']} tries): {r['why']}")
            out += [f"  | {ln}" for ln in r["tail"]] + [f"  log: {r['log']}"]
    out.append(f"(as of {time.strftime('%Y-%m-%d %H:%M:%S')})")
    return "\n".join(out)
