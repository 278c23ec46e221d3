// Starts and stops `wrangler dev` on 127.0.0.1 for tests and bench/worker-latency.mjs.
// Offline: no Request.cf download, no metrics; the state (local R2) goes to a temp folder.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

export const workerDir = fileURLToPath(new URL("..", import.meta.url));
const watchdog = fileURLToPath(new URL("watchdog.mjs", import.meta.url));
const wranglerBin = join(dirname(createRequire(join(workerDir, "package.json")).resolve("wrangler/package.json")), "bin", "wrangler.js");

/** Environment for wrangler: offline, no telemetry, bundling workspace packages from src/. */
export function wranglerEnv(extra = {}) {
  return {
    ...process.env,
    CLOUDFLARE_CF_FETCH_ENABLED: "false",
    WRANGLER_SEND_METRICS: "false",
    WRANGLER_BUILD_CONDITIONS: "@molorec/source,workerd,worker,browser",
    ...extra,
  };
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Writes a wrangler config like wrangler.jsonc whose static assets are `packDir` (absolute paths,
 * so it works from a temp folder) and returns its path: for serving another pack in tests and benches.
 */
export function configForPack(packDir, dir) {
  const text = readFileSync(join(workerDir, "wrangler.jsonc"), "utf8");
  const compatibilityDate = /"compatibility_date":\s*"([^"]+)"/.exec(text)[1];
  const config = {
    name: "molorec-bench",
    main: join(workerDir, "src/index.ts"),
    compatibility_date: compatibilityDate,
    send_metrics: false,
    rules: [{ type: "CompiledWasm", globs: ["**/*.wasm"], fallthrough: false }],
    vars: { MOLOREC_PACK: "assets:" },
    assets: { directory: packDir, binding: "PACK_ASSETS", run_worker_first: true },
  };
  const path = join(dir, "wrangler.json");
  writeFileSync(path, JSON.stringify(config, null, 2));
  return path;
}

/**
 * Like {@link configForPack}, but the Worker reads the pack from the R2 bucket binding PACK_BUCKET
 * (bucket `molorec-packs`) under `prefix`: for packs over the 25 MiB static-asset file limit. Seed
 * the local bucket with {@link putPackInLocalR2} and pass the same `statePath` to startWranglerDev.
 */
export function configForR2Pack(prefix, dir) {
  const path = configForPack(dir, dir);
  const config = JSON.parse(readFileSync(path, "utf8"));
  delete config.assets;
  config.vars = { MOLOREC_PACK: `r2:${prefix}` };
  config.r2_buckets = [{ binding: "PACK_BUCKET", bucket_name: "molorec-packs" }];
  writeFileSync(path, JSON.stringify(config, null, 2));
  return path;
}

/** Uploads every file of `packDir` to the local R2 bucket `molorec-packs` under `prefix`, in `statePath`. */
export async function putPackInLocalR2(packDir, prefix, statePath, configPath) {
  const walk = (d) => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]));
  for (const file of walk(packDir)) {
    const key = `molorec-packs/${prefix}${relative(packDir, file).split("\\").join("/")}`;
    await runWrangler(["r2", "object", "put", key, "--file", file, "--local", "--persist-to", statePath, "--config", configPath], {
      timeoutMs: 300_000,
    });
  }
}

/** Runs wrangler with arguments in apps/worker and resolves with its output (rejects on failure). */
export function runWrangler(args, { timeoutMs = 120_000, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [wranglerBin, ...args], {
      cwd: workerDir,
      env: wranglerEnv(env),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`wrangler ${args.join(" ")} exited with ${code}:\n${out}`));
    });
  });
}

function childrenOf(pid) {
  const kids = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === pid) kids.push({ pid: Number(name), comm: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) });
    } catch {
      // the process ended while we looked
    }
  }
  return kids;
}

/**
 * The workerd process that runs the Worker under a wrangler process (Linux /proc), or null.
 * wrangler dev starts two: one for its own proxy (the port we fetch) and one for the Worker, the
 * one started with `--inspector-addr`; that one is returned (else the first found).
 */
