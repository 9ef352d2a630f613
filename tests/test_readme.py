"""The README's commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fenced_commands(section: str) -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, f"README.md has no '## {section}' section"
    blocks = re.findall(r"```sh\n(.*?)```", match.group(1), re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    (command,) = [c for c in fenced_commands("Quick start") if "pytest" in c]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_readme_start_command_runs_the_service():
    commands = fenced_commands("Quick start")
    assert any("python -m service" in c for c in commands)
