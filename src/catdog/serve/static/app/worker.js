// catdog's phone app: where the model runs, off the page's thread.
//
// A photo takes the same path as in Python (catdog/preprocess.py, catdog/predict.py): decode (EXIF
// orientation applied, transparency on white), resize the shorter side with Pillow's own resampling
// (its fixed-point bicubic filter, reproduced below pixel for pixel), centre crop, normalise, the model
// (the same ONNX file `catdog predict` runs, in ONNX Runtime Web: its WebGPU runtime on the GPU, or its
// WebAssembly runtime on the CPU, as the page asks), then the outputs become a Prediction exactly as
// Predictor.to_predictions does. Camera frames go the same way.
const RUNTIMES = { webgpu: "./vendor/ort.webgpu.min.mjs", wasm: "./vendor/ort.wasm.min.mjs" };

let ort = null;
let session = null;
let config = null;
let outputNames = [];
let busy = Promise.resolve();

// -- Pillow's resampling (libImaging/Resample.c), 8 bits per channel ---------------------------------

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const FILTERS = {
  bicubic: {
    support: 2,
    weight(x) {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  bilinear: { support: 1, weight: (x) => Math.max(0, 1 - Math.abs(x)) },
  nearest: { support: 0.5, weight: (x) => (x >= -0.5 && x < 0.5 ? 1 : 0) },
};

// precompute_coeffs + normalize_coeffs_8bpc: for each output pixel, its first input pixel, how many, and weights.
// Camera frames all have the same size: their coefficients are computed once.
const coefficientCache = new Map();

function coefficients(inSize, in0, in1, outSize, filter) {
  const key = `${inSize}/${in0}/${in1}/${outSize}/${filter.support}`;
  if (!coefficientCache.has(key)) {
    if (coefficientCache.size > 16) coefficientCache.clear();
    coefficientCache.set(key, computeCoefficients(inSize, in0, in1, outSize, filter));
  }
  return coefficientCache.get(key);
}

function computeCoefficients(inSize, in0, in1, outSize, filter) {
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Int32Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      w[x] = filter.weight((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { kk, bounds, ksize };
}

const clip8 = (v) => (v <= 0 ? 0 : v >= 255 ? 255 : v);

// Pillow's two-pass resize of RGBA pixels (width x height) to outW x outH over `box`, computing only the
// output window [x0, x0 + w) x [y0, y0 + h): the same numbers as resizing the whole image and cropping.
// Returns RGB bytes (w x h x 3).
function resizeWindow(rgba, width, height, box, outW, outH, x0, y0, w, h, filter) {
  const horiz = coefficients(width, box[0], box[2], outW, filter);
  const vert = coefficients(height, box[1], box[3], outH, filter);
  const needH = outW !== width || box[0] !== 0 || box[2] !== outW;
  const needV = outH !== height || box[1] !== 0 || box[3] !== outH;
  // Input rows the window's output rows read.
  const rowFirst = needV ? vert.bounds[y0 * 2] : y0;
  const rowLast = needV ? vert.bounds[(y0 + h - 1) * 2] + vert.bounds[(y0 + h - 1) * 2 + 1] : y0 + h;
  const rows = rowLast - rowFirst;
  const temp = new Uint8Array(rows * w * 3);
  for (let r = 0; r < rows; r++) {
    const line = (rowFirst + r) * width * 4;
    for (let xx = 0; xx < w; xx++) {
      const o = (r * w + xx) * 3;
      if (!needH) {
        const i = line + (x0 + xx) * 4;
        temp[o] = rgba[i];
        temp[o + 1] = rgba[i + 1];
        temp[o + 2] = rgba[i + 2];
        continue;
      }
      const xmin = horiz.bounds[(x0 + xx) * 2];
      const n = horiz.bounds[(x0 + xx) * 2 + 1];
      const k = (x0 + xx) * horiz.ksize;
      let s0 = 1 << (PRECISION_BITS - 1);
      let s1 = s0;
      let s2 = s0;
      for (let x = 0; x < n; x++) {
        const i = line + (xmin + x) * 4;
        const c = horiz.kk[k + x];
        s0 += rgba[i] * c;
        s1 += rgba[i + 1] * c;
        s2 += rgba[i + 2] * c;
      }
      temp[o] = clip8(s0 >> PRECISION_BITS);
      temp[o + 1] = clip8(s1 >> PRECISION_BITS);
      temp[o + 2] = clip8(s2 >> PRECISION_BITS);
    }
  }
  if (!needV) return temp;
  const out = new Uint8Array(w * h * 3);
  for (let yy = 0; yy < h; yy++) {
    const ymin = vert.bounds[(y0 + yy) * 2] - rowFirst;
    const n = vert.bounds[(y0 + yy) * 2 + 1];
    const k = (y0 + yy) * vert.ksize;
    for (let xx = 0; xx < w; xx++) {
      let s0 = 1 << (PRECISION_BITS - 1);
      let s1 = s0;
      let s2 = s0;
      for (let y = 0; y < n; y++) {
        const i = ((ymin + y) * w + xx) * 3;
        const c = vert.kk[k + y];
        s0 += temp[i] * c;
        s1 += temp[i + 1] * c;
        s2 += temp[i + 2] * c;
      }
      const o = (yy * w + xx) * 3;
      out[o] = clip8(s0 >> PRECISION_BITS);
      out[o + 1] = clip8(s1 >> PRECISION_BITS);
      out[o + 2] = clip8(s2 >> PRECISION_BITS);
    }
  }
  return out;
}

// Python's round(): halves to even.
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// Pillow's Image.reduce(s) (box average, partial blocks at the edges): stands in for the JPEG draft mode
// (DCT scaling) Python uses on photos at least twice the square's size.
function reduce(rgba, width, height, s) {
  const w = Math.ceil(width / s);
  const h = Math.ceil(height / s);
  const out = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    const ys = Math.min(s, height - y * s);
    for (let x = 0; x < w; x++) {
      const xs = Math.min(s, width - x * s);
      let r = 0;
      let g = 0;
      let b = 0;
      for (let dy = 0; dy < ys; dy++) {
        let i = ((y * s + dy) * width + x * s) * 4;
        for (let dx = 0; dx < xs; dx++, i += 4) {
          r += rgba[i];
          g += rgba[i + 1];
          b += rgba[i + 2];
        }
      }
      const n = xs * ys;
      const o = (y * w + x) * 4;
      out[o] = Math.floor((r + n / 2) / n);
      out[o + 1] = Math.floor((g + n / 2) / n);
      out[o + 2] = Math.floor((b + n / 2) / n);
      out[o + 3] = 255;
    }
  }
  return { rgba: out, width: w, height: h };
}

// catdog.preprocess: image_to_uint8 (shorter side to resize_size, centre square) then normalize's centre
// crop of image_size and (x - mean) / std in float32, as the model's NCHW input.
function preprocess(rgba, width, height) {
  const pre = config.preprocess;
  const side = pre.resize_size;
  const size = pre.image_size;
  const filter = FILTERS[pre.interpolation] || FILTERS.bicubic;
  let newW;
  let newH;
  if (width <= height) {
    newW = side;
    newH = Math.max(side, Math.trunc((side * height) / width));
  } else {
    newW = Math.max(side, Math.trunc((side * width) / height));
    newH = side;
  }
  const left = roundHalfEven((newW - side) / 2);
  const top = roundHalfEven((newH - side) / 2);
  const inner = roundHalfEven((side - size) / 2);
  let pixels;
  if (Math.max(newW, newH) > 4 * side) {
    // A long strip: resize only the region the crop keeps (preprocess.MAX_ASPECT).
    const sx = width / newW;
    const sy = height / newH;
    const box = [left * sx, top * sy, (left + side) * sx, (top + side) * sy];
    pixels = resizeWindow(rgba, width, height, box, side, side, inner, inner, size, size, filter);
  } else {
    const box = [0, 0, width, height];
    pixels = resizeWindow(rgba, width, height, box, newW, newH, left + inner, top + inner, size, size, filter);
  }
  const plane = size * size;
  const data = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(Math.fround(pre.mean[c]) * 255);
    const std = Math.fround(Math.fround(pre.std[c]) * 255);
    for (let p = 0; p < plane; p++) data[c * plane + p] = Math.fround(pixels[p * 3 + c] - mean) / std;
  }
  return data;
}

// -- decoding ---------------------------------------------------------------------------------------------

let canvas = null;
let context = null;

function pixelsOf(bitmap) {
  const { width, height } = bitmap;
  if (!canvas || canvas.width !== width || canvas.height !== height) {
    canvas = new OffscreenCanvas(width, height);
    context = canvas.getContext("2d", { willReadFrequently: true, alpha: false });
  }
  context.fillStyle = "#fff"; // transparency on white, as catdog.images does
  context.fillRect(0, 0, width, height);
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, width, height).data;
}

// -- which format a file is -------------------------------------------------------------------------------

// One answer, from the file's first bytes, for the header reader (headerSize), the sentence for a file that
// cannot be used (whyUnreadable) and the JPEG draft mode's stand-in (decodePhoto): each once looked on its own,
// and a file could be sized as one format and then called another.
const HEAD_BYTES = 64; // a signature, or an ftyp box with its brands
const ascii = (bytes, from, to) => String.fromCharCode(...bytes.slice(from, to));
const READABLE = ["JPEG", "PNG", "WebP", "GIF", "BMP", "AVIF"]; // what the app reads (HEIF is not)
// ISO base media files (HEIF and its AVIF) name their kind by brands in their first box, ftyp: a major brand,
// then compatible ones. An AVIF may have the generic HEIF brand first (mif1) and avif after; a phone's HEIC
// (which browsers do not read) has heic, heix, ... or mif1 alone.
const AVIF_BRANDS = ["avif", "avis"];
const HEIF_BRANDS = ["heic", "heix", "heim", "heis", "hevc", "hevx", "mif1", "msf1"];

// "JPEG", "PNG", "GIF", "WebP", "BMP", "TIFF", "PSD", "ICO", "AVIF", "HEIF", "ZIP", "GZIP", "PDF", "HTML", "SVG",
// "XML", "TEXT", or null: what the first HEAD_BYTES bytes say.
function formatOf(head) {
  const text = ascii(head, 0, head.length);
  if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return "JPEG";
  if (text.startsWith("\x89PNG")) return "PNG";
  if (text.startsWith("GIF8")) return "GIF";
  if (text.startsWith("RIFF") && text.slice(8, 12) === "WEBP") return "WebP";
  if (text.startsWith("BM")) return "BMP";
  // Formats the app does not read are named too, as catdog.images.sniff_format names them (PSD and ICO below).
  if (text.startsWith("II*\x00") || text.startsWith("MM\x00*")) return "TIFF";
  if (text.slice(4, 8) === "ftyp") {
    // The box's size (its first 4 bytes) ends the brands; a size too small to hold one leaves the major brand.
    const size = new DataView(head.buffer, head.byteOffset, 4).getUint32(0);
    const brands = [text.slice(8, 12)];
    for (let at = 16; at + 4 <= Math.min(size, head.length); at += 4) brands.push(text.slice(at, at + 4));
    if (brands.some((brand) => AVIF_BRANDS.includes(brand))) return "AVIF";
    if (brands.some((brand) => HEIF_BRANDS.includes(brand))) return "HEIF";
  }
  // An archive or a document chosen as a photo: catdog.images says "its content is PDF" of them, as of text.
  if (text.startsWith("PK\x03\x04") || text.startsWith("PK\x05\x06")) return "ZIP";
  if (head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08) return "GZIP";
  if (text.startsWith("%PDF")) return "PDF";
  // After ftyp, in sniff_format's order: a HEIC or an AVIF whose ftyp box is 256 bytes starts as an ICO does.
  if (text.startsWith("8BPS")) return "PSD";
  if (text.startsWith("\x00\x00\x01\x00")) return "ICO";
  // Text chosen as a photo (a .txt, a saved web page): catdog.images.sniff_format's test, so that the app says
  // what the server's page says of it ("its content is text"), not a list of the formats it reads.
  if (/^\s*<(!doctype html|html|head|body)/i.test(text)) return "HTML";
  // An SVG drawing (offered by accept="image/*") or XML is no "text" to catdog.images either.
  if (/^\s*<(\?xml|svg)/i.test(text)) return /<svg/i.test(text) ? "SVG" : "XML";
  if (head.length && isText(head)) return "TEXT";
  return null;
}

// UTF-8 with no control character but tab, line feed, form feed and carriage return. Streamed: the head may end
// inside a character, as 64 bytes of Japanese or emoji do.
function isText(bytes) {
  try {
    new TextDecoder("utf-8", { fatal: true }).decode(bytes, { stream: true });
  } catch {
    return false;
  }
  return bytes.every((b) => b >= 32 || [9, 10, 12, 13].includes(b));
}

const formatOfBlob = async (blob) => formatOf(new Uint8Array(await blob.slice(0, HEAD_BYTES).arrayBuffer()));

// The sentence catdog.images gives for the same file, as far as its format tells.
function whyUnreadable(name, blob, format) {
  if (blob.size === 0) return `'${name}' is empty (0 bytes).`;
  if (READABLE.includes(format)) {
    const article = format === "AVIF" ? "an" : "a";
    return `'${name}' is truncated or corrupt (${article} ${format} file this browser cannot decode).`;
  }
  if (["TEXT", "HTML", "XML", "ZIP", "GZIP", "PDF"].includes(format)) {
    return `'${name}' is not an image: its content is ${format === "TEXT" ? "text" : format}.`;
  }
  return unsupported(name, format) ||
    `'${name}' is not an image the app can read (it reads JPEG, PNG, WebP, GIF, BMP and AVIF).`;
}

const READ_LIST = `${READABLE.slice(0, -1).join(", ")} or ${READABLE.at(-1)}`; // "JPEG, PNG, ... or AVIF"

// A format the app knows but does not read, named as catdog.images names it ("'x' is a PSD file, an unsupported
// format; use ..."): a phone's HEIC or a TIFF, which catdog predict and the server's page do read, says so. Not
// "this browser cannot read": Safari reads a TIFF, which the app never decodes (it cannot size one).
function unsupported(name, format) {
  const known = { PSD: "PSD", ICO: "ICO", SVG: "SVG", TIFF: "TIFF", HEIF: "HEIC" }[format];
  if (!known) return null;
  const article = "AEIOS".includes(known[0]) ? "an" : "a"; // an ICO, an SVG, a PSD, as catdog.images says
  if (known === "TIFF" || known === "HEIC") {
    return `'${name}' is ${article} ${known} file, which this app cannot read; use ${READ_LIST}, or the ` +
      "server's page (catdog serve), which reads it.";
  }
  return `'${name}' is ${article} ${known} file, an unsupported format; use ${READ_LIST}.`;
}

// A photo's width and height from its header, before it is decoded: a 200-MP photo decodes to 800 MB, which a
// phone's tab may not have, so one over the limit is refused from these bytes. Every format the app reads says
// its size in its first bytes (a JPEG after its APP segments of EXIF and thumbnails, tens of kB in). null when
// the header gives none: not one of those formats, or a damaged one; such a file is not decoded.
const WINDOW = 1 << 20; // bytes read at once

async function headerSize(blob, format) {
  let start = 0;
  let view = new DataView(new ArrayBuffer(0));
  // n bytes at pos as a DataView (null past the end), from a window of the file that moves forward as needed.
  const bytes = async (pos, n) => {
    if (pos < start || pos + n > start + view.byteLength) {
      start = pos;
      view = new DataView(await blob.slice(pos, pos + WINDOW).arrayBuffer());
    }
    return pos + n <= start + view.byteLength ? new DataView(view.buffer, pos - start, n) : null;
  };
  // A HEIC is sized too: one over the limit is told so, as catdog predict tells it (the app reads none).
  const readers = { JPEG: jpegSize, PNG: pngSize, GIF: gifSize, WebP: webpSize, BMP: bmpSize };
  const reader = format === "AVIF" || format === "HEIF" ? heifSize : readers[format];
  return reader ? reader(bytes, blob.size) : null;
}

async function pngSize(bytes) {
  const ihdr = await bytes(12, 12); // the first chunk, after the signature and its length
  return ihdr && ihdr.getUint32(0) === 0x49484452 ? { width: ihdr.getUint32(4), height: ihdr.getUint32(8) } : null;
}

async function jpegSize(bytes) {
  for (let pos = 2; ; ) {
    const segment = await bytes(pos, 9); // FF, marker, length (2 bytes), and a frame header's first 5
    if (!segment) return null;
    const marker = segment.getUint8(1);
    if (segment.getUint8(0) !== 0xff) {
      // Stray bytes before a marker: skipped up to the next FF, as libjpeg (the browser's decoder) and Pillow
      // skip them, so that a photo both read is not refused for them. 4 kB at a time: a file may hold little else.
      const run = (await bytes(pos, 4096)) ?? segment;
      let skip = 1;
      while (skip < run.byteLength && run.getUint8(skip) !== 0xff) skip += 1;
      pos += skip;
    } else if (marker === 0xff || marker === 0x00) {
      pos += 1; // a fill byte, or FF 00 (not a marker: the 00 is then a stray byte)
    } else if ((marker >= 0xd0 && marker <= 0xd8) || marker === 0x01) {
      pos += 2; // a marker without a length (RSTn, SOI, TEM)
    } else if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      return { width: segment.getUint16(7), height: segment.getUint16(5) }; // SOFn: precision, height, width
    } else if (marker === 0xda || marker === 0xd9) {
      return null; // a scan, or the end, before any frame header
    } else {
      pos += 2 + segment.getUint16(2);
    }
  }
}

