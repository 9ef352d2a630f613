"""HTTP throughput and latency of the real server, against the model's own batched throughput.

Starts ``python -m service`` on a free loopback port, drives it with a bounded async httpx load
generator (a fixed number of requests per phase, and a time limit), and measures in the same run:

- ``/predict`` and ``/gradcam`` at concurrency 1, 8 and 32: images/s, p50 and p99 latency;
- the model's raw batched forward throughput (``inference_mode``, batch = the server's
  max batch size) in this process while the server is idle, and the ratio of ``/predict``'s
  throughput to it;
- the server's RSS before and after 2,000 ``/gradcam`` requests (after warm-up);
- a plot of throughput against concurrency (PNG).

    python -m bench.http_load                                  # efficientnet_lite0, the defaults
    python -m bench.http_load --requests 64 --rss-requests 200 # a quick look

The load generator shares the machine with the server; on 2 cores its own CPU use (HTTP, JSON)
costs the server some throughput, so the ratio is a lower bound.
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
from pathlib import Path

import httpx
import torch

from explain.models import load_model
from service.settings import Settings
from tests.service.conftest import image_bytes


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
    base: str, path: str, body: bytes, concurrency: int, requests: int, time_limit: float
) -> dict:
    """Send ``requests`` requests with ``concurrency`` in flight; stop early at ``time_limit``."""
    latencies: list[float] = []
    failures = 0
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        deadline = time.perf_counter() + time_limit

        async def worker() -> None:
            nonlocal remaining, failures
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                started = time.perf_counter()
                response = await client.post(
                    path, content=body, headers={"content-type": "image/jpeg"}
                )
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "path": path,
        "concurrency": concurrency,
        "requests": len(latencies),
        "failures": failures,
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


class RawModel:
    """The bare model in this process: batched forwards under inference_mode, no HTTP."""

    def __init__(self, spec: str, batch: int, threads: int) -> None:
        torch.set_num_threads(threads)
        self.loaded = load_model(spec)
        self.inputs = torch.randn(batch, 3, *self.loaded.preprocess.input_size)

    def throughput(self, seconds: float = 4.0) -> float:
        """Images/s over ``seconds`` (after two warm-up batches)."""
        model, x = self.loaded.model, self.inputs
        with torch.inference_mode():
            for _ in range(2):
                model(x)
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                model(x)
                count += len(x)
        return count / (time.perf_counter() - started)


def summarize(trials: list[dict]) -> list[dict]:
    """The median of every number over the trials of each (endpoint, concurrency)."""
    keys = sorted(
        {(t["path"], t["concurrency"]) for t in trials}, key=lambda k: (k[0] != "/predict", k[1])
    )
    summary = []
    for path, concurrency in keys:
        same = [t for t in trials if (t["path"], t["concurrency"]) == (path, concurrency)]
        numbers = {
            name: statistics.median(t[name] for t in same)
            for name in ("images_per_s", "p50_ms", "p99_ms", "raw_images_per_s", "vs_raw")
        }
        summary.append({"path": path, "concurrency": concurrency, **numbers})
    return summary


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    for endpoint in ("/predict", "/gradcam"):
        points = [r for r in results if r["path"] == endpoint]
        axis.plot(
            [p["concurrency"] for p in points],
            [p["images_per_s"] for p in points],
            "o-",
            label=endpoint,
        )
    raw = [r["raw_images_per_s"] for r in results if r["path"] == "/predict"]
    axis.plot(
        [r["concurrency"] for r in results if r["path"] == "/predict"],
        raw,
        "--",
        color="grey",
        label="raw batched forward (same run)",
    )
    axis.set_xscale("log", base=2)
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("images / s")
    axis.set_title("Throughput against concurrency")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=400, help="requests per phase")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per phase, at most")
    parser.add_argument(
        "--repeat", type=int, default=3, help="trials of every phase; medians reported"
    )
    parser.add_argument("--rss-requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--env", nargs="*", default=[], help="extra EXPLAIN_*=value for the server")
    parser.add_argument("--json", type=Path, default=Path("bench/out/http_load.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/throughput.png"))
    args = parser.parse_args()

    port = free_port()
    env = {
        **os.environ,
        "EXPLAIN_TORCH_THREADS": str(args.threads),
        **dict(e.split("=", 1) for e in args.env),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "--port",
            str(port),
            "--models",
            args.model,
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        body = image_bytes("chelsea")
        batch = int(env.get("EXPLAIN_MAX_BATCH_SIZE", Settings().max_batch_size))
        raw_model = RawModel(args.model, batch, args.threads)
        print(
            f"raw: {args.model}, batch {batch}, {args.threads} threads, measured around each phase"
        )
        trials = []
        for trial in range(args.repeat):
            for path in ("/predict", "/gradcam"):
                asyncio.run(load(base, path, body, 4, 20, 60))  # warm-up
                for concurrency in args.concurrency:
                    requests = args.requests if concurrency > 1 else max(50, args.requests // 4)
                    before = raw_model.throughput()
                    result = asyncio.run(
                        load(base, path, body, concurrency, requests, args.time_limit)
                    )
                    result["raw_images_per_s"] = (before + raw_model.throughput()) / 2
                    result["vs_raw"] = result["images_per_s"] / result["raw_images_per_s"]
                    result["trial"] = trial
                    trials.append(result)
                    print(
                        f"trial {trial} {path:10} c={concurrency:<3} {result['images_per_s']:6.1f} images/s  "
                        f"p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
                        f"raw {result['raw_images_per_s']:5.1f}  x raw {result['vs_raw']:.2f}  "
                        f"({result['requests']} ok, {result['failures']} failed)"
                    )

        asyncio.run(load(base, "/gradcam", body, 8, 200, 120))  # warm-up for the memory check
        rss_before = rss_mb(server.pid)
        memory = asyncio.run(load(base, "/gradcam", body, 8, args.rss_requests, 1800))
        rss_after = rss_mb(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)

    results = summarize(trials)
    print(f"\nmedians over {args.repeat} trials")
    print("| endpoint | clients | images/s | p50 ms | p99 ms | raw images/s | x raw |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['path']} | {r['concurrency']} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['raw_images_per_s']:.1f} | {r['vs_raw']:.2f} |"
        )
    ratios = [
        g["p50_ms"] / p["p50_ms"]
        for p in trials
        for g in trials
        if p["trial"] == g["trial"]
        and p["concurrency"] == g["concurrency"] == 1
        and (p["path"], g["path"]) == ("/predict", "/gradcam")
    ]
    if ratios:
        shown = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"/gradcam p50 / /predict p50, one client, per trial: {shown} (median {statistics.median(ratios):.2f})"
        )
    print(
        f"RSS over {memory['requests']} /gradcam requests after warm-up: {rss_before:.1f} MB -> "
        f"{rss_after:.1f} MB ({rss_after - rss_before:+.1f} MB)"
    )
    report = {
        "model": args.model,
        "results": results,
        "trials": trials,
        "rss_mb": {"before": rss_before, "after": rss_after, "requests": memory["requests"]},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    plot(results, args.plot)
    print(f"written: {args.json}, {args.plot}")


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
        time.sleep(0.2)


if __name__ == "__main__":
    main()
