import { fileURLToPath } from "node:url";
import { createRecommender, MolorecError, type Recommender } from "@molorec/core";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import { beforeAll, describe, expect, it } from "vitest";
import { createApp, isJsonMediaType } from "./app.js";

const fixture = fileURLToPath(new URL("../../../test/fixtures/tiny-pack", import.meta.url));
const valid = {
  history: ["The Silent River (1994)", "Electric Garden (2001)"],
  candidates: ["Broken Mirror (1999)", "Wild Orchestra (2004)", "Frozen Letter (1968)"],
  domain: "movies",
};

let rec: Recommender;
let loads = 0;
const errors: unknown[] = [];
const app = createApp({
  getRecommender: async () => {
    loads++;
    return rec;
  },
  maxBodyBytes: 256 * 1024,
  health: () => ({ loads }),
  onError: (e) => errors.push(e),
});

const post = (body: BodyInit | null, headers: Record<string, string> = { "content-type": "application/json" }) =>
  app.request("/v1/recommend", { method: "POST", body, headers });

async function expectError(
  res: Response,
  status: number,
  code: string,
): Promise<{ error: { code: string; message: string; details?: unknown } }> {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  const body = (await res.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(body.error.message.length).toBeGreaterThan(10);
  return body;
}

beforeAll(async () => {
  rec = await createRecommender({
    backend: nodeBackend({ executionProvider: "cpu", log: () => {} }),
    pack: await loadPackFromDir(fixture),
  });
});

describe("POST /v1/recommend", () => {
  it("ranks the candidates", async () => {
    const res = await post(JSON.stringify({ ...valid, topK: 2 }));
    expect(res.status).toBe(200);
    expect(res.headers.get("server-timing")).toMatch(/^recommend;dur=\d+/);
    const body = (await res.json()) as Awaited<ReturnType<Recommender["recommend"]>>;
    expect(body.ranked).toHaveLength(2);
    expect(body).toEqual(JSON.parse(JSON.stringify(await rec.recommend({ ...valid, topK: 2 }))));
    expect(body.ranked[0]!.score).toBeGreaterThanOrEqual(body.ranked[1]!.score);
  });

  it.each([
    ["malformed JSON", "{history: [", 400, "INVALID_REQUEST"],
    ["an empty body", "", 400, "INVALID_REQUEST"],
    ["invalid UTF-8", new Uint8Array([0x7b, 0xff, 0x7d]), 400, "INVALID_REQUEST"],
    ["a JSON array", "[]", 400, "INVALID_REQUEST"],
    ["an unknown domain", JSON.stringify({ ...valid, domain: "cars" }), 404, "UNKNOWN_DOMAIN"],
    ["0 candidates", JSON.stringify({ ...valid, candidates: [] }), 400, "NO_CANDIDATES"],
    [
      "10,000 candidates",
      JSON.stringify({ ...valid, candidates: Array.from({ length: 10_000 }, (_, i) => `item ${i}`) }),
      400,
      "TOO_MANY_CANDIDATES",
    ],
    ["an empty history", JSON.stringify({ ...valid, history: [] }), 400, "EMPTY_HISTORY"],
    ["a bad mixture", JSON.stringify({ ...valid, mixture: "best" }), 400, "INVALID_MIXTURE"],
    ["an unknown field", JSON.stringify({ ...valid, histroy: [] }), 400, "INVALID_REQUEST"],
  ])("rejects %s with a JSON error, then still serves", async (_name, body, status, code) => {
    await expectError(await post(body as BodyInit), status, code);
    expect((await post(JSON.stringify(valid))).status).toBe(200);
  });

  it.each([
    ["text/plain (a cross-origin form or fetch needs no preflight for it)", { "content-type": "text/plain;charset=UTF-8" }],
    ["a form", { "content-type": "application/x-www-form-urlencoded" }],
    ["multipart", { "content-type": "multipart/form-data; boundary=x" }],
    ["no content type (a Blob body without a type)", {} as Record<string, string>],
  ])("refuses %s with 415 before parsing or scoring anything", async (_name, headers) => {
    const before = loads;
    const body = await expectError(await post(JSON.stringify(valid), headers), 415, "UNSUPPORTED_MEDIA_TYPE");
    expect(body.error.message).toMatch(/Content-Type: application\/json/);
    expect(loads).toBe(before); // the recommender was never asked
    expect((await post(JSON.stringify(valid))).status).toBe(200);
  });

  it("accepts JSON media types with parameters and +json types", async () => {
    for (const type of ["application/json; charset=utf-8", "Application/JSON", "application/vnd.molorec+json"])
      expect((await post(JSON.stringify(valid), { "content-type": type })).status).toBe(200);
    expect(isJsonMediaType("application/jsonp")).toBe(false);
    expect(isJsonMediaType("text/json")).toBe(false);
  });

  it("refuses an oversized body by Content-Length with 413", async () => {
    const big = JSON.stringify({ ...valid, candidates: Array.from({ length: 20_000 }, (_, i) => `candidate title ${i}`) });
    const res = await post(big);
    const body = await expectError(res, 413, "BODY_TOO_LARGE");
    expect(body.error.details).toEqual({ limit: 256 * 1024 });
    expect(res.headers.get("connection")).toBeNull(); // drained: the connection can carry the next request
  });

  it("keeps no more than the limit of a streamed body and stops reading an endless one", async () => {
    let pulled = 0;
    const chunk = new TextEncoder().encode(`${"x".repeat(16 * 1024)}`);
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(chunk);
      },
    });
    const res = await app.request(
      new Request("http://x/v1/recommend", {
        method: "POST",
        body: endless,
        headers: { "content-length": "10" },
        duplex: "half",
      } as RequestInit),
    );
    await expectError(res, 413, "BODY_TOO_LARGE");
    // the rest is left on the wire: a keep-alive client must not reuse the connection
    expect(res.headers.get("connection")).toBe("close");
    // drained up to 16 × the limit (so the connection stays usable), then cancelled
    expect(pulled).toBeGreaterThan(256 / 16);
    expect(pulled).toBeLessThanOrEqual((16 * 256) / 16 + 3);
    expect((await post(JSON.stringify(valid))).status).toBe(200);
  });

  it("refuses a declared Content-Length far over the limit without reading the body", async () => {
    let pulled = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled++;
        controller.enqueue(new Uint8Array(16 * 1024));
      },
    });
    const res = await app.request(
      new Request("http://x/v1/recommend", {
        method: "POST",
        body: endless,
        headers: { "content-length": String(1 << 30) },
        duplex: "half",
      } as RequestInit),
    );
    await expectError(res, 413, "BODY_TOO_LARGE");
    expect(pulled).toBeLessThanOrEqual(1);
    expect(res.headers.get("connection")).toBe("close");
  });

  it("answers 405 for other methods and 404 JSON for unknown routes", async () => {
    const r405 = await app.request("/v1/recommend", { method: "GET" });
    await expectError(r405, 405, "METHOD_NOT_ALLOWED");
    expect(r405.headers.get("allow")).toBe("POST");
    await expectError(await app.request("/v1/pack", { method: "POST" }), 405, "METHOD_NOT_ALLOWED");
    await expectError(await app.request("/v1/health", { method: "DELETE" }), 405, "METHOD_NOT_ALLOWED");
    await expectError(await app.request("/v2/recommend", { method: "POST" }), 404, "NOT_FOUND");
    await expectError(await app.request("/"), 404, "NOT_FOUND");
  });
});

