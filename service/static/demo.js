// The demo page: an image in, its top classes, a class activation map and feature maps out.
// Everything it offers (models, layers, methods and their cost, labels) comes from the service.
// This module owns the model, the image and the classes, and ties the panels together.

import {PageError, cropBox, getJson, setApiKey} from "/static/api.js";
import {
  abandonExplanation, clearCam, explain, forgetExplanations, setMethods, wireExplanation,
} from "/static/explanation.js";
import {
  abandonFeatureMaps, clearMaps, forgetFeatureMaps, loadMaps, renderChips, wireFeatureMaps,
} from "/static/featuremaps.js";
import {ZoomDialog} from "/static/figures.js";
import {$, handlers, label, percent, setBanner, setEmpty, setFailure, state} from "/static/page.js";

const EXAMPLES = [
  {file: "chelsea.jpg", title: "Chelsea the cat"},
  {file: "coffee.jpg", title: "A cup of coffee"},
  {file: "rocket.jpg", title: "A rocket launch"},
  {file: "astronaut.jpg", title: "An astronaut"},
];
/** Errors about the image itself: every result goes, and the message stands above them. */
const IMAGE_ERRORS = new Set(["invalid_image", "no_images", "extreme_aspect_ratio",
  "image_too_large", "body_too_large", "unreachable"]);
let imageCount = 0;

// -- the API key ----------------------------------------------------------------------------------

/** The service wants a key: show the form; a key entered there is used from the next request on. */
function wireApiKey() {
  const form = $("key-form");
  window.addEventListener("explain:key-needed", () => {
    form.hidden = false;
    $("api-key").focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("api-key").value.trim());
    $("api-key").value = "";
    form.hidden = true;
    setBanner("");
    if (!state.model) loadModels();
    else if (state.image) setImage(state.image.blob, state.image.name);
  });
}

// -- the model ------------------------------------------------------------------------------------

async function loadModels() {
  let models;
  try {
    models = await getJson("/models");
  } catch (error) {
    setBanner(error.code === "not_ready"
      ? "The model is still loading; the page will be ready in a moment." : error.message);
    if (error.code !== "unauthorized") setTimeout(loadModels, 1000);  // the key form retries
    return;
  }
  setBanner("");
  $("model").replaceChildren(...models.map((model) => new Option(
    `${model.name}${model.pretrained ? "" : " (random weights)"}`, model.name)));
  await selectModel(models[0].name);
}

async function selectModel(name) {
  const path = `/models/${encodeURIComponent(name)}`;
  try {
    const [detail, labels] = await Promise.all([getJson(path), getJson(`${path}/labels`)]);
    state.model = detail;
    state.labels = labels.labels;
  } catch (error) {
    setBanner(error.message);
    return;
  }
  const model = state.model;
  $("model-note").textContent =
    `${model.name}: ${model.num_classes} classes, input ${model.crop_size}×${model.crop_size}.`;
  $("labels").replaceChildren(...state.labels.map((text) => new Option(text)));
  const spatial = model.layers.filter((layer) => layer.spatial);
  $("layer").replaceChildren(...spatial.map((layer) =>
    new Option(`${layer.name} · ${layer.output_shape.join("×")}`, layer.name)));
  $("layer").value = model.default_layer ?? spatial[0]?.name ?? "";
  state.featureLayers = [...model.feature_layers];
  state.target = null;
  setMethods(model.methods);
  renderChips();
  forgetExplanations();
  forgetFeatureMaps();
  if (state.image) setImage(state.image.blob, state.image.name);
}

/** A new CAM layer: the methods' costs depend on its channels. */
async function changeLayer() {
  try {
    const query = new URLSearchParams({layer: $("layer").value});
    const body = await getJson(`/models/${encodeURIComponent(state.model.name)}/methods?${query}`);
    setMethods(body.methods);
  } catch (error) {
    clearCam("");
    setFailure("cam-state", error.message);
    return;
  }
  explain();
}

