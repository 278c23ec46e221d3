import { readFile } from "node:fs/promises";
import { MolorecError } from "@molorec/core";

/** Reads a JSON Lines file; errors name the file and line. */
export async function readJsonl<T = unknown>(path: string): Promise<T[]> {
  const text = await readFile(path, "utf8").catch((e: Error) => {
    throw new MolorecError("INVALID_REQUEST", `cannot read ${path}: ${e.message}`);
  });
  const rows: T[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    try {
      rows.push(JSON.parse(line) as T);
    } catch (e) {
      throw new MolorecError("INVALID_REQUEST", `${path}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
  });
  return rows;
}

/** A progress bar on stderr: redrawn in place on a TTY, a line per 10% otherwise. */
export function progressBar(label: string): (done: number, total: number) => void {
  const started = Date.now();
  let lastDecile = -1;
  return (done, total) => {
    const frac = total ? done / total : 1;
    const secs = (Date.now() - started) / 1000;
    const eta = done ? (secs / done) * (total - done) : 0;
    if (process.stderr.isTTY) {
      const width = 30;
      const bar = "█".repeat(Math.round(frac * width)).padEnd(width, "░");
      process.stderr.write(`\r${label} ${bar} ${done}/${total}  ${secs.toFixed(0)}s, ~${eta.toFixed(0)}s left `);
      if (done === total) process.stderr.write("\n");
    } else {
      const decile = Math.floor(frac * 10);
      if (decile !== lastDecile) {
        lastDecile = decile;
        process.stderr.write(`${label} ${done}/${total} (${(frac * 100).toFixed(0)}%)  ${secs.toFixed(0)}s\n`);
      }
    }
  };
}