// The logical screen, grown to the first frame's extent (Chromium draws a GIF whose first frame reaches past
// its screen that much larger): the screen's size, its colour table, then extension blocks up to that frame.
async function gifSize(bytes) {
  const screen = await bytes(6, 5);
  if (!screen) return null;
  const flags = screen.getUint8(4);
  let pos = 13 + (flags & 0x80 ? 3 << ((flags & 7) + 1) : 0);
  for (;;) {
    const block = await bytes(pos, 9);
    if (!block) return null;
    if (block.getUint8(0) === 0x2c) {
      const [left, top, width, height] = [1, 3, 5, 7].map((at) => block.getUint16(at, true));
      return {
        width: Math.max(screen.getUint16(0, true), left + width),
        height: Math.max(screen.getUint16(2, true), top + height),
      };
    }
    if (block.getUint8(0) !== 0x21) return null; // neither a frame nor an extension
    pos += 2; // the extension's introducer and label, then its sub-blocks, each its length and bytes, up to a 0
    for (let length = block.getUint8(2); length; length = (await bytes(pos, 1))?.getUint8(0)) pos += 1 + length;
    pos += 1;
  }
}

// A WebP's first chunk: VP8 (lossy: its key frame's 14-bit sizes), VP8L (lossless: 14 bits each, less one) or
// VP8X (extended, the canvas of every frame: 24 bits each, less one).
async function webpSize(bytes) {
  const chunk = await bytes(12, 18);
  if (!chunk) return null;
  const kind = ascii(new Uint8Array(chunk.buffer, chunk.byteOffset, 4), 0, 4);
  if (kind === "VP8 " && (chunk.getUint32(10) & 0xffffff) === 0x9d012a) { // after the frame tag, a start code
    return { width: chunk.getUint16(14, true) & 0x3fff, height: chunk.getUint16(16, true) & 0x3fff };
  }
  if (kind === "VP8L" && chunk.getUint8(8) === 0x2f) {
    const bits = chunk.getUint32(9, true);
    return { width: (bits & 0x3fff) + 1, height: ((bits >> 14) & 0x3fff) + 1 };
  }
  if (kind === "VP8X") {
    const width = chunk.getUint16(12, true) + (chunk.getUint8(14) << 16) + 1;
    return { width, height: chunk.getUint16(15, true) + (chunk.getUint8(17) << 16) + 1 };
  }
  return null;
}

