import { EventEmitter } from "node:events";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { InferenceBackend, RecommendResponse } from "@molorec/core";
import { nodeBackend } from "@molorec/runtime-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
// The `molorec` CLI itself (runtime-node), to check that the server answers as it does.
import { main as molorecCli } from "../../../packages/runtime-node/src/cli.js";
import { parseServerArgs } from "../src/cli.js";
import { handleSignals, PACK_HEADER, startServer, type MolorecServer, type ServerOptions } from "../src/server.js";
import { parsePrometheus, sampleValue } from "./prometheus.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const fixture = join(root, "test/fixtures/tiny-pack");
const golden = JSON.parse(readFileSync(join(root, "test/fixtures/tiny-pack.golden.json"), "utf8")) as {
  cases: Array<{
    request: { history: string[]; candidates: string[]; domain: string; mixture: unknown };
    scores: number[];
    ranking: number[];
  }>;
};
const cases = golden.cases.map((c) => c.request);

const cpu = (): InferenceBackend => nodeBackend({ executionProvider: "cpu", intraOpNumThreads: 1, log: () => {} });

/** A CPU backend whose model runs wait while the gate is held: requests stay in flight on demand. */
function gatedBackend() {
  let gate: Promise<void> = Promise.resolve();
  let open = () => {};
  let runs = 0;
  const backend = (): InferenceBackend => {
    const inner = cpu();
    return {
      name: "gated cpu",
      async createSession(model, options) {
        const s = await inner.createSession(model, options);
        return {
          inputNames: s.inputNames,
          outputNames: s.outputNames,
          async run(feeds, names) {
            runs++;
            await gate;
            return s.run(feeds, names);
          },
          release: () => s.release(),
        };
      },
    };
  };
  return {
    backend,
    runs: () => runs,
    hold() {
      gate = new Promise((r) => (open = r));
    },
    release: () => open(),
  };
}

async function start(over: Partial<ServerOptions> = {}, lines: string[] = []): Promise<MolorecServer> {
  return startServer({ packs: [{ dir: fixture }], port: 0, host: "127.0.0.1", backend: cpu, log: (l) => lines.push(l), ...over });
}

const post = (server: MolorecServer, body: BodyInit, headers: Record<string, string> = {}, path = "/v1/recommend") =>
  fetch(`${server.url}${path}`, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });

async function recommend(server: MolorecServer, body: unknown, headers: Record<string, string> = {}): Promise<RecommendResponse> {
  const res = await post(server, JSON.stringify(body), headers);
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  return (await res.json()) as RecommendResponse;
}

function expectSameAnswer(got: RecommendResponse, want: RecommendResponse, tol = 1e-5): void {
  const strip = ({ ranked: _r, entropy: _e, ...rest }: RecommendResponse) => rest;
  expect(strip(got)).toEqual(strip(want));
  expect(got.ranked.map((r) => r.index)).toEqual(want.ranked.map((r) => r.index));
  got.ranked.forEach((r, i) => expect(Math.abs(r.score - want.ranked[i]!.score)).toBeLessThanOrEqual(tol));
  expect(Math.abs(got.entropy - want.entropy)).toBeLessThanOrEqual(tol);
}

