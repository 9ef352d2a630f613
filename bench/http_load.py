"""HTTP throughput and latency of the real server, against the model's own forward passes.

Starts ``python -m service`` on a free loopback port and drives it with a bounded async httpx load
generator (loopback only; each phase has a time limit). Measured in the same run:

- each endpoint (default ``/predict`` and ``/gradcam``; any path, e.g.
  ``/featuremaps`` or ``/gradcam?method=scorecam``) at concurrency 1, 8, 16 and 32: images/s,
  p50 and p99 latency;
- the model's raw batched forward throughput in this process while the server is idle (batch 4 on
  every core: its fastest single-stream setting here), eager (``inference_mode``) and as the
  optimised path's whole-model ONNX Runtime graph, and the ratio of each phase's throughput to
  both; at concurrency 1 also the single-image forward on every core (eager and graph), and the
  p50 against it and against the phase's forward passes (Score-CAM: 1 + 128) at the raw rates;
- the time from starting the server's process to its first ``/readyz`` 200 (cold start);
- the server's RSS before and after 2,000 ``/gradcam`` requests (after warm-up);
- a plot of throughput against concurrency (PNG).

``--before OLD_TREE`` runs a second server from an older source tree (e.g. ``git archive main``
unpacked), labelled ``before`` beside this tree's ``after``: every round of a phase measures the
raw model, then loads one server, then the other, so the two are compared side by side.
``bench/targets.py`` turns the JSON reports into the table and plot of the performance targets.

The machine this runs on is shared: its speed drifts by tens of percent within a minute. So each
phase alternates short raw-model slices with short load slices, several rounds, and compares the
totals: both see the same drift.

    python -m bench.http_load                           # efficientnet_lite0, the service's defaults
    python -m bench.http_load --env EXPLAIN_BATCH_THREADS=1 EXPLAIN_TORCH_THREADS=2 EXPLAIN_MAX_BATCH_SIZE=4 \
        --json bench/out/one_batch_thread.json --plot bench/out/one_batch_thread.png
    python -m bench.http_load --rounds 2 --rss-requests 200   # a quick look
    git archive main | tar -x -C /tmp/main-tree
    python -m bench.http_load --before /tmp/main-tree --endpoints /predict --concurrency 1 32

The load generator shares the 2 cores with the server; its own CPU use (HTTP, JSON) is taken from
the server, so the ratios are lower bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from explain.inference import ModelGraphs
from explain.models import load_model
from tests.service.conftest import image_bytes

SCORECAM_CHANNELS = 128
"""The channels the service's Score-CAM scores by default (``EXPLAIN_SCORECAM_MAX_CHANNELS``)."""


@dataclass
class Phase:
    """One endpoint at one concurrency, accumulated over rounds."""

    path: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    seconds: float = 0.0
    raw_images: int = 0
    raw_seconds: float = 0.0
    single_times: list[float] = field(default_factory=list)
    server: str = "server"
    graph_images: int = 0
    graph_seconds: float = 0.0
    graph_single_times: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        images_per_s = len(self.latencies) / self.seconds
        raw = self.raw_images / self.raw_seconds
        single = statistics.median(self.single_times) * 1000 if self.single_times else None
        p50 = statistics.median(self.latencies) * 1000
        graph = self.graph_images / self.graph_seconds if self.graph_seconds else None
        graph_single = (
            statistics.median(self.graph_single_times) * 1000 if self.graph_single_times else None
        )
        return {
            "server": self.server,
            "path": self.path,
            "concurrency": self.concurrency,
            "requests": len(self.latencies),
            "failures": self.failures,
            "images_per_s": images_per_s,
            "p50_ms": p50,
            "p99_ms": percentile(self.latencies, 0.99) * 1000,
            "raw_images_per_s": raw,
            "vs_raw": images_per_s / raw,
            "single_forward_ms": single,
            "p50_vs_single": None if single is None else p50 / single,
            "p50_vs_raw_passes": p50 / 1000 * raw / self.passes,
            "graph_images_per_s": graph,
            "vs_graph": None if graph is None else images_per_s / graph,
            "graph_single_forward_ms": graph_single,
            "p50_vs_graph_single": None if graph_single is None else p50 / graph_single,
            "p50_vs_graph_passes": None if graph is None else p50 / 1000 * graph / self.passes,
        }

    @property
    def passes(self) -> int:
        """Forward passes one request of this phase costs (Score-CAM: 1 + its channels)."""
        return 1 + SCORECAM_CHANNELS if "scorecam" in self.path else 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(
    base: str,
    path: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    requests: int = 10**9,
    phase: Phase | None = None,
) -> Phase:
    """Keep ``concurrency`` requests in flight for ``seconds`` (or until ``requests`` were sent),
    then wait for the last answers; the slice's time runs until the last one."""
    phase = phase or Phase(path, concurrency)
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post(
                    path, content=body, headers={"content-type": "image/jpeg"}
                )
                if response.status_code == 200:
                    phase.latencies.append(time.perf_counter() - started)
                else:
                    phase.failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        phase.seconds += time.perf_counter() - started
    return phase


