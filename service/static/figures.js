// Pictures on the page: blending the heatmap, sharp upscaling of small maps, zoom and download.

const $ = (id) => document.getElementById(id);

/** An <img> loaded from a base64 PNG (resolves once decoded). */
export function pngImage(base64) {
  const image = new Image();
  image.src = `data:image/png;base64,${base64}`;
  return image.decode().then(() => image);
}

/** Draw the model's view, then the heatmap over it at `opacity` (0-1): the server's own blend. */
export function blend(canvas, view, heatmap, opacity) {
  canvas.width = view.naturalWidth;
  canvas.height = view.naturalHeight;
  const context = canvas.getContext("2d");
  context.globalAlpha = 1;
  context.drawImage(view, 0, 0);
  context.globalAlpha = opacity;
  context.drawImage(heatmap, 0, 0, canvas.width, canvas.height);
  context.globalAlpha = 1;
}

/**
 * Redraw a feature-map grid from the service (channels as tiles, min-max scaled one by one, black
 * padding between them) with every pixel `scale` times larger and a grey `gap` between the tiles,
 * so that dark tiles stay apart. Returns null when the picture is not laid out as expected.
 *
 * @returns {{canvas: HTMLCanvasElement, constant: number}} `constant`: tiles that are all black,
 *   i.e. channels with one value over the whole image (often zero after a ReLU).
 */
export function retile(image, shape, shown, scale, gap = 2) {
  const [, height, width] = shape;
  const perRow = Math.min(Math.ceil(Math.sqrt(shown)), shown);
  const rows = Math.ceil(shown / perRow);
  const pad = (image.naturalWidth - perRow * width) / (perRow + 1);
  if (!Number.isInteger(pad) || pad < 0 || image.naturalHeight !== rows * height + (rows + 1) * pad) {
    return null;
  }
  const source = document.createElement("canvas");
  source.width = image.naturalWidth;
  source.height = image.naturalHeight;
  const sourceContext = source.getContext("2d", {willReadFrequently: true});
  sourceContext.drawImage(image, 0, 0);
  const pixels = sourceContext.getImageData(0, 0, source.width, source.height).data;

  const canvas = document.createElement("canvas");
  canvas.width = perRow * width * scale + (perRow + 1) * gap;
  canvas.height = rows * height * scale + (rows + 1) * gap;
  const context = canvas.getContext("2d");
  context.fillStyle = "#4a5263";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.imageSmoothingEnabled = false;
  let constant = 0;
  for (let tile = 0; tile < shown; tile += 1) {
    const row = Math.floor(tile / perRow);
    const column = tile % perRow;
    const x = pad + column * (width + pad);
    const y = pad + row * (height + pad);
    let peak = 0;
    for (let j = y; j < y + height && peak === 0; j += 1) {
      for (let i = x; i < x + width; i += 1) peak = Math.max(peak, pixels[4 * (j * source.width + i)]);
    }
    if (peak === 0) constant += 1;
    context.drawImage(image, x, y, width, height, gap + column * (width * scale + gap),
      gap + row * (height * scale + gap), width * scale, height * scale);
  }
  return {canvas, constant};
}

/** The whole-number enlargement that brings `tiles` tiles of `size` pixels (plus gaps) to `target`. */
export function tileScale(tiles, size, target, gap = 2) {
  return Math.max(1, Math.floor((target - (tiles + 1) * gap) / (tiles * size)));
}

/** A file name made of the given parts, safe for any file system. */
export function fileName(...parts) {
  const stem = parts.filter(Boolean).join("-").replace(/[^\w.+-]+/g, "_").replace(/_+/g, "_");
  return `${stem.slice(0, 120)}.png`;
}

/** Save a PNG (a data URL) under `name`. */
export function download(dataUrl, name) {
  const link = document.createElement("a");
  link.href = dataUrl;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
}

const ZOOM_STEPS = [0.5, 1, 2, 3, 4, 6, 8, 12, 16];

/** The zoom dialog: a picture at chosen whole multiples of its size, with a download button. */
export class ZoomDialog {
  constructor() {
    this.dialog = $("zoom");
    this.image = $("zoom-image");
    this.step = 1;
    $("zoom-in").addEventListener("click", () => this.zoomBy(1));
    $("zoom-out").addEventListener("click", () => this.zoomBy(-1));
    $("zoom-close").addEventListener("click", () => this.dialog.close());
    $("zoom-download").addEventListener("click", () => download(this.original, this.name));
    this.dialog.addEventListener("keydown", (event) => {
      if (event.key === "+" || event.key === "=") this.zoomBy(1);
      else if (event.key === "-") this.zoomBy(-1);
    });
    this.dialog.addEventListener("click", (event) => {
      if (event.target === this.dialog) this.dialog.close();  // a click on the backdrop
    });
  }

  /**
   * Open with the picture `dataUrl`; `pixelated`: show pixels as squares (feature maps);
   * `original`: what Download saves as `name` (default: the picture itself).
   */
  async open(title, dataUrl, name, pixelated, original = dataUrl) {
    $("zoom-title").textContent = title;
    this.name = name;
    this.original = original;
    this.image.alt = title;
    this.image.src = dataUrl;
    this.image.classList.toggle("pixelated", pixelated);
    await this.image.decode();
    // Start at the largest whole multiple that fits the window.
    const room = Math.min(window.innerWidth - 64, window.innerHeight - 160);
    const fits = ZOOM_STEPS.filter((s) => s * this.image.naturalWidth <= room);
    this.step = ZOOM_STEPS.indexOf(fits.length ? fits[fits.length - 1] : ZOOM_STEPS[0]);
    this.apply();
    this.dialog.showModal();
  }

  zoomBy(direction) {
    this.step = Math.min(ZOOM_STEPS.length - 1, Math.max(0, this.step + direction));
    this.apply();
  }

  apply() {
    const factor = ZOOM_STEPS[this.step];
    this.image.style.width = `${this.image.naturalWidth * factor}px`;
    $("zoom-level").textContent = `${factor}×`;
  }
}