describe("molorec-server on the fixture pack", () => {
  let server: MolorecServer;
  const lines: string[] = [];
  beforeAll(async () => {
    server = await start({ maxBatch: 8, maxWaitMs: 25, maxBodyBytes: 64 * 1024, limits: { maxTitleChars: 300 } }, lines);
  });
  afterAll(() => server?.shutdown());

  it("logs the execution provider, the packs and the address", () => {
    expect(lines.some((l) => l.includes("pack tiny-fixture from") && l.includes("domains movies"))).toBe(true);
    expect(lines.some((l) => l.startsWith(`molorec-server: listening on ${server.url}`))).toBe(true);
  });

  it.each(["wa", "adaptive", { lambda: 0.3 }])("ranks a request as the molorec CLI does (mixture %j)", async (mixture) => {
    const request = { ...cases[0]!, mixture };
    const dir = mkdtempSync(join(tmpdir(), "molorec-server-"));
    writeFileSync(join(dir, "req.json"), JSON.stringify(request));
    const out: string[] = [];
    const log = vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
    const err = vi.spyOn(console, "error").mockImplementation(() => {});
    try {
      expect(await molorecCli(["recommend", "--pack", fixture, "--request", join(dir, "req.json"), "--json", "--ep", "cpu"])).toBe(0);
    } finally {
      log.mockRestore();
      err.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
    const cli = JSON.parse(out.join("\n")) as RecommendResponse;
    const http = await recommend(server, request);
    expectSameAnswer(http, cli, 1e-9);
  });

  const valid = { history: cases[0]!.history, candidates: cases[0]!.candidates.slice(0, 3) };
  const huge = JSON.stringify({ ...valid, candidates: Array.from({ length: 5000 }, (_, i) => `a long candidate title number ${i}`) });
  it.each<[string, BodyInit | (() => BodyInit), number, string]>([
    ["malformed JSON", '{"history": [', 400, "INVALID_REQUEST"],
    ["an empty body", "", 400, "INVALID_REQUEST"],
    ["a JSON string", '"hello"', 400, "INVALID_REQUEST"],
    ["history as a string", JSON.stringify({ ...valid, history: "Heat (1995)" }), 400, "INVALID_REQUEST"],
    ["numbers as candidates", JSON.stringify({ ...valid, candidates: [1, 2] }), 400, "INVALID_REQUEST"],
    ["topK as a string", JSON.stringify({ ...valid, topK: "3" }), 400, "INVALID_REQUEST"],
    ["an unknown field (a pack in the body)", JSON.stringify({ ...valid, pack: "tiny-fixture" }), 400, "INVALID_REQUEST"],
    ["a title over the limit", JSON.stringify({ ...valid, candidates: ["x".repeat(301)] }), 400, "INVALID_REQUEST"],
    [
      "too many candidates",
      JSON.stringify({ ...valid, candidates: Array.from({ length: 101 }, (_, i) => `item ${i}`) }),
      400,
      "TOO_MANY_CANDIDATES",
    ],
    ["an empty history", JSON.stringify({ ...valid, history: [] }), 400, "EMPTY_HISTORY"],
    ["a λ out of range", JSON.stringify({ ...valid, mixture: { lambda: 2 } }), 400, "INVALID_MIXTURE"],
    ["an unknown domain", JSON.stringify({ ...valid, domain: "cars" }), 404, "UNKNOWN_DOMAIN"],
    ["a huge body (Content-Length)", huge, 413, "BODY_TOO_LARGE"],
    [
      "a huge body (chunked, no Content-Length)",
      () =>
        new ReadableStream<Uint8Array>({
          start(c) {
            const bytes = new TextEncoder().encode(huge);
            for (let i = 0; i < bytes.length; i += 16 * 1024) c.enqueue(bytes.subarray(i, i + 16 * 1024));
            c.close();
          },
        }),
      413,
      "BODY_TOO_LARGE",
    ],
  ])("answers %s with %i and keeps serving", async (_name, body, status, code) => {
    const b = typeof body === "function" ? body() : body;
    const res = await fetch(`${server.url}/v1/recommend`, {
      method: "POST",
      body: b,
      headers: { "content-type": "application/json" },
      ...(b instanceof ReadableStream ? { duplex: "half" } : {}),
    } as RequestInit);
    expect(res.status).toBe(status);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
    const ok = await recommend(server, valid);
    expect(ok.ranked).toHaveLength(3);
  });

  it("answers unknown routes and methods with 404 / 405", async () => {
    expect((await fetch(`${server.url}/v2/nothing`)).status).toBe(404);
    const r = await fetch(`${server.url}/v1/recommend`);
    expect(r.status).toBe(405);
    expect(r.headers.get("allow")).toBe("POST");
  });

  it("scores concurrent requests in shared batches, with the answers of unbatched scoring", async () => {
    const rec = server.packs[0]!.recommender;
    const mixtures: unknown[] = ["wa", "adaptive", "general", "domain", { lambda: 0.8 }, "base", "calibrated"];
    const requests = Array.from({ length: 14 }, (_, i) => {
      const c = cases[i % cases.length]!;
      return {
        history: c.history.slice(0, 1 + (i % c.history.length)),
        candidates: c.candidates.slice(0, 1 + (i % c.candidates.length)),
        mixture: mixtures[i % mixtures.length],
      };
    });
    const reference: RecommendResponse[] = [];
    for (const r of requests) reference.push(await rec.recommend(r)); // unbatched, one at a time
    const before = parsePrometheus(await (await fetch(`${server.url}/metrics`)).text());
    const answers = await Promise.all(requests.map((r) => recommend(server, r)));
    answers.forEach((a, i) => expectSameAnswer(a, reference[i]!));
    const after = parsePrometheus(await (await fetch(`${server.url}/metrics`)).text());
    const batches =
      sampleValue(after, "molorec_batch_size_count", { pack: "tiny-fixture" }) -
      sampleValue(before, "molorec_batch_size_count", { pack: "tiny-fixture" });
    const scored =
      sampleValue(after, "molorec_batch_size_sum", { pack: "tiny-fixture" }) -
      sampleValue(before, "molorec_batch_size_sum", { pack: "tiny-fixture" });
    expect(scored).toBe(14);
    expect(batches).toBeLessThan(14); // some requests shared a model pass
  });

  it("serves /metrics as valid Prometheus text with requests, latency, batches and queue depth", async () => {
    await recommend(server, valid);
    await fetch(`${server.url}/nope`);
    const res = await fetch(`${server.url}/metrics`);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const samples = parsePrometheus(await res.text());
    expect(sampleValue(samples, "molorec_http_requests_total", { route: "/v1/recommend", method: "POST", status: "200" })).toBeGreaterThan(
      0,
    );
    expect(sampleValue(samples, "molorec_http_requests_total", { route: "/v1/recommend", status: "413" })).toBe(2);
    expect(sampleValue(samples, "molorec_http_requests_total", { route: "other", status: "404" })).toBeGreaterThan(0);
    expect(sampleValue(samples, "molorec_http_request_duration_seconds_count", { route: "/v1/recommend" })).toBeGreaterThan(0);
    expect(samples.some((s) => s.name === "molorec_queue_depth" && s.labels.pack === "tiny-fixture")).toBe(true);
    expect(samples.some((s) => s.name === "molorec_batch_size_bucket" && s.labels.le === "8")).toBe(true);
    expect(sampleValue(samples, "molorec_pack_info", { pack: "tiny-fixture" })).toBe(1);
  });

  it("reports health and packs", async () => {
    const health = (await (await fetch(`${server.url}/v1/health`)).json()) as Record<string, unknown>;
    expect(health).toMatchObject({
      status: "ok",
      pack: "tiny-fixture",
      draining: false,
      packs: [{ name: "tiny-fixture", domains: ["movies"], queueDepth: 0 }],
    });
    const packs = (await (await fetch(`${server.url}/v1/packs`)).json()) as { default: string; packs: Array<{ name: string }> };
    expect(packs.default).toBe("tiny-fixture");
    expect((await (await fetch(`${server.url}/v1/pack?pack=tiny-fixture`)).json()) as object).toMatchObject({ name: "tiny-fixture" });
  });
});

describe("several packs", () => {
  let server: MolorecServer;
  let dir: string;
  beforeAll(async () => {
    // A second pack: the fixture with its domain renamed, so that domains tell the packs apart.
    dir = mkdtempSync(join(tmpdir(), "molorec-pack-"));
    cpSync(fixture, dir, { recursive: true });
    const manifest = JSON.parse(readFileSync(join(dir, "molorec.json"), "utf8"));
    manifest.name = "books-pack";
    manifest.domains = { books: manifest.domains.movies };
    manifest.defaultDomain = "books";
    writeFileSync(join(dir, "molorec.json"), JSON.stringify(manifest));
    server = await start({ packs: [{ dir: fixture }, { dir }, { dir: fixture, name: "fixture-2" }] });
  });
  afterAll(async () => {
    await server?.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  it("routes by header, query and domain; the default pack otherwise", async () => {
    const base = { history: cases[0]!.history, candidates: cases[0]!.candidates };
    expect((await recommend(server, base)).domain).toBe("movies");
    expect((await recommend(server, { ...base, domain: "books" })).domain).toBe("books");
    expect((await recommend(server, base, { [PACK_HEADER]: "books-pack" })).domain).toBe("books");
    const byQuery = await fetch(`${server.url}/v1/recommend?pack=books-pack`, {
      method: "POST",
      body: JSON.stringify(base),
      headers: { "content-type": "application/json" },
    });
    expect(((await byQuery.json()) as RecommendResponse).domain).toBe("books");
    expect((await recommend(server, base, { [PACK_HEADER]: "fixture-2" })).domain).toBe("movies");
    const health = (await (await fetch(`${server.url}/v1/health`, { headers: { [PACK_HEADER]: "books-pack" } })).json()) as {
      pack: string;
    };
    expect(health.pack).toBe("books-pack");
  });

  it("refuses an unknown pack (400) and a domain no pack has (404)", async () => {
    const base = { history: cases[0]!.history, candidates: cases[0]!.candidates };
    const a = await post(server, JSON.stringify(base), { [PACK_HEADER]: "nope" });
    expect(a.status).toBe(400);
    expect(((await a.json()) as { error: { details: { known: string[] } } }).error.details.known).toEqual([
      "tiny-fixture",
      "books-pack",
      "fixture-2",
    ]);
    const b = await post(server, JSON.stringify({ ...base, domain: "cars" }));
    expect(b.status).toBe(404);
    const c = await post(server, JSON.stringify({ ...base, domain: "books" }), { [PACK_HEADER]: "tiny-fixture" });
    expect(c.status).toBe(404);
    expect((await fetch(`${server.url}/v1/health?pack=nope`)).status).toBe(400);
  });
});

describe("back-pressure", () => {
  it("answers 503 + Retry-After only once the queue is full, and serves again after", async () => {
    const gate = gatedBackend();
    const server = await start({ backend: gate.backend, maxBatch: 1, maxWaitMs: 0, maxQueue: 2 });
    try {
      const body = JSON.stringify({ history: cases[0]!.history, candidates: cases[0]!.candidates.slice(0, 2) });
      gate.hold();
      const accepted = [post(server, body)];
      await vi.waitFor(() => expect(server.packs[0]!.batcher.inFlight).toBe(1));
      accepted.push(post(server, body), post(server, body));
      await vi.waitFor(() => expect(server.packs[0]!.batcher.depth).toBe(2));
      const full = await post(server, body);
      expect(full.status).toBe(503);
      expect(Number(full.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(await full.json()).toMatchObject({
        error: { code: "BACKEND_UNAVAILABLE", details: { reason: "queue_full", queueDepth: 2, maxQueue: 2 } },
      });
      gate.release();
      expect((await Promise.all(accepted)).map((r) => r.status)).toEqual([200, 200, 200]);
      expect((await post(server, body)).status).toBe(200);
      const samples = parsePrometheus(await (await fetch(`${server.url}/metrics`)).text());
      expect(sampleValue(samples, "molorec_queue_rejections_total", { reason: "queue_full" })).toBe(1);
      expect(sampleValue(samples, "molorec_http_requests_total", { route: "/v1/recommend", status: "503" })).toBe(1);
    } finally {
      gate.release();
      await server.shutdown();
    }
  });

  it("answers 503 when a queued request waits past the request timeout", async () => {
    const gate = gatedBackend();
    const server = await start({ backend: gate.backend, maxBatch: 1, maxWaitMs: 0, requestTimeoutMs: 200 });
    try {
      const body = JSON.stringify({ history: cases[0]!.history, candidates: cases[0]!.candidates.slice(0, 2) });
      gate.hold();
      const res = await post(server, body);
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ error: { details: { reason: "timeout" } } });
    } finally {
      gate.release();
      await server.shutdown();
    }
  });
});

describe("graceful shutdown", () => {
  it("on SIGTERM stops accepting, lets the in-flight request finish, then exits 0", async () => {
    const gate = gatedBackend();
    const lines: string[] = [];
    const server = await start({ backend: gate.backend, maxBatch: 4, maxWaitMs: 0, shutdownGraceMs: 0 }, lines);
    const signals = new EventEmitter();
    const exited = new Promise<number>((resolve) => handleSignals(server, { signals, exit: resolve, log: (l) => lines.push(l) }));
    const body = JSON.stringify({ history: cases[0]!.history, candidates: cases[0]!.candidates });
    gate.hold();
    const inFlight = post(server, body);
    await vi.waitFor(() => expect(server.packs[0]!.batcher.inFlight).toBe(1));
    signals.emit("SIGTERM");
    expect(server.draining).toBe(true);
    // No new connections while it drains.
    await expect(fetch(`${server.url}/v1/health`)).rejects.toThrow();
    let exitCode: number | null = null;
    void exited.then((c) => (exitCode = c));
    await new Promise((r) => setTimeout(r, 100));
    expect(exitCode).toBeNull(); // still waiting for the request
    gate.release();
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(res.headers.get("connection")).toBe("close");
    expect(((await res.json()) as RecommendResponse).ranked).toHaveLength(cases[0]!.candidates.length);
    expect(await exited).toBe(0);
    expect(lines.some((l) => l.includes("SIGTERM: draining (not accepting connections); finishing 1 in-flight"))).toBe(true);
    expect(lines.some((l) => l.includes("stopped (every in-flight request was answered)"))).toBe(true);
  });
});

describe("graceful shutdown, grace period", () => {
  it("answers connections made in the grace period (connection: close), then stops listening", async () => {
    // A grace period longer than a cold first scoring run on a busy CI machine (the two requests
    // below must both land inside it; with 400 ms a loaded 2-core run refused the second).
    const server = await start({ maxBatch: 4, maxWaitMs: 0, shutdownGraceMs: 2500 });
    const stopped = server.shutdown("test");
    // A client that connected just as the signal came (e.g. still in the accept queue) is served.
    const res = await post(server, JSON.stringify({ history: cases[0]!.history, candidates: cases[0]!.candidates }));
    expect(res.status).toBe(200);
    expect(res.headers.get("connection")).toBe("close");
    const health = await fetch(`${server.url}/v1/health`);
    expect(health.status).toBe(503); // balancers stop routing here
    await stopped;
    await expect(fetch(`${server.url}/v1/health`)).rejects.toThrow();
  });
});

describe("command line", () => {
  it("parses flags, repeated packs and names", () => {
    const o = parseServerArgs(
      [
        "--pack",
        "a=/x/a",
        "--pack",
        "/x/b",
        "--port",
        "0",
        "--ep",
        "cpu",
        "--max-batch",
        "1",
        "--max-wait-ms",
        "0",
        "--max-queue",
        "3",
        "--max-candidates",
        "20",
      ],
      {},
    )!;
    expect(o.packs).toEqual([{ name: "a", dir: "/x/a" }, { dir: "/x/b" }]);
    expect(o).toMatchObject({
      port: 0,
      host: "127.0.0.1",
      executionProvider: "cpu",
      maxBatch: 1,
      maxWaitMs: 0,
      maxQueue: 3,
      limits: { maxCandidates: 20 },
    });
    expect(parseServerArgs(["--help"], {})).toBeNull();
    expect(() => parseServerArgs(["--ep", "tpu"], {})).toThrow(/--ep/);
    expect(() => parseServerArgs(["--max-batch", "0"], {})).toThrow(/--max-batch/);
  });

  it("defaults to $MOLOREC_PACKS, then packs/demo, then the fixture pack", () => {
    expect(parseServerArgs([], { MOLOREC_PACKS: "/p/one,/p/two" })!.packs).toEqual([{ dir: "/p/one" }, { dir: "/p/two" }]);
    const dirs = parseServerArgs([], {})!.packs.map((p) => p.dir);
    expect(dirs).toHaveLength(1);
    expect(dirs[0]).toMatch(/packs\/demo$|test\/fixtures\/tiny-pack$/);
  });
});
