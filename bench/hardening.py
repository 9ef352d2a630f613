"""What a hostile client can make the real server spend: time, memory, answer size, shutdown time.

Starts ``python -m service`` from a source tree (this one, or an older checkout given with
``--source``) on a free loopback port, runs each case against it and prints one JSON object per case
with the figures: status, error code, seconds, answer bytes, the server's peak RSS (sampled with
psutil every 20 ms) and its RSS afterwards. Every request loop is bounded in count and time.

    python -m bench.hardening                                  # every case, this tree
    python -m bench.hardening --source /tmp/old --only json    # one group, an older checkout
    python -m bench.hardening --targets 10000 --big-images 16  # the full-size reproductions
    python -m bench.hardening --only big_images --env MALLOC_ARENA_MAX=2   # an allocator setting

Cases that change the server's state for good (signals, abandoned work) start a server of their
own. The heavy ones (``targets``, ``big_images``) take gigabytes on unprotected code: run them
alone, under ``flock -x /work/cpu.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.hardening_server import MB, ROOT, Server, jpeg, png16, post, serving
from tests.realserver import closed_within

# -- cases ----------------------------------------------------------------------------------------


def case_targets(server: Server, args) -> dict:
    body = {
        "images": [base64.b64encode(jpeg()).decode()],
        "target": [i % 1000 for i in range(args.targets)],
    }
    content = json.dumps(body).encode()
    return {
        "body_bytes": len(content),
        **post(server, "/gradcam", content=content, headers={"content-type": "application/json"}),
    }


def case_layers(server: Server, args) -> dict:
    layers = [
        layer["name"]
        for layer in httpx.get(server.base + "/models/efficientnet_lite0").json()["layers"]
        if layer["spatial"]
    ]
    repeated = (layers * (3000 // len(layers) + 1))[:3000]
    body = {"images": [base64.b64encode(jpeg()).decode()], "layers": repeated, "max_channels": 4096}
    content = json.dumps(body).encode()
    return {
        "body_bytes": len(content),
        "distinct_layers": len(set(repeated)),
        **post(
            server, "/featuremaps", content=content, headers={"content-type": "application/json"}
        ),
    }


def case_big_images(server: Server, args) -> dict:
    """``--big-images`` 16-bit PNGs of ``--big-side`` pixels a side in one request, and a small
    /predict on the other model sent one second later."""
    data = png16(args.big_side)
    files = [("image", (f"{i}.png", data, "image/png")) for i in range(args.big_images)]
    other: dict = {}

    def small() -> None:
        time.sleep(1.0)
        started = time.monotonic()
        response = httpx.post(
            server.base + "/predict?model=alexnet",
            content=jpeg(),
            headers={"content-type": "image/jpeg"},
            timeout=300,
        )
        other.update(status=response.status_code, seconds=round(time.monotonic() - started, 2))

    thread = threading.Thread(target=small)
    thread.start()
    figures = post(server, "/predict", files=files)
    thread.join()
    time.sleep(2.0)
    return {
        "request_bytes": len(data) * args.big_images,
        **figures,
        "rss_after_mb": round(server.rss() / MB),
        "small_predict_other_model": other,
    }


async def _abandon(base: str, images: int, timeout: float) -> None:
    body = {"images": [base64.b64encode(jpeg()).decode()] * images, "method": "scorecam"}
    async with httpx.AsyncClient(base_url=base, timeout=timeout) as client:
        with contextlib.suppress(httpx.HTTPError):
            await client.post("/gradcam", json=body)


def case_abandoned(args) -> dict:
    """Two Score-CAM requests of 64 images whose clients give up after 2 s, a probe between,
    then how long the server's CPU stays busy once they are gone (observed up to 90 s)."""
    with serving(args) as server:

        async def scenario() -> dict:
            clients = [asyncio.create_task(_abandon(server.base, 64, 2.0)) for _ in range(2)]
            await asyncio.sleep(1.5)
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=server.base, timeout=30) as client:
                try:
                    probe = await client.post(
                        "/predict", content=jpeg(), headers={"content-type": "image/jpeg"}
                    )
                    result = {
                        "probe_status": probe.status_code,
                        "probe_retry_after": probe.headers.get("retry-after"),
                    }
                except httpx.HTTPError as error:
                    result = {"probe_status": type(error).__name__}
            result["probe_seconds"] = round(time.monotonic() - started, 2)
            await asyncio.gather(*clients)
            return result

        figures = asyncio.run(scenario())
        gone = time.monotonic()
        server.ps.cpu_percent()
        busy_for = None
        while time.monotonic() - gone < 90:
            if server.ps.cpu_percent(interval=1.0) < 15:
                busy_for = round(time.monotonic() - gone - 1.0, 1)
                break
        figures["busy_seconds_after_clients_left"] = busy_for if busy_for is not None else ">90"
        return figures


