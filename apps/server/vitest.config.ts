import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: { conditions: ["@molorec/source"] },
  ssr: { resolve: { conditions: ["@molorec/source"] } },
  test: { include: ["test/**/*.test.ts", "src/**/*.test.ts"], testTimeout: 30_000, hookTimeout: 30_000 },
});