async function bmpSize(bytes) {
  const info = await bytes(14, 12); // the DIB header: its size, then the width and height
  if (!info) return null;
  if (info.getUint32(0, true) === 12) return { width: info.getUint16(4, true), height: info.getUint16(6, true) };
  return { width: Math.abs(info.getInt32(4, true)), height: Math.abs(info.getInt32(8, true)) }; // < 0: top-down
}

// AVIF (ISO base media boxes: a 32-bit size, or 1 and a 64-bit one after the type, or 0 to the end): each image
// of the file (the photo, its alpha plane, a grid's tiles, a thumbnail) has its size in an ispe box, in
// meta > iprp > ipco. The largest is the photo's.
async function heifSize(bytes, fileSize) {
  async function* boxes(from, to, type) {
    for (let pos = from; pos + 8 <= to; ) {
      const box = await bytes(pos, 8);
      const large = box?.getUint32(0) === 1 ? await bytes(pos + 8, 8) : null;
      if (!box) return;
      const size = large ? Number(large.getBigUint64(0)) : box.getUint32(0) || to - pos;
      const body = pos + (large ? 16 : 8);
      if (size < body - pos) return;
      if (box.getUint32(4) === type) yield { start: body, end: Math.min(pos + size, to) };
      pos += size;
    }
  }
  const fourcc = (text) => [...text].reduce((n, c) => n * 256 + c.charCodeAt(0), 0);
  let largest = null;
  for await (const meta of boxes(0, fileSize, fourcc("meta"))) {
    for await (const iprp of boxes(meta.start + 4, meta.end, fourcc("iprp"))) {
      for await (const ipco of boxes(iprp.start, iprp.end, fourcc("ipco"))) {
        for await (const ispe of boxes(ipco.start, ipco.end, fourcc("ispe"))) {
          const size = await bytes(ispe.start + 4, 8); // after the box's version and flags
          const [width, height] = size ? [size.getUint32(0), size.getUint32(4)] : [0, 0];
          if (!largest || width * height > largest.width * largest.height) largest = { width, height };
        }
      }
    }
  }
  return largest;
}