// -- the image ------------------------------------------------------------------------------------

function setImage(blob, name) {
  abandonFeatureMaps();
  abandonExplanation();
  imageCount += 1;
  state.image = {id: imageCount, blob, name, stem: name.replace(/\.[^.]+$/, "") || "image"};
  state.target = null;
  state.topK = null;
  state.shown = null;
  setBanner("");
  showPreview(blob, name);
  clearClasses("Reading the image…");
  clearCam("");
  clearMaps("");
  loadMaps();
  explain();
}

function showPreview(blob, name) {
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  $("drop").dataset.empty = "false";
  document.querySelector(".preview").hidden = false;
  document.querySelector(".preview-frame").hidden = false;
  $("crop").hidden = true;
  preview.alt = `The chosen image, ${name}`;
  $("preview-caption").textContent = name;
  preview.onload = () => outlineCrop(preview, name);
  preview.onerror = () => {
    document.querySelector(".preview-frame").hidden = true;
    $("preview-caption").textContent = `${name}: this browser cannot show a preview of it.`;
  };
  preview.src = URL.createObjectURL(blob);
}

/** Outline the square the model sees: the shorter side resized, then the centre crop. */
function outlineCrop(preview, name) {
  const model = state.model;
  const {naturalWidth: width, naturalHeight: height} = preview;
  if (!model || !width || !height) return;
  const box = cropBox(width, height, model.resize_size, model.crop_size);
  Object.assign($("crop").style, {
    left: `${100 * box.left}%`, top: `${100 * box.top}%`,
    width: `${100 * box.width}%`, height: `${100 * box.height}%`,
  });
  $("crop").hidden = false;
  $("preview-caption").textContent = `${name}, ${width}×${height}. The model sees only the outlined ` +
    `square: the shorter side resized to ${model.resize_size} px, then the centre ` +
    `${model.crop_size}×${model.crop_size}.`;
}

async function loadExample(example) {
  try {
    const response = await fetch(`/static/examples/${example.file}`);
    if (!response.ok) throw new Error(response.statusText);
    setImage(await response.blob(), example.file);
  } catch {
    setBanner(`The example ${example.file} could not be loaded from the service.`);
  }
}

function firstFile(items) {
  for (const item of items || []) {
    const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
    if (file) return file;
  }
  return null;
}

// -- top classes ----------------------------------------------------------------------------------

function clearClasses(text) {
  $("classes").replaceChildren();
  setEmpty("classes-state", text);
  $("class-search").disabled = $("search-go").disabled = true;
}

/** The first answer about an image brings its top classes (and how it was read). */
function showTopK(topK, warnings) {
  if (state.topK) return;
  state.topK = topK;
  setEmpty("classes-state", "");
  $("class-search").disabled = $("search-go").disabled = false;
  if (warnings && warnings.length) $("preview-caption").textContent += ` Note: ${warnings.join("; ")}.`;
  renderClasses();
}

/** The top classes as buttons, the explained one pressed; a searched class joins them. */
function renderClasses() {
  if (!state.topK) return;
  const chosen = state.target ?? state.topK[0].index;
  const rows = [...state.topK];
  if (!rows.some((entry) => entry.index === chosen)) {
    const shown = state.shown && state.shown.explanation;
    const score = shown && shown.index === chosen ? shown.score : null;
    rows.push({index: chosen, label: label(chosen), score, searched: true});
  }
  $("classes").replaceChildren(...rows.map((entry) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "class-row";
    button.setAttribute("aria-pressed", String(entry.index === chosen));
    button.title = `Class ${entry.index}`;
    const name = document.createElement("span");
    name.className = "class-label";
    name.textContent = entry.label;
    if (entry.searched) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "searched";
      name.append(" ", tag);
    }
    const score = document.createElement("span");
    score.className = "class-score";
    score.textContent = entry.score === null ? "" : percent(entry.score);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.setProperty("--score", entry.score ?? 0);
    button.append(name, score, bar);
    button.addEventListener("click", () => chooseTarget(entry.index));
    const item = document.createElement("li");
    item.append(button);
    return item;
  }));
}

