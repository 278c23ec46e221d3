// A strict reader of the Prometheus text exposition format (0.0.4), for tests: throws on the first
// line that a Prometheus server would reject or misread.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/;

function parseValue(v: string, line: string): number {
  if (v === "+Inf") return Infinity;
  if (v === "-Inf") return -Infinity;
  if (v === "NaN") return NaN;
  if (!/^-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v)) throw new Error(`bad value in: ${line}`);
  return Number(v);
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest.length) {
    const m = LABEL.exec(rest);
    if (!m) throw new Error(`bad labels in: ${line}`);
    if (m[1]! in labels) throw new Error(`duplicate label ${m[1]} in: ${line}`);
    labels[m[1]!] = m[2]!.replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    rest = rest.slice(m[0].length);
  }
  return labels;
}

/** Parses and validates an exposition; returns its samples. */
export function parsePrometheus(text: string): Sample[] {
  if (!text.endsWith("\n")) throw new Error("exposition must end with a newline");
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  const seen = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (!m) continue; // a plain comment
      if (!NAME.test(m[2]!)) throw new Error(`bad metric name: ${line}`);
      if (m[1] === "TYPE") {
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(m[3]!)) throw new Error(`bad type: ${line}`);
        if (types.has(m[2]!)) throw new Error(`TYPE given twice: ${line}`);
        if (samples.some((s) => s.name === m[2] || s.name.startsWith(`${m[2]}_`))) throw new Error(`TYPE after samples: ${line}`);
        types.set(m[2]!, m[3]!);
      } else {
        if (helps.has(m[2]!)) throw new Error(`HELP given twice: ${line}`);
        helps.add(m[2]!);
      }
      continue;
    }
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const sample = { name: m[1]!, labels: parseLabels(m[3] ?? "", line), value: parseValue(m[4]!, line) };
    const id = `${sample.name}${JSON.stringify(Object.entries(sample.labels).sort())}`;
    if (seen.has(id)) throw new Error(`duplicate series: ${line}`);
    seen.add(id);
    const base = types.has(sample.name) ? sample.name : sample.name.replace(/_(bucket|sum|count)$/, "");
    const type = types.get(base);
    if (!type) throw new Error(`sample without a TYPE: ${line}`);
    if (type === "histogram") {
      if (!/_(bucket|sum|count)$/.test(sample.name)) throw new Error(`histogram sample must be _bucket, _sum or _count: ${line}`);
      if (sample.name.endsWith("_bucket") && !("le" in sample.labels)) throw new Error(`bucket without le: ${line}`);
    }
    if (type === "counter" && !(sample.value >= 0)) throw new Error(`negative counter: ${line}`);
    samples.push(sample);
  }
  // Histograms: cumulative buckets ending in +Inf = _count.
  for (const [name, type] of types) {
    if (type !== "histogram") continue;
    const series = new Map<string, Sample[]>();
    for (const s of samples.filter((x) => x.name === `${name}_bucket`)) {
      const { le: _le, ...rest } = s.labels;
      const k = JSON.stringify(Object.entries(rest).sort());
      series.set(k, [...(series.get(k) ?? []), s]);
    }
    for (const [k, buckets] of series) {
      const les = buckets.map((b) => parseValue(b.labels.le!, b.labels.le!));
      for (let i = 1; i < buckets.length; i++) {
        if (!(les[i]! > les[i - 1]!) || buckets[i]!.value < buckets[i - 1]!.value) throw new Error(`${name}${k}: buckets not cumulative`);
      }
      if (les[les.length - 1] !== Infinity) throw new Error(`${name}${k}: no +Inf bucket`);
      const count = samples.find((s) => s.name === `${name}_count` && JSON.stringify(Object.entries(s.labels).sort()) === k);
      if (!count || count.value !== buckets[buckets.length - 1]!.value) throw new Error(`${name}${k}: _count differs from the +Inf bucket`);
    }
  }
  return samples;
}

/** The value of one series, or 0. */
export function sampleValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const s = samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value ?? 0;
}
