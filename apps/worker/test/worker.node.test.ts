// The Worker as deployed: `wrangler dev` (workerd) on 127.0.0.1, driven by real fetches, and
// compared with the Node runtime on the same pack and requests — here the fixture pack (golden
// scores of transformers + PEFT); the default config's trained pack: edge-pack.node.test.ts.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createRecommender, type RecommendResponse, type Recommender } from "@molorec/core";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostilePacks } from "../../../test/hostile/packs.js";
import { hostileRequests, streamedBody } from "../../../test/hostile/requests.js";
import { configForPack, memoryOf, startWranglerDev, type WranglerDev } from "./wrangler-dev.mjs";

const fixture = fileURLToPath(new URL("../../../test/fixtures/tiny-pack", import.meta.url));
const golden = JSON.parse(await readFile(new URL("../../../test/fixtures/tiny-pack.golden.json", import.meta.url), "utf8")) as {
  cases: Array<{ request: Record<string, unknown>; scores: number[]; ranking: number[] }>;
};
const request = { ...golden.cases.find((c) => (c.request.history as string[]).length > 10)!.request, mixture: "calibrated" };

let dev: WranglerDev;
/** The Worker serving a pack whose manifest claims a vocabulary of 10¹² (it spun the CPU forever). */
let hostile: WranglerDev;
const temp = mkdtempSync(join(tmpdir(), "molorec-worker-hostile-"));
/** wrangler.jsonc's Worker with the fixture pack as its static assets (the default is packs/edge). */
const fixtureConfig = configForPack(fixture, mkdtempSync(join(temp, "fixture-")));

/** The fixture pack with its manifest's vocabulary set to 10¹², written under `temp`; returns the folder. */
function writeHostilePack(): string {
  const walk = (d: string): string[] =>
    readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
  const files = Object.fromEntries(walk(fixture).map((f) => [relative(fixture, f).split("\\").join("/"), new Uint8Array(readFileSync(f))]));
  const pack = hostilePacks(files).find((p) => p.name === "a vocabulary of 10¹²")!;
  const dir = join(temp, "pack");
  for (const [path, bytes] of Object.entries(pack.files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), bytes);
  }
  return dir;
}
let node: Recommender;
const memory: Record<string, number> = {};

async function post(body: BodyInit, init: RequestInit = {}): Promise<Response> {
  return fetch(`${dev.url}/v1/recommend`, { method: "POST", body, headers: { "content-type": "application/json" }, ...init });
}

function expectSameAnswer(got: RecommendResponse, want: RecommendResponse): void {
  expect(got.ranked.map((r) => r.index)).toEqual(want.ranked.map((r) => r.index));
  got.ranked.forEach((r, i) => {
    const w = want.ranked[i]!;
    expect(Math.abs(r.score - w.score)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(w.score)));
    expect(Math.abs(r.probability - w.probability)).toBeLessThanOrEqual(1e-4);
  });
  expect(got.entropy).toBeCloseTo(want.entropy, 4);
  expect(got.mixture).toEqual(want.mixture);
  expect(got.promptTokens).toBe(want.promptTokens);
}

beforeAll(async () => {
  const [a, n, h] = await Promise.allSettled([
    startWranglerDev({ configPath: fixtureConfig }),
    loadPackFromDir(fixture).then((pack) => createRecommender({ backend: nodeBackend({ executionProvider: "cpu", log: () => {} }), pack })),
    startWranglerDev({ configPath: configForPack(writeHostilePack(), temp) }),
  ]);
  if (a.status === "fulfilled") dev = a.value;
  if (n.status === "fulfilled") node = n.value;
  if (h.status === "fulfilled") hostile = h.value;
  for (const r of [a, n, h]) if (r.status === "rejected") throw r.reason;
});

afterAll(async () => {
  await Promise.all([dev?.stop(), hostile?.stop()]);
  await node?.close();
  rmSync(temp, { recursive: true, force: true });
  if (Object.keys(memory).length)
    console.log(
      `Worker memory, fixture pack (wasm heap and V8 heap: the isolate's; RSS: the Worker's whole workerd process, an upper bound): ${JSON.stringify(memory)}`,
    );
});

