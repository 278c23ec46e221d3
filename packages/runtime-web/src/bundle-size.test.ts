import { describe, expect, it } from "vitest";
// @ts-expect-error -- a plain .mjs script without declarations
import { measureBundle } from "../scripts/measure-bundle.mjs";

/**
 * Budget for what a page embedding runtime-web ships as JavaScript (ORT's JS glue included; the
 * wasm binary is served beside it and measured in the README). Measured at 420 KiB / 117 KiB gzip.
 */
const BUDGET = { bytes: 480 * 1024, gzip: 135 * 1024 };

describe("bundle size", () => {
  it(`stays within ${BUDGET.bytes / 1024} KiB (${BUDGET.gzip / 1024} KiB gzip)`, async () => {
    const r = await measureBundle();
    expect(r.js.bytes).toBeLessThan(BUDGET.bytes);
    expect(r.js.gzip).toBeLessThan(BUDGET.gzip);
    // Our own code stays small: everything else is ONNX Runtime and the tokenizer.
    expect(r.js.byPackage["@molorec/runtime-web"]).toBeLessThan(12 * 1024);
  });
});