class RawModel:
    """The bare model in this process, no HTTP: batched forwards and single-image forwards, both
    eager (``inference_mode``) and, where one can be built, as the whole-model ONNX Runtime graph
    of the optimised inference path (:mod:`explain.inference`)."""

    def __init__(self, spec: str, batch: int, threads: int, graph: bool = True) -> None:
        torch.set_num_threads(threads)
        self.loaded = load_model(spec)
        self.inputs = torch.randn(batch, 3, *self.loaded.preprocess.input_size)
        self.single = self.inputs[:1].clone()
        self.graph = None
        if graph:
            size = self.loaded.preprocess.input_size
            self.graph = ModelGraphs(self.loaded.model, self.loaded.hooks, size).full()
        with torch.inference_mode():
            for _ in range(2):
                for x in (self.inputs, self.single):
                    self.loaded.model(x)
                    if self.graph is not None:
                        self.graph(x)

    def _forwards(self) -> list[tuple[Callable[[torch.Tensor], Any], str]]:
        """Each forward with the prefix of its :class:`Phase` fields."""
        forwards: list[tuple[Callable[[torch.Tensor], Any], str]] = [(self.loaded.model, "raw_")]
        if self.graph is not None:
            forwards.append((self.graph, "graph_"))
        return forwards

    def run_single(self, seconds: float, phase: Phase) -> None:
        """One image at a time on every core: the latency a lone request cannot beat."""
        with torch.inference_mode():
            for forward, prefix in self._forwards():
                times = getattr(phase, f"{prefix.replace('raw_', '')}single_times")
                started = time.perf_counter()
                while time.perf_counter() - started < seconds:
                    call = time.perf_counter()
                    forward(self.single)
                    times.append(time.perf_counter() - call)

    def run(self, seconds: float, phase: Phase) -> None:
        """Batched forwards for ``seconds`` each (eager, then the graph)."""
        with torch.inference_mode():
            for forward, prefix in self._forwards():
                images = 0
                started = time.perf_counter()
                while time.perf_counter() - started < seconds:
                    forward(self.inputs)
                    images += len(self.inputs)
                setattr(phase, f"{prefix}images", getattr(phase, f"{prefix}images") + images)
                elapsed = time.perf_counter() - started
                setattr(phase, f"{prefix}seconds", getattr(phase, f"{prefix}seconds") + elapsed)


def plot(results: list[dict], path: Path, title: str = "Throughput against concurrency") -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    labels = list(dict.fromkeys(r["server"] for r in results))
    for label in labels:
        for endpoint in ("/predict", "/gradcam", "/featuremaps"):
            points = [r for r in results if r["path"] == endpoint and r["server"] == label]
            if points:
                axis.plot(
                    [p["concurrency"] for p in points],
                    [p["images_per_s"] for p in points],
                    "o-" if label != "before" else "o:",
                    label=endpoint if len(labels) == 1 else f"{endpoint} ({label})",
                )
    predict = [r for r in results if r["path"] == "/predict" and r["server"] == labels[-1]]
    axis.plot(
        [r["concurrency"] for r in predict],
        [r["raw_images_per_s"] for r in predict],
        "--",
        color="grey",
        label="raw batched forward, eager (same phases)",
    )
    axis.set_xscale("log", base=2)
    ticks = sorted({r["concurrency"] for r in results})
    axis.set_xticks(ticks, [str(t) for t in ticks])
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("images / s")
    axis.set_ylim(bottom=0)
    axis.set_title(title)
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit("the server did not become ready")
        time.sleep(0.05)


