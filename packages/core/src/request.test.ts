import { describe, expect, it } from "vitest";
import { parseMixture, parseRecommendRequest } from "./request.js";

const limits = { maxCandidates: 3, maxHistoryItems: 2, maxTitleChars: 20 };

describe("parseRecommendRequest", () => {
  it("trims titles and fills defaults", () => {
    expect(parseRecommendRequest({ history: [" a "], candidates: ["b", "c"] }, limits)).toEqual({
      history: ["a"],
      candidates: ["b", "c"],
      mixture: "calibrated",
    });
  });

  it.each([
    [{ history: ["a", "b", "c"], candidates: ["x"] }, "HISTORY_TOO_LONG"],
    [{ history: ["a"], candidates: ["1", "2", "3", "4"] }, "TOO_MANY_CANDIDATES"],
    [{ history: ["a"], candidates: ["x".repeat(21)] }, "INVALID_REQUEST"],
    [{ history: ["a"], candidates: [null] }, "INVALID_REQUEST"],
    [{ history: "a", candidates: ["b"] }, "INVALID_REQUEST"],
    [{ history: ["a"], candidates: ["b"], domain: 3 }, "INVALID_REQUEST"],
    [{ history: ["a"], candidates: ["b"], topK: 1.5 }, "INVALID_REQUEST"],
    [null, "INVALID_REQUEST"],
  ])("rejects %j with %s", (body, code) => {
    expect(() => parseRecommendRequest(body, limits)).toThrow(expect.objectContaining({ code }));
  });
});

describe("parseMixture", () => {
  it("reads names, λ objects and numeric strings", () => {
    expect(parseMixture("adaptive")).toBe("adaptive");
    expect(parseMixture({ lambda: 0.25 })).toEqual({ lambda: 0.25 });
    expect(parseMixture("0.7")).toEqual({ lambda: 0.7 });
  });
  it("reads plain decimal strings only", () => {
    expect(parseMixture(".25")).toEqual({ lambda: 0.25 });
    expect(parseMixture("1")).toEqual({ lambda: 1 });
    expect(parseMixture("0.")).toEqual({ lambda: 0 });
  });
  it.each([
    "",
    "best",
    "0x1",
    "1e0",
    "0b1",
    "0o1",
    " 1",
    "1 ",
    "+1",
    "-0",
    "Infinity",
    "1.5",
    { lambda: -0.1 },
    { lambda: "0.5" },
    { lambda: 0.5, extra: 1 },
    JSON.parse('{"__proto__": {"lambda": 0.5}}'),
    3,
  ])("rejects %j", (v) => {
    expect(() => parseMixture(v)).toThrow(expect.objectContaining({ code: "INVALID_MIXTURE" }));
  });
});

describe("parseRecommendRequest, hostile fields", () => {
  it.each(["toString", "constructor", "__proto__"])("passes a domain called %s through as a plain string", (domain) => {
    expect(parseRecommendRequest({ history: ["a"], candidates: ["b"], domain }, limits).domain).toBe(domain);
  });

  it("refuses a domain longer than any pack's domain names, and quotes no more than a little of it", () => {
    const domain = "d".repeat(10_000);
    try {
      parseRecommendRequest({ history: ["a"], candidates: ["b"], domain }, limits);
      expect.unreachable();
    } catch (e) {
      expect(e).toMatchObject({ code: "INVALID_REQUEST", details: { field: "domain" } });
      expect((e as Error).message.length).toBeLessThan(200);
    }
    expect(() => parseMixture("m".repeat(10_000))).toThrow(
      expect.objectContaining({ message: expect.stringMatching(/^mixture "m{80}…" /) }),
    );
  });

  it("refuses a __proto__ key as an unknown field", () => {
    const body = JSON.parse('{"history": ["a"], "candidates": ["b"], "__proto__": {"topK": 1}}');
    expect(() => parseRecommendRequest(body, limits)).toThrow(expect.objectContaining({ code: "INVALID_REQUEST" }));
  });
});

describe("parseRecommendRequest, parsed once", () => {
  it("returns a frozen request, and the same object when given it back with the same limits", () => {
    const parsed = parseRecommendRequest({ history: [" a "], candidates: ["b"], mixture: { lambda: 0.5 } }, limits);
    expect(Object.isFrozen(parsed) && Object.isFrozen(parsed.history) && Object.isFrozen(parsed.mixture)).toBe(true);
    expect(parseRecommendRequest(parsed, limits)).toBe(parsed);
  });

  it("checks a parsed request again against other limits", () => {
    const parsed = parseRecommendRequest({ history: ["a"], candidates: ["1", "2", "3"] }, limits);
    expect(() => parseRecommendRequest(parsed, { ...limits, maxCandidates: 2 })).toThrow(
      expect.objectContaining({ code: "TOO_MANY_CANDIDATES" }),
    );
  });
});
