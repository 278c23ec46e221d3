import { closeSync, constants, openSync, readSync } from "node:fs";
import { open, realpath, stat } from "node:fs/promises";
import { resolve, sep } from "node:path";
import type { PackFile, PackSource } from "@molorec/core";
import { MolorecError, loadPack, type ModelPack } from "@molorec/core";

function outside(root: string, path: string, why: string): MolorecError {
  return new MolorecError(
    "MALFORMED_PACK",
    `${root}: ${path} ${why}. A pack's files must be regular files inside its folder; copy the file in instead of linking to it.`,
    { details: { path } },
  );
}

/**
 * A {@link PackSource} over a pack directory on disk. Paths are resolved with symbolic links
 * followed and must stay inside the pack's folder (itself resolved, so a pack folder that is a
 * link works); only regular files are read (a FIFO or a device would block or never end).
 */
export function dirSource(dir: string): PackSource {
  const root = resolve(dir);
  let realRoot: Promise<string> | null = null;
  /** The file's real path, checked to be inside the pack. */
  const locate = async (path: string): Promise<string> => {
    const full = resolve(root, path);
    if (full !== root && !full.startsWith(root + sep)) throw outside(root, path, "is outside the pack");
    realRoot ??= realpath(root);
    const base = await realRoot;
    const real = await realpath(full); // rejects (file missing) before anything is opened
    if (!real.startsWith(base + sep)) throw outside(root, path, `resolves to ${real}, outside the pack`);
    return real;
  };
  // Opened, then checked and read through the same handle, so the file cannot be swapped between the
  // check and the read; O_NOFOLLOW refuses a link put in its place since realpath, O_NONBLOCK keeps a
  // FIFO from blocking the open until a writer comes.
  const flags = constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);
  return {
    location: root,
    async readBytes(path) {
      const handle = await open(await locate(path), flags);
      try {
        if (!(await handle.stat()).isFile()) throw outside(root, path, "is not a regular file");
        const buf = await handle.readFile();
        return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      } finally {
        await handle.close();
      }
    },
    async openFile(path): Promise<PackFile> {
      const real = await locate(path);
      const handle = await open(real, flags);
      let size: number;
      try {
        const info = await handle.stat();
        if (!info.isFile()) throw outside(root, path, "is not a regular file");
        size = info.size;
      } finally {
        await handle.close();
      }
      return {
        path: real,
        byteLength: size,
        readSync(offset, length) {
          const fd = openSync(real, flags);
          try {
            const out = new Uint8Array(length);
            return out.subarray(0, readSync(fd, out, 0, length, offset));
          } finally {
            closeSync(fd);
          }
        },
      };
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
