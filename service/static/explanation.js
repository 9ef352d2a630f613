// The explanation panel: method, layer, colours and opacity; the heatmap over the model's view.
// The service is asked once per choice (alpha 0: the image as the model sees it, and the heatmap);
// the page blends them, so the opacity slider never asks the service again.

import {Cache, isAbort, postImage} from "/static/api.js";
import {blend, download, fileName, pngImage} from "/static/figures.js";
import {
  $, DEFAULT_METHOD, SLOW_COST, aboutSeconds, announce, costText, formatSeconds, handlers,
  learnPassTime, methodInfo, percent, secondsFor, setEmpty, state,
} from "/static/page.js";

const cache = new Cache(24);
let running = null;  // {key, info, controller, started, timer, cancelled}

export function clearCam(text) {
  $("cam").hidden = true;
  setEmpty("cam-state", text);
  $("run-slow").hidden = true;
}

export function forgetExplanations() {
  cache.clear();
}

/** Stop waiting for the explanation on its way, if any: its answer will be ignored. */
export function abandonExplanation() {
  if (running) running.controller.abort();
  running = null;
}

/** Fill the method picker: the service's default first, then the cheapest first. */
export function setMethods(methods) {
  const current = $("method").value || DEFAULT_METHOD;
  state.methods = methods;
  const order = [...methods].sort((a, b) =>
    (b.name === DEFAULT_METHOD) - (a.name === DEFAULT_METHOD) || (a.cost ?? 1e9) - (b.cost ?? 1e9));
  $("method").replaceChildren(...order.map((info) => {
    const slow = info.cost >= SLOW_COST ? ` (slow: ${Math.round(info.cost)} passes)` : "";
    const option = new Option(`${info.name}${info.unavailable ? " (not available)" : slow}`, info.name);
    option.disabled = Boolean(info.unavailable);
    return option;
  }));
  $("method").value = methods.some((m) => m.name === current && !m.unavailable) ? current : DEFAULT_METHOD;
  describeMethod();
}

/** What the chosen method computes and costs; whether the class matters. */
export function describeMethod() {
  const info = methodInfo();
  if (!info) return;
  const specific = info.class_specific ? "" : " Its map is the same for every class.";
  $("method-note").textContent = `${info.description}${specific} Cost: ${costText(info)}.`;
  $("classes-hint").textContent = info.class_specific
    ? "Click a class to see where the model finds it."
    : `${info.name} does not depend on the class: every class gets the same map.`;
}

function request() {
  const info = methodInfo();
  const options = {
    model: state.model.name, method: info.name, layer: $("layer").value,
    colormap: $("colormap").value, alpha: 0,
  };
  if (state.target !== null) options.target = state.target;
  const target = info.class_specific ? state.target ?? "top" : "any";
  const key = [state.image.id, options.model, options.method, options.layer, options.colormap, target].join("|");
  return {options, key, info};
}

/** Show the explanation for the current choices: from the cache, or ask the service for it. */
export async function explain({confirmed = false} = {}) {
  if (!state.image || !state.model || !methodInfo()) return;
  describeMethod();
  const {options, key, info} = request();
  if (running && running.key === key) return;  // already on its way
  abandonExplanation();
  const cached = cache.get(key);
  if (cached) {
    $("run-slow").hidden = true;
    showExplanation(cached);
    return;
  }
  if (info.cost >= SLOW_COST && !confirmed) {
    clearCam(`${info.name} runs the model ${Math.round(info.cost)} times for one image. ` +
      "Click Run when you are ready.");
    offerRun(`Run ${info.name}`, "You can cancel it while it runs.");
    return;
  }
  $("run-slow").hidden = true;
  if (info.cost >= SLOW_COST) clearCam("");  // the progress bar says what is going on
  else if ($("cam").hidden) clearCam("Computing the explanation…");
  $("cam").classList.add("stale");  // until the new answer replaces it
  const run = {key, info, controller: new AbortController(), started: performance.now()};
  running = run;
  startProgress(run);
  try {
    const body = await postImage("/gradcam", state.image, options, run.controller.signal);
    learnPassTime(body, info.cost);
    const result = body.results[0];
    const explanation = result.explanations[0];
    const [view, heatmap] = await Promise.all(
      [pngImage(explanation.overlay_png), pngImage(explanation.heatmap_png)]);
    const shown = {explanation, info, view, heatmap, topK: result.top_k, warnings: result.warnings};
    cache.set(key, shown);
    if (running !== run) return;
    showExplanation(shown);
    announce(`Explanation ready: ${caption(shown)}`);
  } catch (error) {
    if (isAbort(error)) {
      if (run.cancelled) {
        clearCam(`Cancelled ${info.name} after ${formatSeconds((performance.now() - run.started) / 1000)}.`);
        offerRun(`Run ${info.name} again`, "");
        announce(`Cancelled ${info.name}.`);
      }
      return;
    }
    if (running === run) handlers.failure(error, "cam-state", () => clearCam(""));
  } finally {
    stopProgress(run);
    if (running === run) {
      running = null;
      $("cam").classList.remove("stale");
    }
  }
}

