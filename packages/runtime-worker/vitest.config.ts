import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: { conditions: ["@molorec/source"] },
  ssr: { resolve: { conditions: ["@molorec/source"] } },
  test: { include: ["src/**/*.test.ts"], testTimeout: 60_000 },
});
