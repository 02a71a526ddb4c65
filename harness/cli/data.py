"""``harness data synth``, ``check`` and ``fixtures``: datasets written and validated."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError


def cmd_data_synth(a) -> int:
    from harness.data.synthetic import generate

    print(
        generate(
            Path(a.root),
            seed=a.seed,
            n_classes=a.classes,
            size=a.size,
            train_per_class=a.train_per_class,
            val_per_class=a.val_per_class,
            force=a.force,
        )
    )
    return 0


def cmd_data_check(a) -> int:
    from harness.data.readers import READERS
    from harness.data.verify import check_dataset

    # Not argparse choices: an unknown name is bad input, one line and exit 2 like the rest.
    if a.name not in READERS:
        raise HarnessError(f"unknown dataset '{a.name}': choose from {', '.join(READERS)}")
    inv = check_dataset(READERS[a.name], Path(a.root), decode=not a.layout_only)
    print("\n".join(inv.lines()))
    inv.require()  # the first problem, one line on stderr, exit 2
    return 0


def cmd_data_fixtures(a) -> int:
    from harness.data.fixtures import Config, write_fixtures

    cfg = Config(
        seed=a.seed,
        n_classes=a.classes,
        size=a.size,
        jpeg_train_per_class=a.jpeg_train_per_class,
        jpeg_val_per_class=a.jpeg_val_per_class,
    )
    for name, root in write_fixtures(Path(a.out), cfg, only=a.only, force=a.force).items():
        print(f"{name}\t{root}")
    return 0


def _tree(s, size: int) -> None:
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--classes", type=int, default=10)
    s.add_argument("--size", type=int, default=size)


def add(sub) -> None:
    from harness.data.readers import READERS

    d = sub.add_parser("data", help="datasets").add_subparsers(dest="data_cmd", required=True)
    s = d.add_parser("synth", help="write the synthetic ImageFolder set")
    s.add_argument("--root", required=True)
    _tree(s, 64)
    s.add_argument("--train-per-class", type=int, default=200)
    s.add_argument("--val-per-class", type=int, default=50)
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_data_synth)
    s = d.add_parser(
        "check", help="validate an evaluation set's layout: what is there, what is missing"
    )
    s.add_argument("name", help=", ".join(READERS))
    s.add_argument("--root", required=True)
    s.add_argument(
        "--layout-only",
        action="store_true",
        help="check folders and counts only; by default every image (ImageNet-P: every "
        "video) is also decoded once, verdicts cached by path, size and mtime",
    )
    s.set_defaults(fn=cmd_data_check)
    s = d.add_parser("fixtures", help="write small trees in every evaluation set's real layout")
    s.add_argument("--out", required=True)
    s.add_argument("--only", action="append", help="one tree (repeatable; default: all)")
    _tree(s, 32)
    s.add_argument(
        "--jpeg-train-per-class",
        type=int,
        default=4,
        help="imagenet_jpeg: photo-sized JPEGs per class in train/",
    )
    s.add_argument(
        "--jpeg-val-per-class", type=int, default=2, help="imagenet_jpeg: per class in val/"
    )
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_data_fixtures)
