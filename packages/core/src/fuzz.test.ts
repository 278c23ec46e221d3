// Property-based tests of the parsers that read untrusted input: request bodies, manifests,
// safetensors files and ONNX model bytes, fed generated hostile input. Every outcome must be a
// value or a MolorecError with a code; any other exception fails the property (fast-check prints
// the seed and the shrunk input), and vitest's timeout catches a hang. Bounded: a few seconds.
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MolorecError, type MolorecErrorCode } from "./errors.js";
import { parseManifest } from "./manifest.js";
import { checkOnnxModel } from "./onnx-check.js";
import { parseMixture, parseRecommendRequest } from "./request.js";
import { parseSafetensors } from "./safetensors.js";

const CODES: Record<MolorecErrorCode, true> = {
  INVALID_REQUEST: true,
  EMPTY_HISTORY: true,
  NO_CANDIDATES: true,
  TOO_MANY_CANDIDATES: true,
  HISTORY_TOO_LONG: true,
  UNKNOWN_DOMAIN: true,
  INVALID_MIXTURE: true,
  BODY_TOO_LARGE: true,
  MALFORMED_PACK: true,
  UNSUPPORTED_PACK_VERSION: true,
  PACK_FILE_MISSING: true,
  BACKEND_UNAVAILABLE: true,
  INFERENCE_FAILED: true,
};

/** Runs `f`; a value or a coded MolorecError passes, anything else is rethrown (and fails the property). */
function valueOrCoded(f: () => unknown): "value" | MolorecErrorCode {
  try {
    f();
    return "value";
  } catch (e) {
    if (e instanceof MolorecError && Object.hasOwn(CODES, e.code) && typeof e.message === "string" && e.message.length > 0) return e.code;
    throw e;
  }
}

const RUNS = { numRuns: 400 };

/** Names that reach Object.prototype through `in` or indexing, and other awkward strings. */
const hostileString = fc.oneof(
  fc.constantFrom("__proto__", "constructor", "toString", "hasOwnProperty", "prototype", "valueOf", "", " ", "..", "../x", "%2e%2e/x"),
  fc.constantFrom("0x1", "1e0", "NaN", "Infinity", "-0", "\u0000", "\ud800", "a".repeat(5000)),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 20 }),
);
const hostileNumber = fc.oneof(
  fc.constantFrom(0, -1, 1e12, 1e308, -1e308, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, 0.5, -0, 1e-320),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { depthSize: "small" },
  hostileString,
  hostileNumber,
  fc.constantFrom(null, true, false, [], {}),
  fc.jsonValue({ maxDepth: 3 }),
  fc.array(hostileString, { maxLength: 8 }),
  fc.dictionary(hostileString, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
);
/** A JSON text parsed, as a body would be (`__proto__` becomes an own key). */
const asParsedJson = (v: unknown) => JSON.parse(JSON.stringify(v) ?? "null") as unknown;

describe("fuzz: the request parser", () => {
  const limits = { maxCandidates: 20, maxHistoryItems: 10, maxTitleChars: 100 };
  const field = fc.constantFrom("history", "candidates", "domain", "mixture", "topK", "__proto__", "constructor", "extra");

  it("answers any JSON value with a request or a coded error", () => {
    fc.assert(
      fc.property(fc.oneof(hostileValue, fc.anything({ maxDepth: 3 })), (body) => {
        valueOrCoded(() => parseRecommendRequest(body, limits));
        valueOrCoded(() => parseRecommendRequest(asParsedJson(body), limits));
      }),
      RUNS,
    );
  });

  it("answers near-valid requests with a request or a coded error, and accepts only valid fields", () => {
    const request = fc.record(
      {
        history: fc.oneof(fc.array(hostileString, { maxLength: 12 }), hostileValue),
        candidates: fc.oneof(fc.array(hostileString, { maxLength: 25 }), hostileValue),
        domain: fc.oneof(hostileString, hostileValue),
        mixture: fc.oneof(hostileString, fc.record({ lambda: fc.oneof(hostileNumber, hostileValue) }), hostileValue),
        topK: fc.oneof(hostileNumber, hostileValue),
      },
      { requiredKeys: ["history", "candidates"] },
    );
    fc.assert(
      fc.property(request, fc.dictionary(field, hostileValue, { maxKeys: 2 }), (base, extra) => {
        const body = asParsedJson({ ...base, ...extra });
        if (valueOrCoded(() => parseRecommendRequest(body, limits)) !== "value") return;
        const r = parseRecommendRequest(body, limits);
        expect(r.history.length).toBeGreaterThan(0);
        expect(r.history.length).toBeLessThanOrEqual(limits.maxHistoryItems);
        expect(r.candidates.length).toBeLessThanOrEqual(limits.maxCandidates);
        for (const t of [...r.history, ...r.candidates]) expect(t.length).toBeGreaterThan(0);
        if (typeof r.mixture === "object") expect(r.mixture.lambda >= 0 && r.mixture.lambda <= 1).toBe(true);
      }),
      RUNS,
    );
  });

  it("reads a mixture from anything, or refuses it with INVALID_MIXTURE", () => {
    fc.assert(
      fc.property(fc.oneof(hostileValue, fc.anything({ maxDepth: 2 })), (v) => {
        const code = valueOrCoded(() => parseMixture(v));
        expect(["value", "INVALID_MIXTURE"]).toContain(code);
      }),
      RUNS,
    );
  });
});

describe("fuzz: the manifest parser", () => {
  const fixture = JSON.parse(readFileSync(new URL("../../../test/fixtures/tiny-pack/molorec.json", import.meta.url), "utf8"));
  /** Every path to a value of the fixture manifest (objects and arrays included). */
  const paths: Array<Array<string | number>> = [];
  const walk = (v: unknown, path: Array<string | number>) => {
    paths.push(path);
    if (typeof v === "object" && v !== null) for (const [k, x] of Object.entries(v)) walk(x, [...path, Array.isArray(v) ? Number(k) : k]);
  };
  walk(fixture, []);

  function setAt(root: any, path: Array<string | number>, value: unknown, addKey: string | null): any {
    if (path.length === 0) return value;
    let o = root;
    for (const k of path.slice(0, -1)) o = o[k];
    const last = path.at(-1)!;
    if (addKey !== null && typeof o === "object" && !Array.isArray(o))
      Object.defineProperty(o, addKey, { value, enumerable: true, writable: true, configurable: true });
    else o[last] = value;
    return root;
  }

  it("answers a manifest with any one field replaced (or any key added) with a manifest or a coded error", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: paths.length - 1 }),
        fc.oneof(hostileValue, fc.constant(undefined)),
        fc.option(hostileString, { nil: null }),
        (at, value, addKey) => {
          const m = setAt(structuredClone(fixture), paths[at]!, value, addKey);
          valueOrCoded(() => parseManifest(m));
          valueOrCoded(() => parseManifest(asParsedJson(m)));
        },
      ),
      RUNS,
    );
  });

  it("answers any JSON value with a manifest or a coded error", () => {
    fc.assert(
      fc.property(hostileValue, (v) => {
        expect(["MALFORMED_PACK", "UNSUPPORTED_PACK_VERSION"]).toContain(valueOrCoded(() => parseManifest(v)));
      }),
      RUNS,
    );
  });
});

