// catdog: what the server's page and the phone app do alike: show a prediction's probabilities, announce a batch
// of photos to screen readers, wait as a 503 asks, let the camera go in the background, pause it while the system
// interrupts it, and say why it did not start. A classic script (the page loads it with <script src>, the app
// imports it) that defines catdogShares.
"use strict";
globalThis.catdogShares = {
  // Opened at an address with a user name or password in it (http://user:pw@host/), the document keeps them
  // (document.URL) and fetch refuses every relative address resolved against it ("Request cannot be constructed
  // from a URL that includes credentials"): the page and the app said they could not reach the server, for ever
  // or for a minute. The page is opened again at the same address without them, once. Says whether it is.
  reopenWithoutCredentials() {
    const address = new URL(document.URL);
    if (!address.username && !address.password) return false;
    // Taken out here, not left to location.href: Chromium's has no credentials, but the URL standard's (other
    // browsers') has them, and opening it again would reload the page for ever.
    address.username = address.password = "";
    location.replace(address.href);
    return true;
  },

  // Percentages with one decimal that add up to exactly 100 (largest remainder), for any class names.
  percents(probabilities) {
    const entries = Object.entries(probabilities || {}).filter(([, v]) => Number.isFinite(v) && v >= 0);
    const total = entries.reduce((sum, [, v]) => sum + v, 0);
    if (!total) return [];
    const parts = entries.map(([name, v]) => {
      const tenths = (v / total) * 1000;
      return { name, n: Math.floor(tenths), rest: tenths - Math.floor(tenths) };
    });
    let left = 1000 - parts.reduce((sum, part) => sum + part.n, 0);
    [...parts].sort((a, b) => b.rest - a.rest).forEach((part) => { if (left-- > 0) part.n += 1; });
    return parts.map(({ name, n }) => `${name} ${(n / 10).toFixed(1)}%`);
  },

  // The shares under an answer, "cat 0.1% · dog 0.2% · neither 99.7%": each kept whole on one line (on a phone the
  // app's card broke "neither" from its "99.7%"), a line breaking only between two, the "·" at the line's end. An
  // inline block, not nowrap: a share longer than the line (a trained model's class) wraps within itself rather
  // than run out of the card.
  showPercents(element, probabilities) {
    const shares = globalThis.catdogShares.percents(probabilities); // not `this`: it is called destructured
    const wholes = shares.map((share, i) => {
      const whole = document.createElement("span");
      Object.assign(whole.style, { display: "inline-block", maxWidth: "100%", overflowWrap: "anywhere" });
      whole.textContent = i < shares.length - 1 ? `${share} ·` : share;
      return whole;
    });
    element.replaceChildren(...wholes.flatMap((whole, i) => (i ? [" ", whole] : [whole])));
  },

  // A screen reader hears a batch of photos once, from one live region: "Classifying 3 photos…" when they are
  // chosen, then each photo's name and answer (or why it has none) once all are in. The cards are not live
  // regions: each answer would be said twice, and each card's "Classifying…" too.
  announce(region, text) {
    region.textContent = ""; // emptied first: the same words as the last batch's are said again
    // Put before the sentences added meanwhile (announceToo's elements), not in their place: they were not said yet.
    setTimeout(() => region.replaceChildren(text, ...region.children), 50);
  },
  // One more sentence after what the region says (the page's heat map asked for later, after its batch's
  // summary): added, so that it takes away no answer a screen reader has not read yet; the region is not atomic
  // (aria-atomic="false"), so only it is said.
  announceToo(region, text) {
    region.append(Object.assign(document.createElement("span"), { textContent: ` ${text}` }));
  },
  batchChosen: (count) => `Classifying ${count} photo${count > 1 ? "s" : ""}…`,
  batchAnswered: (said) => said.map((line) => line.replace(/\.+$/, "")).join(". ") + ".",
  // What a `neither` photo looks like: the ImageNet class the backbone sees, its first name only ("sorrel"; a
  // model's own list may name a class "tabby, tabby cat"), or "" when it names none.
  looksLike: (p) => (p.looks_like ? String(p.looks_like).split(",")[0].trim() : ""),
  // Its line on a card or under the live answer: "Looks like: sorrel — a horse of a brownish ...", or "".
  looksLine(p) {
    const looks = globalThis.catdogShares.looksLike(p);
    return looks ? `Looks like: ${looks}${p.looks_like_means ? ` — ${p.looks_like_means}` : ""}` : "";
  },
  // One photo's answer in words: "cat, 97 percent", "no cat or dog, looks like sorrel".
  spoken(p) {
    if (p.label !== "neither") return `${p.label}, ${Math.round(p.confidence * 100)} percent`;
    const looks = globalThis.catdogShares.looksLike(p);
    return `no cat or dog${looks ? `, looks like ${looks}` : ""}`;
  },

  // What is said of a photo with no answer: the sentence names it already ("'notes.txt' is not an image…"), and
  // "notes.txt: 'notes.txt' is not…" read its name twice.
  unanswered: (name, message) => (message.startsWith(`'${name}'`) ? message : `${name}: ${message}`),

  // Answers that asking again mends, alike for the page's readiness check and the app's files. A 503 (the model
  // still loading, the server busy) or a rate-limiting proxy's 429 is asked again after retryWait's seconds; a
  // proxy's 502 or 504 (catdog serve not up behind it: restarting, say) every PROXY_RETRY_S, as long as it takes.
  asksToWait: (status) => status === 503 || status === 429,
  proxyCannotReach: (status) => status === 502 || status === 504,
  PROXY_RETRY_S: 1.5,

  // The seconds to wait before asking again after a 503 (the model still loading, the server busy) or a 429: what its
  // Retry-After names, within 1-30 s. A 503 that names none (or a date: a proxy's, say) is asked again after
  // 1, 2, 4, 8, 16 s (each wait as long as all before it, plus one: doubling), then what is left of the minute.
  // 0 when the next wait would take the waits so far (`waited` seconds) past a minute: a server busy that long
  // will not be free soon, and the caller says so rather than wait on (twenty waits of 30 s were ten minutes).
  retryWait(response, waited = 0) {
    const asked = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    if (!Number.isFinite(asked)) return Math.max(Math.min(waited + 1, 30, 60 - waited), 0);
    const seconds = Math.min(Math.max(asked, 1), 30);
    return waited + seconds <= 60 ? seconds : 0;
  },

  // In the background the camera is let go (its light off, no frames classified) and taken again once the page or
  // app is back in front: isOn() says whether it runs, stop() and start() let it go and take it again. Returns the
  // function to call on a camera the browser gave only once hidden (a permission prompt answered late): its caller
  // lets that one go at once, and it is taken again on return too.
  cameraInTheBackground(isOn, stop, start) {
    let resume = false;
    document.addEventListener("visibilitychange", () => {
      if (document.hidden && isOn()) {
        resume = true;
        stop();
      } else if (!document.hidden && resume) {
        resume = false;
        start();
      }
    });
    return () => { resume = true; };
  },

  // A camera the system interrupts without ending it (iOS: a phone call, another app taking the camera) fires
  // `mute`, then `unmute`: its frames meanwhile are black or frozen, not to be classified. While it lasts, `line`
  // says so and paused(true) holds the caller's frames; paused(false) lets them go on.
  cameraInterrupted: "The camera is interrupted (a call, or another app using it): live answers go on when it is back.",
  followInterruptions(track, line, paused) {
    track.addEventListener("mute", () => {
      line.textContent = this.cameraInterrupted;
      paused(true);
    });
    track.addEventListener("unmute", () => {
      this.forgetInterruption(line);
      paused(false);
    });
    // A camera may start interrupted (iOS: a call has it), and no mute event comes: said as a mute is.
    if (track.muted) line.textContent = this.cameraInterrupted;
    paused(track.muted);
  },
  // Under the last live answer, dimmed, while the camera is interrupted.
  livePaused: "Paused: the answer shown is from before the camera was interrupted.",
  // The camera back, or stopped: the interruption's sentence goes (stopping a track fires no event to clear it).
  forgetInterruption(line) {
    if (line.textContent === this.cameraInterrupted) line.textContent = "";
  },
  // A live frame's error (or "" for its answer) in `line`, but not over the interruption's sentence: a frame sent
  // before the camera was interrupted and answered after took it away while the camera was still interrupted.
  showFrameError(line, message) {
    if (line.textContent !== this.cameraInterrupted) line.textContent = message;
  },

  // The camera ended by the system while the page or app was in front: what the two say alike.
  cameraEnded: "The camera stopped (another app may have taken it, or it was unplugged): start it again.",

  // One sentence a person can act on, for getUserMedia's errors.
  cameraProblem(err) {
    switch (err.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "The camera is blocked for this page: allow it in the browser's site settings, then try again.";
      case "NotFoundError":
      case "OverconstrainedError":
        return "This device has no camera that the browser can use: choose photos instead.";
      case "NotReadableError":
      case "AbortError":
        return "The camera is in use by another app: close it, then try again.";
      default:
        return `The camera could not be started: ${err.message || err.name}.`;
    }
  },
};
