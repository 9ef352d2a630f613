"""The app factory: ``create_app(settings)``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import install_error_handlers
from service.metrics import Metrics
from service.routes import explain, models, ops
from service.settings import Settings
from service.state import ServiceState

__all__ = ["create_app"]


class MetricsMiddleware:
    """Counts every HTTP request and times it, labelled by route (not by raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Nothing heavy happens here: models load when the lifespan starts."""
    settings = settings or Settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            state.stop()

    app = FastAPIOffline(
        title="explain-service",
        version="0.1.0",
        summary="Image classification that explains itself: scores, feature maps and CAMs.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.service = state
    install_error_handlers(app, on_error=lambda code: state.metrics.errors.labels(code).inc())
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.include_router(explain.router)
    app.include_router(models.router)
    app.include_router(ops.router)

    static = resources.files("service").joinpath("static")
    page = static.joinpath("index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(packages=[("service", "static")]), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/favicon.ico", response_class=FileResponse, include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(str(static.joinpath("favicon.ico")), media_type="image/x-icon")

    return app
