"""The lock files the image installs cover pyproject.toml: refreshed after every dependency change.

The image installs requirements/service.txt with ``--no-deps`` and does not install the project
itself, so nothing else would notice a dependency added to pyproject.toml without a refresh
(``scripts/lock-requirements.sh``) until the service failed to import in the container.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def pins(name: str) -> dict[str, Version]:
    """``{package: version}`` of one lock file, plus the Debian packages named in its header."""
    text = (ROOT / "requirements" / f"{name}.txt").read_text(encoding="utf-8")
    found = re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", text, re.M)
    header = re.search(r"^# ((?:\S+==\S+ ?)+)$", text, re.M)
    assert header, f"requirements/{name}.txt names no Debian packages in its header"
    found += [tuple(pin.split("==")) for pin in header.group(1).split()]
    return {canonicalize_name(package): Version(version) for package, version in found}


def applicable(requirement: Requirement) -> bool:
    environment = {"sys_platform": "linux", "platform_system": "Linux", "extra": ""}
    return requirement.marker is None or requirement.marker.evaluate(environment)


@pytest.mark.parametrize(
    ("locks", "requirements"),
    [
        (["service"], PROJECT["dependencies"]),
        (["service", "test"], PROJECT["optional-dependencies"]["test"]),
    ],
    ids=["dependencies", "test extra"],
)
def test_lock_files_satisfy_pyproject(locks, requirements):
    pinned = {package: version for lock in locks for package, version in pins(lock).items()}
    problems = []
    for requirement in map(Requirement, requirements):
        if not applicable(requirement):
            continue
        version = pinned.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{requirement} is not locked")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement} is locked at {version}")
    assert not problems, "refresh with scripts/lock-requirements.sh: " + "; ".join(problems)


def test_every_pin_has_a_hash():
    for lock in ("service", "test"):
        text = (ROOT / "requirements" / f"{lock}.txt").read_text(encoding="utf-8")
        entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
        unhashed = [entry.split()[0] for entry in entries if "--hash=sha256:" not in entry]
        assert not unhashed, f"requirements/{lock}.txt has pins without hashes: {unhashed}"