describe("wrangler dev (workerd) on 127.0.0.1", () => {
  it("answers a recommend request as the Node runtime does (ranking, scores ≤ 1e-4)", async () => {
    const pid = dev.workerdPid();
    const before = pid ? memoryOf(pid) : null;
    const res = await post(JSON.stringify(request));
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const got = (await res.json()) as RecommendResponse;
    expectSameAnswer(got, await node.recommend(request));
    const health = (await (await fetch(`${dev.url}/v1/health`)).json()) as { isolate: { wasmHeapMiB: number } };
    memory.wasmHeapAfterFirstRequestMiB = health.isolate.wasmHeapMiB;
    // The wasm heap only grows: its size is the high-water mark of the biggest part of the isolate.
    expect(health.isolate.wasmHeapMiB).toBeLessThan(64);
    // What counts against the 128 MB isolate limit: the V8 heap (JS objects and ArrayBuffers, over
    // the inspector) plus the wasm memory; the fixture pack is tiny, so far below it.
    const heap = await dev.isolateHeap();
    Object.assign(memory, { jsHeapTotalMiB: heap.totalMiB, arrayBuffersMiB: heap.backingStorageMiB });
    expect(heap.totalMiB + heap.backingStorageMiB + health.isolate.wasmHeapMiB).toBeLessThan(64);
    if (pid && before) {
      const after = memoryOf(pid);
      // The Worker's workerd process also holds workerd itself and the compiled wasm code: printed only.
      Object.assign(memory, {
        rssBeforeFirstRequestMiB: Math.round(before.rssMiB),
        peakRssAfterFirstRequestMiB: Math.round(after.peakRssMiB),
      });
    }
  });

  it("reproduces the golden scores of transformers + PEFT for every golden case", async () => {
    for (const c of golden.cases) {
      const res = await post(JSON.stringify(c.request));
      expect(res.status).toBe(200);
      const body = (await res.json()) as RecommendResponse;
      expect(body.ranked.map((r) => r.index)).toEqual(c.ranking);
      for (const r of body.ranked)
        expect(Math.abs(r.score - c.scores[r.index]!)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(c.scores[r.index]!)));
    }
  });

  const valid = JSON.stringify({ history: ["The Silent River (1994)"], candidates: ["Broken Mirror (1999)", "Wild Orchestra (2004)"] });
  const bad: Array<[string, () => Promise<Response>, number, string]> = [
    ["malformed JSON", () => post('{"history": ["a"], "candidates": ['), 400, "INVALID_REQUEST"],
    ["unknown domain", () => post(JSON.stringify({ history: ["a"], candidates: ["b"], domain: "cars" })), 404, "UNKNOWN_DOMAIN"],
    ["0 candidates", () => post(JSON.stringify({ history: ["a"], candidates: [] })), 400, "NO_CANDIDATES"],
    [
      "10,000 candidates",
      () => post(JSON.stringify({ history: ["a"], candidates: Array.from({ length: 10_000 }, (_, i) => `item ${i}`) })),
      400,
      "TOO_MANY_CANDIDATES",
    ],
    [
      "an oversized body (2 MiB)",
      () => post(JSON.stringify({ history: ["a"], candidates: ["x".repeat(2 * 1024 * 1024)] })),
      413,
      "BODY_TOO_LARGE",
    ],
    [
      "an oversized streamed body without Content-Length",
      () => {
        let sent = 0;
        const chunk = new TextEncoder().encode(" ".repeat(64 * 1024));
        const stream = new ReadableStream<Uint8Array>({
          pull(c) {
            if ((sent += chunk.byteLength) > 4 * 1024 * 1024) c.close();
            else c.enqueue(chunk);
          },
        });
        return post(stream, { duplex: "half" } as RequestInit);
      },
      413,
      "BODY_TOO_LARGE",
    ],
    ["a GET on /v1/recommend", () => fetch(`${dev.url}/v1/recommend`), 405, "METHOD_NOT_ALLOWED"],
    ["an unknown route", () => fetch(`${dev.url}/v1/nothing`), 404, "NOT_FOUND"],
  ];
  it.each(bad)("answers %s with a JSON error, then still serves", async (_name, send, status, code) => {
    const res = await send();
    expect(res.status).toBe(status);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe(code);
    expect(body.error.message).toBeTruthy();
    const ok = await post(valid);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as RecommendResponse).ranked).toHaveLength(2);
  });

  it("serves repeated requests from one isolate without reloading the model", async () => {
    const health = async () =>
      (await (await fetch(`${dev.url}/v1/health`)).json()) as { status: string; backend: string; isolate: Record<string, number> };
    const h1 = await health();
    for (let i = 0; i < 5; i++) expect((await post(valid)).status).toBe(200);
    const h2 = await health();
    expect(h1.status).toBe("ok");
    expect(h1.backend).toMatch(/^onnxruntime-web@1\.30\.0\(wasm\)$/);
    expect(h2.isolate.recommendersCreated).toBe(1);
    expect(h2.isolate.sessionsCreated).toBe(1);
    expect(h2.isolate.requests).toBeGreaterThanOrEqual(h1.isolate.requests! + 6);
    expect(h2.isolate.cacheHits).toBeGreaterThan(h1.isolate.cacheHits!);
  });

  it("summarises the pack on GET /v1/pack", async () => {
    const res = await fetch(`${dev.url}/v1/pack`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ name: "tiny-fixture", defaultDomain: "movies", limits: { maxBodyBytes: 1048576 } });
  });

  it("does not serve the pack files themselves (assets are reachable only through the Worker)", async () => {
    const res = await fetch(`${dev.url}/model.onnx`);
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
  });
});

