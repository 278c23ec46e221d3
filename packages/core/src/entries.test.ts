import { describe, expect, it } from "vitest";
import * as pub from "./index.js";
import * as internal from "./internal.js";

describe("the package's entries", () => {
  it("@molorec/core exports the application API and nothing else (a new export is a decision, made here)", () => {
    expect(Object.keys(pub).sort()).toEqual([
      "CALIBRATION_OBJECTIVES",
      "DEFAULT_REQUEST_LIMITS",
      "ENTROPY_OBJECTIVES",
      "MolorecError",
      "PACK_FORMAT_VERSION",
      "POLICY_NAMES",
      "createRecommender",
      "evaluatePolicies",
      "httpStatusForCode",
      "isMolorecError",
      "loadPack",
      "memorySource",
      "modelBytes",
      "parseMixture",
      "parseRecommendRequest",
    ]);
  });

  it("@molorec/core/internal adds the engine's parts without repeating the public ones", () => {
    expect(Object.keys(internal)).toEqual(
      expect.arrayContaining(["scoreCandidates", "scoreBatchedJobs", "adaptOrtSession", "openFirstProvider"]),
    );
    expect(Object.keys(internal).filter((name) => Object.hasOwn(pub, name))).toEqual([]);
  });
});
