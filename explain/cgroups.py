"""The CPU quota of this process's cgroup: what ``docker run --cpus``, compose's ``cpus`` and a
Kubernetes CPU limit set.

Both cgroup versions are read. cgroup v2 keeps the quota in ``cpu.max`` (``"<quota> <period>"`` or
``"max <period>"``); cgroup v1 in ``cpu.cfs_quota_us`` (``-1``: none) and ``cpu.cfs_period_us`` of
the ``cpu`` controller, mounted at ``/sys/fs/cgroup/cpu`` or ``/sys/fs/cgroup/cpu,cpuacct``. The
process's own cgroup is found from ``/proc/self/cgroup`` and ``/proc/self/mountinfo`` (a process
in a nested cgroup, or a container that sees the host's hierarchy), and every ancestor up to the
mount's root is read: a limit on a parent binds its children too. On a hybrid host (v1 controllers
beside an empty v2 hierarchy) the tighter of the two wins.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

__all__ = ["cgroup_cpu_limit"]


def cgroup_cpu_limit(root: str | Path = "/") -> float | None:
    """The CPU quota of this process's cgroup in cores (``1.5`` for ``--cpus 1.5``), or ``None``.

    Args:
        root: where ``/proc`` and ``/sys`` are found; another directory only in tests.

    Returns:
        The smallest quota over the process's cgroup and its ancestors, in both cgroup versions;
        ``None`` when nothing limits the CPU time or the files cannot be read (not on Linux).
    """
    root = Path(root)
    memberships = _memberships(_read(root / "proc/self/cgroup"))
    mounts = _cgroup_mounts(_read(root / "proc/self/mountinfo"))
    limits = [
        limit
        for version in ("2", "1")
        for directory in _cgroup_dirs(root, version, memberships, mounts)
        if (limit := _limit(directory, version)) is not None
    ]
    return min(limits, default=None)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _memberships(proc_cgroup: str) -> dict[str, str]:
    """``{"2": path}`` for the v2 hierarchy, ``{"1": path}`` for the v1 one holding ``cpu``."""
    found: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            found["2"] = path
        elif "cpu" in controllers.split(","):
            found["1"] = path
    return found


def _cgroup_mounts(mountinfo: str) -> dict[str, tuple[str, str]]:
    """``{version: (root of the mount, mount point)}`` of the v2 and the v1 ``cpu`` mounts."""
    found: dict[str, tuple[str, str]] = {}
    for line in mountinfo.splitlines():
        before, separator, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not separator or len(fields) < 5 or len(tail) < 3:
            continue
        mount_root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if tail[0] == "cgroup2":
            found.setdefault("2", (mount_root, mount_point))
        elif tail[0] == "cgroup" and "cpu" in tail[2].split(","):
            found.setdefault("1", (mount_root, mount_point))
    return found


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline or backslash in a path as an octal escape."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


_DEFAULT_MOUNTS = {
    "2": ["sys/fs/cgroup"],
    "1": ["sys/fs/cgroup/cpu", "sys/fs/cgroup/cpu,cpuacct", "sys/fs/cgroup/cpuacct,cpu"],
}


def _cgroup_dirs(
    root: Path, version: str, memberships: dict[str, str], mounts: dict[str, tuple[str, str]]
) -> list[Path]:
    """The process's cgroup directory of one version, then its ancestors up to the mount point."""
    if version in mounts:
        mount_root, mount_point = mounts[version]
        base = root / mount_point.lstrip("/")
        try:  # a container with the host's view (v1) mounts its own cgroup as the root
            parts = PurePosixPath(memberships.get(version, "/")).relative_to(mount_root).parts
        except ValueError:
            parts = ()
        if ".." in parts:  # outside the cgroup namespace's root: only the mount is readable
            parts = ()
        return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    if version in memberships or not mounts:  # no mountinfo: the usual places
        return [root / place for place in _DEFAULT_MOUNTS[version]]
    return []


def _limit(directory: Path, version: str) -> float | None:
    if version == "2":
        fields = _read(directory / "cpu.max").split()
        quota, period = (fields[0], fields[1]) if len(fields) >= 2 else ("max", "0")
    else:
        quota = _read(directory / "cpu.cfs_quota_us").strip()
        period = _read(directory / "cpu.cfs_period_us").strip()
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max", a missing file, garbage
        return None
    if quota_us <= 0 or period_us <= 0:  # -1: no quota (v1)
        return None
    return quota_us / period_us
