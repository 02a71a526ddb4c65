"""README's layout table names every package of the engine and only files that exist, so it
fails when the tree moves and the table does not."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| layer | package | holds |") :].split("\n\n")[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[1], cells[2]))
    return rows


def test_every_package_is_in_the_layout_table():
    named = {re.sub(r"`", "", pkg).rstrip("/") for pkg, _ in _rows()}
    packages = {
        f"harness/{p.name}" for p in (ROOT / "harness").iterdir() if (p / "__init__.py").exists()
    }
    assert packages - named == set(), "README layout table lacks these packages"
    assert "methods" in named


def test_every_file_the_layout_table_names_exists():
    missing = []
    for pkg, holds in _rows():
        paths = re.findall(r"`([\w/.]+)`", pkg)
        base = ROOT / paths[0]
        folder = base if base.is_dir() else base.parent
        for p in paths:
            if not (ROOT / p).exists() and not (folder / p).exists():
                missing.append(p)
        for name in re.findall(r"`([\w/]+(?:\.py|/))`", holds):
            if not (folder / name).exists():
                missing.append(f"{folder.relative_to(ROOT)}/{name}")
    assert missing == [], f"README layout table names files that do not exist: {missing}"
