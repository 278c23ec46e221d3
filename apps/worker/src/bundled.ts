// The Worker with its pack compiled in (`wrangler dev|deploy --env bundled`): the pack folder is
// chosen by the build command in wrangler.jsonc, which generates .bundled/pack.ts.
import pack from "molorec-bundled-pack";
import { createWorker } from "./worker.js";

export type { Env } from "./worker.js";
export default createWorker(pack);
