import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { isMolorecError } from "./errors.js";
import { parseManifest, type PackManifest } from "./manifest.js";
import {
  chooseRow,
  isPolicyName,
  mixtureWeights,
  POLICY_NAMES,
  type PolicyContext,
  policyName,
  resolveDomain,
  resolvePolicy,
} from "./policies.js";
import { parseMixture } from "./request.js";

const fixture = JSON.parse(readFileSync(new URL("../../../test/fixtures/tiny-pack/molorec.json", import.meta.url), "utf8"));
/** The fixture pack's manifest: general adapter, domain `movies` (default λ 0.5), changed by `edit`. */
const manifest = (edit: (m: any) => void = () => {}): PackManifest => {
  const m = structuredClone(fixture);
  edit(m);
  return parseManifest(m);
};
const ctx = (m = manifest(), domain: string | null = "movies"): PolicyContext => ({ manifest: m, domain, adaptiveLambdas: [0, 0.5, 1] });
const code = (fn: () => unknown) => {
  try {
    fn();
    return "ok";
  } catch (e) {
    return isMolorecError(e) ? e.code : String(e);
  }
};
const G = "general";
const D = "domain:movies";

describe("the policy table", () => {
  it("names every policy the request parser accepts, and only those", () => {
    expect(POLICY_NAMES).toEqual(["base", "general", "domain", "wa", "calibrated", "adaptive"]);
    for (const name of POLICY_NAMES) expect(parseMixture(name)).toBe(name);
    for (const name of ["toString", "constructor", "__proto__", "best"]) {
      expect(isPolicyName(name)).toBe(false);
      expect(code(() => parseMixture(name))).toBe("INVALID_MIXTURE");
    }
    expect(policyName("wa")).toBe("wa");
    expect(policyName({ lambda: 0.3 })).toBe("lambda=0.3");
  });

  it.each([
    ["base", [], null, "none"],
    ["general", [[G, 1]], 0, "policy"],
    ["domain", [[D, 1]], 1, "policy"],
    [
      "wa",
      [
        [G, 0.5],
        [D, 0.5],
      ],
      0.5,
      "policy",
    ],
    [
      "calibrated",
      [
        [G, 0.5],
        [D, 0.5],
      ],
      0.5,
      "default",
    ],
  ] as const)("resolves %s to one row", (policy, weights, lambda, source) => {
    expect(resolvePolicy(ctx(), policy)).toEqual({ rows: [{ weights, lambda, source }], byObjective: false });
  });

  it("resolves calibrated to the stored λ, and to general without a domain", () => {
    const calibrated = manifest((m) => (m.domains.movies.calibratedLambda = 0.75));
    expect(resolvePolicy(ctx(calibrated), "calibrated").rows).toEqual([
      {
        weights: [
          [G, 0.25],
          [D, 0.75],
        ],
        lambda: 0.75,
        source: "calibrated",
      },
    ]);
    expect(resolvePolicy(ctx(calibrated, null), "calibrated").rows).toEqual([{ weights: [[G, 1]], lambda: 0, source: "policy" }]);
  });

  it("resolves a request's λ, and adaptive to its grid chosen by objective", () => {
    expect(resolvePolicy(ctx(), { lambda: 0.25 }).rows[0]).toMatchObject({ lambda: 0.25, source: "request" });
    const adaptive = resolvePolicy(ctx(), "adaptive");
    expect(adaptive.byObjective).toBe(true);
    expect(adaptive.rows.map((r) => [r.lambda, r.source])).toEqual([
      [0, "adaptive"],
      [0.5, "adaptive"],
      [1, "adaptive"],
    ]);
    expect(adaptive.rows[2]!.weights).toEqual([[D, 1]]);
  });

  it("refuses mixtures the pack cannot make, with coded errors", () => {
    const noGeneral = manifest((m) => {
      delete m.adapters.general;
      m.generalAdapter = null;
    });
    expect(code(() => resolvePolicy(ctx(noGeneral), "wa"))).toBe("INVALID_MIXTURE");
    expect(code(() => resolvePolicy(ctx(noGeneral), "domain"))).toBe("ok");
    expect(code(() => resolvePolicy(ctx(manifest(), null), "domain"))).toBe("INVALID_MIXTURE");
    expect(code(() => resolvePolicy(ctx(manifest(), null), "base"))).toBe("ok");
    expect(code(() => resolvePolicy(ctx(manifest(), "cars"), "base"))).toBe("UNKNOWN_DOMAIN");
    expect(code(() => resolvePolicy(ctx(), "best" as never))).toBe("INVALID_MIXTURE");
    expect(code(() => mixtureWeights(manifest(), "toString", 1))).toBe("UNKNOWN_DOMAIN");
  });
});

describe("resolveDomain", () => {
  it("defaults to the pack's domain and knows only its own domains", () => {
    expect(resolveDomain(manifest(), undefined)).toBe("movies");
    expect(resolveDomain(manifest(), "movies")).toBe("movies");
    expect(
      resolveDomain(
        manifest((m) => (m.defaultDomain = null)),
        null,
      ),
    ).toBeNull();
    for (const name of ["cars", "__proto__", "hasOwnProperty"]) expect(code(() => resolveDomain(manifest(), name))).toBe("UNKNOWN_DOMAIN");
  });
});

describe("chooseRow", () => {
  it("takes the only row of a fixed policy without reading an objective", () => {
    expect(
      chooseRow(resolvePolicy(ctx(), "wa"), () => {
        throw new Error("read");
      }),
    ).toBe(0);
  });

  it("takes the row of least objective, the first on ties", () => {
    const adaptive = resolvePolicy(ctx(), "adaptive");
    expect(chooseRow(adaptive, (i) => [0.9, 0.2, 0.4][i]!)).toBe(1);
    expect(chooseRow(adaptive, (i) => [0.3, 0.2, 0.2][i]!)).toBe(1);
  });
});
