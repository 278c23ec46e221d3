// @ts-check
// Resolves the storefront's settings: storefront.config.json, overridden by command-line flags.
import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

export const APP_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * @typedef {object} StorefrontConfig
 * @property {string} packDir      absolute path of the pack folder (holds molorec.json)
 * @property {string | null} cataloguePath  absolute path of the catalogue JSON, or null for catalogue/<domain>.json
 * @property {string} outDir       where the site is built
 * @property {string} host
 * @property {number} port
 */

export const USAGE = `Options (flags override storefront.config.json):
  --pack DIR         model pack folder (default: ../../packs/edge, the trained edge pack;
                     SmolLM2-135M int4: ../../artifacts/smollm2/int4, built by scripts/smollm2-packs.sh)
  --catalogue FILE   catalogue JSON {"domain", "items": [{"id", "title", ...}]} (default: catalogue/<pack domain>.json;
                     catalogue/movies-ml100k.json for a pack without domains)
  --out DIR          build output (default: dist)
  --host HOST        address to bind (default: 127.0.0.1)
  --port N           port (default: 8080; 0 picks a free one)`;

/**
 * @param {string[]} argv
 * @returns {StorefrontConfig}
 */
export function resolveConfig(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      pack: { type: "string" },
      catalogue: { type: "string" },
      out: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const file = JSON.parse(readFileSync(resolve(APP_DIR, "storefront.config.json"), "utf8"));
  const cwd = process.cwd();
  const port = Number(values.port ?? process.env.PORT ?? file.port ?? 8080);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be an integer in [0, 65535], not ${values.port}`);
  const catalogue = values.catalogue ?? (file.catalogue === "auto" || file.catalogue == null ? null : resolve(APP_DIR, file.catalogue));
  return {
    packDir: values.pack ? resolve(cwd, values.pack) : resolve(APP_DIR, file.pack),
    cataloguePath: catalogue === null ? null : resolve(cwd, catalogue),
    outDir: values.out ? resolve(cwd, values.out) : resolve(APP_DIR, "dist"),
    host: values.host ?? file.host ?? "127.0.0.1",
    port,
  };
}