const overLimit = (name, width, height) =>
  new Error(
    // Rounded up: 40,000,001 pixels are "40.1 megapixels", not "40.0 megapixels, over the 40 megapixel limit".
    `'${name}' has ${(Math.ceil((width * height) / 1e5) / 10).toFixed(1)} megapixels, over the ` +
      `${config.max_pixels / 1e6} megapixel limit.`,
  );

async function decodePhoto(name, blob) {
  const format = await formatOfBlob(blob);
  const declared = await headerSize(blob, format);
  if (!declared) throw new Error(whyUnreadable(name, blob, format));
  if (declared.width * declared.height > config.max_pixels) throw overLimit(name, declared.width, declared.height);
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      imageOrientation: "from-image",
      premultiplyAlpha: "none",
      colorSpaceConversion: "none",
    });
  } catch {
    throw new Error(whyUnreadable(name, blob, format));
  }
  const { width, height } = bitmap;
  if (width * height > config.max_pixels) {
    bitmap.close(); // a header that lied
    throw overLimit(name, width, height);
  }
  let rgba = pixelsOf(bitmap);
  bitmap.close();
  let size = { width, height };
  const side = config.preprocess.resize_size;
  const scale = Math.min(Math.floor(width / side), Math.floor(height / side));
  const s = [8, 4, 2].find((f) => scale >= f);
  if (format === "JPEG" && s) {
    const reduced = reduce(rgba, width, height, s);
    rgba = reduced.rgba;
    size = reduced;
  }
  return preprocess(rgba, size.width, size.height);
}

