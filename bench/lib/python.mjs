// Client of bench/py_worker.py (and of the other worker processes of the benchmarks, e.g.
// bench/lib/peer-worker.mjs): one JSON line per command and per answer.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

export function startPythonWorker(python, script, options = {}) {
  return startWorkerProcess(python, [script], options);
}

/** A worker process answering one JSON line per command on stdout; `name` prefixes its errors. */
export function startWorkerProcess(command, args, { onStderr, env = {}, name = "python worker" } = {}) {
  const proc = spawn(command, args, {
    stdio: ["pipe", "pipe", "pipe"],
    env: { OMP_WAIT_POLICY: "PASSIVE", ...process.env, PYTHONUNBUFFERED: "1", TOKENIZERS_PARALLELISM: "false", ...env },
  });
  const lines = createInterface({ input: proc.stdout });
  const waiting = [];
  let exited = null;
  lines.on("line", (line) => waiting.shift()?.resolve(line));
  let stderr = "";
  proc.stderr.on("data", (d) => {
    stderr = (stderr + d).slice(-4000);
    onStderr?.(String(d));
  });
  proc.on("exit", (code) => {
    exited = `${name} exited (${code}): ${stderr.trim().split("\n").slice(-5).join(" | ")}`;
    for (const w of waiting.splice(0)) w.reject(new Error(exited));
  });
  proc.on("error", (e) => {
    exited = `${name} could not start: ${e.message}`;
    for (const w of waiting.splice(0)) w.reject(new Error(exited));
  });
  return {
    pid: proc.pid,
    async call(cmd) {
      if (exited) throw new Error(exited);
      const line = await new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        proc.stdin.write(`${JSON.stringify(cmd)}\n`);
      });
      const ans = JSON.parse(line);
      if (!ans.ok) throw new Error(ans.error);
      return ans;
    },
    async close() {
      if (exited) return;
      proc.stdin.end(`${JSON.stringify({ cmd: "quit" })}\n`);
      await new Promise((r) => {
        const t = setTimeout(() => {
          proc.kill();
          r();
        }, 3000);
        proc.on("exit", () => {
          clearTimeout(t);
          r();
        });
      });
    },
  };
}
