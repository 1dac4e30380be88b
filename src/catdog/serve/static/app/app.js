// catdog's phone app: the page. The model runs in worker.js; this file shows its answers.
import "./shares.js";
const $ = (id) => document.getElementById(id);

// The status line, a live region: a screen reader says it again whenever it is replaced, in the same words or not,
// so it is replaced only when it says something new. A command-line option in it is a <code> that does not wrap
// (on a phone "--format" broke after its "--").
function say(sentence) {
  const line = $("status");
  if (line.textContent === sentence) return;
  line.replaceChildren(...sentence.split(/(--[a-z][a-z-]*)/).map((part, i) => {
    if (i % 2 === 0) return part;
    const option = document.createElement("code");
    option.textContent = part;
    return option;
  }));
}
const opened = performance.now();

// Test and benchmark hooks (read only by tests/test_app.py and benchmarks/bench_app.py).
const app = (window.catdogApp = { frames: [], timings: [], firstAnswerMs: null, info: null, gpuFailure: null });

// -- installable and offline: the service worker caches the page, the runtime and the model ---------------
const registered = "serviceWorker" in navigator && self.isSecureContext
  ? navigator.serviceWorker.register("sw.js").catch((err) => {
    console.warn("No offline mode: the service worker could not be registered.", err);
    return null;
  })
  : Promise.resolve(null);

// First visit: until the service worker has cached everything (or failed to, e.g. while the server still
// loads its model) and controls the page, so that the files are downloaded once and read through it.
async function cachedForOffline(timeout) {
  const registration = await registered;
  if (!registration || navigator.serviceWorker.controller) return;
  const worker = registration.installing || registration.waiting || registration.active;
  const claimed = new Promise((resolve) => navigator.serviceWorker.addEventListener("controllerchange", resolve));
  const settled = new Promise((resolve) => {
    if (!worker || worker.state === "activated") resolve();
    worker?.addEventListener("statechange", () => ["activated", "redundant"].includes(worker.state) && resolve());
  });
  await Promise.race([settled, sleep(timeout)]);
  // A slow network: the worker is still downloading the files. Fetching them here too would download the
  // model twice; an install that stalls ends as "redundant" (the browser times its install event out).
  while (worker && worker.state === "installing") {
    say("Still downloading the model for offline use (once; a slow connection)…");
    await Promise.race([settled, sleep(timeout)]);
  }
  if (worker && worker.state === "activated") await Promise.race([claimed, sleep(3000)]);
}

// -- the workers ----------------------------------------------------------------------------------------------
// Where the browser has WebGPU, one lane runs the model on the GPU (ONNX Runtime Web's WebGPU execution
// provider). Otherwise, or where that lane fails to load, each lane is a worker with its own copy of the model
// in WebAssembly; jobs go to the lane with the fewest waiting. Several single-threaded lanes answer more camera
// frames per second than one lane with as many threads: every core runs a whole frame (preprocessing
// included) instead of all cores waiting for each other inside one.
const lanes = [];
const pending = new Map();
let nextId = 1;

function ask(message, transfer = [], lane = null) {
  const id = nextId++;
  const target = lane || lanes.reduce((a, b) => (b.jobs < a.jobs ? b : a));
  target.jobs++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, lane: target });
    target.worker.postMessage({ ...message, id }, transfer);
  });
}

// An error of the model itself on the GPU (device lost, driver reset), not of the photo: WebAssembly takes over.
class GpuLost extends Error {}

function startLane(backend) {
  const lane = { worker: new Worker("worker.js", { type: "module" }), jobs: 0, backend };
  lane.worker.onmessage = (event) => {
    const { id, ok, error, modelFailed, ...result } = event.data;
    const job = pending.get(id);
    pending.delete(id);
    if (!job) return;
    job.lane.jobs--;
    if (ok) job.resolve(result);
    else job.reject(modelFailed && backend === "webgpu" ? new GpuLost(error) : new Error(error));
  };
  lane.worker.onerror = (event) => {
    const reason = event.message || "the worker failed";
    for (const [id, job] of pending) {
      if (job.lane !== lane) continue;
      pending.delete(id);
      job.reject(new Error(reason));
    }
    if (backend === "wasm") say(`The model cannot run in this browser: ${reason}.`);
  };
  return lane; // joins `lanes` (gets jobs) once its model is loaded
}

