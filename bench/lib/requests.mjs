// The benchmark's requests: a history of titles and N candidates, from the pack's domain data
// when the shared data has it, else synthetic titles in the fixture's style.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { rng } from "./util.mjs";

const ADJ = "Silent Golden Broken Hidden Electric Midnight Crimson Lonely Wild Frozen Distant Secret Little Last Brave".split(" ");
const NOUN = "River Garden Empire Signal Harbor Kingdom Mirror Machine Forest Letter Orchestra Island Planet Circus Shadow".split(" ");

function syntheticTitles(n, seed) {
  const r = rng(seed);
  const pick = (xs) => xs[Math.floor(r() * xs.length)];
  const out = new Set();
  while (out.size < n) out.add(`${r() < 0.5 ? "" : "The "}${pick(ADJ)} ${pick(NOUN)} (${1950 + Math.floor(r() * 74)})`);
  return [...out];
}

/** Titles of the pack's default domain from `dataDir/<domain>/items.tsv`, or null. */
export function domainTitles(dataDir, domain) {
  if (!dataDir || !domain) return null;
  const file = join(dataDir, domain, "items.tsv");
  if (!existsSync(file)) return null;
  const titles = readFileSync(file, "utf8")
    .split("\n")
    .slice(1)
    .map((l) => l.split("\t")[1]?.trim())
    .filter(Boolean);
  return titles.length >= 200 ? [...new Set(titles)] : null;
}

/**
 * `perSize` requests for each candidate count: `history` titles and `n` distinct candidates,
 * drawn with a fixed seed. Returns { source, requests: { [n]: [{history, candidates}] } }.
 */
export function makeRequests({ dataDir, domain, sizes, perSize, history, seed = 0 }) {
  const real = domainTitles(dataDir, domain);
  const pool = real ?? syntheticTitles(Math.max(...sizes) + history + 400, seed + 1);
  const r = rng(seed);
  const requests = {};
  for (const n of sizes) {
    requests[n] = [];
    for (let i = 0; i < perSize; i++) {
      const idx = new Set();
      while (idx.size < n + history) idx.add(Math.floor(r() * pool.length));
      const titles = [...idx].map((k) => pool[k]);
      requests[n].push({ history: titles.slice(0, history), candidates: titles.slice(history) });
    }
  }
  return { source: real ? `${domain} titles (${join(dataDir, domain, "items.tsv")})` : "synthetic titles (fixture style)", requests };
}