def _sigterm_exit(server: Server, cap: float = 60.0) -> dict:
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    refused = None
    time.sleep(0.3)
    try:
        response = httpx.get(server.base + "/readyz", timeout=5)
        refused = f"{response.status_code} {response.text[:80]}"
    except httpx.HTTPError as error:
        refused = type(error).__name__
    try:
        code = server.process.wait(timeout=cap)
        return {
            "exit_seconds": round(time.monotonic() - started, 2),
            "exit_code": code,
            "new_request_during_shutdown": refused,
        }
    except subprocess.TimeoutExpired:
        return {"exit_seconds": f">{cap:g} (killed)", "new_request_during_shutdown": refused}


def case_sigterm_stalled_upload(args) -> dict:
    with serving(args) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 1000\r\n\r\nabc"
        )
        time.sleep(0.5)
        figures = _sigterm_exit(server)
        sock.settimeout(2)
        with contextlib.suppress(OSError):
            figures["stalled_client_got"] = sock.recv(300).decode(errors="replace")[:120]
        sock.close()
        return figures


def case_sigterm_queue(args) -> dict:
    with serving(args) as server:
        statuses: list = []

        async def one() -> None:
            body = {"images": [base64.b64encode(jpeg()).decode()], "method": "scorecam"}
            async with httpx.AsyncClient(base_url=server.base, timeout=300) as client:
                try:
                    response = await client.post("/gradcam", json=body)
                    code = response.json().get("error", {}).get("code", "")
                    statuses.append(f"{response.status_code} {code}".strip())
                except httpx.HTTPError as error:
                    statuses.append(type(error).__name__)

        def clients() -> None:
            async def all_of_them() -> None:
                await asyncio.gather(*(one() for _ in range(12)))

            asyncio.run(all_of_them())

        thread = threading.Thread(target=clients)
        thread.start()
        time.sleep(3.0)
        figures = _sigterm_exit(server)
        thread.join(timeout=120)
        figures["answers"] = sorted(statuses)
        return figures


def _closed(sock: socket.socket, cap: float) -> float | str:
    seconds = closed_within(sock, cap)
    return f">{cap:g}" if seconds is None else round(seconds, 2)


def case_connections(args) -> dict:
    env = {"EXPLAIN_IO_THREADS": "2"}
    with serving(args, env=env, nofile=1024) as server:
        idle = socket.create_connection(("127.0.0.1", server.port))
        half = socket.create_connection(("127.0.0.1", server.port))
        half.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        figures: dict = {}
        with contextlib.ExitStack() as stack:
            results: dict = {}
            threads = [
                threading.Thread(target=lambda s=s, k=k: results.__setitem__(k, _closed(s, 30)))
                for k, s in (("idle", idle), ("half_headers", half))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            figures["idle_connection_closed_after_s"] = results["idle"]
            figures["half_headers_closed_after_s"] = results["half_headers"]
            silent = []
            for _ in range(1000):
                try:
                    silent.append(
                        stack.enter_context(socket.create_connection(("127.0.0.1", server.port)))
                    )
                except OSError as error:
                    figures["silent_sockets_error"] = repr(error)
                    break
            figures["silent_sockets_open"] = len(silent)
            time.sleep(1.0)
            started = time.monotonic()
            try:
                response = httpx.get(server.base + "/healthz", timeout=10)
                figures["other_client_with_1000_silent"] = response.status_code
            except httpx.HTTPError as error:
                figures["other_client_with_1000_silent"] = type(error).__name__
            figures["other_client_seconds"] = round(time.monotonic() - started, 2)
        idle.close()
        half.close()
    return figures


def case_stalled_uploads(args) -> dict:
    with serving(args) as server:
        before = server.reset_peak()
        sockets = []
        size = 32 * MB
        for _ in range(40):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                + f"Content-Length: {size}\r\n\r\n".encode()
            )
            sockets.append(sock)
        chunk = b"\0" * MB
        with contextlib.suppress(OSError):
            for sock in sockets:
                sock.settimeout(10)
                for _ in range(31):
                    sock.sendall(chunk)
                sock.sendall(chunk[:-1])
        time.sleep(3.0)
        figures = {
            "rss_growth_mb": round((server.rss() - before) / MB),
            "peak_growth_mb": round((server.peak - before) / MB),
        }
        for sock in sockets:
            sock.close()
        return figures