@dataclass
class Server:
    """One ``python -m service`` process under load."""

    label: str
    base: str
    process: subprocess.Popen
    cold_start: float = 0.0


def start_server(label: str, model: str, env: dict[str, str], source: Path | None) -> Server:
    """Start a server (from ``source``, a source tree, or this one) and wait for ``/readyz``."""
    port = free_port()
    env = dict(env)
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    command = [sys.executable, "-m", "service", "--port", str(port), "--models", model]
    launched = time.perf_counter()
    process = subprocess.Popen([*command, "--log-level", "warning"], env=env, cwd=source)
    server = Server(label, f"http://127.0.0.1:{port}", process)
    try:
        wait_ready(server.base, process)
    except BaseException:
        stop_server(server)
        raise
    server.cold_start = time.perf_counter() - launched
    print(f"{label}: cold start (process start to /readyz 200): {server.cold_start:.2f} s")
    return server


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(60)


def describe(phase: Phase) -> str:
    r = phase.summary()
    line = (
        f"{phase.server:7} {phase.path:10} c={phase.concurrency:<3} {r['images_per_s']:6.1f} images/s  "
        f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  raw {r['raw_images_per_s']:5.1f}  "
        f"x raw {r['vs_raw']:.2f}"
    )
    if r["vs_graph"] is not None:
        line += f"  x graph {r['vs_graph']:.2f}"
    line += f"  ({r['requests']} ok, {r['failures']} failed)"
    if r["single_forward_ms"] is not None:
        line += (
            f"\n{'':23} single-image forward {r['single_forward_ms']:.1f} ms: p50 x single "
            f"{r['p50_vs_single']:.2f}; p50 x {phase.passes} passes at the raw rate "
            f"{r['p50_vs_raw_passes']:.2f}"
        )
    if r["graph_single_forward_ms"] is not None:
        line += (
            f"\n{'':23} graph single-image forward {r['graph_single_forward_ms']:.1f} ms: p50 x "
            f"graph single {r['p50_vs_graph_single']:.2f}; p50 x {phase.passes} passes at the "
            f"graph's rate {r['p50_vs_graph_passes']:.2f}"
        )
    return line


