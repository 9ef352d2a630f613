"""``explain-batch`` throughput against the model's own batched forward pass, side by side.

In one run, on a folder of real photos (scikit-image's chelsea, coffee, rocket and astronaut as
JPEGs, copied to ``--images`` files):

- the model's raw batched forward throughput (``inference_mode``, batch 4 on every core, random
  input: no decoding, no files), as in ``bench/http_load.py``;
- the ``local`` engine: the whole command's work (find the files, read and hash them, decode,
  preprocess, run, write ``results.jsonl``), one engine kept open across slices;
- the ``http`` engine against ``python -m service`` with its default settings, started here on
  a free loopback port;
- with ``--ray``, the ``ray`` engine on a local Ray cluster of every core, started here once (each
  slice is one run: a Ray Dataset whose actor pool loads the model, as every run of the command
  does).

Besides each slice's whole time, the steady rate counts the images between a slice's first and
last outcome: what a long run approaches once its engine's start-up (the ``ray`` engine's actors)
is paid.

The machine is shared and its speed drifts, so each round runs a raw slice before each engine
slice and the ratios compare totals over the rounds.

    python -m bench.batch                                    # predict, 5 rounds
    python -m bench.batch --endpoint gradcam --rounds 3
    python -m bench.batch --batch-sizes 2 4 8 --no-http      # the local engine's batch size
    python -m bench.batch --ray --no-http --images 600 --rounds 3   # ray against local
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.http_load import RawModel, free_port, wait_ready
from explain_batch.engines import RunConfig, engine_module
from explain_batch.run import RunRequest, run
from tests.conftest import photo

PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


@dataclass
class Totals:
    images: int = 0
    seconds: float = 0.0
    raw_images: int = 0
    raw_seconds: float = 0.0
    steady_images: int = 0
    steady_seconds: float = 0.0
    rounds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    @property
    def steady_rate(self) -> float:
        return self.steady_images / self.steady_seconds

    @property
    def raw_rate(self) -> float:
        return self.raw_images / self.raw_seconds


def make_inputs(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    encoded = []
    for name in PHOTOS:
        buffer = io.BytesIO()
        photo(name).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    for i in range(count):
        (folder / f"{i:05d}-{PHOTOS[i % len(PHOTOS)]}.jpg").write_bytes(encoded[i % len(encoded)])


class Timed:
    """An engine whose outcomes are timed: the first and the last of each run."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.model, self.batch_size = engine.model, engine.batch_size
        self.times: list[float] = []

    def score(self, paths):
        self.times = []
        for outcome in self.engine.score(paths):
            self.times.append(time.perf_counter())
            yield outcome

    def close(self) -> None:
        self.engine.close()


def raw_slice(raw: RawModel, threads: int, seconds: float, totals: Totals) -> None:
    torch.set_num_threads(threads)
    raw.run(seconds, totals)


def engine_slice(request: RunRequest, engine, torch_threads: int | None, totals: Totals) -> None:
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    started = time.perf_counter()
    status = run(request, engine)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"the run failed with exit status {status}")
    images = json.loads(Path(request.out, "run.json").read_text())["counts"]["ok"]
    totals.images += images
    totals.seconds += seconds
    totals.rounds.append(images / seconds)
    times = engine.times
    totals.steady_images += len(times) - 1
    totals.steady_seconds += times[-1] - times[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--endpoint", default="predict")
    parser.add_argument("--images", type=int, default=160, help="images per engine slice")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--raw-seconds", type=float, default=4.0)
    parser.add_argument("--raw-batch", type=int, default=4)
    parser.add_argument("--raw-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[None], help="local engine")
    parser.add_argument("--concurrency", type=int, default=8, help="http engine")
    parser.add_argument("--http-batch-size", type=int, default=None)
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--ray", action="store_true", help="add the ray engine (a local cluster)")
    parser.add_argument("--ray-actors", type=int, default=None)
    parser.add_argument("--ray-batch-size", type=int, default=None)
    parser.add_argument("--json", type=Path, default=Path("bench/out/batch.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    server = None
    engines = []
    try:
        make_inputs(work / "in", args.images)
        raw = RawModel(args.model, args.raw_batch, args.raw_threads)
        contenders: list[tuple[str, RunRequest, object, int | None]] = []

        def contend(kind: str, config: RunConfig, out: str) -> tuple[Timed, RunRequest]:
            engine = Timed(engine_module(kind).open_engine(config))
            engines.append(engine)
            request = RunRequest(
                [str(work / "in")], str(work / out), kind, config, overwrite=True, progress=False
            )
            return engine, request

        for size in args.batch_sizes:
            config = RunConfig(args.endpoint, args.model, batch_size=size)
            engine, request = contend("local", config, f"local-{size}")
            name = f"local (batch {engine.batch_size})"
            contenders.append((name, request, engine, engine.engine.torch_threads))
        if not args.no_http:
            port = free_port()
            command = [sys.executable, "-m", "service", "--port", str(port), "--models", args.model]
            server = subprocess.Popen([*command, "--log-level", "warning"])
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, server)
            options = {
                "url": url,
                "concurrency": args.concurrency,
                "api_key": None,
                "timeout": 300.0,
            }
            config = RunConfig(
                args.endpoint, args.model, batch_size=args.http_batch_size, engine_options=options
            )
            engine, request = contend("http", config, "http")
            name = f"http (batch {engine.batch_size}, concurrency {args.concurrency})"
            contenders.append((name, request, engine, None))
        if args.ray:
            options = {"ray_address": None, "actors": args.ray_actors, "cpus_per_actor": 1}
            config = RunConfig(
                args.endpoint, args.model, batch_size=args.ray_batch_size, engine_options=options
            )
            engine, request = contend("ray", config, "ray")
            name = f"ray (batch {engine.batch_size}, {engine.engine.actors} actors)"
            contenders.append((name, request, engine, None))

        print(
            f"{args.model} {args.endpoint}: {args.images} JPEGs per slice, raw forward batch "
            f"{args.raw_batch} on {args.raw_threads} threads, {args.rounds} rounds"
        )
        for _, request, engine, threads in contenders:  # warm-up
            engine_slice(request, engine, threads, Totals())
        totals = {name: Totals() for name, *_ in contenders}
        for _ in range(args.rounds):
            for name, request, engine, threads in contenders:
                raw_slice(raw, args.raw_threads, args.raw_seconds, totals[name])
                engine_slice(request, engine, threads, totals[name])
        results = []
        for name, t in totals.items():
            ratio = t.rate / t.raw_rate
            results.append(
                {
                    "engine": name,
                    "images_per_s": t.rate,
                    "steady_images_per_s": t.steady_rate,
                    "raw_images_per_s": t.raw_rate,
                    "x_raw": ratio,
                    "steady_x_raw": t.steady_rate / t.raw_rate,
                    "rounds": t.rounds,
                }
            )
            print(
                f"{name:40} {t.rate:6.1f} images/s   raw {t.raw_rate:6.1f}   x raw {ratio:.2f}   "
                f"steady {t.steady_rate:6.1f} (x raw {t.steady_rate / t.raw_rate:.2f})   "
                f"rounds {' '.join(f'{r:.1f}' for r in t.rounds)}"
            )
        first = results[0]
        for result in results[1:]:
            print(
                f"{result['engine']} / {first['engine']}: whole slices "
                f"{result['x_raw'] / first['x_raw']:.2f}, steady "
                f"{result['steady_x_raw'] / first['steady_x_raw']:.2f}"
            )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2
            )
        )
    finally:
        for engine in engines:
            engine.close()
        if server is not None:
            server.terminate()
            server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
