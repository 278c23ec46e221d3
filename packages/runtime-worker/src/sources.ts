import type { PackSource } from "@molorec/core";
import { memorySource, MolorecError } from "@molorec/core";

/**
 * The part of an R2 bucket binding a pack source needs. `R2Bucket` from
 * `@cloudflare/workers-types` satisfies it; so does any test double.
 */
export interface R2BucketLike {
  get(key: string): Promise<{ arrayBuffer(): Promise<ArrayBuffer> } | null>;
}

/** The part of a `Fetcher` binding (e.g. the static-assets binding) a pack source needs. */
export interface FetcherLike {
  fetch(input: string, init?: RequestInit): Promise<Response>;
}

function joinKey(prefix: string, path: string): string {
  const p = prefix.replace(/^\/+/, "");
  return p === "" ? path : p.endsWith("/") ? p + path : `${p}/${path}`;
}

function checkPath(path: string): void {
  if (path.split("/").some((part) => part === ".." || part === ".")) throw new Error(`${path} is outside the pack`);
}

/**
 * A pack stored in R2 under `prefix` (e.g. `packs/demo/`), with the same file layout as a pack
 * directory. Upload one with `wrangler r2 object put BUCKET/packs/demo/molorec.json --file …`.
 */
export function r2Source(bucket: R2BucketLike, prefix = ""): PackSource {
  return {
    location: `r2://${prefix.replace(/\/+$/, "")}`,
    async readBytes(path) {
      checkPath(path);
      const key = joinKey(prefix, path);
      const obj = await bucket.get(key);
      if (!obj) throw new Error(`no R2 object ${key}`);
      return new Uint8Array(await obj.arrayBuffer());
    },
  };
}

/** Options of {@link assetsSource}. */
export interface AssetsSourceOptions {
  /** Folder of the pack inside the assets directory. Default: the root. */
  prefix?: string;
  /** Origin of the requests made to the binding (the host is ignored by Workers assets). */
  origin?: string;
}

/**
 * A pack served by Workers static assets (the `assets.binding` of wrangler's config), or by any
 * other `fetch`-like binding or function. Set `run_worker_first: true` so the pack is only
 * reachable through the Worker, not downloadable by clients.
 */
export function assetsSource(assets: FetcherLike, options: AssetsSourceOptions = {}): PackSource {
  const origin = (options.origin ?? "https://assets.invalid").replace(/\/+$/, "");
  const prefix = options.prefix ?? "";
  return {
    location: `${origin}/${prefix.replace(/^\/+|\/+$/g, "")}`.replace(/\/$/, ""),
    async readBytes(path) {
      checkPath(path);
      const url = `${origin}/${joinKey(prefix, path)}`;
      const res = await assets.fetch(url);
      if (!res.ok) {
        await res.body?.cancel();
        throw new Error(`GET ${url}: HTTP ${res.status}`);
      }
      return new Uint8Array(await res.arrayBuffer());
    },
  };
}

/**
 * A pack whose files are bundled into the Worker script (wrangler `Data` modules, miniflare data
 * blobs): file bytes by their path inside the pack.
 */
export function bundledSource(files: Record<string, ArrayBuffer | Uint8Array>, location = "bundled"): PackSource {
  const bytes: Record<string, Uint8Array> = {};
  for (const [path, data] of Object.entries(files)) bytes[path] = data instanceof Uint8Array ? data : new Uint8Array(data);
  return memorySource(bytes, location);
}

/** The bindings {@link packSourceFromSpec} can choose between. */
export interface PackBindings {
  bucket?: R2BucketLike;
  assets?: FetcherLike;
  bundled?: Record<string, ArrayBuffer | Uint8Array>;
}

/**
 * Chooses a pack source from a one-line spec, as kept in a Worker's config var:
 * `r2:<prefix>` (the R2 bucket), `assets:<prefix>` (static assets) or `bundled`.
 *
 * @example
 * ```ts
 * const source = packSourceFromSpec(env.MOLOREC_PACK, { bucket: env.PACK_BUCKET, assets: env.PACK_ASSETS });
 * ```
 */
export function packSourceFromSpec(spec: string | undefined, bindings: PackBindings): PackSource {
  const s = (spec ?? "").trim();
  const colon = s.indexOf(":");
  const kind = colon < 0 ? s : s.slice(0, colon);
  const prefix = colon < 0 ? "" : s.slice(colon + 1);
  const missing = (what: string) =>
    new MolorecError("PACK_FILE_MISSING", `pack source "${s}" needs ${what}, which this Worker does not have; check wrangler.jsonc.`, {
      details: { spec: s },
    });
  switch (kind) {
    case "r2":
      if (!bindings.bucket) throw missing("an R2 bucket binding");
      return r2Source(bindings.bucket, prefix);
    case "assets":
      if (!bindings.assets) throw missing("a static-assets binding");
      return assetsSource(bindings.assets, { prefix });
    case "bundled":
      if (!bindings.bundled) throw missing("a bundled pack");
      return bundledSource(bindings.bundled);
    default:
      throw new MolorecError("PACK_FILE_MISSING", `pack source "${s}" is not r2:<prefix>, assets:<prefix> or bundled.`, {
        details: { spec: s },
      });
  }
}
