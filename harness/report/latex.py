"""LaTeX for the tables: escaping text into captions and cells, and compiling a rendered table
inside a minimal article (``harness report --check-tex``) to prove it sets."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import HarnessError

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def escape_latex(text: str) -> str:
    # One pass, so the backslashes we insert are not escaped again.
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIAL[m.group()], str(text))


# Characters the protocol lines use that pdflatex's default fonts do not set as text.
_LATEX_UNICODE = {"–": "--", "—": "---", "×": r"$\times$", "·": r"$\cdot$", "⁻¹": r"$^{-1}$"}


def latex_text(text: str) -> str:
    """``text`` (plain, possibly with –, ×, ·, ⁻¹) escaped for a LaTeX caption."""
    out = escape_latex(text)
    for ch, tex in _LATEX_UNICODE.items():
        out = out.replace(ch, tex)
    return out


def require_pdflatex() -> str:
    exe = shutil.which("pdflatex")
    if exe is None:
        raise HarnessError(
            "--check-tex needs pdflatex, which is not on PATH: install texlive-latex-base and "
            "texlive-latex-recommended (Debian), or leave out --check-tex"
        )
    return exe


def compile_check(tex_path: Path) -> None:
    """Compile the table inside a minimal article; RuntimeError with the log tail if it fails."""
    exe = require_pdflatex()
    body = Path(tex_path).read_text(encoding="utf-8")
    # multirow ships in Debian's texlive-latex-extra, not -recommended: load it only when used.
    packages = "booktabs,multirow" if "\\multirow" in body else "booktabs"
    doc = (
        f"\\documentclass{{article}}\n\\usepackage{{{packages}}}\n"
        f"\\begin{{document}}\n{body}\n\\end{{document}}\n"
    )
    with tempfile.TemporaryDirectory(prefix="tex-check-") as tmp:
        (Path(tmp) / "check.tex").write_text(doc, encoding="utf-8")
        try:
            proc = subprocess.run(
                [exe, "-interaction=nonstopmode", "-halt-on-error", "check.tex"],
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=120,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"pdflatex timed out on {tex_path}") from exc
        if proc.returncode != 0:
            log = Path(tmp) / "check.log"
            text = log.read_text(errors="replace") if log.exists() else proc.stdout + proc.stderr
            tail = "\n".join(text.splitlines()[-30:])
            raise RuntimeError(f"pdflatex failed on {tex_path} (exit {proc.returncode}):\n{tail}")
