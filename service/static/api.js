// Talking to the service: requests, readable errors, a small cache, and the model's crop.

/** An error whose message is a sentence for the person using the page. */
export class PageError extends Error {
  constructor(message, code = "page_error") {
    super(message);
    this.code = code;
  }
}

const KEY_STORE = "explain-api-key";

/** The API key the person entered (kept for this tab only), or null. */
export const apiKey = () => sessionStorage.getItem(KEY_STORE);

/** Remember `key` for this tab's requests (an empty key forgets it). */
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

function authorization() {
  const key = apiKey();
  return key ? {Authorization: `Bearer ${key}`} : {};
}

/** Tell the page that the service wants a (valid) key: it shows the key form. */
function keyNeeded() {
  window.dispatchEvent(new CustomEvent("explain:key-needed", {detail: {hadKey: Boolean(apiKey())}}));
}

/** The error a fetch raises when its AbortController is aborted. */
export const isAbort = (error) => error && error.name === "AbortError";

async function readJson(response) {
  try {
    return await response.json();
  } catch (error) {
    if (isAbort(error)) throw error;
    return null;  // not JSON: the status alone says what happened
  }
}

/** GET a JSON resource of the service. */
export async function getJson(path, signal) {
  let response;
  try {
    response = await fetch(path, {signal, headers: {Accept: "application/json", ...authorization()}});
  } catch (error) {
    if (isAbort(error)) throw error;
    throw new PageError("The service could not be reached. Is it still running?", "unreachable");
  }
  const body = await readJson(response);
  if (!response.ok) throw explainFailure(response, body);
  return body;
}

/** POST one image (multipart, part `image`) to an explanation endpoint with query options. */
export async function postImage(path, image, options, signal) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(options)) {
    for (const item of [].concat(value)) {
      if (item !== null && item !== undefined) query.append(name, String(item));
    }
  }
  const form = new FormData();
  form.append("image", image.blob, image.name);
  let response;
  try {
    response = await fetch(`${path}?${query}`, {method: "POST", body: form, signal, headers: authorization()});
  } catch (error) {
    if (isAbort(error)) throw error;
    throw new PageError("The service could not be reached. Is it still running?", "unreachable");
  }
  const body = await readJson(response);
  if (!response.ok) throw explainFailure(response, body, image);
  return body;
}

const fullStop = (text) => (/[.!?]$/.test(text) ? text : `${text}.`);

/** The service's own message, as a sentence: no leading "image 0", a capital and a full stop. */
function detail(message) {
  const text = String(message || "").replace(/^image \d+:\s*/i, "").replace(/^image \d+ /i, "the image ");
  return fullStop(text.charAt(0).toUpperCase() + text.slice(1));
}

/** A failed answer, turned into a sentence that says what happened and what to do. */
function explainFailure(response, body, image) {
  const error = (body && body.error) || {};
  const code = error.code || `http_${response.status}`;
  if (code === "unauthorized") keyNeeded();
  const name = image ? `“${image.name}”` : "The image";
  const sentences = {
    invalid_image: `${name} is not an image the model can read. Choose a JPEG, PNG, WebP, GIF, BMP or TIFF file.`,
    no_images: `${name} is empty. Choose another file.`,
    extreme_aspect_ratio: `${name} is too long and thin to explain. ${detail(error.message)}`,
    image_too_large: `${name} is too large for this service. ${detail(error.message)}`,
    body_too_large: `${name} is too large to upload to this service. ${detail(error.message)}`,
    not_ready: "The model is still loading. Try again in a few seconds.",
    overloaded: "The service is busy with other requests. Try again in a few seconds.",
    shutting_down: "The service is shutting down. Reload the page once it is back.",
    internal_error: "The service failed on this request. Its log has the details; try another image or method.",
    request_timeout: "The upload took too long. Try again, or a smaller image.",
    deadline_exceeded: "This explanation took longer than the service allows. Try a faster method.",
    method_not_applicable: `This method does not apply here: ${fullStop(String(error.message))}`,
    unauthorized: apiKey() ? "The service did not accept this API key. Enter another one."
      : "This service needs an API key. Enter it below.",
  };
  const message = sentences[code] ||
    (error.message ? detail(error.message) : `The service answered ${response.status} ${response.statusText}.`);
  return new PageError(message, code);
}

/** A map that forgets its oldest entries beyond `limit` (answers hold base64 PNGs). */
export class Cache {
  constructor(limit = 24) {
    this.limit = limit;
    this.entries = new Map();
  }
  get(key) {
    if (!this.entries.has(key)) return undefined;
    const value = this.entries.get(key);
    this.entries.delete(key);
    this.entries.set(key, value);
    return value;
  }
  set(key, value) {
    this.entries.delete(key);
    this.entries.set(key, value);
    while (this.entries.size > this.limit) this.entries.delete(this.entries.keys().next().value);
  }
  clear() {
    this.entries.clear();
  }
}

/** Python's round(): halves go to the even neighbour. */
function roundHalfEven(value) {
  const floor = Math.floor(value);
  const diff = value - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * The part of a width x height image that the model sees, as fractions of each side: the shorter
 * side resized to `resize`, then a `crop` x `crop` centre crop (as explain.models.Preprocess does).
 */
export function cropBox(width, height, resize, crop) {
  const [newWidth, newHeight] = width <= height
    ? [resize, Math.floor((resize * height) / width)]
    : [Math.floor((resize * width) / height), resize];
  const top = roundHalfEven((newHeight - crop) / 2);
  const left = roundHalfEven((newWidth - crop) / 2);
  return {left: left / newWidth, top: top / newHeight, width: crop / newWidth, height: crop / newHeight};
}
