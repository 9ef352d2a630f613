"""API keys, the access log, and an OpenAPI schema that says what the server accepts."""

from __future__ import annotations

import json
import logging

import pytest

from service import Settings, create_app
from service.accesslog import JsonFormatter
from tests.service.conftest import assert_error, b64, image_bytes, running_client

pytestmark = pytest.mark.anyio

KEYS = ("k1-secret-first", "k2-secret-second")
JPEG = {"content-type": "image/jpeg"}


@pytest.fixture(scope="module")
async def keyed(anyio_backend):
    app = create_app(Settings(models=["alexnet:none"], api_keys=",".join(KEYS)))
    async with running_client(app) as client:
        yield client


async def test_without_a_key_every_endpoint_but_the_probes_is_401(keyed):
    for method, path in [
        ("POST", "/predict"),
        ("GET", "/models"),
        ("GET", "/models/alexnet/labels"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/static/../models"),
    ]:
        response = await keyed.request(method, path, content=image_bytes(), headers=JPEG)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await keyed.get(path)).status_code == 200


async def test_the_web_page_itself_needs_no_key(keyed):
    """The page holds no data, and a browser cannot send a key when it opens it; the page asks for
    the key and sends it with each request of its own."""
    for path in ("/", "/favicon.ico", "/static/api.js", "/static/examples/chelsea.jpg"):
        assert (await keyed.get(path)).status_code == 200, path
    assert_error(await keyed.post("/static/api.js"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEYS[0]}"},
        {"authorization": f"bearer {KEYS[1]}"},
        {"x-api-key": KEYS[1]},
    ],
    ids=["bearer", "bearer lower case", "x-api-key"],
)
async def test_a_valid_key_is_accepted(keyed, headers):
    response = await keyed.post("/predict", content=image_bytes(), headers={**JPEG, **headers})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"authorization": f"Bearer {KEYS[0]}x"},
        {"authorization": f"Basic {KEYS[0]}"},
        {"authorization": "Bearer "},
        {"x-api-key": KEYS[0][:-1]},
    ],
)
async def test_a_wrong_key_is_401(keyed, headers):
    response = await keyed.post("/predict", content=image_bytes(), headers={**JPEG, **headers})
    assert_error(response, 401, "unauthorized")


async def test_metrics_can_be_protected_and_keys_come_from_a_file(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("# one key per line\nfile-key-1\n\nfile-key-2\n")
    settings = Settings(models=["alexnet:none"], api_keys=str(keys), protect_metrics=True)
    assert settings.api_key_set() == {"file-key-1", "file-key-2"}
    app = create_app(settings)
    async with running_client(app, ready=True) as client:
        assert_error(await client.get("/metrics"), 401, "unauthorized")
        ok = await client.get("/metrics", headers={"x-api-key": "file-key-2"})
        assert ok.status_code == 200


async def test_one_access_log_line_per_request_and_no_key_in_it(keyed, caplog):
    with caplog.at_level(logging.INFO, logger="service.access"):
        bad = await keyed.post(
            "/predict?top_k=3",
            content=b"not an image",
            headers={**JPEG, "authorization": f"Bearer {KEYS[0]}"},
        )
        good = await keyed.post(
            "/predict",
            json={"images": [b64(image_bytes())] * 2},
            headers={"x-api-key": KEYS[1]},
        )
        refused = await keyed.get("/models")
    assert (bad.status_code, good.status_code, refused.status_code) == (400, 200, 401)
    lines = [r for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 3
    first, second, third = (r.__dict__ for r in lines)
    assert (first["method"], first["path"], first["status"], first["code"]) == (
        "POST",
        "/predict",
        400,
        "invalid_image",
    )
    assert first["images"] == 1 and first["model"] == "alexnet" and first["client"]
    assert (second["status"], second["images"], second["code"]) == (200, 2, None)
    assert second["duration_ms"] > 0
    assert (third["status"], third["code"]) == (401, "unauthorized")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(key in text for key in KEYS)


def test_json_log_lines_are_one_object_each():
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "x", None, None)
    record.__dict__.update(method="POST", status=400, code="invalid_json")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["status"] == 400 and entry["code"] == "invalid_json" and entry["level"] == "info"


async def test_the_schema_states_every_bound(client):
    schema = (await client.get("/openapi.json")).json()
    for path in ("/predict", "/featuremaps", "/gradcam"):
        operation = schema["paths"][path]["post"]
        content = operation["requestBody"]["content"]
        images = content["application/json"]["schema"]["properties"]["images"]
        assert (images["minItems"], images["maxItems"]) == (1, 64)
        assert content["application/json"]["schema"]["additionalProperties"] is False
        multipart = content["multipart/form-data"]["schema"]
        assert multipart["additionalProperties"] is False
        assert multipart["properties"]["image"]["maxItems"] == 64
        assert "application/octet-stream" in content
        query = {p["name"]: p["schema"] for p in operation["parameters"]}
        models = next(b for b in query["model"]["anyOf"] if b.get("type") != "null")
        assert models["enum"] == ["efficientnet_lite0", "alexnet", "resnet18"]
    gradcam = schema["paths"]["/gradcam"]["post"]
    target = gradcam["requestBody"]["content"]["application/json"]["schema"]["properties"]["target"]
    assert next(b for b in target["anyOf"] if b.get("type") == "array")["maxItems"] == 16
    featuremaps = schema["paths"]["/featuremaps"]["post"]
    channels = {p["name"]: p["schema"] for p in featuremaps["parameters"]}["max_channels"]
    assert channels["maximum"] == 256
    for path in ("/models/{name}", "/models/{name}/methods", "/models/{name}/labels"):
        (name,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "name"]
        assert name["schema"]["enum"] == ["efficientnet_lite0", "alexnet", "resnet18"], path
