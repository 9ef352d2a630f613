// What the page's panels share: the state of the page, messages, and the cost of a method.

export const $ = (id) => document.getElementById(id);

export const DEFAULT_METHOD = "gradcam";
/** Methods that run the model this many times per image wait for a click on Run. */
export const SLOW_COST = 10;

export const state = {
  model: null,        // GET /models/{name}
  labels: [],         // GET /models/{name}/labels
  methods: [],        // GET /models/{name}/methods for the chosen layer
  image: null,        // {id, blob, name, stem}
  target: null,       // class index, or null for the top class
  topK: null,         // the current image's top classes
  featureLayers: [],
  passMs: null,       // measured milliseconds per forward pass of the model
  shown: null,        // the explanation on screen
};

/** What the panels tell the page; set by demo.js. */
export const handlers = {
  /** The top classes of the current image arrived (with any answer about it). */
  topK: (topK, warnings) => {},
  /** An explanation is on screen. */
  explained: (shown) => {},
  /** A request about the current image failed: `clearPanel` empties the panel that asked. */
  failure: (error, panelId, clearPanel) => {},
};

export const methodInfo = (name = $("method").value) => state.methods.find((m) => m.name === name);
export const label = (index) => state.labels[index] ?? `class ${index}`;
export const percent = (score) =>
  (score < 0.001 ? "<0.1%" : `${(100 * score).toFixed(score >= 0.1 ? 0 : 1)}%`);

/** Tell screen readers, once, that something finished. */
export function announce(text) {
  $("announce").textContent = text;
}

/** The message above the results (role=alert), or none. */
export function setBanner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

/** A panel's placeholder text, or none. */
export function setEmpty(id, text) {
  $(id).textContent = text;
  $(id).hidden = !text;
  $(id).classList.remove("error");
}

/** A panel's placeholder, as an error. */
export function setFailure(id, text) {
  setEmpty(id, text);
  $(id).classList.add("error");
}

// -- cost -----------------------------------------------------------------------------------------

/** Remember how long one forward pass takes, from an answer that ran `cost` of them. */
export function learnPassTime(body, cost) {
  const measured = body.timing_ms && body.timing_ms.inference / Math.max(1, cost);
  if (measured > 0) state.passMs = state.passMs ? (state.passMs + measured) / 2 : measured;
}

export function formatSeconds(value) {
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} s`;
}

/** Seconds that `cost` forward passes take, from the measured time of one; null before any. */
export function secondsFor(cost) {
  return state.passMs && cost ? (cost * state.passMs) / 1000 : null;
}

export function aboutSeconds(value) {
  return value < 1 ? "under a second" : `about ${formatSeconds(value)}`;
}

/** "65 passes of the model, about 3.2 s" */
export function costText(info) {
  if (!info || info.cost === null) return "";
  const passes = info.cost === 1 ? "one pass of the model" : `${Math.round(info.cost)} passes of the model`;
  const seconds = secondsFor(info.cost);
  return seconds === null ? passes : `${passes}, ${aboutSeconds(seconds)}`;
}