// WebGPU's adapter, or null where the browser has none (or `?backend=wasm` asks for WebAssembly).
async function gpuAdapter(params) {
  if (params.get("backend") === "wasm" || !navigator.gpu) return null;
  try {
    return await navigator.gpu.requestAdapter();
  } catch {
    return null;
  }
}

// One WebGPU lane; null (and the reason in `app.gpuFailure`) where its session or first run fails, or where
// preparing the model takes longer than `timeoutMs` (a driver that never answers must not leave the page
// waiting forever).
async function loadGpuLane(bytes, timeoutMs) {
  const lane = startLane("webgpu");
  const timer = setTimeout(() => {
    stopLane(lane, new Error(`the GPU took more than ${timeoutMs / 1000} s to prepare the model`));
  }, timeoutMs);
  try {
    const copy = bytes.slice(0);
    const loaded = await ask({ type: "load", config, model: copy, backend: "webgpu" }, [copy], lane);
    lanes.push(lane);
    return loaded;
  } catch (err) {
    stopLane(lane, err);
    app.gpuFailure = err.message;
    console.warn("WebGPU failed; the model runs in WebAssembly instead.", err);
    return null;
  } finally {
    clearTimeout(timer);
  }
}

// Ends a lane's worker; its unanswered jobs fail with `reason`.
function stopLane(lane, reason) {
  lane.worker.terminate();
  const index = lanes.indexOf(lane);
  if (index >= 0) lanes.splice(index, 1);
  for (const [id, job] of pending) {
    if (job.lane !== lane) continue;
    pending.delete(id);
    job.reject(reason);
  }
}

// WebAssembly workers: `?lanes=N&threads=M` (benchmarks), one single-threaded lane per core otherwise. Resolves
// with the first lane's load (it answers at once; the others join as they load) and sets `app.allLanes`.
async function loadWasmLanes(bytes, params) {
  const cores = Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4));
  const count = Number(params.get("lanes")) || cores;
  const threads = Number(params.get("threads")) || 1;
  const loads = [];
  for (let i = 0; i < count; i++) {
    const copy = bytes.slice(0);
    const lane = startLane("wasm");
    loads.push(ask({ type: "load", config, model: copy, threads }, [copy], lane).then((loaded) => {
      lanes.push(lane);
      return loaded;
    }));
  }
  const first = await Promise.any(loads).catch((err) => Promise.reject(err.errors ? err.errors[0] : err));
  app.allLanes = Promise.all(loads);
  return { ...first, lanes: count, gpuFailure: app.gpuFailure || null };
}

// The GPU failed while answering: its lane is stopped once, WebAssembly workers load, and the job is asked
// again of them. Jobs that fail meanwhile wait for the same workers.
let modelBytes = null;
let switchingToWasm = null;
function fallBackToWasm(err) {
  if (!switchingToWasm) {
    app.gpuFailure = err.message;
    console.warn("WebGPU failed while answering; the model runs in WebAssembly from now on.", err);
    for (const lane of lanes.filter((l) => l.backend === "webgpu")) stopLane(lane, err);
    say("The GPU failed: loading the model in WebAssembly…");
    switchingToWasm = loadWasmLanes(modelBytes, new URLSearchParams(location.search)).then(ready);
  }
  return switchingToWasm;
}

// A photo's or a frame's answer. A camera frame the GPU failed on is gone with it (transferred to the worker):
// null, and the next frames go to WebAssembly.
async function askModel(message, transfer = []) {
  if (switchingToWasm) await switchingToWasm;
  try {
    return await ask(message, transfer);
  } catch (err) {
    if (!(err instanceof GpuLost)) throw err;
    await fallBackToWasm(err);
    return transfer.length ? null : ask(message);
  }
}

