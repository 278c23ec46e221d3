// The hostile-input suite against the real server: hostile requests (test/hostile/requests.ts)
// over HTTP, what Node itself refuses (slow clients, oversized headers, broken HTTP), hostile
// packs (test/hostile/packs.ts, links, FIFOs) as start-up errors, and the real binaries
// (molorec-server, molorec) on both: coded errors, the process keeps serving, SIGTERM stops it.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import type { InferenceBackend, RecommendResponse } from "@molorec/core";
import { nodeBackend } from "@molorec/runtime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostilePacks, type PackFiles, protoNamedPack } from "../../../test/hostile/packs.js";
import { hostileRequests, streamedBody } from "../../../test/hostile/requests.js";
import { type MolorecServer, startServer } from "../src/server.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const fixture = join(root, "test/fixtures/tiny-pack");
const serverBin = join(root, "apps/server/bin/molorec-server.js");
const cliBin = join(root, "packages/runtime-node/bin/molorec.js");
const valid = {
  history: ["The Silent River (1994)", "Electric Garden (2001)"],
  candidates: ["Broken Mirror (1999)", "Wild Orchestra (2004)", "Frozen Letter (1968)"],
};
const cpu = (): InferenceBackend => nodeBackend({ executionProvider: "cpu", intraOpNumThreads: 1, log: () => {} });
const temps: string[] = [];

function readPack(dir: string): PackFiles {
  const walk = (d: string): string[] =>
    readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
  return Object.fromEntries(walk(dir).map((f) => [relative(dir, f).split("\\").join("/"), new Uint8Array(readFileSync(f))]));
}

function writePack(files: PackFiles): string {
  const dir = mkdtempSync(join(tmpdir(), "molorec-hostile-"));
  temps.push(dir);
  for (const [path, bytes] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), bytes);
  }
  return dir;
}

