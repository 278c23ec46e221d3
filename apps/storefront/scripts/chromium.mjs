// How the storefront's browser test and the browser benchmarks start Debian's Chromium: one place
// for the executable and the flags, so a flag learned the hard way is not lost in one copy.

/** The Chromium executable: MOLOREC_CHROMIUM, else Debian's (scripts/setup.sh installs it). */
export const CHROMIUM_PATH = process.env.MOLOREC_CHROMIUM ?? "/usr/bin/chromium";

/** Headless, offline, no background traffic; WebGPU on (SwiftShader on a machine without a GPU). */
export const CHROMIUM_ARGS = Object.freeze([
  "--headless=new",
  "--no-sandbox",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // Never --disable-gpu: it removes the WebGPU adapter, SwiftShader's included.
  "--enable-unsafe-webgpu",
]);

/**
 * Starts Chromium with a persistent profile in `profileDir` (Cache Storage survives a reload).
 * @param {import("playwright-core").BrowserType} chromium playwright-core's `chromium`
 * @param {string} profileDir
 * @param {{ viewport?: { width: number; height: number } }} [options] more launch options
 * @returns {Promise<import("playwright-core").BrowserContext>}
 */
export function launchChromium(chromium, profileDir, options = {}) {
  return chromium.launchPersistentContext(profileDir, {
    ...options,
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS],
  });
}
