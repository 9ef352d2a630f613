"""The web page's own files (scripts, styles, favicon, example photos), all served by the service."""

from __future__ import annotations

import io
import re
from importlib import resources

from PIL import Image

from tests.service.conftest import assert_error

EXAMPLES = resources.files("service").joinpath("static/examples")


async def test_page_and_every_file_it_loads_are_local(client):
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r"""(?:src|href)=["']([^"'#]+)["']""", page.text)
    assert {"/static/demo.css", "/static/demo.js", "/favicon.ico"} <= set(assets)
    scripts = ""
    for asset in assets:
        assert asset.startswith("/"), asset  # no other host, no CDN
        answer = await client.get(asset)
        assert answer.status_code == 200, asset
        if asset.endswith(".js"):
            scripts += answer.text
    for module in re.findall(r"""from ["']([^"']+)["']""", scripts):
        assert module.startswith("/static/"), module
        scripts += (await client.get(module)).text
    for endpoint in ("/models", "/gradcam", "/featuremaps", "/labels", "/methods"):
        assert endpoint in scripts, endpoint
    assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", scripts), "a script names another host"
    css = (await client.get("/static/demo.css")).text
    assert "@import" not in css and "url(" not in css  # no web fonts, nothing fetched


async def test_favicon(client):
    answer = await client.get("/favicon.ico")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/x-icon"
    icon = Image.open(io.BytesIO(answer.content))
    assert icon.format == "ICO" and (32, 32) in icon.info["sizes"]


async def test_example_photos_are_small_served_and_licensed(client):
    licences = EXAMPLES.joinpath("LICENSES.md").read_text(encoding="utf-8")
    photos = sorted(p.name for p in EXAMPLES.iterdir() if p.name.endswith(".jpg"))
    assert photos == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    for name in photos:
        assert f"`{name}`" in licences
        answer = await client.get(f"/static/examples/{name}")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        assert len(answer.content) < 60_000, name
        assert min(Image.open(io.BytesIO(answer.content)).size) >= 256  # the model's resize
    assert_error(await client.get("/static/examples/missing.jpg"), 404, "not_found")
