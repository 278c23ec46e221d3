// Small helpers of the benchmarks: command line, seeded randomness, statistics, formatting.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** A script's usage text: its header comment (lines `from` to `to` of the file), without `//`. */
export function headerUsage(moduleUrl, from, to) {
  return readFileSync(fileURLToPath(moduleUrl), "utf8")
    .split("\n")
    .slice(from, to)
    .map((l) => l.replace(/^\/\/ ?/, ""))
    .join("\n");
}

/**
 * parseArgs with `--help` (prints `usage`, exits 0) and a usage error instead of a stack trace for
 * an unknown or malformed option (exits 2).
 */
export function parseCli(options, usage) {
  let values;
  try {
    ({ values } = parseArgs({ options: { ...options, help: { type: "boolean", default: false } } }));
  } catch (e) {
    console.error(`${e.message}\n\n${usage}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(usage);
    process.exit(0);
  }
  return values;
}

/** mulberry32: a small seeded PRNG, so every run draws the same requests. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function quantile(xs, q) {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export const median = (xs) => quantile(xs, 0.5);
export const p90 = (xs) => quantile(xs, 0.9);

/** Kendall's tau-b of two score vectors (ties counted as in tau-b). */
export function kendallTau(a, b) {
  let concordant = 0;
  let discordant = 0;
  let tiesA = 0;
  let tiesB = 0;
  for (let i = 0; i < a.length; i++) {
    for (let j = i + 1; j < a.length; j++) {
      const da = Math.sign(a[i] - a[j]);
      const db = Math.sign(b[i] - b[j]);
      if (da === 0 && db === 0) continue;
      if (da === 0) tiesA++;
      else if (db === 0) tiesB++;
      else if (da === db) concordant++;
      else discordant++;
    }
  }
  const n0 = concordant + discordant;
  const denom = Math.sqrt((n0 + tiesA) * (n0 + tiesB));
  return denom === 0 ? 1 : (concordant - discordant) / denom;
}

export const argmax = (xs) => xs.reduce((best, x, i) => (x > xs[best] ? i : best), 0);

export function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function fmtMs(ms) {
  if (!Number.isFinite(ms)) return "—";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return ms.toFixed(0);
  if (ms >= 10) return ms.toFixed(1);
  if (ms >= 1) return ms.toFixed(2);
  return ms.toFixed(3);
}

export function fmtRatio(x) {
  if (!Number.isFinite(x)) return "—";
  return x >= 100 ? `${x.toFixed(0)}×` : x >= 10 ? `${x.toFixed(1)}×` : `${x.toFixed(2)}×`;
}

/** Renders rows (arrays of strings) as a Markdown table with aligned columns. */
export function markdownTable(header, rows) {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => String(r[c] ?? "").length)));
  const line = (r) => `| ${r.map((cell, c) => String(cell ?? "").padEnd(widths[c])).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n");
}

/** Writes a report file (`--md`, `--json`), creating its folder; returns the absolute path. */
export function writeReport(path, text) {
  const file = resolve(path);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text.endsWith("\n") ? text : `${text}\n`);
  return file;
}
