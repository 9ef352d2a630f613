"""The app factory: ``create_app(settings)``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from service.accesslog import RequestLogMiddleware
from service.auth import ApiKeyMiddleware
from service.errors import install_error_handlers
from service.openapi import bound_schema
from service.routes import explain, models, ops
from service.settings import Settings
from service.state import ServiceState

__all__ = ["create_app"]


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
            state.begin_shutdown()
            # Off the event loop: running batches finish while the loop answers what is left.
            await asyncio.to_thread(state.stop, state.shutdown_left())

    app = FastAPIOffline(
        title="explain-service",
        version="0.1.0",
        summary="Image classification that explains itself: scores, feature maps and CAMs.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.service = state
    install_error_handlers(app, on_error=lambda code: state.metrics.errors.labels(code).inc())
    app.add_middleware(
        ApiKeyMiddleware, keys=settings.api_key_set(), protect_metrics=settings.protect_metrics
    )
    app.add_middleware(RequestLogMiddleware, metrics=state.metrics)  # outermost: sees every answer
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

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            app.openapi_schema = bound_schema(schema, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
