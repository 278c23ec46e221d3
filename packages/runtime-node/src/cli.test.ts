import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "./cli.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const pack = join(root, "test/fixtures/tiny-pack");
const golden = (await import("../../../test/fixtures/tiny-pack.golden.json", { with: { type: "json" } })).default as {
  cases: Array<{ request: { history: string[]; candidates: string[]; mixture: unknown }; scores: number[]; ranking: number[] }>;
};

function capture() {
  const out: string[] = [];
  const spy = vi.spyOn(console, "log").mockImplementation((...a: unknown[]) => void out.push(a.join(" ")));
  vi.spyOn(console, "error").mockImplementation(() => {});
  return { out, spy };
}

afterEach(() => vi.restoreAllMocks());

/** One unlabeled case, as `calibrate --cases` reads them. */
const casesFile = join(mkdtempSync(join(tmpdir(), "molorec-cli-cases-")), "cases.jsonl");
writeFileSync(casesFile, `${JSON.stringify({ history: ["a"], candidates: ["b", "c"], target: 0 })}\n`);

describe("molorec recommend", () => {
  it("prints the golden ranking for the fixture pack", async () => {
    const c = golden.cases.find((x) => x.request.mixture === "wa")!;
    const dir = mkdtempSync(join(tmpdir(), "molorec-cli-"));
    const req = join(dir, "req.json");
    writeFileSync(req, JSON.stringify(c.request));
    const { out } = capture();
    expect(await main(["recommend", "--pack", pack, "--request", req, "--json", "--ep", "cpu"])).toBe(0);
    const res = JSON.parse(out.join("\n"));
    expect(res.ranked.map((r: { index: number }) => r.index)).toEqual(c.ranking);
    for (const r of res.ranked) expect(r.score).toBeCloseTo(c.scores[r.index]!, 4);
    expect(res.mixture).toEqual({ policy: "wa", lambda: 0.5, source: "policy" });
  });

  it("lets flags override the request's mixture and cut to the top k", async () => {
    const c = golden.cases.find((x) => x.request.mixture === "domain")!;
    const dir = mkdtempSync(join(tmpdir(), "molorec-cli-"));
    const req = join(dir, "req.json");
    writeFileSync(req, JSON.stringify({ ...c.request, mixture: "general" }));
    const { out } = capture();
    await main(["recommend", "--pack", pack, "--request", req, "--mixture", "1", "--top", "2", "--json", "--ep", "cpu"]);
    const res = JSON.parse(out.join("\n"));
    expect(res.ranked.map((r: { index: number }) => r.index)).toEqual(c.ranking.slice(0, 2));
    expect(res.mixture.lambda).toBe(1);
  });

  it("takes --mixture in the request's JSON form, as its error message offers", async () => {
    const c = golden.cases.find((x) => x.request.mixture === "domain")!;
    const dir = mkdtempSync(join(tmpdir(), "molorec-cli-"));
    const req = join(dir, "req.json");
    writeFileSync(req, JSON.stringify({ ...c.request, mixture: "general" }));
    const { out } = capture();
    const args = ["--mixture", '{"lambda": 1}', "--json", "--ep", "cpu", "--threads", "1", "--prepack", "off"];
    expect(await main(["recommend", "--pack", pack, "--request", req, ...args])).toBe(0);
    const res = JSON.parse(out.join("\n"));
    expect(res.ranked.map((r: { index: number }) => r.index)).toEqual(c.ranking);
    expect(res.mixture.lambda).toBe(1);
    await expect(main(["recommend", "--pack", pack, "--request", req, "--mixture", '{"lambda": 2}'])).rejects.toMatchObject({
      code: "INVALID_MIXTURE",
    });
    await expect(main(["recommend", "--pack", pack, "--request", req, "--mixture", "{lambda"])).rejects.toMatchObject({
      code: "INVALID_MIXTURE",
    });
  });

  it.each([
    [["recommend", "--pack", "/nonexistent", "--request", "x.json"], "INVALID_REQUEST"],
    [["recommend", "--pack", join(root, "test/fixtures"), "--request", join(root, "examples/request.json")], "PACK_FILE_MISSING"],
    [["recommend", "--pack", pack, "--request", join(root, "examples/request.json"), "--ep", "tpu"], "INVALID_REQUEST"],
    [["recommend", "--pack", pack, "--request", join(root, "examples/request.json"), "--threads", "0"], "INVALID_REQUEST"],
    [["recommend", "--pack", pack, "--request", join(root, "examples/request.json"), "--threads", "two"], "INVALID_REQUEST"],
    [["recommend", "--pack", pack, "--request", join(root, "examples/request.json"), "--prepack", "maybe"], "INVALID_REQUEST"],
    [["calibrate", "--pack", pack, "--domain", "movies", "--data", "x", "--objective", "perplexity"], "INVALID_REQUEST"],
    [["recommend", "--pack", pack, "--request", join(root, "examples/request.json"), "--objective", "information"], "INVALID_REQUEST"],
    [
      ["recommend", "--pack", pack, "--request", join(root, "examples/request.json"), "--domain", "toString", "--ep", "cpu"],
      "UNKNOWN_DOMAIN",
    ],
    [
      [
        "recommend",
        "--pack",
        pack,
        "--request",
        join(root, "examples/request.json"),
        "--domain",
        "__proto__",
        "--mixture",
        "domain",
        "--ep",
        "cpu",
      ],
      "UNKNOWN_DOMAIN",
    ],
    [["recommend", "--pack", pack, "--request", join(root, "examples/request.json"), "--mixture", "0x1"], "INVALID_MIXTURE"],
    [["calibrate", "--pack", pack, "--domain", "constructor", "--cases", casesFile, "--ep", "cpu"], "UNKNOWN_DOMAIN"],
  ])("fails with a coded error: %j", async (argv, code) => {
    capture();
    await expect(main(argv)).rejects.toMatchObject({ code });
  });
});

