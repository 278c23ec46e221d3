import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer } from "../scripts/server.mjs";

let dir: string;
let server: Awaited<ReturnType<typeof startServer>>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "molorec-serve-"));
  mkdirSync(join(dir, "site/ort/1.30.0"), { recursive: true });
  mkdirSync(join(dir, "pack"));
  writeFileSync(join(dir, "site/index.html"), "<!doctype html><p>shop</p>");
  writeFileSync(join(dir, "site/app.js"), "export {};");
  writeFileSync(join(dir, "site/ort/1.30.0/ort-wasm-simd-threaded.jsep.wasm"), new Uint8Array([0, 97, 115, 109]));
  writeFileSync(join(dir, "site/ort/1.30.0/ort-wasm-simd-threaded.jsep.mjs"), "export default 1;");
  writeFileSync(join(dir, "pack/molorec.json"), "{}");
  writeFileSync(join(dir, "secret.txt"), "no");
  server = await startServer({ root: join(dir, "site"), packDir: join(dir, "pack"), port: 0 });
});

afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("static server", () => {
  it("binds 127.0.0.1 and sends COOP/COEP on every response", async () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    for (const path of ["", "app.js", "missing"]) {
      const res = await fetch(server.url + path);
      expect(res.headers.get("cross-origin-opener-policy")).toBe("same-origin");
      expect(res.headers.get("cross-origin-embedder-policy")).toBe("require-corp");
    }
  });

  it("serves exact MIME types", async () => {
    const type = async (p: string) => (await fetch(server.url + p)).headers.get("content-type");
    expect(await type("")).toBe("text/html; charset=utf-8");
    expect(await type("app.js")).toMatch(/^text\/javascript/);
    expect(await type("ort/1.30.0/ort-wasm-simd-threaded.jsep.mjs")).toMatch(/^text\/javascript/);
    expect(await type("ort/1.30.0/ort-wasm-simd-threaded.jsep.wasm")).toBe("application/wasm");
    expect(await type("pack/molorec.json")).toMatch(/^application\/json/);
  });

  it("serves the pack under /pack/ with CORS; ORT files are immutable", async () => {
    const pack = await fetch(`${server.url}pack/molorec.json`);
    expect(await pack.text()).toBe("{}");
    expect(pack.headers.get("access-control-allow-origin")).toBe("*");
    expect((await fetch(`${server.url}ort/1.30.0/ort-wasm-simd-threaded.jsep.wasm`)).headers.get("cache-control")).toMatch(/immutable/);
  });

  it("refuses paths outside its folders, and methods other than GET/HEAD", async () => {
    for (const p of ["..%2fsecret.txt", "pack/..%2f..%2fsecret.txt", "%2e%2e/secret.txt"])
      expect((await fetch(server.url + p)).status).toBe(404);
    expect((await fetch(`${server.url}app.js`, { method: "POST" })).status).toBe(405);
    expect((await fetch(`${server.url}app.js`, { method: "HEAD" })).status).toBe(200);
  });
});