describe("fuzz: the safetensors reader", () => {
  const enc = new TextEncoder();
  function file(header: unknown, data: Uint8Array): Uint8Array {
    const h = enc.encode(JSON.stringify(header) ?? "null");
    const out = new Uint8Array(8 + h.length + data.length);
    new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
    out.set(h, 8);
    out.set(data, 8 + h.length);
    return out;
  }
  const dims = fc.array(fc.oneof(fc.integer({ min: 0, max: 5 }), hostileNumber), { maxLength: 3 });
  const offsets = fc.oneof(fc.tuple(fc.integer({ min: -8, max: 64 }), fc.integer({ min: -8, max: 64 })), hostileValue);
  const info = fc.oneof(
    fc.record(
      {
        dtype: fc.oneof(fc.constantFrom("F32", "F16", "BF16", "I8", "F64", "constructor"), hostileString),
        shape: fc.oneof(dims, hostileValue),
        data_offsets: offsets,
      },
      { requiredKeys: [] },
    ),
    hostileValue,
  );

  it("answers generated headers over random data with tensors or a coded error; tensors read are finite and in range", () => {
    fc.assert(
      fc.property(fc.dictionary(hostileString, info, { maxKeys: 4 }), fc.uint8Array({ maxLength: 64 }), (header, data) => {
        const bytes = file(header, data);
        if (valueOrCoded(() => parseSafetensors(bytes, "x.safetensors")) !== "value") return;
        let total = 0;
        for (const t of parseSafetensors(bytes, "x.safetensors").values()) {
          for (const v of t.data) expect(Number.isFinite(v)).toBe(true);
          expect(t.data.length).toBe(t.dims.reduce((a, b) => a * b, 1));
          total += t.data.length;
        }
        expect(total * 2).toBeLessThanOrEqual(data.length);
      }),
      RUNS,
    );
  });

  it("answers random bytes, and a valid file with bytes changed or cut, with tensors or a coded error", () => {
    const valid = file(
      { a: { dtype: "F32", shape: [2, 2], data_offsets: [0, 16] }, b: { dtype: "BF16", shape: [3], data_offsets: [16, 22] } },
      new Uint8Array(22).fill(0x3c),
    );
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 128 }),
        fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.nat(valid.length),
        (random, edits, cut) => {
          valueOrCoded(() => parseSafetensors(random, "x.safetensors"));
          const edited = valid.slice();
          for (const [i, b] of edits) edited[i] = b;
          valueOrCoded(() => parseSafetensors(edited, "x.safetensors"));
          valueOrCoded(() => parseSafetensors(valid.subarray(0, cut), "x.safetensors"));
        },
      ),
      RUNS,
    );
  });
});

describe("fuzz: the ONNX completeness check", () => {
  const model = new Uint8Array(readFileSync(new URL("../../../test/fixtures/tiny-pack/model.onnx", import.meta.url)));
  it("answers random bytes and any cut of the fixture model with nothing or MALFORMED_PACK; every cut is refused", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), fc.nat(model.length - 1), (random, cut) => {
        expect(["value", "MALFORMED_PACK"]).toContain(valueOrCoded(() => checkOnnxModel(random, "m.onnx")));
        expect(valueOrCoded(() => checkOnnxModel(model.subarray(0, cut), "m.onnx"))).toBe("MALFORMED_PACK");
      }),
      RUNS,
    );
  });
});