def table(results: list[dict]) -> str:
    def cell(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    rows = [
        "| server | endpoint | clients | images/s | p50 ms | p99 ms | raw images/s | x raw "
        "| graph images/s | x graph | single ms | p50 x single | graph single ms "
        "| p50 x graph single |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for r in results:
        rows.append(
            f"| {r['server']} | `{r['path']}` | {r['concurrency']} | {r['images_per_s']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['raw_images_per_s']:.1f} | "
            f"{r['vs_raw']:.2f} | {cell(r['graph_images_per_s'], 1)} | {cell(r['vs_graph'], 2)} | "
            f"{cell(r['single_forward_ms'], 1)} | {cell(r['p50_vs_single'], 2)} | "
            f"{cell(r['graph_single_forward_ms'], 1)} | {cell(r['p50_vs_graph_single'], 2)} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--endpoints", nargs="+", default=["/predict", "/gradcam"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 16, 32])
    parser.add_argument("--rounds", type=int, default=5, help="raw/load slice pairs per phase")
    parser.add_argument("--slice-seconds", type=float, default=8.0, help="load time per round")
    parser.add_argument(
        "--raw-seconds", type=float, default=4.0, help="raw-model time per round and forward"
    )
    parser.add_argument("--rss-requests", type=int, default=2000)
    parser.add_argument(
        "--raw-batch", type=int, default=4, help="the raw model's batch (4: its fastest)"
    )
    parser.add_argument("--raw-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--no-graph",
        action="store_true",
        help="measure the eager raw model only (not the optimised path's ONNX Runtime graph)",
    )
    parser.add_argument("--env", nargs="*", default=[], help="extra EXPLAIN_*=value for the server")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="run the server from this source tree (e.g. an older commit unpacked by git archive)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="also run a server from this older source tree, labelled 'before' (this tree's is "
        "'after'): each round loads one, then the other",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/out/http_load.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/throughput.png"))
    args = parser.parse_args()

    env = {**os.environ, **dict(e.split("=", 1) for e in args.env)}
    server_env = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("EXPLAIN_"))
    trees = [("server", args.source)]
    if args.before is not None:
        trees = [("before", args.before), ("after", args.source)]
    servers: list[Server] = []
    phases: list[Phase] = []
    memory: dict[str, dict[str, float]] = {}
    try:
        for label, source in trees:  # one after the other: cold starts do not overlap
            servers.append(start_server(label, args.model, env, source))
        body = image_bytes("chelsea")
        raw = RawModel(args.model, args.raw_batch, args.raw_threads, graph=not args.no_graph)
        print(
            f"{args.model}: server {server_env or 'defaults'}; raw model batch {args.raw_batch}, "
            f"{args.raw_threads} threads; {args.rounds} rounds per phase"
        )
        for path in args.endpoints:
            for server in servers:  # warm-up
                asyncio.run(load(server.base, path, body, 1 if "scorecam" in path else 4, 5.0))
            for concurrency in args.concurrency:
                reference = Phase(path, concurrency)
                loaded = [Phase(path, concurrency, server=s.label) for s in servers]
                for _ in range(args.rounds):
                    raw.run(args.raw_seconds, reference)
                    if concurrency == 1:
                        raw.run_single(args.raw_seconds / 2, reference)
                    for server, phase in zip(servers, loaded, strict=True):
                        asyncio.run(
                            load(
                                server.base,
                                path,
                                body,
                                concurrency,
                                args.slice_seconds,
                                phase=phase,
                            )
                        )
                for phase in loaded:
                    for name in (
                        "raw_images",
                        "raw_seconds",
                        "single_times",
                        "graph_images",
                        "graph_seconds",
                        "graph_single_times",
                    ):
                        setattr(phase, name, getattr(reference, name))
                    phases.append(phase)
                    print(describe(phase))
        if args.rss_requests:
            for server in servers:
                asyncio.run(load(server.base, "/gradcam", body, 8, 60.0, requests=200))  # warm-up
                before = rss_mb(server.process.pid)
                done = asyncio.run(
                    load(server.base, "/gradcam", body, 8, 3600.0, requests=args.rss_requests)
                )
                after = rss_mb(server.process.pid)
                memory[server.label] = {
                    "before": before,
                    "after": after,
                    "requests": len(done.latencies),
                }
                print(
                    f"{server.label}: RSS over {len(done.latencies)} /gradcam requests after "
                    f"warm-up: {before:.1f} MB -> {after:.1f} MB ({after - before:+.1f} MB)"
                )
    finally:
        for server in servers:
            stop_server(server)

    results = [phase.summary() for phase in phases]
    print("\n" + table(results))
    for server in servers:
        single = {
            r["path"]: r["p50_ms"]
            for r in results
            if r["concurrency"] == 1 and r["server"] == server.label
        }
        if {"/predict", "/gradcam"} <= set(single):
            ratio = single["/gradcam"] / single["/predict"]
            print(f"{server.label}: /gradcam p50 / /predict p50, one client: {ratio:.2f}")
    report = {
        "model": args.model,
        "env": server_env,
        "cold_start_s": {s.label: s.cold_start for s in servers},
        "results": results,
        "rss_mb": memory,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    settings = server_env.replace("EXPLAIN_", "").lower() if server_env else "default settings"
    plot(results, args.plot, f"{args.model} over HTTP, {os.cpu_count()} cores, {settings}")
    print(f"written: {args.json}, {args.plot}")


if __name__ == "__main__":
    main()
