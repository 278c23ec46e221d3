import { describe, expect, it } from "vitest";
import catalogue from "../../catalogue/movies.json" with { type: "json" };
import { addToHistory, pickCandidates } from "./shelf.js";

const items = catalogue.items;

describe("shelf", () => {
  it("history keeps the latest views last, without duplicates, capped", () => {
    expect(addToHistory(["a", "b", "c"], "a", 10)).toEqual(["b", "c", "a"]);
    expect(addToHistory(["a", "b", "c"], "d", 3)).toEqual(["b", "c", "d"]);
  });

  it("candidates are unviewed items, the last views' genres first, at most max", () => {
    const last = items[5]!;
    const got = pickCandidates(items, [items[0]!.id, last.id], 20);
    expect(got).toHaveLength(20);
    expect(got.map((g) => g.id)).not.toContain(last.id);
    expect(got.map((g) => g.id)).not.toContain(items[0]!.id);
    const sameGenre = items.filter((it) => it.genre === last.genre || it.genre === items[0]!.genre).length - 2;
    expect(got.slice(0, Math.min(sameGenre, 20)).every((g) => g.genre === last.genre || g.genre === items[0]!.genre)).toBe(true);
    expect(
      pickCandidates(
        items,
        items.map((i) => i.id),
      ),
    ).toEqual([]);
  });

  it("the demo catalogue is a movie catalogue of 48 unique, titled items", () => {
    expect(catalogue.domain).toBe("movies");
    expect(new Set(items.map((i) => i.id)).size).toBe(48);
    expect(items.every((i) => /\(\d{4}\)$/.test(i.title))).toBe(true);
  });
});
