/**
 * The little of WebGPU this package touches, typed locally so that neither this package nor its
 * users need `@webgpu/types`.
 */
export interface GpuAdapterLike {
  readonly info?: { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean };
  /** Older Chromium (before `info.isFallbackAdapter`). */
  readonly isFallbackAdapter?: boolean;
  readonly limits: object;
  readonly features: object;
  requestDevice(descriptor?: unknown): Promise<unknown>;
}

/** `navigator.gpu`, as far as this package uses it. */
export interface GpuLike {
  requestAdapter(options?: {
    powerPreference?: "low-power" | "high-performance";
    forceFallbackAdapter?: boolean;
  }): Promise<GpuAdapterLike | null>;
}

/** What the WebGPU adapter said about itself. */
export interface WebGpuAdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /**
   * True for a software adapter (e.g. SwiftShader): correct, but slow. `null` when the browser
   * does not say.
   */
  isFallbackAdapter: boolean | null;
}

/** Result of {@link probeWebGpu}: an adapter, or why there is none. */
export type WebGpuProbe = { ok: true; adapter: GpuAdapterLike; info: WebGpuAdapterInfo } | { ok: false; reason: string };

/** Reads vendor/architecture/fallback flags from an adapter (current and older Chromium). */
export function describeAdapter(adapter: GpuAdapterLike): WebGpuAdapterInfo {
  const info = adapter.info ?? {};
  const fallback = info.isFallbackAdapter ?? adapter.isFallbackAdapter;
  return {
    vendor: info.vendor ?? "",
    architecture: info.architecture ?? "",
    device: info.device ?? "",
    description: info.description ?? "",
    isFallbackAdapter: typeof fallback === "boolean" ? fallback : null,
  };
}

/** Asks `gpu` (normally `navigator.gpu`) for an adapter. Never throws. */
export async function probeWebGpu(
  gpu: GpuLike | undefined | null,
  powerPreference?: "low-power" | "high-performance",
): Promise<WebGpuProbe> {
  if (!gpu)
    return {
      ok: false,
      reason: "navigator.gpu is missing: this browser has no WebGPU (or it is disabled, or the page is not a secure context)",
    };
  try {
    const adapter = await gpu.requestAdapter(powerPreference ? { powerPreference } : undefined);
    if (!adapter)
      return { ok: false, reason: "navigator.gpu.requestAdapter() returned null: no usable GPU adapter (blocklisted GPU or driver)" };
    return { ok: true, adapter, info: describeAdapter(adapter) };
  } catch (e) {
    return { ok: false, reason: `navigator.gpu.requestAdapter() threw: ${(e as Error)?.message ?? e}` };
  }
}
