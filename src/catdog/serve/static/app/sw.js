// catdog's phone app: the service worker. At install it caches the page, the WebAssembly runtime and the
// model; the WebGPU runtime (ON_USE) it caches the first time the app fetches it, so that a browser without
// WebGPU never downloads it. It answers the app's requests from that cache (so the app works offline and sends
// nothing anywhere), adding the cross-origin isolation headers that give WebAssembly its threads on any
// static host. catdog fills in VERSION (a hash of the files and the model), FILES and ON_USE when it serves
// or exports the app.
const VERSION = "__VERSION__";
const FILES = __FILES__;
const ON_USE = __ON_USE__;
const CACHE = `catdog-app-${VERSION}`;
const ISOLATION = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(FILES.map((file) => new Request(file, { cache: "reload" }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("catdog-app-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function isolated(response) {
  if (!response || response.type === "opaque" || response.status === 0) return response;
  const headers = new Headers(response.headers);
  for (const [key, value] of Object.entries(ISOLATION)) headers.set(key, value);
  return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      const hit = await cache.match(event.request, { ignoreSearch: true });
      if (hit) return isolated(hit);
      const response = await fetch(event.request);
      const scope = new URL(self.registration.scope);
      const file = url.pathname.startsWith(scope.pathname) ? url.pathname.slice(scope.pathname.length) : null;
      if (response.ok && ON_USE.includes(file)) event.waitUntil(cache.put(url.pathname, response.clone()));
      return isolated(response);
    })(),
  );
});
