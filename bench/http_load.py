"""HTTP throughput and latency of the real server, against the model's own batched throughput.

Starts ``python -m service`` on a free loopback port and drives it with a bounded async httpx load
generator (loopback only; each phase has a time limit). Measured in the same run:

- ``/predict`` and ``/gradcam`` at concurrency 1, 8, 16 and 32: images/s, p50 and p99 latency;
- the model's raw batched forward throughput (``inference_mode``, batch 4 on every core: its
  fastest single-stream setting here) in this process while the server is idle, and the ratio of
  each phase's throughput to it;
- the server's RSS before and after 2,000 ``/gradcam`` requests (after warm-up);
- a plot of throughput against concurrency (PNG).

The machine this runs on is shared: its speed drifts by tens of percent within a minute. So each
phase alternates short raw-model slices with short load slices, several rounds, and compares the
totals: both sides see the same drift.

    python -m bench.http_load                           # efficientnet_lite0, the service's defaults
    python -m bench.http_load --env EXPLAIN_BATCH_THREADS=1 EXPLAIN_TORCH_THREADS=2 EXPLAIN_MAX_BATCH_SIZE=4 \
        --json bench/out/one_batch_thread.json --plot bench/out/one_batch_thread.png
    python -m bench.http_load --rounds 2 --rss-requests 200   # a quick look

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
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

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

    def summary(self) -> dict:
        images_per_s = len(self.latencies) / self.seconds
        raw = self.raw_images / self.raw_seconds
        single = statistics.median(self.single_times) * 1000 if self.single_times else None
        p50 = statistics.median(self.latencies) * 1000
        return {
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
    """The bare model in this process: batched forwards under inference_mode, no HTTP."""

    def __init__(self, spec: str, batch: int, threads: int) -> None:
        torch.set_num_threads(threads)
        self.loaded = load_model(spec)
        self.inputs = torch.randn(batch, 3, *self.loaded.preprocess.input_size)
        self.single = self.inputs[:1].clone()
        with torch.inference_mode():
            for _ in range(2):
                self.loaded.model(self.inputs)
                self.loaded.model(self.single)

    def run_single(self, seconds: float, phase: Phase) -> None:
        """One image at a time on every core: the latency a lone request cannot beat."""
        model, x = self.loaded.model, self.single
        with torch.inference_mode():
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                call = time.perf_counter()
                model(x)
                phase.single_times.append(time.perf_counter() - call)

    def run(self, seconds: float, phase: Phase) -> None:
        model, x = self.loaded.model, self.inputs
        with torch.inference_mode():
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                model(x)
                phase.raw_images += len(x)
        phase.raw_seconds += time.perf_counter() - started


def plot(results: list[dict], path: Path, title: str = "Throughput against concurrency") -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for endpoint in ("/predict", "/gradcam", "/featuremaps"):
        points = [r for r in results if r["path"] == endpoint]
        if not points:
            continue
        axis.plot(
            [p["concurrency"] for p in points],
            [p["images_per_s"] for p in points],
            "o-",
            label=endpoint,
        )
    predict = [r for r in results if r["path"] == "/predict"]
    axis.plot(
        [r["concurrency"] for r in predict],
        [r["raw_images_per_s"] for r in predict],
        "--",
        color="grey",
        label="raw batched forward (same phases)",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--endpoints", nargs="+", default=["/predict", "/gradcam"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 16, 32])
    parser.add_argument("--rounds", type=int, default=5, help="raw/load slice pairs per phase")
    parser.add_argument("--slice-seconds", type=float, default=8.0, help="load time per round")
    parser.add_argument("--raw-seconds", type=float, default=4.0, help="raw-model time per round")
    parser.add_argument("--rss-requests", type=int, default=2000)
    parser.add_argument(
        "--raw-batch", type=int, default=4, help="the raw model's batch (4: its fastest)"
    )
    parser.add_argument("--raw-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--env", nargs="*", default=[], help="extra EXPLAIN_*=value for the server")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="run the server from this source tree (e.g. an older commit unpacked by git archive)",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/out/http_load.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/throughput.png"))
    args = parser.parse_args()

    port = free_port()
    env = {**os.environ, **dict(e.split("=", 1) for e in args.env)}
    command = [sys.executable, "-m", "service", "--port", str(port), "--models", args.model]
    if args.source is not None:
        env["PYTHONPATH"] = str(args.source.resolve())
    launched = time.perf_counter()
    server = subprocess.Popen(
        [*command, "--log-level", "warning"], env=env, cwd=args.source or None
    )
    base = f"http://127.0.0.1:{port}"
    phases: list[Phase] = []
    server_env = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("EXPLAIN_"))
    try:
        wait_ready(base, server)
        cold_start = time.perf_counter() - launched
        print(f"cold start (process start to /readyz 200): {cold_start:.2f} s")
        body = image_bytes("chelsea")
        raw = RawModel(args.model, args.raw_batch, args.raw_threads)
        print(
            f"{args.model}: server {server_env or 'defaults'}; raw model batch {args.raw_batch}, "
            f"{args.raw_threads} threads; {args.rounds} rounds per phase"
        )
        for path in args.endpoints:
            asyncio.run(load(base, path, body, 1 if "scorecam" in path else 4, 5.0))  # warm-up
            for concurrency in args.concurrency:
                phase = Phase(path, concurrency)
                for _ in range(args.rounds):
                    raw.run(args.raw_seconds, phase)
                    if concurrency == 1:
                        raw.run_single(args.raw_seconds / 2, phase)
                    asyncio.run(
                        load(base, path, body, concurrency, args.slice_seconds, phase=phase)
                    )
                phases.append(phase)
                r = phase.summary()
                print(
                    f"{path:10} c={concurrency:<3} {r['images_per_s']:6.1f} images/s  "
                    f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  raw {r['raw_images_per_s']:5.1f}  "
                    f"x raw {r['vs_raw']:.2f}  ({r['requests']} ok, {r['failures']} failed)"
                )
                if r["single_forward_ms"] is not None:
                    print(
                        f"{'':15} single-image forward {r['single_forward_ms']:.1f} ms: "
                        f"p50 x single {r['p50_vs_single']:.2f}; p50 x {phase.passes} passes "
                        f"at the raw rate {r['p50_vs_raw_passes']:.2f}"
                    )
        rss_before = rss_after = rss_mb(server.pid)
        memory = Phase("/gradcam", 8)
        if args.rss_requests:
            asyncio.run(load(base, "/gradcam", body, 8, 60.0, requests=200))  # warm-up
            rss_before = rss_mb(server.pid)
            memory = asyncio.run(
                load(base, "/gradcam", body, 8, 3600.0, requests=args.rss_requests)
            )
            rss_after = rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)

    results = [phase.summary() for phase in phases]
    print(
        "\n| endpoint | clients | images/s | p50 ms | p99 ms | raw images/s | x raw "
        "| single forward ms | p50 x single |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        single = r["single_forward_ms"]
        print(
            f"| `{r['path']}` | {r['concurrency']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['raw_images_per_s']:.1f} | {r['vs_raw']:.2f} | "
            + ("|" if single is None else f"{single:.1f} | {r['p50_vs_single']:.2f} |")
        )
    single = {r["path"]: r["p50_ms"] for r in results if r["concurrency"] == 1}
    if {"/predict", "/gradcam"} <= set(single):
        print(
            f"\n/gradcam p50 / /predict p50, one client: {single['/gradcam'] / single['/predict']:.2f}"
        )
    print(
        f"RSS over {len(memory.latencies)} /gradcam requests after warm-up: {rss_before:.1f} MB -> "
        f"{rss_after:.1f} MB ({rss_after - rss_before:+.1f} MB)"
    )
    report = {
        "model": args.model,
        "cold_start_s": cold_start,
        "results": results,
        "rss_mb": {"before": rss_before, "after": rss_after, "requests": len(memory.latencies)},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    settings = server_env.replace("EXPLAIN_", "").lower() if server_env else "default settings"
    plot(results, args.plot, f"{args.model} over HTTP, {os.cpu_count()} cores, {settings}")
    print(f"written: {args.json}, {args.plot}")


if __name__ == "__main__":
    main()
