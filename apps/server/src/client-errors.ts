import type { Server } from "node:http";
import type { Duplex } from "node:stream";

/** Status, reason phrase, code and message of an answer to a request Node refused before the app saw it. */
function answerFor(code: string | undefined, requestTimeoutMs: number): [number, string, string, string] {
  switch (code) {
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return [
        408,
        "Request Timeout",
        "REQUEST_TIMEOUT",
        `the request was not received in full within ${requestTimeoutMs} ms; send it again, at once (headers and body).`,
      ];
    case "HPE_HEADER_OVERFLOW":
      return [
        431,
        "Request Header Fields Too Large",
        "HEADERS_TOO_LARGE",
        "the request's headers are too large; send fewer or shorter headers.",
      ];
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return [413, "Payload Too Large", "BODY_TOO_LARGE", "the request's chunk extensions are too large; send the body without them."];
    default:
      return [400, "Bad Request", "INVALID_REQUEST", `the request is not valid HTTP/1.1 (${code ?? "unknown parse error"}).`];
  }
}

/**
 * Answers what Node's HTTP parser and timers refuse (a client too slow to send its request,
 * oversized headers, malformed HTTP) with the same JSON error bodies as the app, instead of Node's
 * bodiless defaults. As Node does, nothing is written once a response has started on the socket,
 * and the connection is closed.
 */
export function answerClientErrors(server: Server, requestTimeoutMs: number): void {
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Node's own rule (_http_server's socketOnError): write only while no response has begun.
    const current = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (err.code !== "ECONNRESET" && socket.writable && !current?.headersSent) {
      const [status, reason, code, message] = answerFor(err.code, requestTimeoutMs);
      const body = JSON.stringify({ error: { code, message } });
      socket.write(
        `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    }
    socket.destroy(err);
  });
}