// The note under the controls: where the model runs, and the switch between WebGPU and WebAssembly.
function showBackend(info, params) {
  const note = $("backend");
  note.dataset.backend = info.backend;
  const name = info.backend === "webgpu" ? "WebGPU" : "WebAssembly";
  note.querySelector(".where").textContent = `on-device · ${name}`;
  const other = note.querySelector("a");
  other.hidden = false;
  if (info.backend === "webgpu") {
    other.textContent = "use WebAssembly";
    other.href = "?backend=wasm";
  } else if (params.get("backend") === "wasm" && navigator.gpu) {
    other.textContent = "use WebGPU if available";
    other.href = "./";
  } else if (app.gpuFailure) {
    // A driver that failed once may work after a reload (a lost device, a GPU busy elsewhere): the page
    // never gives WebGPU up for good, and keeps the other settings of its address.
    const again = new URLSearchParams(params);
    again.delete("backend");
    other.textContent = "try WebGPU again";
    other.href = again.toString() ? `?${again}` : "./";
  } else {
    other.hidden = true;
  }
  note.title = app.gpuFailure ? `WebGPU failed: ${app.gpuFailure}` : info.adapter || "";
  if (app.gpuFailure) note.querySelector(".where").textContent += " (WebGPU failed)";
  note.hidden = false;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A failure whose message is a whole sentence to show as it is: the server's own (a model that failed to load says
// what to do), or the app's when the server asked to wait too long.
class ServerAnswer extends Error {}

// How long the app asks again for a server it cannot reach (catdog serve down, this device offline with nothing
// cached) before it says what to do: the page asks on as long as it takes, but the app cannot load without it.
const UNREACHABLE_FOR_MS = 60_000;

// A file of the app, asked for by the server's page's rules (shares.js). While a just-started catdog serve loads
// its model (503), or a rate-limiting proxy answers 429, asks again after the wait each answer's Retry-After
// names, for up to a minute of waits in all; a proxy's 502 or 504 (catdog serve restarting behind it) every 1.5 s,
// as long as it takes; a server it cannot reach every 1.5 s, for a minute. Any other failure will not change by
// asking again: its sentence is thrown at once.
async function fetchOk(url) {
  const { asksToWait, proxyCannotReach, PROXY_RETRY_S, retryWait } = globalThis.catdogShares;
  // fetch rejects a malformed address (model.json's "model", say) with the TypeError of a network failure: it is
  // told apart here, or it was asked again for a minute and said to be a server out of reach.
  let address;
  try {
    address = new URL(url, location.href);
  } catch {
    // Quoted without its user name and password (http://user:pw@[oops/…): it cannot be parsed to take them out.
    // Spaces before it are skipped by the browser, and so here (" http://user:pw@[oops/…" showed the password).
    const shown = url.replace(/^(\s*(?:[a-z][a-z\d+.-]*:)?)\/\/[^/?#]*@/i, "$1//");
    throw new ServerAnswer(`The model could not be loaded: "${shown}" is no valid address; check model.json.`);
  }
  // fetch refuses an address with a user name or password in it (https://user:pw@host/…) before asking anyone.
  // Not quoted, and before the checks below that quote it (ftp://user:pw@…): its password would be on the screen.
  if (address.username || address.password) {
    throw new ServerAnswer("The model could not be loaded: its address in model.json has a user name or password " +
      "in it, which the app cannot send; name the model without them.");
  }
  // So does an address fetch cannot use (ftp:, file:) or that the app's security policy blocks (connect-src 'self'
  // blob: data:, webapp.APP_HEADERS): known before asking, said at once.
  if (!["http:", "https:", "blob:", "data:"].includes(address.protocol)) {
    throw new ServerAnswer(`The model could not be loaded: "${url}" is no http or https address; check model.json.`);
  }
  if (address.protocol.startsWith("http") && address.origin !== location.origin) {
    throw new ServerAnswer(`The model could not be loaded: "${url}" is on another server, and the app loads its ` +
      "model only from its own (its security policy); put the model beside the app and name it in model.json.");
  }
  let unreachableSince = null;
  for (let waited = 0; ; ) {
    let response;
    try {
      response = await fetch(url);
    } catch (err) {
      // fetch rejects with a TypeError where the network failed; anything else will not mend by asking again
      if (!(err instanceof TypeError)) throw err;
      unreachableSince ??= performance.now();
      if (performance.now() - unreachableSince >= UNREACHABLE_FOR_MS) {
        // The server may be catdog serve or a static host given the export: the sentence holds for both.
        throw new ServerAnswer("The model could not be loaded: the server could not be reached for a minute; " +
          "check that the server is running and this device is online, then reload the page.");
      }
      say("Cannot reach the server; retrying…"); // the page's words
      await sleep(PROXY_RETRY_S * 1000);
      continue;
    }
    unreachableSince = null;
    if (response.ok) return response;
    if (proxyCannotReach(response.status)) {
      say(`The proxy cannot reach the server (HTTP ${response.status}); retrying…`);
      await sleep(PROXY_RETRY_S * 1000); // the line stays: asked every 1.5 s, it would be said twice as often
      continue;
    }
    if (response.status === 404) {
      // A static host given part of an export, or a cache of an older app: the server's own "Nothing is served at
      // /app/model.onnx." said nothing of the app or what to do.
      throw new ServerAnswer(`The model could not be loaded: ${url}, the app's model file, is missing from the ` +
        "server (HTTP 404); copy every file catdog export --format web wrote, or open the app that catdog serve " +
        "serves.");
    }
    const error = await response.json().then((body) => body.error, () => null);
    if (!asksToWait(response.status)) {
      throw error ? new ServerAnswer(error) : new Error(`${url} answered HTTP ${response.status}`);
    }
    const seconds = retryWait(response, waited);
    if (!seconds) {
      throw new ServerAnswer(`The model could not be loaded: the server still asked to wait after ${waited} s; ` +
        "reload the page to try again.");
    }
    const why = response.status === 429
      ? "Too many requests through the proxy" : "The server is still loading the model";
    say(`${why}; trying again in ${seconds} s…`);
    await sleep(seconds * 1000); // the line stays as the page's does: it is still the server that is waited for
    waited += seconds;
  }
}

// The page once the model is loaded: the note of where it runs, the status line, the camera button.
function ready(info) {
  const params = new URLSearchParams(location.search);
  app.info = { ...info, loadedMs: performance.now() - opened, modelBytes: config.model_bytes };
  let work = "WebGPU";
  if (info.backend === "wasm") {
    const lanesOrThreads = info.lanes === 1 ? `${info.threads} thread${info.threads > 1 ? "s" : ""}`
      : `${info.lanes} workers`;
    work = `WebAssembly, ${lanesOrThreads}`;
  }
  say(`Ready: ${config.name} model on this device (${work}).`);
  showBackend(info, params);
  $("camera-start").disabled = !navigator.mediaDevices;
  if (!self.isSecureContext) { // browsers give the camera, service workers and installing to secure pages only
    $("camera-error").textContent = "This page is plain http: the camera, offline use and installing need " +
      "https (or localhost). Photos still work.";
    $("offline-note").textContent = "Offline use needs https.";
  }
  return app.info;
}

let config = null;
app.ready = (async () => {
  if (globalThis.catdogShares.reopenWithoutCredentials()) return null; // the page as the server's does
  try {
    if (self.isSecureContext && !navigator.serviceWorker?.controller) {
      say("Downloading the model for offline use…"); // no service worker over plain http
    }
    await cachedForOffline(60000);
    config = await (await fetchOk("model.json")).json();
    modelBytes = await (await fetchOk(config.model)).arrayBuffer();
    // ?backend=wasm: WebAssembly even where WebGPU is (buggy drivers, comparisons); ?lanes=N&threads=M: how
    // many WebAssembly workers and threads (benchmarks); ?gpu-timeout=S: seconds WebGPU may take to load
    // (a phone's GPU takes a few; Chromium's CPU-emulated SwiftShader about 25 on a 2-core machine).
    const params = new URLSearchParams(location.search);
    const adapter = await gpuAdapter(params);
    let info = null;
    if (adapter) {
      say("Preparing the model for this device's GPU…");
      const gpu = await loadGpuLane(modelBytes, 1000 * (Number(params.get("gpu-timeout")) || 90));
      if (gpu) {
        const { vendor, architecture, description } = adapter.info || {};
        const named = [vendor, architecture, description].filter(Boolean).join(" ");
        info = { ...gpu, lanes: 1, adapter: named, gpuFailure: null };
        app.allLanes = Promise.resolve([gpu]);
      }
    }
    return ready(info || await loadWasmLanes(modelBytes, params));
  } catch (err) {
    const sentence = err instanceof ServerAnswer ? err.message : `The model could not be loaded: ${err.message}.`;
    say(sentence);
    $("offline-note").hidden = true; // nothing works without the model, offline or not
    throw err;
  }
})();

function answered() {
  if (app.firstAnswerMs === null) app.firstAnswerMs = performance.now(); // since the navigation started
}

// -- photos ----------------------------------------------------------------------------------------------------
// A card's headline, "cat · 87%"; the live answer shows the same in two parts, only the answer live (showFrame).
function answerOf(p) {
  return p.label === "neither" ? "No cat or dog" : p.label;
}

function confidenceOf(p) {
  return p.label === "neither" ? "" : ` · ${Math.round(p.confidence * 100)}%`;
}

function headline(p) {
  return answerOf(p) + confidenceOf(p);
}

let cards = 0; // for each card's name's id

function card(file, before) {
  const el = document.createElement("article");
  el.className = "card";
  // Named by its photo, as the page's cards are: a screen reader's list of articles said "article" for each.
  const nameId = `card-${++cards}-name`;
  el.setAttribute("aria-labelledby", nameId);
  el.dataset.state = "pending";
  const img = document.createElement("img");
  img.alt = "";
  img.src = URL.createObjectURL(file);
  // Drawn once loaded: the blob URL goes, or every photo chosen stays in memory as long as the page.
  img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  img.addEventListener("error", () => { // no broken-picture icon
    img.hidden = true;
    URL.revokeObjectURL(img.src);
  }, { once: true });
  const body = document.createElement("div");
  body.className = "body";
  // In the server page's order: the answer, what a `neither` photo looks like, then the shares.
  // "Classifying…", the page's word: a bare "…" said nothing while the model still downloaded.
  body.innerHTML = '<div class="name"></div><div class="answer">Classifying…</div><div class="looks" hidden></div>' +
    '<div class="probs"></div><div class="error" hidden></div>';
  body.querySelector(".name").textContent = file.name;
  body.querySelector(".name").id = nameId;
  el.append(img, body);
  $("results").insertBefore(el, before); // a batch keeps the order chosen, above the batches before it
  return el;
}

async function classifyFile(file) {
  const asked = clearings;
  await app.ready;
  // Chosen while the model loaded, it waited here, not in a lane, and "Clear results" told only the lanes.
  if (clearings !== asked) throw new Error("cleared before it was computed");
  return askModel({ type: "photo", name: file.name, blob: file });
}
app.classify = classifyFile;
app.benchModel = async (runs) => {
  await app.ready;
  return (await ask({ type: "bench", runs }, [], lanes[0])).times;
};

async function showFile(file, before) {
  const el = card(file, before);
  try {
    const { prediction, prepMs, inferMs } = await classifyFile(file);
    answered();
    app.timings.push({ prepMs, inferMs });
    const answer = el.querySelector(".answer");
    answer.textContent = headline(prediction);
    answer.classList.add(prediction.label);
    // They add up to 100.0 %, as on the server's page.
    globalThis.catdogShares.showPercents(el.querySelector(".probs"), prediction.probabilities);
    if (prediction.looks_like) { // as on the server's page (shares.js): the class's first name, the full one on hover
      const looks = el.querySelector(".looks");
      looks.hidden = false;
      looks.textContent = globalThis.catdogShares.looksLine(prediction);
      looks.title = `ImageNet class: ${prediction.looks_like}`;
    }
    el.dataset.label = prediction.label;
    el.dataset.prediction = JSON.stringify(prediction);
    el.dataset.state = "done";
    return `${file.name}: ${globalThis.catdogShares.spoken(prediction)}`;
  } catch (err) {
    // The server's page's card: a headline, then the sentence (it was the headline, in red, in a larger type).
    el.querySelector(".answer").textContent = "Not classified";
    const error = el.querySelector(".error");
    error.hidden = false;
    error.textContent = err.message;
    el.dataset.state = "error";
    return globalThis.catdogShares.unanswered(file.name, err.message);
  }
}

let clearings = 0; // a batch still coming in for cards cleared meanwhile is not announced (the page's rule)

// The batch is said once all its photos are answered, from the one live region of photos (shares.js).
async function showBatch(files) {
  const { announce, batchChosen, batchAnswered } = globalThis.catdogShares;
  announce($("announce"), batchChosen(files.length));
  const cleared = clearings;
  $("clear").hidden = false;
  const before = $("results").firstElementChild;
  const said = await Promise.all(files.map((file) => showFile(file, before))); // the lanes share them out
  if (clearings === cleared) announce($("announce"), batchAnswered(said));
}

// As on the server's page. Shown only with results to clear: a phone's row of buttons is short. Gone, it hands
// the keyboard focus to Choose photos, or the focus fell to the page.
$("clear").addEventListener("click", () => {
  clearings += 1;
  // The photos still queued in the lanes are dropped there, not computed for cards no longer shown.
  for (const lane of lanes) lane.worker.postMessage({ type: "drop", before: nextId });
  $("results").replaceChildren();
  $("clear").hidden = true;
  $("file-input").focus();
  globalThis.catdogShares.announce($("announce"), "Results cleared.");
});

// It looks like a button: Enter opens the chooser too (a file input opens on Space only).
$("file-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    event.target.click();
  }
});

$("file-input").addEventListener("change", (event) => {
  const files = [...event.target.files];
  event.target.value = "";
  if (files.length) showBatch(files);
});

// -- the camera ---------------------------------------------------------------------------------------------
let stream = null;
let interrupted = false; // the camera's track muted by the system: its frames are black or frozen
let inFlight = 0;
let grabbed = 0;
let shown = 0; // the newest frame shown (lanes may answer out of order)
// Each start of the camera is a new session: a frame sent before a Stop, answered after the next Start, is the
// last session's picture and must not be shown as the new one's first answer. So is each interruption (pauseLive):
// a frame taken before a mute and answered after the unmute is no new answer.
let session = 0;

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
}

