// catdog: how a prediction's probabilities are shown, the same on the server's page and in the phone app.
// A classic script (the page loads it with <script src>, the app imports it) that defines catdogShares.
"use strict";
globalThis.catdogShares = {
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
};
