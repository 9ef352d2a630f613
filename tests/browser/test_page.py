"""The web page at ``/``, used as a person would in Chromium: pick, drop or paste an image, choose a
class, a method and an opacity, cancel a slow method, recover from a bad file, zoom and download."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import SCORECAM_CHANNELS
from tests.service.conftest import image_bytes

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}
LOADED = "Choose an image to see where the model looks."


def open_page(page) -> None:
    page.goto("/")
    expect(page.locator("#method option[value=scorecam]")).to_be_attached()


def choose_example(page, title: str = "Chelsea the cat") -> None:
    page.get_by_role("button", name=f"Example: {title}").click()
    wait_for_results(page)


def wait_for_results(page) -> None:
    expect(page.locator("#cam")).to_be_visible()
    expect(page.locator("#maps figure").first).to_be_visible()
    expect(page.locator("#classes .class-row")).to_have_count(5)


def top_labels(page) -> list[str]:
    return page.locator("#classes .class-label").all_inner_texts()


def png_pixels(data: str | bytes) -> np.ndarray:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), np.int16)


def canvas_pixels(page) -> np.ndarray:
    url = page.eval_on_selector("#overlay", "canvas => canvas.toDataURL('image/png')")
    return png_pixels(url.split(",", 1)[1])


def set_opacity(page, percent: int) -> None:
    page.locator("#opacity").fill(str(percent))  # a range input: sets the value, fires input


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    files = {
        "coffee.jpg": image_bytes("coffee"),
        "rocket.png": image_bytes("rocket", "PNG"),
        "notes.txt": b"These are notes, not a picture.\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def test_load(page, page_log, screenshot, base_url):
    open_page(page)
    expect(page).to_have_title("explain-service: what does the classifier look at?")
    # Methods, their costs and the layers come from the server, not from the page.
    detail = httpx.get(f"{base_url}/models/efficientnet_lite0").json()
    methods = page.locator("#method option").evaluate_all("options => options.map(o => o.value)")
    assert methods[0] == "gradcam" and set(methods) == {m["name"] for m in detail["methods"]}
    expect(page.locator("#method option[value=scorecam]")).to_have_text(
        f"scorecam (slow: {SCORECAM_CHANNELS + 1} passes)"
    )
    spatial = [layer["name"] for layer in detail["layers"] if layer["spatial"]]
    expect(page.locator("#layer option")).to_have_count(len(spatial))
    expect(page.locator("#layer")).to_have_value("_head_act")
    expect(page.locator("#chips li")).to_have_count(len(detail["feature_layers"]))
    expect(page.locator("#examples button")).to_have_count(4)
    expect(page.locator("#cam-state")).to_have_text(LOADED)
    favicon = page.request.get("/favicon.ico")
    assert favicon.ok and favicon.headers["content-type"] == "image/x-icon"
    # Keyboard: the first stops are the skip link, the model and the file chooser.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to the results")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Model")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Choose an image…")).to_be_focused()
    # Nothing is computed before there is an image.
    assert page_log.calls("/gradcam") == page_log.calls("/featuremaps") == []
    screenshot("01-empty-page")


def test_upload_by_file_chooser_shows_the_crop_and_every_result(page, page_log, screenshot, photos):
    open_page(page)
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Choose an image…").click()
    chooser.value.set_files(photos["coffee.jpg"])
    wait_for_results(page)
    assert top_labels(page)[0] == "espresso"
    # coffee is 600x400: resized to 384x256, the model sees x 80..304 of 384, y 16..240 of 256.
    crop = page.locator("#crop")
    expect(crop).to_be_visible()
    style = crop.evaluate("c => [c.style.left, c.style.top, c.style.width, c.style.height]")
    assert [round(float(s.rstrip("%")), 3) for s in style] == [20.833, 6.25, 58.333, 87.5]
    expect(page.locator("#preview-caption")).to_contain_text("600×400. The model sees only")
    expect(page.locator("#cam-caption")).to_have_text(
        re.compile(r"gradcam of “espresso” \(class 967, \d+%\) at _head_act")
    )
    # Each picture once: the CAM is asked with alpha 0 (the model's view) and blended in the page.
    (gradcam,) = page_log.calls("/gradcam")
    assert "alpha=0" in gradcam and "method=gradcam" in gradcam
    assert len(page_log.calls("/featuremaps")) == 1
    # The 1280x7x7 head: 64 tiles of 7x7 pixels are enlarged by a whole factor, tiles framed.
    head = page.locator("#maps figure").filter(has_text="_head_act")
    expect(head.locator("figcaption")).to_contain_text("64 channels shown, 5× enlarged")
    assert head.locator("canvas").evaluate("c => c.width") == 8 * 7 * 5 + 9 * 2
    screenshot("02-file-chooser-coffee")


def test_drop_and_paste(page, page_log, screenshot, photos):
    open_page(page)
    drop = page.locator("#drop")

    def transfer(path: Path, kind: str):
        data = base64.b64encode(path.read_bytes()).decode()
        return page.evaluate_handle(
            """([data, name, type]) => {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, {type}));
                return transfer;
            }""",
            [data, path.name, kind],
        )

    coffee = transfer(photos["coffee.jpg"], "image/jpeg")
    drop.dispatch_event("dragenter", {"dataTransfer": coffee})
    expect(drop).to_have_class("drop dragging")
    drop.dispatch_event("drop", {"dataTransfer": coffee})
    wait_for_results(page)
    expect(drop).to_have_class("drop")
    assert top_labels(page)[0] == "espresso"
    expect(page.locator("#preview-caption")).to_contain_text("coffee.jpg, 600×400")

    rocket = transfer(photos["rocket.png"], "image/png")
    page.evaluate(
        "transfer => document.body.dispatchEvent(new ClipboardEvent('paste', "
        "{clipboardData: transfer, bubbles: true, cancelable: true}))",
        rocket,
    )
    expect(page.locator("#preview-caption")).to_contain_text("rocket.png, 640×427")
    wait_for_results(page)
    expect(page.locator("#cam-caption")).to_contain_text("gradcam of “missile”")
    assert len(page_log.calls("/gradcam")) == len(page_log.calls("/featuremaps")) == 2
    screenshot("03-pasted-rocket")


def test_target_by_clicking_a_class_and_by_search(page, page_log, screenshot):
    open_page(page)
    choose_example(page)
    rows = page.locator("#classes .class-row")
    assert set(top_labels(page)[:3]) <= CAT_CLASSES
    expect(rows.first).to_have_attribute("aria-pressed", "true")
    (first,) = page_log.calls("/gradcam")
    assert "target=" not in first  # the top class, chosen by the server

    rows.nth(2).click()
    third = top_labels(page)[2]
    expect(page.locator("#cam-caption")).to_contain_text(f"gradcam of “{third}”")
    expect(rows.nth(2)).to_have_attribute("aria-pressed", "true")
    expect(rows.first).to_have_attribute("aria-pressed", "false")
    clicked = page_log.calls("/gradcam")[-1]
    assert "target=" in clicked

    # By keyboard: focus the second row and press Enter.
    rows.nth(1).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#cam-caption")).to_contain_text(f"“{top_labels(page)[1]}”")

    # A class outside the top five, by its label; a wrong label is explained, not sent.
    search = page.get_by_label("Any other class")
    search.fill("goldfsh")
    search.press("Enter")
    expect(page.locator("#search-note")).to_have_text("No class is called “goldfsh”.")
    requests = len(page_log.calls("/gradcam"))
    search.fill("Goldfish")
    search.press("Enter")
    expect(page.locator("#cam-caption")).to_contain_text("gradcam of “goldfish” (class 1,")
    expect(rows).to_have_count(6)
    expect(rows.last).to_have_attribute("aria-pressed", "true")
    assert len(page_log.calls("/gradcam")) == requests + 1
    assert page_log.calls("/gradcam")[-1].endswith("target=1")
    assert len(page_log.calls("/featuremaps")) == 1  # the class does not change feature maps
    screenshot("04-target-goldfish")


def test_method_and_opacity(page, page_log, screenshot, base_url):
    open_page(page)
    choose_example(page)
    maps = len(page_log.calls("/featuremaps"))

    page.get_by_label("Method").select_option("eigencam")
    expect(page.locator("#cam-caption")).to_have_text(
        "eigencam at _head_act: the same map for every class"
    )
    expect(page.locator("#classes-hint")).to_contain_text("does not depend on the class")
    assert "method=eigencam" in page_log.calls("/gradcam")[-1]
    # Eigen-CAM's map is the same for every class: choosing another asks nothing.
    requests = len(page_log.requests)
    page.locator("#classes .class-row").nth(1).click()
    expect(page.locator("#classes .class-row").nth(1)).to_have_attribute("aria-pressed", "true")
    page.get_by_label("Method").select_option("gradcam++")
    expect(page.locator("#cam-caption")).to_contain_text("gradcam++ of “")
    page.get_by_label("Method").select_option("gradcam")
    expect(page.locator("#cam-caption")).to_contain_text("gradcam of “")
    assert len(page_log.calls("/featuremaps")) == maps  # feature maps are not recomputed
    requests = len(page_log.requests)

    # Opacity re-blends in the page, exactly as the server blends, without asking anything.
    image = page.locator("#view").get_attribute("src").split(",", 1)[1]
    heatmap = page.locator("#heatmap").get_attribute("src").split(",", 1)[1]
    set_opacity(page, 0)
    expect(page.locator("#opacity-value")).to_have_text("0%")
    assert np.array_equal(canvas_pixels(page), png_pixels(image))
    set_opacity(page, 100)
    assert np.array_equal(canvas_pixels(page), png_pixels(heatmap))
    set_opacity(page, 75)
    expect(page.locator("#opacity-value")).to_have_text("75%")
    target = page.locator("#classes .class-row[aria-pressed=true] .class-label").inner_text()
    served = httpx.post(
        f"{base_url}/gradcam",
        params={"target": target, "alpha": 0.75},
        files={
            "image": ("chelsea.jpg", httpx.get(f"{base_url}/static/examples/chelsea.jpg").content)
        },
    ).json()["results"][0]["explanations"][0]["overlay_png"]
    assert np.abs(canvas_pixels(page) - png_pixels(served)).max() <= 2
    assert len(page_log.requests) == requests
    screenshot("05-opacity-75")


def test_cam_layer_and_feature_layers(page, page_log):
    open_page(page)
    choose_example(page)
    explained = len(page_log.calls("/gradcam"))
    # Another CAM layer: the methods' costs are asked again (Score-CAM: 40 channels there).
    page.locator("#layer").select_option("_blocks.4")
    expect(page.locator("#cam-caption")).to_contain_text("at _blocks.4")
    expect(page.locator("#method option[value=scorecam]")).to_have_text(
        "scorecam (slow: 41 passes)"
    )
    assert page_log.calls("/models/efficientnet_lite0/methods") == [
        page_log.base_url + "/models/efficientnet_lite0/methods?layer=_blocks.4"
    ]
    assert "layer=_blocks.4" in page_log.calls("/gradcam")[-1]

    figures = page.locator("#maps figure")
    expect(figures).to_have_count(6)
    page.get_by_label("Add a layer").select_option("_blocks.15")
    expect(figures).to_have_count(7)
    expect(figures.last.locator("figcaption")).to_contain_text("_blocks.15 320×7×7")
    assert "_blocks.15" in page_log.calls("/featuremaps")[-1]
    page.get_by_label("Channels per layer").select_option("16")
    head = figures.filter(has_text="_head_act")
    expect(head.locator("figcaption")).to_contain_text("16 channels shown, 11× enlarged")
    page.get_by_role("button", name="Remove layer _stem_act").click()
    expect(figures).to_have_count(6)
    expect(figures.filter(has_text="_stem_act")).to_have_count(0)
    expect(page.locator("#add-layer")).to_be_focused()
    assert len(page_log.calls("/featuremaps")) == 4
    assert len(page_log.calls("/gradcam")) == explained + 1  # feature maps never re-explain


def test_cancel_a_slow_method(page, page_log, screenshot):
    open_page(page)
    choose_example(page)
    requests = len(page_log.calls("/gradcam"))
    page.get_by_label("Method").select_option("scorecam")
    # A slow method waits for a click, and says what it costs.
    run = page.get_by_role("button", name="Run scorecam")
    expect(run).to_be_visible()
    expect(page.locator("#method-note")).to_contain_text(
        "Score-CAM: channels weighted by the target logit of the input masked by each upsampled"
    )
    expect(page.locator("#method-note")).to_contain_text(
        f"Cost: {SCORECAM_CHANNELS + 1} passes of the model, "
    )
    expect(page.locator("#cam-state")).to_have_text(
        f"scorecam runs the model {SCORECAM_CHANNELS + 1} times for one image. "
        "Click Run when you are ready."
    )
    assert len(page_log.calls("/gradcam")) == requests
    expect(page.locator("#cam")).to_be_hidden()  # no stale Grad-CAM under the Score-CAM label

    run.click()
    progress = page.locator("#progress")
    expect(progress).to_be_visible()
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"^Running scorecam \(about \d"))
    expect(page.locator("#cam-state")).to_be_hidden()
    expect(page.locator("#elapsed")).to_have_text(re.compile(r"^\d+\.\d s$"))
    screenshot("06-scorecam-running", full_page=False)
    with page.expect_event("requestfailed") as failed:
        page.get_by_role("button", name="Cancel").click()
    assert "/gradcam?" in failed.value.url and "method=scorecam" in failed.value.url
    expect(progress).to_be_hidden()
    expect(page.locator("#cam-state")).to_contain_text("Cancelled scorecam after")
    expect(page.get_by_role("button", name="Run scorecam again")).to_be_visible()
    expect(page.locator("#cam")).to_be_hidden()
    screenshot("07-scorecam-cancelled", full_page=False)


def test_an_invalid_file_replaces_old_results_with_a_sentence(page, page_log, screenshot, photos):
    page_log.expect_console_error(r"status of 400 \(Bad Request\)")
    open_page(page)
    choose_example(page)
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Choose an image…").click()
    with page.expect_response(lambda r: "/featuremaps?" in r.url or "/gradcam?" in r.url) as first:
        chooser.value.set_files(photos["notes.txt"])
    assert first.value.status == 400
    # The page drops the other request about this file; whatever it answers must not show.
    page_log.wait_until_settled(page)
    page.wait_for_timeout(100)
    banner = page.get_by_role("alert")
    expect(banner).to_have_text(
        "“notes.txt” is not an image the model can read. "
        "Choose a JPEG, PNG, WebP, GIF, BMP or TIFF file."
    )
    expect(page.locator("#classes .class-row")).to_have_count(0)
    expect(page.locator("#classes-state")).to_have_text("No classes: see the message above.")
    expect(page.locator("#cam")).to_be_hidden()
    expect(page.locator("#maps figure")).to_have_count(0)
    expect(page.locator("#maps-state")).to_have_text("No feature maps: see the message above.")
    expect(page.locator("#cam-state")).to_have_text("No explanation: see the message above.")
    expect(page.locator("#preview-caption")).to_have_text(
        "notes.txt: this browser cannot show a preview of it."
    )
    assert "BytesIO" not in page.locator("body").inner_text()
    screenshot("08-invalid-file")
    # The next good image clears the message.
    choose_example(page, "A cup of coffee")
    expect(banner).to_be_hidden()


def test_zoom_and_download(page, page_log, screenshot, tmp_path):
    open_page(page)
    choose_example(page)
    head = page.locator("#maps figure").filter(has_text="_head_act")
    head.get_by_role("button", name="Zoom into the feature maps of _head_act").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("_head_act · 1280×7×7")
    level = page.locator("#zoom-level").inner_text()
    page.keyboard.press("+")
    expect(page.locator("#zoom-level")).not_to_have_text(level)
    expect(page.locator("#zoom-image")).to_have_class("pixelated")
    screenshot("09-zoom-head-act", full_page=False)
    with page.expect_download() as download:
        dialog.get_by_role("button", name="Download PNG").click()
    assert (
        download.value.suggested_filename == "chelsea-efficientnet_lite0-featuremaps-_head_act.png"
    )
    grid = png_pixels(Path(download.value.path()).read_bytes())
    assert grid.shape == (74, 74, 3)  # the server's own PNG: 8 x (7 + 2) + 2
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    names = []
    for which in ("overlay", "heatmap", "view"):
        with page.expect_download() as download:
            page.locator(f"[data-download={which}]").click()
        names.append(download.value.suggested_filename)
        assert png_pixels(Path(download.value.path()).read_bytes()).shape == (224, 224, 3)
    label = page.locator("#classes .class-label").first.inner_text().replace(" ", "_")
    assert names == [
        f"chelsea-gradcam-{label}-overlay50.png",
        f"chelsea-gradcam-{label}-heatmap.png",
        "chelsea-model-view.png",
    ]
    for figure in page.locator("#maps figure").all():
        with page.expect_download() as download:
            figure.get_by_role("button", name="Download the feature maps of").click()
        layer = figure.locator("strong").inner_text()
        assert (
            download.value.suggested_filename
            == f"chelsea-efficientnet_lite0-featuremaps-{layer}.png"
        )


def test_a_400_px_wide_screen(page, screenshot):
    page.set_viewport_size({"width": 400, "height": 860})
    open_page(page)
    choose_example(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    for selector in ("#overlay", "#preview", "#maps canvas"):
        box = page.locator(selector).first.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 400, selector
    screenshot("10-narrow-400px")