async function grab() {
  const video = $("video");
  // One frame per lane computing and one more waiting: no lane idles between frames.
  const live = () => stream && stream.getVideoTracks()[0]?.readyState === "live" && !interrupted;
  while (live() && inFlight < lanes.length + 1 && video.readyState >= 2) {
    inFlight++;
    const sent = session; // before the wait: a Stop and Start meanwhile, and this is still the last camera's picture
    let frame;
    try {
      frame = await createImageBitmap(video);
    } catch {
      inFlight--;
      break;
    }
    if (interrupted) { // taken as the system interrupted the camera: black or frozen
      frame.close();
      inFlight--;
      break;
    }
    const grabbedAt = performance.now();
    const seq = ++grabbed;
    const show = (result) => result && showFrame(result, seq, sent, grabbedAt);
    askModel({ type: "frame", frame }, [frame]).then(show, (err) => {
      // Not a stopped session's; not over the sentence of a camera interrupted since (the page's rule, shares.js).
      if (stream && sent === session) globalThis.catdogShares.showFrameError($("camera-error"), err.message);
    }).finally(() => {
      inFlight--;
      grab();
    });
  }
}

// While the camera is interrupted no frame is taken: the last answer stays, dimmed, and the line under it says it
// is from before (it went on showing the last frame's fps as if frames were still classified). Said only when an
// answer is shown (a camera may start muted), and dimmed until a new one comes: at unmute it is still the old one.
function pauseLive(paused) {
  if (paused === interrupted) return; // followInterruptions tells the track's state as the camera starts, too
  interrupted = paused;
  if (paused) {
    session++;
    $("live").classList.add("paused");
    $("live-info").textContent = "label" in $("live-label").dataset ? globalThis.catdogShares.livePaused : "";
    delete $("live-info").dataset.fps;
  } else {
    // The page's line: a dimmed answer over an empty line said nothing of the camera being back. Not after Stop.
    $("live-info").textContent = stream ? "Camera back: classifying…" : "";
    grab();
  }
}

