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
  it.each(["", "best", { lambda: -0.1 }, { lambda: "0.5" }, { lambda: 0.5, extra: 1 }, 3])("rejects %j", (v) => {
    expect(() => parseMixture(v)).toThrow(expect.objectContaining({ code: "INVALID_MIXTURE" }));
  });
});
