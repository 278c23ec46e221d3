import { createRecommender, isMolorecError, type Recommender, type RecommendResponse } from "@molorec/core";
import {
  clearPackCache,
  describeWebGpuBlockers,
  loadPackFromUrl,
  webBackend,
  webGpuBlockers,
  type WebGpuBlocker,
  type PackLoadStats,
  type PackProgress,
  type WebBackend,
  type WebBackendInfo,
  type WebDevice,
} from "@molorec/runtime-web";
import { addToHistory, pickCandidates, type Catalogue, type CatalogueItem } from "./shelf.js";

/** Written into the page by scripts/build.mjs. */
interface PageConfig {
  packUrl: string;
  wasmPaths: string;
  packName: string;
  /** The domain the page asks for; null for a pack without domains. */
  domain: string | null;
  /** `calibrated` (the pack's LoRA mixture), or `base` for a pack without adapters. */
  mixture: "calibrated" | "base";
  ortVersion: string;
}

/** What the page exposes on `window.molorec` (used by the browser tests and handy in devtools). */
export interface StorefrontHandle {
  ready: Promise<void>;
  recommend(request: unknown): Promise<RecommendResponse>;
  info(): WebBackendInfo | null;
  stats: PackLoadStats | null;
  timings: { packMs: number; sessionMs: number; readyMs: number } | null;
  /** Download progress as the page showed it: events received and the last bytes loaded / total. */
  progress: { events: number; loaded: number; total: number };
  /** The request the shelf sends besides history and candidates: the pack's domain (if any) and mixture. */
  defaults: { domain: string | null; mixture: string };
  /** Nodes of the pack's model that WebGPU cannot run correctly (then `auto` opens it on WASM). */
  webgpuBlockers: WebGpuBlocker[];
}

const SHELF_SIZE = 8;
const MAX_CANDIDATES = 20;

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const config = JSON.parse($("storefront-config").textContent!) as PageConfig;
const catalogue = JSON.parse($("catalogue").textContent!) as Catalogue;
const byId = new Map<string, CatalogueItem>(catalogue.items.map((it) => [it.id, it]));
const requested = new URLSearchParams(location.search).get("device");
const device: WebDevice = requested === "webgpu" || requested === "wasm" ? requested : "auto";
const historyKey = `molorec-storefront:history:${catalogue.domain}`;

let history: string[] = loadHistory();
let rec: Recommender | null = null;
let backend: WebBackend | null = null;
let shelfVersion = 0;

