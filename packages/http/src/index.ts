export {
  createApp,
  isJsonMediaType,
  packSummary,
  DEFAULT_MAX_BODY_BYTES,
  type AppOptions,
  type AppRecommender,
  type ErrorBody,
  type HttpErrorCode,
  type PackSummary,
} from "./app.js";
export { leftBodyUnread, parseJsonBody, readBodyWithLimit } from "./body.js";