export function findWorkerd(rootPid) {
  const queue = [rootPid];
  const found = [];
  while (queue.length) {
    for (const kid of childrenOf(queue.shift())) {
      if (kid.comm.startsWith("workerd")) found.push(kid.pid);
      else queue.push(kid.pid);
    }
  }
  const runsWorker = (pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8")
        .split("\0")
        .some((a) => a.startsWith("--inspector-addr"));
    } catch {
      return false;
    }
  };
  return found.find(runsWorker) ?? found[0] ?? null;
}

/**
 * The Worker isolate's V8 heap, read over wrangler's inspector (Chrome DevTools Protocol,
 * Runtime.getHeapUsage): `usedMiB`/`totalMiB` of the JS heap and `backingStorageMiB` of its
 * ArrayBuffers. The wasm memory is not in it (`/v1/health` → `isolate.wasmHeapMiB`). Uses a
 * minimal WebSocket client (Node 20 has none built in). One try rejects after `timeoutMs`; a
 * failed try is repeated once on a new connection, because the inspector proxy occasionally
 * drops a call made while the isolate is busy.
 */
export async function isolateHeapOf(inspectorPort, timeoutMs = 30_000) {
  try {
    return await heapUsageOnce(inspectorPort, timeoutMs);
  } catch (first) {
    await new Promise((r) => setTimeout(r, 1000));
    try {
      return await heapUsageOnce(inspectorPort, timeoutMs);
    } catch (second) {
      throw new Error(`inspector: Runtime.getHeapUsage failed twice (${first.message}; then ${second.message})`);
    }
  }
}

async function heapUsageOnce(inspectorPort, timeoutMs) {
  const targets = await (await fetch(`http://127.0.0.1:${inspectorPort}/json`)).json();
  const wsUrl = new URL(targets[0].webSocketDebuggerUrl);
  const { request } = await import("node:http");
  const { randomBytes } = await import("node:crypto");
  const [socket, early] = await new Promise((resolve, reject) => {
    const req = request({
      host: wsUrl.hostname,
      port: wsUrl.port,
      path: wsUrl.pathname,
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": randomBytes(16).toString("base64"),
      },
    });
    req.on("upgrade", (_res, sock, head) => resolve([sock, head]));
    req.on("response", (res) => reject(new Error(`inspector answered ${res.statusCode}, not an upgrade`)));
    req.on("error", reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error("inspector: no upgrade")));
    req.end();
  });
  try {
    // One masked text frame with the call, then unmasked frames from the server until the answer.
    const payload = Buffer.from(JSON.stringify({ id: 1, method: "Runtime.getHeapUsage" }));
    const mask = randomBytes(4);
    const head =
      payload.length < 126
        ? Buffer.from([0x81, 0x80 | payload.length])
        : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 255]);
    socket.write(Buffer.concat([head, mask, payload.map((b, i) => b ^ mask[i % 4])]));
    const result = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("inspector: no answer to Runtime.getHeapUsage")), timeoutMs);
      const frames = webSocketFrames();
      const onMessage = (text) => {
        let message;
        try {
          message = JSON.parse(text);
        } catch {
          return reject(new Error(`inspector sent a message that is not JSON: ${JSON.stringify(text.slice(0, 80))}`));
        }
        if (message.id !== 1) return;
        clearTimeout(timer);
        message.error ? reject(new Error(`inspector: ${message.error.message}`)) : resolve(message.result);
      };
      const onData = (chunk) => {
        try {
          for (const text of frames(chunk)) onMessage(text);
        } catch (error) {
          reject(error);
        }
      };
      socket.on("error", reject);
      socket.on("close", () => reject(new Error("inspector closed the connection before answering")));
      socket.on("data", onData);
      if (early?.length) onData(early);
    });
    const mib = (n) => (n ?? 0) / 2 ** 20;
    return { usedMiB: mib(result.usedSize), totalMiB: mib(result.totalSize), backingStorageMiB: mib(result.backingStorageSize) };
  } finally {
    socket.destroy();
  }
}

