"""The CPU quota is read from fake /proc and /sys trees laid out as each cgroup setup has them."""

from __future__ import annotations

import pytest

from explain.cgroups import cgroup_cpu_limit

V1_HOST_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_HOST_CGROUP = "4:memory:/user.slice\n2:cpu,cpuacct:/user.slice/app.service\n0::/user.slice\n"


def write(root, files: dict[str, str]):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def v1_quota(quota: int, period: int = 100_000) -> dict[str, str]:
    return {"cpu.cfs_quota_us": f"{quota}\n", "cpu.cfs_period_us": f"{period}\n"}


def under(directory: str, files: dict[str, str]) -> dict[str, str]:
    return {f"{directory}/{name}": text for name, text in files.items()}


@pytest.mark.parametrize(
    ("quota", "period", "cores"),
    [(100_000, 100_000, 1.0), (150_000, 100_000, 1.5), (-1, 100_000, None)],
)
def test_cgroup_v1_in_a_docker_container(tmp_path, quota, period, cores):
    # Docker on a v1 host: /proc/self/cgroup names the container's path on the host, and the cpu
    # controller is mounted with that path as its root.
    write(
        tmp_path,
        {
            "proc/self/cgroup": "12:cpu,cpuacct:/docker/abc123\n11:memory:/docker/abc123\n",
            "proc/self/mountinfo": (
                "700 690 0:29 /docker/abc123 /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup "
                "rw,cpu,cpuacct\n"
            ),
            **under("sys/fs/cgroup/cpu,cpuacct", v1_quota(quota, period)),
        },
    )
    assert cgroup_cpu_limit(tmp_path) == cores


def test_cgroup_v1_nested_path_and_tighter_parent(tmp_path):
    write(
        tmp_path,
        {
            "proc/self/cgroup": V1_HOST_CGROUP,
            "proc/self/mountinfo": V1_HOST_MOUNTS,
            **under("sys/fs/cgroup/cpu,cpuacct", v1_quota(-1)),
            **under("sys/fs/cgroup/cpu,cpuacct/user.slice", v1_quota(50_000)),
            **under("sys/fs/cgroup/cpu,cpuacct/user.slice/app.service", v1_quota(300_000)),
        },
    )
    assert cgroup_cpu_limit(tmp_path) == 0.5


def test_cgroup_v1_without_mountinfo_reads_the_usual_mount(tmp_path):
    write(
        tmp_path,
        {"proc/self/cgroup": "3:cpu:/\n", **under("sys/fs/cgroup/cpu", v1_quota(200_000))},
    )
    assert cgroup_cpu_limit(tmp_path) == 2.0


@pytest.mark.parametrize(
    ("content", "cores"),
    [("max 100000\n", None), ("200000 100000\n", 2.0), ("150000 100000\n", 1.5), ("", None)],
)
def test_cgroup_v2_private_namespace(tmp_path, content, cores):
    # Docker on a v2 host: a private cgroup namespace, the container's cgroup is "/".
    write(
        tmp_path,
        {
            "proc/self/cgroup": "0::/\n",
            "proc/self/mountinfo": "900 800 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n",
            "sys/fs/cgroup/cpu.max": content,
        },
    )
    assert cgroup_cpu_limit(tmp_path) == cores


def test_cgroup_v2_nested_path_reads_every_ancestor(tmp_path):
    # A process in a nested cgroup sees the host's hierarchy (e.g. a systemd service, a pod with
    # the host's cgroup namespace): its own cpu.max says nothing, its parent's limit binds.
    write(
        tmp_path,
        {
            "proc/self/cgroup": "0::/kubepods.slice/pod42/web\n",
            "proc/self/mountinfo": "30 20 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "sys/fs/cgroup/cpu.max": "max 100000\n",
            "sys/fs/cgroup/kubepods.slice/cpu.max": "max 100000\n",
            "sys/fs/cgroup/kubepods.slice/pod42/cpu.max": "100000 100000\n",
            "sys/fs/cgroup/kubepods.slice/pod42/web/cpu.max": "max 100000\n",
        },
    )
    assert cgroup_cpu_limit(tmp_path) == 1.0


def test_hybrid_host_takes_the_tighter_version(tmp_path):
    write(
        tmp_path,
        {
            "proc/self/cgroup": V1_HOST_CGROUP,
            "proc/self/mountinfo": V1_HOST_MOUNTS,
            "sys/fs/cgroup/unified/user.slice/cpu.max": "300000 100000\n",
            **under("sys/fs/cgroup/cpu,cpuacct/user.slice/app.service", v1_quota(200_000)),
        },
    )
    assert cgroup_cpu_limit(tmp_path) == 2.0


def test_cgroup_outside_the_namespace_root_reads_the_mount(tmp_path):
    write(
        tmp_path,
        {
            "proc/self/cgroup": "0::/../../elsewhere\n",
            "proc/self/mountinfo": "30 20 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "sys/fs/cgroup/cpu.max": "100000 100000\n",
        },
    )
    assert cgroup_cpu_limit(tmp_path) == 1.0


def test_mount_point_with_an_escaped_space(tmp_path):
    write(
        tmp_path,
        {
            "proc/self/cgroup": "0::/\n",
            "proc/self/mountinfo": "30 20 0:26 / /sys/fs/cgroup\\040v2 rw - cgroup2 cgroup2 rw\n",
            "sys/fs/cgroup v2/cpu.max": "100000 100000\n",
        },
    )
    assert cgroup_cpu_limit(tmp_path) == 1.0


@pytest.mark.parametrize("garbage", ["", "not numbers\n", "0 100000\n", "100000 0\n"])
def test_no_files_or_garbage_mean_no_limit(tmp_path, garbage):
    assert cgroup_cpu_limit(tmp_path) is None
    write(
        tmp_path,
        {
            "proc/self/cgroup": "0::/\n3:cpu:/\n",
            "sys/fs/cgroup/cpu.max": garbage,
            "sys/fs/cgroup/cpu/cpu.cfs_quota_us": garbage,
        },
    )
    assert cgroup_cpu_limit(tmp_path) is None


def test_available_cores_follows_the_quota(monkeypatch):
    import os

    from explain import machine

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(machine, "cgroup_cpu_limit", lambda: 1.5)
    assert machine.available_cores() == 1
    monkeypatch.setattr(machine, "cgroup_cpu_limit", lambda: 0.2)
    assert machine.available_cores() == 1
    monkeypatch.setattr(machine, "cgroup_cpu_limit", lambda: None)
    assert machine.available_cores() == cores
    monkeypatch.setattr(machine, "cgroup_cpu_limit", lambda: cores + 8.0)
    assert machine.available_cores() == cores
