import { MolorecError } from "@molorec/core";

function tooLarge(maxBytes: number, seen: string): MolorecError {
  return new MolorecError("BODY_TOO_LARGE", `request body is ${seen}; the limit is ${maxBytes} bytes. Send fewer or shorter titles.`, {
    details: { limit: maxBytes },
  });
}

/** How much of an oversized body is read and discarded (never kept) before giving up on it. */
const DRAIN_FACTOR = 16;

/** Errors answered while part of the request body was left unread. */
const UNREAD = new WeakSet<object>();

/**
 * Whether `error` was thrown while the request body was left partly unread (an oversized body past
 * the drain cap). The connection cannot carry another request then: answer with
 * `connection: close`, or a keep-alive client sends its next request on a connection the server
 * is about to drop.
 */
export function leftBodyUnread(error: unknown): boolean {
  return typeof error === "object" && error !== null && UNREAD.has(error);
}

function unread(e: MolorecError): MolorecError {
  UNREAD.add(e);
  return e;
}

/** Drains up to `cap` bytes; true when the body ended within them. */
async function drain(reader: ReadableStreamDefaultReader<Uint8Array>, read: number, cap: number): Promise<boolean> {
  while (read <= cap) {
    const { done, value } = await reader.read();
    if (done) return true;
    read += value.byteLength;
  }
  await reader.cancel().catch(() => {});
  return false;
}

/**
 * Reads a request body, keeping at most `maxBytes`: past the limit nothing more is kept, whatever
 * Content-Length says, and the answer is `BODY_TOO_LARGE`. An oversized body is drained (read and
 * discarded, up to 16 × the limit, then cancelled) before answering, so that the client's
 * connection stays usable: answering with the body unread made the next request on the same
 * connection fail under wrangler dev. A declared Content-Length over 16 × the limit is refused
 * without reading anything. When any of the body is left unread, the error says so
 * ({@link leftBodyUnread}).
 */
export async function readBodyWithLimit(request: Request, maxBytes: number): Promise<Uint8Array> {
  const cap = DRAIN_FACTOR * maxBytes;
  const declared = request.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared) && Number(declared) > maxBytes) {
    let drained = !request.body;
    if (request.body && Number(declared) <= cap) {
      const reader = request.body.getReader();
      drained = await drain(reader, 0, cap).catch(() => false);
      reader.releaseLock();
    }
    const e = tooLarge(maxBytes, `${declared} bytes (Content-Length)`);
    throw drained ? e : unread(e);
  }
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        chunks.length = 0;
        const drained = await drain(reader, total, cap);
        const e = tooLarge(maxBytes, `over ${maxBytes} bytes`);
        throw drained ? e : unread(e);
      }
      chunks.push(value);
    }
  } catch (cause) {
    if (cause instanceof MolorecError) throw cause;
    throw new MolorecError("INVALID_REQUEST", `could not read the request body: ${(cause as Error)?.message ?? cause}`, { cause });
  } finally {
    reader.releaseLock();
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Parses a UTF-8 JSON body; anything else is an `INVALID_REQUEST`. */
export function parseJsonBody(bytes: Uint8Array): unknown {
  if (bytes.byteLength === 0)
    throw new MolorecError("INVALID_REQUEST", "request body is empty; send a JSON object with history and candidates.");
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (cause) {
    throw new MolorecError("INVALID_REQUEST", "request body is not valid UTF-8.", { cause });
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new MolorecError("INVALID_REQUEST", `request body is not valid JSON: ${(cause as Error).message}`, { cause });
  }
}