function loadHistory(): string[] {
  try {
    const v = JSON.parse(localStorage.getItem(historyKey) ?? "[]");
    return Array.isArray(v) ? v.filter((id): id is string => typeof id === "string" && byId.has(id)) : [];
  } catch {
    return [];
  }
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

const kib = (n: number): string => (n < 1024 * 1024 ? `${(n / 1024).toFixed(0)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`);

// --- loading progress -------------------------------------------------------------------------

const files = new Map<string, PackProgress>();
function onProgress(p: PackProgress): void {
  files.set(p.file, p);
  let loaded = 0;
  let total = 0;
  for (const f of files.values()) {
    loaded += f.loaded;
    total += f.total ?? f.loaded;
  }
  handle.progress = { events: handle.progress.events + 1, loaded, total };
  const bar = $<HTMLProgressElement>("progress");
  bar.max = Math.max(total, 1);
  bar.value = loaded;
  $("progress-text").textContent =
    `${kib(loaded)} of ${kib(total)}${[...files.values()].every((f) => f.fromCache) ? " (from this browser's cache)" : ""}`;
  $("progress-files").replaceChildren(
    ...[...files.values()].map((f) =>
      el(
        "li",
        {},
        `${f.file}: ${kib(f.loaded)}${f.total !== null ? ` / ${kib(f.total)}` : ""}${f.fromCache ? " · cached" : f.done ? " · done" : ""}`,
      ),
    ),
  );
}

// --- rendering --------------------------------------------------------------------------------

function renderHistory(): void {
  const list = $("history");
  list.replaceChildren(
    ...(history.length
      ? [...history].reverse().map((id) => el("li", { "data-history-id": id }, byId.get(id)!.title))
      : [el("li", { class: "muted" }, "nothing yet")]),
  );
  for (const b of document.querySelectorAll<HTMLButtonElement>("#grid .product"))
    b.classList.toggle("viewed", history.includes(b.dataset.id!));
}

function renderShelf(res: RecommendResponse, candidates: CatalogueItem[], ms: number): void {
  const top = res.ranked.slice(0, SHELF_SIZE);
  const maxP = Math.max(...top.map((r) => r.probability));
  $("recommendations").replaceChildren(
    ...top.map((r, i) => {
      const item = candidates[r.index]!;
      return el(
        "li",
        { "data-id": item.id, "data-score": String(r.score) },
        el("span", { class: "rank" }, `#${i + 1}`),
        el("button", { type: "button", class: "link t", "data-id": item.id }, item.title),
        el("span", { class: "muted" }, `score ${r.score.toFixed(3)} · ${(r.probability * 100).toFixed(1)}%`),
        el("div", { class: "bar" }, el("span", { style: `width:${((r.probability / maxP) * 100).toFixed(1)}%` })),
      );
    }),
  );
  const lam = res.mixture.lambda === null ? "base model" : `λ=${res.mixture.lambda.toFixed(2)} (${res.mixture.source})`;
  $("rec-meta").textContent = `${candidates.length} candidates re-ranked in ${ms.toFixed(0)} ms · ${lam}`;
  $("recommendations").dataset.version = String(++shelfVersion);
}

// --- re-ranking -------------------------------------------------------------------------------

let running = false;
let again = false;

async function refresh(): Promise<void> {
  if (!rec) return;
  if (running) {
    again = true;
    return;
  }
  running = true;
  $("recommendations").classList.add("busy");
  try {
    do {
      again = false;
      await rerank(rec);
    } while (again);
  } catch (e) {
    showError(e);
  } finally {
    running = false;
    $("recommendations").classList.remove("busy");
  }
}

async function rerank(r: Recommender): Promise<void> {
  const recent = history.slice(-r.limits.maxHistoryItems);
  const candidates = pickCandidates(catalogue.items, recent, Math.min(MAX_CANDIDATES, r.limits.maxCandidates));
  $("rec-empty").hidden = recent.length > 0;
  if (recent.length === 0 || candidates.length === 0) {
    $("recommendations").replaceChildren();
    $("rec-meta").textContent = candidates.length === 0 ? "you have seen every title" : "";
    $("recommendations").dataset.version = String(++shelfVersion);
    return;
  }
  const t0 = performance.now();
  const res = await r.recommend({
    history: recent.map((id) => byId.get(id)!.title),
    candidates: candidates.map((c) => c.title),
    ...(config.domain !== null ? { domain: config.domain } : {}),
    mixture: config.mixture,
  });
  renderShelf(res, candidates, performance.now() - t0);
}

function view(id: string): void {
  if (!byId.has(id)) return;
  history = addToHistory(history, id, 50);
  localStorage.setItem(historyKey, JSON.stringify(history));
  renderHistory();
  void refresh();
}

// --- states -----------------------------------------------------------------------------------

function describeEngine(info: WebBackendInfo, gpuSkipped: boolean): string {
  if (info.device === "webgpu") {
    const a = info.adapter;
    const name = a ? [a.vendor, a.architecture].filter(Boolean).join(" ") || "GPU" : "GPU";
    return `WebGPU · ${name}${a?.isFallbackAdapter ? " (software fallback)" : ""}`;
  }
  const why = gpuSkipped ? " (WebGPU skipped for this model)" : info.failures.webgpu ? " (no WebGPU)" : "";
  return `WASM · ${info.wasmThreads} thread${info.wasmThreads === 1 ? "" : "s"}${why}`;
}

/** Why the model does not run on WebGPU here (or runs there against advice), for the note under the shelf. */
function engineNote(info: WebBackendInfo, blockers: WebGpuBlocker[], gpuSkipped: boolean): string {
  if (gpuSkipped) return `Running on WASM: WebGPU cannot run this model correctly — ${describeWebGpuBlockers(blockers)}.`;
  if (info.device === "webgpu" && blockers.length > 0)
    return `WebGPU was forced (?device=webgpu) although it cannot run this model correctly — ${describeWebGpuBlockers(blockers)}. Scores may be wrong.`;
  const gpu = info.failures.webgpu;
  if (info.device === "wasm" && gpu?.stage === "session") return `Running on WASM: WebGPU could not open this model — ${gpu.message}`;
  return "";
}

function showError(e: unknown): void {
  document.body.dataset.state = "error";
  const engine = $("engine");
  engine.textContent = "recommendations off";
  engine.className = "engine bad";
  $("error").hidden = false;
  const failures =
    (isMolorecError(e) ? (e.details?.failures as WebBackendInfo["failures"] | undefined) : undefined) ?? backend?.info().failures ?? {};
  const perBackend = Object.keys(failures).length > 0 && isMolorecError(e) && e.code === "BACKEND_UNAVAILABLE";
  $("error-message").textContent = perBackend
    ? `${(e as { code: string }).code}: no backend could run the model here:`
    : isMolorecError(e)
      ? `${e.code}: ${e.message}`
      : String((e as Error)?.message ?? e);
  $("error-details").replaceChildren(
    ...Object.entries(failures).map(([name, f]) => el("li", { "data-backend": name }, `${name} (${f!.stage}): ${f!.message}`)),
  );
  $("retry-wasm").hidden = device === "wasm";
  console.error("storefront: recommendations unavailable", e);
}

async function start(): Promise<void> {
  const t0 = performance.now();
  const { pack, stats } = await loadPackFromUrl(new URL(config.packUrl, location.href), { onProgress });
  handle.stats = stats;
  const t1 = performance.now();
  // onnxruntime-web's WebGPU backend cannot run some quantized ops correctly (webGpuBlockers):
  // with `auto`, such a model opens on WASM; `?device=webgpu` still forces WebGPU (diagnosis).
  // (A pack fetched by URL holds its model as bytes; only file-backed sources open it in place.)
  handle.webgpuBlockers = pack.model instanceof Uint8Array ? webGpuBlockers(pack.model) : [];
  const gpuSkipped = device === "auto" && handle.webgpuBlockers.length > 0;
  backend = webBackend({ device: gpuSkipped ? "wasm" : device, wasmPaths: new URL(config.wasmPaths, location.href).href });
  rec = await createRecommender({ backend, pack });
  const info = backend.info();
  handle.timings = { packMs: stats.ms, sessionMs: performance.now() - t1, readyMs: performance.now() - t0 };
  const engine = $("engine");
  engine.textContent = describeEngine(info, gpuSkipped);
  engine.className = "engine ok";
  engine.title = `onnxruntime-web ${info.ortVersion}; pack ${config.packName}`;
  const note = engineNote(info, handle.webgpuBlockers, gpuSkipped);
  $("engine-note").textContent = note;
  $("engine-note").hidden = note === "";
  if (note) console.info(`storefront: ${note}`);
  $("load-stats").textContent =
    `model ${config.packName}: ${stats.bytesFromCache > 0 ? `${kib(stats.bytesFromCache)} from cache` : `${kib(stats.bytesFromNetwork)} downloaded`} in ${stats.ms.toFixed(0)} ms, ` +
    `ready in ${handle.timings.readyMs.toFixed(0)} ms${stats.cacheNote ? ` (${stats.cacheNote})` : ""}`;
  document.body.dataset.state = "ready";
  await refresh();
}

const handle: StorefrontHandle = {
  ready: Promise.resolve(),
  recommend: (request) => (rec ? rec.recommend(request) : Promise.reject(new Error("the recommender is not ready"))),
  info: () => backend?.info() ?? null,
  stats: null,
  timings: null,
  progress: { events: 0, loaded: 0, total: 0 },
  defaults: { domain: config.domain, mixture: config.mixture },
  webgpuBlockers: [],
};
(window as unknown as { molorec: StorefrontHandle }).molorec = handle;

document.addEventListener("click", (ev) => {
  const target = (ev.target as Element).closest<HTMLElement>("[data-id]");
  if (target?.dataset.id) view(target.dataset.id);
});
$("clear-history").addEventListener("click", () => {
  history = [];
  localStorage.removeItem(historyKey);
  renderHistory();
  void refresh();
});
$("clear-cache").addEventListener("click", async () => {
  const had = await clearPackCache();
  $("load-stats").textContent = had ? "downloaded model forgotten: the next visit downloads it again" : "nothing cached";
});

renderHistory();
handle.ready = start().catch(showError);
