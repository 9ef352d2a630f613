// The feature-map panel: chosen layers as grids of channels, small tiles enlarged and framed.
// Its answers are kept per image, model, layers and channel count: changing the method, the class
// or the opacity never asks for them again.

import {Cache, isAbort, postImage} from "/static/api.js";
import {describeMethod} from "/static/explanation.js";
import {download, fileName, pngImage, retile, tileScale} from "/static/figures.js";
import {$, handlers, learnPassTime, setEmpty, state} from "/static/page.js";

const MAX_LAYERS = 16;  // layers per request (the service's limit)
const cache = new Cache(12);
let running = null;     // {key, controller}
let zoomDialog = null;

export function clearMaps(text) {
  $("maps").replaceChildren();
  setEmpty("maps-state", text);
}

export function forgetFeatureMaps() {
  cache.clear();
}

/** Stop waiting for the feature maps on their way, if any: their answer will be ignored. */
export function abandonFeatureMaps() {
  if (running) running.controller.abort();
  running = null;
}

/** The chosen layers as removable chips, and the others in the "Add a layer" picker. */
export function renderChips() {
  $("chips").replaceChildren(...state.featureLayers.map((name) => {
    const item = document.createElement("li");
    item.className = "chip";
    const text = document.createElement("span");
    text.textContent = name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove layer ${name}`);
    remove.disabled = state.featureLayers.length === 1;
    remove.addEventListener("click", () => {
      state.featureLayers = state.featureLayers.filter((layer) => layer !== name);
      renderChips();
      loadMaps();
      $("add-layer").focus();  // the chip and its button are gone
    });
    item.append(text, remove);
    return item;
  }));
  const full = state.featureLayers.length >= MAX_LAYERS;
  const available = (state.model ? state.model.layers : [])
    .filter((layer) => layer.spatial && !state.featureLayers.includes(layer.name));
  const prompt = new Option(full ? `At most ${MAX_LAYERS} layers` : "Choose…", "");
  $("add-layer").replaceChildren(prompt, ...available.map((layer) =>
    new Option(`${layer.name} · ${layer.output_shape.join("×")}`, layer.name)));
  $("add-layer").disabled = full;
}

/** Show the feature maps for the current choices: from the cache, or ask the service. */
export async function loadMaps() {
  if (!state.image || !state.model) return;
  const options = {
    model: state.model.name, layers: state.featureLayers.join(","), max_channels: $("channels").value,
  };
  const key = [state.image.id, options.model, options.layers, options.max_channels].join("|");
  if (running && running.key === key) return;
  abandonFeatureMaps();
  const cached = cache.get(key);
  if (cached) {
    showMaps(cached);
    return;
  }
  const run = {key, controller: new AbortController()};
  running = run;
  clearMaps("Computing feature maps…");
  try {
    const body = await postImage("/featuremaps", state.image, options, run.controller.signal);
    learnPassTime(body, 1);
    const result = body.results[0];
    const maps = await Promise.all(
      result.featuremaps.map(async (map) => ({...map, image: await pngImage(map.png)})));
    const shown = {maps, topK: result.top_k, warnings: result.warnings};
    cache.set(key, shown);
    if (running !== run) return;
    showMaps(shown);
    describeMethod();  // its cost estimate now has a measured pass time
  } catch (error) {
    if (!isAbort(error) && running === run) handlers.failure(error, "maps-state", () => clearMaps(""));
  } finally {
    if (running === run) running = null;
  }
}

function showMaps(shown) {
  handlers.topK(shown.topK, shown.warnings);
  setEmpty("maps-state", "");
  const target = Math.min(320, $("maps").clientWidth || 320);
  $("maps").replaceChildren(...shown.maps.map((map) => figure(map, target)));
}

/** One layer: its grid (zoom on click), what it is, and a download of the service's PNG. */
function figure(map, target) {
  const [channels, height, width] = map.shape;
  const perRow = Math.min(Math.ceil(Math.sqrt(map.channels_shown)), map.channels_shown);
  const scale = tileScale(perRow, width, target);
  const tiled = retile(map.image, map.shape, map.channels_shown, scale);
  const picture = tiled ? tiled.canvas : map.image.cloneNode();
  picture.setAttribute("role", "img");
  picture.setAttribute("aria-label",
    `Feature maps of ${map.layer}: ${map.channels_shown} of ${channels} channels, each ${height}×${width}`);
  picture.classList.add("pixelated");
  const title = `${map.layer} · ${channels}×${height}×${width}`;
  const name = fileName(state.image.stem, state.model.name, "featuremaps", map.layer);
  const png = `data:image/png;base64,${map.png}`;

  const open = document.createElement("button");
  open.type = "button";
  open.className = "map-open";
  open.setAttribute("aria-label", `Zoom into the feature maps of ${map.layer}`);
  open.append(picture);
  open.addEventListener("click", () => {
    const large = retile(map.image, map.shape, map.channels_shown, Math.max(scale, 2));
    zoomDialog.open(title, large ? large.canvas.toDataURL("image/png") : png, name, true, png);
  });
  const caption = document.createElement("figcaption");
  const strong = document.createElement("strong");
  strong.textContent = map.layer;
  const notes = [`${channels}×${height}×${width}`, `${map.channels_shown} channels shown`];
  if (scale > 1) notes.push(`${scale}× enlarged`);
  if (tiled && tiled.constant) notes.push(`${tiled.constant} black: constant over this image`);
  caption.append(strong, ` ${notes.join(", ")}`);
  const save = document.createElement("button");
  save.type = "button";
  save.textContent = "Download PNG";
  save.setAttribute("aria-label", `Download the feature maps of ${map.layer}`);
  save.addEventListener("click", () => download(png, name));
  const actions = document.createElement("div");
  actions.className = "figure-actions";
  actions.append(save);
  const item = document.createElement("figure");
  item.append(open, caption, actions);
  return item;
}

export function wireFeatureMaps(zoom) {
  zoomDialog = zoom;
  $("add-layer").addEventListener("change", () => {
    const name = $("add-layer").value;
    if (!name) return;
    state.featureLayers = [...state.featureLayers, name];
    renderChips();
    loadMaps();
  });
  $("channels").addEventListener("change", loadMaps);
}