function showFrame({ prediction, prepMs, inferMs }, seq, sent, grabbedAt) {
  if (!stream || sent !== session || interrupted) return; // interrupted: a frame taken before, answered after
  answered();
  const now = performance.now();
  app.frames.push({ t: now, grabbedAt, label: prediction.label, prediction, prepMs, inferMs });
  if (seq < shown) return;
  shown = seq;
  $("live").classList.remove("paused"); // a new answer: the one from before the camera was interrupted is gone
  // A frame's error is over once a newer frame is answered (it stayed until Stop); the page's rule, shares.js.
  globalThis.catdogShares.showFrameError($("camera-error"), "");
  const recent = app.frames.slice(-31);
  const gaps = recent.slice(1).map((f, i) => f.t - recent[i].t);
  const fps = gaps.length ? 1000 / median(gaps) : 0;
  const label = $("live-label");
  // Only the answer is live (a change is announced, not every frame): with its percentage in the live region, a
  // screen reader said again each frame whose percentage moved, "cat 87%", "cat 88%"…; it is shown beside it.
  const answer = answerOf(prediction);
  if (label.textContent !== answer) label.textContent = answer;
  $("live-confidence").textContent = confidenceOf(prediction);
  label.dataset.label = prediction.label;
  // What a `neither` frame looks like has its own line, as on the server's page, not a place in the fps line.
  const looks = $("live-looks");
  looks.textContent = globalThis.catdogShares.looksLine(prediction);
  looks.hidden = !looks.textContent;
  // A rate needs two answers: the first frame's "0.0 fps" read as a camera that does not work.
  const timing = `model ${inferMs.toFixed(0)} ms · preprocessing ${prepMs.toFixed(0)} ms`;
  $("live-info").textContent = gaps.length ? `${fps.toFixed(1)} fps · ${timing}` : timing;
  $("live-info").dataset.fps = fps.toFixed(2);
}

