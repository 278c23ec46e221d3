import { readFile, stat } from "node:fs/promises";
import { resolve, sep } from "node:path";
import type { PackSource } from "@molorec/core";
import { MolorecError, loadPack, type ModelPack } from "@molorec/core";

/** A {@link PackSource} over a pack directory on disk. */
export function dirSource(dir: string): PackSource {
  const root = resolve(dir);
  return {
    location: root,
    async readBytes(path) {
      const full = resolve(root, path);
      if (full !== root && !full.startsWith(root + sep)) throw new Error(`${path} is outside the pack`);
      const buf = await readFile(full);
      return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    },
  };
}

/** Loads and validates the pack in `dir`. */
export async function loadPackFromDir(dir: string): Promise<ModelPack> {
  const info = await stat(dir).catch(() => null);
  if (!info?.isDirectory()) {
    throw new MolorecError("PACK_FILE_MISSING", `${dir} is not a directory; pass the folder that holds molorec.json.`);
  }
  return loadPack(dirSource(dir));
}
