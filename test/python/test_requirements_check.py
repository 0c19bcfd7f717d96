"""snakepit_requirements.py: what `mix snakepit.setup` learns about requirements."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "priv" / "python" / "snakepit_requirements.py"
sys.path.insert(0, str(SCRIPT.parent))

import snakepit_requirements as req  # noqa: E402


def run(args: List[str]) -> List[List[str]]:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True
    ).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_requirement_lines_drop_comments_blanks_and_join_continuations() -> None:
    text = "# header\nnumpy>=1.0  # inline\n\nfoo==1 \\\n  ; python_version > '3'\nurl#frag\n"
    assert list(req.requirement_lines(text)) == ["numpy>=1.0", "foo==1   ; python_version > '3'", "url#frag"]


@pytest.mark.parametrize(
    ("line", "status"),
    [
        ("pytest", "ok"),
        ("pytest>=1", "ok"),
        ("pytest<1", "mismatch"),
        ("snakepit-no-such-package==1.0", "missing"),
        ("pywin32; sys_platform == 'win32' and sys_platform != 'win32'", "skipped"),
        ("-e .", "unchecked"),
        ("git+https://example.org/x.git", "unchecked"),
    ],
)
def test_check(line: str, status: str) -> None:
    assert req.check(line)[0] == status


def test_cli_reports_files_and_arguments(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("pytest>=1\nsnakepit-no-such-package\n")
    rows = run(["--file", str(requirements), "pytest<1"])
    assert [row[:2] for row in rows] == [
        ["mismatch", "pytest"],
        ["ok", "pytest"],
        ["missing", "snakepit-no-such-package"],
    ]
    assert rows[1][3] == rows[0][3]  # the installed version
