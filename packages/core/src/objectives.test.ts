import { describe, expect, it } from "vitest";
import { isMolorecError } from "./errors.js";
import { entropy, softmax } from "./math.js";
import {
  CALIBRATION_OBJECTIVES,
  checkObjective,
  ENTROPY_OBJECTIVES,
  informationGroups,
  needsTokenEntropies,
  negativeInformation,
  objectiveValues,
} from "./objectives.js";

// Two mixtures, three candidates: mixture 1 ranks candidate 2 first.
const result = {
  scores: [
    [-1, -2, -3],
    [-3, -2, -0.5],
  ],
  tokenLogProbs: [],
  tokenEntropies: [
    [1, 2, 3],
    [0.5, 0.25, 2],
  ],
  runs: 2,
};
const code = (fn: () => unknown) => {
  try {
    fn();
    return "ok";
  } catch (e) {
    return isMolorecError(e) ? e.code : String(e);
  }
};

describe("objectiveValues", () => {
  it("tokens: the mean token entropy over the candidates", () => {
    expect(objectiveValues("tokens", result)).toEqual([2, 0.75 / 3 + 2 / 3]);
  });

  it("answer: the token entropy along the candidate the mixture ranks first", () => {
    expect(objectiveValues("answer", result)).toEqual([1, 2]);
  });

  it("candidates: the entropy of the softmax over the scores, without token entropies", () => {
    const { tokenEntropies: _, ...bare } = result;
    expect(objectiveValues("candidates", bare)).toEqual(result.scores.map((s) => entropy(softmax(s))));
    expect(needsTokenEntropies("candidates")).toBe(false);
    expect(needsTokenEntropies("answer")).toBe(true);
    expect(code(() => objectiveValues("tokens", bare))).toBe("INVALID_REQUEST");
  });
});

describe("checkObjective", () => {
  it("accepts the listed objectives only", () => {
    expect(checkObjective("answer", ENTROPY_OBJECTIVES, "entropyObjective")).toBe("answer");
    expect(code(() => checkObjective("information", ENTROPY_OBJECTIVES, "entropyObjective"))).toBe("INVALID_REQUEST");
    expect(checkObjective("information", CALIBRATION_OBJECTIVES, "calibration objective")).toBe("information");
  });
});

describe("informationGroups", () => {
  const req = (h: string, candidates = ["x", "y"]) => ({ history: [h], candidates });

  it("deals requests round-robin into ⌊n / size⌋ groups, each on its first request's candidates", () => {
    const groups = informationGroups([req("a", ["1"]), req("b", ["p", "q"]), req("c", ["r", "s"]), req("d"), req("e")], 2);
    expect(groups).toEqual([
      { candidates: ["r", "s"], histories: [["a"], ["c"], ["e"]] },
      { candidates: ["p", "q"], histories: [["b"], ["d"]] },
    ]);
  });

  it("refuses groups it cannot compare", () => {
    expect(code(() => informationGroups([req("a"), req("b")], 1))).toBe("INVALID_REQUEST");
    expect(code(() => informationGroups([req("a")], 2))).toBe("INVALID_REQUEST");
    expect(code(() => informationGroups([req("a", ["1"]), req("b", ["2"])], 2))).toBe("INVALID_REQUEST");
  });
});

describe("negativeInformation", () => {
  it("is zero when every history picks alike, and minus log 2 when two histories pick opposite sure items", () => {
    expect(
      negativeInformation([
        [0, 1, 2],
        [0, 1, 2],
      ]),
    ).toBeCloseTo(0, 12);
    expect(
      negativeInformation([
        [100, -100],
        [-100, 100],
      ]),
    ).toBeCloseTo(-Math.log(2), 9);
  });
});
