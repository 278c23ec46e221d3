// The Worker with its pack in R2 or static assets (MOLOREC_PACK in wrangler.jsonc).
import { createWorker } from "./worker.js";

export type { Env } from "./worker.js";
export default createWorker();
