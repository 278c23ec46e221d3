/**
 * Which nodes of an ONNX model onnxruntime-web's WebGPU backend cannot run correctly, read from
 * the model's bytes before a session is opened. Two findings, measured with onnxruntime-web
 * 1.30.0 in Chromium (SwiftShader), each op alone against WASM (bench/webgpu-kernels.mjs):
 *
 * - `com.microsoft.MatMulNBits` with `bits` other than 2 or 4 (e.g. the 8-bit LM head and
 *   embedding table of the SmolLM2 int4 pack): the WebGPU kernel refuses it, so opening the
 *   session fails ("Only 2b and 4b quantization is supported for MatMulNBits op").
 * - `DequantizeLinear` (e.g. the uint8 embedding table of packs/edge: Gather + DequantizeLinear):
 *   the session opens and runs, but the values are wrong — with a uint8 zero point, `x - zp`
 *   wraps around for `x < zp` (≈ 4.3e7 × scale), and int8/uint8 inputs with a per-tensor scale,
 *   with or without a zero point, repeat their first four values. Scores then differ from WASM
 *   by whole nats and the ranking changes, silently.
 *
 * A page that lets the backend choose (`device: "auto"`) should open such a model on WASM; see
 * the storefront. Re-check with bench/webgpu-kernels.mjs when onnxruntime-web is upgraded.
 */

/** One kind of node WebGPU cannot run correctly, with how many the model has. */
export interface WebGpuBlocker {
  /** `domain.OpType`, e.g. `com.microsoft.MatMulNBits` (the default domain is left out). */
  op: string;
  /** What makes it fail, e.g. `bits=8`; empty when every such node does. */
  detail: string;
  /** The first such node's name. */
  node: string;
  count: number;
  /** `session`: opening the model fails; `values`: it runs but computes wrong values. */
  effect: "session" | "values";
  reason: string;
}

interface NodeInfo {
  opType: string;
  domain: string;
  name: string;
  intAttributes: Map<string, number>;
}

const utf8 = new TextDecoder();

/** A protobuf reader over a byte range: field headers, varints, length-delimited spans. */
class Reader {
  at: number;
  constructor(
    private readonly bytes: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    this.at = start;
  }

  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.at >= this.end) throw new Error("truncated varint");
      const b = this.bytes[this.at++]!;
      value += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return value;
      scale *= 128;
    }
    throw new Error("varint longer than 10 bytes");
  }

  /** Reads the next field: its number and wire type, and for wire type 2 the span it covers. */
  next(): { field: number; wire: number; start: number; end: number; value: number } {
    const tag = this.varint();
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    let start = this.at;
    let value = 0;
    if (wire === 0) value = this.varint();
    else if (wire === 1) this.at += 8;
    else if (wire === 5) this.at += 4;
    else if (wire === 2) {
      const len = this.varint();
      start = this.at;
      this.at += len;
    } else throw new Error(`unsupported wire type ${wire}`);
    if (this.at > this.end) throw new Error("a field runs past its message");
    return { field, wire, start, end: this.at, value };
  }

  text(start: number, end: number): string {
    return utf8.decode(this.bytes.subarray(start, end));
  }

  sub(start: number, end: number): Reader {
    return new Reader(this.bytes, start, end);
  }
}

/** Signed value of a varint-encoded int64 that fits a double. */
const int64 = (v: number): number => (v >= 2 ** 63 ? v - 2 ** 64 : v);

function readNode(r: Reader): NodeInfo {
  const node: NodeInfo = { opType: "", domain: "", name: "", intAttributes: new Map() };
  while (r.at < r.end) {
    const f = r.next();
    if (f.wire !== 2) continue;
    if (f.field === 4) node.opType = r.text(f.start, f.end);
    else if (f.field === 7) node.domain = r.text(f.start, f.end);
    else if (f.field === 3) node.name = r.text(f.start, f.end);
    else if (f.field === 5) {
      // AttributeProto: name = 1, i = 3 (int64).
      const a = r.sub(f.start, f.end);
      let name = "";
      let i: number | null = null;
      while (a.at < a.end) {
        const g = a.next();
        if (g.field === 1 && g.wire === 2) name = a.text(g.start, g.end);
        else if (g.field === 3 && g.wire === 0) i = int64(g.value);
      }
      if (name && i !== null) node.intAttributes.set(name, i);
    }
  }
  return node;
}

/** The nodes of the model's main graph (ModelProto.graph = 7, GraphProto.node = 1). */
function readNodes(model: Uint8Array): NodeInfo[] {
  const nodes: NodeInfo[] = [];
  const top = new Reader(model, 0, model.byteLength);
  while (top.at < top.end) {
    const f = top.next();
    if (f.field !== 7 || f.wire !== 2) continue;
    const graph = top.sub(f.start, f.end);
    while (graph.at < graph.end) {
      const g = graph.next();
      if (g.field === 1 && g.wire === 2) nodes.push(readNode(graph.sub(g.start, g.end)));
    }
  }
  return nodes;
}

/** The reason a node cannot run on WebGPU, or null. */
function blockerOf(node: NodeInfo): Omit<WebGpuBlocker, "node" | "count"> | null {
  const domain = node.domain === "ai.onnx" ? "" : node.domain;
  if (domain === "com.microsoft" && node.opType === "MatMulNBits") {
    const bits = node.intAttributes.get("bits") ?? 4;
    if (bits === 2 || bits === 4) return null;
    return {
      op: "com.microsoft.MatMulNBits",
      detail: `bits=${bits}`,
      effect: "session",
      reason: `onnxruntime-web's WebGPU MatMulNBits takes 2- and 4-bit weights only, not ${bits}-bit: the session does not open`,
    };
  }
  if (domain === "" && node.opType === "DequantizeLinear") {
    return {
      op: "DequantizeLinear",
      detail: "",
      effect: "values",
      reason:
        "onnxruntime-web's WebGPU DequantizeLinear computes wrong values (measured for int8 and uint8 inputs with a per-tensor scale; a uint8 x − zero point wraps around): scores would be wrong",
    };
  }
  return null;
}

/**
 * The node kinds of `model` (the bytes of an .onnx file) that onnxruntime-web 1.30's WebGPU
 * backend cannot run correctly; empty when WebGPU is fine. Reads the graph's node list only
 * (milliseconds even for a 100 MB model). Throws on bytes that are not an ONNX model.
 *
 * @example
 * ```ts
 * const blockers = webGpuBlockers(pack.model);
 * const backend = webBackend({ device: blockers.length ? "wasm" : "auto", wasmPaths: "/ort/" });
 * ```
 */
export function webGpuBlockers(model: Uint8Array): WebGpuBlocker[] {
  const found = new Map<string, WebGpuBlocker>();
  for (const node of readNodes(model)) {
    const b = blockerOf(node);
    if (!b) continue;
    const key = `${b.op} ${b.detail}`;
    const seen = found.get(key);
    if (seen) seen.count++;
    else found.set(key, { ...b, node: node.name, count: 1 });
  }
  return [...found.values()];
}

/** One line for a page or a log: `com.microsoft.MatMulNBits (bits=8, 1 node): …; DequantizeLinear (1 node): …`. */
export function describeWebGpuBlockers(blockers: readonly WebGpuBlocker[]): string {
  return blockers
    .map((b) => `${b.op} (${b.detail ? `${b.detail}, ` : ""}${b.count} node${b.count === 1 ? "" : "s"}): ${b.reason}`)
    .join("; ");
}
