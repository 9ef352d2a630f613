"""The OpenAPI schema, bounded by this server's settings: it says exactly what the server accepts.

FastAPI builds the schema from the option models; the limits that are settings (images per
request, targets, layers, channels) and the names that are fixed at start (models, methods,
colour maps) are written into it here, so that a schema-driven client or fuzzer sends nothing
valid that the server then refuses for a reason the schema could have said.
"""

from __future__ import annotations

from typing import Any

from explain.methods import method_names
from explain.models import parse_spec
from service.settings import Settings

__all__ = ["bound_schema"]

EXPLAIN_PATHS = ("/predict", "/featuremaps", "/gradcam")


def _colormaps() -> list[str]:
    from matplotlib import colormaps

    return sorted(colormaps)


def _bounds(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per option (and ``images``/``image``): the JSON-schema keywords to add."""
    models = [parse_spec(spec)[0] for spec in settings.models]
    return {
        "images": {"minItems": 1, "maxItems": settings.max_images},
        "image": {"minItems": 1, "maxItems": settings.max_images},
        "target": {"maxItems": settings.max_targets},
        "layers": {"maxItems": settings.max_layers},
        "max_channels": {"maximum": settings.max_channels},
        "model": {"enum": models},
        "method": {"enum": method_names()},
        "colormap": {"enum": _colormaps()},
    }


def _bound(schema: dict[str, Any], keywords: dict[str, Any]) -> None:
    """Add ``keywords`` to a property schema; in an ``anyOf`` with null, to its non-null branch."""
    branches = schema.get("anyOf")
    if branches:
        for branch in branches:
            if branch.get("type") != "null":
                branch.update(keywords)
        return
    schema.update(keywords)


def bound_schema(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Write the settings' bounds into the explanation endpoints of ``schema`` (in place)."""
    bounds = _bounds(settings)
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/models/{name}"):
            continue
        for parameter in item.get("get", {}).get("parameters", []):
            if parameter.get("in") == "path" and parameter["name"] == "name":
                _bound(parameter["schema"], bounds["model"])
    for path in EXPLAIN_PATHS:
        operation = schema.get("paths", {}).get(path, {}).get("post")
        if not operation:
            continue
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "query" and parameter["name"] in bounds:
                _bound(parameter["schema"], bounds[parameter["name"]])
        for content in operation.get("requestBody", {}).get("content", {}).values():
            properties = content.get("schema", {}).get("properties", {})
            for name, keywords in bounds.items():
                if name in properties:
                    _bound(properties[name], keywords)
    return schema
