import { loadPack, type ModelPack, type PackSource } from "@molorec/core";

/**
 * Name of the Cache Storage bucket that holds pack files. The `v1` is the layout of the cache
 * itself; pack versions are part of each entry's key (see {@link FetchSourceOptions.version}).
 */
export const PACK_CACHE_NAME = "molorec-packs-v1";

const VERSION_PARAM = "molorec-pack-version";

/** One progress event: bytes of one file so far. */
export interface PackProgress {
  /** Path of the file inside the pack, e.g. `model.onnx`. */
  file: string;
  loaded: number;
  /** Bytes expected; null when the server did not say (or sent it compressed). */
  total: number | null;
  fromCache: boolean;
  /** True on a file's last event. */
  done: boolean;
}

/** How one pack load went, for the page (and for measuring a cold vs cached visit). */
export interface PackLoadStats {
  files: Array<{ file: string; bytes: number; fromCache: boolean }>;
  bytesFromNetwork: number;
  bytesFromCache: number;
  /** Wall time of the load (files and validation), in milliseconds. */
  ms: number;
  /** Key of the pack's files in the cache; null when caching was off or unavailable. */
  version: string | null;
  /** Why caching was not used or failed, if it was not. */
  cacheNote: string | null;
}

/** Options of {@link fetchSource} and {@link loadPackFromUrl}. */
export interface FetchSourceOptions {
  onProgress?: (event: PackProgress) => void;
  /**
   * Keep files in Cache Storage so the next visit reads them locally. Default: on (where the
   * page is a secure context). `false` always goes to the network.
   */
  cache?: boolean;
  /**
   * Key of this pack's files in the cache. Give a build id when the pack's files can change
   * under the same URL without `molorec.json` changing; {@link loadPackFromUrl} otherwise uses
   * a hash of `molorec.json` (always revalidated with the server).
   */
  version?: string;
  /** Cache Storage bucket name; default {@link PACK_CACHE_NAME}. */
  cacheName?: string;
  /** Stand-ins for tests or custom transports. */
  fetch?: typeof fetch;
  caches?: CacheStorage | null;
  /** Extra `fetch` options (credentials, headers) for every file. */
  requestInit?: RequestInit;
}

function defaultCaches(): CacheStorage | null {
  return typeof globalThis.caches === "object" && globalThis.caches !== null ? globalThis.caches : null;
}

function baseOf(url: string | URL): URL {
  const base = typeof globalThis.location === "object" ? globalThis.location.href : undefined;
  const u = new URL(String(url), base);
  if (!u.pathname.endsWith("/")) u.pathname += "/";
  return u;
}

function cacheKey(url: URL, version: string): string {
  const k = new URL(url);
  k.searchParams.set(VERSION_PARAM, version);
  return k.href;
}

async function readBody(res: Response, file: string, onProgress: ((e: PackProgress) => void) | undefined): Promise<Uint8Array> {
  const len = res.headers.get("content-length");
  // A compressed body's Content-Length counts compressed bytes; the stream yields inflated ones.
  const total = len !== null && !res.headers.get("content-encoding") ? Number(len) : null;
  if (!res.body) {
    const bytes = new Uint8Array(await res.arrayBuffer());
    onProgress?.({ file, loaded: bytes.byteLength, total: bytes.byteLength, fromCache: false, done: true });
    return bytes;
  }
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    onProgress?.({ file, loaded, total, fromCache: false, done: false });
  }
  const bytes = new Uint8Array(loaded);
  let off = 0;
  for (const c of chunks) {
    bytes.set(c, off);
    off += c.byteLength;
  }
  onProgress?.({ file, loaded, total: loaded, fromCache: false, done: true });
  return bytes;
}

/** 64-bit FNV-1a of the bytes, as hex: a cache version for `molorec.json` (no crypto.subtle needed). */
export function contentVersion(bytes: Uint8Array): string {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < bytes.length; i++) h = BigInt.asUintN(64, (h ^ BigInt(bytes[i]!)) * 0x100000001b3n);
  return h.toString(16).padStart(16, "0");
}

/**
 * A {@link PackSource} over HTTP(S): files are fetched relative to `baseUrl` with progress
 * events, and kept in Cache Storage under `version` so that a later visit reads them locally.
 * Without `version`, nothing is cached (use {@link loadPackFromUrl}, which derives one).
 */
