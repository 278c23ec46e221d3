import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { clearPackCache, contentVersion, fetchSource, loadPackFromUrl, PACK_CACHE_NAME, type PackProgress } from "./fetch-source.js";

const fixture = fileURLToPath(new URL("../../../test/fixtures/tiny-pack", import.meta.url));
const BASE = "https://shop.example/pack/";

function packFiles(dir: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(relative(dir, p).split("\\").join("/"), new Uint8Array(readFileSync(p)));
    }
  };
  walk(dir);
  return out;
}

/** A server over the fixture pack that counts requests; bodies stream in 64 KiB chunks. */
function fakeServer(files: Map<string, Uint8Array>) {
  const requests: string[] = [];
  const fetch = (async (input: RequestInfo | URL) => {
    const url = new URL(String(input));
    requests.push(url.pathname);
    const file = files.get(url.pathname.replace(/^\/pack\//, ""));
    if (!file) return new Response("not found", { status: 404, statusText: "Not Found" });
    let off = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(ctrl) {
        if (off >= file.length) return ctrl.close();
        ctrl.enqueue(file.slice(off, off + 65536));
        off += 65536;
      },
    });
    return new Response(body, { headers: { "content-length": String(file.length), "content-type": "application/octet-stream" } });
  }) as typeof globalThis.fetch;
  return { fetch, requests };
}

/** Just enough of CacheStorage for the source: open / delete, match / put / keys / delete. */
function fakeCaches() {
  const buckets = new Map<string, Map<string, Uint8Array>>();
  const cacheOf = (entries: Map<string, Uint8Array>): Cache =>
    ({
      async match(key: string) {
        const b = entries.get(String(key));
        return b ? new Response(b.slice()) : undefined;
      },
      async put(key: string, res: Response) {
        entries.set(String(key), new Uint8Array(await res.arrayBuffer()));
      },
      async keys() {
        return [...entries.keys()].map((url) => ({ url }));
      },
      async delete(req: { url: string } | string) {
        return entries.delete(typeof req === "string" ? req : req.url);
      },
    }) as unknown as Cache;
  const storage = {
    async open(name: string) {
      if (!buckets.has(name)) buckets.set(name, new Map());
      return cacheOf(buckets.get(name)!);
    },
    async delete(name: string) {
      return buckets.delete(name);
    },
  } as unknown as CacheStorage;
  return { storage, buckets };
}

describe("loadPackFromUrl", () => {
  const files = packFiles(fixture);

  it("downloads with per-file progress, then a second visit reads every file but molorec.json from the cache", async () => {
    const server = fakeServer(files);
    const { storage, buckets } = fakeCaches();
    const events: PackProgress[] = [];
    const first = await loadPackFromUrl(BASE, { fetch: server.fetch, caches: storage, onProgress: (e) => events.push(e) });
    expect(first.pack.manifest.name).toBe("tiny-fixture");
    expect(first.stats.bytesFromCache).toBe(0);
    expect(first.stats.bytesFromNetwork).toBe(
      [...files.values()].reduce((s, f) => s + f.length, 0) -
        files.get("adapters/general/adapter_config.json")!.length -
        files.get("adapters/domain-movies/adapter_config.json")!.length,
    );
    const model = events.filter((e) => e.file === "model.onnx");
    expect(model.length).toBeGreaterThan(2); // streamed, several events
    expect(model.every((e) => e.total === files.get("model.onnx")!.length && !e.fromCache)).toBe(true);
    expect(model.at(-1)).toMatchObject({ loaded: files.get("model.onnx")!.length, done: true });
    expect(model.map((e) => e.loaded)).toEqual([...model.map((e) => e.loaded)].sort((a, b) => a - b));
    expect(buckets.get(PACK_CACHE_NAME)!.size).toBe(first.stats.files.length - 1); // all but the manifest

    server.requests.length = 0;
    events.length = 0;
    const second = await loadPackFromUrl(BASE, { fetch: server.fetch, caches: storage, onProgress: (e) => events.push(e) });
    expect(server.requests).toEqual(["/pack/molorec.json"]);
    expect(second.stats.version).toBe(first.stats.version);
    expect(second.stats.bytesFromCache).toBe(first.stats.bytesFromNetwork - files.get("molorec.json")!.length);
    expect(events.find((e) => e.file === "model.onnx")).toMatchObject({ fromCache: true, done: true });
    expect(second.pack.model).toEqual(first.pack.model);
  });

  it("keys the cache by version: a changed molorec.json refetches and drops the old version's files", async () => {
    const server = fakeServer(files);
    const { storage, buckets } = fakeCaches();
    const a = await loadPackFromUrl(BASE, { fetch: server.fetch, caches: storage });
    const changed = new Map(files);
    const m = JSON.parse(new TextDecoder().decode(files.get("molorec.json")));
    m.domains.movies.calibratedLambda = 0.7;
    changed.set("molorec.json", new TextEncoder().encode(JSON.stringify(m)));
    const server2 = fakeServer(changed);
    const b = await loadPackFromUrl(BASE, { fetch: server2.fetch, caches: storage });
    expect(b.stats.version).not.toBe(a.stats.version);
    expect(b.stats.bytesFromCache).toBe(0);
    expect(b.pack.manifest.domains.movies!.calibratedLambda).toBe(0.7);
    const keys = [...buckets.get(PACK_CACHE_NAME)!.keys()];
    expect(keys.every((k) => k.includes(`molorec-pack-version=${b.stats.version}`))).toBe(true);
  });

  it("an explicit version caches molorec.json too; clearPackCache empties it", async () => {
    const server = fakeServer(files);
    const { storage } = fakeCaches();
    await loadPackFromUrl(BASE, { fetch: server.fetch, caches: storage, version: "build-42" });
    server.requests.length = 0;
    const again = await loadPackFromUrl(BASE, { fetch: server.fetch, caches: storage, version: "build-42" });
    expect(server.requests).toEqual([]);
    expect(again.stats.bytesFromNetwork).toBe(0);
    expect(await clearPackCache({ caches: storage })).toBe(true);
    await loadPackFromUrl(BASE, { fetch: server.fetch, caches: storage, version: "build-42" });
    expect(server.requests.length).toBeGreaterThan(3);
  });

  it("works without Cache Storage and says so", async () => {
    const server = fakeServer(files);
    const { stats } = await loadPackFromUrl(BASE, { fetch: server.fetch, caches: null });
    expect(stats.version).toBeNull();
    expect(stats.cacheNote).toMatch(/unavailable/);
  });

  it("a missing file is a coded PACK_FILE_MISSING error naming the file", async () => {
    const partial = new Map(files);
    partial.delete("model.onnx");
    const server = fakeServer(partial);
    await expect(loadPackFromUrl(BASE, { fetch: server.fetch, caches: null })).rejects.toMatchObject({
      code: "PACK_FILE_MISSING",
      message: expect.stringMatching(/model\.onnx.*HTTP 404/),
    });
  });

  it("refuses paths outside the pack", async () => {
    const src = fetchSource(BASE, { fetch: fakeServer(files).fetch, caches: null });
    await expect(src.readBytes("../secret")).rejects.toThrow(/outside the pack/);
  });

  it("contentVersion is stable and content-sensitive", () => {
    const a = contentVersion(new TextEncoder().encode("abc"));
    expect(a).toMatch(/^[0-9a-f]{16}$/);
    expect(contentVersion(new TextEncoder().encode("abc"))).toBe(a);
    expect(contentVersion(new TextEncoder().encode("abd"))).not.toBe(a);
  });
});
