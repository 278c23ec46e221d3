import { describe, expect, it } from "vitest";
import { webBackend } from "./web-backend.js";
import { describeAdapter, probeWebGpu, type GpuAdapterLike, type GpuLike } from "./webgpu-probe.js";

const adapter = (info: GpuAdapterLike["info"], legacyFallback?: boolean): GpuAdapterLike => ({
  info,
  ...(legacyFallback === undefined ? {} : { isFallbackAdapter: legacyFallback }),
  limits: {},
  features: new Set(),
  requestDevice: async () => ({}),
});

describe("probeWebGpu", () => {
  it("reports the adapter and whether it is a software fallback", async () => {
    const gpu: GpuLike = {
      requestAdapter: async () => adapter({ vendor: "google", architecture: "swiftshader", isFallbackAdapter: true }),
    };
    const p = await probeWebGpu(gpu);
    expect(p).toMatchObject({ ok: true, info: { vendor: "google", architecture: "swiftshader", isFallbackAdapter: true } });
  });

  it("reads the older adapter.isFallbackAdapter, and says null when the browser does not tell", () => {
    expect(describeAdapter(adapter({ vendor: "nvidia" }, false)).isFallbackAdapter).toBe(false);
    expect(describeAdapter(adapter(undefined)).isFallbackAdapter).toBeNull();
  });

  it("explains a missing navigator.gpu, a null adapter and a throwing requestAdapter", async () => {
    expect(await probeWebGpu(undefined)).toMatchObject({ ok: false, reason: expect.stringMatching(/navigator\.gpu is missing/) });
    expect(await probeWebGpu({ requestAdapter: async () => null })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/returned null/),
    });
    expect(await probeWebGpu({ requestAdapter: async () => Promise.reject(new Error("boom")) })).toMatchObject({
      ok: false,
      reason: expect.stringMatching(/threw: boom/),
    });
  });
});

describe("webBackend device choice", () => {
  it("device 'webgpu' without an adapter fails with a structured per-backend error, not a flattened string", async () => {
    const backend = webBackend({ device: "webgpu", wasmPaths: "/ort/", gpu: null, log: () => {} });
    const err = await backend.createSession(new Uint8Array([1, 2, 3])).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "BACKEND_UNAVAILABLE",
      details: {
        requested: "webgpu",
        failures: { webgpu: { stage: "adapter", message: expect.stringMatching(/navigator\.gpu is missing/) } },
      },
    });
    expect(backend.info()).toMatchObject({ device: null, requested: "webgpu", adapter: null });
  });
});
