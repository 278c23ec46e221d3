// The HTTP request path fed generated hostile bodies and headers: whatever arrives, the answer is
// a 200 or a coded 4xx JSON error (never a 500, never a hang), and the app keeps serving.
import { fileURLToPath } from "node:url";
import { createRecommender, type Recommender } from "@molorec/core";
import { loadPackFromDir, nodeBackend } from "@molorec/runtime-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createApp } from "./app.js";
import { parseJsonBody } from "./body.js";

const fixture = fileURLToPath(new URL("../../../test/fixtures/tiny-pack", import.meta.url));
let rec: Recommender;
const unexpected: unknown[] = [];
const app = createApp({ getRecommender: async () => rec, maxBodyBytes: 16 * 1024, onError: (e) => unexpected.push(e) });

beforeAll(async () => {
  rec = await createRecommender({
    backend: nodeBackend({ executionProvider: "cpu", intraOpNumThreads: 1, log: () => {} }),
    pack: await loadPackFromDir(fixture),
  });
});
afterAll(() => rec?.close());

const title = fc.oneof(
  fc.constantFrom("The Silent River (1994)", "Broken Mirror (1999)", "__proto__", "constructor", "toString", "", " ", "\u0000"),
  fc.string({ maxLength: 30 }),
);
const value: fc.Arbitrary<unknown> = fc.oneof(
  title,
  fc.constantFrom(0, -1, 0.5, 1e12, null, true, [], {}, "0x1", "domain", "adaptive", { lambda: 0.5 }, { lambda: Number.MAX_VALUE }),
  fc.jsonValue({ maxDepth: 2 }),
);
const body = fc.oneof(
  fc
    .record(
      {
        history: fc.oneof(fc.array(title, { maxLength: 4 }), value),
        candidates: fc.oneof(fc.array(title, { maxLength: 4 }), value),
        domain: fc.oneof(fc.constantFrom("movies", "toString", "__proto__", "constructor"), value),
        mixture: value,
        topK: value,
      },
      { requiredKeys: [] },
    )
    .map((o) => new TextEncoder().encode(JSON.stringify(o))),
  fc.uint8Array({ maxLength: 64 }),
  fc.string({ maxLength: 64 }).map((s) => new TextEncoder().encode(s)),
);

describe("fuzz: POST /v1/recommend", () => {
  it("answers any body with 200 or a coded 4xx JSON error", async () => {
    await fc.assert(
      fc.asyncProperty(body, fc.constantFrom("application/json", "text/plain", "application/json; charset=utf-8"), async (bytes, type) => {
        const res = await app.request("/v1/recommend", { method: "POST", body: bytes, headers: { "content-type": type } });
        const json = (await res.json()) as { error?: { code: unknown; message: unknown } };
        if (res.status !== 200) {
          expect(res.status).toBeGreaterThanOrEqual(400);
          expect(res.status).toBeLessThan(500);
          expect(typeof json.error?.code).toBe("string");
          expect(typeof json.error?.message).toBe("string");
        }
      }),
      { numRuns: 300, timeout: 10_000 },
    );
    expect(unexpected).toEqual([]);
  });

  it("parses any bytes as JSON or refuses them with INVALID_REQUEST", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          parseJsonBody(bytes);
        } catch (e) {
          expect(e).toMatchObject({ name: "MolorecError", code: "INVALID_REQUEST" });
        }
      }),
      { numRuns: 500 },
    );
  });
});