// -- the model and the Prediction ---------------------------------------------------------------------------

// backend "webgpu": ONNX Runtime's WebGPU execution provider (the page has found an adapter; a failure here,
// session or first run, makes the page fall back to "wasm" workers). "wasm": its WebAssembly runtime.
async function load(message) {
  config = message.config;
  const backend = message.backend === "webgpu" ? "webgpu" : "wasm";
  const started = performance.now();
  ort = await import(RUNTIMES[backend]);
  ort.env.wasm.wasmPaths = new URL("vendor/", self.location.href).href;
  const cores = navigator.hardwareConcurrency || 1;
  // On the GPU the few operators left to the CPU are small: one thread.
  const threads = backend === "webgpu" ? 1 : Math.min(message.threads || cores, 4);
  ort.env.wasm.numThreads = self.crossOriginIsolated ? threads : 1;
  if (backend === "webgpu" && !(await navigator.gpu?.requestAdapter())) {
    throw new Error("no WebGPU adapter in the worker");
  }
  session = await ort.InferenceSession.create(new Uint8Array(message.model), {
    executionProviders: [backend],
    graphOptimizationLevel: "all",
    executionMode: "sequential",
  });
  outputNames = ["logits", "pet_score", "looks_like", "looks_like_score"].filter((name) =>
    session.outputNames.includes(name),
  );
  if (!outputNames.includes("logits")) outputNames = [session.outputNames[0]];
  const size = config.preprocess.image_size;
  const warm = await run(new Float32Array(3 * size * size)); // the first run pays for lazy initialisation
  if (!warm.logits.every(Number.isFinite)) throw new Error(`the ${backend} backend answers NaN`);
  return {
    threads: ort.env.wasm.numThreads,
    isolated: self.crossOriginIsolated,
    backend,
    ms: performance.now() - started,
  };
}