function offerRun(action, note) {
  $("run").textContent = action;
  $("run-note").textContent = note;
  $("run-slow").hidden = false;
}

/** Eigen-CAM and its kind explain no class: they are not labelled "of <class>". */
function caption(shown) {
  const {explanation, info} = shown;
  if (!info.class_specific) return `${info.name} at ${explanation.layer}: the same map for every class`;
  return `${info.name} of “${explanation.label}” (class ${explanation.index}, ` +
    `${percent(explanation.score)}) at ${explanation.layer}`;
}

function showExplanation(shown) {
  state.shown = shown;
  handlers.topK(shown.topK, shown.warnings);
  handlers.explained(shown);
  setEmpty("cam-state", "");
  $("cam").hidden = false;
  $("cam").classList.remove("stale");
  $("cam-caption").textContent = caption(shown);
  $("overlay").setAttribute("aria-label", `Heatmap over the image: ${caption(shown)}`);
  $("heatmap").src = shown.heatmap.src;
  $("view").src = shown.view.src;
  $("view-caption").textContent =
    `What the model sees (${shown.view.naturalWidth}×${shown.view.naturalHeight})`;
  reblend();
}

function reblend() {
  $("opacity-value").textContent = `${$("opacity").value}%`;
  if (state.shown) blend($("overlay"), state.shown.view, state.shown.heatmap, Number($("opacity").value) / 100);
}

function startProgress(run) {
  const seconds = secondsFor(run.info.cost);
  $("progress-text").textContent = `Running ${run.info.name}` +
    (seconds === null ? "" : ` (${aboutSeconds(seconds)})`);
  const bar = $("progress-bar");
  const tick = () => {
    const elapsed = (performance.now() - run.started) / 1000;
    $("elapsed").textContent = `${elapsed.toFixed(1)} s`;
    if (seconds) bar.value = Math.min(0.95, elapsed / seconds);
    else bar.removeAttribute("value");
    if (elapsed > 0.25) $("progress").hidden = false;  // fast answers do not flash it
  };
  tick();
  run.timer = setInterval(tick, 100);
}

function stopProgress(run) {
  clearInterval(run.timer);
  if (!running || running === run) $("progress").hidden = true;
}

/** One of the three pictures: the blend as shown, the heatmap, or the model's view. */
function picture(which) {
  const {explanation, info} = state.shown;
  const parts = [state.image.stem, info.name, info.class_specific ? explanation.label : null];
  if (which === "overlay") {
    return {
      url: $("overlay").toDataURL("image/png"),
      name: fileName(...parts, `overlay${$("opacity").value}`),
      title: `Heatmap over the image: ${caption(state.shown)}`,
    };
  }
  if (which === "heatmap") {
    return {
      url: `data:image/png;base64,${explanation.heatmap_png}`,
      name: fileName(...parts, "heatmap"),
      title: `Heatmap: ${caption(state.shown)}`,
    };
  }
  return {
    url: `data:image/png;base64,${explanation.overlay_png}`,
    name: fileName(state.image.stem, "model-view"),
    title: "What the model sees",
  };
}

export function wireExplanation(zoom, onLayer) {
  $("method").addEventListener("change", () => explain());
  $("colormap").addEventListener("change", () => explain());
  $("layer").addEventListener("change", onLayer);
  $("opacity").addEventListener("input", reblend);
  $("run").addEventListener("click", () => explain({confirmed: true}));
  $("cancel").addEventListener("click", () => {
    if (!running) return;
    running.cancelled = true;
    running.controller.abort();
  });
  for (const button of document.querySelectorAll("[data-zoom]")) {
    button.addEventListener("click", () => {
      const {title, url, name} = picture(button.dataset.zoom);
      zoom.open(title, url, name, false);
    });
  }
  for (const button of document.querySelectorAll("[data-download]")) {
    button.addEventListener("click", () => {
      const {url, name} = picture(button.dataset.download);
      download(url, name);
    });
  }
}
