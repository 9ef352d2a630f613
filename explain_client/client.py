"""``Client`` and ``AsyncClient``: one method per endpoint of the service, over httpx.

Example:
    >>> with Client("http://127.0.0.1:8000", api_key="...") as client:
    ...     result = client.gradcam("cat.jpg", target=["tabby"])
    ...     result.explanations[0].overlay.save("overlay.png")
    ...     results = client.predict(["a.jpg", "b.png"], top_k=3)   # a list in, a list out
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from explain_client.protocol import (
    DEFAULT_MAX_IMAGES,
    Call,
    ImageInput,
    Limits,
    RetryPolicy,
    Sleep,
    as_payloads,
    explain_call,
    get_call,
    ready_call,
)
from explain_client.results import Result

__all__ = ["DEFAULT_URL", "AsyncClient", "Client"]

DEFAULT_URL = "http://127.0.0.1:8000"
Images = ImageInput | Sequence[ImageInput]


class _Base:
    """What both clients share: settings and the calls (generators) they drive."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_images: int = DEFAULT_MAX_IMAGES,
        transport: Any = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(max_retries=max_retries, backoff=backoff)
        self.limits = Limits(max_images=max_images)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = self._http_client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    _http_client: Any = None
    """The httpx client class."""

    @property
    def max_images(self) -> int:
        """Images per request: the given limit, lowered to the service's when it refuses more."""
        return self.limits.max_images

    def _explain(self, endpoint: str, images: Images, options: dict[str, Any]) -> tuple[Call, bool]:
        payloads, single = as_payloads(images)
        return explain_call(
            self._http, endpoint, payloads, options, self.retry, self.limits
        ), single


class Client(_Base):
    """A synchronous client of the explanation service (thread-safe).

    Args:
        url: The service's base URL.
        api_key: Sent as ``Authorization: Bearer <key>`` when the service requires keys.
        timeout: Seconds to wait for an answer (Score-CAM can take several per image).
        max_retries: Tries after the first for 429/503 answers (after ``Retry-After``) and for
            refused or dropped connections (exponential backoff from ``backoff`` seconds).
        backoff: First wait after a connection error, seconds.
        max_images: Images per request; longer lists are split. Lowered to the service's limit
            when it answers 413 ``too_many_images``.
        transport: An httpx transport (tests, proxies, Unix sockets); an async one for
            :class:`AsyncClient`.

    Every explanation method takes one image (returns a :class:`Result`) or a list of them
    (returns a list, in order), and raises :class:`~explain_client.ApiError` with the API's
    error code, :class:`~explain_client.UnreachableError` or
    :class:`~explain_client.ServiceTimeoutError`.
    """

    _http_client = httpx.Client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _drive(self, call: Call) -> Any:
        try:
            step = next(call)
            while True:
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    step = call.send(None)
                    continue
                try:
                    response = self._http.send(step)
                except httpx.TransportError as error:
                    step = call.throw(error)
                else:
                    step = call.send(response)
        except StopIteration as done:
            return done.value

    def explain(self, endpoint: str, images: Images, **options: Any) -> Result | list[Result]:
        """``POST /{endpoint}`` with any options the endpoint takes (``None`` values left out)."""
        call, single = self._explain(endpoint, images, options)
        results = self._drive(call)
        return results[0] if single else results

    def predict(
        self, images: Images, *, model: str | None = None, top_k: int | None = None, **options: Any
    ) -> Any:
        """Top classes with softmax scores."""
        return self.explain("predict", images, model=model, top_k=top_k, **options)

    def featuremaps(
        self,
        images: Images,
        *,
        layers: Sequence[str] | None = None,
        max_channels: int | None = None,
        model: str | None = None,
        top_k: int | None = None,
        **options: Any,
    ) -> Any:
        """Top classes and each layer's output as a grid of channels."""
        return self.explain(
            "featuremaps",
            images,
            layers=layers,
            max_channels=max_channels,
            model=model,
            top_k=top_k,
            **options,
        )

    def gradcam(
        self,
        images: Images,
        *,
        method: str | None = None,
        layer: str | None = None,
        target: int | str | Sequence[int | str] | None = None,
        alpha: float | None = None,
        colormap: str | None = None,
        return_cam: bool | None = None,
        faithfulness: bool | None = None,
        model: str | None = None,
        top_k: int | None = None,
        **options: Any,
    ) -> Any:
        """Top classes and a class activation map per target class (default: top-1); with
        ``faithfulness``, each map's faithfulness scores too."""
        return self.explain(
            "gradcam",
            images,
            method=method,
            layer=layer,
            target=target,
            alpha=alpha,
            colormap=colormap,
            return_cam=return_cam,
            faithfulness=faithfulness,
            model=model,
            top_k=top_k,
            **options,
        )

    def models(self) -> list[dict[str, Any]]:
        """``GET /models``: the loaded models, the default first."""
        return self._drive(get_call(self._http, "/models", self.retry))

    def model(self, name: str) -> dict[str, Any]:
        """``GET /models/{name}``: one model with its hookable layers."""
        return self._drive(get_call(self._http, f"/models/{name}", self.retry))

    def ready(self) -> bool:
        """Whether ``GET /readyz`` answers 200 (models loaded); one try, no retries.

        Raises:
            UnreachableError: nothing answers at :attr:`url`.
        """
        return self._drive(ready_call(self._http))


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`: the same arguments and methods, awaited."""

    _http_client = httpx.AsyncClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _drive(self, call: Call) -> Any:
        try:
            step = next(call)
            while True:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    step = call.send(None)
                    continue
                try:
                    response = await self._http.send(step)
                except httpx.TransportError as error:
                    step = call.throw(error)
                else:
                    step = call.send(response)
        except StopIteration as done:
            return done.value

    async def explain(self, endpoint: str, images: Images, **options: Any) -> Result | list[Result]:
        """``POST /{endpoint}`` with any options the endpoint takes (``None`` values left out)."""
        call, single = self._explain(endpoint, images, options)
        results = await self._drive(call)
        return results[0] if single else results

    async def predict(self, images: Images, **options: Any) -> Any:
        """Top classes with softmax scores; options as :meth:`Client.predict`."""
        return await self.explain("predict", images, **options)

    async def featuremaps(self, images: Images, **options: Any) -> Any:
        """Each layer's output as a grid of channels; options as :meth:`Client.featuremaps`."""
        return await self.explain("featuremaps", images, **options)

    async def gradcam(self, images: Images, **options: Any) -> Any:
        """Class activation maps; options as :meth:`Client.gradcam`."""
        return await self.explain("gradcam", images, **options)

    async def models(self) -> list[dict[str, Any]]:
        """``GET /models``."""
        return await self._drive(get_call(self._http, "/models", self.retry))

    async def model(self, name: str) -> dict[str, Any]:
        """``GET /models/{name}``."""
        return await self._drive(get_call(self._http, f"/models/{name}", self.retry))

    async def ready(self) -> bool:
        """Whether ``GET /readyz`` answers 200; one try."""
        return await self._drive(ready_call(self._http))