export function fetchSource(baseUrl: string | URL, options: FetchSourceOptions = {}): PackSource & { readonly stats: PackLoadStats } {
  const base = baseOf(baseUrl);
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const storage = options.cache === false ? null : options.caches !== undefined ? options.caches : defaultCaches();
  const version = options.version ?? null;
  const stats: PackLoadStats = {
    files: [],
    bytesFromNetwork: 0,
    bytesFromCache: 0,
    ms: 0,
    version: storage && version ? version : null,
    cacheNote: null,
  };
  if (options.cache !== false && !storage)
    stats.cacheNote = "Cache Storage is unavailable (not a secure context?): every visit downloads the pack";
  let cache: Promise<Cache | null> | null = null;
  const openCache = (): Promise<Cache | null> => {
    cache ??=
      storage && version
        ? storage.open(options.cacheName ?? PACK_CACHE_NAME).catch((e: unknown) => {
            stats.cacheNote = `Cache Storage could not be opened: ${(e as Error)?.message ?? e}`;
            return null;
          })
        : Promise.resolve(null);
    return cache;
  };

  return {
    location: base.href.replace(/\/$/, ""),
    stats,
    async readBytes(path) {
      const url = new URL(path, base);
      if (!url.href.startsWith(base.href)) throw new Error(`${path} is outside the pack`);
      const c = await openCache();
      const key = version ? cacheKey(url, version) : null;
      if (c && key) {
        const hit = await c.match(key).catch(() => undefined);
        if (hit) {
          const bytes = new Uint8Array(await hit.arrayBuffer());
          stats.files.push({ file: path, bytes: bytes.byteLength, fromCache: true });
          stats.bytesFromCache += bytes.byteLength;
          options.onProgress?.({ file: path, loaded: bytes.byteLength, total: bytes.byteLength, fromCache: true, done: true });
          return bytes;
        }
      }
      const res = await doFetch(url.href, options.requestInit);
      if (!res.ok) throw new Error(`HTTP ${res.status} ${res.statusText} for ${url.href}`);
      const bytes = await readBody(res, path, options.onProgress);
      stats.files.push({ file: path, bytes: bytes.byteLength, fromCache: false });
      stats.bytesFromNetwork += bytes.byteLength;
      if (c && key) {
        const type = res.headers.get("content-type") ?? "application/octet-stream";
        await c
          .put(
            key,
            new Response(bytes as Uint8Array<ArrayBuffer>, {
              headers: { "content-type": type, "content-length": String(bytes.byteLength) },
            }),
          )
          .catch((e: unknown) => {
            stats.cacheNote = `not cached (${path}): ${(e as Error)?.message ?? e}`;
          });
      }
      return bytes;
    },
  };
}

/**
 * Fetches and validates the pack at `baseUrl` (the folder holding `molorec.json`), reading
 * files from Cache Storage when this version was loaded before, and dropping the cached files
 * of other versions of the same pack URL.
 *
 * @example
 * ```ts
 * const { pack, stats } = await loadPackFromUrl("/pack/", {
 *   onProgress: (p) => console.log(p.file, p.loaded, p.total),
 * });
 * console.log(stats.bytesFromCache > 0 ? "from cache" : "downloaded", stats.ms, "ms");
 * ```
 */
export async function loadPackFromUrl(
  baseUrl: string | URL,
  options: FetchSourceOptions = {},
): Promise<{ pack: ModelPack; stats: PackLoadStats }> {
  const t0 = performance.now();
  const base = baseOf(baseUrl);
  const doFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const caching = options.cache !== false && (options.caches !== undefined ? options.caches : defaultCaches()) !== null;
  let version = options.version;
  let manifest: Uint8Array | null = null;
  if (caching && version === undefined) {
    // Revalidated every visit (it is small), so a new pack under the same URL gets a new key.
    const res = await doFetch(new URL("molorec.json", base).href, { ...options.requestInit, cache: "no-cache" }).catch(() => null);
    if (res?.ok) {
      manifest = await readBody(res, "molorec.json", options.onProgress);
      version = contentVersion(manifest);
    }
  }
  const source = fetchSource(base, { ...options, ...(version === undefined ? {} : { version }) });
  const served: PackSource = {
    location: source.location,
    readBytes: (path) => {
      if (path === "molorec.json" && manifest) {
        source.stats.files.push({ file: path, bytes: manifest.byteLength, fromCache: false });
        source.stats.bytesFromNetwork += manifest.byteLength;
        return Promise.resolve(manifest);
      }
      return source.readBytes(path);
    },
  };
  const pack = await loadPack(served);
  if (caching && version !== undefined) await pruneOtherVersions(base, version, options);
  source.stats.ms = performance.now() - t0;
  return { pack, stats: source.stats };
}

async function pruneOtherVersions(base: URL, version: string, options: FetchSourceOptions): Promise<void> {
  const storage = options.caches !== undefined ? options.caches : defaultCaches();
  if (!storage) return;
  try {
    const c = await storage.open(options.cacheName ?? PACK_CACHE_NAME);
    for (const req of await c.keys()) {
      const u = new URL(req.url);
      const v = u.searchParams.get(VERSION_PARAM);
      if (v !== null && v !== version && u.href.startsWith(base.href)) await c.delete(req);
    }
  } catch {
    // Pruning is housekeeping; a failure must not fail the load.
  }
}

/**
 * Deletes every cached pack file (all packs, all versions) of this origin's bucket.
 * Resolves to whether there was a cache to delete.
 */
export async function clearPackCache(options: { cacheName?: string; caches?: CacheStorage | null } = {}): Promise<boolean> {
  const storage = options.caches !== undefined ? options.caches : defaultCaches();
  if (!storage) return false;
  return storage.delete(options.cacheName ?? PACK_CACHE_NAME);
}
