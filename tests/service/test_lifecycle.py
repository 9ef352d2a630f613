"""Readiness while loading, a failed load, and a saturated queue, each on an app of its own."""

from __future__ import annotations

import asyncio
import threading

import pytest

import service.state
from service import Settings, create_app
from tests.service.conftest import assert_error, blocked, eventually, image_bytes, running_client

pytestmark = pytest.mark.anyio

JPEG = {"content-type": "image/jpeg"}


async def test_readyz_is_503_until_the_models_are_loaded(monkeypatch):
    release = threading.Event()
    real_load = service.state.load_model

    def slow_load(spec: str):
        release.wait(30)
        return real_load(spec)

    monkeypatch.setattr(service.state, "load_model", slow_load)
    import httpx
    from asgi_lifespan import LifespanManager

    app = create_app(Settings(models=["alexnet:none"]))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=transport, base_url="http://s") as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "loading"
        assert ready.headers["retry-after"] == "1"
        refused = await client.post("/predict", content=image_bytes(), headers=JPEG)
        assert_error(refused, 503, "not_ready")
        assert refused.headers["retry-after"] == "1"
        release.set()
        for _ in range(600):
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert (
            await client.post("/predict", content=image_bytes(), headers=JPEG)
        ).status_code == 200


async def test_a_model_that_fails_to_load_keeps_the_service_unready(tmp_path):
    import httpx
    from asgi_lifespan import LifespanManager

    app = create_app(Settings(models=[f"resnet18:{tmp_path / 'missing.pt'}"]))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=transport, base_url="http://s") as client,
    ):
        for _ in range(600):
            body = (await client.get("/readyz")).json()
            if body["status"] != "loading":
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "failed" and "does not exist" in body["error"]
        error = assert_error(
            await client.post("/predict", content=image_bytes(), headers=JPEG), 503, "not_ready"
        )
        assert "does not exist" in error["message"]


async def test_a_full_queue_answers_503_with_retry_after_and_recovers():
    app = create_app(
        Settings(
            models=["alexnet:none"],
            queue_size=2,
            max_batch_size=1,
            batch_threads=1,  # one batch runs (and blocks) while the queue fills
            retry_after_seconds=3,
        )
    )
    async with running_client(app) as client:
        worker = app.state.service.models["alexnet"].worker
        gate, started = blocked(worker)
        post = lambda: client.post("/predict", content=image_bytes(), headers=JPEG)  # noqa: E731
        first = asyncio.ensure_future(post())
        await eventually(started.is_set)
        queued = [asyncio.ensure_future(post()) for _ in range(2)]
        await eventually(lambda: worker.waiting_images == 2)
        refused = await asyncio.gather(*(post() for _ in range(3)))
        for response in refused:
            assert_error(response, 503, "overloaded")
            assert response.headers["retry-after"] == "3"
        gate.set()
        assert [r.status_code for r in await asyncio.gather(first, *queued)] == [200, 200, 200]
        assert (await post()).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'explain_queue_rejections_total{model="alexnet"} 3.0' in metrics
        assert 'explain_errors_total{code="overloaded"} 3.0' in metrics


async def test_an_unexpected_error_is_logged_and_answered_without_a_traceback(caplog):
    app = create_app(Settings(models=["alexnet:none"]))
    async with running_client(app) as client:
        worker = app.state.service.models["alexnet"].worker

        def broken(task, inputs, targets):
            raise ZeroDivisionError("a bug in a runner")

        worker._run = broken
        with caplog.at_level("ERROR"):
            response = await client.post("/predict", content=image_bytes(), headers=JPEG)
        error = assert_error(response, 500, "internal_error")
        assert "ZeroDivisionError" not in error["message"]
        assert any(
            record.exc_info and record.exc_info[0] is ZeroDivisionError for record in caplog.records
        )
        metrics = (await client.get("/metrics")).text
        assert 'explain_errors_total{code="internal_error"} 1.0' in metrics
