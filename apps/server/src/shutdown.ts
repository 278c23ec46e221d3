import type { Server } from "node:http";

/** Counts the HTTP requests being handled and wakes whoever waits for there to be none. */
export class InFlightRequests {
  private count = 0;
  private waiters: Array<() => void> = [];

  /** Requests being handled now. */
  get value(): number {
    return this.count;
  }

  enter(): void {
    this.count++;
  }

  leave(): void {
    this.count--;
    if (this.count === 0 && this.waiters.length) {
      const waiting = this.waiters;
      this.waiters = [];
      for (const wake of waiting) wake();
    }
  }

  /** Resolves once no request is in flight. */
  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise<void>((resolve) => this.waiters.push(resolve));
  }
}

/** What a drain closes after the listener: each pack's queue, then its model. */
export interface DrainablePack {
  batcher: { readonly depth: number; readonly inFlight: number; close(): Promise<void> };
  recommender: { close(): Promise<void> };
}

/** Options of {@link createDrain}. */
export interface DrainOptions {
  server: Server;
  packs: readonly DrainablePack[];
  inFlight: InFlightRequests;
  graceMs: number;
  timeoutMs: number;
  log: (line: string) => void;
}

/** A server's shutdown: once started, `draining` is true and `shutdown` returns the same promise. */
export interface Drain {
  readonly draining: boolean;
  shutdown(reason?: string): Promise<void>;
}

/** A shutdown closes idle connections only after this long with nothing in flight. */
const QUIET_MS = 100;

/**
 * Graceful shutdown of a listening server: keep accepting for `graceMs` (answers carry
 * `connection: close`, health says draining), stop listening, wait until no request is in flight
 * for a quiet moment (at most `timeoutMs`), close idle connections, cut what is left, then close
 * the packs' queues and models.
 */
export function createDrain(options: DrainOptions): Drain {
  const { server, packs, inFlight, graceMs, timeoutMs, log } = options;
  let draining = false;
  let closing: Promise<void> | null = null;

  async function drain(reason: string): Promise<void> {
    const queued = packs.reduce((n, p) => n + p.batcher.depth + p.batcher.inFlight, 0);
    log(
      `molorec-server: ${reason}: draining (${graceMs > 0 ? `accepting for ${graceMs} ms more, then ` : ""}not accepting connections); finishing ${inFlight.value} in-flight request(s) (${queued} queued or scoring), at most ${timeoutMs} ms`,
    );
    if (graceMs > 0) {
      await new Promise((r) => setTimeout(r, graceMs));
      // One more event-loop turn: a loop blocked past the timer accepts what is queued first.
      await new Promise((r) => setImmediate(r));
    }
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // Accepted connections may hold a request the event loop has not read yet (it was busy
    // scoring): wait until nothing is in flight for a quiet moment before closing idle ones.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    let finished = false;
    for (;;) {
      finished = await Promise.race([inFlight.idle().then(() => true as const), timeout]);
      if (!finished) break;
      await new Promise((r) => setTimeout(r, QUIET_MS));
      if (inFlight.value === 0) break;
    }
    clearTimeout(timer);
    const cut = inFlight.value;
    // Idle keep-alive connections close now; anything still open after a moment is cut.
    server.closeIdleConnections();
    let grace: ReturnType<typeof setTimeout> | undefined;
    const allClosed = await Promise.race([
      closed.then(() => true),
      new Promise<boolean>((resolve) => (grace = setTimeout(() => resolve(false), finished ? 1000 : 0))),
    ]);
    clearTimeout(grace);
    if (!allClosed) server.closeAllConnections();
    await closed;
    await Promise.all(packs.map((p) => p.batcher.close()));
    await Promise.all(packs.map((p) => p.recommender.close()));
    log(`molorec-server: stopped (${finished ? "every in-flight request was answered" : `shutdown timeout: ${cut} request(s) cut`})`);
  }

  return {
    get draining() {
      return draining;
    },
    shutdown(reason = "shutdown") {
      if (closing) return closing;
      draining = true;
      closing = drain(reason);
      return closing;
    },
  };
}

/** What {@link handleSignals} listens on and how it exits (the process by default; tests pass fakes). */
export interface SignalOptions {
  signals?: {
    on(event: "SIGTERM" | "SIGINT", listener: () => void): unknown;
    off(event: "SIGTERM" | "SIGINT", listener: () => void): unknown;
  };
  exit?: (code: number) => void;
  log?: (line: string) => void;
}

/**
 * SIGTERM / SIGINT: graceful shutdown, then exit 0. A second signal exits at once with 1.
 * Returns a function that removes the handlers.
 */
export function handleSignals(server: { shutdown(reason?: string): Promise<void> }, options: SignalOptions = {}): () => void {
  const signals = options.signals ?? process;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  const log = options.log ?? ((line: string) => console.error(line));
  let received = 0;
  const on = (signal: "SIGTERM" | "SIGINT") => () => {
    received++;
    if (received > 1) {
      log(`molorec-server: ${signal} again: exiting now`);
      exit(1);
      return;
    }
    server.shutdown(signal).then(
      () => exit(0),
      (e: unknown) => {
        log(`molorec-server: shutdown failed: ${(e as Error)?.stack ?? e}`);
        exit(1);
      },
    );
  };
  const term = on("SIGTERM");
  const int = on("SIGINT");
  signals.on("SIGTERM", term);
  signals.on("SIGINT", int);
  return () => {
    signals.off("SIGTERM", term);
    signals.off("SIGINT", int);
  };
}