async function run(data) {
  const size = config.preprocess.image_size;
  const input = new ort.Tensor("float32", data, [1, 3, size, size]);
  const out = await session.run({ [session.inputNames[0]]: input }, outputNames);
  const value = (name) => (out[name] ? out[name].data : null);
  const logits = value(outputNames[0]);
  const pet = value("pet_score");
  const looks = value("looks_like");
  const looksScore = value("looks_like_score");
  return {
    logits: Array.from(logits),
    pet: pet ? pet[0] : null,
    looks: looks ? Number(looks[0]) : null,
    looksScore: looksScore ? looksScore[0] : null,
  };
}

// The model alone, `runs` times on one frame of noise: ms per run (benchmarks/bench_app.py).
async function bench({ runs }) {
  const size = config.preprocess.image_size;
  const data = Float32Array.from({ length: 3 * size * size }, () => Math.random() * 2 - 1);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await run(data);
    times.push(performance.now() - started);
  }
  return { times };
}

// Predictor.to_predictions for one photo.
function toPrediction({ logits, pet, looks, looksScore }) {
  const classes = config.classes;
  const scaled = logits.map((v) => v / config.temperature);
  const top = Math.max(...scaled);
  const exp = scaled.map((v) => Math.exp(v - top));
  const sum = exp.reduce((a, b) => a + b, 0);
  let probabilities = Object.fromEntries(classes.map((c, i) => [c, exp[i] / sum]));
  const gated = config.gated && pet !== null;
  let looksLike = null;
  let means = null;
  if (gated) {
    const p = Math.min(1, Math.max(0, pet));
    probabilities = Object.fromEntries(Object.entries(probabilities).map(([c, v]) => [c, v * p]));
    probabilities.neither = 1 - p;
  }
  let label = classes.reduce((best, c) => (probabilities[c] > probabilities[best] ? c : best), classes[0]);
  if (gated && (pet < config.neither_threshold || config.neither_threshold >= 1)) {
    label = "neither";
    // Only a class the backbone sees clearly is named (a file without looks_like_score names it, as before).
    const worthNaming = looksScore === null || looksScore >= config.looks_like_floor;
    if (looks !== null && worthNaming && config.imagenet.length) [looksLike, means] = config.imagenet[looks];
  }
  const confidence = probabilities[label];
  if (label !== "neither" && config.threshold !== null && confidence < config.threshold) label = "unsure";
  const round = (v) => Math.round(v * 1e6) / 1e6;
  const prediction = {
    label,
    confidence: round(confidence),
    probabilities: Object.fromEntries(Object.entries(probabilities).map(([c, v]) => [c, round(v)])),
  };
  if (looksLike !== null) Object.assign(prediction, { looks_like: looksLike, looks_like_means: means });
  return prediction;
}