// Hides `from` and shows `to`; the keyboard focus on `from` goes on from `to`, or it fell to the page with the button
// gone. Focus elsewhere stays: the camera let go and taken again as the app is hidden and shown, or ended by the
// system, moved anyone's focus to Stop or Start (a screen reader then read it). The server page's rule.
function handOver(from, to) {
  const focused = document.activeElement === from;
  from.hidden = true;
  to.hidden = false;
  if (focused) to.focus({ preventScroll: true });
}

async function startCamera() {
  $("camera-error").textContent = "";
  let mine;
  try {
    mine = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "environment", width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (err) {
    $("camera-error").textContent = globalThis.catdogShares.cameraProblem(err);
    return;
  }
  if (document.hidden) {
    // The browser answered after the app went to the background (a permission prompt, a slow camera): the
    // visibility rule below had no stream to let go then, so this one is let go now and taken again on return.
    mine.getTracks().forEach((track) => track.stop());
    takeAgainOnReturn();
    return;
  }
  stream = mine;
  session++;
  stream.getVideoTracks()[0]?.addEventListener("ended", () => {
    if (document.hidden) return; // stopped by the page itself when it went to the background
    stopCamera();
    $("camera-error").textContent = globalThis.catdogShares.cameraEnded;
  });
  if (stream.getVideoTracks()[0]) { // the server's page's rule and sentence (shares.js)
    globalThis.catdogShares.followInterruptions(stream.getVideoTracks()[0], $("camera-error"), pauseLive);
  }
  const video = $("video");
  video.srcObject = stream;
  await video.play().catch(() => {}); // interrupted by Stop or by the page going to the background
  if (stream !== mine) return; // stopped meanwhile
  $("live").classList.add("on");
  $("live-label").textContent = "…"; // not the last session's answer while the first frame is read
  delete $("live-label").dataset.label;
  $("live-confidence").textContent = "";
  $("live-looks").hidden = true;
  // The page's line, not "…" alone; none under a camera that starts interrupted, which classifies nothing yet.
  $("live-info").textContent = interrupted ? "" : "Camera on: classifying the first frame…";
  handOver($("camera-start"), $("camera-stop"));
  $("live").scrollIntoView({ block: "nearest" }); // the answer on screen (landscape)
  app.frames = [];
  grab();
}

$("camera-start").addEventListener("click", async () => {
  const start = $("camera-start");
  // A click while the camera starts would ask for a second stream, which replaced the first in `stream`: the
  // first was never stopped, the camera on after Stop. aria-busy, not disabled: the keyboard focus stays on Start.
  if (start.getAttribute("aria-busy") === "true") return;
  start.setAttribute("aria-busy", "true");
  try {
    await startCamera();
  } finally {
    start.removeAttribute("aria-busy");
  }
});
$("video").addEventListener("playing", grab); // once: a listener per start piled up over restarts

function stopCamera() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  pauseLive(false); // after the stream is gone: it grabs no frame of it
  $("video").srcObject = null;
  $("live").classList.remove("on", "paused");
  handOver($("camera-stop"), $("camera-start"));
  globalThis.catdogShares.forgetInterruption($("camera-error")); // its "live answers go on" no longer holds
}

$("camera-stop").addEventListener("click", () => {
  stopCamera();
  $("camera-start").focus();
});

// In the background the camera is released (the model idle too), as on the server's page (shares.js).
const takeAgainOnReturn = globalThis.catdogShares.cameraInTheBackground(
  () => stream !== null, stopCamera, () => $("camera-start").click(),
);