// The hostile-input suite (test/hostile/requests.ts) against the Worker under wrangler dev: each
// request gets its coded JSON error and the next valid request the Node runtime's answer.
describe("hostile requests against the Worker (wrangler dev)", () => {
  const valid = {
    history: ["The Silent River (1994)", "Electric Garden (2001)"],
    candidates: ["Broken Mirror (1999)", "Wild Orchestra (2004)"],
  };
  const expectRightAnswer = async () => {
    const res = await post(JSON.stringify(valid));
    expect(res.status).toBe(200);
    expectSameAnswer((await res.json()) as RecommendResponse, await node.recommend(valid));
  };

  it.each(hostileRequests(valid).map((c) => [c.name, c] as const))(
    "answers %s with its coded error, then the right answer",
    async (_name, c) => {
      const res = await c.send(dev.url);
      expect(res.status).toBe(c.status);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(c.code);
      await expectRightAnswer();
    },
  );

  /** wrangler dev's ProxyWorker answered in the Worker's place (its own plain-text 503), not the Worker. */
  const answeredByWranglerProxy = async (res: Response) =>
    res.status === 503 &&
    (
      await res
        .clone()
        .text()
        .catch(() => "")
    ).startsWith("Your worker restarted mid-request");

  it("answers a body streamed past 16 × the limit with 413; the service then serves (wrangler dev's proxy may fail the next request once)", async () => {
    const big = await post(streamedBody(20 * 1024 * 1024), { duplex: "half" } as RequestInit).catch((e: unknown) => e);
    // The client is still sending when the answer comes: it may see the answer, or a reset first;
    // on a loaded machine wrangler dev's ProxyWorker (not the Worker) may answer it with its own 503.
    if (big instanceof Response && !(await answeredByWranglerProxy(big))) {
      expect(big.status).toBe(413);
      const body = (await big.json().catch(() => null)) as { error: { code: string } } | null;
      if (body) expect(body.error.code).toBe("BODY_TOO_LARGE");
    }
    // The Worker cancels the rest of the body; wrangler dev's ProxyWorker (local only, not in
    // workerd itself: docs/security.md) then answers the next request on its connection to the
    // Worker with its own plain-text 503 or a reset. Only that, at most twice, is retried.
    for (let attempt = 0; ; attempt++) {
      const res = await post(JSON.stringify(valid)).catch((e: unknown) => e);
      const wranglerProxy = !(res instanceof Response) || (await answeredByWranglerProxy(res));
      if (wranglerProxy && attempt < 2) continue;
      expect(res).toBeInstanceOf(Response);
      expect((res as Response).status).toBe(200);
      expectSameAnswer((await (res as Response).json()) as RecommendResponse, await node.recommend(valid));
      break;
    }
  });
});

describe("a hostile pack behind the Worker (wrangler dev)", () => {
  it("answers every route with the coded load error, quickly and every time", async () => {
    for (let i = 0; i < 2; i++) {
      for (const res of [
        await fetch(`${hostile.url}/v1/health`),
        await fetch(`${hostile.url}/v1/recommend`, {
          method: "POST",
          body: JSON.stringify({ history: ["a"], candidates: ["b"] }),
          headers: { "content-type": "application/json" },
        }),
      ]) {
        expect(res.status).toBe(500);
        const body = (await res.json()) as { error: { code: string; message: string } };
        expect(body.error.code).toBe("MALFORMED_PACK");
        expect(body.error.message).toMatch(/model\.vocabSize/);
      }
    }
  });
});