def case_clients_that_never_read(args) -> dict:
    """20 clients each ask for the feature maps of 8 images (about 6.7 MB of JSON) with a 4 KB
    receive buffer and read nothing; then 20 clients that read, for the RSS the same load costs."""
    image = jpeg(224)
    body = json.dumps(
        {"images": [base64.b64encode(image).decode()] * 8, "max_channels": 256}
    ).encode()
    request = (
        b"POST /featuremaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    figures: dict = {}
    with serving(args) as server:
        before = server.rss()
        with contextlib.ExitStack() as stack:
            for _ in range(20):
                sock = stack.enter_context(socket.socket())
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(("127.0.0.1", server.port))
                sock.sendall(request)
            started = time.monotonic()
            for at in (10, 45, 90):
                time.sleep(max(0.0, at - (time.monotonic() - started)))
                held = [c for c in server.ps.net_connections() if c.status == "ESTABLISHED"]
                figures[f"held_at_{at}s"] = len(held)
                figures[f"rss_growth_mb_at_{at}s"] = round((server.rss() - before) / MB)

        def read(_: int) -> int:
            return httpx.post(
                server.base + "/featuremaps",
                content=body,
                headers={"content-type": "application/json"},
                timeout=300,
            ).status_code

        with ThreadPoolExecutor(20) as pool:
            figures["readers_statuses"] = sorted(pool.map(read, range(20)))
        time.sleep(5)
        figures["rss_growth_mb_after_readers"] = round((server.rss() - before) / MB)
    return figures


def case_json(server: Server, args) -> dict:
    image = base64.b64encode(jpeg(64)).decode()
    bodies = {
        "nested_100000": (
            '{"images": ["' + image + '"], "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
        ),
        "int_5000_digits": '{"images": ["' + image + '"], "top_k": ' + "7" * 5000 + "}",
        "top_k_true": json.dumps({"images": [image], "top_k": True}),
        "echo_1mb_model": json.dumps({"images": [image], "model": "m" * MB}),
        "echo_1mb_target": json.dumps({"images": [image], "target": "t" * MB}),
    }
    figures = {}
    for name, body in bodies.items():
        path = "/gradcam" if "target" in name else "/predict"
        result = post(
            server, path, content=body.encode(), headers={"content-type": "application/json"}
        )
        figures[name] = {k: result.get(k) for k in ("status", "code", "message_chars", "seconds")}
    return figures


def _raw(server: Server, request: bytes) -> str:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request)
        sock.settimeout(10)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
                if b"\r\n\r\n" in data and len(data) > 2000:
                    break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    content_type = next((line for line in lines if line.lower().startswith("content-type")), "")
    return f"{lines[0]} | {content_type} | {body[:80].decode(errors='replace')}"


def case_protocol(server: Server, args) -> dict:
    return {
        "bad_content_length": _raw(
            server, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
        ),
        "url_70kb": _raw(
            server, b"GET /healthz?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
    }


def case_logs(args) -> dict:
    with serving(args) as server:
        mark = len(server.output())
        response = httpx.post(
            server.base + "/predict",
            content=b"not an image",
            headers={"content-type": "image/jpeg"},
        )
        time.sleep(0.5)
        new = server.output()[mark:]
        return {
            "status": response.status_code,
            "log_lines_for_one_400": len([line for line in new.splitlines() if line.strip()]),
            "message_shows_bytesio": "BytesIO" in response.json()["error"]["message"],
        }


def case_openapi(server: Server, args) -> dict:
    schema = httpx.get(server.base + "/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    images = body["application/json"]["schema"]["properties"]["images"]
    multipart = body["multipart/form-data"]["schema"]
    return {
        "images_minItems": images.get("minItems"),
        "images_maxItems": images.get("maxItems"),
        "multipart_additionalProperties": multipart.get("additionalProperties", "unset (allowed)"),
        "octet_stream_documented": "application/octet-stream" in body,
    }


SHARED = {
    "json": case_json,
    "protocol": case_protocol,
    "openapi": case_openapi,
    "layers": case_layers,
    "targets": case_targets,
    "big_images": case_big_images,
}
OWN: dict[str, Callable] = {
    "logs": case_logs,
    "connections": case_connections,
    "stalled_uploads": case_stalled_uploads,
    "clients_that_never_read": case_clients_that_never_read,
    "abandoned": case_abandoned,
    "sigterm_stalled_upload": case_sigterm_stalled_upload,
    "sigterm_queue": case_sigterm_queue,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="source tree to run")
    parser.add_argument("--only", nargs="*", help=f"cases: {', '.join([*SHARED, *OWN])}")
    parser.add_argument("--env", nargs="*", help="KEY=VALUE for the server's environment")
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--big-images", type=int, default=16)
    parser.add_argument("--big-side", type=int, default=8000)
    args = parser.parse_args()
    chosen = args.only or [*SHARED, *OWN]
    shared = [name for name in chosen if name in SHARED]
    if shared:
        with serving(args) as server:
            for name in shared:
                print(json.dumps({"case": name, **SHARED[name](server, args)}), flush=True)
    for name in chosen:
        if name in OWN:
            print(json.dumps({"case": name, **OWN[name](args)}), flush=True)


if __name__ == "__main__":
    main()
