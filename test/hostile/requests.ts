// Hostile requests, as a client probing a running service would send them: each must get its
// coded 4xx JSON error, and the service must answer a valid request right after. Shared by the
// server's suite (apps/server/test/hostile.test.ts) and the Worker's under `wrangler dev`
// (apps/worker/test/worker.node.test.ts); both send them over real HTTP.

/** One hostile request and the answer it must get. */
export interface HostileRequest {
  name: string;
  status: number;
  code: string;
  /** Sends it to the service at `url` (no trailing slash). */
  send(url: string): Promise<Response>;
}

/** A request the fixture pack answers. */
export interface ValidRequest {
  history: string[];
  candidates: string[];
}

const json = { "content-type": "application/json" };

function post(url: string, body: BodyInit, headers: Record<string, string> = json, init: RequestInit = {}): Promise<Response> {
  return fetch(`${url}/v1/recommend`, { method: "POST", body, headers, ...init });
}

/** A body streamed in 64 KiB chunks without Content-Length, `bytes` long. */
export function streamedBody(bytes: number): ReadableStream<Uint8Array> {
  const chunk = new TextEncoder().encode(" ".repeat(64 * 1024));
  let sent = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (sent >= bytes) c.close();
      else {
        c.enqueue(chunk);
        sent += chunk.byteLength;
      }
    },
  });
}

/**
 * The hostile requests every service must answer alike: names looked up through the object
 * prototype, λ spellings, content types, bodies too large, too deep or not JSON, too many items.
 * `valid` is a request the pack answers; each case varies it.
 */
export function hostileRequests(valid: ValidRequest): HostileRequest[] {
  const body = (over: Record<string, unknown>) => JSON.stringify({ ...valid, ...over });
  const cases: Array<[string, number, string, (url: string) => Promise<Response>]> = [
    // Names that reach Object.prototype through `in` or indexing.
    ['domain "toString"', 404, "UNKNOWN_DOMAIN", (u) => post(u, body({ domain: "toString" }))],
    ['domain "constructor", mixture "domain"', 404, "UNKNOWN_DOMAIN", (u) => post(u, body({ domain: "constructor", mixture: "domain" }))],
    ['domain "__proto__", mixture "domain"', 404, "UNKNOWN_DOMAIN", (u) => post(u, body({ domain: "__proto__", mixture: "domain" }))],
    [
      'domain "hasOwnProperty", mixture "adaptive"',
      404,
      "UNKNOWN_DOMAIN",
      (u) => post(u, body({ domain: "hasOwnProperty", mixture: "adaptive" })),
    ],
    [
      'domain "valueOf", mixture {"lambda": 0.5}',
      404,
      "UNKNOWN_DOMAIN",
      (u) => post(u, body({ domain: "valueOf", mixture: { lambda: 0.5 } })),
    ],
    ['a "__proto__" field', 400, "INVALID_REQUEST", (u) => post(u, `{"__proto__": {"topK": 1}, ${body({}).slice(1)}`)],
    ["a 10,000-character domain", 400, "INVALID_REQUEST", (u) => post(u, body({ domain: "d".repeat(10_000) }))],
    // λ spellings Number() reads, and λ that are not numbers.
    ['mixture "0x1"', 400, "INVALID_MIXTURE", (u) => post(u, body({ mixture: "0x1" }))],
    ['mixture "1e0"', 400, "INVALID_MIXTURE", (u) => post(u, body({ mixture: "1e0" }))],
    ["λ NaN (not JSON)", 400, "INVALID_REQUEST", (u) => post(u, body({ mixture: "@" }).replace('"@"', '{"lambda": NaN}'))],
    ["λ 1e999 (Infinity once parsed)", 400, "INVALID_MIXTURE", (u) => post(u, body({ mixture: "@" }).replace('"@"', '{"lambda": 1e999}'))],
    ["λ 2", 400, "INVALID_MIXTURE", (u) => post(u, body({ mixture: { lambda: 2 } }))],
    // Content types a page on another origin can send without a preflight.
    ["text/plain", 415, "UNSUPPORTED_MEDIA_TYPE", (u) => post(u, body({}), { "content-type": "text/plain;charset=UTF-8" })],
    ["a form", 415, "UNSUPPORTED_MEDIA_TYPE", (u) => post(u, body({}), { "content-type": "application/x-www-form-urlencoded" })],
    ["no content type", 415, "UNSUPPORTED_MEDIA_TYPE", (u) => post(u, new Blob([body({})]), {})],
    // Bodies.
    ["malformed JSON", 400, "INVALID_REQUEST", (u) => post(u, '{"history": [')],
    ["an empty body", 400, "INVALID_REQUEST", (u) => post(u, "")],
    ["invalid UTF-8", 400, "INVALID_REQUEST", (u) => post(u, new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]))],
    ["100,000 nested arrays", 400, "INVALID_REQUEST", (u) => post(u, "[".repeat(100_000) + "]".repeat(100_000))],
    ["a deeply nested history", 400, "INVALID_REQUEST", (u) => post(u, body({ history: JSON.parse("[".repeat(1000) + "]".repeat(1000)) }))],
    ["a JSON array", 400, "INVALID_REQUEST", (u) => post(u, "[]")],
    ["topK as a string", 400, "INVALID_REQUEST", (u) => post(u, body({ topK: "3" }))],
    ["numbers as candidates", 400, "INVALID_REQUEST", (u) => post(u, body({ candidates: [1, 2] }))],
    ["a blank title", 400, "INVALID_REQUEST", (u) => post(u, body({ candidates: ["x", " \t\n "] }))],
    ["0 candidates", 400, "NO_CANDIDATES", (u) => post(u, body({ candidates: [] }))],
    ["an empty history", 400, "EMPTY_HISTORY", (u) => post(u, body({ history: [] }))],
    [
      "10,000 candidates",
      400,
      "TOO_MANY_CANDIDATES",
      (u) => post(u, body({ candidates: Array.from({ length: 10_000 }, (_, i) => `item ${i}`) })),
    ],
    [
      "10,000 history items",
      400,
      "HISTORY_TOO_LONG",
      (u) => post(u, body({ history: Array.from({ length: 10_000 }, (_, i) => `seen ${i}`) })),
    ],
    ["20 MB declared by Content-Length", 413, "BODY_TOO_LARGE", (u) => post(u, body({ candidates: ["x".repeat(20 * 1024 * 1024)] }))],
    [
      "4 MiB streamed without Content-Length",
      413,
      "BODY_TOO_LARGE",
      (u) => post(u, streamedBody(4 * 1024 * 1024), json, { duplex: "half" } as RequestInit),
    ],
    // Routes.
    ["GET /v1/recommend", 405, "METHOD_NOT_ALLOWED", (u) => fetch(`${u}/v1/recommend`)],
    ["a path with ../", 404, "NOT_FOUND", (u) => fetch(`${u}/v1/%2e%2e/%2e%2e/molorec.json`)],
    ["the pack's model file", 404, "NOT_FOUND", (u) => fetch(`${u}/model.onnx`)],
  ];
  return cases.map(([name, status, code, send]) => ({ name, status, code, send }));
}