/**
 * A server-to-client WebSocket frame reader (RFC 6455: unmasked frames): feed it each chunk as it
 * arrives; it returns the text messages completed by that chunk. Frames may split across chunks and
 * a message across frames (FIN bit, continuation opcode 0); control frames between fragments are
 * skipped; a close frame ends the stream.
 */
export function webSocketFrames() {
  let buf = Buffer.alloc(0);
  let fragments = null;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    const messages = [];
    for (;;) {
      if (buf.length < 2) return messages;
      let len = buf[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (buf.length < 4) return messages;
        [len, at] = [buf.readUInt16BE(2), 4];
      } else if (len === 127) {
        if (buf.length < 10) return messages;
        [len, at] = [Number(buf.readBigUInt64BE(2)), 10];
      }
      if (buf.length < at + len) return messages;
      const fin = (buf[0] & 0x80) !== 0;
      const opcode = buf[0] & 0x0f;
      const data = buf.subarray(at, at + len);
      buf = buf.subarray(at + len);
      if (opcode === 8) throw new Error("inspector closed the connection before answering");
      if (opcode === 1) fragments = [data];
      else if (opcode === 0 && fragments) fragments.push(data);
      else continue;
      if (fin) {
        messages.push(Buffer.concat(fragments).toString("utf8"));
        fragments = null;
      }
    }
  };
}

/** Resident and peak resident memory (MiB) of a process, from /proc/PID/status. */
export function memoryOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { rssMiB: kb("VmRSS") / 1024, peakRssMiB: kb("VmHWM") / 1024 };
}

/**
 * Starts `wrangler dev` on a random loopback port and waits until it is ready (the model is not
 * loaded yet: that is the first request's work). `stop()` ends wrangler and workerd.
 */
export async function startWranglerDev({
  vars = {},
  configPath,
  environment,
  statePath,
  readyTimeoutMs = 90_000,
  maxLifetimeMs = 10 * 60_000,
  log = () => {},
} = {}) {
  const port = await freePort();
  const inspectorPort = await freePort();
  // Local state (R2 objects): a fresh temp folder, removed by stop(), unless the caller brings one.
  const state = statePath ?? mkdtempSync(join(tmpdir(), "molorec-wrangler-"));
  const args = [
    "dev",
    "--ip",
    "127.0.0.1",
    "--port",
    String(port),
    "--inspector-port",
    String(inspectorPort),
    "--persist-to",
    state,
    "--show-interactive-dev-session=false",
    "--log-level",
    process.env.MOLOREC_WRANGLER_LOG_LEVEL ?? "warn",
  ];
  if (configPath) args.push("--config", configPath);
  if (environment) args.push("--env", environment);
  for (const [k, v] of Object.entries(vars)) args.push("--var", `${k}:${v}`);
  // The watchdog leads a new process group (wrangler + workerd) and ends it if this process dies
  // without calling stop(), or after maxLifetimeMs.
  const child = spawn(process.execPath, [watchdog, String(process.pid), String(maxLifetimeMs), process.execPath, wranglerBin, ...args], {
    cwd: workerDir,
    env: wranglerEnv(),
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let output = "";
  const onData = (d) => {
    output += d;
    log(String(d));
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise((resolve) => child.on("exit", resolve));

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, "SIGTERM"); // the watchdog's process group: watchdog, wrangler, workerd
      } catch {
        // already gone
      }
      const killed = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]);
      if (!killed) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // already gone
        }
        await exited;
      }
    }
    if (!statePath) rmSync(state, { recursive: true, force: true });
  };

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + readyTimeoutMs;
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`wrangler dev exited early (${child.exitCode}):\n${output}`);
      if (Date.now() > deadline) throw new Error(`wrangler dev not ready after ${readyTimeoutMs} ms:\n${output}`);
      // 404 from the Worker means it is up; no model is loaded by an unknown route.
      const res = await fetch(`${url}/__ready`).catch(() => null);
      if (res) {
        await res.body?.cancel();
        if (res.status === 404) break;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url,
    port,
    pid: child.pid,
    workerdPid: () => findWorkerd(child.pid),
    isolateHeap: () => isolateHeapOf(inspectorPort),
    output: () => output,
    stop,
  };
}