function chooseTarget(index) {
  state.target = state.topK && index === state.topK[0].index ? null : index;
  renderClasses();
  explain();
}

/** A class index, or a label matched without regard to case; otherwise what is wrong. */
function resolveLabel(text) {
  const wanted = text.trim();
  if (/^\d+$/.test(wanted)) {
    const index = Number(wanted);
    if (index < state.labels.length) return {index};
    return {problem: `There is no class ${index}: this model has classes 0 to ${state.labels.length - 1}.`};
  }
  const lower = wanted.toLowerCase();
  const exact = state.labels.flatMap((name, index) => (name.toLowerCase() === lower ? [index] : []));
  if (exact.length === 1) return {index: exact[0]};
  if (exact.length > 1) {
    return {problem: `“${wanted}” names several classes (${exact.join(", ")}); type one index.`};
  }
  const close = state.labels.filter((name) => name.toLowerCase().includes(lower)).slice(0, 4);
  return {problem: `No class is called “${wanted}”.` +
    (close.length ? ` Did you mean ${close.map((c) => `“${c}”`).join(", ")}?` : "")};
}

// -- failures -------------------------------------------------------------------------------------

/** An error from the service: about the image (banner, every result cleared) or one panel's. */
function failed(error, panelId, clearPanel) {
  const message = error instanceof PageError ? error.message : `Something went wrong: ${error.message}`;
  if (!IMAGE_ERRORS.has(error.code)) {
    clearPanel();
    setFailure(panelId, message);
    return;
  }
  abandonFeatureMaps();  // the other answer about this image, if it still comes, is not shown
  abandonExplanation();
  setBanner(message);
  clearClasses("No classes: see the message above.");
  clearCam("No explanation: see the message above.");
  clearMaps("No feature maps: see the message above.");
}

// -- wiring ---------------------------------------------------------------------------------------

function wire() {
  handlers.topK = showTopK;
  handlers.explained = renderClasses;
  handlers.failure = failed;
  const zoom = new ZoomDialog();
  wireExplanation(zoom, changeLayer);
  wireFeatureMaps(zoom);

  $("model").addEventListener("change", () => selectModel($("model").value));
  $("choose").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) setImage(file, file.name);
    $("file").value = "";
  });
  // A file dropped anywhere on the page is the new image (the browser would otherwise leave the
  // page to show it); the drop zone lights up while a file is over it.
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    document.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.toggle("dragging", drop.contains(event.target));
    });
  }
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget || !drop.contains(event.relatedTarget)) drop.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const file = firstFile(event.dataTransfer && event.dataTransfer.files);
    if (file) setImage(file, file.name);
    else setBanner("Drop an image file: what was dropped is not a file.");
  });
  document.addEventListener("paste", (event) => {
    const file = firstFile(event.clipboardData && event.clipboardData.items);
    if (!file) return;  // text pasted into the search box stays text
    event.preventDefault();
    setImage(file, file.name && file.name !== "image.png" ? file.name : "pasted-image.png");
  });
  $("examples").replaceChildren(...EXAMPLES.map((example) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.setAttribute("aria-label", `Example: ${example.title}`);
    const thumb = document.createElement("img");
    thumb.src = `/static/examples/${example.file}`;
    thumb.alt = "";
    button.append(thumb);
    button.addEventListener("click", () => loadExample(example));
    return button;
  }));
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const {index, problem} = resolveLabel($("class-search").value);
    $("search-note").textContent = problem || "";
    if (problem) return;
    $("class-search").value = "";
    chooseTarget(index);
  });
}

wire();
wireApiKey();
loadModels();