describe("molorec info and unknown commands", () => {
  it("summarises a pack as JSON, and answers an unknown command with the usage and exit code 2", async () => {
    const { out } = capture();
    expect(await main(["info", "--pack", pack])).toBe(0);
    const info = JSON.parse(out.join("\n"));
    expect(info).toMatchObject({ name: expect.any(String), defaultDomain: "movies", adapters: { general: { rank: expect.any(Number) } } });
    expect(await main(["serve", "--pack", pack])).toBe(2);
  });
});

describe("molorec calibrate", () => {
  it("maximises the mutual information on unlabeled valid cases and writes λ into the pack", async () => {
    const dir = mkdtempSync(join(tmpdir(), "molorec-cli-"));
    const copy = join(dir, "pack");
    cpSync(pack, copy, { recursive: true });
    const rows = golden.cases
      .filter((c) => c.request.mixture === "domain")
      .map((c, i) => ({ history: c.request.history, candidates: c.request.candidates, label: i % c.request.candidates.length }));
    writeFileSync(
      join(dir, "valid.jsonl"),
      `${[...rows, { ...rows[0]!, history: rows[2]!.history.slice(0, 5) }].map((r) => JSON.stringify(r)).join("\n")}\n`,
    );
    const { out } = capture();
    expect(
      await main([
        "calibrate",
        "--pack",
        copy,
        "--domain",
        "movies",
        "--data",
        dir,
        "--objective",
        "information",
        "--write",
        "--ep",
        "cpu",
      ]),
    ).toBe(0);
    const head = out.find((l) => l.startsWith("calibrated movies"))!;
    expect(head).toMatch(/on 4 unlabeled prompts .*: λ = (\d\.\d{3}) \(mutual information \d\.\d{4}\)/);
    const lambda = Number(/λ = (\d\.\d{3})/.exec(head)![1]);
    const manifest = JSON.parse(readFileSync(join(copy, "molorec.json"), "utf8"));
    expect(manifest.domains.movies.calibratedLambda).toBeCloseTo(lambda, 3);
    // Every evaluated λ is printed with its (non-negative) mutual information.
    expect(out.filter((l) => /^ {2}λ \d\.\d{3} {2}mutual information \d\.\d{4}$/.test(l)).length).toBeGreaterThanOrEqual(11);
  });
});

describe("molorec on a hostile pack", () => {
  it.each<[string, (m: any) => void]>([
    ["a vocabulary of 10¹²", (m) => (m.model.vocabSize = 1e12)],
    ["10⁹ layers", (m) => (m.model.numLayers = 1e9)],
    ["a manifest whose layers disagree with the graph", (m) => (m.model.numLayers = 3)],
    ["a vocabulary smaller than the graph's", (m) => (m.model.vocabSize = 512 - 1)],
  ])("refuses %s with MALFORMED_PACK before scoring", async (_name, mutate) => {
    const dir = mkdtempSync(join(tmpdir(), "molorec-cli-pack-"));
    cpSync(pack, dir, { recursive: true });
    const manifest = JSON.parse(readFileSync(join(dir, "molorec.json"), "utf8"));
    mutate(manifest);
    writeFileSync(join(dir, "molorec.json"), JSON.stringify(manifest));
    capture();
    await expect(main(["recommend", "--pack", dir, "--request", join(root, "examples/request.json"), "--ep", "cpu"])).rejects.toMatchObject(
      {
        code: "MALFORMED_PACK",
      },
    );
  });
});