const post = (url: string, body: unknown) =>
  fetch(`${url}/v1/recommend`, { method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" } });

/** The valid request's answer equals the reference: same ranking, scores within 1e-5. */
async function expectRightAnswer(url: string, want: RecommendResponse, body: unknown = valid): Promise<void> {
  const res = await post(url, body);
  expect(res.status).toBe(200);
  const got = (await res.json()) as RecommendResponse;
  expect(got.ranked.map((r) => r.index)).toEqual(want.ranked.map((r) => r.index));
  got.ranked.forEach((r, i) => expect(Math.abs(r.score - want.ranked[i]!.score)).toBeLessThanOrEqual(1e-5));
}

/** Writes `chunks` on a raw connection and keeps it open; resolves with all it read when the server closes it. */
function raw(port: number, chunks: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let got = "";
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open; read so far: ${got}`));
    }, 20_000);
    socket.on("data", (d) => (got += d));
    socket.on("error", () => {}); // a reset after the answer is fine
    socket.on("close", () => {
      clearTimeout(guard);
      resolve(got);
    });
    socket.on("connect", () => {
      for (const c of chunks) socket.write(c);
    });
  });
}

function jsonError(response: string): { status: number; code: string; message: string } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1]);
  expect(response).toMatch(/\r\ncontent-type: application\/json\r\n/i);
  const body = JSON.parse(response.slice(response.indexOf("\r\n\r\n") + 4)) as { error: { code: string; message: string } };
  return { status, ...body.error };
}

afterAll(() => {
  for (const t of temps) rmSync(t, { recursive: true, force: true });
});

describe("hostile requests against molorec-server", () => {
  let server: MolorecServer;
  let reference: RecommendResponse;
  const requestTimeoutMs = 1500;
  beforeAll(async () => {
    server = await startServer({ packs: [{ dir: fixture }], port: 0, backend: cpu, log: () => {}, requestTimeoutMs });
    reference = await server.packs[0]!.recommender.recommend(valid);
  });
  afterAll(() => server?.shutdown());

  it.each(hostileRequests(valid).map((c) => [c.name, c] as const))(
    "answers %s with its coded error, then the right answer",
    async (_name, c) => {
      const res = await c.send(server.url);
      expect(res.status).toBe(c.status);
      expect(res.headers.get("content-type")).toMatch(/^application\/json/);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(c.code);
      await expectRightAnswer(server.url, reference);
    },
  );

  it("answers a body streamed past 16 × the limit with 413, then the right answer", async () => {
    const res = await fetch(`${server.url}/v1/recommend`, {
      method: "POST",
      body: streamedBody(20 * 1024 * 1024),
      headers: { "content-type": "application/json" },
      duplex: "half",
    } as RequestInit).catch((e: unknown) => e);
    // Past the drain cap the server stops reading; the client may see its answer or a reset.
    if (res instanceof Response) {
      expect(res.status).toBe(413);
      expect(res.headers.get("connection")).toBe("close");
      const body = (await res.json().catch(() => null)) as { error: { code: string } } | null;
      if (body) expect(body.error.code).toBe("BODY_TOO_LARGE");
    }
    await expectRightAnswer(server.url, reference);
  });

  it("refuses an unknown or ../ pack name with 400", async () => {
    for (const name of ["../demo", "__proto__", "toString"]) {
      const res = await fetch(`${server.url}/v1/recommend`, {
        method: "POST",
        body: JSON.stringify(valid),
        headers: { "content-type": "application/json", "x-molorec-pack": name },
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe("INVALID_REQUEST");
    }
    await expectRightAnswer(server.url, reference);
  });

  it.each<[string, number, string, string[]]>([
    [
      "a body that stops coming",
      408,
      "REQUEST_TIMEOUT",
      ["POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"],
    ],
    ["headers that stop coming", 408, "REQUEST_TIMEOUT", ["POST /v1/recommend HTTP/1.1\r\nHost: x\r\n"]],
    ["a 20 KB header", 431, "HEADERS_TOO_LARGE", [`GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`]],
    ["garbage instead of HTTP", 400, "INVALID_REQUEST", ["HELLO\r\n\r\n"]],
    [
      "a bad chunk size",
      400,
      "INVALID_REQUEST",
      ["POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    ],
  ])("answers %s with a JSON %i %s, then the right answer", async (_name, status, code, chunks) => {
    const err = jsonError(await raw(server.port, chunks));
    expect(err.status).toBe(status);
    expect(err.code).toBe(code);
    expect(err.message.length).toBeGreaterThan(10);
    await expectRightAnswer(server.url, reference);
  });
});

describe("hostile packs are start-up errors of molorec-server", () => {
  const files = readPack(fixture);

  it.each(hostilePacks(files).map((p) => [p.name, p] as const))("refuses %s", async (_name, p) => {
    const dir = writePack(p.files);
    await expect(startServer({ packs: [{ dir }], port: 0, backend: cpu, log: () => {} })).rejects.toMatchObject({
      name: "MolorecError",
      code: p.code,
      message: expect.stringMatching(p.message),
    });
  });

  it.each([
    ["a tokenizer linked from outside the pack", "tokenizer.json", "link"],
    ["an adapter folder linked from outside the pack", "adapters/general", "link"],
    ["a FIFO as model.onnx", "model.onnx", "fifo"],
  ])("refuses %s", async (_name, path, kind) => {
    const dir = writePack(files);
    const outside = writePack(files);
    rmSync(join(dir, path), { recursive: true });
    if (kind === "link") symlinkSync(join(outside, path), join(dir, path));
    else execFileSync("mkfifo", [join(dir, path)]);
    await expect(startServer({ packs: [{ dir }], port: 0, backend: cpu, log: () => {} })).rejects.toMatchObject({ code: "MALFORMED_PACK" });
  });

  it("serves a pack whose domain and adapter are called __proto__ as the fixture serves movies", async () => {
    const server = await startServer({ packs: [{ dir: writePack(protoNamedPack(files)) }], port: 0, backend: cpu, log: () => {} });
    const reference = await startServer({ packs: [{ dir: fixture }], port: 0, backend: cpu, log: () => {} });
    try {
      for (const mixture of ["domain", "wa", "adaptive"]) {
        const want = (await (await post(reference.url, { ...valid, domain: "movies", mixture })).json()) as RecommendResponse;
        await expectRightAnswer(server.url, want, { ...valid, domain: "__proto__", mixture });
      }
      const health = (await (await fetch(`${server.url}/v1/health`)).json()) as { packs: Array<{ domains: string[] }> };
      expect(health.packs[0]!.domains).toEqual(["__proto__"]);
    } finally {
      await Promise.all([server.shutdown(), reference.shutdown()]);
    }
  });
});

/** Runs a binary to its end (killed after `limitMs`: a hang fails the test), with its exit code and stderr. */
function run(bin: string, args: string[], limitMs = 60_000): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    let stdout = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.stdout.on("data", (d) => (stdout += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, stdout });
    });
  });
}

describe("the binaries", () => {
  const files = readPack(fixture);
  const packs = hostilePacks(files);
  const pick = (name: string) => packs.find((p) => p.name === name)!;

  it.each(["a vocabulary of 10¹²", "10⁹ layers", "more layers than the graph", "all-NaN weights", "a truncated model.onnx"])(
    "molorec-server exits 1 with a coded start-up error on %s",
    async (name) => {
      const p = pick(name);
      const { code, stderr } = await run(serverBin, ["--pack", writePack(p.files), "--port", "0", "--ep", "cpu"]);
      expect(code).toBe(1);
      expect(stderr).toMatch(new RegExp(`molorec-server: ${p.code}: `));
      expect(stderr).not.toMatch(/\n\s+at /); // no stack
    },
  );

  it("molorec-server answers hostile requests, serves, and stops on SIGTERM", async () => {
    const child: ChildProcess = spawn(process.execPath, [serverBin, "--pack", fixture, "--port", "0", "--ep", "cpu", "--threads", "1"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    try {
      let log = "";
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "listening" line: ${log}`)), 60_000);
        child.stderr!.on("data", (d) => {
          log += d;
          const m = /listening on (http:\/\/\S+)/.exec(log);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
      });
      const reference = (await (await post(url, valid)).json()) as RecommendResponse;
      for (const c of hostileRequests(valid).slice(0, 12)) {
        const res = await c.send(url);
        expect([c.name, res.status]).toEqual([c.name, c.status]);
        await res.body?.cancel();
      }
      await expectRightAnswer(url, reference);
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it.each([
    ["toString", []],
    ["__proto__", ["--mixture", "domain"]],
    ["constructor", ["--mixture", "adaptive"]],
  ])("molorec recommend --domain %s exits 1 with UNKNOWN_DOMAIN, no stack", async (domain, extra) => {
    const { code, stderr } = await run(cliBin, [
      "recommend",
      "--pack",
      fixture,
      "--request",
      join(root, "examples/request.json"),
      "--domain",
      domain,
      "--ep",
      "cpu",
      ...extra,
    ]);
    expect(code).toBe(1);
    expect(stderr).toMatch(/molorec: UNKNOWN_DOMAIN: /);
    expect(stderr).not.toMatch(/\n\s+at /);
  });

  it.each(["a vocabulary of 10¹²", "a tensor without a shape", "a KV cache layout the graph does not have"])(
    "molorec recommend exits 1 with a coded error on %s",
    async (name) => {
      const p = pick(name);
      const { code, stderr } = await run(cliBin, [
        "recommend",
        "--pack",
        writePack(p.files),
        "--request",
        join(root, "examples/request.json"),
        "--ep",
        "cpu",
      ]);
      expect(code).toBe(1);
      expect(stderr).toMatch(new RegExp(`molorec: ${p.code}: `));
    },
  );
});
