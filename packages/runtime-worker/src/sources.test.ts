import { describe, expect, it } from "vitest";
import { assetsSource, bundledSource, packSourceFromSpec, r2Source, type FetcherLike, type R2BucketLike } from "./sources.js";

const enc = (s: string) => new TextEncoder().encode(s);

function bucket(objects: Record<string, string>): R2BucketLike & { keys: string[] } {
  const keys: string[] = [];
  return {
    keys,
    async get(key) {
      keys.push(key);
      const v = objects[key];
      return v === undefined ? null : { arrayBuffer: async () => enc(v).buffer as ArrayBuffer };
    },
  };
}

function assets(files: Record<string, string>): FetcherLike & { urls: string[] } {
  const urls: string[] = [];
  return {
    urls,
    async fetch(url) {
      urls.push(url);
      const path = new URL(url).pathname;
      return path in files ? new Response(files[path]) : new Response("not found", { status: 404 });
    },
  };
}

describe("r2Source", () => {
  it("reads pack files under a prefix, with or without a trailing slash", async () => {
    const b = bucket({ "packs/demo/molorec.json": "{}", "packs/demo/adapters/general/adapter_config.json": "x" });
    for (const prefix of ["packs/demo/", "packs/demo", "/packs/demo/"]) {
      const s = r2Source(b, prefix);
      expect(new TextDecoder().decode(await s.readBytes("molorec.json"))).toBe("{}");
      expect(await s.readBytes("adapters/general/adapter_config.json")).toEqual(enc("x"));
    }
    expect(new Set(b.keys)).toEqual(new Set(["packs/demo/molorec.json", "packs/demo/adapters/general/adapter_config.json"]));
  });
  it("rejects missing objects and paths that leave the pack", async () => {
    const s = r2Source(bucket({}), "p/");
    await expect(s.readBytes("model.onnx")).rejects.toThrow(/no R2 object p\/model.onnx/);
    await expect(s.readBytes("../secret")).rejects.toThrow(/outside the pack/);
  });
});

describe("assetsSource", () => {
  it("fetches files from the binding, under a prefix", async () => {
    const a = assets({ "/molorec.json": "root", "/packs/demo/molorec.json": "demo" });
    expect(new TextDecoder().decode(await assetsSource(a).readBytes("molorec.json"))).toBe("root");
    expect(new TextDecoder().decode(await assetsSource(a, { prefix: "packs/demo" }).readBytes("molorec.json"))).toBe("demo");
    await expect(assetsSource(a).readBytes("model.onnx")).rejects.toThrow(/HTTP 404/);
  });
});

describe("packSourceFromSpec", () => {
  const b = bucket({ "packs/demo/molorec.json": "r2" });
  const a = assets({ "/molorec.json": "assets" });
  const bindings = { bucket: b, assets: a, bundled: { "molorec.json": enc("bundled").buffer as ArrayBuffer } };
  it.each([
    ["r2:packs/demo/", "r2"],
    ["assets:", "assets"],
    ["assets", "assets"],
    ["bundled", "bundled"],
  ])("%s", async (spec, want) => {
    expect(new TextDecoder().decode(await packSourceFromSpec(spec, bindings).readBytes("molorec.json"))).toBe(want);
  });
  it("explains a bad spec or a missing binding", () => {
    expect(() => packSourceFromSpec("s3:x", bindings)).toThrow(/not r2:<prefix>, assets:<prefix> or bundled/);
    expect(() => packSourceFromSpec(undefined, bindings)).toThrow(/not r2:<prefix>/);
    expect(() => packSourceFromSpec("r2:x", {})).toThrow(/R2 bucket binding/);
  });
});

describe("bundledSource", () => {
  it("accepts ArrayBuffers and Uint8Arrays", async () => {
    const s = bundledSource({ a: enc("1").buffer as ArrayBuffer, b: enc("2") });
    expect(await s.readBytes("a")).toEqual(enc("1"));
    expect(await s.readBytes("b")).toEqual(enc("2"));
    await expect(s.readBytes("c")).rejects.toThrow();
  });
});