// What a thrown value says: ONNX Runtime Web throws strings as well as Errors.
const messageOf = (err) => String(err && err.message ? err.message : err);

async function classify(message) {
  const started = performance.now();
  let data;
  if (message.type === "photo") {
    data = await decodePhoto(message.name, message.blob);
  } else {
    const bitmap = message.frame;
    const rgba = pixelsOf(bitmap);
    data = preprocess(rgba, bitmap.width, bitmap.height);
    bitmap.close();
  }
  const prepared = performance.now();
  let outputs;
  try {
    outputs = await run(data);
  } catch (err) {
    // The model failed, not the photo: on WebGPU the page moves to WebAssembly (a lost device, a driver reset).
    throw Object.assign(new Error(messageOf(err)), { modelFailed: true });
  }
  const done = performance.now();
  return { prediction: toPrediction(outputs), prepMs: prepared - started, inferMs: done - prepared };
}

// Photos asked for before "Clear results" are not computed: their cards are gone. Frames are the camera's own.
let droppedBefore = 0;

self.onmessage = (event) => {
  const message = event.data;
  if (message.type === "drop") { // at once, not queued behind the jobs it drops
    droppedBefore = message.before;
    return;
  }
  // One job at a time: the model's threads are the device's cores.
  busy = busy.then(async () => {
    if (message.type === "photo" && message.id < droppedBefore) {
      self.postMessage({ id: message.id, ok: false, error: "cleared before it was computed" });
      return;
    }
    try {
      const jobs = { load, bench, photo: classify, frame: classify };
      const result = await jobs[message.type](message);
      self.postMessage({ id: message.id, ok: true, ...result });
    } catch (err) {
      if (message.frame) message.frame.close();
      self.postMessage({ id: message.id, ok: false, error: messageOf(err), modelFailed: Boolean(err?.modelFailed) });
    }
  });
};
