"""The performance targets of the service, before and after, from ``bench.http_load`` reports.

Reads the JSON reports of ``python -m bench.http_load --before OLD_TREE ...`` runs (each with a
``before`` and an ``after`` server measured side by side, and the raw model beside them), picks
every target's figure out of them, prints a Markdown table and draws one small panel per target
(``before`` and ``after`` bars, the target as a dashed line).

    python -m bench.targets bench/out/latency.json bench/out/throughput.json bench/out/scorecam.json \
        --plot docs/targets.png

A target whose phase is in none of the reports is left out.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TARGETS", "Target", "main"]


@dataclass(frozen=True)
class Target:
    """One target: a figure of a phase (``path`` at ``clients``), and the bound it must meet.

    Attributes:
        name: What is measured, in words.
        path: The endpoint of the phase.
        clients: The concurrency of the phase.
        value: The figure, from the phase's summary.
        bound: The target.
        most: ``True``: the figure must be at most ``bound``; ``False``: at least.
    """

    name: str
    path: str
    clients: int
    value: Callable[[dict], float | None]
    bound: float
    most: bool = False


TARGETS = [
    Target(
        "/predict p50, 1 client / eager single-image forward",
        "/predict",
        1,
        lambda r: r["p50_vs_single"],
        1.4,
        most=True,
    ),
    Target(
        "/predict p50, 1 client / graph single-image forward",
        "/predict",
        1,
        lambda r: r["p50_vs_graph_single"],
        1.4,
        most=True,
    ),
    Target(
        "/predict, 32 clients / graph batched forward", "/predict", 32, lambda r: r["vs_graph"], 0.9
    ),
    Target(
        "/predict, 32 clients / eager batched forward", "/predict", 32, lambda r: r["vs_raw"], 1.3
    ),
    Target(
        "/gradcam, 32 clients / eager batched forward", "/gradcam", 32, lambda r: r["vs_raw"], 1.3
    ),
    Target(
        "/gradcam, 32 clients / graph batched forward", "/gradcam", 32, lambda r: r["vs_graph"], 0.9
    ),
    Target(
        "/featuremaps, 32 clients / eager batched forward",
        "/featuremaps",
        32,
        lambda r: r["vs_raw"],
        0.85,
    ),
    Target(
        "/featuremaps, 32 clients / graph batched forward",
        "/featuremaps",
        32,
        lambda r: r["vs_graph"],
        0.85,
    ),
    Target(
        "Score-CAM p50 / 129 passes, eager rate",
        "/gradcam?method=scorecam",
        1,
        lambda r: r["p50_vs_raw_passes"],
        1.5,
        most=True,
    ),
    Target(
        "Score-CAM p50 / 129 passes, graph rate",
        "/gradcam?method=scorecam",
        1,
        lambda r: r["p50_vs_graph_passes"],
        1.5,
        most=True,
    ),
]


def figures(reports: list[dict]) -> list[tuple[str, float, dict[str, float], bool]]:
    """``(name, bound, {server: figure}, most)`` for every target found in ``reports``, then the
    cold starts (seconds, at most 10), the largest of the reports per server."""
    found = []
    for target in TARGETS:
        values: dict[str, float] = {}
        for report in reports:
            for r in report["results"]:
                if r["path"] == target.path and r["concurrency"] == target.clients:
                    figure = target.value(r)
                    if figure is not None:
                        values[r["server"]] = figure
        if values:
            found.append((target.name, target.bound, values, target.most))
    starts: dict[str, float] = {}
    for report in reports:
        for server, seconds in report.get("cold_start_s", {}).items():
            starts[server] = max(starts.get(server, 0.0), seconds)
    if starts:
        found.append(("cold start to /readyz 200 (s, slowest)", 10.0, starts, True))
    return found


def plot(found: list[tuple[str, float, dict[str, float], bool]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    columns = 4
    rows = -(-len(found) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(11, 2.3 * rows), dpi=80, squeeze=False)
    for axis, (name, bound, values, most) in zip(axes.flat, found, strict=False):
        labels = list(values)
        colours = ["#bbbbbb" if label == "before" else "#1f77b4" for label in labels]
        axis.bar(labels, [values[label] for label in labels], color=colours)
        for x, label in enumerate(labels):
            axis.annotate(f"{values[label]:.2f}", (x, values[label]), ha="center", va="bottom")
        axis.axhline(bound, color="red", linestyle="--", linewidth=1)
        axis.set_title(f"{name}\n(target {'<=' if most else '>='} {bound:g})", fontsize=7)
        axis.set_ylim(0, max(bound, *values.values()) * 1.25)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(found) :]:
        axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="bench.http_load JSON reports")
    parser.add_argument("--plot", type=Path, default=Path("docs/targets.png"))
    args = parser.parse_args()
    found = figures([json.loads(path.read_text()) for path in args.reports])
    servers = list(dict.fromkeys(server for _, _, values, _ in found for server in values))
    print("| target | bound | " + " | ".join(servers) + " | met (last) |")
    print("| --- | ---: | " + " | ".join("---:" for _ in servers) + " | --- |")
    for name, bound, values, most in found:
        cells = " | ".join(f"{values[s]:.2f}" if s in values else "" for s in servers)
        last = values.get(servers[-1])
        met = (
            "" if last is None else ("yes" if (last <= bound if most else last >= bound) else "NO")
        )
        print(f"| {name} | {'<=' if most else '>='} {bound:g} | {cells} | {met} |")
    plot(found, args.plot)
    print(f"written: {args.plot}")


if __name__ == "__main__":
    main()
