// A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
// exposition format 0.0.4. Enough for a handful of series; no dependency.

type Labels = Record<string, string>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function num(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  if (Number.isNaN(v)) return "NaN";
  return String(v);
}

function key(labels: Labels): string {
  return JSON.stringify(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
}

interface Metric {
  render(): string[];
}

/** A monotonically increasing count per label set. */
export class Counter implements Metric {
  private readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    const k = key(labels);
    const v = this.values.get(k);
    if (v) v.value += by;
    else this.values.set(k, { labels, value: by });
  }

  get(labels: Labels = {}): number {
    return this.values.get(key(labels))?.value ?? 0;
  }

  render(): string[] {
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} counter`,
      ...[...this.values.values()].map((v) => `${this.name}${labelText(v.labels)} ${num(v.value)}`),
    ];
  }
}

/** A value per label set, set directly or read at scrape time from `collect`. */
export class Gauge implements Metric {
  private readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly collect?: () => Array<[Labels, number]>,
  ) {}

  set(labels: Labels, value: number): void {
    this.values.set(key(labels), { labels, value });
  }

  inc(labels: Labels = {}, by = 1): void {
    const k = key(labels);
    const v = this.values.get(k);
    if (v) v.value += by;
    else this.values.set(k, { labels, value: by });
  }

  dec(labels: Labels = {}, by = 1): void {
    this.inc(labels, -by);
  }

  render(): string[] {
    if (this.collect) for (const [labels, value] of this.collect()) this.set(labels, value);
    return [
      `# HELP ${this.name} ${this.help}`,
      `# TYPE ${this.name} gauge`,
      ...[...this.values.values()].map((v) => `${this.name}${labelText(v.labels)} ${num(v.value)}`),
    ];
  }
}

/** Observations in cumulative buckets (`le`), with `_sum` and `_count`, per label set. */
export class Histogram implements Metric {
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  readonly buckets: number[];
  constructor(
    readonly name: string,
    readonly help: string,
    buckets: number[],
  ) {
    this.buckets = [...buckets].sort((a, b) => a - b);
  }

  observe(labels: Labels, value: number): void {
    const k = key(labels);
    let s = this.series.get(k);
    if (!s) {
      s = { labels, counts: new Array<number>(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.series.set(k, s);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  /** Observation count and sum of a label set. */
  get(labels: Labels = {}): { count: number; sum: number } {
    const s = this.series.get(key(labels));
    return { count: s?.count ?? 0, sum: s?.sum ?? 0 };
  }

  render(): string[] {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const s of this.series.values()) {
      this.buckets.forEach((le, i) => lines.push(`${this.name}_bucket${labelText(s.labels, ["le", num(le)])} ${s.counts[i]}`));
      lines.push(`${this.name}_bucket${labelText(s.labels, ["le", "+Inf"])} ${s.count}`);
      lines.push(`${this.name}_sum${labelText(s.labels)} ${num(s.sum)}`);
      lines.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return lines;
  }
}

/** The metrics of one server; `render()` is the body of `GET /metrics`. */
export class Registry {
  private readonly metrics: Metric[] = [];

  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help));
  }

  gauge(name: string, help: string, collect?: () => Array<[Labels, number]>): Gauge {
    return this.add(new Gauge(name, help, collect));
  }

  histogram(name: string, help: string, buckets: number[]): Histogram {
    return this.add(new Histogram(name, help, buckets));
  }

  private add<M extends Metric>(m: M): M {
    this.metrics.push(m);
    return m;
  }

  render(): string {
    return `${this.metrics.flatMap((m) => m.render()).join("\n")}\n`;
  }
}

/** `Content-Type` of the text exposition format. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** The server's metrics, by what they measure. */
export function serverMetrics(collect: { queueDepth: () => Array<[Labels, number]>; batchInFlight: () => Array<[Labels, number]> }) {
  const registry = new Registry();
  const started = Date.now();
  return {
    registry,
    requests: registry.counter("molorec_http_requests_total", "HTTP requests answered, by route, method and status."),
    latency: registry.histogram(
      "molorec_http_request_duration_seconds",
      "Time from receiving a request to its response headers, by route.",
      [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    ),
    inFlight: registry.gauge("molorec_http_requests_in_flight", "HTTP requests being handled now."),
    batchSize: registry.histogram("molorec_batch_size", "Requests scored per batched model pass, by pack.", [1, 2, 4, 8, 16, 32, 64]),
    batchDuration: registry.histogram(
      "molorec_batch_duration_seconds",
      "Time to score one batch (model runs included), by pack.",
      [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    ),
    queueWait: registry.histogram(
      "molorec_queue_wait_seconds",
      "Time a request waited in the queue before its batch started, by pack.",
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    ),
    queueDepth: registry.gauge("molorec_queue_depth", "Requests waiting for a batch, by pack.", collect.queueDepth),
    batchInFlight: registry.gauge(
      "molorec_batch_requests_in_flight",
      "Requests in the batch being scored now, by pack.",
      collect.batchInFlight,
    ),
    rejected: registry.counter(
      "molorec_queue_rejections_total",
      "Requests refused by the batcher, by pack and reason (queue_full, timeout, shutting_down).",
    ),
    packInfo: registry.gauge("molorec_pack_info", "Loaded packs (value 1), with their backend."),
    uptime: registry.gauge("molorec_uptime_seconds", "Seconds since the server started.", () => [[{}, (Date.now() - started) / 1000]]),
    rss: registry.gauge("process_resident_memory_bytes", "Resident memory of the server process.", () => [[{}, process.memoryUsage.rss()]]),
  };
}

export type ServerMetrics = ReturnType<typeof serverMetrics>;
