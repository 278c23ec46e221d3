// The inspector's WebSocket frame reader (used by the heap probe of the wrangler-dev tests): the
// server may split frames across TCP chunks anywhere, and a message across frames.
import { describe, expect, it } from "vitest";
import { webSocketFrames } from "./wrangler-dev.mjs";

/** One unmasked server frame. */
function frame(opcode: number, payload: Buffer, fin = true): Buffer {
  const first = (fin ? 0x80 : 0) | opcode;
  if (payload.length < 126) return Buffer.concat([Buffer.from([first, payload.length]), payload]);
  if (payload.length < 65536) {
    const head = Buffer.from([first, 126, 0, 0]);
    head.writeUInt16BE(payload.length, 2);
    return Buffer.concat([head, payload]);
  }
  const head = Buffer.alloc(10);
  head[0] = first;
  head[1] = 127;
  head.writeBigUInt64BE(BigInt(payload.length), 2);
  return Buffer.concat([head, payload]);
}

const text = (s: string) => Buffer.from(s, "utf8");

describe("webSocketFrames", () => {
  const event = JSON.stringify({ method: "Runtime.executionContextCreated", params: { pad: "x".repeat(300) } });
  const answer = JSON.stringify({ id: 1, result: { usedSize: 1, totalSize: 2 } });
  const big = JSON.stringify({ method: "Debugger.scriptParsed", params: { pad: "y".repeat(70_000) } });
  // A 16-bit-length frame, a 64-bit-length frame, a ping, then the answer split over three
  // fragments with a pong between them.
  const stream = Buffer.concat([
    frame(1, text(event)),
    frame(1, text(big)),
    frame(9, Buffer.alloc(0)),
    frame(1, text(answer.slice(0, 10)), false),
    frame(0, text(answer.slice(10, 20)), false),
    frame(10, Buffer.alloc(0)),
    frame(0, text(answer.slice(20)), true),
  ]);

  it("returns whole messages however the stream is chunked", () => {
    for (const size of [1, 2, 3, 7, 126, 4096, stream.length]) {
      const read = webSocketFrames();
      const messages: string[] = [];
      for (let at = 0; at < stream.length; at += size) messages.push(...read(stream.subarray(at, at + size)));
      expect(messages, `chunks of ${size} bytes`).toEqual([event, big, answer]);
    }
  });

  it("throws on a close frame", () => {
    const read = webSocketFrames();
    expect(read(frame(1, text(event)))).toEqual([event]);
    expect(() => read(frame(8, Buffer.from([0x03, 0xe8])))).toThrow(/closed the connection/);
  });
});
