"""``harness``: run tables, report them, and inspect methods. ``harness COMMAND --help``.

Every command that resolves a config (run, plan, status, report, audit, flops, params, config)
takes trailing ``key=value`` overrides of it: ``harness run table2 train.epochs=300
linear.epochs=90 runtime.num_workers=10``; ``harness config METHOD`` lists every key."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from harness.cli import bench, checkpoints, data, instruments, methods, report, run
from harness.errors import HarnessError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__)
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py",
        help="a file that registers methods (@register_base / @register_addon); "
        "repeatable, also $HARNESS_PLUGINS",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    for group in (run, report, instruments, methods, checkpoints, bench, data):
        group.add(sub)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """Options and positionals as argparse reads them, plus ``overrides``: the ``key=value``
    arguments of the commands that resolve a config, wherever they stand after the command."""
    p = parser()
    args, extra = p.parse_known_args(argv)
    if getattr(args, "takes_overrides", False):
        if isinstance(getattr(args, "tables", None), list):  # TABLE… and key=value… interleave
            extra = [t for t in args.tables if "=" in t] + extra
            args.tables = [t for t in args.tables if "=" not in t]
            if not args.tables and args.cmd == "plan":
                p.error("plan: the following arguments are required: tables")
        # Anything else not an option is a malformed override: resolve names it in one line.
        args.overrides = [x for x in extra if not x.startswith("-")]
        extra = [x for x in extra if x.startswith("-")]
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# Errors of the storage, not of the harness: one line naming the path, like bad input.
_STORAGE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def _one_line(e: HarnessError) -> str:
    """The message; for an error raised in a DataLoader worker, which torch re-raises with the
    worker's traceback in the message, only the original message (its last line)."""
    text = str(e).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if last.startswith("harness.errors.HarnessError") else last
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.plugin:
            from methods.registry import PLUGIN_ENV, load_plugins

            load_plugins(args.plugin)
            # Jobs in subprocesses and on Slurm inherit the environment, so they see it too.
            paths = [str(Path(p).resolve()) for p in args.plugin]
            os.environ[PLUGIN_ENV] = os.pathsep.join(
                paths + [p for p in os.environ.get(PLUGIN_ENV, "").split(os.pathsep) if p]
            )
        if getattr(args, "results", None) is not None:
            from harness.config.paths import results_folder

            given = argv if argv is not None else sys.argv
            from_env = args.results == os.environ.get("HARNESS_RESULTS") and not any(
                str(x).split("=")[0] == "--results" for x in given
            )
            results_folder(args.results, "HARNESS_RESULTS" if from_env else "--results")
        return args.fn(args)
    except HarnessError as e:
        print(f"harness: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in _STORAGE:
            raise
        # A read-only, full or foreign folder: nothing half-written stays (writes are atomic).
        where = f" {e.filename}" if e.filename else ""
        print(
            f"harness: error: cannot write{where}: {e.strerror}: make the folder writable "
            "(or free space), or pass --results DIR",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "harness: interrupted; finished results are kept — re-run the same command to continue",
            file=sys.stderr,
        )
        return 130
