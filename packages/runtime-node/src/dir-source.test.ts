import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { loadPackFromDir } from "./dir-source.js";

const fixture = fileURLToPath(new URL("../../../test/fixtures/tiny-pack", import.meta.url));
const temps: string[] = [];

/** A copy of the fixture pack in a fresh temp folder, with `outside/` beside it. */
function copy(): { root: string; pack: string; outside: string } {
  const root = mkdtempSync(join(tmpdir(), "molorec-dir-"));
  temps.push(root);
  const pack = join(root, "pack");
  cpSync(fixture, pack, { recursive: true });
  const outside = join(root, "outside");
  cpSync(fixture, outside, { recursive: true });
  return { root, pack, outside };
}

afterEach(() => {
  for (const t of temps.splice(0)) rmSync(t, { recursive: true, force: true });
});

describe("loadPackFromDir", () => {
  it("follows links that stay inside the pack, and a pack folder that is itself a link", async () => {
    const { root, pack } = copy();
    renameSync(join(pack, "tokenizer.json"), join(pack, "tok.json"));
    symlinkSync("tok.json", join(pack, "tokenizer.json"));
    symlinkSync(pack, join(root, "linked"));
    expect((await loadPackFromDir(join(root, "linked"))).manifest.name).toBe("tiny-fixture");
  });

  it.each([
    ["a file", "tokenizer.json", (outside: string) => join(outside, "tokenizer.json")],
    ["a folder", "adapters", (outside: string) => join(outside, "adapters")],
    ["a relative link", "model.onnx", () => "../outside/model.onnx"],
  ])("refuses %s linked from outside the pack as MALFORMED_PACK", async (_what, path, target) => {
    const { pack, outside } = copy();
    rmSync(join(pack, path), { recursive: true });
    symlinkSync(target(outside), join(pack, path));
    await expect(loadPackFromDir(pack)).rejects.toMatchObject({
      code: "MALFORMED_PACK",
      message: expect.stringMatching(/outside the pack/),
    });
  });

  it("refuses a FIFO instead of blocking on it", async () => {
    const { pack } = copy();
    rmSync(join(pack, "model.onnx"));
    execFileSync("mkfifo", [join(pack, "model.onnx")]);
    await expect(loadPackFromDir(pack)).rejects.toMatchObject({
      code: "MALFORMED_PACK",
      message: expect.stringMatching(/not a regular file/),
    });
  });

  it("reports a missing file as PACK_FILE_MISSING", async () => {
    const { pack } = copy();
    rmSync(join(pack, "tokenizer.json"));
    writeFileSync(join(pack, "unrelated"), "");
    await expect(loadPackFromDir(pack)).rejects.toMatchObject({ code: "PACK_FILE_MISSING", details: { path: "tokenizer.json" } });
  });
});
