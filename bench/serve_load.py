"""The service on Ray Serve next to ``python -m service``: the same load on both, in one run.

Starts ``python -m service`` (the service's defaults) and ``python -m service --ray --replicas N``
(a local Ray cluster of every core, started by that command; each replica reserves
``--replica-cpus`` CPUs and plans its threads from them), both with efficientnet_lite0 on free
loopback ports. Then, for each endpoint, each round runs a load slice on one and then the other
(the order alternates from round to round), ``--concurrency`` clients each posting scikit-image's
``chelsea`` as a raw body and posting again on the answer; the ratio compares the totals over the
rounds, which both saw the same drift of this shared machine. The idle side still runs: the Ray
cluster's own processes (GCS, raylet, Serve's controller and proxy) take what they take while
``python -m service`` is measured, and the other way round.

    python -m bench.serve_load                                  # /predict, 32 clients, 2 replicas
    python -m bench.serve_load --endpoints /predict /gradcam --rounds 3
    python -m bench.serve_load --replicas 1 --replica-cpus 2    # one replica on both cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.http_load import Phase, free_port, load, percentile, wait_ready
from tests.realserver import stop_process
from tests.service.conftest import image_bytes


def start(command: list[str]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    server = subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"])
    return f"http://127.0.0.1:{port}", server


def summary(name: str, phase: Phase) -> dict:
    return {
        "server": name,
        "path": phase.path,
        "concurrency": phase.concurrency,
        "requests": len(phase.latencies),
        "failures": phase.failures,
        "images_per_s": len(phase.latencies) / phase.seconds,
        "p50_ms": statistics.median(phase.latencies) * 1000,
        "p99_ms": percentile(phase.latencies, 0.99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--endpoints", nargs="+", default=["/predict"])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4, help="slice pairs per endpoint")
    parser.add_argument("--slice-seconds", type=float, default=8.0)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--replica-cpus", type=float, default=1.0)
    parser.add_argument("--json", type=Path, default=Path("bench/out/serve_load.json"))
    args = parser.parse_args()

    service = [sys.executable, "-m", "service", "--models", args.model]
    ray = [*service, "--ray", "--replicas", str(args.replicas)]
    ray += ["--replica-cpus", str(args.replica_cpus)]
    names = ["python -m service", f"Ray Serve ({args.replicas} x {args.replica_cpus:g} CPU)"]
    servers = [start(service), start(ray)]
    results = []
    try:
        for base, server in servers:
            wait_ready(base, server)
        body = image_bytes("chelsea")
        for path in args.endpoints:
            phases = [Phase(path, args.concurrency) for _ in servers]
            for base, _ in servers:  # warm-up
                asyncio.run(load(base, path, body, args.concurrency, 5.0))
            for round_ in range(args.rounds):
                order = [0, 1] if round_ % 2 == 0 else [1, 0]
                for i in order:
                    base = servers[i][0]
                    asyncio.run(
                        load(
                            base, path, body, args.concurrency, args.slice_seconds, phase=phases[i]
                        )
                    )
            found = [summary(name, phase) for name, phase in zip(names, phases, strict=True)]
            for r in found:
                print(
                    f"{path:10} c={args.concurrency:<3} {r['server']:28} "
                    f"{r['images_per_s']:6.1f} images/s  p50 {r['p50_ms']:7.1f} ms  "
                    f"p99 {r['p99_ms']:7.1f} ms  ({r['requests']} ok, {r['failures']} failed)"
                )
            ratio = found[1]["images_per_s"] / found[0]["images_per_s"]
            print(f"{path}: Ray Serve / python -m service = {ratio:.2f}")
            results += found
    finally:
        for _, server in servers:
            stop_process(server)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"model": args.model, "results": results}, indent=1))
    print(f"written: {args.json}")


if __name__ == "__main__":
    main()
