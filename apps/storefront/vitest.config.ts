import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: { conditions: ["@molorec/source"] },
  ssr: { resolve: { conditions: ["@molorec/source"] } },
  // The browser tests share one server and one Chromium; keep files sequential (2 cores).
  test: { include: ["src/**/*.test.ts", "test/**/*.test.ts"], testTimeout: 60_000, hookTimeout: 90_000, fileParallelism: false },
});