describe("GET /v1/health and /v1/pack", () => {
  it("reports readiness, backend and the caller's counters", async () => {
    const res = await app.request("/v1/health");
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({
      status: "ok",
      pack: "tiny-fixture",
      backend: "onnxruntime-node(cpu)",
      loads: expect.any(Number),
    });
  });

  it("summarises the pack", async () => {
    const res = await app.request("/v1/pack");
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({
      name: "tiny-fixture",
      model: { numLayers: 2, vocabSize: 512 },
      generalAdapter: "general",
      defaultDomain: "movies",
      domains: { movies: { adapter: "domain:movies" } },
      limits: { maxCandidates: rec.limits.maxCandidates, maxBodyBytes: 256 * 1024 },
    });
    expect(Object.keys(body.adapters as object).sort()).toEqual(["domain:movies", "general"]);
  });
});

describe("errors", () => {
  it("maps coded load failures to their status and hides unexpected ones", async () => {
    const failing = (e: unknown) =>
      createApp({
        getRecommender: async () => {
          throw e;
        },
        onError: (x) => errors.push(x),
      });
    await expectError(
      await failing(new MolorecError("BACKEND_UNAVAILABLE", "no wasm module")).request("/v1/health"),
      503,
      "BACKEND_UNAVAILABLE",
    );
    await expectError(await failing(new MolorecError("MALFORMED_PACK", "bad manifest")).request("/v1/pack"), 500, "MALFORMED_PACK");
    const internal = await expectError(await failing(new TypeError("x is undefined")).request("/v1/health"), 500, "INTERNAL_ERROR");
    expect(internal.error.message).not.toMatch(/x is undefined/);
    expect(errors.at(-1)).toBeInstanceOf(TypeError);
  });
});
